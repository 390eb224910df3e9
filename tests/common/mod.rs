//! Shared helpers for integration tests: real nodes in temp dirs, offline, on loopback port 0.
#![allow(dead_code)]

pub mod raw;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use onvm::node::{Config, Identity, Node};

/// A node in its own temp dir. Restartable: the dir and identity file outlive the process.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub overrides: Vec<String>,
    pub node: Option<Node>,
}

pub fn test_config(overrides: &[String]) -> Config {
    let mut items = vec![
        "rpc.listen=127.0.0.1:0".to_string(),
        "net.listen=127.0.0.1:0".to_string(),
        "net.offline=true".to_string(),
        // Debug builds on 2 cores: a member's first re-execution compiles the module (seconds
        // when several nodes compile at once); a dead member is refused long before this.
        "committee.attest_timeout_ms=60000".to_string(),
    ];
    items.extend_from_slice(overrides);
    Config::from_toml("", "test", &items).expect("test config")
}

impl TestNode {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(overrides: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), overrides).await
    }

    /// A node whose data dir is `dir` (e.g. a small filesystem mounted there by the test).
    pub async fn start_in(dir: tempfile::TempDir, overrides: &[&str]) -> Self {
        Identity::generate()
            .save(&dir.path().join("identity.json"), None, true)
            .expect("save identity");
        let mut node = Self {
            dir,
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            node: None,
        };
        node.boot().await;
        node
    }

    /// A separate node (own data dir, not joined to anything) holding the same identity as
    /// `other`: the same deployer, so the same program ids (determinism tests).
    pub async fn start_as(other: &TestNode) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(
            other.path().join("identity.json"),
            dir.path().join("identity.json"),
        )
        .expect("copy identity");
        let mut node = Self {
            dir,
            overrides: Vec::new(),
            node: None,
        };
        node.boot().await;
        node
    }

    async fn boot(&mut self) {
        // ONVM_TEST_LOG=onvm_node=debug shows what the in-process nodes log (off by default).
        if let Ok(filter) = std::env::var("ONVM_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        // In-process restarts only: a blocking store task of the previous instance (cancelled
        // by its shutdown, but already running on the blocking pool) can hold the database
        // lock for a moment after `shutdown` returns. A new process never sees this.
        let mut attempts = 0;
        let node = loop {
            let identity = Identity::load(&self.dir.path().join("identity.json"), None)
                .expect("load identity");
            match Node::start(self.dir.path(), test_config(&self.overrides), identity).await {
                Ok(node) => break node,
                // The store reports a held lock as "in use by another running node".
                Err(e)
                    if attempts < 50
                        && (e.to_string().contains("already open")
                            || e.to_string().contains("in use by another running node")) =>
                {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("node starts: {e}"),
            }
        };
        self.node = Some(node);
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("node running")
    }

    pub fn url(&self) -> String {
        self.node().rpc_url()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub async fn client(&self) -> WsClient {
        ws_client(&self.url()).await
    }

    /// Graceful shutdown, then a fresh start on the same data dir (new ports).
    pub async fn restart(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        self.boot().await;
    }

    /// Graceful shutdown, keeping the data dir for [`TestNode::resume`].
    /// Config overrides for the next `resume` (e.g. a test hook switched off).
    pub fn set_overrides(&mut self, overrides: &[&str]) {
        self.overrides = overrides.iter().map(|s| s.to_string()).collect();
    }

    pub async fn halt(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
    }

    /// Starts a halted node again on its data dir (new ports).
    pub async fn resume(&mut self) {
        self.boot().await;
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        self.dir
    }
}

/// The cookie of the node serving `url` on this machine (the operator's credential).
pub fn cookie_of(url: &str) -> Option<String> {
    let port = url.rsplit(':').next()?.trim_end_matches('/').parse().ok()?;
    onvm::node::rpc::cookie::read_for(port)
}

/// A client with the node's cookie, as the operator's CLI connects.
pub async fn ws_client(url: &str) -> WsClient {
    ws_client_as(url, cookie_of(url).as_deref()).await
}

/// A client presenting `credential` (an API token or a cookie) as a bearer, or nothing.
pub async fn ws_client_as(url: &str, credential: Option<&str>) -> WsClient {
    let mut headers = jsonrpsee::ws_client::HeaderMap::new();
    if let Some(credential) = credential {
        headers.insert(
            "authorization",
            format!("Bearer {credential}").parse().expect("header"),
        );
    }
    WsClientBuilder::default()
        .set_headers(headers)
        .max_request_size(256 * 1024 * 1024)
        .max_response_size(256 * 1024 * 1024)
        .request_timeout(Duration::from_secs(120))
        .build(url)
        .await
        .expect("ws connect")
}

/// A fresh API token with `scopes`, created by the operator's client.
pub async fn new_token(
    operator: &WsClient,
    scopes: &[onvm::rpc_api::auth::Scope],
    label: &str,
) -> String {
    use onvm::rpc_api::api::TokenApiClient;
    TokenApiClient::create(
        operator,
        onvm::rpc_api::auth::TokenRequest {
            scopes: scopes.to_vec(),
            expires_in_secs: None,
            origins: vec![],
            label: Some(label.to_string()),
        },
    )
    .await
    .expect("token_create")
    .token
}

/// The node's ticket (to join other nodes to it).
pub async fn ticket(node: &TestNode) -> String {
    use onvm::rpc_api::api::NodeApiClient;
    NodeApiClient::info(&node.client().await)
        .await
        .expect("node_info")
        .ticket
}

/// Joins `others` to `first` by its ticket and waits until all of them converge.
pub async fn join(first: &TestNode, others: &[&TestNode]) {
    use onvm::rpc_api::api::PeerApiClient;
    let t = ticket(first).await;
    for n in others {
        PeerApiClient::connect(&n.client().await, t.clone())
            .await
            .expect("join by ticket");
    }
    let mut all = vec![first];
    all.extend_from_slice(others);
    converge(&all).await;
}

/// A kvstore `put` of `key` (value "v").
pub fn kv_put(key: &str) -> onvm::rpc_api::types::Base64Bytes {
    serde_json::to_vec(&serde_json::json!({"op": "put", "key": key, "data_base64": "dg=="}))
        .expect("json")
        .into()
}

/// Execute options naming a request id (so a retry is the same call).
pub fn with_request_id(id: &str) -> Option<onvm::rpc_api::program::ExecuteOptions> {
    Some(onvm::rpc_api::program::ExecuteOptions {
        request_id: Some(id.into()),
        ..Default::default()
    })
}

/// Waits (at most 30 s) until `nodes` hold the same DAG heads and node count.
pub async fn converge(nodes: &[&TestNode]) {
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    converge_urls(&urls).await;
}

/// [`converge`] for nodes given by RPC URL (e.g. `onvm` processes).
pub async fn converge_urls(urls: &[String]) {
    use onvm::rpc_api::api::DagApiClient;
    let started = std::time::Instant::now();
    loop {
        let mut states = Vec::new();
        for url in urls {
            let mut h = DagApiClient::heads(&ws_client(url).await)
                .await
                .expect("dag_heads");
            h.heads.sort();
            states.push((h.heads, h.count));
        }
        if states.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no convergence"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `onvm run-node` processes, one per entry of `extra` (that node's `--set` values), joined to
/// the first, with a 3 s idle timeout so a killed or paused peer is noticed quickly and calls
/// that wait for their committee up to 60 s; returns the temp dir, the children (killed on
/// drop), their RPC URLs and the first node's info.
pub async fn spawn_network(
    extra: &[Vec<&str>],
) -> (
    tempfile::TempDir,
    Processes,
    Vec<String>,
    onvm::rpc_api::types::NodeInfo,
) {
    use onvm::rpc_api::api::{NodeApiClient, PeerApiClient};
    let tmp = tempfile::tempdir().unwrap();
    let mut children = Processes::default();
    let mut urls = Vec::new();
    for (i, settings) in extra.iter().enumerate() {
        let dir = tmp.path().join(format!("n{i}"));
        init_plaintext(&dir);
        let mut args = vec![
            "--set",
            "committee.attest_timeout_ms=60000",
            "--set",
            "net.idle_timeout_ms=3000",
        ];
        for s in settings {
            args.extend(["--set", s]);
        }
        let (child, url) = spawn_node(&dir, &args);
        children.push(child);
        urls.push(url);
    }
    let info = NodeApiClient::info(&ws_client(&urls[0]).await)
        .await
        .unwrap();
    for url in &urls[1..] {
        PeerApiClient::connect(&ws_client(url).await, info.ticket.clone())
            .await
            .unwrap();
    }
    converge_urls(&urls).await;
    (tmp, children, urls, info)
}

/// `onvm audit` of `p` against the node at `url`: its exit status and output.
pub fn audit(url: &str, p: onvm::rpc_api::ProgramId) -> (bool, String) {
    let out = Command::new(onvm_bin())
        .args(["--rpc", url, "audit", "--program-id", &p.to_string()])
        .output()
        .expect("run onvm audit");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every receipt of `p` on the node at `url`, oldest first.
pub async fn all_receipts(
    url: &str,
    p: onvm::rpc_api::ProgramId,
) -> Vec<onvm::rpc_api::program::SignedReceipt> {
    use onvm::rpc_api::api::ReceiptApiClient;
    let mut page = ReceiptApiClient::list(&ws_client(url).await, p, None, Some(1000))
        .await
        .unwrap()
        .items;
    page.reverse();
    page
}

/// Uploads `data` through the chunked upload API (1 MiB chunks); returns the blob id.
pub async fn upload_chunked(
    client: &WsClient,
    data: &[u8],
    mime: Option<&str>,
) -> onvm::rpc_api::BlobId {
    use onvm::rpc_api::api::BlobApiClient;
    let status = BlobApiClient::upload_begin(client, data.len() as u64, mime.map(String::from))
        .await
        .expect("blob_upload_begin");
    let mut offset = 0u64;
    for piece in data.chunks(1024 * 1024) {
        BlobApiClient::upload_append(
            client,
            status.upload_id.clone(),
            offset,
            piece.to_vec().into(),
        )
        .await
        .expect("blob_upload_append");
        offset += piece.len() as u64;
    }
    BlobApiClient::upload_finish(client, status.upload_id, None)
        .await
        .expect("blob_upload_finish")
        .id
}

/// Reads a whole blob with `blob_get` in 1 MiB ranges.
pub async fn read_blob(client: &WsClient, id: onvm::rpc_api::BlobId, size: usize) -> Vec<u8> {
    use onvm::rpc_api::api::BlobApiClient;
    let mut back = Vec::new();
    while back.len() < size {
        let chunk = BlobApiClient::get(client, id, Some(back.len() as u64), Some(1024 * 1024))
            .await
            .expect("blob_get");
        assert!(
            !chunk.data_base64.0.is_empty(),
            "blob_get returned nothing at {}",
            back.len()
        );
        back.extend_from_slice(&chunk.data_base64.0);
    }
    back
}

/// Deterministic pseudo-random bytes (xorshift), so failures can be reproduced.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The `onvm` binary built by cargo next to the test executables.
pub fn onvm_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("onvm{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p onvm-cli` or `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// The sample program `name` (echo, kvstore, analytics, job_test) built for wasm32. The first
/// call in a test binary builds the `wasm_programs` workspace (its own target dir, so no lock
/// is shared with the cargo running the tests).
pub fn program_wasm(name: &str) -> Vec<u8> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm_programs");
        let out = std::process::Command::new("bash")
            .arg(root.join("build.sh"))
            .arg("--quiet")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .output()
            .map_err(|e| format!("running wasm_programs/build.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building wasm_programs failed (is the wasm32-unknown-unknown target installed? `rustup target add wasm32-unknown-unknown`):\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(root.join("target/wasm32-unknown-unknown/release"))
    });
    let dir = dir.as_ref().unwrap_or_else(|e| panic!("{e}"));
    std::fs::read(dir.join(format!("{name}.wasm")))
        .unwrap_or_else(|e| panic!("reading {name}.wasm: {e}"))
}

/// Deploys the kvstore sample through `client`, with a committee of `committee_size` members
/// (None: the node's default), and returns its id.
pub async fn deploy_kvstore(
    client: &WsClient,
    committee_size: Option<u32>,
) -> onvm::rpc_api::ProgramId {
    use onvm::rpc_api::api::ProgramApiClient;
    ProgramApiClient::deploy(
        client,
        onvm::rpc_api::program::DeployRequest {
            wasm_base64: Some(program_wasm("kvstore").into()),
            committee_size,
            ..Default::default()
        },
    )
    .await
    .expect("kvstore deploys")
    .program_id
}

/// An example input file of a sample program.
pub fn example(program_dir: &str, file: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("wasm_programs")
        .join(program_dir)
        .join("examples")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The test's random seed: `ONVM_TEST_SEED` or the clock; printed so a run can be repeated.
pub fn test_seed() -> u64 {
    let seed = std::env::var("ONVM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("seed {seed} (re-run with ONVM_TEST_SEED={seed})");
    seed
}

/// `onvm run-node` (offline, loopback, ports chosen by the OS, plus `extra` arguments) on a
/// plaintext data dir; returns the child and its RPC URL.
/// Where a spawned node's stderr goes: nowhere, or with `ONVM_TEST_LOG_DIR=<dir>` a file per
/// process there (set `RUST_LOG` for the level).
fn child_log() -> Stdio {
    let Ok(dir) = std::env::var("ONVM_TEST_LOG_DIR") else {
        return Stdio::null();
    };
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = Path::new(&dir).join(format!("node-{}-{n}.log", std::process::id()));
    std::fs::File::create(path).map_or(Stdio::null(), Stdio::from)
}

/// `onvm` processes that are killed when this is dropped, also when a test panics (a failed
/// test must not leave busy nodes behind to slow every test after it).
#[derive(Default)]
pub struct Processes(pub Vec<Child>);

impl std::ops::Deref for Processes {
    type Target = Vec<Child>;
    fn deref(&self) -> &Vec<Child> {
        &self.0
    }
}

impl std::ops::DerefMut for Processes {
    fn deref_mut(&mut self) -> &mut Vec<Child> {
        &mut self.0
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.0.drain(..) {
            kill9(child);
        }
    }
}

pub fn spawn_node(data_dir: &Path, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(onvm_bin())
        .args([
            "run-node",
            "--data-dir",
            data_dir.to_str().unwrap(),
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
        .stderr(child_log())
        .spawn()
        .expect("spawn run-node");
    let url = rpc_url_of(&mut child);
    (child, url)
}

/// Reads a started `run-node`'s RPC URL from its stdout (the `rpc:` line), then keeps draining
/// stdout in the background like a terminal would. Kills the child if none comes within 60 s.
pub fn rpc_url_of(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("run-node stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("rpc:") {
                    return url.trim().to_string();
                }
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("run-node did not print its RPC URL: {e}");
            }
        }
    }
}

/// The `key: value` lines a starting node prints (`rpc`, `web`, `ticket`, `data`), read up to
/// `data:`; the rest of its stdout is drained in the background.
pub fn banner_of(child: &mut Child) -> std::collections::BTreeMap<String, String> {
    let stdout = child.stdout.take().expect("the node's stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut banner = std::collections::BTreeMap::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                if let Some((key, value)) = line.split_once(':')
                    && !key.contains(' ')
                {
                    banner.insert(key.to_string(), value.trim().to_string());
                    if key == "data" {
                        return banner;
                    }
                }
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the node did not print its banner ({banner:?}): {e}");
            }
        }
    }
}

/// SIGKILL: the process gets no chance to clean up.
pub fn kill9(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// `onvm init` with a plaintext identity.
pub fn init_plaintext(dir: &Path) {
    let out = Command::new(onvm_bin())
        .args([
            "init",
            "--data-dir",
            dir.to_str().unwrap(),
            "--allow-plaintext-identity",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `onvm_verifier.wasm`, the receipt verifier web pages run (wasm_programs/verifier), built by
/// `build.sh -p onvm-verifier` (the same flags and target dir as the sample programs).
pub fn verifier_wasm() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm_programs");
    let out = Command::new("bash")
        .arg(root.join("build.sh"))
        .args(["--quiet", "-p", "onvm-verifier"])
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("running wasm_programs/build.sh");
    assert!(
        out.status.success(),
        "building the verifier failed (is the wasm32-unknown-unknown target installed?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = root.join("target/wasm32-unknown-unknown/release/onvm_verifier.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
