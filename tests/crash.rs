//! kill -9 in the middle of writes: nothing acknowledged is lost, nothing half-written is visible.
//! Each run prints its seed; re-run with ONVM_TEST_SEED=<seed>.

mod common;

use std::time::Duration;

use common::{
    init_plaintext as init, kill9, program_wasm, pseudo_random_bytes, test_seed as seed, ws_client,
};
use onvm::rpc_api::api::{BlobApiClient, ProgramApiClient, ReceiptApiClient};
use onvm::rpc_api::program::{DeployRequest, verify_receipt};
use onvm::rpc_api::{BlobId, UploadId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_survives_kill_9_and_resumes() {
    let seed = seed();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    init(&dir);
    let data = pseudo_random_bytes(12 * 1024 * 1024 + 333, seed);
    let chunk = 1024 * 1024;
    let (child, url) = common::spawn_node(&dir, &[]);
    let client = ws_client(&url).await;
    let status = BlobApiClient::upload_begin(&client, data.len() as u64, None)
        .await
        .unwrap();
    let upload: UploadId = status.upload_id;
    // Acknowledge a random number of chunks, then fire one more and kill the node mid-flight.
    let acked = 1 + (seed % 8) as usize;
    for i in 0..acked {
        let piece = data[i * chunk..(i + 1) * chunk].to_vec();
        BlobApiClient::upload_append(&client, upload.clone(), (i * chunk) as u64, piece.into())
            .await
            .unwrap();
    }
    let in_flight = {
        let url = url.clone();
        let upload = upload.clone();
        let piece = data[acked * chunk..(acked + 1) * chunk].to_vec();
        tokio::spawn(async move {
            let c = ws_client(&url).await;
            let _ = BlobApiClient::upload_append(&c, upload, (acked * chunk) as u64, piece.into())
                .await;
        })
    };
    tokio::time::sleep(Duration::from_millis(seed % 20)).await;
    kill9(child);
    let _ = in_flight.await;
    drop(client);

    let (child, url) = common::spawn_node(&dir, &[]);
    let client = ws_client(&url).await;
    let s = BlobApiClient::upload_status(&client, upload.clone())
        .await
        .unwrap();
    assert!(
        s.received >= (acked * chunk) as u64,
        "acknowledged bytes lost: {} < {}",
        s.received,
        acked * chunk
    );
    assert!(s.received <= ((acked + 1) * chunk) as u64);
    let mut offset = s.received as usize;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        BlobApiClient::upload_append(
            &client,
            upload.clone(),
            offset as u64,
            data[offset..end].to_vec().into(),
        )
        .await
        .unwrap();
        offset = end;
    }
    let stat = BlobApiClient::upload_finish(&client, upload, Some(BlobId::of(&data)))
        .await
        .unwrap();
    assert_eq!(stat.size, data.len() as u64);
    kill9(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_calls_survive_kill_9_atomically() {
    let seed = seed();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    init(&dir);
    let (child, url) = common::spawn_node(&dir, &[]);
    let client = ws_client(&url).await;
    let req = DeployRequest {
        wasm_base64: Some(program_wasm("job_test").into()),
        ..Default::default()
    };
    let program = ProgramApiClient::deploy(&client, req)
        .await
        .unwrap()
        .program_id;
    // Four clients hammer the `count` task; the node is killed at a random moment.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = ws_client(&url).await;
            let mut acked = Vec::new();
            for _ in 0..200 {
                match ProgramApiClient::execute(
                    &c,
                    program,
                    br#"{"task":"count"}"#.to_vec().into(),
                    None,
                )
                .await
                {
                    Ok(r) => acked.push(r.receipt.expect("receipt")),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(200 + seed % 600)).await;
    kill9(child);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    println!("{} calls acknowledged before the kill", acked.len());

    let (child, url) = common::spawn_node(&dir, &[]);
    let client = ws_client(&url).await;
    let info = ProgramApiClient::info(&client, program).await.unwrap();
    // Every acknowledged receipt is there, unchanged.
    for r in &acked {
        assert_eq!(&ReceiptApiClient::get(&client, r.id).await.unwrap(), r);
    }
    assert!(info.height >= acked.len() as u64);
    // Receipts form one unbroken chain of roots ending at the program's current root, and the
    // counter equals the number of committed calls: no call was applied twice or half.
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = ReceiptApiClient::list(&client, program, before, Some(1000))
            .await
            .unwrap();
        all.extend(page.items);
        match page.next_before_height {
            Some(h) => before = Some(h),
            None => break,
        }
    }
    all.reverse();
    assert_eq!(all.len() as u64, info.height);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.receipt.height, i as u64);
        verify_receipt(r, None, None).unwrap();
        if i > 0 {
            assert_eq!(
                r.receipt.state_root_in,
                all[i - 1].receipt.state_root_out,
                "height {i}"
            );
        }
    }
    if let Some(last) = all.last() {
        assert_eq!(last.receipt.state_root_out, info.state_root);
    }
    let next = ProgramApiClient::execute(
        &client,
        program,
        br#"{"task":"count"}"#.to_vec().into(),
        None,
    )
    .await
    .unwrap();
    let out: serde_json::Value = serde_json::from_slice(&next.output_base64.0).unwrap();
    assert_eq!(
        out["runs"],
        info.height + 1,
        "the counter counts every committed call exactly once"
    );
    kill9(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_kill_9_and_none_runs_twice() {
    use onvm::rpc_api::api::JobApiClient;
    use onvm::rpc_api::jobs::{JobStatus, SubmitJob};
    let seed = seed();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    init(&dir);
    let (mut child, mut url) = common::spawn_node(&dir, &[]);
    let client = ws_client(&url).await;
    let req = DeployRequest {
        wasm_base64: Some(program_wasm("job_test").into()),
        ..Default::default()
    };
    let program = ProgramApiClient::deploy(&client, req)
        .await
        .unwrap()
        .program_id;
    drop(client);
    let mut acked = Vec::new();
    let mut next = 0usize;
    let mut rng = seed | 1;
    let mut step = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Submit 200 `count` jobs in bursts, killing the node at random points in between.
    for round in 0..4 {
        let client = ws_client(&url).await;
        // The last round resubmits all 200 request ids: those that got through before a kill
        // come back as the same job (idempotency across crashes), the rest are new.
        let (start_at, burst) = if round == 3 {
            (0, 200)
        } else {
            (next, 30 + (step() % 40) as usize)
        };
        let submitter = {
            let url = url.clone();
            tokio::spawn(async move {
                let c = ws_client(&url).await;
                let mut ok = Vec::new();
                for i in start_at..start_at + burst {
                    let req = SubmitJob {
                        program_id: program,
                        request_id: format!("crash-{i}"),
                        input_base64: Some(br#"{"task":"count"}"#.to_vec().into()),
                        input_blob: None,
                        entrypoint: None,
                        max_retries: Some(3),
                        timeout_ms: None,
                        fuel: None,
                        metadata: None,
                        signed: None,
                    };
                    match JobApiClient::submit(&c, req).await {
                        Ok(r) => ok.push(r.job.job_id),
                        Err(_) => break,
                    }
                }
                ok
            })
        };
        next += burst;
        if round < 3 {
            tokio::time::sleep(Duration::from_millis(50 + step() % 300)).await;
            kill9(child);
            acked.extend(submitter.await.unwrap());
            drop(client);
            (child, url) = common::spawn_node(&dir, &[]);
        } else {
            acked.extend(submitter.await.unwrap());
        }
    }
    acked.sort();
    acked.dedup();
    assert_eq!(
        acked.len(),
        200,
        "every request id ends up as exactly one job"
    );
    let client = ws_client(&url).await;
    // Every acknowledged job exists and reaches a terminal state.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut completed = 0u64;
    for id in &acked {
        loop {
            let info = JobApiClient::status(&client, *id)
                .await
                .expect("acknowledged job exists");
            if info.status.is_terminal() {
                assert_eq!(info.status, JobStatus::Completed, "{id}: {:?}", info.error);
                completed += 1;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} stuck in {:?}",
                info.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Jobs that were submitted but not acknowledged may exist too; count every completed one.
    let mut all_completed = 0u64;
    let mut cursor = None;
    loop {
        let page = JobApiClient::list(&client, None, cursor, Some(1000))
            .await
            .unwrap();
        for j in &page.items {
            let mut j = j.clone();
            while !j.status.is_terminal() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                j = JobApiClient::status(&client, j.job_id).await.unwrap();
            }
            if j.status == JobStatus::Completed {
                all_completed += 1;
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert!(all_completed >= completed);
    // The counter was incremented exactly once per completed job: no job's writes ran twice.
    let state = onvm::rpc_api::api::StateApiClient::get(&client, program, b"runs".to_vec().into())
        .await
        .unwrap();
    let runs = state
        .value_base64
        .map(|v| u64::from_le_bytes(v.0.try_into().unwrap()))
        .unwrap_or(0);
    assert_eq!(
        runs, all_completed,
        "state writes applied {runs} times for {all_completed} completed jobs"
    );
    kill9(child);
}
