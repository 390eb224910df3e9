//! `onvm`: run an ONVM node, or talk to one over its WebSocket JSON-RPC API.

mod audit;
mod client;
mod daemon;
mod jobs;
mod keys;
mod logging;
mod programs;
mod streams;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use onvm_rpc_api::jobs::{JobFilter, JobStatus};
use onvm_rpc_api::{BlobId, Hash32, JobId, ProgramId, ReceiptId, UploadId};

#[derive(Parser, Debug)]
#[command(
    name = "onvm",
    version,
    about = "ONVM: a peer-to-peer compute network node and client"
)]
struct Cli {
    /// Node RPC address for client commands (host:port, :port or ws:// URL); for init, run-node
    /// and dev, the address to serve RPC on. Not for the offline commands (verify-receipt, key,
    /// completions).
    #[arg(long, global = true, env = "ONVM_RPC")]
    rpc: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    /// API token for client commands (`onvm token create`). Not needed on the node's own
    /// machine: the CLI then reads the node's cookie file.
    #[arg(long, global = true, env = "ONVM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct NodeFlags {
    /// iroh (QUIC) listen address, host:port or :port. Overrides net.listen.
    #[arg(long)]
    listen: Option<String>,
    /// No public relays and no external address lookup (loopback/LAN, and relays given with
    /// --relay). Sets net.offline.
    #[arg(long)]
    offline: bool,
    /// Use this relay (URL printed by `onvm relay`; repeatable). Replaces net.relays.
    #[arg(long = "relay", value_name = "URL")]
    relays: Vec<String>,
    /// No direct paths: every connection goes through a relay. Sets net.relay_only.
    #[arg(long)]
    relay_only: bool,
    /// Override any config key, e.g. --set rpc.max_batch=64 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Join the network through this node's ticket (repeatable). Adds to net.bootnodes.
    #[arg(long = "bootnode", value_name = "TICKET")]
    bootnodes: Vec<String>,
    /// Open every RPC method to every client, no token needed (trusted setups only). Sets
    /// rpc.auth = false.
    #[arg(long)]
    no_auth: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a data dir: identity (ed25519 + BLS) and a documented config.toml.
    #[command(
        after_help = "Example:\n  onvm init --data-dir ~/onvm-node   # asks for a passphrase (or ONVM_IDENTITY_PASSPHRASE)"
    )]
    Init {
        /// Node data directory (identity, config.toml, database, blobs).
        #[arg(long)]
        data_dir: PathBuf,
        /// Store the identity unencrypted (only for throwaway or test nodes).
        #[arg(long)]
        allow_plaintext_identity: bool,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Run a node from an initialised data dir until SIGINT/SIGTERM.
    #[command(
        after_help = "Example:\n  onvm run-node --data-dir ~/onvm-node --rpc 127.0.0.1:8545 --bootnode TICKET"
    )]
    RunNode {
        /// Node data directory (identity, config.toml, database, blobs).
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Zero-config development node: creates a data dir if needed and runs on loopback, locked
    /// like a Jupyter server: the CLI on this machine gets in through the cookie file, a browser
    /// through the token in the printed `web:` URL, other web pages not at all.
    #[command(
        after_help = "Example:\n  onvm dev --rpc :8081 --data-dir /tmp/onvm-dev2\n  onvm dev --nodes 3              # RPC on :8080, :8081, :8082\n  onvm dev --allow-origin http://localhost:5173 --allow-origin null   # your dApp's dev server, pages opened from disk"
    )]
    Dev {
        /// Defaults to $ONVM_DEV_DIR, else $XDG_DATA_HOME/onvm/dev, else ~/.local/share/onvm/dev.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Start this many nodes joined into one network (node i in <data dir>-i, RPC on the
        /// first node's port + i - 1); Ctrl-C stops them all.
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// Admit web pages from this origin (scheme://host[:port], or `null` for pages opened
        /// from disk; repeatable). Sets rpc.allowed_origins. They still need a token.
        #[arg(long = "allow-origin", value_name = "ORIGIN")]
        allow_origins: Vec<String>,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Show the node's identity, addresses and ticket.
    NodeInfo,
    /// Print the node's ticket (give it to `onvm connect` or `--bootnode` on another node).
    Ticket,
    /// List known peers: connection type, latency, last seen.
    Peers,
    /// Join another node by its ticket.
    #[command(after_help = "Example:\n  onvm --rpc :8081 connect $(onvm --rpc :8080 ticket)")]
    Connect { ticket: String },
    /// Show the DAG heads and how many nodes this node holds.
    DagHeads,
    /// Print one DAG node (an operation: deploy, call, blob, job, announce) as JSON.
    #[command(after_help = "Example:\n  onvm dag-get --id $(onvm dag-heads | head -1)")]
    DagGet {
        /// DAG node id: 64 hex digits (as printed by dag-heads or watch-dag).
        #[arg(long)]
        id: Hash32,
    },
    /// Follow the DAG nodes this node stores, one line each (seq, id, author, operation);
    /// resumes by itself if the node closes the feed for lag.
    #[command(
        after_help = "Example:\n  onvm watch-dag --from-seq 1 --limit 10\n  onvm --json watch-dag | jq -c .node.body.payload     # one JSON object per line"
    )]
    WatchDag {
        /// Start from this arrival sequence number (1: the whole history; default: new nodes only).
        #[arg(long)]
        from_seq: Option<u64>,
        /// Exit after this many nodes (default: follow until Ctrl-C).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Check liveness and readiness (exit code 1 when not ready).
    Health,
    /// Show the node's counters.
    Metrics,
    /// Store a file as a blob; prints its id. Large files stream in chunks.
    #[command(after_help = "Example:\n  onvm upload-blob --file video.mp4 --mime video/mp4")]
    UploadBlob {
        /// The file to store.
        #[arg(long)]
        file: PathBuf,
        /// MIME type stored with the blob, e.g. text/markdown.
        #[arg(long)]
        mime: Option<String>,
        /// Continue an interrupted upload.
        #[arg(long)]
        resume: Option<UploadId>,
    },
    /// Drop an unfinished chunked upload and the data sent so far.
    #[command(after_help = "Example:\n  onvm abort-upload --upload-id upload5c…")]
    AbortUpload {
        /// Upload id: upload + 32 hex digits (as printed by upload-blob).
        #[arg(long)]
        upload_id: UploadId,
    },
    /// Download a blob to a file (`-` for stdout), verifying its hash.
    #[command(after_help = "Example:\n  onvm get-blob --id blob3f… --out /tmp/copy.mp4")]
    GetBlob {
        /// Blob id: blob + 64 hex digits (as printed by upload-blob).
        #[arg(long)]
        id: BlobId,
        /// Where to write it (`-` for stdout).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a blob's size, mime type and creation time.
    #[command(after_help = "Example:\n  onvm blob-stat --id blob3f…")]
    BlobStat {
        /// Blob id: blob + 64 hex digits (as printed by upload-blob).
        #[arg(long)]
        id: BlobId,
    },
    /// Deploy a wasm program; prints its program id. Same file and salt, same id.
    #[command(
        after_help = "Example:\n  onvm deploy --file kvstore.wasm --salt v2 --committee-size 4"
    )]
    Deploy {
        /// The wasm module to deploy.
        #[arg(long)]
        file: PathBuf,
        /// Exported function called by default (default onvm_main).
        #[arg(long)]
        entrypoint: Option<String>,
        /// More exported functions callable with `execute --entrypoint`.
        #[arg(long = "extra-entrypoint")]
        extra_entrypoints: Vec<String>,
        /// Distinguishes deployments of the same wasm by the same node (same file and salt, same id).
        #[arg(long, default_value = "")]
        salt: String,
        /// Blobs the program may read (repeatable or comma-separated).
        #[arg(long = "blob-refs", value_delimiter = ',')]
        blob_refs: Vec<BlobId>,
        /// Committee members attesting each call (default: the node's committee.default_size).
        #[arg(long)]
        committee_size: Option<u32>,
        /// Signatures a call needs: only the BFT quorum (more than two thirds of the committee,
        /// the default) is accepted; any other value is refused with the value to pass.
        #[arg(long)]
        threshold: Option<u32>,
        /// Accept only signed writing calls (`execute --key`); anonymous calls and jobs are refused.
        #[arg(long)]
        require_signed_calls: bool,
    },
    /// Call a program; prints its output (text when UTF-8, else base64).
    #[command(
        after_help = "Example:\n  onvm execute --program-id prog49… --input-json '{\"op\":\"get\",\"key\":\"greeting\"}' --key alice.key"
    )]
    Execute {
        /// Program id: prog + 64 hex digits (as printed by deploy).
        #[arg(long)]
        program_id: ProgramId,
        /// Input from a file.
        #[arg(long, conflicts_with_all = ["input_json", "input_text"])]
        input: Option<PathBuf>,
        /// Input given as JSON text (checked to be valid JSON).
        #[arg(long)]
        input_json: Option<String>,
        /// Input given as plain text.
        #[arg(long, conflicts_with = "input_json")]
        input_text: Option<String>,
        /// Fuel (wasm instructions plus bytes handled) for the call; default and cap from the node (vm.default_fuel, vm.max_fuel).
        #[arg(long)]
        fuel: Option<u64>,
        /// Run without writing and without a receipt.
        #[arg(long)]
        read_only: bool,
        /// Exported function to call (default: the program's first entrypoint).
        #[arg(long)]
        entrypoint: Option<String>,
        /// Wall-clock limit in milliseconds (default and cap vm.max_call_ms); a call stopped by it gets no receipt.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Idempotency key: running the same request id again returns the first result
        /// instead of executing twice (default: a fresh id per call).
        #[arg(long)]
        request_id: Option<String>,
        /// Call as the caller of this key file (from `onvm key new`): the call is signed, and
        /// the program and receipt see the key's caller id. Default: an anonymous call.
        #[arg(long)]
        key: Option<PathBuf>,
        /// How long the signed call stays valid: seconds, or 90s, 15m, 12h, 30d (with --key).
        #[arg(long, default_value = "5m", requires = "key")]
        valid_for: Lifetime,
    },
    /// Show a program's manifest, state root and height.
    #[command(after_help = "Example:\n  onvm program-info --program-id prog49…")]
    ProgramInfo {
        /// Program id: prog + 64 hex digits (as printed by deploy).
        #[arg(long)]
        program_id: ProgramId,
    },
    /// List deployed programs.
    #[command(after_help = "Example:\n  onvm program-catalog --limit 20")]
    ProgramCatalog {
        /// Continue from the `next` cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        /// At most this many items (default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// A program's receipts, newest first.
    #[command(
        after_help = "Example:\n  onvm program-receipts --program-id prog49… --save-dir /tmp/receipts/"
    )]
    ProgramReceipts {
        /// Program id: prog + 64 hex digits (as printed by deploy).
        #[arg(long)]
        program_id: ProgramId,
        /// Only receipts below this height (to page back in history).
        #[arg(long)]
        before_height: Option<u64>,
        /// At most this many items (default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Write the receipts as JSON files into this directory (for verify-receipt).
        #[arg(long)]
        save_dir: Option<PathBuf>,
    },
    /// Replay every committed call of a program from its initial state on this machine and
    /// check every receipt, signature and state root; names the first height that differs.
    #[command(after_help = "Example:\n  onvm audit --program-id prog49…")]
    Audit {
        /// Program id: prog + 64 hex digits (as printed by deploy).
        #[arg(long)]
        program_id: ProgramId,
    },
    /// Disagreements this node recorded while attesting a program's calls: proposals it refused
    /// because its own re-execution gave another receipt.
    #[command(after_help = "Example:\n  onvm receipt-evidence --program-id prog49…")]
    ReceiptEvidence {
        /// Program id: prog + 64 hex digits (as printed by deploy).
        #[arg(long)]
        program_id: ProgramId,
    },
    /// Follow the receipts this node applies, one line each (seq, id, height, outcome, caller,
    /// signers); resumes by itself if the node closes the feed for lag.
    #[command(
        after_help = "Example:\n  onvm watch-receipts --program-id prog49… --from-seq 1\n  onvm --json watch-receipts --limit 2     # one JSON object per line, exits after 2"
    )]
    WatchReceipts {
        /// Only this program's receipts (prog + 64 hex digits; default: every program).
        #[arg(long)]
        program_id: Option<ProgramId>,
        /// Start from this DAG arrival sequence number (1: the whole history; default: new
        /// receipts only).
        #[arg(long)]
        from_seq: Option<u64>,
        /// Exit after this many receipts (default: follow until Ctrl-C).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Print a program's committee as JSON (save it for `verify-receipt --committee`).
    #[command(
        after_help = "Example:\n  onvm program-committee --program-id prog49… --out /tmp/committee.json"
    )]
    ProgramCommittee {
        /// Program id: prog + 64 hex digits (as printed by deploy).
        #[arg(long)]
        program_id: ProgramId,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fetch one receipt as JSON.
    #[command(after_help = "Example:\n  onvm get-receipt --receipt-id rcpt8c… --out /tmp/r.json")]
    GetReceipt {
        /// Receipt id: rcpt + 64 hex digits.
        #[arg(long)]
        receipt_id: ReceiptId,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Read a key of a program's state.
    #[command(after_help = "Example:\n  onvm state-get --program-id prog49… --key d/greeting")]
    StateGet {
        /// Program id: prog + 64 hex digits (as printed by deploy).
        #[arg(long)]
        program_id: ProgramId,
        /// The key as UTF-8 text (e.g. `d/greeting` for kvstore's key `greeting`).
        #[arg(long)]
        key: String,
    },
    /// Get a Merkle proof for a key; with --verify, check it locally.
    #[command(
        after_help = "Example:\n  onvm state-proof --program-id prog49… --key d/greeting --verify"
    )]
    StateProof {
        /// Program id: prog + 64 hex digits (as printed by deploy).
        #[arg(long)]
        program_id: ProgramId,
        /// The key as UTF-8 text (e.g. `d/greeting` for kvstore's key `greeting`).
        #[arg(long)]
        key: String,
        /// Check the proof locally against the state root (no trust in the node needed).
        #[arg(long)]
        verify: bool,
    },
    /// Check a receipt file offline: its id and BLS signature (no node needed).
    #[command(
        after_help = "Example:\n  onvm verify-receipt --file /tmp/r.json --committee /tmp/committee.json"
    )]
    VerifyReceipt {
        /// A receipt JSON file (from `program-receipts --save-dir` or `get-receipt --out`).
        #[arg(long)]
        file: PathBuf,
        /// Require this network id.
        #[arg(long)]
        network_id: Option<String>,
        /// Require this signer (BLS public key, hex).
        #[arg(long)]
        bls_key: Option<String>,
        /// Also check the committee's aggregate signature against this committee (JSON from
        /// `program-committee`).
        #[arg(long)]
        committee: Option<PathBuf>,
    },
    /// Submit a durable job; prints its id, or with --wait follows it live and prints the output.
    #[command(
        after_help = "Example:\n  onvm submit-job --program-id prog49… --input-json '{\"task\":\"compute\"}' --request-id order-42 --wait"
    )]
    SubmitJob {
        /// Program id: prog + 64 hex digits (as printed by deploy).
        #[arg(long)]
        program_id: ProgramId,
        /// Input from a file.
        #[arg(long, conflicts_with_all = ["input_json", "input_text"])]
        input: Option<PathBuf>,
        /// Input given as JSON text (checked to be valid JSON).
        #[arg(long)]
        input_json: Option<String>,
        /// Input given as plain text.
        #[arg(long, conflicts_with = "input_json")]
        input_text: Option<String>,
        /// Idempotency key: resubmitting it returns the same job.
        #[arg(long)]
        request_id: String,
        /// Retries after a failed first attempt (default jobs.default_max_retries; at most jobs.max_retries).
        #[arg(long)]
        max_retries: Option<u32>,
        /// Per-attempt wall-clock limit in milliseconds (default and cap vm.max_call_ms), as `execute --timeout-ms`.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Fuel (wasm instructions plus bytes handled) for the call; default and cap from the node (vm.default_fuel, vm.max_fuel).
        #[arg(long)]
        fuel: Option<u64>,
        /// Follow the job live and print its output when it ends.
        #[arg(long)]
        wait: bool,
        /// Run the job as the caller of this key file (from `onvm key new`): every attempt is
        /// signed by it (the retry count too: --max-retries defaults to 3 then).
        #[arg(long)]
        key: Option<PathBuf>,
        /// How long the signed job may run its attempts: seconds, or 90s, 15m, 12h, 30d (with --key).
        #[arg(long, default_value = "1h", requires = "key")]
        valid_for: Lifetime,
    },
    /// Show a job's status and attempts.
    #[command(after_help = "Example:\n  onvm job-status --job-id job1d…")]
    JobStatus {
        /// Job id: job + 64 hex digits (as printed by submit-job).
        #[arg(long)]
        job_id: JobId,
    },
    /// Print or save a completed job's output.
    #[command(after_help = "Example:\n  onvm job-output --job-id job1d… --out /tmp/out.json")]
    JobOutput {
        /// Job id: job + 64 hex digits (as printed by submit-job).
        #[arg(long)]
        job_id: JobId,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print what a job's program logged, attempt by attempt.
    #[command(after_help = "Example:\n  onvm job-logs --job-id job1d…")]
    JobLogs {
        /// Job id: job + 64 hex digits (as printed by submit-job).
        #[arg(long)]
        job_id: JobId,
    },
    /// Cancel a pending or running job.
    #[command(after_help = "Example:\n  onvm cancel-job --job-id job1d…")]
    CancelJob {
        /// Job id: job + 64 hex digits (as printed by submit-job).
        #[arg(long)]
        job_id: JobId,
    },
    /// List jobs, optionally by status and program.
    #[command(after_help = "Example:\n  onvm list-jobs --status failed --program-id prog49…")]
    ListJobs {
        /// Only jobs in this state: pending, running, completed, failed, cancelled, timed_out.
        #[arg(long)]
        status: Option<JobStatus>,
        /// Only this program (prog + 64 hex digits).
        #[arg(long)]
        program_id: Option<ProgramId>,
        /// Continue from the `next` cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        /// At most this many items (default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Follow job events live (resumes by itself if the node closes the feed for lag).
    #[command(after_help = "Example:\n  onvm watch-jobs --from-seq 1")]
    WatchJobs {
        /// Only jobs in this state: pending, running, completed, failed, cancelled, timed_out.
        #[arg(long)]
        status: Option<JobStatus>,
        /// Only this program (prog + 64 hex digits).
        #[arg(long)]
        program_id: Option<ProgramId>,
        /// Start from this event sequence number (default: new events only).
        #[arg(long)]
        from_seq: Option<u64>,
        /// Exit after this many events (default: follow until Ctrl-C).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Run an iroh relay for a private network: nodes that cannot reach each other directly
    /// (NATs, firewalls, blocked UDP) meet through it. Prints the URL to give nodes.
    #[command(
        after_help = "Example:\n  onvm relay --listen 0.0.0.0:3340             # prints relay: http://...; nodes: --relay http://<host>:3340/\n  onvm relay --tls-cert cert.pem --tls-key key.pem --hostname relay.example.org --token-file relay.token"
    )]
    Relay {
        /// Plain-HTTP address: the whole relay without TLS; with TLS only the captive-portal
        /// probe iroh makes over plain HTTP.
        #[arg(long, default_value = "0.0.0.0:3340")]
        listen: String,
        /// TLS certificate chain (PEM) for --hostname; serves the relay over HTTPS.
        #[arg(long, requires_all = ["tls_key", "hostname"])]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The host name the certificate is for (the URL nodes use).
        #[arg(long, requires = "tls_cert")]
        hostname: Option<String>,
        /// HTTPS address, with --tls-cert.
        #[arg(long, default_value = "0.0.0.0:443")]
        https_listen: String,
        /// Most bytes per second the relay reads from one node (default: unlimited).
        #[arg(long)]
        max_bytes_per_sec: Option<std::num::NonZeroU32>,
        /// Burst allowed above --max-bytes-per-sec.
        #[arg(long, requires = "max_bytes_per_sec")]
        max_burst_bytes: Option<std::num::NonZeroU32>,
        /// Capacity of the cache of node keys.
        #[arg(long, default_value_t = onvm_node::relay::DEFAULT_KEY_CACHE)]
        key_cache: usize,
        /// File holding a token nodes must present (their net.relay_token); without it any
        /// node may use the relay.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Serve Prometheus metrics (clients, bytes relayed, refusals) at http://ADDR/metrics.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    #[command(
        after_help = "Example:\n  onvm completions bash > ~/.local/share/bash-completion/completions/onvm\n  onvm completions zsh > ~/.zfunc/_onvm      # with fpath+=~/.zfunc before compinit\n  onvm completions fish > ~/.config/fish/completions/onvm.fish"
    )]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Caller keys for signed calls (offline: no node needed).
    Key {
        #[command(subcommand)]
        action: KeyCommand,
    },
    /// API tokens: create, list and revoke (needs scope admin: the node's own CLI has it).
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// List blobs stored on the node.
    #[command(after_help = "Example:\n  onvm list-blobs --all")]
    ListBlobs {
        /// Continue from the `next` cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        /// At most this many items (default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create a caller key file (mode 600, never overwritten); prints the caller id. Then call
    /// with `onvm execute --key FILE` or `onvm submit-job --key FILE`.
    #[command(after_help = "Example:\n  onvm key new --out alice.key")]
    New {
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the caller id of a key file.
    #[command(after_help = "Example:\n  onvm key show --key alice.key")]
    Show {
        /// The key file (from `onvm key new`).
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token; prints it once (keep it secret).
    #[command(
        after_help = "Example:\n  onvm token create --scope read,execute --expires 30d --origin https://app.example"
    )]
    Create {
        /// Scopes, comma-separated or repeated: read, execute, deploy, upload, peers, admin.
        #[arg(long, required = true, value_delimiter = ',')]
        scope: Vec<onvm_rpc_api::auth::Scope>,
        /// Lifetime: seconds, or with a unit: 90s, 15m, 12h, 30d. Default: until revoked.
        #[arg(long)]
        expires: Option<Lifetime>,
        /// Web origin allowed to use it, e.g. https://app.example (repeatable). Default: any
        /// origin the node admits.
        #[arg(long)]
        origin: Vec<String>,
        /// A name to recognise it by in `token list`.
        #[arg(long)]
        label: Option<String>,
    },
    /// List live tokens (ids, scopes, origins, expiry; never secrets).
    List,
    /// Revoke a token by id (or the whole token); it stops working at once.
    #[command(after_help = "Example:\n  onvm token revoke 3fa94c1b2d0e7a65")]
    Revoke { id: String },
}

/// A duration given as seconds or with a unit (s, m, h, d).
#[derive(Debug, Clone, Copy)]
struct Lifetime(u64);

impl std::str::FromStr for Lifetime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => s.split_at(i),
            None => (s, "s"),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is not a lifetime like 3600, 90s, 15m, 12h or 30d"))?;
        let unit = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
        };
        Ok(Lifetime(n.saturating_mul(unit)))
    }
}

/// A caller id: the bare id, or `{"caller": …}` with --json.
fn print_caller(caller: onvm_rpc_api::Hash32, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "caller": caller }));
    } else {
        println!("{caller}");
    }
}

/// The error and its causes on one line, skipping a cause whose text the line already holds
/// (errors that print their source, as many library errors do, would otherwise say it twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if line.contains(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line
}

fn overrides(rpc: Option<&str>, flags: &NodeFlags) -> Result<daemon::Overrides> {
    let parse = |s: &str| target::listen_addr(s).map_err(anyhow::Error::msg);
    Ok(daemon::Overrides {
        rpc: rpc.map(parse).transpose()?,
        listen: flags.listen.as_deref().map(parse).transpose()?,
        offline: flags.offline,
        relays: flags.relays.clone(),
        relay_only: flags.relay_only,
        set: flags.set.clone(),
        bootnodes: flags.bootnodes.clone(),
        no_auth: flags.no_auth,
        allow_origins: Vec::new(),
    })
}

const DEFAULT_RPC: &str = "127.0.0.1:8080";

async fn run(cli: Cli) -> Result<()> {
    let rpc = cli.rpc.as_deref();
    let session = || async {
        let url = target::client_url(rpc.unwrap_or(DEFAULT_RPC)).map_err(anyhow::Error::msg)?;
        client::connect(&url, cli.token.as_deref(), cli.json).await
    };
    match &cli.command {
        Command::Init {
            data_dir,
            allow_plaintext_identity,
            flags,
        } => daemon::init(data_dir, *allow_plaintext_identity, &overrides(rpc, flags)?),
        Command::RunNode { data_dir, flags } => {
            daemon::run_node(data_dir, &overrides(rpc, flags)?).await
        }
        Command::Dev {
            data_dir,
            nodes,
            allow_origins,
            flags,
        } => {
            let mut overrides = overrides(rpc, flags)?;
            overrides.allow_origins = allow_origins.clone();
            daemon::dev(data_dir.clone(), *nodes, &overrides).await
        }
        Command::NodeInfo => session().await?.node_info().await,
        Command::Ticket => session().await?.ticket().await,
        Command::Peers => session().await?.peers().await,
        Command::Connect { ticket } => session().await?.connect_peer(ticket).await,
        Command::DagHeads => session().await?.dag_heads().await,
        Command::DagGet { id } => session().await?.dag_get(*id).await,
        Command::WatchDag { from_seq, limit } => {
            session().await?.watch_dag(*from_seq, *limit).await
        }
        Command::Health => session().await?.health().await,
        Command::Metrics => session().await?.metrics().await,
        Command::UploadBlob { file, mime, resume } => {
            session()
                .await?
                .upload_blob(file, mime.clone(), resume.clone())
                .await
        }
        Command::AbortUpload { upload_id } => {
            session().await?.abort_upload(upload_id.clone()).await
        }
        Command::GetBlob { id, out } => session().await?.get_blob(*id, out).await,
        Command::BlobStat { id } => session().await?.blob_stat(*id).await,
        Command::Deploy {
            file,
            entrypoint,
            extra_entrypoints,
            salt,
            blob_refs,
            committee_size,
            threshold,
            require_signed_calls,
        } => {
            let request = onvm_rpc_api::program::DeployRequest {
                wasm_base64: None,
                code_blob: None,
                entrypoint: entrypoint.clone(),
                extra_entrypoints: extra_entrypoints.clone(),
                blob_refs: blob_refs.clone(),
                salt: salt.clone(),
                committee_size: *committee_size,
                threshold: *threshold,
                require_signed_calls: *require_signed_calls,
            };
            session().await?.deploy(file, request).await
        }
        Command::Execute {
            program_id,
            input,
            input_json,
            input_text,
            fuel,
            read_only,
            entrypoint,
            timeout_ms,
            request_id,
            key,
            valid_for,
        } => {
            let bytes = programs::input_bytes(
                input.as_deref(),
                input_json.as_deref(),
                input_text.as_deref(),
            )?;
            let mut options = onvm_rpc_api::program::ExecuteOptions {
                fuel: *fuel,
                read_only: *read_only,
                entrypoint: entrypoint.clone(),
                timeout_ms: *timeout_ms,
                timestamp_ms: None,
                request_id: request_id.clone(),
                signed: None,
            };
            let key = key.as_deref().map(keys::CallerKey::load).transpose()?;
            let session = session().await?;
            if let Some(key) = &key {
                session
                    .sign_call(key, *program_id, &bytes, &mut options, valid_for.0)
                    .await?;
            }
            session.execute(*program_id, bytes, options).await
        }
        Command::ProgramInfo { program_id } => session().await?.program_info(*program_id).await,
        Command::ProgramCatalog { cursor, limit } => {
            session()
                .await?
                .program_catalog(cursor.clone(), *limit)
                .await
        }
        Command::ProgramReceipts {
            program_id,
            before_height,
            limit,
            save_dir,
        } => {
            session()
                .await?
                .program_receipts(*program_id, *before_height, *limit, save_dir.as_deref())
                .await
        }
        Command::Audit { program_id } => session().await?.audit(*program_id).await,
        Command::ReceiptEvidence { program_id } => {
            session().await?.receipt_evidence(*program_id).await
        }
        Command::WatchReceipts {
            program_id,
            from_seq,
            limit,
        } => {
            session()
                .await?
                .watch_receipts(*program_id, *from_seq, *limit)
                .await
        }
        Command::ProgramCommittee { program_id, out } => {
            session()
                .await?
                .program_committee(*program_id, out.as_deref())
                .await
        }
        Command::GetReceipt { receipt_id, out } => {
            session()
                .await?
                .get_receipt(*receipt_id, out.as_deref())
                .await
        }
        Command::StateGet { program_id, key } => session().await?.state_get(*program_id, key).await,
        Command::StateProof {
            program_id,
            key,
            verify,
        } => {
            session()
                .await?
                .state_proof(*program_id, key, *verify)
                .await
        }
        Command::VerifyReceipt {
            file,
            network_id,
            bls_key,
            committee,
        } => programs::verify_receipt_file(
            file,
            network_id.as_deref(),
            bls_key.as_deref(),
            committee.as_deref(),
            cli.json,
        ),
        Command::SubmitJob {
            program_id,
            input,
            input_json,
            input_text,
            request_id,
            max_retries,
            timeout_ms,
            fuel,
            wait,
            key,
            valid_for,
        } => {
            let input = programs::input_bytes(
                input.as_deref(),
                input_json.as_deref(),
                input_text.as_deref(),
            )?;
            let args = jobs::SubmitArgs {
                program_id: *program_id,
                input,
                request_id: request_id.clone(),
                max_retries: *max_retries,
                timeout_ms: *timeout_ms,
                fuel: *fuel,
                wait: *wait,
                key: key
                    .as_deref()
                    .map(keys::CallerKey::load)
                    .transpose()?
                    .map(|k| (k, valid_for.0)),
            };
            session().await?.submit_job(args).await
        }
        Command::JobStatus { job_id } => session().await?.job_status(*job_id).await,
        Command::JobOutput { job_id, out } => {
            session().await?.job_output(*job_id, out.as_deref()).await
        }
        Command::JobLogs { job_id } => session().await?.job_logs(*job_id).await,
        Command::CancelJob { job_id } => session().await?.cancel_job(*job_id).await,
        Command::ListJobs {
            status,
            program_id,
            cursor,
            limit,
        } => {
            let filter = JobFilter {
                status: *status,
                program_id: *program_id,
            };
            session()
                .await?
                .list_jobs(filter, cursor.clone(), *limit)
                .await
        }
        Command::WatchJobs {
            status,
            program_id,
            from_seq,
            limit,
        } => {
            let filter = JobFilter {
                status: *status,
                program_id: *program_id,
            };
            session().await?.watch_jobs(filter, *from_seq, *limit).await
        }
        Command::Relay {
            listen,
            tls_cert,
            tls_key,
            hostname,
            https_listen,
            max_bytes_per_sec,
            max_burst_bytes,
            key_cache,
            token_file,
            metrics_listen,
        } => {
            let parse = |s: &str| target::listen_addr(s).map_err(anyhow::Error::msg);
            let tls = match (tls_cert, tls_key, hostname) {
                (Some(cert), Some(key), Some(hostname)) => Some(onvm_node::relay::RelayTls {
                    cert: cert.clone(),
                    key: key.clone(),
                    https_listen: parse(https_listen)?,
                    hostname: hostname.clone(),
                }),
                _ => None,
            };
            let token = match token_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading the relay token {}", path.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            daemon::relay(onvm_node::relay::RelayOptions {
                http_listen: parse(listen)?,
                tls,
                max_bytes_per_sec: *max_bytes_per_sec,
                max_burst_bytes: *max_burst_bytes,
                key_cache: *key_cache,
                token,
                metrics_listen: metrics_listen.as_deref().map(parse).transpose()?,
            })
            .await
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(*shell, &mut Cli::command(), "onvm", &mut std::io::stdout());
            Ok(())
        }
        Command::Key { action } => match action {
            KeyCommand::New { out } => {
                let key = keys::CallerKey::create(out)?;
                print_caller(key.caller(), cli.json);
                eprintln!(
                    "caller key written to {} (keep it secret); call with `onvm execute --key {}`",
                    out.display(),
                    out.display()
                );
                Ok(())
            }
            KeyCommand::Show { key } => {
                print_caller(keys::CallerKey::load(key)?.caller(), cli.json);
                Ok(())
            }
        },
        Command::Token { action } => match action {
            TokenCommand::Create {
                scope,
                expires,
                origin,
                label,
            } => {
                let request = onvm_rpc_api::auth::TokenRequest {
                    scopes: scope.clone(),
                    expires_in_secs: expires.map(|d| d.0),
                    origins: origin.clone(),
                    label: label.clone(),
                };
                session().await?.token_create(request).await
            }
            TokenCommand::List => session().await?.token_list().await,
            TokenCommand::Revoke { id } => session().await?.token_revoke(id).await,
        },
        Command::ListBlobs { cursor, limit, all } => {
            session()
                .await?
                .list_blobs(cursor.clone(), *limit, *all)
                .await
        }
    }
}

fn init_logging(command: &Command) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let serving = matches!(
        command,
        Command::RunNode { .. } | Command::Dev { .. } | Command::Relay { .. }
    );
    let default = if serving { "info" } else { "warn" };
    // With RUST_LOG set, every line as it comes; by default, failed pkarr publishes once.
    let collapse_pkarr = std::env::var_os("RUST_LOG").is_none();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(tracing_subscriber::filter::filter_fn(move |meta| {
            !(collapse_pkarr && logging::is_pkarr_warning(meta))
        }));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(collapse_pkarr.then(logging::PkarrOnce::default))
        .try_init();
}

/// Commands that talk to no node, for which an `--rpc` typed on the command line is a mistake
/// worth saying (`ONVM_RPC` in the environment is fine: it is meant for the other commands).
fn offline_command(command: &Command) -> Option<&'static str> {
    match command {
        Command::VerifyReceipt { .. } => Some("verify-receipt"),
        Command::Key { .. } => Some("key"),
        Command::Completions { .. } => Some("completions"),
        Command::Relay { .. } => Some("relay"),
        _ => None,
    }
}

fn rpc_typed(matches: &clap::ArgMatches) -> bool {
    matches.value_source("rpc") == Some(clap::parser::ValueSource::CommandLine)
        || matches.subcommand().is_some_and(|(_, sub)| rpc_typed(sub))
}

/// Lets a closed pipe end the process quietly, as it does any Unix filter: Rust ignores
/// SIGPIPE, so `onvm completions bash | head` panicked with "Broken pipe" (exit 101).
fn die_quietly_on_closed_pipes() {
    // SAFETY: restoring the default disposition of one signal at start, before any thread is
    // spawned; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    die_quietly_on_closed_pipes();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Some(name) = offline_command(&cli.command)
        && rpc_typed(&matches)
    {
        eprintln!(
            "error: `onvm {name}` works offline and talks to no node, so --rpc does nothing here: leave it out"
        );
        return ExitCode::from(2);
    }
    init_logging(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the outermost context and its causes.
            let message = error_chain(&e);
            eprintln!("error: {message}");
            let client_error = e
                .chain()
                .find_map(|c| c.downcast_ref::<client::ClientError>());
            let code = client_error
                .map(client::ClientError::exit_code)
                .unwrap_or(1);
            if json {
                // A script reading stdout gets the error in the format it asked for.
                let rpc_code = match client_error {
                    Some(client::ClientError::Rpc { code, .. }) => Some(*code),
                    _ => None,
                };
                println!(
                    "{}",
                    serde_json::json!({
                        "error": {"message": message, "exit_code": code, "rpc_code": rpc_code}
                    })
                );
            }
            ExitCode::from(code)
        }
    }
}
