//! Node-to-node performance vs bare iroh, in one run.
//!
//! `cargo run --release --example bench_p2p [-- SIZE_MIB ROUNDS SEED]` (defaults 100 MiB, 200
//! rounds, seed 0xc0ffee). Everything runs in this process, offline, on loopback:
//!
//! 1. Blob transfer: node B (joined to node A by ticket) reads a blob only A holds with
//!    `blob_stat`, which makes B fetch it from A over iroh-blobs (BAO-verified). The anchor is
//!    two bare endpoints with an `FsStore` each (the store type the node uses): connect,
//!    `get_verified_size`, then `store.remote().fetch(conn, hash)`, as the node does.
//! 2. DAG propagation: five nodes, four joined to the first by ticket. Each round `blob_put`s a
//!    small blob on one node (seeded random pick) and times until every node's `dag_subscribe`
//!    has delivered the resulting `BlobPublished` DAG node. The anchor is five bare endpoints
//!    with iroh-gossip (the node's 64 KiB maximum) on one topic, broadcasting one 600-byte
//!    message per round from a rotating endpoint, timed until the other four received it.

#[path = "support/mod.rs"]
mod support;

use support::{WAIT, client, percentiles, within};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use iroh::Endpoint;
use iroh::address_lookup::memory::MemoryLookup;
use iroh::endpoint::{NetReportConfig, PortmapperConfig, presets};
use iroh::protocol::Router;
use iroh_gossip::api::{GossipReceiver, GossipSender, JoinOptions};
use iroh_gossip::net::Gossip;
use iroh_gossip::proto::TopicId;
use jsonrpsee::ws_client::WsClient;
use onvm::rpc_api::BlobId;
use onvm::rpc_api::api::{BlobApiClient, DagApiClient, NodeApiClient, PeerApiClient};
use onvm::rpc_api::dag::{DagPayload, DagStreamItem};
use tokio::sync::{mpsc, oneshot};

/// Every wait is bounded by this, so a broken run fails loudly instead of hanging.
const CHUNK: usize = 4 * 1024 * 1024;
const NODES: usize = 5;
/// Rounds run before the measured ones in both DAG benchmarks (gossip trees settle), not counted.
const WARMUP_ROUNDS: usize = 10;
/// Untimed pause between rounds in both DAG benchmarks.
const ROUND_GAP: Duration = Duration::from_millis(5);
/// The node's default `net.max_gossip_bytes`.
const MAX_GOSSIP_BYTES: usize = 64 * 1024;
const RAW_MESSAGE_BYTES: usize = 600;

fn mb_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn data(len: usize) -> Vec<u8> {
    // Incompressible and reproducible: BLAKE3 in XOF mode from a fixed seed.
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"onvm bench_p2p seed 1")
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A bare iroh endpoint configured like an offline node: loopback, no relays, no lookups.
async fn bare_endpoint() -> Result<Endpoint> {
    let builder = Endpoint::builder(presets::Minimal)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .map_err(|e| anyhow!("bind address: {e}"))?
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(NetReportConfig::minimal());
    within("binding an endpoint", builder.bind())
        .await?
        .map_err(|e| anyhow!("binding an endpoint: {e}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("SIZE_MIB must be an integer")?
        .unwrap_or(100);
    let rounds: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("ROUNDS must be an integer")?
        .unwrap_or(200);
    let seed: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()
        .context("SEED must be an integer")?
        .unwrap_or(0xc0ffee);
    ensure!(
        mib > 0 && rounds > 0,
        "SIZE_MIB and ROUNDS must be positive"
    );

    let blob = bench_blob(mib).await.context("blob benchmark")?;
    let dag = bench_dag(rounds, seed)
        .await
        .context("DAG benchmark (nodes)")?;
    let raw = bench_raw_gossip(rounds)
        .await
        .context("gossip benchmark (raw)")?;

    println!();
    println!("==== results ====");
    println!(
        "blob {mib} MiB node->node: {:.1} MB/s ({:.3} s) | raw iroh-blobs: {:.1} MB/s ({:.3} s) | ratio {:.2}x",
        mb_per_s(blob.size, blob.node_secs),
        blob.node_secs,
        mb_per_s(blob.size, blob.raw_secs),
        blob.raw_secs,
        blob.raw_secs / blob.node_secs
    );
    let node_p = percentiles(&dag.latencies)?;
    let put_p = percentiles(&dag.put_rpc)?;
    let raw_p = percentiles(&raw.latencies)?;
    println!(
        "dag propagation, {NODES} nodes, {rounds} rounds (seed {seed}, {} B gossip messages): {}",
        dag.message_bytes, node_p
    );
    println!("  of which blob_put RPC returned after:   {}", put_p);
    println!(
        "raw iroh-gossip, {NODES} endpoints, {rounds} rounds ({RAW_MESSAGE_BYTES} B messages): {}",
        raw_p
    );
    println!(
        "  (raw delivery detected by polling gossip counters every ~{:.0} us; {} duplicate deliveries)",
        raw.poll_interval_us, raw.duplicates
    );
    println!(
        "dag p50 ratio node/raw: {:.1}x (node {:.2} ms, raw {:.2} ms)",
        node_p.p50 / raw_p.p50,
        node_p.p50,
        raw_p.p50
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------
// 1. Blob transfer
// ------------------------------------------------------------------------------------------

struct BlobResult {
    size: usize,
    node_secs: f64,
    raw_secs: f64,
}

async fn blob_fetched(client: &WsClient) -> Result<u64> {
    let m = NodeApiClient::metrics(client)
        .await
        .context("node_metrics")?;
    Ok(m.counters.get("blobs_fetched").copied().unwrap_or(0))
}

async fn bench_blob(mib: usize) -> Result<BlobResult> {
    let size = mib * 1024 * 1024;
    let bytes = data(size);
    let expected = BlobId::of(&bytes);
    println!("blob: {mib} MiB, id {expected}");

    // ---- two nodes: A holds the blob, B reads it ----
    let (_dir_a, a) = support::bench_node().await.context("starting node A")?;
    let (_dir_b, b) = support::bench_node().await.context("starting node B")?;
    let ca = client(&a).await?;
    let cb = client(&b).await?;
    let joined = PeerApiClient::connect(&cb, a.info().ticket)
        .await
        .context("B joins A by ticket")?;
    ensure!(
        joined.endpoint_id == a.endpoint_id(),
        "B joined the wrong node"
    );

    // Not timed: the upload to A, chunked like bench_blobs.
    let status = BlobApiClient::upload_begin(&ca, size as u64, None)
        .await
        .context("blob_upload_begin on A")?;
    let mut offset = 0u64;
    for piece in bytes.chunks(CHUNK) {
        BlobApiClient::upload_append(&ca, status.upload_id.clone(), offset, piece.to_vec().into())
            .await
            .context("blob_upload_append on A")?;
        offset += piece.len() as u64;
    }
    let stat = BlobApiClient::upload_finish(&ca, status.upload_id, Some(expected))
        .await
        .context("blob_upload_finish on A")?;
    ensure!(
        stat.id == expected,
        "A stored {} instead of {expected}",
        stat.id
    );

    // B must not hold it yet (with `blobs.replicate = "full"` it would copy it on its own).
    let on_b = BlobApiClient::list(&cb, None, None)
        .await
        .context("blob_list on B")?;
    ensure!(
        !on_b.items.iter().any(|s| s.id == expected),
        "B already holds the blob before the timed read: is replication set to full?"
    );
    let fetched_before = blob_fetched(&cb).await?;

    // Timed: B's first read. Includes finding the holder (HasBlob over the peer ALPN), dialing
    // the blobs ALPN, get_verified_size, the BAO-verified fetch into B's FsStore, tagging, the
    // store sync and B's redb record.
    let t = Instant::now();
    let got = BlobApiClient::stat(&cb, expected)
        .await
        .context("blob_stat on B (fetches from A)")?;
    let node_secs = t.elapsed().as_secs_f64();
    ensure!(
        got.id == expected && got.size == size as u64,
        "B reports {} / {} bytes, expected {expected} / {size}",
        got.id,
        got.size
    );
    ensure!(
        blob_fetched(&cb).await? == fetched_before + 1,
        "B did not fetch the blob from A"
    );
    let on_b = BlobApiClient::list(&cb, None, None)
        .await
        .context("blob_list on B")?;
    ensure!(
        on_b.items
            .iter()
            .any(|s| s.id == expected && s.size == size as u64),
        "B does not list the blob after reading it"
    );
    println!("blob: node->node fetch {node_secs:.3} s");
    drop((ca, cb));
    within("node A shutdown", a.shutdown()).await?;
    within("node B shutdown", b.shutdown()).await?;

    // ---- the anchor: two bare endpoints, FsStore -> FsStore ----
    let raw_secs =
        support::raw_blob_fetch(bare_endpoint().await?, bare_endpoint().await?, &bytes).await?;
    println!("blob: raw iroh-blobs fetch {raw_secs:.3} s");
    Ok(BlobResult {
        size,
        node_secs,
        raw_secs,
    })
}

// ------------------------------------------------------------------------------------------
// 2a. DAG propagation across five nodes
// ------------------------------------------------------------------------------------------

struct DagResult {
    latencies: Vec<Duration>,
    put_rpc: Vec<Duration>,
    message_bytes: usize,
}

enum Seen {
    Blob {
        node: usize,
        blob: BlobId,
        at: Instant,
        gossip_bytes: usize,
    },
    Closed {
        node: usize,
        reason: String,
    },
}

/// Forwards every `BlobPublished` DAG node a node's subscription delivers, stamped on arrival.
async fn forward(
    node: usize,
    mut sub: jsonrpsee::core::client::Subscription<DagStreamItem>,
    tx: mpsc::UnboundedSender<Seen>,
) {
    while let Some(item) = sub.next().await {
        let at = Instant::now();
        let seen = match item {
            Ok(DagStreamItem::Node { node: dag, .. }) => {
                let DagPayload::BlobPublished { blob, .. } = dag.body.payload else {
                    continue;
                };
                // What the author broadcast: the gossip envelope around the encoded node.
                let gossip_bytes = postcard::to_allocvec(&*dag)
                    .and_then(|n| {
                        postcard::to_allocvec(&onvm::node::net::GossipMessage::DagNode(n))
                    })
                    .map(|v| v.len())
                    .unwrap_or(0);
                Seen::Blob {
                    node,
                    blob,
                    at,
                    gossip_bytes,
                }
            }
            Ok(DagStreamItem::Closed { reason, .. }) => Seen::Closed { node, reason },
            Err(e) => Seen::Closed {
                node,
                reason: format!("bad notification: {e}"),
            },
        };
        let closed = matches!(seen, Seen::Closed { .. });
        if tx.send(seen).is_err() || closed {
            return;
        }
    }
    let _ = tx.send(Seen::Closed {
        node,
        reason: "subscription ended".into(),
    });
}

async fn heads_equal(clients: &[WsClient]) -> Result<bool> {
    let mut states = Vec::new();
    for c in clients {
        let mut h = DagApiClient::heads(c).await.context("dag_heads")?;
        h.heads.sort();
        states.push((h.heads, h.count));
    }
    Ok(states.windows(2).all(|w| w[0] == w[1]))
}

/// One round: put a small blob on `target`, return (time until all nodes delivered its DAG
/// node, time until the put RPC returned, gossip message size).
async fn dag_round(
    clients: &[WsClient],
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    target: usize,
    payload: Vec<u8>,
) -> Result<(Duration, Duration, usize)> {
    let id = BlobId::of(&payload);
    let t0 = Instant::now();
    let stat = BlobApiClient::put(&clients[target], payload.into(), None)
        .await
        .with_context(|| format!("blob_put on node {}", target + 1))?;
    let put = t0.elapsed();
    ensure!(
        stat.id == id,
        "blob_put returned {} instead of {id}",
        stat.id
    );
    let deadline = tokio::time::Instant::from_std(t0 + WAIT);
    let mut arrived: [Option<Instant>; NODES] = [None; NODES];
    let mut size = 0;
    while arrived.iter().any(Option::is_none) {
        let seen = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| {
                let missing: Vec<usize> = (0..NODES)
                    .filter(|i| arrived[*i].is_none())
                    .map(|i| i + 1)
                    .collect();
                anyhow!("DAG node for {id} not delivered within {WAIT:?} on nodes {missing:?}")
            })?
            .context("all subscriptions ended")?;
        match seen {
            Seen::Blob {
                node,
                blob,
                at,
                gossip_bytes,
            } if blob == id => {
                arrived[node].get_or_insert(at);
                if node == target {
                    size = gossip_bytes;
                }
            }
            Seen::Blob { .. } => {}
            Seen::Closed { node, reason } => {
                bail!("dag_subscribe on node {} closed: {reason}", node + 1)
            }
        }
    }
    let last = arrived.iter().flatten().max().copied().unwrap_or(t0);
    Ok((last.saturating_duration_since(t0), put, size))
}

// The node's time includes, on the author: the RPC call, the blob store write, building and
// signing the DAG node, the redb commit, waking the gossip publisher (which reads the DAG log)
// and the broadcast; on every receiver: decoding, validate_alone (ed25519 verify), the parent
// check and storage (a redb commit) before its subscription can deliver; plus each node's
// WebSocket notification to this process. The raw anchor has none of that: it is iroh-gossip's
// own delivery only.
async fn bench_dag(rounds: usize, seed: u64) -> Result<DagResult> {
    let (dirs, nodes, clients) = support::joined_nodes(NODES).await?;
    // Warm-up: every node holds every announcement.
    let started = Instant::now();
    while !heads_equal(&clients).await? {
        ensure!(
            started.elapsed() < WAIT,
            "the five nodes' DAG heads did not converge within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "dag: {NODES} nodes converged after {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut forwarders = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let sub = DagApiClient::subscribe_nodes(c, None)
            .await
            .with_context(|| format!("dag_subscribe on node {}", i + 1))?;
        forwarders.push(tokio::spawn(forward(i, sub, tx.clone())));
    }
    drop(tx);

    let mut rng = seed | 1;
    let mut pick = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % NODES as u64) as usize
    };
    let mut latencies = Vec::with_capacity(rounds);
    let mut put_rpc = Vec::with_capacity(rounds);
    let mut sizes = Vec::with_capacity(rounds);
    for r in 0..WARMUP_ROUNDS + rounds {
        let target = pick();
        let payload = format!("bench_p2p round {r} seed {seed} node {}", target + 1).into_bytes();
        let (latency, put, size) = dag_round(&clients, &mut rx, target, payload)
            .await
            .with_context(|| format!("round {r}"))?;
        if r >= WARMUP_ROUNDS {
            latencies.push(latency);
            put_rpc.push(put);
            sizes.push(size);
        }
        tokio::time::sleep(ROUND_GAP).await;
    }
    sizes.sort_unstable();
    let message_bytes = sizes[sizes.len() / 2];

    for f in &forwarders {
        f.abort();
    }
    drop(clients);
    for n in nodes {
        within("node shutdown", n.shutdown()).await?;
    }
    drop(dirs);
    Ok(DagResult {
        latencies,
        put_rpc,
        message_bytes,
    })
}

// ------------------------------------------------------------------------------------------
// 2b. The anchor: bare iroh-gossip on five endpoints
// ------------------------------------------------------------------------------------------

struct RawResult {
    latencies: Vec<Duration>,
    poll_interval_us: f64,
    /// Data messages received beyond one per receiver per round (plumtree duplicates).
    duplicates: u64,
}

struct RawPeer {
    router: Router,
    gossip: Gossip,
    sender: GossipSender,
    /// Kept so the topic stays joined; never read (see `PollJob`). Its buffer is sized for
    /// every event of the run.
    _receiver: GossipReceiver,
}

/// Delivery detection for the raw anchor. This example cannot read a `GossipReceiver`: it is
/// a `futures` Stream and no Stream trait is reachable from this package's dependencies
/// (`n0-future` is not a dev-dependency). So a thread polls each receiver's
/// `msgs_data_recv` counter, which iroh-gossip bumps when a data message arrives, just before
/// it hands the message to subscribers.
struct PollJob {
    counters: Vec<Arc<iroh_gossip::metrics::Metrics>>,
    baselines: Vec<u64>,
    t0: Instant,
    reply: oneshot::Sender<Option<Vec<Duration>>>,
}

const POLL_SLEEP: Duration = Duration::from_micros(10);

fn poll_thread(jobs: std::sync::mpsc::Receiver<PollJob>) {
    while let Ok(job) = jobs.recv() {
        let mut got: Vec<Option<Duration>> = vec![None; job.counters.len()];
        let result = loop {
            let now = Instant::now();
            for (i, m) in job.counters.iter().enumerate() {
                if got[i].is_none() && m.msgs_data_recv.get() > job.baselines[i] {
                    got[i] = Some(now - job.t0);
                }
            }
            if got.iter().all(Option::is_some) {
                break Some(got.iter().flatten().copied().collect());
            }
            if now - job.t0 > WAIT {
                break None;
            }
            std::thread::sleep(POLL_SLEEP);
        };
        let _ = job.reply.send(result);
    }
}

async fn bench_raw_gossip(rounds: usize) -> Result<RawResult> {
    let mut endpoints = Vec::new();
    for _ in 0..NODES {
        endpoints.push(bare_endpoint().await?);
    }
    let addrs: Vec<_> = endpoints.iter().map(|e| e.addr()).collect();
    let topic = TopicId::from_bytes(*blake3::hash(b"onvm bench_p2p raw topic").as_bytes());
    let capacity = WARMUP_ROUNDS + rounds + 4096;
    let mut topics = Vec::new();
    let mut routers = Vec::new();
    let mut gossips = Vec::new();
    for (i, ep) in endpoints.into_iter().enumerate() {
        // Every endpoint can dial every other by id.
        let lookup = MemoryLookup::from_endpoint_info(addrs.iter().cloned());
        ep.address_lookup()
            .map_err(|e| anyhow!("address lookup: {e}"))?
            .add(lookup);
        let gossip = Gossip::builder()
            .max_message_size(MAX_GOSSIP_BYTES)
            .spawn(ep.clone());
        let router = Router::builder(ep)
            .accept(iroh_gossip::ALPN, gossip.clone())
            .spawn();
        let bootstrap: BTreeSet<_> = if i == 0 {
            BTreeSet::new()
        } else {
            [addrs[0].id].into_iter().collect()
        };
        let sub = gossip
            .subscribe_with_opts(
                topic,
                JoinOptions {
                    bootstrap,
                    subscription_capacity: capacity,
                },
            )
            .await
            .map_err(|e| anyhow!("subscribing endpoint {}: {e}", i + 1))?;
        topics.push(sub);
        routers.push(router);
        gossips.push(gossip);
    }
    let started = Instant::now();
    for (i, t) in topics.iter_mut().enumerate() {
        within("joining the gossip topic", t.joined())
            .await?
            .map_err(|e| anyhow!("endpoint {} joining: {e}", i + 1))?;
    }
    println!(
        "raw gossip: {NODES} endpoints joined after {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let mut peers = Vec::new();
    for ((t, router), gossip) in topics.into_iter().zip(routers).zip(gossips) {
        let (sender, receiver) = t.split();
        peers.push(RawPeer {
            router,
            gossip,
            sender,
            _receiver: receiver,
        });
    }

    // How fine the polling is on this machine (the sleep's real length).
    let t = Instant::now();
    for _ in 0..200 {
        std::thread::sleep(POLL_SLEEP);
    }
    let poll_interval_us = t.elapsed().as_secs_f64() * 1e6 / 200.0;

    let (jobs, job_rx) = std::sync::mpsc::channel::<PollJob>();
    let poller = std::thread::spawn(move || poll_thread(job_rx));
    let received_before: u64 = peers
        .iter()
        .map(|p| p.gossip.metrics().msgs_data_recv.get())
        .sum();
    let mut latencies = Vec::with_capacity(rounds);
    for r in 0..WARMUP_ROUNDS + rounds {
        let from = r % NODES;
        let mut message = vec![0xa5u8; RAW_MESSAGE_BYTES];
        message[..8].copy_from_slice(&(r as u64).to_le_bytes());
        let counters: Vec<_> = (0..NODES)
            .filter(|i| *i != from)
            .map(|i| peers[i].gossip.metrics().clone())
            .collect();
        let baselines: Vec<u64> = counters.iter().map(|m| m.msgs_data_recv.get()).collect();
        let (reply, answer) = oneshot::channel();
        let t0 = Instant::now();
        jobs.send(PollJob {
            counters,
            baselines,
            t0,
            reply,
        })
        .map_err(|_| anyhow!("the poll thread stopped"))?;
        peers[from]
            .sender
            .broadcast(message.into())
            .await
            .map_err(|e| anyhow!("broadcast from endpoint {}: {e}", from + 1))?;
        let arrivals = within("the poll thread's answer", answer)
            .await?
            .context("the poll thread stopped")?
            .with_context(|| {
                format!("round {r}: not every endpoint received the message within {WAIT:?}")
            })?;
        if r >= WARMUP_ROUNDS {
            latencies.push(arrivals.into_iter().max().unwrap_or_default());
        }
        tokio::time::sleep(ROUND_GAP).await;
    }
    let received: u64 = peers
        .iter()
        .map(|p| p.gossip.metrics().msgs_data_recv.get())
        .sum();
    let duplicates =
        received.saturating_sub(((WARMUP_ROUNDS + rounds) * (NODES - 1)) as u64 + received_before);
    drop(jobs);
    poller
        .join()
        .map_err(|_| anyhow!("the poll thread panicked"))?;
    for p in peers {
        drop(p.sender);
        within("gossip router shutdown", p.router.shutdown())
            .await?
            .map_err(|e| anyhow!("router shutdown: {e}"))?;
    }
    Ok(RawResult {
        latencies,
        poll_interval_us,
        duplicates,
    })
}
