//! Every local operation is recorded as a signed DAG node in the same transaction as the
//! operation; the log validates, orders deterministically and survives restarts.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{TestNode, example, program_wasm};
use onvm::rpc_api::Hash32;
use onvm::rpc_api::api::{BlobApiClient, DagApiClient, JobApiClient, ProgramApiClient};
use onvm::rpc_api::dag::{DagNode, DagPayload, order};
use onvm::rpc_api::jobs::{JobStatus, SubmitJob};
use onvm::rpc_api::program::DeployRequest;

async fn all_nodes(client: &impl DagApiClient) -> BTreeMap<Hash32, DagNode> {
    let heads = DagApiClient::heads(client).await.unwrap();
    let mut seen = BTreeMap::new();
    let mut stack = heads.heads.clone();
    while let Some(id) = stack.pop() {
        if seen.contains_key(&id) {
            continue;
        }
        let node = DagApiClient::get(client, id).await.unwrap();
        stack.extend(node.body.parents.iter().copied());
        seen.insert(id, node);
    }
    assert_eq!(
        seen.len() as u64,
        heads.count,
        "every node is reachable from the heads"
    );
    seen
}

#[tokio::test]
async fn operations_become_signed_dag_nodes_that_validate_and_order() {
    let mut node = TestNode::start().await;
    let client = node.client().await;
    BlobApiClient::put(&client, b"a published blob".to_vec().into(), None)
        .await
        .unwrap();
    let p = ProgramApiClient::deploy(
        &client,
        DeployRequest {
            wasm_base64: Some(program_wasm("job_test").into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .program_id;
    ProgramApiClient::execute(&client, p, example("job-test", "count.json").into(), None)
        .await
        .unwrap();
    let job = JobApiClient::submit(
        &client,
        SubmitJob {
            program_id: p,
            request_id: "dag-1".into(),
            input_base64: Some(example("job-test", "compute.json").into()),
            input_blob: None,
            entrypoint: None,
            max_retries: Some(0),
            timeout_ms: None,
            fuel: None,
            metadata: None,
            signed: None,
        },
    )
    .await
    .unwrap()
    .job
    .job_id;
    let mut status = JobStatus::Pending;
    for _ in 0..1000 {
        status = JobApiClient::status(&client, job).await.unwrap().status;
        if status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, JobStatus::Completed);

    let nodes = all_nodes(&client).await;
    let me = Hash32(
        hex::decode(node.node().endpoint_id())
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let ids: HashSet<Hash32> = nodes.keys().copied().collect();
    let mut kinds = Vec::new();
    for (id, n) in &nodes {
        assert_eq!(n.validate("onvm-devnet", |p| ids.contains(p)).unwrap(), *id);
        assert_eq!(n.body.author, me);
        kinds.push(match &n.body.payload {
            DagPayload::NodeAnnounce { .. } => "announce",
            DagPayload::BlobPublished { .. } => "blob",
            DagPayload::ProgramDeployed { .. } => "deploy",
            DagPayload::ExecutionCommitted { .. } => "execution",
            DagPayload::JobSubmitted { .. } => "job_submitted",
            DagPayload::JobStateChanged { .. } => "job_changed",
        });
    }
    kinds.sort();
    // announce, the put blob, the wasm blob, the input blob, the output blob, deploy,
    // two executions (the call and the job), job submitted, job completed.
    for kind in [
        "announce",
        "blob",
        "deploy",
        "execution",
        "job_submitted",
        "job_changed",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == "execution").count(), 2);
    let graph: BTreeMap<Hash32, Vec<Hash32>> = nodes
        .iter()
        .map(|(id, n)| (*id, n.body.parents.clone()))
        .collect();
    let ordered = order(&graph);
    assert_eq!(ordered.len(), nodes.len());
    assert!(
        matches!(
            nodes[&ordered[0]].body.payload,
            DagPayload::NodeAnnounce { .. }
        ),
        "the announce comes first"
    );

    // A forged node (payload changed after signing) is rejected by the pure validator.
    let mut forged = nodes.values().next().unwrap().clone();
    forged.body.timestamp_ms += 1;
    assert!(forged.validate("onvm-devnet", |_| true).is_err());

    // The log survives a restart and keeps growing from its heads.
    let before = DagApiClient::heads(&client).await.unwrap();
    drop(client);
    node.restart().await;
    let client = node.client().await;
    assert_eq!(DagApiClient::heads(&client).await.unwrap(), before);
    BlobApiClient::put(&client, b"after restart".to_vec().into(), None)
        .await
        .unwrap();
    let after = DagApiClient::heads(&client).await.unwrap();
    assert_eq!(after.count, before.count + 1);
    let newest = DagApiClient::get(&client, after.heads[0]).await.unwrap();
    assert_eq!(newest.body.parents, before.heads);
    node.stop().await;
}

async fn next(
    s: &mut jsonrpsee::core::client::Subscription<onvm::rpc_api::dag::DagStreamItem>,
) -> (u64, Hash32, DagNode) {
    use onvm::rpc_api::dag::DagStreamItem;
    match tokio::time::timeout(Duration::from_secs(20), s.next()).await {
        Ok(Some(Ok(DagStreamItem::Node { seq, id, node }))) => {
            assert_eq!(node.id(), id);
            (seq, id, *node)
        }
        other => panic!("expected a DAG node, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_subscribe_streams_history_then_local_and_replicated_nodes_in_arrival_order() {
    use onvm::rpc_api::api::{NodeApiClient, PeerApiClient};
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let client = a.client().await;
    BlobApiClient::put(&client, b"before subscribing".to_vec().into(), None)
        .await
        .unwrap();
    // From the start: the announcement and the blob, then whatever comes next.
    let mut from_start = DagApiClient::subscribe_nodes(&client, Some(1))
        .await
        .unwrap();
    // Only new nodes.
    let mut only_new = DagApiClient::subscribe_nodes(&client, None).await.unwrap();
    BlobApiClient::put(&client, b"after subscribing".to_vec().into(), None)
        .await
        .unwrap();
    let ticket = NodeApiClient::info(&a.client().await).await.unwrap().ticket;
    PeerApiClient::connect(&b.client().await, ticket)
        .await
        .unwrap();
    let b_announce = {
        let heads = DagApiClient::heads(&b.client().await).await.unwrap();
        heads.heads[0]
    };
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next(&mut from_start).await);
    }
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(matches!(
        seen[0].2.body.payload,
        DagPayload::NodeAnnounce { .. }
    ));
    // The fourth is B's announcement, replicated to A.
    assert_eq!(seen[3].1, b_announce);
    let (seq, id, _) = next(&mut only_new).await;
    assert_eq!((seq, id), (3, seen[2].1));
    a.stop().await;
    b.stop().await;
}

/// A node joining a history longer than one sync round walks back (512 nodes) pulls the rest
/// as ranges of the peer's log, parents first, stored in batched transactions: it reaches the
/// same DAG. (Before, a round fetched the newest 10,000 nodes one request each, could not store
/// any whose ancestors were missing, and a network past 10,000 operations could never be
/// joined.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_long_history_through_log_ranges() {
    let a = TestNode::start().await;
    let ca = a.client().await;
    for i in 0..1_500u32 {
        BlobApiClient::put(&ca, format!("blob {i}").into_bytes().into(), None)
            .await
            .unwrap();
    }
    let history = DagApiClient::heads(&ca).await.unwrap().count;
    assert!(history > 1_500, "{history}");
    let b = TestNode::start().await;
    let started = std::time::Instant::now();
    common::join(&a, &[&b]).await;
    let joined = DagApiClient::heads(&b.client().await).await.unwrap();
    println!(
        "joined a history of {history} operations in {:?}",
        started.elapsed()
    );
    assert!(joined.count > history, "{} of {history}", joined.count);
    assert!(joined.refused.is_empty(), "{:?}", joined.refused);
    a.stop().await;
    b.stop().await;
}
