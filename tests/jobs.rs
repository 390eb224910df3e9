//! Durable jobs through the real RPC and WebSocket subscriptions.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, example, program_wasm};
use jsonrpsee::core::ClientError;
use jsonrpsee::core::client::Subscription;
use onvm::rpc_api::api::{JobApiClient, NodeApiClient, ProgramApiClient};
use onvm::rpc_api::error::{self as codes, error_data};
use onvm::rpc_api::jobs::{JobEvent, JobFilter, JobInfo, JobStatus, JobStreamItem, SubmitJob};
use onvm::rpc_api::program::DeployRequest;
use onvm::rpc_api::{JobId, ProgramId};

fn call_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> jsonrpsee::types::ErrorObjectOwned {
    match r {
        Err(ClientError::Call(e)) => e,
        other => panic!("expected a call error, got {other:?}"),
    }
}

fn submit(program: ProgramId, request_id: &str, input: &[u8]) -> SubmitJob {
    SubmitJob {
        program_id: program,
        request_id: request_id.into(),
        input_base64: Some(input.to_vec().into()),
        input_blob: None,
        entrypoint: None,
        max_retries: Some(0),
        timeout_ms: None,
        fuel: Some(1_000_000_000),
        metadata: None,
        signed: None,
    }
}

async fn job_test(client: &impl ProgramApiClient) -> ProgramId {
    let req = DeployRequest {
        wasm_base64: Some(program_wasm("job_test").into()),
        ..Default::default()
    };
    ProgramApiClient::deploy(client, req)
        .await
        .unwrap()
        .program_id
}

/// Follows a job's subscription to its end; returns the events and the close reason.
async fn follow(client: &impl JobApiClient, id: JobId) -> (Vec<JobEvent>, String) {
    let mut sub: Subscription<JobStreamItem> =
        JobApiClient::subscribe_job(client, id, None).await.unwrap();
    let mut events = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(60), sub.next())
            .await
            .expect("job events keep coming")
            .expect("subscription open")
            .expect("well-formed item");
        match item {
            JobStreamItem::Event(e) => events.push(e),
            JobStreamItem::Closed { reason, .. } => return (events, reason),
        }
    }
}

async fn wait_terminal(client: &impl JobApiClient, id: JobId) -> JobInfo {
    let (events, reason) = follow(client, id).await;
    assert_eq!(reason, "finished");
    assert!(events.last().unwrap().status.is_terminal());
    JobApiClient::status(client, id).await.unwrap()
}

#[tokio::test]
async fn job_test_tasks_complete_with_documented_outputs_and_events_in_order() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let p = job_test(&client).await;
    let cases = [
        (
            "compute.json",
            r#"{"task":"compute","iterations":1000,"result":{"sum_of_squares":333833500,"fibonacci":517691607}}"#,
        ),
        (
            "hash.json",
            r#"{"task":"hash","iterations":3,"hex":"7f7b87bbdd45f6ef5bf64a31b0a663c143410fc03a7e5a853a0c6b2108101ea9"}"#,
        ),
        (
            "transform.json",
            r#"{"task":"transform","upper":"HELLO, ONVM! ÜNÏCÖDÉ","reversed":"édöcïnü !MVNO ,olleH","length":24,"chars":20}"#,
        ),
        (
            "stress.json",
            r#"{"task":"stress","iterations":1000000,"memory_mb":8,"checksum":2252849941745956698}"#,
        ),
    ];
    for (file, expected) in cases {
        let r = JobApiClient::submit(&client, submit(p, file, &example("job-test", file)))
            .await
            .unwrap();
        assert!(r.created);
        let (events, reason) = follow(&client, r.job.job_id).await;
        assert_eq!(reason, "finished");
        let statuses: Vec<_> = events.iter().map(|e| e.status).collect();
        assert_eq!(
            statuses,
            [JobStatus::Pending, JobStatus::Running, JobStatus::Completed],
            "{file}"
        );
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(events[2].fuel_used > 0);
        let out = JobApiClient::output(&client, r.job.job_id).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.output_base64.unwrap().0),
            expected,
            "{file}"
        );
        let info = JobApiClient::status(&client, r.job.job_id).await.unwrap();
        assert_eq!(info.attempts.len(), 1);
        assert!(info.receipt_id.is_some());
    }
    // Logs the program emitted are kept per attempt.
    let r = JobApiClient::submit(&client, submit(p, "logs", &example("job-test", "log.json")))
        .await
        .unwrap();
    wait_terminal(&client, r.job.job_id).await;
    let logs = JobApiClient::logs(&client, r.job.job_id).await.unwrap();
    assert_eq!(logs.attempts.len(), 1);
    assert_eq!(logs.attempts[0].lines.len(), 3);
    let m = NodeApiClient::metrics(&client).await.unwrap();
    assert_eq!(m.counters["jobs_completed"], 5);
    assert!(m.counters["job_fuel_used"] > 0);
    node.stop().await;
}

#[tokio::test]
async fn a_failing_job_retries_with_growing_gaps_then_fails_with_the_reason() {
    let node = TestNode::start_with(&["jobs.retry_base_ms=100"]).await;
    let client = node.client().await;
    let p = job_test(&client).await;
    let mut req = submit(p, "fails", &example("job-test", "fail.json"));
    req.max_retries = Some(3);
    let id = JobApiClient::submit(&client, req).await.unwrap().job.job_id;
    let info = wait_terminal(&client, id).await;
    assert_eq!(info.status, JobStatus::Failed);
    assert_eq!(info.attempts.len(), 4, "1 attempt + 3 retries");
    assert!(
        info.error
            .as_deref()
            .unwrap()
            .contains("deliberate failure"),
        "{:?}",
        info.error
    );
    let gaps: Vec<u64> = info
        .attempts
        .windows(2)
        .map(|w| w[1].started_at_ms - w[0].finished_at_ms.unwrap())
        .collect();
    println!("retry gaps (ms): {gaps:?}");
    // base 100 ms doubling, with +-25% jitter: at least 75, 150, 300 ms.
    for (i, gap) in gaps.iter().enumerate() {
        assert!(*gap >= (75u64 << i), "gap {i} = {gap} ms");
    }
    assert!(gaps[2] > gaps[0], "gaps grow: {gaps:?}");
    for a in &info.attempts {
        assert_eq!(a.outcome.as_deref(), Some("trap"));
        assert!(a.receipt_id.is_some(), "failed attempts leave receipts");
    }
    let err = call_error(JobApiClient::output(&client, id).await);
    assert_eq!(err.code(), codes::JOB_NOT_READY);
    let m = NodeApiClient::metrics(&client).await.unwrap();
    assert_eq!(m.counters["jobs_retried"], 3);
    assert_eq!(m.counters["jobs_failed"], 1);
    node.stop().await;
}

#[tokio::test]
async fn timeouts_and_deterministic_failures() {
    let node = TestNode::start_with(&["vm.max_fuel=1000000000000"]).await;
    let client = node.client().await;
    let p = job_test(&client).await;
    let mut req = submit(p, "slow", &example("job-test", "stress_forever.json"));
    req.timeout_ms = Some(300);
    req.fuel = Some(1_000_000_000_000);
    let started = Instant::now();
    let id = JobApiClient::submit(&client, req).await.unwrap().job.job_id;
    let info = wait_terminal(&client, id).await;
    assert_eq!(info.status, JobStatus::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(20));
    // Out of fuel is deterministic: no retry even with retries left.
    let mut req = submit(p, "no-fuel", &example("job-test", "stress_forever.json"));
    req.fuel = Some(100_000);
    req.max_retries = Some(5);
    let id = JobApiClient::submit(&client, req).await.unwrap().job.job_id;
    let info = wait_terminal(&client, id).await;
    assert_eq!(info.status, JobStatus::Failed);
    assert_eq!(info.attempts.len(), 1);
    assert_eq!(info.attempts[0].outcome.as_deref(), Some("out_of_fuel"));
    node.stop().await;
}

#[tokio::test]
async fn cancel_pending_and_running_jobs() {
    let node = TestNode::start_with(&["jobs.max_running=1"]).await;
    let client = node.client().await;
    let p = job_test(&client).await;
    // A long job occupies the only slot; the second waits.
    let mut long = submit(p, "long", &example("job-test", "stress_forever.json"));
    long.timeout_ms = Some(10_000);
    let long_id = JobApiClient::submit(&client, long)
        .await
        .unwrap()
        .job
        .job_id;
    let waiting = JobApiClient::submit(
        &client,
        submit(p, "count-1", &example("job-test", "count.json")),
    )
    .await
    .unwrap()
    .job
    .job_id;
    // Wait until the long one runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    while JobApiClient::status(&client, long_id).await.unwrap().status != JobStatus::Running {
        assert!(Instant::now() < deadline, "long job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = JobApiClient::cancel(&client, waiting).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    let started = Instant::now();
    JobApiClient::cancel(&client, long_id).await.unwrap();
    let info = wait_terminal(&client, long_id).await;
    assert_eq!(info.status, JobStatus::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "cancel took {:?}",
        started.elapsed()
    );
    // Idempotent, and nothing ran: the count job never wrote its counter.
    assert_eq!(
        JobApiClient::cancel(&client, long_id).await.unwrap().status,
        JobStatus::Cancelled
    );
    assert_eq!(ProgramApiClient::info(&client, p).await.unwrap().keys, 0);
    assert_eq!(
        JobApiClient::status(&client, waiting)
            .await
            .unwrap()
            .attempts
            .len(),
        0
    );
    let err = call_error(JobApiClient::cancel(&client, JobId::from_bytes([1; 32])).await);
    assert_eq!(err.code(), codes::NOT_FOUND);
    node.stop().await;
}

#[tokio::test]
async fn request_ids_are_idempotent_and_conflicts_are_refused() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let p = job_test(&client).await;
    let first = JobApiClient::submit(
        &client,
        submit(p, "req-1", &example("job-test", "count.json")),
    )
    .await
    .unwrap();
    assert!(first.created);
    let info = wait_terminal(&client, first.job.job_id).await;
    assert_eq!(info.status, JobStatus::Completed);
    let again = JobApiClient::submit(
        &client,
        submit(p, "req-1", &example("job-test", "count.json")),
    )
    .await
    .unwrap();
    assert!(!again.created);
    assert_eq!(again.job.job_id, first.job.job_id);
    assert_eq!(again.job.status, JobStatus::Completed);
    // It did not run twice: the counter is 1.
    let out = JobApiClient::output(&client, first.job.job_id)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.output_base64.unwrap().0),
        r#"{"task":"count","runs":1}"#
    );
    let err = call_error(
        JobApiClient::submit(
            &client,
            submit(p, "req-1", &example("job-test", "hash.json")),
        )
        .await,
    );
    assert_eq!(err.code(), codes::CONFLICT);
    assert_eq!(error_data(&err).unwrap().detail["differs_in"], "input");
    let other = ProgramApiClient::deploy(
        &client,
        DeployRequest {
            wasm_base64: Some(program_wasm("echo").into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .program_id;
    let err = call_error(
        JobApiClient::submit(
            &client,
            submit(other, "req-1", &example("job-test", "count.json")),
        )
        .await,
    );
    assert_eq!(error_data(&err).unwrap().detail["differs_in"], "program");
    node.stop().await;
}

#[tokio::test]
async fn listing_filters_and_pages() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let p = job_test(&client).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let input = if i % 3 == 0 {
            example("job-test", "fail.json")
        } else {
            example("job-test", "compute.json")
        };
        ids.push(
            JobApiClient::submit(&client, submit(p, &format!("l-{i}"), &input))
                .await
                .unwrap()
                .job
                .job_id,
        );
    }
    for id in &ids {
        wait_terminal(&client, *id).await;
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = JobApiClient::list(&client, None, cursor, Some(5))
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|j| j.job_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ids.sort();
    assert_eq!(seen, ids);
    let failed = JobApiClient::list(
        &client,
        Some(JobFilter {
            status: Some(JobStatus::Failed),
            program_id: Some(p),
        }),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(failed.items.len(), 4);
    node.stop().await;
}

#[tokio::test]
async fn the_feed_is_gap_free_and_resumable() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let p = job_test(&client).await;
    let mut feed: Subscription<JobStreamItem> =
        JobApiClient::subscribe_feed(&client, None, Some(1))
            .await
            .unwrap();
    for i in 0..10 {
        JobApiClient::submit(
            &client,
            submit(p, &format!("f-{i}"), &example("job-test", "compute.json")),
        )
        .await
        .unwrap();
    }
    let mut events = Vec::new();
    while events.len() < 30 {
        match tokio::time::timeout(Duration::from_secs(30), feed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            JobStreamItem::Event(e) => events.push(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=30).collect::<Vec<_>>(),
        "no gaps, no duplicates, in order"
    );
    // A new subscriber resumes from any cursor and sees exactly the rest.
    let mut resumed: Subscription<JobStreamItem> =
        JobApiClient::subscribe_feed(&client, None, Some(21))
            .await
            .unwrap();
    for expected in 21..=30 {
        match resumed.next().await.unwrap().unwrap() {
            JobStreamItem::Event(e) => assert_eq!(e.seq, expected),
            other => panic!("unexpected {other:?}"),
        }
    }
    node.stop().await;
}

/// Under a PBFT committee an attempt's call can commit before its job is marked complete (on a
/// member that did not run the call, completion is a step of its own). A node stopped in that
/// window completes the job from the committed call when it starts again; it never runs the
/// work a second time.
#[tokio::test]
async fn a_job_whose_call_committed_before_a_crash_completes_from_it_at_restart() {
    let mut node = TestNode::start().await;
    let (p, id, height, output) = {
        let client = node.client().await;
        let p = job_test(&client).await;
        let id = JobApiClient::submit(
            &client,
            submit(p, "window", &example("job-test", "hash.json")),
        )
        .await
        .unwrap()
        .job
        .job_id;
        assert_eq!(
            wait_terminal(&client, id).await.status,
            JobStatus::Completed
        );
        let height = ProgramApiClient::info(&client, p).await.unwrap().height;
        let output = JobApiClient::output(&client, id)
            .await
            .unwrap()
            .output_base64;
        (p, id, height, output)
    };
    node.halt().await;
    // Put the job back into the window: running, its attempt unfinished, its call committed.
    {
        let store = onvm::node::store::Store::open(&node.path().join("node.redb")).unwrap();
        store
            .update_job(&id, None, |job| {
                job.status = JobStatus::Running;
                job.output_blob = None;
                job.receipt_id = None;
                if let Some(a) = job.attempts.last_mut() {
                    a.finished_at_ms = None;
                    a.outcome = None;
                    a.receipt_id = None;
                }
                true
            })
            .unwrap();
    }
    node.resume().await;
    let client = node.client().await;
    // Polled, not followed: the event feed still holds the completion from before the edit,
    // so a follower would return at once, before recovery ran.
    let started = Instant::now();
    let info = loop {
        let info = JobApiClient::status(&client, id).await.unwrap();
        if info.status.is_terminal() || started.elapsed() > Duration::from_secs(60) {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(info.status, JobStatus::Completed, "{info:?}");
    assert_eq!(
        info.attempts.len(),
        1,
        "completed from its call, not retried"
    );
    assert!(info.receipt_id.is_some());
    assert_eq!(
        ProgramApiClient::info(&client, p).await.unwrap().height,
        height,
        "the work did not run again"
    );
    let again = JobApiClient::output(&client, id)
        .await
        .unwrap()
        .output_base64;
    assert_eq!(again, output);
    node.stop().await;
}

#[tokio::test]
async fn restart_keeps_jobs_and_their_outputs() {
    let mut node = TestNode::start().await;
    let (p, id) = {
        let client = node.client().await;
        let p = job_test(&client).await;
        let id = JobApiClient::submit(
            &client,
            submit(p, "keep", &example("job-test", "hash.json")),
        )
        .await
        .unwrap()
        .job
        .job_id;
        wait_terminal(&client, id).await;
        (p, id)
    };
    node.restart().await;
    let client = node.client().await;
    let info = JobApiClient::status(&client, id).await.unwrap();
    assert_eq!(info.status, JobStatus::Completed);
    assert_eq!(info.program_id, p);
    let out = JobApiClient::output(&client, id).await.unwrap();
    assert!(String::from_utf8_lossy(&out.output_base64.unwrap().0).contains("7f7b87bb"));
    // Its full history replays after the restart.
    let (events, _) = follow(&client, id).await;
    assert_eq!(events.len(), 3);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_closed_with_a_cursor_and_others_are_unaffected() {
    let node = TestNode::start_with(&[
        "rpc.message_buffer=32",
        "rpc.subscriber_lag_ms=1000",
        "jobs.max_running=4",
    ])
    .await;
    let client = node.client().await;
    let p = job_test(&client).await;
    // A well-behaved subscriber follows the whole flood without a gap.
    let mut good: Subscription<JobStreamItem> =
        JobApiClient::subscribe_feed(&client, None, Some(1))
            .await
            .unwrap();
    const JOBS: usize = 300;
    const EVENTS: u64 = (JOBS * 3) as u64;
    let submitter = {
        let url = node.url();
        tokio::spawn(async move {
            let c = common::ws_client(&url).await;
            for i in 0..JOBS {
                JobApiClient::submit(
                    &c,
                    submit(
                        p,
                        &format!("flood-{i}"),
                        br#"{"task":"compute","iterations":10}"#,
                    ),
                )
                .await
                .unwrap();
            }
        })
    };
    let mut seen = 0u64;
    while seen < EVENTS {
        let item = tokio::time::timeout(Duration::from_secs(60), good.next())
            .await
            .expect("the good subscriber keeps getting events")
            .unwrap()
            .unwrap();
        match item {
            JobStreamItem::Event(e) => {
                seen += 1;
                assert_eq!(e.seq, seen, "gap-free for the reader that keeps up");
            }
            other => panic!("the good subscriber was closed: {other:?}"),
        }
    }
    submitter.await.unwrap();

    // A client with a tiny receive buffer asks for the whole history 16 times over (megabytes)
    // and never reads. Kernel buffers fill, then the node's per-connection buffer.
    let mut stalled = common::raw::ws_connect(node.node().rpc_addr(), Some(4096)).await;
    for id in 0..16 {
        let req = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"job_subscribe_all","params":[null,1]}}"#
        );
        common::raw::send_text(&mut stalled, &req).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Everyone else is unaffected.
    assert!(NodeApiClient::health(&client).await.unwrap().ready);
    let mut fresh: Subscription<JobStreamItem> =
        JobApiClient::subscribe_feed(&client, None, Some(EVENTS - 5))
            .await
            .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), fresh.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        JobStreamItem::Event(e) => assert_eq!(e.seq, EVENTS - 5),
        other => panic!("unexpected {other:?}"),
    }

    // Now drain what the stalled client was sent: per subscription, events from 1 in order,
    // and for those that fell behind, a typed close with the cursor to resume from.
    let mut subs: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut lagged: Vec<(u64, u64)> = Vec::new();
    let mut finished_or_closed = 0;
    while finished_or_closed < 16 {
        let text = tokio::time::timeout(
            Duration::from_secs(30),
            common::raw::read_text(&mut stalled),
        )
        .await
        .expect("frames keep coming");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if v.get("id").is_some() {
            continue; // a subscription acknowledgement
        }
        let sub = v["params"]["subscription"].to_string();
        let item = &v["params"]["result"];
        let last = subs.entry(sub).or_insert(0);
        match item["type"].as_str() {
            Some("event") => {
                let seq = item["seq"].as_u64().unwrap();
                assert_eq!(seq, *last + 1, "in order, no gaps");
                *last = seq;
                if seq == EVENTS {
                    finished_or_closed += 1;
                }
            }
            Some("closed") => {
                assert_eq!(item["reason"], "lagged");
                lagged.push((*last, item["resume_from_seq"].as_u64().unwrap()));
                finished_or_closed += 1;
            }
            other => panic!("unexpected frame {other:?}: {text}"),
        }
    }
    println!(
        "{} of 16 stalled subscriptions were closed as lagged: {lagged:?}",
        lagged.len()
    );
    assert!(
        !lagged.is_empty(),
        "a subscriber that never reads must be closed"
    );
    for (last, resume) in &lagged {
        assert_eq!(
            *resume,
            last + 1,
            "the cursor points just after the last delivered event"
        );
    }
    // Resuming from a cursor yields exactly the rest.
    let resume = lagged[0].1;
    let mut resumed: Subscription<JobStreamItem> =
        JobApiClient::subscribe_feed(&client, None, Some(resume))
            .await
            .unwrap();
    for expected in resume..=EVENTS {
        match resumed.next().await.unwrap().unwrap() {
            JobStreamItem::Event(e) => assert_eq!(e.seq, expected),
            other => panic!("unexpected {other:?}"),
        }
    }
    node.stop().await;
}
