//! Limits that must hold against a hostile program: a call that tries to write a gibibyte is
//! stopped early by the per-call write cap, costs fuel per byte, and leaves the node's memory
//! bounded and its state untouched.

mod common;

use std::time::Instant;

use onvm::rpc_api::api::{NodeApiClient, ProgramApiClient, StateApiClient};
use onvm::rpc_api::error as codes;
use onvm::rpc_api::program::{DeployRequest, ExecuteOptions};

/// Writes `n` values of `size` bytes under 4-byte keys (input: n, size as little-endian u32s).
const WRITER: &str = include_str!("fixtures/writer.wat");

fn writes(n: u32, size: u32) -> Vec<u8> {
    [n.to_le_bytes(), size.to_le_bytes()].concat()
}

/// Peak resident memory of a process, from /proc (Linux), in MiB.
fn peak_rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_writing_a_gibibyte_fails_fast_and_the_node_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    common::init_plaintext(dir.path());
    // The highest fuel a node allows by default, so only the write cap can stop the call.
    let (child, url) = common::spawn_node(dir.path(), &[]);
    let client = common::ws_client(&url).await;
    let program = ProgramApiClient::deploy(
        &client,
        DeployRequest {
            wasm_base64: Some(wat::parse_str(WRITER).unwrap().into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .program_id;
    let root_before = StateApiClient::root(&client, program).await.unwrap();
    let max_fuel = ExecuteOptions {
        fuel: Some(1_000_000_000),
        ..Default::default()
    };

    // 1,000 distinct values of 1 MiB each.
    let started = Instant::now();
    let err = ProgramApiClient::execute(
        &client,
        program,
        writes(1000, 1 << 20).into(),
        Some(max_fuel.clone()),
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    let jsonrpsee::core::ClientError::Call(err) = err else {
        panic!("{err:?}")
    };
    assert_eq!(err.code(), codes::EXECUTION_FAILED, "{}", err.message());
    assert!(
        err.message().contains("vm.max_write_bytes_per_call"),
        "{}",
        err.message()
    );
    let rss = peak_rss_mib(child.id());
    println!(
        "1000 x 1 MiB call refused after {} ms; node peak RSS {rss:?} MiB",
        elapsed.as_millis()
    );
    if let Some(rss) = rss {
        // Wave 1 reached 3.4 GB here; the write set is now capped at 16 MiB.
        assert!(rss < 1024, "peak RSS {rss} MiB");
    }
    // Nothing was written; the node serves on.
    assert_eq!(
        StateApiClient::root(&client, program)
            .await
            .unwrap()
            .state_root,
        root_before.state_root
    );
    assert!(NodeApiClient::health(&client).await.unwrap().ready);

    // A call within the cap pays for its bytes: 1 MiB written costs over 20M units.
    let ok = ProgramApiClient::execute(&client, program, writes(1, 1 << 20).into(), Some(max_fuel))
        .await
        .unwrap();
    assert!(ok.fuel_used > 20 * (1 << 20), "fuel {}", ok.fuel_used);
    common::kill9(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_slot_flood_is_refused_fast_and_leaves_room_for_others() {
    use onvm::rpc_api::api::BlobApiClient;
    use onvm::rpc_api::auth::Scope;
    let dir = tempfile::tempdir().unwrap();
    common::init_plaintext(dir.path());
    let (child, url) = common::spawn_node(
        dir.path(),
        &["--set", "blobs.max_open_uploads_per_client=4"],
    );
    let operator = common::ws_client(&url).await;
    let mut clients = Vec::new();
    for label in ["flooder", "neighbour"] {
        let token = common::new_token(&operator, &[Scope::Upload], label).await;
        clients.push(common::ws_client_as(&url, Some(&token)).await);
    }
    // 64 uploads declaring 4 GiB each: the client's share (4) at most, then fast refusals
    // (busy for the share, or the free-disk rule if this disk has less than 16 GiB spare).
    let started = Instant::now();
    let mut open = 0;
    let mut refusals = std::collections::BTreeMap::new();
    for _ in 0..64 {
        match BlobApiClient::upload_begin(&clients[0], 4 << 30, None).await {
            Ok(_) => open += 1,
            Err(jsonrpsee::core::ClientError::Call(e)) => {
                assert!(
                    e.code() == codes::BUSY || e.code() == codes::LIMIT_EXCEEDED,
                    "{e:?}"
                );
                *refusals
                    .entry(onvm::rpc_api::error::error_data(&e).unwrap().kind)
                    .or_insert(0) += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(open <= 4, "{open} uploads of one client are open");
    let rss = peak_rss_mib(child.id());
    println!(
        "64 x 4 GiB upload_begin: {open} open, refusals {refusals:?}, {} ms, node peak RSS {rss:?} MiB",
        elapsed.as_millis()
    );
    // The neighbour still gets a slot.
    let small = BlobApiClient::upload_begin(&clients[1], 1024, None).await;
    assert!(small.is_ok(), "{small:?}");
    common::kill9(child);
}

#[tokio::test]
async fn uploads_and_puts_keep_the_configured_disk_reserve_free() {
    use onvm::rpc_api::api::BlobApiClient;
    // A reserve no disk can meet: every new upload and inline put is refused, with the numbers.
    let node =
        common::TestNode::start_with(&["blobs.min_free_disk_bytes=1000000000000000000"]).await;
    let client = node.client().await;
    let jsonrpsee::core::ClientError::Call(e) = BlobApiClient::upload_begin(&client, 10, None)
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!(e.code(), codes::LIMIT_EXCEEDED);
    let data = onvm::rpc_api::error::error_data(&e).unwrap();
    assert_eq!(data.kind, "disk_space");
    assert!(data.detail["free"].as_u64().is_some(), "{data:?}");
    assert!(
        e.message().contains("blobs.min_free_disk_bytes"),
        "{}",
        e.message()
    );
    let put = BlobApiClient::put(&client, b"hello".to_vec().into(), None).await;
    assert!(put.is_err());
    // Below the reserve the node says so: health is not ready, naming the disk.
    let health = NodeApiClient::health(&client).await.unwrap();
    assert!(!health.ready);
    assert!(health.reason.unwrap_or_default().starts_with("disk:"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_pipelining_calls_leaves_vm_slots_to_other_clients() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Four VM slots, two per connection: a client that pipelines six long calls holds two.
    let node = common::TestNode::start_with(&[
        "vm.max_concurrent_calls=4",
        "rpc.max_calls_per_connection=2",
        "vm.max_fuel=10000000000",
    ])
    .await;
    let operator = node.client().await;
    let program = ProgramApiClient::deploy(
        &operator,
        DeployRequest {
            wasm_base64: Some(common::program_wasm("job_test").into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .program_id;
    let busy = ExecuteOptions {
        fuel: Some(8_000_000_000),
        read_only: true,
        ..Default::default()
    };
    // Each call runs until its 8e9 fuel is spent (a good part of a second); its outcome,
    // out of fuel, does not matter here.
    let work = br#"{"task":"stress","iterations":100000000000}"#.to_vec();
    let greedy = Arc::new(node.client().await);
    let done = Arc::new(AtomicUsize::new(0));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (greedy, done, work, busy) = (greedy.clone(), done.clone(), work.clone(), busy.clone());
        calls.spawn(async move {
            let ran = ProgramApiClient::execute(&*greedy, program, work.into(), Some(busy)).await;
            assert!(ran.unwrap_err().to_string().contains("out of fuel"));
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    // Let the six calls reach the node first (ordering only; nothing is timed).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let other = node.client().await;
    let ran =
        ProgramApiClient::execute(&other, program, work.clone().into(), Some(busy.clone())).await;
    assert!(ran.unwrap_err().to_string().contains("out of fuel"));
    let greedy_done = done.load(Ordering::SeqCst);
    // Without the share, the greedy client takes all four slots and the other call queues
    // behind its two waiting calls: it ends with the second round, after four or more.
    assert!(
        greedy_done < 4,
        "the other client waited for {greedy_done} of the greedy client's 6 calls"
    );
    while let Some(r) = calls.join_next().await {
        r.unwrap();
    }
    node.stop().await;
}
