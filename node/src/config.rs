//! `config.toml`: every key has a documented default; unknown keys are an error naming the key.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid override `{0}`: expected KEY=VALUE, e.g. rpc.max_batch=64")]
    BadOverride(String),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole node configuration. Sections mirror the owner modules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub rpc: RpcConfig,
    pub net: NetConfig,
    pub blobs: BlobsConfig,
    pub vm: VmConfig,
    pub jobs: JobsConfig,
    pub committee: CommitteeConfig,
}

/// Default `vm.max_future_skew_ms` (see `VmConfig::default`).
pub const DEFAULT_MAX_FUTURE_SKEW_MS: u64 = 2_000;

/// Default `committee.view_timeout_ms`.
pub const DEFAULT_VIEW_TIMEOUT_MS: u64 = 2_000;
/// Bounds of `committee.view_timeout_ms`.
pub const MIN_VIEW_TIMEOUT_MS: u64 = 100;
pub const MAX_VIEW_TIMEOUT_MS: u64 = 120_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitteeConfig {
    pub default_size: u32,
    pub max_size: u32,
    pub attest_timeout_ms: u64,
    pub view_timeout_ms: u64,
    pub debug_corrupt_results: bool,
    pub debug_abandon_after_attest: bool,
    pub debug_forge_callers: bool,
    /// A lying member (tests of Byzantine faults only): sends made-up decisions.
    pub debug_forge_decisions: bool,
    /// A lying member (tests of Byzantine faults only): every vote it casts goes to half of
    /// the members twice, the second time for another value, validly signed (equivocation).
    pub debug_equivocate: bool,
    /// A lying member (tests of Byzantine faults only): as a round's leader it never runs a
    /// call another member forwarded (censorship).
    pub debug_censor: bool,
    /// Endpoint ids this node exchanges no committee messages with (tests of split votes).
    pub debug_partition: Vec<String>,
}

impl Default for CommitteeConfig {
    fn default() -> Self {
        Self {
            // Four members with a threshold of three survive one dead or lying member; three
            // would need all three (quorum K - f with f = (K-1)/3 faulty members).
            default_size: 4,
            max_size: 16,
            attest_timeout_ms: 10_000,
            // Tendermint's round-0 propose timeout: a dead leader's round ends after about this
            // long (later rounds add half of vm.max_call_ms). Long enough for a call at the
            // default fuel to run and be re-executed by the members on a loaded 2-core
            // machine, short enough that failover stays well under the 5 s a client notices.
            view_timeout_ms: DEFAULT_VIEW_TIMEOUT_MS,
            debug_corrupt_results: false,
            debug_abandon_after_attest: false,
            debug_forge_callers: false,
            debug_forge_decisions: false,
            debug_equivocate: false,
            debug_censor: false,
            debug_partition: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    pub max_running: u32,
    pub max_queue: u64,
    pub default_max_retries: u32,
    pub max_retries: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub event_buffer: u32,
    pub max_metadata_bytes: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            max_running: 4,
            max_queue: 10_000,
            default_max_retries: 3,
            max_retries: 20,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            event_buffer: 1024,
            max_metadata_bytes: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmConfig {
    pub default_fuel: u64,
    pub max_fuel: u64,
    pub max_memory_bytes: u64,
    pub max_stack_bytes: u64,
    pub max_module_bytes: u64,
    pub max_output_bytes: u64,
    pub max_input_bytes: u64,
    pub max_call_ms: u64,
    pub max_log_bytes: u64,
    pub max_key_bytes: u64,
    pub max_value_bytes: u64,
    pub max_writes_per_call: u64,
    pub max_write_bytes_per_call: u64,
    pub max_blob_refs_bytes: u64,
    pub max_concurrent_calls: u32,
    pub module_cache_entries: u32,
    pub max_clock_skew_ms: u64,
    pub max_future_skew_ms: u64,
}

impl VmConfig {
    /// Fuel and wall-clock limit of one call from the client's options (defaults filled in),
    /// with the same bounds for `program_execute` and `job_submit`.
    pub fn call_bounds(
        &self,
        fuel: Option<u64>,
        timeout_ms: Option<u64>,
    ) -> Result<(u64, u64), String> {
        let fuel = fuel.unwrap_or(self.default_fuel);
        if fuel == 0 || fuel > self.max_fuel {
            return Err(format!(
                "fuel must be 1..={} units (vm.max_fuel), got {fuel}",
                self.max_fuel
            ));
        }
        let timeout_ms = timeout_ms.unwrap_or(self.max_call_ms);
        if timeout_ms == 0 || timeout_ms > self.max_call_ms {
            return Err(format!(
                "timeout_ms must be 1..={} ms (vm.max_call_ms), got {timeout_ms}",
                self.max_call_ms
            ));
        }
        Ok((fuel, timeout_ms))
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            default_fuel: onvm_rpc_api::program::DEFAULT_FUEL,
            max_fuel: 1_000_000_000,
            max_memory_bytes: 64 * MIB,
            max_stack_bytes: 512 * 1024,
            max_module_bytes: 8 * MIB,
            max_output_bytes: 4 * MIB,
            max_input_bytes: 4 * MIB,
            max_call_ms: 10_000,
            max_log_bytes: 64 * 1024,
            max_key_bytes: 256,
            max_value_bytes: MIB,
            max_writes_per_call: 10_000,
            // Bounds what one call holds in memory before commit (and the database growth it
            // causes): 16 MiB is far below the memory of a small machine, and above what
            // the default fuel lets a call write (about 2.5 MB at 20 units per byte).
            max_write_bytes_per_call: 16 * MIB,
            max_blob_refs_bytes: 64 * MIB,
            max_concurrent_calls: 32,
            module_cache_entries: 64,
            max_clock_skew_ms: 30_000,
            // A call's timestamp becomes its program's clock (later calls never go back), so a
            // timestamp ahead of the node's clock pushes every later call ahead with it, and a
            // signed call expiring before it is refused as expired. Synced clocks agree within
            // milliseconds; 2 s absorbs a sloppy client and bounds that push.
            max_future_skew_ms: DEFAULT_MAX_FUTURE_SKEW_MS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Name of the network; every signature is bound to it.
    pub network_id: String,
    /// Page cache of the node database, in bytes.
    pub db_cache_bytes: u64,
}

/// Default `node.db_cache_bytes`: redb's own default, 1 GiB per database, let a node's memory
/// grow to gigabytes as its history grew (two nodes in one benchmark process reached 4.4 GiB
/// RSS at 100,000 calls). 64 MiB holds the hot tables and state paths of busy programs.
pub const DEFAULT_DB_CACHE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcConfig {
    pub listen: SocketAddr,
    pub max_request_bytes: u32,
    pub max_response_bytes: u32,
    pub max_batch: u32,
    pub max_connections: u32,
    pub max_subscriptions_per_connection: u32,
    pub message_buffer: u32,
    pub subscriber_lag_ms: u64,
    pub auth: bool,
    pub anonymous_scopes: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub max_connections_per_ip: u32,
    pub operator_connections: u32,
    pub idle_connection_ms: u64,
    pub pressure_idle_ms: u64,
    pub max_subscriber_connections: u32,
    pub ping_interval_ms: u64,
    pub idle_timeout_ms: u64,
    pub calls_per_sec: u32,
    pub calls_burst: u32,
    pub client_calls_per_sec: u32,
    pub client_calls_burst: u32,
    pub max_calls_per_connection: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    pub listen: SocketAddr,
    pub offline: bool,
    pub bootnodes: Vec<String>,
    pub mdns: bool,
    pub forward_timeout_ms: u64,
    pub forward_dial_timeout_ms: u64,
    pub max_forward_bytes: u64,
    pub max_gossip_bytes: u64,
    pub sync_interval_ms: u64,
    pub suspect_ms: u64,
    pub idle_timeout_ms: u64,
    pub relays: Vec<String>,
    pub relay_only: bool,
    pub relay_token: String,
    pub relay_ca_file: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobsConfig {
    pub replicate: BlobReplication,
    pub fetch_from_peers: bool,
    pub max_blob_bytes: u64,
    pub max_inline_bytes: u64,
    pub max_chunk_bytes: u64,
    pub max_open_uploads: u32,
    pub max_open_uploads_per_client: u32,
    pub min_free_disk_bytes: u64,
    pub upload_ttl_secs: u64,
}

/// Which published blobs a node copies from its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobReplication {
    /// Only what is read here (with `fetch_from_peers`), on first read.
    Metadata,
    /// Every blob announced in the DAG, as soon as it is announced (up to `max_blob_bytes`).
    Full,
}

impl std::fmt::Display for BlobReplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Metadata => "metadata",
            Self::Full => "full",
        })
    }
}

const MIB: u64 = 1024 * 1024;

/// The `net.relays` entry that stands for iroh's public relays (n0's), used unless offline.
pub const PUBLIC_RELAYS: &str = "default";

/// The relays a node uses: `net.relays` resolved against `net.offline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relays {
    /// No relay: peers meet only through direct addresses.
    None,
    /// iroh's public relays (n0's).
    Public,
    /// Exactly these relays (e.g. `onvm relay` servers of a private network).
    Custom(Vec<iroh::RelayUrl>),
}

impl NetConfig {
    /// Which relays this node uses. `"default"` means the public relays, or none when offline
    /// (an offline node talks to no public service); explicit URLs are used offline too.
    pub fn relays(&self) -> Result<Relays, ConfigError> {
        if self.relays.iter().any(|r| r == PUBLIC_RELAYS) {
            if self.relays.len() > 1 {
                return Err(ConfigError::Invalid(format!(
                    "net.relays: \"{PUBLIC_RELAYS}\" (the public relays) cannot be mixed with relay URLs; list either it alone or your own relays"
                )));
            }
            return Ok(if self.offline {
                Relays::None
            } else {
                Relays::Public
            });
        }
        if self.relays.is_empty() {
            return Ok(Relays::None);
        }
        let mut urls = Vec::new();
        for r in &self.relays {
            let url: iroh::RelayUrl = r.parse().map_err(|e| {
                ConfigError::Invalid(format!(
                    "net.relays: `{r}` is not a relay URL ({e}); give http(s)://host[:port] as printed by `onvm relay`"
                ))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid(format!(
                    "net.relays: `{r}` must be an http:// or https:// URL"
                )));
            }
            urls.push(url);
        }
        Ok(Relays::Custom(urls))
    }
}

/// The default iroh UDP port; when it is busy (another node on this machine), the node takes a
/// free one instead, since peers dial the addresses in its ticket.
pub const DEFAULT_NET_PORT: u16 = 7600;

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            network_id: "onvm-devnet".into(),
            db_cache_bytes: DEFAULT_DB_CACHE_BYTES,
        }
    }
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_request_bytes: 10 * MIB as u32,
            max_response_bytes: 10 * MIB as u32,
            max_batch: 32,
            max_connections: 100,
            max_subscriptions_per_connection: 64,
            message_buffer: 1024,
            subscriber_lag_ms: 5000,
            auth: true,
            anonymous_scopes: vec!["read".into()],
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            // A third of the slots: one address (or one misbehaving script) cannot take them
            // all, while a busy local dApp with many tabs still fits.
            max_connections_per_ip: 32,
            // Enough for the operator's CLI, a dashboard and a few scripts while a flood holds
            // every other slot; few enough that the operator's own runaway script cannot spend
            // the descriptors the store and peers need.
            operator_connections: 16,
            // Far longer than any pause between a working client's calls; short enough that
            // sockets that only sit there (or trickle a body) give their slot back within a
            // minute. Clients reconnect on demand; subscribers are exempt.
            idle_connection_ms: 60_000,
            // Longer than any pause inside a working client's exchange (a call and the next
            // one it sends on the answer); short enough that a newcomer to a full node waits
            // about a second, not a minute, when idle sockets hold the slots.
            pressure_idle_ms: 1_000,
            // Half the slots: subscribers are never closed for idleness, so they must not be
            // able to take every slot; a dashboard or dApp needs one connection for all its
            // subscriptions.
            max_subscriber_connections: 50,
            ping_interval_ms: 15_000,
            idle_timeout_ms: 30_000,
            // Far above what a person or a dApp needs (reads are cheap, writes queue behind the
            // VM slots anyway), low enough that one script cannot monopolise the node; the
            // operator's cookie is never limited.
            calls_per_sec: 200,
            calls_burst: 400,
            client_calls_per_sec: 500,
            client_calls_burst: 1000,
            // A quarter of the default vm.max_concurrent_calls (32): one connection pipelining
            // calls leaves three quarters of the VM to everyone else.
            max_calls_per_connection: 8,
        }
    }
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_NET_PORT)),
            offline: false,
            bootnodes: Vec::new(),
            mdns: false,
            forward_timeout_ms: 60_000,
            forward_dial_timeout_ms: 3_000,
            max_forward_bytes: 16 * MIB,
            max_gossip_bytes: 64 * 1024,
            sync_interval_ms: 2_000,
            suspect_ms: 10_000,
            idle_timeout_ms: 15_000,
            relays: vec![PUBLIC_RELAYS.to_string()],
            relay_only: false,
            relay_token: String::new(),
            relay_ca_file: String::new(),
        }
    }
}

impl Default for BlobsConfig {
    fn default() -> Self {
        Self {
            replicate: BlobReplication::Metadata,
            fetch_from_peers: true,
            max_blob_bytes: 4096 * MIB,
            max_inline_bytes: 4 * MIB,
            max_chunk_bytes: 4 * MIB,
            max_open_uploads: 64,
            // One client (token or IP) cannot hold every upload slot.
            max_open_uploads_per_client: 8,
            // Room for the database, logs and the OS to keep working when uploads fill the
            // disk: writes then fail cleanly instead of the database hitting ENOSPC mid-commit.
            min_free_disk_bytes: 256 * MIB,
            // An upload with no append for an hour is abandoned (a slow link still appends).
            upload_ttl_secs: 3600,
        }
    }
}

/// Room for the JSON-RPC envelope around a base64 payload.
const ENVELOPE_BYTES: u64 = 64 * 1024;

fn base64_len(n: u64) -> u64 {
    n.div_ceil(3) * 4
}

impl Config {
    /// Parses TOML text, then applies `KEY=VALUE` overrides (same keys as the file, dotted).
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: origin.to_string(),
                    message: e.message().to_string(),
                })?;
        for item in overrides {
            apply_override(&mut table, item)?;
        }
        let config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: origin.to_string(),
                message: e.message().to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads `path`; a missing file means all defaults.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// Rejects combinations that could never work, e.g. chunks that cannot fit in a request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let req = u64::from(self.rpc.max_request_bytes);
        let resp = u64::from(self.rpc.max_response_bytes);
        if base64_len(self.blobs.max_chunk_bytes) + ENVELOPE_BYTES > req {
            return Err(ConfigError::Invalid(format!(
                "blobs.max_chunk_bytes = {} does not fit in rpc.max_request_bytes = {req} once base64-encoded; raise the request limit or lower the chunk size",
                self.blobs.max_chunk_bytes
            )));
        }
        if base64_len(self.blobs.max_inline_bytes) + ENVELOPE_BYTES > req.min(resp) {
            return Err(ConfigError::Invalid(format!(
                "blobs.max_inline_bytes = {} does not fit in rpc.max_request_bytes / max_response_bytes once base64-encoded",
                self.blobs.max_inline_bytes
            )));
        }
        if !(MIN_VIEW_TIMEOUT_MS..=MAX_VIEW_TIMEOUT_MS).contains(&self.committee.view_timeout_ms) {
            return Err(ConfigError::Invalid(format!(
                "committee.view_timeout_ms = {} must be {MIN_VIEW_TIMEOUT_MS}..={MAX_VIEW_TIMEOUT_MS}: shorter makes members replace healthy leaders, longer leaves a dead one in charge",
                self.committee.view_timeout_ms
            )));
        }
        for id in &self.committee.debug_partition {
            id.parse::<iroh::EndpointId>().map_err(|e| {
                ConfigError::Invalid(format!(
                    "committee.debug_partition: `{id}` is not an endpoint id: {e}"
                ))
            })?;
        }
        for scope in &self.rpc.anonymous_scopes {
            scope
                .parse::<onvm_rpc_api::auth::Scope>()
                .map_err(|e| ConfigError::Invalid(format!("rpc.anonymous_scopes: {e}")))?;
        }
        for origin in &self.rpc.allowed_origins {
            if origin != "*" && origin != "null" {
                crate::rpc::auth::check_origin_syntax(origin).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "rpc.allowed_origins: {e} (or `null` for pages opened from disk, `*` for any)"
                    ))
                })?;
            }
        }
        if self.rpc.calls_per_sec == 0
            || self.rpc.calls_burst == 0
            || self.rpc.client_calls_per_sec == 0
            || self.rpc.client_calls_burst == 0
        {
            return Err(ConfigError::Invalid(
                "rpc.calls_per_sec, calls_burst, client_calls_per_sec and client_calls_burst must be at least 1".into(),
            ));
        }
        if self.rpc.max_calls_per_connection == 0 {
            return Err(ConfigError::Invalid(
                "rpc.max_calls_per_connection must be at least 1".into(),
            ));
        }
        if self.rpc.max_connections_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "rpc.max_connections_per_ip must be at least 1".into(),
            ));
        }
        if self.rpc.ping_interval_ms > 0 && self.rpc.idle_timeout_ms < self.rpc.ping_interval_ms {
            return Err(ConfigError::Invalid(format!(
                "rpc.idle_timeout_ms = {} must be at least rpc.ping_interval_ms = {}: a client gets one ping before it counts as idle",
                self.rpc.idle_timeout_ms, self.rpc.ping_interval_ms
            )));
        }
        if self.rpc.max_batch == 0 || self.rpc.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "rpc.max_batch and rpc.max_connections must be at least 1".into(),
            ));
        }
        let c = &self.committee;
        if c.default_size == 0 || c.default_size > c.max_size || c.max_size > 256 {
            return Err(ConfigError::Invalid(
                "committee.default_size must be between 1 and committee.max_size (at most 256)"
                    .into(),
            ));
        }
        let net = &self.net;
        if net.max_gossip_bytes < 4096 || net.max_gossip_bytes > 1024 * 1024 {
            return Err(ConfigError::Invalid(
                "net.max_gossip_bytes must be between 4 KiB and 1 MiB".into(),
            ));
        }
        if !(1_000..=15_000).contains(&net.idle_timeout_ms) {
            return Err(ConfigError::Invalid(
                "net.idle_timeout_ms must be within 1000..=15000".into(),
            ));
        }
        let relays = net.relays()?;
        if net.relay_only && relays == Relays::None {
            return Err(ConfigError::Invalid(
                "net.relay_only = true needs a relay: set net.relays to your relays' URLs (offline nodes do not use the public ones)".into(),
            ));
        }
        if net.relay_token.len() > 1024 || net.relay_token.chars().any(|c| c.is_control()) {
            return Err(ConfigError::Invalid(
                "net.relay_token must be at most 1024 printable characters".into(),
            ));
        }
        if net.forward_timeout_ms == 0
            || net.forward_dial_timeout_ms == 0
            || net.sync_interval_ms < 50
        {
            return Err(ConfigError::Invalid(
                "net.forward_timeout_ms and net.forward_dial_timeout_ms must be at least 1 and net.sync_interval_ms at least 50"
                    .into(),
            ));
        }
        if base64_len(self.vm.max_input_bytes.max(self.vm.max_output_bytes)) + ENVELOPE_BYTES
            > net.max_forward_bytes
        {
            return Err(ConfigError::Invalid(format!(
                "net.max_forward_bytes = {} cannot carry a call of vm.max_input_bytes / vm.max_output_bytes once base64-encoded",
                net.max_forward_bytes
            )));
        }
        if self.blobs.max_chunk_bytes == 0 {
            return Err(ConfigError::Invalid(
                "blobs.max_chunk_bytes must be at least 1".into(),
            ));
        }
        let vm = &self.vm;
        if vm.default_fuel == 0 || vm.default_fuel > vm.max_fuel {
            return Err(ConfigError::Invalid(
                "vm.default_fuel must be between 1 and vm.max_fuel".into(),
            ));
        }
        if vm.max_memory_bytes < 65536 || vm.max_memory_bytes > 4096 * MIB {
            return Err(ConfigError::Invalid(
                "vm.max_memory_bytes must be between 64 KiB and 4 GiB".into(),
            ));
        }
        if vm.max_stack_bytes < 64 * 1024 || vm.max_stack_bytes > 1024 * 1024 {
            // Calls run on threads with 2 MiB stacks: wasm frames must leave room for the host.
            return Err(ConfigError::Invalid(
                "vm.max_stack_bytes must be between 64 KiB and 1 MiB".into(),
            ));
        }
        if vm.max_concurrent_calls == 0 || vm.max_call_ms == 0 {
            return Err(ConfigError::Invalid(
                "vm.max_concurrent_calls and vm.max_call_ms must be at least 1".into(),
            ));
        }
        if base64_len(vm.max_input_bytes) + ENVELOPE_BYTES > req {
            return Err(ConfigError::Invalid(format!(
                "vm.max_input_bytes = {} does not fit in rpc.max_request_bytes once base64-encoded",
                vm.max_input_bytes
            )));
        }
        if self.jobs.max_running == 0 || self.jobs.event_buffer == 0 || self.jobs.retry_base_ms == 0
        {
            return Err(ConfigError::Invalid(
                "jobs.max_running, jobs.event_buffer and jobs.retry_base_ms must be at least 1"
                    .into(),
            ));
        }
        if self.jobs.default_max_retries > self.jobs.max_retries {
            return Err(ConfigError::Invalid(
                "jobs.default_max_retries must not exceed jobs.max_retries".into(),
            ));
        }
        if self.node.network_id.is_empty() || self.node.network_id.len() > 64 {
            return Err(ConfigError::Invalid(
                "node.network_id must be 1 to 64 characters".into(),
            ));
        }
        Ok(())
    }

    /// The documented `config.toml` that `onvm init` writes: every key, its value and meaning.
    pub fn to_documented_toml(&self) -> String {
        let Config {
            node,
            rpc,
            net,
            blobs,
            vm,
            jobs,
            committee,
        } = self;
        format!(
            r#"# ONVM node configuration. Every key is optional; the values below are the defaults
# unless you changed them. Unknown keys are an error. Any key can also be overridden on the
# command line with `--set section.key=value`.

[node]
# Name of the network this node belongs to. Signatures are bound to it, so nodes of different
# networks never accept each other's messages.
network_id = {network_id:?}
# Page cache of the node database (node.redb), in bytes. Memory stays bounded by it however
# long the history; more helps nodes with many or large programs.
db_cache_bytes = {db_cache_bytes}

[rpc]
# Address of the JSON-RPC server (HTTP and WebSocket on one port). Keep it on loopback unless a
# proxy with TLS and authentication stands in front. CLI flag: --rpc.
listen = "{rpc_listen}"
# Largest request body accepted, in bytes. Larger requests fail with code -32007.
max_request_bytes = {max_request_bytes}
# Largest response body sent, in bytes.
max_response_bytes = {max_response_bytes}
# Most calls in one JSON-RPC batch. Larger batches fail with code -32010.
max_batch = {max_batch}
# Most simultaneous client connections.
max_connections = {max_connections}
# Most live subscriptions on one WebSocket connection.
max_subscriptions_per_connection = {max_subscriptions_per_connection}
# Messages buffered per connection before the server stops reading from it.
message_buffer = {message_buffer}
# A subscriber whose connection buffer stays full this long (ms) is closed with reason `lagged`
# and a cursor to resume from; it never slows the node or other clients.
subscriber_lag_ms = {subscriber_lag_ms}
# true: every method outside anonymous_scopes needs an API token (`onvm token create`) or the
# node's cookie file, which the CLI of the user running the node finds by itself. false opens
# every method to everyone who can reach the port (`run-node --no-auth`, `onvm dev`).
auth = {auth}
# Scopes of clients that present no token: read, execute, deploy, upload, peers, admin.
anonymous_scopes = {anonymous_scopes:?}
# Web origins (scheme://host[:port]) whose pages may call this node; "*" admits any. Requests
# from other origins get HTTP 403; clients that send no Origin (CLI, scripts) are not browsers.
allowed_origins = {allowed_origins:?}
# Host names accepted in the Host header besides localhost and IP addresses (DNS rebinding).
allowed_hosts = {allowed_hosts:?}
# Most open connections from one IP address: WebSockets, HTTP keep-alives and requests alike
# (HTTP 429 beyond). max_connections is the node-wide cap.
max_connections_per_ip = {max_connections_per_ip}
# Connections beyond both caps kept for the operator (the cookie, or an `admin` token), so a
# flood never locks the operator out.
operator_connections = {operator_connections}
# A connection with no call running and no subscription is closed after this long, whether or
# not it answers pings (a slow request body counts as idle). 0: never.
idle_connection_ms = {idle_connection_ms}
# While every slot is taken, a newcomer gets the seat of the connection idle longest if it has
# carried no call for this long (it is closed; subscribers are never closed this way).
pressure_idle_ms = {pressure_idle_ms}
# Most connections holding subscriptions at once (they are never closed for idleness); a
# subscription on a further connection fails with -32002 `too_many_subscribers`.
max_subscriber_connections = {max_subscriber_connections}
# WebSocket ping period; 0 disables pings and idle reaping.
ping_interval_ms = {rpc_ping_interval_ms}
# A WebSocket that answers no ping and sends nothing for this long is closed (checked at each
# ping, so it goes within idle_timeout_ms + ping_interval_ms).
idle_timeout_ms = {rpc_idle_timeout_ms}
# Calls per second (and burst) one connection may make, and one client (an API token, or the IP
# address of a client without one) across its connections. Over it, calls fail with -32004
# `rate_limited` and `retry_after_ms`. The node's cookie (its operator) is never limited.
calls_per_sec = {calls_per_sec}
calls_burst = {calls_burst}
client_calls_per_sec = {client_calls_per_sec}
client_calls_burst = {client_calls_burst}
# Most program calls (program_execute) one connection runs in the VM at once; more wait their
# turn, so one client pipelining calls cannot take every vm.max_concurrent_calls slot. A batch
# runs its calls one after another and holds one turn.
max_calls_per_connection = {max_calls_per_connection}

[net]
# UDP address of the iroh endpoint (QUIC). Port 0 picks a free port. CLI flag: --listen.
listen = "{net_listen}"
# true: no relays and no external address lookup; peers must be dialed by ticket with direct
# addresses (loopback or LAN). CLI flag: --offline.
offline = {offline}
# Tickets of nodes to join at start (`onvm ticket` on them). CLI flag: --bootnode (repeatable).
bootnodes = {bootnodes:?}
# Find peers on the local network with mDNS (works with offline = true too).
mdns = {mdns}
# A call or job submitted here for a program homed elsewhere is forwarded to its home over
# /onvm/call/1; give up (code -32005, kind home_unreachable) after this many ms.
forward_timeout_ms = {forward_timeout_ms}
# A forwarded call that cannot connect within this many ms was never delivered: a committee
# program's call moves on to the next member (failover) at once.
forward_dial_timeout_ms = {forward_dial_timeout_ms}
# Largest forwarded call or reply, in bytes (JSON, inputs and outputs base64-encoded).
max_forward_bytes = {max_forward_bytes}
# Largest gossip message; the same on every node of a network. DAG nodes over it are not
# gossiped (peers pull them by sync instead); received messages over it are dropped.
max_gossip_bytes = {max_gossip_bytes}
# Every this many ms the node also pulls DAG heads from its peers (repairs missed gossip).
sync_interval_ms = {sync_interval_ms}
# A committee member that failed to answer a forwarded call is tried last for this many ms:
# writes go straight to the next live member instead of waiting on a dead sequencer.
suspect_ms = {suspect_ms}
# A peer connection with no traffic for this many ms is considered dead (keep-alives go every
# third of it). It bounds how long a call in flight to a peer that vanished (kill -9, cable
# pulled) waits before it is retried elsewhere. 1000..=15000.
idle_timeout_ms = {idle_timeout_ms}
# Relay servers, through which peers behind NATs and firewalls reach each other (iroh upgrades
# to a direct path when one is found). "default": iroh's public relays, or none when offline;
# []: no relay; or the URLs of your own relays, e.g. ["https://relay.example.org"] (run one with
# `onvm relay`), used offline too. The node's home relay is the one closest to it.
# CLI flag: --relay URL (repeatable; replaces this list).
relays = {relays:?}
# true: no direct paths at all, every connection goes through a relay (networks that block
# UDP; tests of the relayed path). Needs a relay. CLI flag: --relay-only.
relay_only = {relay_only}
# Access token sent to relays that require one (`onvm relay --token-file`); empty: none.
relay_token = {relay_token:?}
# PEM file of extra root certificates trusted for relays' TLS certificates (a private CA, or a
# relay's self-signed certificate), beside the usual public roots; empty: none.
relay_ca_file = {relay_ca_file:?}

[blobs]
# "metadata": copy a peer's blob only when it is read here. "full": copy every blob announced in
# the DAG as soon as it is announced (BAO-verified, up to max_blob_bytes each).
replicate = "{replicate}"
# Fetch a blob this node lacks from its peers on first read (BAO-verified, size-capped).
fetch_from_peers = {fetch_from_peers}
# Largest blob this node stores, in bytes.
max_blob_bytes = {max_blob_bytes}
# Largest blob sent inline with blob_put, and largest range returned by one blob_get.
max_inline_bytes = {max_inline_bytes}
# Largest chunk accepted by blob_upload_append.
max_chunk_bytes = {max_chunk_bytes}
# Most upload sessions open at once; more fail with code -32004 (busy).
max_open_uploads = {max_open_uploads}
# Most upload sessions one client (API token, or IP address) may hold open.
max_open_uploads_per_client = {max_open_uploads_per_client}
# Free disk space that uploads and inline puts never eat into: a new upload is refused
# (-32002 disk_space) unless this much stays free after every open upload completes.
min_free_disk_bytes = {min_free_disk_bytes}
# An upload session untouched for this many seconds is dropped with its partial data.
upload_ttl_secs = {upload_ttl_secs}

[vm]
# Fuel of a call that does not ask for a specific amount (about one unit per wasm instruction).
default_fuel = {default_fuel}
# Most fuel a call may ask for.
max_fuel = {max_fuel}
# Linear memory cap per call; growing past it ends the call with `memory_limit`.
max_memory_bytes = {max_memory_bytes}
# Wasm stack per call; deeper recursion ends the call with `stack_overflow` (at most 1 MiB).
max_stack_bytes = {max_stack_bytes}
# Largest wasm module accepted by program_deploy (checked before compiling).
max_module_bytes = {max_module_bytes}
# Largest call output; larger outputs end the call with `bad_output`.
max_output_bytes = {max_output_bytes}
# Largest call input.
max_input_bytes = {max_input_bytes}
# Wall-clock limit of one call in milliseconds; exceeding it ends the call with `timeout`.
max_call_ms = {max_call_ms}
# Log bytes kept per call (onvm_log); the rest is dropped and marked truncated.
max_log_bytes = {max_log_bytes}
# Largest state key and value.
max_key_bytes = {max_key_bytes}
max_value_bytes = {max_value_bytes}
# Most distinct keys one call may write or delete.
max_writes_per_call = {max_writes_per_call}
# Most bytes (keys + values) one call may have in its write set; a call over it ends with a
# `host_limit` trap and writes nothing. The same on every node of a network, like the other
# limits that decide a call's outcome.
max_write_bytes_per_call = {max_write_bytes_per_call}
# Total size of the blobs a program declares in blob_refs (loaded for each call).
max_blob_refs_bytes = {max_blob_refs_bytes}
# Calls running at once (sizes the instance pool).
max_concurrent_calls = {max_concurrent_calls}
# Compiled modules kept in memory.
module_cache_entries = {module_cache_entries}
# How far a client-proposed call timestamp may be from the node's clock, in milliseconds.
max_clock_skew_ms = {max_clock_skew_ms}
# How far AHEAD of the node's clock it may be (at most max_clock_skew_ms): a call's timestamp
# becomes the program's clock, so one call far ahead would make later short-lived signed
# calls fail as expired.
max_future_skew_ms = {max_future_skew_ms}

[jobs]
# Jobs running at once; the rest wait in the queue.
max_running = {max_running}
# Most pending jobs; job_submit fails with code -32004 (busy) past it.
max_queue = {max_queue}
# Retries after the first attempt when job_submit gives none, and the most it may ask for.
default_max_retries = {default_max_retries}
max_retries = {jobs_max_retries}
# Backoff before retry n: retry_base_ms * 2^(n-1), at most retry_max_ms, with +-25% jitter,
# counted from the end of the failed attempt.
retry_base_ms = {retry_base_ms}
retry_max_ms = {retry_max_ms}
# Live events buffered for subscribers (older ones are replayed from disk).
event_buffer = {event_buffer}
# Largest metadata JSON a job may carry.
max_metadata_bytes = {max_metadata_bytes}

[committee]
# Members attesting a new program's calls when program_deploy does not say (fewer when the
# network has fewer announced nodes; a lone node is a committee of one), and the most allowed.
# The default threshold is K - floor((K-1)/3): 4 members need 3 signatures and survive one dead
# member; 3 or fewer need every member.
default_size = {committee_default_size}
max_size = {committee_max_size}
# How long a call waits for its committee to decide it before failing (-32005); the call may
# still be decided later, and a retry with the same request_id returns its receipt.
attest_timeout_ms = {attest_timeout_ms}
# Tendermint propose timeout of a height's round 0: members move to the next round's leader
# when the round's proposal has not arrived and been checked within it (each later round adds
# half of vm.max_call_ms, so a slow call still decides).
view_timeout_ms = {view_timeout_ms}
# For tests of the attestation path only: this node's re-executions report a wrong output, so
# it refuses to sign and records evidence. Never enable it on a real node.
debug_corrupt_results = {debug_corrupt_results}
# For tests of failover only: as sequencer, this node collects the committee's signatures and
# then drops the call without committing it, as if it crashed at that instant.
debug_abandon_after_attest = {debug_abandon_after_attest}
# For tests of caller checks only: as sequencer, this node proposes every signed call under
# another caller id (a call that caller never signed), so members must refuse it.
debug_forge_callers = {debug_forge_callers}
# For tests of Byzantine members only: with every committee message it sends, this node also
# sends a made-up decision for that height (no certificate can back it: honest members drop
# it). Never enable it on a real node.
debug_forge_decisions = {debug_forge_decisions}
# For tests of Byzantine faults only: this node signs, for every vote it casts, a vote for
# another value and sends it after the first to half of the members. Never on a real node.
debug_equivocate = {debug_equivocate}
# For tests of Byzantine faults only: as a round's leader this node never runs a call another
# member forwarded, so only the rotation of leaders gets those calls decided. Never on a real
# node.
debug_censor = {debug_censor}
# For tests of round changes only: endpoint ids this node sends no committee message to
# and accepts none from, a partition of consensus alone (the DAG still flows).
debug_partition = {debug_partition:?}
"#,
            network_id = node.network_id,
            db_cache_bytes = node.db_cache_bytes,
            rpc_listen = rpc.listen,
            max_request_bytes = rpc.max_request_bytes,
            max_response_bytes = rpc.max_response_bytes,
            max_batch = rpc.max_batch,
            max_connections = rpc.max_connections,
            max_subscriptions_per_connection = rpc.max_subscriptions_per_connection,
            message_buffer = rpc.message_buffer,
            subscriber_lag_ms = rpc.subscriber_lag_ms,
            auth = rpc.auth,
            anonymous_scopes = rpc.anonymous_scopes,
            allowed_origins = rpc.allowed_origins,
            allowed_hosts = rpc.allowed_hosts,
            max_connections_per_ip = rpc.max_connections_per_ip,
            operator_connections = rpc.operator_connections,
            idle_connection_ms = rpc.idle_connection_ms,
            pressure_idle_ms = rpc.pressure_idle_ms,
            max_subscriber_connections = rpc.max_subscriber_connections,
            max_calls_per_connection = rpc.max_calls_per_connection,
            rpc_ping_interval_ms = rpc.ping_interval_ms,
            rpc_idle_timeout_ms = rpc.idle_timeout_ms,
            calls_per_sec = rpc.calls_per_sec,
            calls_burst = rpc.calls_burst,
            client_calls_per_sec = rpc.client_calls_per_sec,
            client_calls_burst = rpc.client_calls_burst,
            net_listen = net.listen,
            offline = net.offline,
            bootnodes = net.bootnodes,
            mdns = net.mdns,
            forward_timeout_ms = net.forward_timeout_ms,
            forward_dial_timeout_ms = net.forward_dial_timeout_ms,
            max_forward_bytes = net.max_forward_bytes,
            max_gossip_bytes = net.max_gossip_bytes,
            sync_interval_ms = net.sync_interval_ms,
            suspect_ms = net.suspect_ms,
            idle_timeout_ms = net.idle_timeout_ms,
            relays = net.relays,
            relay_only = net.relay_only,
            relay_token = net.relay_token,
            relay_ca_file = net.relay_ca_file,
            replicate = blobs.replicate,
            fetch_from_peers = blobs.fetch_from_peers,
            max_blob_bytes = blobs.max_blob_bytes,
            max_inline_bytes = blobs.max_inline_bytes,
            max_chunk_bytes = blobs.max_chunk_bytes,
            max_open_uploads = blobs.max_open_uploads,
            max_open_uploads_per_client = blobs.max_open_uploads_per_client,
            min_free_disk_bytes = blobs.min_free_disk_bytes,
            upload_ttl_secs = blobs.upload_ttl_secs,
            default_fuel = vm.default_fuel,
            max_fuel = vm.max_fuel,
            max_memory_bytes = vm.max_memory_bytes,
            max_stack_bytes = vm.max_stack_bytes,
            max_module_bytes = vm.max_module_bytes,
            max_output_bytes = vm.max_output_bytes,
            max_input_bytes = vm.max_input_bytes,
            max_call_ms = vm.max_call_ms,
            max_log_bytes = vm.max_log_bytes,
            max_key_bytes = vm.max_key_bytes,
            max_value_bytes = vm.max_value_bytes,
            max_writes_per_call = vm.max_writes_per_call,
            max_write_bytes_per_call = vm.max_write_bytes_per_call,
            max_blob_refs_bytes = vm.max_blob_refs_bytes,
            max_concurrent_calls = vm.max_concurrent_calls,
            module_cache_entries = vm.module_cache_entries,
            max_clock_skew_ms = vm.max_clock_skew_ms,
            max_future_skew_ms = vm.max_future_skew_ms,
            max_running = jobs.max_running,
            max_queue = jobs.max_queue,
            default_max_retries = jobs.default_max_retries,
            jobs_max_retries = jobs.max_retries,
            retry_base_ms = jobs.retry_base_ms,
            retry_max_ms = jobs.retry_max_ms,
            event_buffer = jobs.event_buffer,
            max_metadata_bytes = jobs.max_metadata_bytes,
            committee_default_size = committee.default_size,
            committee_max_size = committee.max_size,
            attest_timeout_ms = committee.attest_timeout_ms,
            view_timeout_ms = committee.view_timeout_ms,
            debug_corrupt_results = committee.debug_corrupt_results,
            debug_abandon_after_attest = committee.debug_abandon_after_attest,
            debug_forge_callers = committee.debug_forge_callers,
            debug_forge_decisions = committee.debug_forge_decisions,
            debug_equivocate = committee.debug_equivocate,
            debug_censor = committee.debug_censor,
            debug_partition = committee.debug_partition,
        )
    }
}

/// Applies `section.key=value`. The value is parsed as TOML (numbers, booleans) and falls back
/// to a plain string, so `--set rpc.listen=127.0.0.1:9000` needs no quotes.
fn apply_override(table: &mut toml::Table, item: &str) -> Result<(), ConfigError> {
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| ConfigError::BadOverride(item.to_string()))?;
    let (section, field) = key
        .trim()
        .split_once('.')
        .ok_or_else(|| ConfigError::BadOverride(item.to_string()))?;
    let raw = raw.trim();
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let entry = table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => {
            t.insert(field.to_string(), value);
            Ok(())
        }
        _ => Err(ConfigError::Invalid(format!(
            "`{section}` is not a section"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_template_parses_back_to_defaults() {
        let text = Config::default().to_documented_toml();
        let parsed = Config::from_toml(&text, "template", &[]).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn every_key_is_documented() {
        let text = Config::default().to_documented_toml();
        let value = toml::Value::try_from(Config::default()).unwrap();
        for (section, fields) in value.as_table().unwrap() {
            assert!(text.contains(&format!("[{section}]")), "section {section}");
            for key in fields.as_table().unwrap().keys() {
                assert!(text.contains(&format!("\n{key} = ")), "key {section}.{key}");
            }
        }
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(
            Config::from_toml("", "empty", &[]).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn relays_resolve_against_offline_and_bad_ones_are_named() {
        let relays = |items: &[&str]| {
            let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
            Config::from_toml("", "t", &items).map(|c| c.net.relays().unwrap())
        };
        assert_eq!(relays(&[]).unwrap(), Relays::Public);
        assert_eq!(relays(&["net.offline=true"]).unwrap(), Relays::None);
        assert_eq!(relays(&["net.relays=[]"]).unwrap(), Relays::None);
        let own = relays(&["net.offline=true", "net.relays=[\"http://10.0.0.1:3340\"]"]).unwrap();
        assert_eq!(
            own,
            Relays::Custom(vec!["http://10.0.0.1:3340".parse().unwrap()])
        );
        for (bad, says) in [
            (
                "net.relays=[\"default\", \"http://a:1\"]",
                "cannot be mixed",
            ),
            ("net.relays=[\"not a url\"]", "not a relay URL"),
            ("net.relays=[\"ftp://a:1\"]", "http:// or https://"),
        ] {
            let err = relays(&[bad]).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        // Relay-only needs a relay; an offline node has none unless it names its own.
        let err = relays(&["net.offline=true", "net.relay_only=true"]).unwrap_err();
        assert!(err.to_string().contains("needs a relay"), "{err}");
        assert!(relays(&["net.relay_only=true"]).is_ok());
        let err = relays(&["net.relay_token=\"a\\nb\""]).unwrap_err();
        assert!(err.to_string().contains("relay_token"), "{err}");
    }

    #[test]
    fn committee_view_timeout_and_partition_ids_are_checked() {
        let load = |item: &str| Config::from_toml("", "t", &[item.to_string()]);
        for bad in [
            "committee.view_timeout_ms=10",
            "committee.view_timeout_ms=1000000",
        ] {
            let err = load(bad).unwrap_err().to_string();
            assert!(err.contains("committee.view_timeout_ms"), "{bad}: {err}");
        }
        assert!(load("committee.view_timeout_ms=100").is_ok());
        let err = load("committee.debug_partition=[\"nope\"]").unwrap_err();
        assert!(
            err.to_string().contains("`nope` is not an endpoint id"),
            "{err}"
        );
        let id = "5d100f0d31422528b8ea407c1752135a74c20ea3da1dea0901c1bab908e1f037";
        let config = load(&format!("committee.debug_partition=[\"{id}\"]")).unwrap();
        assert_eq!(config.committee.debug_partition, vec![id.to_string()]);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[rpc]\nmax_bach = 3\n", "test", &[]).unwrap_err();
        assert!(err.to_string().contains("max_bach"), "{err}");
        let err = Config::from_toml("[rcp]\n", "test", &[]).unwrap_err();
        assert!(err.to_string().contains("rcp"), "{err}");
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let c = Config::from_toml(
            "",
            "test",
            &[
                "rpc.max_batch=7".into(),
                "rpc.listen=127.0.0.1:9001".into(),
                "net.offline=true".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.rpc.max_batch, 7);
        assert_eq!(c.rpc.listen.port(), 9001);
        assert!(c.net.offline);
        assert!(Config::from_toml("", "t", &["rpc.nope=1".into()]).is_err());
        assert!(Config::from_toml("", "t", &["novalue".into()]).is_err());
    }

    #[test]
    fn impossible_limits_are_rejected() {
        let err =
            Config::from_toml("", "t", &["blobs.max_chunk_bytes=20000000".into()]).unwrap_err();
        assert!(err.to_string().contains("max_chunk_bytes"), "{err}");
        assert!(Config::from_toml("", "t", &["rpc.max_batch=0".into()]).is_err());
        // iroh clamps path idle timeouts above 15 s; below 1 s keep-alives would flood.
        for bad in ["net.idle_timeout_ms=999", "net.idle_timeout_ms=15001"] {
            let err = Config::from_toml("", "t", &[bad.into()]).unwrap_err();
            assert!(err.to_string().contains("idle_timeout_ms"), "{err}");
        }
        let ok = Config::from_toml("", "t", &["net.idle_timeout_ms=3000".into()]).unwrap();
        assert_eq!(ok.net.idle_timeout_ms, 3000);
    }
}
