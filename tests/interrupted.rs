//! Interrupted calls (a wall-clock timeout, a cancelled job) are one node's local events: they
//! take no height and get no receipt, so committees are never asked to reproduce them, later
//! writes go on, and `onvm audit` accepts the honest history (docs/PROTOCOL.md, "What is
//! attested").

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, converge, example, program_wasm, ticket};
use jsonrpsee::core::ClientError;
use jsonrpsee::ws_client::WsClient;
use onvm::rpc_api::ProgramId;
use onvm::rpc_api::api::{JobApiClient, PeerApiClient, ProgramApiClient};
use onvm::rpc_api::error::{self as codes, error_data};
use onvm::rpc_api::jobs::{JobInfo, JobStatus, SubmitJob};
use onvm::rpc_api::program::{DeployRequest, ExecuteOptions};

/// Lets a test loop far longer than a wall-clock timeout without running out of fuel first.
const BIG_FUEL: &str = "vm.max_fuel=1000000000000";

async fn deploy_job_test(client: &WsClient, committee_size: u32) -> ProgramId {
    let req = DeployRequest {
        wasm_base64: Some(program_wasm("job_test").into()),
        committee_size: Some(committee_size),
        ..Default::default()
    };
    ProgramApiClient::deploy(client, req)
        .await
        .expect("job_test deploys")
        .program_id
}

/// Runs a call that loops until its 5 ms timeout and checks what the client is told.
async fn timed_out_call(client: &WsClient, p: ProgramId) {
    let options = ExecuteOptions {
        fuel: Some(1_000_000_000_000),
        timeout_ms: Some(5),
        request_id: Some("slow-1".into()),
        ..Default::default()
    };
    let err = match ProgramApiClient::execute(
        client,
        p,
        example("job-test", "stress_forever.json").into(),
        Some(options),
    )
    .await
    {
        Err(ClientError::Call(e)) => e,
        other => panic!("a looping call must time out, got {other:?}"),
    };
    assert_eq!(err.code(), codes::EXECUTION_FAILED, "{err:?}");
    let data = error_data(&err).expect("typed error data");
    assert_eq!(data.kind, "timeout");
    let result = &data.detail["result"];
    assert!(
        result["receipt"].is_null(),
        "an interrupted call gets no receipt: {result}"
    );
    assert_eq!(result["state_root_in"], result["state_root_out"]);
    // The fuel it really ran: the deadline is checked every 100,000 units of fuel, with the
    // counter saved, so at least one slice ran (it used to report the fuel of the loop's entry).
    let fuel = result["fuel_used"].as_u64().expect("fuel_used");
    assert!(fuel >= 100_000, "an interrupted call reports fuel {fuel}");
}

async fn count(client: &WsClient, p: ProgramId, request_id: &str) -> u64 {
    let options = ExecuteOptions {
        request_id: Some(request_id.into()),
        ..Default::default()
    };
    let r = ProgramApiClient::execute(
        client,
        p,
        example("job-test", "count.json").into(),
        Some(options),
    )
    .await
    .unwrap_or_else(|e| panic!("a write after an interrupted call commits: {e}"));
    r.receipt.expect("a write has a receipt").receipt.height
}

async fn wait_status(client: &WsClient, id: onvm::rpc_api::JobId, want: JobStatus) -> JobInfo {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = JobApiClient::status(client, id).await.unwrap();
        if info.status == want {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "job never reached {want:?}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_call_takes_no_height_and_the_audit_passes() {
    let node = TestNode::start_with(&[BIG_FUEL]).await;
    let client = node.client().await;
    let p = deploy_job_test(&client, 1).await;
    timed_out_call(&client, p).await;
    assert_eq!(ProgramApiClient::info(&client, p).await.unwrap().height, 0);
    // The request id of the interrupted call is still free: a retry runs (and commits) it.
    assert_eq!(count(&client, p, "slow-1").await, 0);
    assert_eq!(count(&client, p, "after").await, 1);
    let (ok, text) = common::audit(&node.url(), p);
    assert!(ok, "audit of an honest history with a timeout: {text}");
    assert!(text.contains("audit OK: 2 calls"), "{text}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committee_of_two_keeps_writing_after_a_timeout_and_a_cancelled_job() {
    let a = TestNode::start_with(&[BIG_FUEL]).await;
    let b = TestNode::start_with(&[BIG_FUEL]).await;
    PeerApiClient::connect(&b.client().await, ticket(&a).await)
        .await
        .unwrap();
    converge(&[&a, &b]).await;
    let ca = a.client().await;
    let cb = b.client().await;
    let p = deploy_job_test(&ca, 2).await;
    let committee = ProgramApiClient::committee(&ca, p).await.unwrap();
    assert_eq!((committee.members.len(), committee.threshold), (2, 2));
    converge(&[&a, &b]).await;

    // A timeout, accepted by the home and by the other member (forwarded to the home).
    timed_out_call(&ca, p).await;
    timed_out_call(&cb, p).await;
    assert_eq!(count(&cb, p, "w1").await, 0);

    // A running job cancelled mid-call.
    let job = SubmitJob {
        program_id: p,
        request_id: "forever".into(),
        input_base64: Some(example("job-test", "stress_forever.json").into()),
        input_blob: None,
        entrypoint: None,
        max_retries: Some(0),
        timeout_ms: Some(10_000),
        fuel: Some(1_000_000_000_000),
        metadata: None,
        signed: None,
    };
    let id = JobApiClient::submit(&ca, job).await.unwrap().job.job_id;
    wait_status(&ca, id, JobStatus::Running).await;
    JobApiClient::cancel(&ca, id).await.unwrap();
    let info = wait_status(&ca, id, JobStatus::Cancelled).await;
    let attempt = &info.attempts[0];
    assert_eq!(attempt.outcome.as_deref(), Some("cancelled"), "{info:?}");
    assert!(attempt.receipt_id.is_none());

    // Writes go on, on both nodes, and the committee attests them.
    assert_eq!(count(&ca, p, "w2").await, 1);
    let last = ProgramApiClient::execute(
        &cb,
        p,
        example("job-test", "count.json").into(),
        Some(ExecuteOptions {
            request_id: Some("w3".into()),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let receipt = last.receipt.unwrap();
    assert_eq!(receipt.receipt.height, 2);
    assert!(receipt.attestation.is_some());
    converge(&[&a, &b]).await;
    let (ia, ib) = (
        ProgramApiClient::info(&ca, p).await.unwrap(),
        ProgramApiClient::info(&cb, p).await.unwrap(),
    );
    assert_eq!((ia.height, ia.state_root), (3, ib.state_root));
    for node in [&a, &b] {
        let (ok, text) = common::audit(&node.url(), p);
        assert!(ok, "audit on {}: {text}", node.url());
    }
    a.stop().await;
    b.stop().await;
}
