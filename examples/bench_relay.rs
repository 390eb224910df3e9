//! Through a relay vs direct, in one run, with bare iroh as the anchor of each path.
//!
//! `cargo run --release --example bench_relay [-- SIZE_MIB CALLS]` (defaults 32 MiB, 100
//! calls). Everything runs in this process on loopback, with a local relay (the server `onvm
//! relay` runs). Each path is measured the same way:
//! - **direct**: offline nodes on 127.0.0.1 (what every other benchmark uses);
//! - **relayed**: nodes with `net.relay_only` (no UDP socket: every packet goes through the relay).
//!
//! 1. Blob: node B reads a SIZE_MIB blob only node A holds (`blob_stat` makes B fetch it,
//!    BAO-verified). Anchor: two bare endpoints with an `FsStore` each on the same path,
//!    `get_verified_size` + `fetch`.
//! 2. Calls: three nodes, a kvstore with a committee of 3 (threshold 3: every member re-executes
//!    and signs over the path). CALLS writes sent to the home A, then CALLS sent to B (forwarded
//!    to A). Anchor: the round trip of a 1-byte request on an open connection between bare
//!    endpoints on the same path (the floor under any request between nodes).

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use iroh::Endpoint;
use iroh::endpoint::{NetReportConfig, PortmapperConfig, presets};
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use jsonrpsee::ws_client::WsClient;
use onvm::node::relay::{Relay, RelayOptions};
use onvm::rpc_api::BlobId;
use onvm::rpc_api::api::{BlobApiClient, DagApiClient, PeerApiClient, ProgramApiClient};
use support::{Percentiles, client, percentiles, within};

const CHUNK: usize = 4 * 1024 * 1024;
const ECHO_ALPN: &[u8] = b"onvm-bench/echo/1";
/// Round trips measured on the bare anchor.
const ECHO_ROUNDS: usize = 200;

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    Relayed,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Relayed => "relayed",
        }
    }
}

fn overrides(path: Path, relay: &str) -> Vec<String> {
    match path {
        Path::Direct => Vec::new(),
        Path::Relayed => vec![
            format!("net.relays=[\"{relay}\"]"),
            "net.relay_only=true".into(),
        ],
    }
}

/// A bare endpoint on `path`, configured as an offline node is.
async fn bare_endpoint(path: Path, relay: &iroh::RelayUrl) -> Result<Endpoint> {
    let mut builder = Endpoint::builder(presets::Minimal)
        .portmapper_config(PortmapperConfig::Disabled)
        .clear_ip_transports();
    builder = match path {
        Path::Direct => builder
            .bind_addr("127.0.0.1:0")
            .map_err(|e| anyhow!("bind address: {e}"))?
            .net_report_config(NetReportConfig::minimal()),
        Path::Relayed => {
            let mut report = NetReportConfig::minimal();
            report.https_probes = true;
            let map = iroh::RelayMap::empty();
            map.insert(
                relay.clone(),
                std::sync::Arc::new(iroh::RelayConfig::new(relay.clone(), None)),
            );
            builder
                .relay_mode(iroh::RelayMode::Custom(map))
                .net_report_config(report)
        }
    };
    let endpoint = within(
        "binding an endpoint",
        builder.alpns(vec![ECHO_ALPN.to_vec()]).bind(),
    )
    .await?
    .map_err(|e| anyhow!("binding an endpoint: {e}"))?;
    if path == Path::Relayed {
        within("the home relay", endpoint.online()).await?;
    }
    Ok(endpoint)
}

fn data(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"onvm bench_relay")
        .finalize_xof()
        .fill(&mut out);
    out
}

struct Measured {
    blob_node_secs: f64,
    blob_raw_secs: f64,
    home_calls: Percentiles,
    forwarded_calls: Percentiles,
    echo: Percentiles,
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("SIZE_MIB must be an integer")?
        .unwrap_or(32);
    let calls: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("CALLS must be an integer")?
        .unwrap_or(100);
    ensure!(mib > 0 && calls > 0, "SIZE_MIB and CALLS must be positive");
    let relay = Relay::start(RelayOptions::plain("127.0.0.1:0".parse()?))
        .await
        .context("starting the relay")?;
    let url = relay.url().clone();
    println!("relay: {url}");
    let bytes = data(mib * 1024 * 1024);
    let mut results = Vec::new();
    for path in [Path::Direct, Path::Relayed] {
        println!("---- {} ----", path.name());
        let m = measure(path, &url, &bytes, calls)
            .await
            .with_context(|| format!("the {} path", path.name()))?;
        results.push((path, m));
    }
    relay.shutdown().await;

    println!();
    println!("==== results ({mib} MiB blob, {calls} calls per kind, loopback) ====");
    let mb = |secs: f64| bytes.len() as f64 / 1e6 / secs;
    for (path, m) in &results {
        println!(
            "{:8} blob node {:.1} MB/s ({:.3} s) | bare iroh-blobs {:.1} MB/s | node/bare {:.2}x",
            path.name(),
            mb(m.blob_node_secs),
            m.blob_node_secs,
            mb(m.blob_raw_secs),
            m.blob_node_secs / m.blob_raw_secs
        );
        println!(
            "{:8} attested write on home (K=3): {}",
            path.name(),
            m.home_calls
        );
        println!(
            "{:8} forwarded attested write:     {}",
            path.name(),
            m.forwarded_calls
        );
        println!("{:8} bare QUIC 1-byte round trip:  {}", path.name(), m.echo);
    }
    let (direct, relayed) = (&results[0].1, &results[1].1);
    println!(
        "relayed/direct: blob time {:.2}x (bare {:.2}x) | home write p50 {:.2}x | forwarded write p50 {:.2}x | bare round trip p50 {:.2}x",
        relayed.blob_node_secs / direct.blob_node_secs,
        relayed.blob_raw_secs / direct.blob_raw_secs,
        relayed.home_calls.p50 / direct.home_calls.p50,
        relayed.forwarded_calls.p50 / direct.forwarded_calls.p50,
        relayed.echo.p50 / direct.echo.p50,
    );
    Ok(())
}

async fn measure(
    path: Path,
    relay: &iroh::RelayUrl,
    bytes: &[u8],
    calls: usize,
) -> Result<Measured> {
    let extra = overrides(path, relay.as_str());
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    let mut clients: Vec<WsClient> = Vec::new();
    for i in 0..3 {
        let (dir, node) = support::bench_node_with(&extra)
            .await
            .with_context(|| format!("starting node {}", i + 1))?;
        clients.push(client(&node).await?);
        dirs.push(dir);
        nodes.push(node);
    }
    let ticket = nodes[0].info().ticket;
    for c in &clients[1..] {
        within("peer_connect", PeerApiClient::connect(c, ticket.clone())).await??;
    }
    for c in &clients[1..] {
        let deadline = Instant::now() + support::WAIT;
        while PeerApiClient::list(c).await?.len() < 2 {
            ensure!(Instant::now() < deadline, "the nodes never all met");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Every node's announcement reached every node (the committee is drawn from them).
    let deadline = Instant::now() + support::WAIT;
    loop {
        let mut heads = Vec::new();
        for c in &clients {
            let mut h = DagApiClient::heads(c).await?;
            h.heads.sort();
            heads.push((h.heads, h.count));
        }
        if heads.windows(2).all(|w| w[0] == w[1]) && heads[0].1 >= 3 {
            break;
        }
        ensure!(Instant::now() < deadline, "the DAGs never converged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 1. Blob: A holds it, B reads it.
    let expected = BlobId::of(bytes);
    let status = BlobApiClient::upload_begin(&clients[0], bytes.len() as u64, None).await?;
    let mut offset = 0u64;
    for piece in bytes.chunks(CHUNK) {
        BlobApiClient::upload_append(
            &clients[0],
            status.upload_id.clone(),
            offset,
            piece.to_vec().into(),
        )
        .await?;
        offset += piece.len() as u64;
    }
    BlobApiClient::upload_finish(&clients[0], status.upload_id, Some(expected)).await?;
    let t = Instant::now();
    let got = BlobApiClient::stat(&clients[1], expected)
        .await
        .context("blob_stat on B (fetches from A)")?;
    let blob_node_secs = t.elapsed().as_secs_f64();
    ensure!(got.size == bytes.len() as u64, "B got {} bytes", got.size);
    println!("blob: node fetch {blob_node_secs:.3} s");

    // 2. Attested writes, on the home and forwarded.
    let wasm = support::program_wasm("kvstore")?;
    let program = ProgramApiClient::deploy(
        &clients[0],
        onvm::rpc_api::program::DeployRequest {
            wasm_base64: Some(wasm.into()),
            committee_size: Some(3),
            ..Default::default()
        },
    )
    .await?
    .program_id;
    let committee = ProgramApiClient::committee(&clients[0], program).await?;
    ensure!(
        committee.members.len() == 3,
        "the committee has {} members, not 3",
        committee.members.len()
    );
    let mut home = Vec::new();
    let mut forwarded = Vec::new();
    for (n, (who, out)) in [(0usize, &mut home), (1, &mut forwarded)]
        .into_iter()
        .enumerate()
    {
        // One untimed warm-up call (members compile the module on first use).
        for i in 0..=calls {
            let input = serde_json::to_vec(&serde_json::json!({
                "op": "put", "key": format!("k{n}-{i}"), "data_base64": "dg=="
            }))?;
            let t = Instant::now();
            let r = within("program_execute", async {
                // A member may not have the deploy yet right after it: retry briefly.
                loop {
                    match ProgramApiClient::execute(
                        &clients[who],
                        program,
                        input.clone().into(),
                        None,
                    )
                    .await
                    {
                        Err(e) if i == 0 => {
                            pause_after_refusal(&e).await;
                        }
                        other => return other,
                    }
                }
            })
            .await??;
            ensure!(
                r.receipt.is_some_and(|r| r.attestation.is_some()),
                "a write came back unattested"
            );
            if i > 0 {
                out.push(t.elapsed());
            }
        }
    }
    let home_calls = percentiles(&home)?;
    let forwarded_calls = percentiles(&forwarded)?;
    println!("calls: home {home_calls}");
    println!("calls: forwarded {forwarded_calls}");
    drop(clients);
    for node in nodes {
        within("node shutdown", node.shutdown()).await?;
    }
    drop(dirs);

    // Anchors on the same path.
    let blob_raw_secs = raw_blob(path, relay, bytes).await?;
    println!("blob: bare fetch {blob_raw_secs:.3} s");
    let echo = percentiles(&raw_echo(path, relay).await?)?;
    println!("bare round trip: {echo}");
    Ok(Measured {
        blob_node_secs,
        blob_raw_secs,
        home_calls,
        forwarded_calls,
        echo,
    })
}

async fn pause_after_refusal(e: &jsonrpsee::core::ClientError) {
    eprintln!("warm-up call refused ({e}); retrying");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn raw_blob(path: Path, relay: &iroh::RelayUrl, bytes: &[u8]) -> Result<f64> {
    let provider = bare_endpoint(path, relay).await?;
    let receiver = bare_endpoint(path, relay).await?;
    support::raw_blob_fetch(provider, receiver, bytes).await
}

/// Answers each 1-byte stream with the same byte.
#[derive(Debug, Clone)]
struct Echo;

impl ProtocolHandler for Echo {
    async fn accept(&self, conn: iroh::endpoint::Connection) -> Result<(), AcceptError> {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let Ok(byte) = recv.read_to_end(1).await else {
                break;
            };
            if send.write_all(&byte).await.is_err() || send.finish().is_err() {
                break;
            }
        }
        Ok(())
    }
}

async fn raw_echo(path: Path, relay: &iroh::RelayUrl) -> Result<Vec<Duration>> {
    let server_ep = bare_endpoint(path, relay).await?;
    let server_addr = server_ep.addr();
    let server = Router::builder(server_ep).accept(ECHO_ALPN, Echo).spawn();
    let client_ep = bare_endpoint(path, relay).await?;
    let conn = within(
        "dialing the echo server",
        client_ep.connect(server_addr, ECHO_ALPN),
    )
    .await?
    .map_err(|e| anyhow!("dialing the echo server: {e}"))?;
    let mut out = Vec::new();
    for i in 0..=ECHO_ROUNDS {
        let t = Instant::now();
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&[7]).await?;
        send.finish()?;
        let back = recv.read_to_end(1).await?;
        ensure!(back == [7], "echo returned {back:?}");
        if i > 0 {
            out.push(t.elapsed());
        }
    }
    conn.close(0u32.into(), b"done");
    client_ep.close().await;
    server
        .shutdown()
        .await
        .map_err(|e| anyhow!("router shutdown: {e}"))?;
    Ok(out)
}
