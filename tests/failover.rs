//! Sequencer failover on real nodes: when a program's sequencer dies, the next committee member
//! takes over; a call the dead sequencer had already got signed is finished, not lost; a call
//! retried with the same request id is answered from its receipt, never applied twice.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::TestNode;
use jsonrpsee::core::ClientError;
use onvm::rpc_api::api::{
    DagApiClient, NodeApiClient, PeerApiClient, ProgramApiClient, ReceiptApiClient,
};
use onvm::rpc_api::committee::VerifiedCommittee;
use onvm::rpc_api::error::{self as codes, error_data};
use onvm::rpc_api::program::{ExecuteOptions, SignedReceipt, call_id};
use onvm::rpc_api::{Hash32, ProgramId};

async fn ticket(node: &TestNode) -> String {
    NodeApiClient::info(&node.client().await)
        .await
        .unwrap()
        .ticket
}

async fn converge(nodes: &[&TestNode]) {
    let started = Instant::now();
    loop {
        let mut states = Vec::new();
        for n in nodes {
            let mut h = DagApiClient::heads(&n.client().await).await.unwrap();
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

fn put(key: &str) -> onvm::rpc_api::types::Base64Bytes {
    serde_json::to_vec(&serde_json::json!({"op": "put", "key": key, "data_base64": "dg=="}))
        .unwrap()
        .into()
}

fn with_request_id(id: &str) -> Option<ExecuteOptions> {
    Some(ExecuteOptions {
        request_id: Some(id.into()),
        ..Default::default()
    })
}

/// `n` nodes joined to the first, with the kvstore deployed on the first with a committee of
/// `k` (threshold ⌊2k/3⌋+1).
async fn network(n: usize, k: u32, first: &[&str]) -> (Vec<TestNode>, ProgramId) {
    let mut nodes = vec![TestNode::start_with(first).await];
    for _ in 1..n {
        nodes.push(TestNode::start().await);
    }
    let t = ticket(&nodes[0]).await;
    for node in &nodes[1..] {
        PeerApiClient::connect(&node.client().await, t.clone())
            .await
            .unwrap();
    }
    let all: Vec<&TestNode> = nodes.iter().collect();
    converge(&all).await;
    let p = common::deploy_kvstore(&nodes[0].client().await, Some(k)).await;
    converge(&all).await;
    (nodes, p)
}

/// Every receipt of `p` on `node`, oldest first.
async fn all_receipts(node: &TestNode, p: ProgramId) -> Vec<SignedReceipt> {
    let mut page = ReceiptApiClient::list(&node.client().await, p, None, Some(1000))
        .await
        .unwrap()
        .items;
    page.reverse();
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_signed_before_the_sequencer_died_is_finished_once_by_the_next_member() {
    // A collects the committee's signatures for a call and then drops it, as if it crashed
    // between attestation and commit: B, C and D hold votes for a receipt nobody committed.
    let (mut nodes, p) = network(4, 4, &["committee.debug_abandon_after_attest=true"]).await;
    let a = nodes.remove(0);
    let (b, c, d) = (&nodes[0], &nodes[1], &nodes[2]);
    let lost =
        ProgramApiClient::execute(&a.client().await, p, put("k1"), with_request_id("r1")).await;
    assert!(lost.is_err(), "the hook drops the call: {lost:?}");
    let home = a.node().endpoint_id();
    a.stop().await;

    // The client retries r1 through B. B cannot reach A, so the next member takes over; it
    // first finishes the proposal its predecessor left signed, then finds r1 committed.
    let started = Instant::now();
    let retried = ProgramApiClient::execute(&b.client().await, p, put("k1"), with_request_id("r1"))
        .await
        .unwrap();
    println!("retry after the sequencer died: {:?}", started.elapsed());
    let receipt = retried.receipt.unwrap();
    assert_eq!(receipt.receipt.height, 0);
    assert_eq!(receipt.receipt.call_id, call_id(&p, "r1"));
    assert_eq!(
        receipt.receipt.executor.to_string(),
        home,
        "the dead sequencer's own proposal was committed, not a new execution"
    );
    let committee = ProgramApiClient::committee(&b.client().await, p)
        .await
        .unwrap();
    VerifiedCommittee::new(committee)
        .unwrap()
        .verify(&receipt.aggregated(), "onvm-devnet")
        .unwrap();

    // Asking again, anywhere, gives the same receipt; a different call under r1 is refused.
    let again = ProgramApiClient::execute(&c.client().await, p, put("k1"), with_request_id("r1"))
        .await
        .unwrap();
    assert_eq!(again.receipt.unwrap().id, receipt.id);
    match ProgramApiClient::execute(&d.client().await, p, put("other"), with_request_id("r1")).await
    {
        Err(ClientError::Call(e)) => {
            assert_eq!(e.code(), codes::CONFLICT);
            assert_eq!(error_data(&e).unwrap().kind, "request_id_conflict");
        }
        other => panic!("expected request_id_conflict, got {other:?}"),
    }
    let next = ProgramApiClient::execute(&c.client().await, p, put("k2"), with_request_id("r2"))
        .await
        .unwrap();
    assert_eq!(next.receipt.unwrap().receipt.height, 1);

    converge(&[b, c, d]).await;
    let mut roots = Vec::new();
    for n in [b, c, d] {
        let info = ProgramApiClient::info(&n.client().await, p).await.unwrap();
        roots.push((info.height, info.state_root));
    }
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");
    assert_eq!(roots[0].0, 2, "r1 applied once, r2 once");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sequencer_mid_stream_loses_nothing_and_applies_nothing_twice() {
    const STREAMS: usize = 3;
    const CALLS: usize = 12;
    let (mut nodes, p) = network(5, 4, &[]).await;
    let a = nodes.remove(0);
    // Three clients each send a stream of puts through a different non-home node, with the
    // accepting node choosing each call's request id.
    let mut streams = tokio::task::JoinSet::new();
    for (s, node) in nodes.iter().take(STREAMS).enumerate() {
        let url = node.url();
        streams.spawn(async move {
            let client = common::ws_client(&url).await;
            let mut receipts = Vec::new();
            for i in 0..CALLS {
                let key = format!("s{s}-{i}");
                let r = ProgramApiClient::execute(&client, p, put(&key), None)
                    .await
                    .unwrap_or_else(|e| panic!("call {key} failed: {e}"));
                receipts.push(r.receipt.unwrap());
            }
            receipts
        });
    }
    // Stop the sequencer once some calls are through and others are in flight.
    let started = Instant::now();
    loop {
        let height = ProgramApiClient::info(&nodes[3].client().await, p)
            .await
            .unwrap()
            .height;
        if height >= 6 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let home = a.node().endpoint_id();
    a.stop().await;
    let stopped_at = Instant::now();
    let mut answered = Vec::new();
    while let Some(r) = streams.join_next().await {
        answered.extend(r.unwrap());
    }
    println!(
        "all {} calls answered {:?} after the sequencer stopped",
        answered.len(),
        stopped_at.elapsed()
    );
    assert_eq!(answered.len(), STREAMS * CALLS);

    let survivors: Vec<&TestNode> = nodes.iter().collect();
    converge(&survivors).await;
    let committed = all_receipts(&nodes[0], p).await;
    // Every call committed exactly once, at consecutive heights, and its answer is its receipt.
    assert_eq!(
        committed.len(),
        STREAMS * CALLS,
        "nothing lost, nothing twice"
    );
    let heights: Vec<u64> = committed.iter().map(|r| r.receipt.height).collect();
    assert_eq!(heights, (0..(STREAMS * CALLS) as u64).collect::<Vec<_>>());
    let call_ids: HashSet<Hash32> = committed.iter().map(|r| r.receipt.call_id).collect();
    assert_eq!(call_ids.len(), committed.len(), "a call id committed twice");
    let ids: HashSet<_> = committed.iter().map(|r| r.id).collect();
    for r in &answered {
        assert!(
            ids.contains(&r.id),
            "answered receipt {} is not committed",
            r.id
        );
    }
    let after: Vec<_> = committed
        .iter()
        .filter(|r| r.receipt.executor.to_string() != home)
        .collect();
    assert!(!after.is_empty(), "another member sequenced after the stop");
    let mut roots = Vec::new();
    for n in &survivors {
        let info = ProgramApiClient::info(&n.client().await, p).await.unwrap();
        roots.push((info.height, info.state_root));
    }
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");
    for n in nodes {
        n.stop().await;
    }
}
