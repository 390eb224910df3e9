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
    let id = common::upload_chunked(&ca, &data, Some("application/x-test")).await;
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

fn kv(op: serde_json::Value) -> onvm::rpc_api::types::Base64Bytes {
    serde_json::to_vec(&op).unwrap().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_anywhere_commit_once_on_the_home_and_every_node_reaches_the_same_state() {
    use base64::Engine;
    use onvm::rpc_api::api::{JobApiClient, ProgramApiClient, ReceiptApiClient, StateApiClient};
    use onvm::rpc_api::jobs::{JobStatus, SubmitJob};
    use onvm::rpc_api::program::{ExecuteOptions, verify_receipt};
    use onvm::rpc_api::smt::verify_proof;
    use serde_json::json;
    let b64 = base64::engine::general_purpose::STANDARD;
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let mut c = TestNode::start().await;
    let (ca, cb, cc) = (a.client().await, b.client().await, c.client().await);
    PeerApiClient::connect(&cb, ticket(&a).await).await.unwrap();
    PeerApiClient::connect(&cc, ticket(&a).await).await.unwrap();
    // A committee of one: this test is about replication from the home alone (committees,
    // which need their members up, are tests/attest.rs).
    let p = common::deploy_kvstore(&ca, Some(1)).await;
    converge(&[&a, &b, &c], Duration::from_secs(30)).await;
    assert_eq!(
        ProgramApiClient::info(&cb, p).await.unwrap().manifest,
        ProgramApiClient::info(&ca, p).await.unwrap().manifest
    );

    // Writes submitted on B and C are forwarded to A, committed once each, and come back with
    // receipts signed by A. One value is big enough that its writes travel as a blob.
    let big = pseudo_random_bytes(40_000, 7);
    let on_b = ProgramApiClient::execute(
        &cb,
        p,
        kv(json!({"op": "put", "key": "from-b", "data_base64": "Yg=="})),
        None,
    )
    .await
    .unwrap();
    let on_c = ProgramApiClient::execute(
        &cc,
        p,
        kv(json!({"op": "put", "key": "big", "data_base64": b64.encode(&big)})),
        None,
    )
    .await
    .unwrap();
    let (rb, rc) = (on_b.receipt.unwrap(), on_c.receipt.unwrap());
    assert_eq!((rb.receipt.height, rc.receipt.height), (0, 1));
    assert_eq!(rb.receipt.executor.to_string(), a.node().endpoint_id());
    // The caller's node already applied its call when the answer came back.
    assert_eq!(
        StateApiClient::get(&cc, p, b"d/big".to_vec().into())
            .await
            .unwrap()
            .value_base64
            .unwrap()
            .0,
        big
    );

    // A job submitted on C runs on A; its status and output answer on every node.
    let job = SubmitJob {
        program_id: p,
        request_id: "job-on-c".into(),
        input_base64: Some(kv(
            json!({"op": "put", "key": "job", "data_base64": "ag=="}),
        )),
        input_blob: None,
        entrypoint: None,
        max_retries: None,
        timeout_ms: None,
        fuel: None,
        metadata: Some(json!({"submitted_on": "c"})),
        signed: None,
    };
    let submitted = JobApiClient::submit(&cc, job.clone()).await.unwrap();
    assert!(submitted.created);
    let job_id = submitted.job.job_id;
    // The same request id again, on another node, is the same job.
    let again = JobApiClient::submit(&cb, job).await.unwrap();
    assert_eq!((again.job.job_id, again.created), (job_id, false));
    let deadline = Instant::now() + Duration::from_secs(30);
    while JobApiClient::status(&ca, job_id).await.unwrap().status != JobStatus::Completed {
        assert!(Instant::now() < deadline, "the job never completed on A");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    converge(&[&a, &b, &c], Duration::from_secs(30)).await;
    for client in [&ca, &cb, &cc] {
        let status = JobApiClient::status(client, job_id).await.unwrap();
        assert_eq!(status.status, JobStatus::Completed);
        assert_eq!(status.metadata, Some(json!({"submitted_on": "c"})));
        let out = JobApiClient::output(client, job_id).await.unwrap();
        let out: serde_json::Value = serde_json::from_slice(&out.output_base64.unwrap().0).unwrap();
        assert_eq!(out["ok"], true);
    }

    // Every node holds the same catalog entry, root, receipts and state, and proofs verify.
    let home = ProgramApiClient::info(&ca, p).await.unwrap();
    assert_eq!(home.height, 3, "two calls and one job, each committed once");
    for client in [&cb, &cc] {
        let info = ProgramApiClient::info(client, p).await.unwrap();
        assert_eq!(
            (info.height, info.state_root),
            (home.height, home.state_root)
        );
        let receipts = ReceiptApiClient::list(client, p, None, None).await.unwrap();
        assert_eq!(receipts.items.len(), 3);
        for r in &receipts.items {
            verify_receipt(r, Some("onvm-devnet"), None).unwrap();
        }
        let proof = StateApiClient::proof(client, p, b"d/from-b".to_vec().into())
            .await
            .unwrap();
        assert_eq!(proof.state_root, home.state_root);
        verify_proof(
            &proof.state_root,
            b"d/from-b",
            proof.value_base64.as_ref().map(|v| v.0.as_slice()),
            &proof.proof,
        )
        .unwrap();
        // Read-only calls run on the replica itself.
        let read = ProgramApiClient::execute(
            client,
            p,
            kv(json!({"op": "stats"})),
            Some(ExecuteOptions {
                read_only: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        let stats: serde_json::Value = serde_json::from_slice(&read.output_base64.0).unwrap();
        assert_eq!(stats["count"], 3);
        assert_eq!(read.state_root_in, home.state_root);
    }
    assert_eq!(
        ReceiptApiClient::get(&cb, rc.id).await.unwrap(),
        ReceiptApiClient::get(&ca, rc.id).await.unwrap()
    );

    // C restarts while A keeps committing; it comes back and applies what it missed.
    c.restart().await;
    ProgramApiClient::execute(&ca, p, kv(json!({"op": "delete", "key": "from-b"})), None)
        .await
        .unwrap();
    let cc = c.client().await;
    PeerApiClient::connect(&cc, ticket(&a).await).await.unwrap();
    converge(&[&a, &b, &c], Duration::from_secs(30)).await;
    let home = ProgramApiClient::info(&ca, p).await.unwrap();
    let on_c = ProgramApiClient::info(&cc, p).await.unwrap();
    assert_eq!((on_c.height, on_c.state_root), (4, home.state_root));
    assert!(
        StateApiClient::get(&cc, p, b"d/from-b".to_vec().into())
            .await
            .unwrap()
            .value_base64
            .is_none()
    );
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_for_an_unreachable_home_fails_clearly() {
    use onvm::rpc_api::api::ProgramApiClient;
    use onvm::rpc_api::error::error_data;
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let cb = b.client().await;
    PeerApiClient::connect(&cb, ticket(&a).await).await.unwrap();
    // A committee of one: no member can take over (tests/attest.rs covers failover).
    let p = common::deploy_kvstore(&a.client().await, Some(1)).await;
    converge(&[&a, &b], Duration::from_secs(30)).await;
    let home = a.node().endpoint_id();
    a.stop().await;
    let started = Instant::now();
    let err = call_error(
        ProgramApiClient::execute(&cb, p, kv(serde_json::json!({"op": "stats"})), None).await,
    );
    assert_eq!(err.code(), codes::UNAVAILABLE);
    let data = error_data(&err).unwrap();
    assert_eq!(data.kind, "home_unreachable");
    assert_eq!(data.detail["home"], home);
    println!(
        "an unreachable home was reported after {:?}",
        started.elapsed()
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_mode_full_copies_every_announced_blob_and_metadata_mode_waits_for_a_read() {
    let a = TestNode::start().await;
    let full = TestNode::start_with(&["blobs.replicate=full"]).await;
    let lazy = TestNode::start().await;
    let ca = a.client().await;
    // One blob before the full node joins (history), two after.
    let early = BlobApiClient::put(&ca, pseudo_random_bytes(300_000, 1).into(), None)
        .await
        .unwrap()
        .id;
    for n in [&full, &lazy] {
        PeerApiClient::connect(&n.client().await, ticket(&a).await)
            .await
            .unwrap();
    }
    let mut ids = vec![early];
    for seed in 2..4 {
        ids.push(
            BlobApiClient::put(&ca, pseudo_random_bytes(200_000, seed).into(), None)
                .await
                .unwrap()
                .id,
        );
    }
    converge(&[&a, &full, &lazy], Duration::from_secs(30)).await;
    let listed = |node: &TestNode| {
        let url = node.url();
        async move {
            let c = common::ws_client(&url).await;
            let page = BlobApiClient::list(&c, None, None).await.unwrap();
            page.items
                .into_iter()
                .map(|b| b.id)
                .collect::<Vec<BlobId>>()
        }
    };
    let started = Instant::now();
    loop {
        let have = listed(&full).await;
        if ids.iter().all(|id| have.contains(id)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the full node never copied every blob: has {have:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The metadata node holds none of them until one is read.
    let lazy_has = listed(&lazy).await;
    assert!(ids.iter().all(|id| !lazy_has.contains(id)), "{lazy_has:?}");
    let cl = lazy.client().await;
    BlobApiClient::stat(&cl, ids[1]).await.unwrap();
    assert!(listed(&lazy).await.contains(&ids[1]));
    for n in [a, full, lazy] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mdns_nodes_on_one_lan_find_each_other_without_tickets() {
    let a = TestNode::start_with(&["net.mdns=true"]).await;
    let b = TestNode::start_with(&["net.mdns=true"]).await;
    let (ca, cb) = (a.client().await, b.client().await);
    let started = Instant::now();
    loop {
        let on_a = PeerApiClient::list(&ca).await.unwrap();
        let on_b = PeerApiClient::list(&cb).await.unwrap();
        if on_a.iter().any(|p| p.endpoint_id == b.node().endpoint_id())
            && on_b.iter().any(|p| p.endpoint_id == a.node().endpoint_id())
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "mDNS did not join the nodes: {on_a:?} {on_b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("mDNS joined two nodes in {:?}", started.elapsed());
    let id = BlobApiClient::put(&ca, b"found on the LAN".to_vec().into(), None)
        .await
        .unwrap()
        .id;
    let got = BlobApiClient::get(&cb, id, None, None).await.unwrap();
    assert_eq!(got.data_base64.0, b"found on the LAN");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_input_blob_is_on_the_submitting_node_runs_on_the_home() {
    use onvm::rpc_api::api::JobApiClient;
    use onvm::rpc_api::jobs::{JobStatus, SubmitJob};
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let cb = b.client().await;
    PeerApiClient::connect(&cb, ticket(&a).await).await.unwrap();
    let p = common::deploy_kvstore(&a.client().await, None).await;
    converge(&[&a, &b], Duration::from_secs(30)).await;
    // The input exists only on B when the job is submitted there.
    let input = BlobApiClient::put(
        &cb,
        kv(serde_json::json!({"op": "put", "key": "from-blob", "data_base64": "eA=="})),
        None,
    )
    .await
    .unwrap()
    .id;
    let job = SubmitJob {
        program_id: p,
        request_id: "input-on-b".into(),
        input_base64: None,
        input_blob: Some(input),
        entrypoint: None,
        max_retries: None,
        timeout_ms: None,
        fuel: None,
        metadata: None,
        signed: None,
    };
    let job_id = JobApiClient::submit(&cb, job).await.unwrap().job.job_id;
    let started = Instant::now();
    loop {
        let status = JobApiClient::status(&cb, job_id).await.map(|j| j.status);
        if status.as_ref().is_ok_and(|s| *s == JobStatus::Completed) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "job did not complete: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = JobApiClient::output(&cb, job_id).await.unwrap();
    let out: serde_json::Value = serde_json::from_slice(&out.output_base64.unwrap().0).unwrap();
    assert_eq!(out["created"], true);
    a.stop().await;
    b.stop().await;
}
