//! Sequencer failover on real nodes: when a program's sequencer dies, the next committee member
//! takes over; a call the dead sequencer had already got signed is finished, not lost; a call
//! retried with the same request id is answered from its receipt, never applied twice.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{TestNode, converge, converge_urls, kv_put, with_request_id};
use jsonrpsee::core::ClientError;
use onvm::rpc_api::api::{NodeApiClient, PeerApiClient, ProgramApiClient};
use onvm::rpc_api::committee::VerifiedCommittee;
use onvm::rpc_api::error::{self as codes, error_data};
use onvm::rpc_api::program::{SignedReceipt, call_id};
use onvm::rpc_api::{Hash32, ProgramId};

/// `n` nodes joined to the first, with the kvstore deployed on the first with a committee of
/// `k` (threshold ⌊2k/3⌋+1).
async fn network(n: usize, k: u32, first: &[&str]) -> (Vec<TestNode>, ProgramId) {
    let mut nodes = vec![TestNode::start_with(first).await];
    for _ in 1..n {
        nodes.push(TestNode::start().await);
    }
    let others: Vec<&TestNode> = nodes[1..].iter().collect();
    common::join(&nodes[0], &others).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    let p = common::deploy_kvstore(&nodes[0].client().await, Some(k)).await;
    converge(&all).await;
    (nodes, p)
}

/// An anonymous job putting key `from-job`, with no retries.
fn kv_job(p: ProgramId, request_id: &str) -> onvm::rpc_api::jobs::SubmitJob {
    onvm::rpc_api::jobs::SubmitJob {
        program_id: p,
        request_id: request_id.into(),
        input_base64: Some(kv_put("from-job")),
        input_blob: None,
        entrypoint: None,
        max_retries: Some(0),
        timeout_ms: None,
        fuel: None,
        metadata: None,
        signed: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_signed_before_the_sequencer_died_is_finished_once_by_the_next_member() {
    // A collects the committee's signatures for a call and then drops it, as if it crashed
    // between attestation and commit: B, C and D hold votes for a receipt nobody committed.
    let (mut nodes, p) = network(4, 4, &["committee.debug_abandon_after_attest=true"]).await;
    let a = nodes.remove(0);
    let (b, c, d) = (&nodes[0], &nodes[1], &nodes[2]);
    let lost =
        ProgramApiClient::execute(&a.client().await, p, kv_put("k1"), with_request_id("r1")).await;
    // The hook's own error, not a timeout of a loaded machine: only then was the call decided.
    assert!(
        format!("{lost:?}").contains("debug_abandon_after_attest"),
        "the hook drops the call: {lost:?}"
    );
    let home = a.node().endpoint_id();
    a.stop().await;

    // The client retries r1 through B. B cannot reach A, so the next member takes over; it
    // first finishes the proposal its predecessor left signed, then finds r1 committed.
    let started = Instant::now();
    let retried =
        ProgramApiClient::execute(&b.client().await, p, kv_put("k1"), with_request_id("r1"))
            .await
            .unwrap();
    println!("retry after the sequencer died: {:?}", started.elapsed());
    let receipt = retried.receipt.unwrap();
    assert_eq!(receipt.receipt.height, 0);
    assert_eq!(receipt.receipt.call_id, call_id(&p, &Hash32::ZERO, "r1"));
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
    let again =
        ProgramApiClient::execute(&c.client().await, p, kv_put("k1"), with_request_id("r1"))
            .await
            .unwrap();
    assert_eq!(again.receipt.unwrap().id, receipt.id);
    match ProgramApiClient::execute(&d.client().await, p, kv_put("other"), with_request_id("r1"))
        .await
    {
        Err(ClientError::Call(e)) => {
            assert_eq!(e.code(), codes::CONFLICT);
            assert_eq!(error_data(&e).unwrap().kind, "request_id_conflict");
        }
        other => panic!("expected request_id_conflict, got {other:?}"),
    }
    let next = ProgramApiClient::execute(&c.client().await, p, kv_put("k2"), with_request_id("r2"))
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

const STREAMS: usize = 3;
const CALLS: usize = 12;

/// Three clients each send a stream of puts through a different non-home node (`urls`), with
/// the accepting node choosing each call's request id. Every call must succeed.
fn start_streams(urls: &[String], p: ProgramId) -> tokio::task::JoinSet<Vec<SignedReceipt>> {
    let mut streams = tokio::task::JoinSet::new();
    for (s, url) in urls.iter().take(STREAMS).enumerate() {
        let url = url.clone();
        streams.spawn(async move {
            let client = common::ws_client(&url).await;
            let mut receipts = Vec::new();
            for i in 0..CALLS {
                let key = format!("s{s}-{i}");
                let r = ProgramApiClient::execute(&client, p, kv_put(&key), None)
                    .await
                    .unwrap_or_else(|e| panic!("call {key} failed: {e}"));
                receipts.push(r.receipt.unwrap());
            }
            receipts
        });
    }
    streams
}

async fn wait_for_height(url: &str, p: ProgramId, height: u64) {
    let started = Instant::now();
    loop {
        let info = ProgramApiClient::info(&common::ws_client(url).await, p)
            .await
            .unwrap();
        if info.height >= height {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// After the sequencer `home` died: every stream's call was answered, every call committed
/// exactly once at consecutive heights, another member sequenced, and the survivors agree.
async fn check_after_failover(
    streams: tokio::task::JoinSet<Vec<SignedReceipt>>,
    survivors: &[String],
    p: ProgramId,
    home: &str,
) {
    let stopped_at = Instant::now();
    let answered: Vec<SignedReceipt> = streams.join_all().await.into_iter().flatten().collect();
    println!(
        "all {} calls answered {:?} after the sequencer stopped",
        answered.len(),
        stopped_at.elapsed()
    );
    assert_eq!(answered.len(), STREAMS * CALLS);
    converge_urls(survivors).await;
    let committed = common::all_receipts(&survivors[0], p).await;
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
    assert!(
        committed
            .iter()
            .any(|r| r.receipt.executor.to_string() != home),
        "another member sequenced after the stop"
    );
    let mut roots = Vec::new();
    for url in survivors {
        let info = ProgramApiClient::info(&common::ws_client(url).await, p)
            .await
            .unwrap();
        roots.push((info.height, info.state_root));
    }
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_sequencer_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let (mut nodes, p) = network(5, 4, &[]).await;
    let mut a = nodes.remove(0);
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let streams = start_streams(&urls, p);
    // Stop the sequencer once some calls are through and others are in flight.
    wait_for_height(&urls[3], p, 6).await;
    let home = a.node().endpoint_id();
    a.halt().await;
    check_after_failover(streams, &urls, p, &home).await;

    // The home comes back behind the others: before it sequences again it learns, from the
    // members, what was committed while it was away, and continues from there.
    // It rejoins the nodes announced in its DAG by itself (no ticket given).
    a.resume().await;
    let started = Instant::now();
    while PeerApiClient::list(&a.client().await).await.unwrap().len() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the restarted home did not rejoin"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back = ProgramApiClient::execute(&a.client().await, p, kv_put("back"), None)
        .await
        .unwrap();
    let receipt = back.receipt.unwrap();
    assert_eq!(receipt.receipt.height, (STREAMS * CALLS) as u64);
    // Whoever led that height (leaders rotate per height), the committee attested it.
    assert!(receipt.attestation.is_some());
    let mut everyone = urls.clone();
    everyone.push(a.url());
    converge_urls(&everyone).await;
    let mut roots = Vec::new();
    for url in &everyone {
        let info = ProgramApiClient::info(&common::ws_client(url).await, p)
            .await
            .unwrap();
        roots.push((info.height, info.state_root));
    }
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");
    a.stop().await;
    for n in nodes {
        n.stop().await;
    }
}

/// `n` `onvm run-node` processes joined to the first, with a 3 s idle timeout so a killed
/// peer is noticed quickly and calls that wait for their committee up to 60 s.
async fn spawn_joined(
    n: usize,
) -> (
    tempfile::TempDir,
    common::Processes,
    Vec<String>,
    onvm::rpc_api::types::NodeInfo,
) {
    common::spawn_network(&vec![Vec::new(); n]).await
}

/// The same with real processes and SIGKILL: the dead sequencer closes no connection, so calls
/// in flight to it wait until QUIC notices the silence (`net.idle_timeout_ms`, 3 s here), then
/// are retried on the next member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_sequencer_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let seed = common::test_seed();
    let kill_at = 2 + seed % 14;
    println!("killing the sequencer at height {kill_at}");
    let (_tmp, mut children, urls, info) = spawn_joined(5).await;
    let first = common::ws_client(&urls[0]).await;
    let p = common::deploy_kvstore(&first, Some(4)).await;
    converge_urls(&urls).await;
    let survivors = urls[1..].to_vec();
    let streams = start_streams(&survivors, p);
    wait_for_height(&survivors[3], p, kill_at).await;
    common::kill9(children.remove(0));
    check_after_failover(streams, &survivors, p, &info.endpoint_id).await;
    drop(children);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committee_below_its_threshold_says_so_instead_of_hanging() {
    // K=4, quorum 3: with two members down only two take part. The call waits for its
    // committee at most committee.attest_timeout_ms (4 s here), then says who was silent.
    let (mut nodes, p) = network(4, 4, &["committee.attest_timeout_ms=4000"]).await;
    let d = nodes.pop().unwrap();
    let c = nodes.pop().unwrap();
    let dead = [c.node().endpoint_id(), d.node().endpoint_id()];
    c.stop().await;
    d.stop().await;
    let a = &nodes[0];
    let started = Instant::now();
    let err =
        match ProgramApiClient::execute(&a.client().await, p, kv_put("k"), with_request_id("q1"))
            .await
        {
            Err(ClientError::Call(e)) => e,
            other => panic!("expected not_attested, got {other:?}"),
        };
    println!("not_attested after {:?}", started.elapsed());
    assert_eq!(err.code(), codes::UNAVAILABLE);
    let data = error_data(&err).unwrap();
    assert_eq!(data.kind, "not_attested");
    assert_eq!(data.detail["threshold"].as_u64(), Some(3));
    assert_eq!(data.detail["signed"].as_u64(), Some(2), "A and B took part");
    // Each dead member is named, and the client is told how to get the receipt if the call
    // is decided later.
    let refusals: Vec<String> = data.detail["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    for member in &dead {
        assert!(
            refusals.iter().any(|r| r.starts_with(member.as_str())),
            "{member} named: {refusals:?}"
        );
    }
    assert!(
        refusals[2].contains("retry with the same request_id"),
        "{refusals:?}"
    );
    // Nothing was finalized; the same request id is refused the same way, not run twice.
    for n in &nodes {
        let info = ProgramApiClient::info(&n.client().await, p).await.unwrap();
        assert_eq!(info.height, 0);
    }
    match ProgramApiClient::execute(&a.client().await, p, kv_put("k"), with_request_id("q1")).await
    {
        Err(ClientError::Call(e)) => {
            assert_eq!(error_data(&e).unwrap().kind, "not_attested", "{e:?}")
        }
        other => panic!("expected not_attested again, got {other:?}"),
    }
    for n in nodes {
        n.stop().await;
    }
}

/// The default committee (K=4, threshold 3) on a 4-node network survives its home's kill -9:
/// a call right after the deploy is attested (members pull a program they have not seen), and
/// after the kill a call and a job sent to other nodes both complete on the next member, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_default_committee_a_call_and_a_job_survive_kill_9_of_the_home() {
    use onvm::rpc_api::api::JobApiClient;
    use onvm::rpc_api::jobs::JobStatus;
    let (_tmp, mut children, urls, info) = spawn_joined(4).await;
    let first = common::ws_client(&urls[0]).await;
    // No committee size: the default is 4 with threshold 3.
    let p = common::deploy_kvstore(&first, None).await;
    let committee = ProgramApiClient::committee(&first, p).await.unwrap();
    assert_eq!((committee.members.len(), committee.threshold), (4, 3));
    // At once, before the deploy has reached the members.
    let early = ProgramApiClient::execute(&first, p, kv_put("early"), with_request_id("early"))
        .await
        .expect("a call right after the deploy is attested");
    assert!(early.receipt.unwrap().attestation.is_some());
    converge_urls(&urls).await;

    common::kill9(children.remove(0));
    let killed = Instant::now();
    let survivors = urls[1..].to_vec();
    let c2 = common::ws_client(&survivors[1]).await;
    let call = ProgramApiClient::execute(&c2, p, kv_put("after"), with_request_id("after"))
        .await
        .expect("a call after the home's kill -9 completes on another member");
    println!(
        "first call after kill -9 answered in {:?}",
        killed.elapsed()
    );
    let receipt = call.receipt.unwrap();
    assert_eq!(receipt.receipt.height, 1);
    assert_ne!(receipt.receipt.executor.to_string(), info.endpoint_id);

    let c3 = common::ws_client(&survivors[2]).await;
    let job = kv_job(p, "job-after-kill");
    let submitted = JobApiClient::submit(&c3, job.clone())
        .await
        .expect("a job whose home is dead is accepted by a member");
    let id = submitted.job.job_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let j = JobApiClient::status(&c3, id).await.unwrap();
        if j.status.is_terminal() {
            break j;
        }
        assert!(Instant::now() < deadline, "job never finished: {j:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "job after kill -9 finished {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(done.status, JobStatus::Completed, "{done:?}");
    // Submitting again anywhere is the same job, not a second run.
    let again = JobApiClient::submit(&c2, job).await.unwrap();
    assert_eq!((again.job.job_id, again.created), (id, false));

    converge_urls(&survivors).await;
    let receipts = common::all_receipts(&survivors[0], p).await;
    assert_eq!(receipts.len(), 3, "early, after and the job's one attempt");
    let ids: HashSet<Hash32> = receipts.iter().map(|r| r.receipt.call_id).collect();
    assert_eq!(ids.len(), 3);
    let mut roots = HashSet::new();
    for url in &survivors {
        let info = ProgramApiClient::info(&common::ws_client(url).await, p)
            .await
            .unwrap();
        assert_eq!(info.height, 3);
        roots.insert(info.state_root);
        let j = JobApiClient::status(&common::ws_client(url).await, id)
            .await
            .unwrap();
        assert_eq!(j.status, JobStatus::Completed);
    }
    assert_eq!(roots.len(), 1);
    drop(children);
}

/// Dead-member suspicion is shared: the first node whose call finds the home dead tells the
/// network (a signed gossip report), so another node routes its next call straight to the
/// next member instead of paying the same dial timeout. K=4 (which survives one dead member)
/// on 6 nodes: two nodes are not members and forward their calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_node_to_find_the_home_dead_tells_the_others() {
    let (mut nodes, p) = network(6, 4, &[]).await;
    let client = nodes[0].client().await;
    let committee: Vec<String> = ProgramApiClient::info(&client, p)
        .await
        .unwrap()
        .manifest
        .manifest
        .committee
        .iter()
        .map(|m| m.endpoint_id.to_string())
        .collect();
    drop(client);
    assert_eq!(committee.len(), 4);
    let home = committee[0].clone();
    let mut ids = Vec::new();
    for n in &nodes {
        ids.push(n.node().info().endpoint_id.clone());
    }
    let outsiders: Vec<usize> = (0..6).filter(|&i| !committee.contains(&ids[i])).collect();
    assert_eq!(outsiders.len(), 2, "two nodes outside a committee of 4");
    let (c, d) = (outsiders[0], outsiders[1]);
    let home_index = ids.iter().position(|id| *id == home).unwrap();
    let suspected_on = |url: String, who: String| async move {
        PeerApiClient::list(&common::ws_client(&url).await)
            .await
            .unwrap()
            .into_iter()
            .any(|peer| peer.endpoint_id == who && peer.suspected)
    };
    assert!(!suspected_on(nodes[d].url(), home.clone()).await);

    nodes[home_index].halt().await;
    let c_client = nodes[c].client().await;
    let r = ProgramApiClient::execute(&c_client, p, kv_put("after-home-died"), None)
        .await
        .expect("a call through a non-member completes on the other member");
    assert_ne!(r.receipt.unwrap().receipt.executor.to_string(), home);
    assert!(suspected_on(nodes[c].url(), home.clone()).await);
    // D has sent nothing to the home, yet learns that it is down from C's report.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !suspected_on(nodes[d].url(), home.clone()).await {
        assert!(
            Instant::now() < deadline,
            "node D never learned that the home is suspected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = ProgramApiClient::execute(&nodes[d].client().await, p, kv_put("from-d"), None)
        .await
        .expect("D's call goes straight to the live member");
    assert_ne!(r.receipt.unwrap().receipt.executor.to_string(), home);
}

/// A home that ran a call but stopped before the committee decided it must not report the
/// call as done: its own undecided run is no answer (it once came back as a success without a
/// receipt, though nothing was committed). It leaves the forwarded call unanswered, so the
/// accepting node tries the next member, and the three live members of the default committee
/// decide the call: the client gets a receipt, committed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_stopping_before_a_decision_never_reports_an_undecided_call_as_done() {
    let others = [
        TestNode::start().await,
        TestNode::start().await,
        TestNode::start().await,
        TestNode::start().await,
    ];
    // A's committee messages reach nobody: it can run a call but never get it decided.
    let ids: Vec<String> = others
        .iter()
        .map(|n| format!("\"{}\"", n.node().endpoint_id()))
        .collect();
    let partition = format!("committee.debug_partition=[{}]", ids.join(", "));
    let mut a = TestNode::start_with(&[partition.as_str()]).await;
    let refs: Vec<&TestNode> = others.iter().collect();
    common::join(&a, &refs).await;
    let p = common::deploy_kvstore(&a.client().await, Some(4)).await;
    let mut all = refs.clone();
    all.push(&a);
    converge(&all).await;
    let committee = ProgramApiClient::committee(&a.client().await, p)
        .await
        .unwrap();
    let members: Vec<String> = committee
        .members
        .iter()
        .map(|m| m.endpoint_id.to_string())
        .collect();
    let home = a.node().endpoint_id();
    assert_eq!(members[0], home);
    // The accepting node is the one outside the committee: it forwards the call to the home.
    let outsider = others
        .iter()
        .find(|n| !members.contains(&n.node().endpoint_id()))
        .expect("five nodes, four members");
    let executed =
        |m: onvm::rpc_api::types::Metrics| m.counters.get("calls_executed").copied().unwrap_or(0);
    let before = executed(NodeApiClient::metrics(&a.client().await).await.unwrap());
    let client = outsider.client().await;
    let call = tokio::spawn(async move {
        ProgramApiClient::execute(&client, p, kv_put("undecided"), with_request_id("u")).await
    });
    // Stop the home once it has run the call (its proposal waits for votes that never come).
    let started = Instant::now();
    while executed(NodeApiClient::metrics(&a.client().await).await.unwrap()) <= before {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the home never ran the call"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.halt().await;
    let answered = call.await.unwrap().unwrap();
    let receipt = answered
        .receipt
        .expect("an undecided call was reported as done: no receipt");
    assert_ne!(receipt.receipt.executor.to_string(), home);
    let urls: Vec<String> = others.iter().map(|n| n.url()).collect();
    converge_urls(&urls).await;
    let committed = common::all_receipts(&urls[0], p).await;
    assert_eq!(committed.len(), 1, "committed once");
    assert_eq!(committed[0].id, receipt.id);
    a.stop().await;
    for n in others {
        n.stop().await;
    }
}

/// A job whose call the committee cannot decide yet (two of four members down, quorum 3) is
/// not retried as a new call, which could commit too once the committee is back: its attempt
/// is recorded `undecided` and runs again as itself (same call id) until it is decided. With a
/// member back, the job completes with one attempt and one receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_call_is_undecided_runs_again_as_the_same_attempt() {
    use onvm::rpc_api::api::JobApiClient;
    use onvm::rpc_api::jobs::JobStatus;
    let (mut nodes, p) = network(4, 4, &["committee.attest_timeout_ms=1500"]).await;
    nodes[2].halt().await;
    nodes[3].halt().await;
    let a = nodes[0].client().await;
    let job = kv_job(p, "undecided-job");
    let id = JobApiClient::submit(&a, job).await.unwrap().job.job_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = JobApiClient::status(&a, id).await.unwrap();
        assert!(
            !j.status.is_terminal(),
            "no retries left, yet never failed: {j:?}"
        );
        if j.attempts.first().and_then(|a| a.outcome.as_deref()) == Some("undecided") {
            break;
        }
        assert!(Instant::now() < deadline, "attempt never undecided: {j:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes[2].resume().await;
    let done = loop {
        let j = JobApiClient::status(&a, id).await.unwrap();
        if j.status.is_terminal() {
            break j;
        }
        assert!(Instant::now() < deadline, "job never finished: {j:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.status, JobStatus::Completed, "{done:?}");
    assert_eq!(done.attempts.len(), 1, "one attempt, run again: {done:?}");
    assert_eq!(done.attempts[0].number, 1);
    let receipts = common::all_receipts(&nodes[0].url(), p).await;
    assert_eq!(receipts.len(), 1, "the job's call committed once");
    nodes[3].resume().await;
    for n in nodes {
        n.stop().await;
    }
}
