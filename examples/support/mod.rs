//! Shared by the benchmark examples: a throwaway node and the sample programs.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use onvm::node::{Config, Identity, Node};

/// How long any single wait in a benchmark may take before the run fails loudly.
pub const WAIT: Duration = Duration::from_secs(30);

/// `fut`, or an error naming `what` after [`WAIT`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(WAIT, fut)
        .await
        .map_err(|_| anyhow!("timed out after {WAIT:?}: {what}"))
}

/// User + system CPU seconds of this process so far (from /proc, in 1/100 s ticks).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A client builder carrying `node`'s cookie, as the operator's CLI connects.
pub fn operator(node: &Node) -> WsClientBuilder {
    let mut headers = jsonrpsee::ws_client::HeaderMap::new();
    if let Some(cookie) = onvm::node::rpc::cookie::read_for(node.rpc_addr().port())
        && let Ok(value) = format!("Bearer {cookie}").parse()
    {
        headers.insert("authorization", value);
    }
    WsClientBuilder::default().set_headers(headers)
}

/// A WebSocket client for `node`, with room for large blobs and slow fetches.
pub async fn client(node: &Node) -> Result<WsClient> {
    within(
        "WS connect",
        operator(node)
            .max_request_size(64 * 1024 * 1024)
            .max_response_size(64 * 1024 * 1024)
            .request_timeout(Duration::from_secs(120))
            .build(node.rpc_url()),
    )
    .await?
    .with_context(|| format!("connecting to {}", node.rpc_url()))
}

/// Nearest-rank percentiles of a latency sample, in milliseconds.
#[derive(Clone, Copy)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn percentiles(samples: &[Duration]) -> Result<Percentiles> {
    ensure!(!samples.is_empty(), "no samples");
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let rank = ((p / 100.0) * ms.len() as f64).ceil() as usize;
        ms[rank.clamp(1, ms.len()) - 1]
    };
    Ok(Percentiles {
        p50: at(50.0),
        p90: at(90.0),
        p99: at(99.0),
        max: ms[ms.len() - 1],
    })
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            self.p50, self.p90, self.p99, self.max
        )
    }
}

/// A fresh node in a temp dir: offline, loopback, random ports. Keep the dir alive.
pub async fn bench_node() -> Result<(tempfile::TempDir, Node)> {
    bench_node_with(&[]).await
}

/// [`bench_node`] with extra config overrides (`section.key=value`).
pub async fn bench_node_with(extra: &[String]) -> Result<(tempfile::TempDir, Node)> {
    let dir = tempfile::tempdir()?;
    let mut items = vec![
        "rpc.listen=127.0.0.1:0".to_string(),
        "net.listen=127.0.0.1:0".to_string(),
        "net.offline=true".to_string(),
    ];
    items.extend_from_slice(extra);
    let config = Config::from_toml("", "bench", &items)?;
    let node = Node::start(dir.path(), config, Identity::generate()).await?;
    Ok((dir, node))
}

/// A sample program's wasm, building `wasm_programs` first if needed.
pub fn program_wasm(name: &str) -> Result<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm_programs");
    let path = root.join(format!("target/wasm32-unknown-unknown/release/{name}.wasm"));
    if !path.exists() {
        let status = std::process::Command::new("bash")
            .arg(root.join("build.sh"))
            .arg("--quiet")
            .status()?;
        if !status.success() {
            bail!("building wasm_programs failed");
        }
    }
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// `n` fresh nodes (see [`bench_node`]), each joined to the first by ticket, with a client for
/// each. Not yet converged: callers wait for that their own way.
pub async fn joined_nodes(n: usize) -> Result<(Vec<tempfile::TempDir>, Vec<Node>, Vec<WsClient>)> {
    use onvm::rpc_api::api::PeerApiClient;
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..n {
        let (dir, node) = bench_node()
            .await
            .with_context(|| format!("starting node {}", i + 1))?;
        dirs.push(dir);
        nodes.push(node);
    }
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(client(node).await?);
    }
    let ticket = nodes[0].info().ticket;
    for (i, c) in clients.iter().enumerate().skip(1) {
        within("peer_connect", PeerApiClient::connect(c, ticket.clone()))
            .await?
            .with_context(|| format!("node {} joins node 1 by ticket", i + 1))?;
    }
    Ok((dirs, nodes, clients))
}

/// The bare iroh-blobs anchor of a blob transfer: `bytes` in a provider `FsStore` behind
/// `provider_ep`, fetched into a receiver `FsStore` through `receiver_ep`. Timed: connect,
/// `get_verified_size`, `fetch` (what the node's fetch does on the wire); the bytes are checked
/// afterwards. Returns the seconds; closes both endpoints and stores.
pub async fn raw_blob_fetch(
    provider_ep: iroh::Endpoint,
    receiver_ep: iroh::Endpoint,
    bytes: &[u8],
) -> Result<f64> {
    use iroh_blobs::store::fs::FsStore;
    let dir_p = tempfile::tempdir()?;
    let dir_r = tempfile::tempdir()?;
    let provider_store = FsStore::load(dir_p.path())
        .await
        .map_err(|e| anyhow!("opening the provider FsStore: {e}"))?;
    let receiver_store = FsStore::load(dir_r.path())
        .await
        .map_err(|e| anyhow!("opening the receiver FsStore: {e}"))?;
    let hash = provider_store
        .add_bytes(bytes.to_vec())
        .await
        .map_err(|e| anyhow!("adding to the provider store: {e}"))?
        .hash;
    let provider_addr = provider_ep.addr();
    let provider = iroh::protocol::Router::builder(provider_ep)
        .accept(
            iroh_blobs::ALPN,
            iroh_blobs::BlobsProtocol::new(&provider_store, None),
        )
        .spawn();
    let t = std::time::Instant::now();
    let conn = within(
        "dialing the provider",
        receiver_ep.connect(provider_addr, iroh_blobs::ALPN),
    )
    .await?
    .map_err(|e| anyhow!("dialing the provider: {e}"))?;
    let (verified, _) = within(
        "get_verified_size",
        iroh_blobs::get::request::get_verified_size(&conn, &hash),
    )
    .await?
    .map_err(|e| anyhow!("get_verified_size: {e}"))?;
    within(
        "raw fetch",
        receiver_store
            .remote()
            .fetch(conn.clone(), hash)
            .into_future(),
    )
    .await?
    .map_err(|e| anyhow!("raw fetch: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        verified == bytes.len() as u64,
        "verified size {verified} != {}",
        bytes.len()
    );
    let back = receiver_store
        .get_bytes(hash)
        .await
        .map_err(|e| anyhow!("reading the fetched blob: {e}"))?;
    ensure!(back.as_ref() == bytes, "raw fetch bytes differ");
    conn.close(0u32.into(), b"done");
    within("receiver endpoint close", receiver_ep.close()).await?;
    within("provider router shutdown", provider.shutdown())
        .await?
        .map_err(|e| anyhow!("router shutdown: {e}"))?;
    // The router's BlobsProtocol shut the provider store down with it: nothing left to do.
    drop(provider_store);
    within("receiver store shutdown", receiver_store.shutdown())
        .await?
        .map_err(|e| anyhow!("receiver store shutdown: {e}"))?;
    Ok(secs)
}

/// The release `onvm` binary beside this example (`target/release/onvm`), for benchmarks that
/// run nodes as processes.
pub fn onvm_release_bin() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("onvm"))
        .context("locating target/<profile>/onvm")?;
    ensure!(
        bin.exists(),
        "{} is missing: run `cargo build --release --bin onvm` first",
        bin.display()
    );
    Ok(bin)
}

/// An `onvm run-node` process on loopback (offline, plaintext identity in `dir`), killed with
/// SIGKILL when dropped.
pub struct NodeProcess {
    child: std::process::Child,
    pub url: String,
}

impl NodeProcess {
    pub fn spawn(bin: &Path, dir: &Path, extra: &[&str]) -> Result<Self> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let dir_arg = dir.to_str().context("a UTF-8 data dir")?;
        let init = Command::new(bin)
            .args(["init", "--data-dir", dir_arg, "--allow-plaintext-identity"])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            init.status.success(),
            "onvm init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let mut child = Command::new(bin)
            .args(["run-node", "--data-dir", dir_arg])
            .args([
                "--rpc",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
                "--offline",
            ])
            .args(extra)
            .env_remove("ONVM_IDENTITY_PASSPHRASE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("run-node stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut node = Self {
            child,
            url: String::new(),
        };
        loop {
            let line = rx
                .recv_timeout(WAIT)
                .map_err(|e| anyhow!("run-node printed no `rpc:` line: {e}"))?;
            if let Some(url) = line.strip_prefix("rpc:") {
                node.url = url.trim().to_string();
                return Ok(node);
            }
        }
    }

    /// A client carrying the node's cookie (the operator's credential).
    pub async fn client(&self) -> Result<WsClient> {
        let port = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .context("the port of the node's URL")?;
        let mut headers = jsonrpsee::ws_client::HeaderMap::new();
        if let Some(cookie) = onvm::node::rpc::cookie::read_for(port)
            && let Ok(value) = format!("Bearer {cookie}").parse()
        {
            headers.insert("authorization", value);
        }
        within(
            "WS connect",
            WsClientBuilder::default()
                .set_headers(headers)
                .request_timeout(Duration::from_secs(120))
                .build(&self.url),
        )
        .await?
        .with_context(|| format!("connecting to {}", self.url))
    }

    /// SIGKILL: the node gets no chance to close a connection or flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
