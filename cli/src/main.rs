//! `onvm`: run an ONVM node, or talk to one over its WebSocket JSON-RPC API.

mod client;
mod daemon;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use onvm_rpc_api::{BlobId, UploadId};

#[derive(Parser, Debug)]
#[command(
    name = "onvm",
    version,
    about = "ONVM: a peer-to-peer compute network node and client"
)]
struct Cli {
    /// Node RPC address for client commands (host:port, :port or ws:// URL); for run-node and
    /// dev, the address to serve RPC on.
    #[arg(long, global = true, env = "ONVM_RPC")]
    rpc: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct NodeFlags {
    /// iroh (QUIC) listen address, host:port or :port. Overrides net.listen.
    #[arg(long)]
    listen: Option<String>,
    /// No relays and no external address lookup (loopback/LAN only). Sets net.offline.
    #[arg(long)]
    offline: bool,
    /// Override any config key, e.g. --set rpc.max_batch=64 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a data dir: identity (ed25519 + BLS) and a documented config.toml.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
        /// Store the identity unencrypted (only for throwaway or test nodes).
        #[arg(long)]
        allow_plaintext_identity: bool,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Run a node from an initialised data dir until SIGINT/SIGTERM.
    RunNode {
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Zero-config development node: creates a data dir if needed and runs on loopback.
    Dev {
        /// Defaults to $ONVM_DEV_DIR, else $XDG_DATA_HOME/onvm/dev, else ~/.local/share/onvm/dev.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Show the node's identity, addresses and ticket.
    NodeInfo,
    /// Check liveness and readiness (exit code 1 when not ready).
    Health,
    /// Show the node's counters.
    Metrics,
    /// Store a file as a blob; prints its id. Large files stream in chunks.
    UploadBlob {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        mime: Option<String>,
        /// Continue an interrupted upload.
        #[arg(long)]
        resume: Option<UploadId>,
    },
    /// Download a blob to a file (`-` for stdout), verifying its hash.
    GetBlob {
        #[arg(long)]
        id: BlobId,
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a blob's size, mime type and creation time.
    BlobStat {
        #[arg(long)]
        id: BlobId,
    },
    /// List blobs stored on the node.
    ListBlobs {
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
}

fn overrides(rpc: Option<&str>, flags: &NodeFlags) -> Result<daemon::Overrides> {
    let parse = |s: &str| target::listen_addr(s).map_err(anyhow::Error::msg);
    Ok(daemon::Overrides {
        rpc: rpc.map(parse).transpose()?,
        listen: flags.listen.as_deref().map(parse).transpose()?,
        offline: flags.offline,
        set: flags.set.clone(),
    })
}

const DEFAULT_RPC: &str = "127.0.0.1:8080";

async fn run(cli: Cli) -> Result<()> {
    let rpc = cli.rpc.as_deref();
    let session = || async {
        let url = target::client_url(rpc.unwrap_or(DEFAULT_RPC)).map_err(anyhow::Error::msg)?;
        client::connect(&url, cli.json).await
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
        Command::Dev { data_dir, flags } => {
            daemon::dev(data_dir.clone(), &overrides(rpc, flags)?).await
        }
        Command::NodeInfo => session().await?.node_info().await,
        Command::Health => session().await?.health().await,
        Command::Metrics => session().await?.metrics().await,
        Command::UploadBlob { file, mime, resume } => {
            session()
                .await?
                .upload_blob(file, mime.clone(), resume.clone())
                .await
        }
        Command::GetBlob { id, out } => session().await?.get_blob(*id, out).await,
        Command::BlobStat { id } => session().await?.blob_stat(*id).await,
        Command::ListBlobs { cursor, limit, all } => {
            session()
                .await?
                .list_blobs(cursor.clone(), *limit, *all)
                .await
        }
    }
}

fn init_logging(command: &Command) {
    let serving = matches!(command, Command::RunNode { .. } | Command::Dev { .. });
    let default = if serving { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the outermost context and its causes.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<client::ClientError>())
                .map(client::ClientError::exit_code)
                .unwrap_or(1);
            ExitCode::from(code)
        }
    }
}
