//! Wiring and lifecycle: opens the data directory, starts every component, supervises the
//! background tasks and shuts everything down in order.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jsonrpsee::server::ServerHandle;
use onvm_rpc_api::types::{Health, HealthCheck, Metrics, NodeInfo};
use tokio::task::JoinHandle;

use crate::blobs::{BlobError, Blobs};
use crate::config::Config;
use crate::identity::{Identity, IdentityError};
use crate::jobs::Jobs;
use crate::metrics::Counters;
use crate::net::{Net, NetError};
use crate::programs::Programs;
use crate::rpc::{self, RpcError};
use crate::store::{Store, StoreError};
use crate::vm::{Vm, VmError};

pub const CONFIG_FILE: &str = "config.toml";
pub const IDENTITY_FILE: &str = "identity.json";
const DATABASE_FILE: &str = "node.redb";
const BLOBS_DIR: &str = "blobs";
const UPLOADS_DIR: &str = "uploads";
/// How often abandoned uploads are looked for.
const REAP_INTERVAL: Duration = Duration::from_secs(60);
/// How often peers are pinged for liveness and latency.
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// A health probe that takes longer than this counts as failed.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// File descriptors kept free for the store, the blob store and peer connections: below this
/// headroom `node_health` reports the node not ready (new clients would take the last ones).
const FD_RESERVE: u64 = 128;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blobs(#[from] BlobError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// What `init` did: it never overwrites an existing identity or config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOutcome {
    pub identity_created: bool,
    pub config_created: bool,
    pub endpoint_id: Option<String>,
}

/// Creates `dir` with a fresh identity and a documented `config.toml`, keeping whatever exists.
pub fn init_data_dir(
    dir: &Path,
    config: &Config,
    passphrase: Option<&str>,
    allow_plaintext: bool,
) -> Result<InitOutcome, NodeError> {
    std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
        context: format!("creating data dir {}", dir.display()),
        source,
    })?;
    let identity_path = dir.join(IDENTITY_FILE);
    let mut outcome = InitOutcome {
        identity_created: false,
        config_created: false,
        endpoint_id: None,
    };
    if !identity_path.exists() {
        let identity = Identity::generate();
        identity.save(&identity_path, passphrase, allow_plaintext)?;
        outcome.identity_created = true;
        outcome.endpoint_id = Some(identity.endpoint_id().to_string());
    }
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.exists() {
        std::fs::write(&config_path, config.to_documented_toml()).map_err(|source| {
            NodeError::Io {
                context: format!("writing {}", config_path.display()),
                source,
            }
        })?;
        outcome.config_created = true;
    }
    Ok(outcome)
}

/// Shared state behind the RPC handlers.
pub struct NodeContext {
    pub(crate) identity: Arc<Identity>,
    pub(crate) config: Config,
    pub(crate) net: Net,
    pub(crate) blobs: Blobs,
    pub(crate) programs: Programs,
    pub(crate) jobs: Jobs,
    pub(crate) committees: Arc<crate::consensus::Committees>,
    pub(crate) store: Store,
    pub(crate) dag: crate::dag_log::DagLog,
    pub(crate) counters: Arc<Counters>,
    started: Instant,
    shutting_down: AtomicBool,
}

impl NodeContext {
    /// True once `Node::shutdown` began.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            endpoint_id: self.identity.endpoint_id().to_string(),
            ticket: self.net.ticket(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            network_id: self.config.node.network_id.clone(),
            addresses: self.net.addresses(),
            relay_url: self.net.relay_url(),
            relay_connected: self.net.relay_connected(),
            relays: self.net.relays(),
            relay_only: self.config.net.relay_only,
            bls_public_key: self.identity.bls_public_key_hex(),
            offline: self.net.offline(),
            uptime_secs: self.started.elapsed().as_secs(),
        }
    }

    pub async fn health(&self) -> Health {
        let store = self.store.clone();
        let db = tokio::time::timeout(
            HEALTH_PROBE_TIMEOUT,
            tokio::task::spawn_blocking(move || store.check()),
        )
        .await;
        let db_check = match db {
            Ok(Ok(Ok(_))) => check("database", true, "node.redb answers"),
            Ok(Ok(Err(e))) => check("database", false, &e.to_string()),
            Ok(Err(e)) => check("database", false, &format!("probe failed: {e}")),
            Err(_) => check("database", false, "probe timed out"),
        };
        let blob_check = match tokio::time::timeout(HEALTH_PROBE_TIMEOUT, self.blobs.check()).await
        {
            Ok(Ok(())) => check("blob_store", true, "iroh-blobs store answers"),
            Ok(Err(e)) => check("blob_store", false, &e.to_string()),
            Err(_) => check("blob_store", false, "probe timed out"),
        };
        let net_check = if self.net.is_closed() {
            check("endpoint", false, "iroh endpoint is closed")
        } else {
            check(
                "endpoint",
                true,
                &format!("bound on {}", self.net.addresses().join(", ")),
            )
        };
        let jobs = self.jobs.stats().await;
        let jobs_check = check(
            "jobs",
            true,
            &format!("{} pending, {} running", jobs.pending, jobs.running),
        );
        let disk_check = match self.blobs.disk_headroom() {
            Some((free, floor)) if free < floor => check(
                "disk",
                false,
                &format!(
                    "only {free} bytes free on the data dir's disk (ready again above {floor}: blobs.min_free_disk_bytes, at least 1 MiB); writes may fail until space is freed"
                ),
            ),
            Some((free, _)) => check("disk", true, &format!("{free} bytes free")),
            None => check("disk", true, "free space cannot be told on this filesystem"),
        };
        let fd_check = match crate::util::fd_usage() {
            Some((limit, open)) if limit.saturating_sub(open) < FD_RESERVE => check(
                "file_descriptors",
                false,
                &format!(
                    "{open} of {limit} file descriptors in use: fewer than {FD_RESERVE} left for the store, blobs and peers (raise `ulimit -n` or lower rpc.max_connections)"
                ),
            ),
            Some((limit, open)) => check(
                "file_descriptors",
                true,
                &format!("{open} of {limit} in use"),
            ),
            None => check("file_descriptors", true, "usage cannot be told here"),
        };
        let mut checks = vec![
            db_check, blob_check, disk_check, net_check, jobs_check, fd_check,
        ];
        if self.shutting_down.load(Ordering::Relaxed) {
            checks.push(check("lifecycle", false, "node is shutting down"));
        }
        let reason = checks
            .iter()
            .find(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail));
        Health {
            live: true,
            ready: reason.is_none(),
            reason,
            checks,
        }
    }

    /// Runs a blob read; if this node lacks the blob, fetches it from a peer that has it
    /// (first-read replication) and runs the read again. Blobs already here cost one read.
    pub async fn with_blob<T, F, Fut>(
        &self,
        id: onvm_rpc_api::BlobId,
        read: F,
    ) -> Result<T, BlobError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, BlobError>>,
    {
        match read().await {
            Err(BlobError::NotFound(_)) if self.config.blobs.fetch_from_peers => {
                if let Some((conn, mime)) = self.net.peers().find_blob(*id.as_bytes()).await
                    && let Err(e) = self.blobs.fetch(conn, id, mime).await
                {
                    tracing::warn!("fetching {id} from a peer: {e}");
                }
                read().await
            }
            other => other,
        }
    }

    pub async fn metrics(&self) -> Metrics {
        let mut gauges = std::collections::BTreeMap::new();
        if let Ok(n) = self.blobs.blob_count().await {
            gauges.insert("blobs_stored".to_string(), n);
        }
        if let Ok(n) = self.blobs.open_upload_count().await {
            gauges.insert("uploads_open".to_string(), n);
        }
        let jobs = self.jobs.stats().await;
        gauges.insert("jobs_pending".to_string(), jobs.pending);
        gauges.insert("jobs_running".to_string(), jobs.running);
        gauges.insert("job_latency_p50_ms".to_string(), jobs.latency_p50_ms);
        gauges.insert("job_latency_p90_ms".to_string(), jobs.latency_p90_ms);
        gauges.insert("job_latency_p99_ms".to_string(), jobs.latency_p99_ms);
        let peers = self.net.peers().list().await;
        let count = |pick: &dyn Fn(&onvm_rpc_api::types::PeerInfo) -> bool| {
            peers.iter().filter(|p| pick(p)).count() as u64
        };
        gauges.insert("peers_known".to_string(), peers.len() as u64);
        gauges.insert(
            "peers_direct".to_string(),
            count(&|p| p.connection == "direct"),
        );
        gauges.insert(
            "peers_relayed".to_string(),
            count(&|p| p.connection == "relayed"),
        );
        gauges.insert("peers_suspected".to_string(), count(&|p| p.suspected));
        let dag = self.dag.clone();
        if let Ok(Ok(n)) = tokio::task::spawn_blocking(move || dag.last_seq()).await {
            gauges.insert("dag_nodes".to_string(), n);
        }
        Metrics {
            uptime_secs: self.started.elapsed().as_secs(),
            counters: self.counters.snapshot(),
            gauges,
        }
    }
}

fn check(name: &str, ok: bool, detail: &str) -> HealthCheck {
    HealthCheck {
        name: name.to_string(),
        ok,
        detail: detail.to_string(),
    }
}

/// A running node. Dropping it without `shutdown` aborts the background tasks.
pub struct Node {
    ctx: Arc<NodeContext>,
    rpc_addr: SocketAddr,
    rpc_handle: ServerHandle,
    /// Removed from disk when the node stops.
    _rpc_cookie: Option<rpc::cookie::Cookie>,
    stop_tasks: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Opens `data_dir` (database, blob store), binds the iroh endpoint and the RPC server.
    pub async fn start(
        data_dir: &Path,
        config: Config,
        identity: Identity,
    ) -> Result<Self, NodeError> {
        std::fs::create_dir_all(data_dir).map_err(|source| NodeError::Io {
            context: format!("creating data dir {}", data_dir.display()),
            source,
        })?;
        match crate::util::raise_fd_limit() {
            Some(limit) if limit < 4 * FD_RESERVE => tracing::warn!(
                "only {limit} file descriptors allowed (ulimit -n): clients may exhaust them; raise the hard limit"
            ),
            Some(limit) => tracing::debug!("file descriptor limit {limit}"),
            None => {}
        }
        // iroh-blobs wants absolute paths for file imports.
        let data_dir: PathBuf = data_dir.canonicalize().map_err(|source| NodeError::Io {
            context: format!("resolving {}", data_dir.display()),
            source,
        })?;
        let store = Store::open_with_cache(
            &data_dir.join(DATABASE_FILE),
            config.node.db_cache_bytes.clamp(1 << 20, usize::MAX as u64) as usize,
        )?;
        let woken = store.apply_all_deferred()?;
        if woken > 0 {
            tracing::info!("applied {woken} replicated calls left waiting by the last run");
        }
        let counters = Arc::new(Counters::default());
        let blobs = Blobs::open(
            &data_dir.join(BLOBS_DIR),
            &data_dir.join(UPLOADS_DIR),
            store.clone(),
            config.blobs.clone(),
            counters.clone(),
        )
        .await?;
        let vm = match Vm::new(config.vm.clone()) {
            Ok(vm) => Arc::new(vm),
            Err(e) => {
                let _ = blobs.shutdown().await;
                return Err(e.into());
            }
        };
        let identity = Arc::new(identity);
        let signer = identity.clone();
        store.set_dag_author(crate::store::DagAuthor {
            author: onvm_rpc_api::Hash32(*identity.endpoint_id().as_bytes()),
            network_id: config.node.network_id.clone(),
            sign: Arc::new(move |m: &[u8]| signer.ed25519_sign(m)),
        });
        let programs = Programs::new(
            store.clone(),
            blobs.clone(),
            vm,
            identity.clone(),
            config.node.network_id.clone(),
            counters.clone(),
            config.committee.clone(),
        );
        let jobs = Jobs::new(
            store.clone(),
            programs.clone(),
            blobs.clone(),
            config.jobs.clone(),
            config.vm.clone(),
            config.blobs.max_inline_bytes,
            counters.clone(),
        );
        let net = match Net::start(
            identity.endpoint_key().clone(),
            &config.net,
            &config.node.network_id,
            &blobs,
            &store,
            jobs.event_sender(),
            config.blobs.replicate == crate::config::BlobReplication::Full,
        )
        .await
        {
            Ok(net) => net,
            Err(e) => {
                let _ = blobs.shutdown().await;
                return Err(e.into());
            }
        };
        // A new node's first DAG node announces its BLS key (with proof of possession).
        if store.dag_len()? == 0 {
            store.record_dag(onvm_rpc_api::dag::DagPayload::NodeAnnounce {
                bls_public_key: onvm_rpc_api::HexBytes(identity.bls_public_key().to_vec()),
                proof_of_possession: onvm_rpc_api::HexBytes(
                    identity.bls_proof_of_possession().to_vec(),
                ),
                ticket: net.ticket(),
            })?;
        }
        let committees = crate::consensus::Committees::new(
            programs.clone(),
            store.clone(),
            config.node.network_id.clone(),
            identity.clone(),
            crate::consensus::committees::Settings {
                view_timeout_ms: config.committee.view_timeout_ms,
                max_call_ms: config.vm.max_call_ms,
                call_timeout_ms: config.committee.attest_timeout_ms,
                debug_abandon_after_attest: config.committee.debug_abandon_after_attest,
                debug_forge_decisions: config.committee.debug_forge_decisions,
                debug_equivocate: config.committee.debug_equivocate,
                debug_censor: config.committee.debug_censor,
                debug_partition: config
                    .committee
                    .debug_partition
                    .iter()
                    // Checked by `Config::validate`.
                    .filter_map(|id| id.parse::<iroh::EndpointId>().ok())
                    .map(|id| onvm_rpc_api::Hash32(*id.as_bytes()))
                    .collect(),
            },
            Arc::new(CommitteePeers(net.peers().clone())),
        );
        net.peers()
            .set_committee_handler(Arc::new(crate::consensus::committees::CommitteeInbox(
                Arc::downgrade(&committees),
            )));
        let ctx = Arc::new(NodeContext {
            identity,
            committees,
            config: config.clone(),
            net,
            blobs,
            programs,
            jobs,
            dag: crate::dag_log::DagLog::new(store.clone()),
            store,
            counters,
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
        });
        let rpc_server = match rpc::start(&config.rpc, ctx.clone()).await {
            Ok(started) => started,
            Err(e) => {
                ctx.net.shutdown().await;
                let _ = ctx.blobs.shutdown().await;
                return Err(e.into());
            }
        };
        let (stop_tasks, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = vec![
            tokio::spawn(reap_uploads_periodically(
                ctx.blobs.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(ctx.jobs.clone().run(stop_rx.clone())),
            tokio::spawn(keep_peers(
                ctx.net.peers().clone(),
                config.net.bootnodes.clone(),
                Duration::from_millis(config.net.sync_interval_ms),
                stop_rx.clone(),
            )),
            tokio::spawn(prepare_member_programs(
                ctx.programs.clone(),
                ctx.store.clone(),
                stop_rx,
            )),
        ];
        tracing::info!(
            endpoint_id = %ctx.identity.endpoint_id(),
            rpc = %rpc_server.addr,
            "node started"
        );
        Ok(Self {
            ctx,
            rpc_addr: rpc_server.addr,
            rpc_handle: rpc_server.handle,
            _rpc_cookie: rpc_server.cookie,
            stop_tasks,
            tasks,
        })
    }

    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// `ws://` URL of the RPC server (HTTP clients use the same port).
    pub fn rpc_url(&self) -> String {
        format!("ws://{}", self.rpc_addr)
    }

    /// The dashboard's URL; `with_cookie` adds this run's cookie secret when the node has one
    /// (for `onvm dev`, as Jupyter does: whoever can read the URL on this machine could read
    /// the cookie file too; it changes at every start and never outlives the process). Never
    /// for a node whose output goes to logs.
    pub fn dashboard_url(&self, with_cookie: bool) -> String {
        match &self._rpc_cookie {
            Some(cookie) if with_cookie => {
                format!("http://{}/?token={}", self.rpc_addr, cookie.secret)
            }
            _ => format!("http://{}/", self.rpc_addr),
        }
    }

    pub fn info(&self) -> NodeInfo {
        self.ctx.info()
    }

    pub fn endpoint_id(&self) -> String {
        self.ctx.identity.endpoint_id().to_string()
    }

    /// Stops the RPC server (in-flight calls finish), the background tasks, the network and
    /// the stores, in that order. Every write acknowledged before this is on disk afterwards.
    pub async fn shutdown(mut self) {
        self.ctx.shutting_down.store(true, Ordering::Relaxed);
        if self.rpc_handle.stop().is_ok() {
            self.rpc_handle.clone().stopped().await;
        }
        let _ = self.stop_tasks.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.ctx.committees.shutdown().await;
        self.ctx.net.shutdown().await;
        // The router's blobs handler may already have closed the store; that is fine.
        if let Err(e) = self.ctx.blobs.shutdown().await {
            tracing::debug!("blob store shutdown: {e}");
        }
        tracing::info!("node stopped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn reap_uploads_periodically(blobs: Blobs, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(REAP_INTERVAL);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = interval.tick() => {
                match blobs.reap_uploads().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("dropped {n} expired uploads"),
                    Err(e) => tracing::warn!("reaping uploads: {e}"),
                }
            }
        }
    }
}

/// Compiles every program whose committee includes this node as soon as its deployment is
/// stored (the catalog first), so a member's first re-execution does not pay for the compile
/// while the sequencer waits for its signature.
async fn prepare_member_programs(
    programs: crate::programs::Programs,
    store: crate::store::Store,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut changes = store.dag_changes();
    // Start-up work follows the catalog (one row per program), not the DAG's history: every
    // program already deployed is prepared once, then only deploys that arrive after the
    // log's current end are followed.
    let s = store.clone();
    let Ok(Ok(mut cursor)) = tokio::task::spawn_blocking(move || s.dag_last_seq()).await else {
        return;
    };
    let mut after = None;
    loop {
        let s = store.clone();
        let from = after;
        let page =
            match tokio::task::spawn_blocking(move || s.programs_after(from.as_ref(), 256)).await {
                Ok(Ok(page)) => page,
                _ => return,
            };
        let Some(last) = page.last() else { break };
        after = Some(last.manifest.manifest.program_id);
        for record in page {
            if *stop.borrow() {
                return;
            }
            let manifest = &record.manifest.manifest;
            if let Err(e) = programs.prepare_member(manifest).await {
                tracing::warn!(program = %manifest.program_id, "compiling ahead: {e}");
            }
        }
    }
    loop {
        let s = store.clone();
        let after = cursor;
        let batch = match tokio::task::spawn_blocking(move || s.dag_log_after(after, 256)).await {
            Ok(Ok(batch)) => batch,
            _ => return,
        };
        if batch.is_empty() {
            tokio::select! {
                _ = stop.changed() => return,
                r = changes.changed() => if r.is_err() { return },
            }
            continue;
        }
        for (seq, node) in batch {
            cursor = seq;
            if let onvm_rpc_api::dag::DagPayload::ProgramDeployed { manifest } = node.body.payload
                && let Err(e) = programs.prepare_member(&manifest.manifest).await
            {
                tracing::warn!(program = %manifest.manifest.program_id, "compiling ahead: {e}");
            }
        }
    }
}

/// Joins the bootnodes (retrying a few times) and pings known peers periodically.
async fn keep_peers(
    peers: Arc<crate::net::Peers>,
    bootnodes: Vec<String>,
    sync_interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    for ticket in &bootnodes {
        for attempt in 1..=5u32 {
            match peers.connect(ticket).await {
                Ok(p) => {
                    tracing::info!(peer = %p.endpoint_id, "joined bootnode");
                    break;
                }
                Err(e) => {
                    tracing::warn!("bootnode attempt {attempt}: {e}");
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(Duration::from_secs(u64::from(attempt))) => {}
                    }
                }
            }
        }
    }
    tokio::select! {
        _ = stop.changed() => return,
        _ = peers.rejoin_announced() => {}
    }
    let mut ping = tokio::time::interval(PING_INTERVAL);
    // Pull anti-entropy repairs what gossip missed (a peer away, a lagging receiver).
    let mut sync = tokio::time::interval(sync_interval);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            // A round with dead peers waits for dial timeouts: shutdown must not wait for it.
            _ = ping.tick() => tokio::select! {
                _ = stop.changed() => return,
                _ = peers.ping_all() => {}
            },
            _ = sync.tick() => tokio::select! {
                _ = stop.changed() => return,
                added = peers.sync_all() => if added > 0 {
                    tracing::debug!("pulled {added} DAG nodes from peers");
                }
            },
        }
    }
}

/// The committees' view of the network: committee envelopes and DAG pulls.
struct CommitteePeers(Arc<crate::net::Peers>);

impl crate::consensus::committees::CommitteeNet for CommitteePeers {
    fn send(&self, to: onvm_rpc_api::Hash32, envelope: Vec<u8>) {
        self.0.send_committee(to, envelope);
    }

    fn sync_from(
        &self,
        peer: onvm_rpc_api::Hash32,
    ) -> crate::consensus::tendermint::driver::BoxFuture<()> {
        let peers = self.0.clone();
        Box::pin(async move {
            if let Err(e) = peers.sync_from(peer).await {
                tracing::debug!(%peer, "pulling a committee member's DAG: {e}");
            }
        })
    }
}
