//! Real iroh endpoints on 127.0.0.1 (offline: no relays, no external lookup): joining by
//! ticket, peer discovery through hellos, blob replication on first read, bad peers.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, pseudo_random_bytes};
use jsonrpsee::core::ClientError;
use onvm::rpc_api::BlobId;
use onvm::rpc_api::api::{BlobApiClient, NodeApiClient, PeerApiClient};
use onvm::rpc_api::error as codes;

fn call_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> jsonrpsee::types::ErrorObjectOwned {
    match r {
        Err(ClientError::Call(e)) => e,
        other => panic!("expected a call error, got {other:?}"),
    }
}

async fn ticket(node: &TestNode) -> String {
    NodeApiClient::info(&node.client().await)
        .await
        .unwrap()
        .ticket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_by_ticket_and_a_blob_on_a_is_readable_on_c() {
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    let (ca, cb, cc) = (a.client().await, b.client().await, c.client().await);
    // B joins A; C joins B only, and meets A through B's hello.
    let joined = PeerApiClient::connect(&cb, ticket(&a).await).await.unwrap();
    assert_eq!(joined.endpoint_id, a.node().endpoint_id());
    PeerApiClient::connect(&cc, ticket(&b).await).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let peers = PeerApiClient::list(&cc).await.unwrap();
        if peers
            .iter()
            .any(|p| p.endpoint_id == a.node().endpoint_id())
        {
            break;
        }
        assert!(Instant::now() < deadline, "C never met A: {peers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A learned B from B's hello; the links are direct on loopback with a measured latency.
    let a_peers = PeerApiClient::list(&ca).await.unwrap();
    let b_on_a = a_peers
        .iter()
        .find(|p| p.endpoint_id == b.node().endpoint_id())
        .expect("A knows B");
    assert_eq!(b_on_a.network_id, "onvm-devnet");
    let a_on_b = PeerApiClient::list(&cb)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.endpoint_id == a.node().endpoint_id())
        .unwrap();
    assert_eq!(a_on_b.connection, "direct");
    assert!(a_on_b.latency_ms.is_some() && a_on_b.last_seen_ms > 0);

    // A blob uploaded on A is readable on C (fetched BAO-verified from A on first read).
    let data = pseudo_random_bytes(3 * 1024 * 1024 + 7, 55);
    let status =
        BlobApiClient::upload_begin(&ca, data.len() as u64, Some("application/x-test".into()))
            .await
            .unwrap();
    let mut offset = 0u64;
    for piece in data.chunks(1024 * 1024) {
        BlobApiClient::upload_append(&ca, status.upload_id.clone(), offset, piece.to_vec().into())
            .await
            .unwrap();
        offset += piece.len() as u64;
    }
    let id = BlobApiClient::upload_finish(&ca, status.upload_id, None)
        .await
        .unwrap()
        .id;
    let stat = BlobApiClient::stat(&cc, id).await.unwrap();
    assert_eq!(stat.size, data.len() as u64);
    assert_eq!(stat.mime.as_deref(), Some("application/x-test"));
    let mut back = Vec::new();
    loop {
        let chunk = BlobApiClient::get(&cc, id, Some(back.len() as u64), Some(1024 * 1024))
            .await
            .unwrap();
        back.extend_from_slice(&chunk.data_base64.0);
        if chunk.eof {
            break;
        }
    }
    assert!(back == data, "bytes differ after replication");
    // C now holds it itself, and serves it on.
    assert_eq!(
        BlobApiClient::list(&cc, None, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let m = NodeApiClient::metrics(&cc).await.unwrap();
    assert_eq!(m.counters["blobs_fetched"], 1);
    // A blob no one has is still a clean not-found.
    let err = call_error(BlobApiClient::stat(&cc, BlobId::of(b"nobody has this")).await);
    assert_eq!(err.code(), codes::NOT_FOUND);
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tickets_other_networks_and_self_dials_are_refused() {
    let a = TestNode::start().await;
    let other = TestNode::start_with(&["node.network_id=another-net"]).await;
    let ca = a.client().await;
    let err = call_error(PeerApiClient::connect(&ca, "not a ticket".into()).await);
    assert_eq!(err.code(), codes::INVALID_PARAMS);
    let err = call_error(PeerApiClient::connect(&ca, ticket(&a).await).await);
    assert_eq!(err.code(), codes::INVALID_PARAMS);
    assert!(err.message().contains("own"), "{}", err.message());
    let err = call_error(PeerApiClient::connect(&ca, ticket(&other).await).await);
    assert!(
        err.message().contains("another-net") || err.message().contains("onvm-devnet"),
        "{}",
        err.message()
    );
    assert!(
        PeerApiClient::list(&ca).await.unwrap().is_empty(),
        "no peer from another network"
    );
    a.stop().await;
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_peer_messages_are_dropped_without_harm() {
    use iroh::endpoint::presets;
    let a = TestNode::start().await;
    let addr: iroh_tickets::endpoint::EndpointTicket = ticket(&a).await.parse().unwrap();
    let ep = iroh::Endpoint::builder(presets::Minimal)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap();
    let conn = ep
        .connect(addr.endpoint_addr().clone(), onvm::node::net::PEER_ALPN)
        .await
        .unwrap();
    // 1 MiB on a protocol whose messages are at most 64 KiB: the stream is reset.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(&vec![7u8; 1024 * 1024]).await;
    let _ = send.finish();
    assert!(
        recv.read_to_end(1024).await.is_err(),
        "no answer to an oversized message"
    );
    // Garbage that does not decode: reset too.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"\xff\xff\xff garbage").await.unwrap();
    send.finish().unwrap();
    assert!(recv.read_to_end(1024).await.is_err());
    // The node still answers real requests, on the same connection and over RPC.
    let ping = postcard::to_allocvec(&onvm::node::net::PeerRequest::Ping { nonce: 9 }).unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&ping).await.unwrap();
    send.finish().unwrap();
    let reply: onvm::node::net::PeerResponse =
        postcard::from_bytes(&recv.read_to_end(1024).await.unwrap()).unwrap();
    assert!(matches!(
        reply,
        onvm::node::net::PeerResponse::Pong { nonce: 9 }
    ));
    assert!(
        NodeApiClient::health(&a.client().await)
            .await
            .unwrap()
            .ready
    );
    ep.close().await;
    a.stop().await;
}

async fn dag_state(node: &TestNode) -> (Vec<onvm::rpc_api::Hash32>, u64) {
    use onvm::rpc_api::api::DagApiClient;
    let mut h = DagApiClient::heads(&node.client().await).await.unwrap();
    h.heads.sort();
    (h.heads, h.count)
}

/// Waits until every node reports the same DAG heads; returns how long that took.
async fn converge(nodes: &[&TestNode], limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut states = Vec::new();
        for n in nodes {
            states.push(dag_state(n).await);
        }
        if states.windows(2).all(|w| w[0] == w[1]) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "no convergence within {limit:?}: {:?}",
            states.iter().map(|s| s.1).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_nodes_reach_every_node_late_joiners_and_restarted_nodes_catch_up() {
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let mut c = TestNode::start().await;
    PeerApiClient::connect(&b.client().await, ticket(&a).await)
        .await
        .unwrap();
    PeerApiClient::connect(&c.client().await, ticket(&a).await)
        .await
        .unwrap();
    for (i, n) in [&a, &b, &c].iter().enumerate() {
        BlobApiClient::put(
            &n.client().await,
            format!("op on node {i}").into_bytes().into(),
            None,
        )
        .await
        .unwrap();
    }
    converge(&[&a, &b, &c], Duration::from_secs(30)).await;
    let (_, count) = dag_state(&a).await;
    assert_eq!(count, 6, "3 announcements + 3 blobs");

    // C goes down, the others keep working, C comes back and catches up.
    c.restart().await;
    PeerApiClient::connect(&c.client().await, ticket(&a).await)
        .await
        .unwrap();
    BlobApiClient::put(
        &a.client().await,
        b"while C restarted".to_vec().into(),
        None,
    )
    .await
    .unwrap();
    converge(&[&a, &b, &c], Duration::from_secs(30)).await;

    // A fourth node that joins late gets the whole history.
    let d = TestNode::start().await;
    PeerApiClient::connect(&d.client().await, ticket(&b).await)
        .await
        .unwrap();
    converge(&[&a, &b, &c, &d], Duration::from_secs(30)).await;
    assert_eq!(dag_state(&d).await.1, 8);
    for n in [a, b, c, d] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_converge_after_a_thousand_operations() {
    let seed: u64 = std::env::var("ONVM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xc0ffee);
    println!("seed {seed} (re-run with ONVM_TEST_SEED={seed})");
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(TestNode::start().await);
    }
    let first = ticket(&nodes[0]).await;
    for n in &nodes[1..] {
        PeerApiClient::connect(&n.client().await, first.clone())
            .await
            .unwrap();
    }
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(n.client().await);
    }
    let mut rng = seed | 1;
    let started = Instant::now();
    for i in 0..1000u32 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let target = &clients[(rng % 5) as usize];
        BlobApiClient::put(
            target,
            format!("operation {i} seed {seed}").into_bytes().into(),
            None,
        )
        .await
        .unwrap();
    }
    let issued = started.elapsed();
    let refs: Vec<&TestNode> = nodes.iter().collect();
    let took = converge(&refs, Duration::from_secs(120)).await;
    let (_, count) = dag_state(&nodes[0]).await;
    assert_eq!(count, 1005, "5 announcements + 1000 operations");
    println!(
        "1000 operations issued in {issued:?}; all 5 nodes had the same heads {took:?} after the last one"
    );
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_and_receipts_replicate_and_calls_stay_on_the_home_node() {
    use onvm::rpc_api::api::{JobApiClient, ProgramApiClient, ReceiptApiClient, StateApiClient};
    use onvm::rpc_api::error::error_data;
    use onvm::rpc_api::jobs::SubmitJob;
    use onvm::rpc_api::program::{DeployRequest, verify_receipt};
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let (ca, cb) = (a.client().await, b.client().await);
    PeerApiClient::connect(&cb, ticket(&a).await).await.unwrap();
    let p = ProgramApiClient::deploy(
        &ca,
        DeployRequest {
            wasm_base64: Some(common::program_wasm("kvstore").into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .program_id;
    let put = ProgramApiClient::execute(
        &ca,
        p,
        br#"{"op":"put","key":"k","data_base64":"dg=="}"#.to_vec().into(),
        None,
    )
    .await
    .unwrap();
    let receipt = put.receipt.unwrap();
    converge(&[&a, &b], Duration::from_secs(30)).await;
    // B's catalog has the program, at A's latest root and height, and A's receipt verifies on B.
    let on_b = ProgramApiClient::info(&cb, p).await.unwrap();
    assert_eq!(
        on_b.manifest,
        ProgramApiClient::info(&ca, p).await.unwrap().manifest
    );
    assert_eq!(
        (on_b.height, on_b.state_root),
        (1, receipt.receipt.state_root_out)
    );
    let got = ReceiptApiClient::get(&cb, receipt.id).await.unwrap();
    verify_receipt(&got, Some("onvm-devnet"), None).unwrap();
    assert_eq!(
        ReceiptApiClient::list(&cb, p, None, None)
            .await
            .unwrap()
            .items,
        vec![got]
    );
    // Calls, jobs and state reads for A's program are refused on B with where to go instead.
    let err = call_error(
        ProgramApiClient::execute(&cb, p, br#"{"op":"stats"}"#.to_vec().into(), None).await,
    );
    assert_eq!(err.code(), codes::UNAVAILABLE);
    let data = error_data(&err).unwrap();
    assert_eq!(data.kind, "not_home");
    assert_eq!(data.detail["home"], a.node().endpoint_id());
    let err = call_error(StateApiClient::get(&cb, p, b"d/k".to_vec().into()).await);
    assert_eq!(error_data(&err).unwrap().kind, "not_home");
    let job = SubmitJob {
        program_id: p,
        request_id: "elsewhere".into(),
        input_base64: Some(br#"{"op":"stats"}"#.to_vec().into()),
        input_blob: None,
        entrypoint: None,
        max_retries: None,
        timeout_ms: None,
        fuel: None,
        metadata: None,
    };
    let err = call_error(JobApiClient::submit(&cb, job).await);
    assert_eq!(error_data(&err).unwrap().kind, "not_home");
    a.stop().await;
    b.stop().await;
}
