//! A real node (redb, iroh-blobs FsStore, iroh endpoint, jsonrpsee) driven through the generated
//! jsonrpsee WebSocket client, as a dApp or the CLI would.

mod common;

use common::{TestNode, pseudo_random_bytes};
use jsonrpsee::core::ClientError;
use jsonrpsee::core::client::{BatchResponse, ClientT};
use jsonrpsee::core::params::BatchRequestBuilder;
use jsonrpsee::rpc_params;
use onvm::rpc_api::api::{BlobApiClient, NodeApiClient};
use onvm::rpc_api::error::{self as codes, error_data};
use onvm::rpc_api::types::BlobStat;
use onvm::rpc_api::{BlobId, UploadId};

/// The error object of a failed call (panics on success or transport errors).
fn call_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> jsonrpsee::types::ErrorObjectOwned {
    match r {
        Err(ClientError::Call(e)) => e,
        other => panic!("expected a call error, got {other:?}"),
    }
}

/// The reason of a parameter-decoding error: jsonrpsee puts it in `data` as a string.
fn reason(err: &jsonrpsee::types::ErrorObjectOwned) -> String {
    err.data().map(|d| d.get().to_string()).unwrap_or_default()
}

/// Stores `data` the way the CLI does: inline when small, chunked otherwise.
async fn store(client: &impl ClientT, data: &[u8], chunk: usize) -> BlobStat {
    if data.len() <= chunk {
        return BlobApiClient::put(client, data.to_vec().into(), None)
            .await
            .unwrap();
    }
    let status = BlobApiClient::upload_begin(client, data.len() as u64, None)
        .await
        .unwrap();
    let mut received = 0u64;
    for piece in data.chunks(chunk) {
        let s = BlobApiClient::upload_append(
            client,
            status.upload_id.clone(),
            received,
            piece.to_vec().into(),
        )
        .await
        .unwrap();
        received = s.received;
    }
    BlobApiClient::upload_finish(client, status.upload_id, Some(BlobId::of(data)))
        .await
        .unwrap()
}

/// Reads the whole blob back in ranges of `chunk`.
async fn read_all(client: &impl ClientT, id: BlobId, chunk: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let c = BlobApiClient::get(client, id, Some(out.len() as u64), Some(chunk))
            .await
            .unwrap();
        assert_eq!(c.offset, out.len() as u64);
        out.extend_from_slice(&c.data_base64.0);
        if c.eof {
            return out;
        }
    }
}

#[tokio::test]
async fn node_info_health_and_metrics() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let info = NodeApiClient::info(&client).await.unwrap();
    assert_eq!(info.endpoint_id, node.node().endpoint_id());
    assert!(info.ticket.starts_with("endpoint"), "{}", info.ticket);
    assert!(info.offline);
    assert!(!info.addresses.is_empty());
    assert!(
        info.addresses.iter().all(|a| a.starts_with("127.0.0.1:")),
        "{:?}",
        info.addresses
    );
    assert_eq!(info.bls_public_key.len(), 192);
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));

    let health = NodeApiClient::health(&client).await.unwrap();
    assert!(health.live && health.ready, "{health:?}");
    assert_eq!(health.reason, None);
    let names: Vec<_> = health.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "database",
            "blob_store",
            "disk",
            "endpoint",
            "jobs",
            "file_descriptors"
        ]
    );
    // The node raised its open-file limit and says how many it uses.
    let fds = &health.checks[5];
    assert!(fds.ok && fds.detail.contains(" in use"), "{fds:?}");

    BlobApiClient::put(&client, b"counted".to_vec().into(), None)
        .await
        .unwrap();
    let m = NodeApiClient::metrics(&client).await.unwrap();
    assert_eq!(m.counters["blobs_added"], 1);
    assert_eq!(m.counters["blob_bytes_added"], 7);
    assert_eq!(m.gauges["blobs_stored"], 1);
    node.stop().await;
}

#[tokio::test]
async fn blob_round_trips_at_edge_sizes() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let sizes = [0usize, 1, 16 * 1024 + 1, 20 * 1024 * 1024];
    for (i, size) in sizes.into_iter().enumerate() {
        let seed = 0x5eed + i as u64;
        println!("size {size} seed {seed}");
        let data = pseudo_random_bytes(size, seed);
        // 20 MiB goes through the chunked path in 4 MiB chunks, the others inline.
        let stat = store(&client, &data, 4 * 1024 * 1024).await;
        assert_eq!(stat.id, BlobId::of(&data), "id is the BLAKE3 of the bytes");
        assert_eq!(stat.id.to_hex(), blake3::hash(&data).to_hex().to_string());
        assert_eq!(stat.size, size as u64);
        let back = read_all(&client, stat.id, 4 * 1024 * 1024).await;
        assert!(back == data, "size {size}: bytes differ");
        assert_eq!(BlobApiClient::stat(&client, stat.id).await.unwrap(), stat);
    }
    node.stop().await;
}

#[tokio::test]
async fn same_bytes_same_id_whatever_the_path() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let data = pseudo_random_bytes(100_000, 7);
    let inline = BlobApiClient::put(
        &client,
        data.clone().into(),
        Some("application/x-test".into()),
    )
    .await
    .unwrap();
    let again = BlobApiClient::put(&client, data.clone().into(), None)
        .await
        .unwrap();
    let chunked = store(&client, &data, 30_000).await;
    assert_eq!(inline.id, again.id);
    assert_eq!(inline.id, chunked.id);
    // The first put's metadata is kept.
    assert_eq!(chunked.mime.as_deref(), Some("application/x-test"));
    assert_eq!(chunked.created_at_ms, inline.created_at_ms);
    let page = BlobApiClient::list(&client, None, None).await.unwrap();
    assert_eq!(page.items.len(), 1);
    node.stop().await;
}

#[tokio::test]
async fn ranges_are_exact_and_bounded() {
    let node = TestNode::start_with(&["blobs.max_inline_bytes=65536"]).await;
    let client = node.client().await;
    let data = pseudo_random_bytes(50_000, 11);
    let id = BlobApiClient::put(&client, data.clone().into(), None)
        .await
        .unwrap()
        .id;
    for (offset, len) in [
        (0u64, 1u64),
        (1, 1023),
        (1024, 16 * 1024),
        (16 * 1024 - 1, 2),
        (49_999, 1),
        (40_000, 99_999),
    ] {
        let c = BlobApiClient::get(&client, id, Some(offset), Some(len))
            .await
            .unwrap();
        let end = (offset + len).min(50_000) as usize;
        assert!(
            c.data_base64.0 == data[offset as usize..end],
            "range {offset}+{len}"
        );
        assert_eq!(c.eof, end == 50_000);
        assert_eq!(c.total_size, 50_000);
    }
    let at_end = BlobApiClient::get(&client, id, Some(50_000), None)
        .await
        .unwrap();
    assert!(at_end.data_base64.0.is_empty() && at_end.eof);
    let past = call_error(BlobApiClient::get(&client, id, Some(50_001), None).await);
    assert_eq!(past.code(), codes::INVALID_PARAMS);
    assert_eq!(error_data(&past).unwrap().kind, "offset_out_of_range");

    // A whole-blob read larger than one response is refused with a hint, not truncated.
    let big = pseudo_random_bytes(65_536, 12);
    let big_id = BlobApiClient::put(&client, big.into(), None)
        .await
        .unwrap()
        .id;
    let whole = BlobApiClient::get(&client, big_id, None, None)
        .await
        .unwrap();
    assert_eq!(whole.data_base64.0.len(), 65_536);
    node.stop().await;

    let node = TestNode::start_with(&["blobs.max_inline_bytes=1000"]).await;
    let client = node.client().await;
    let status = BlobApiClient::upload_begin(&client, 5000, None)
        .await
        .unwrap();
    BlobApiClient::upload_append(&client, status.upload_id.clone(), 0, vec![1u8; 5000].into())
        .await
        .unwrap();
    let id = BlobApiClient::upload_finish(&client, status.upload_id, None)
        .await
        .unwrap()
        .id;
    let err = call_error(BlobApiClient::get(&client, id, None, None).await);
    assert_eq!(err.code(), codes::LIMIT_EXCEEDED);
    assert!(
        err.message().contains("pass offset and length"),
        "{}",
        err.message()
    );
    node.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_ids_get_clear_errors() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let missing = BlobId::of(b"never stored");
    for err in [
        call_error(BlobApiClient::stat(&client, missing).await),
        call_error(BlobApiClient::get(&client, missing, None, None).await),
    ] {
        assert_eq!(err.code(), codes::NOT_FOUND);
        let data = error_data(&err).unwrap();
        assert_eq!(data.kind, "blob_not_found");
        assert_eq!(data.detail["id"], missing.to_string());
    }

    // Parameter decoding errors carry the reason as a string in `data`.
    let malformed: Result<serde_json::Value, _> =
        client.request("blob_stat", rpc_params!["blob1234"]).await;
    let err = call_error(malformed);
    assert_eq!(err.code(), codes::INVALID_PARAMS);
    assert!(reason(&err).contains("malformed blob id"), "{err:?}");

    let wrong = format!("prog{}", "ab".repeat(32));
    let err = call_error(
        client
            .request::<serde_json::Value, _>("blob_stat", rpc_params![wrong])
            .await,
    );
    assert_eq!(err.code(), codes::INVALID_PARAMS);
    assert!(reason(&err).contains("expected a blob id"), "{err:?}");
    assert!(reason(&err).contains("`prog`"), "{err:?}");

    // Bare hex without the prefix is accepted.
    let bare = missing.to_hex();
    let err = call_error(
        client
            .request::<serde_json::Value, _>("blob_stat", rpc_params![bare])
            .await,
    );
    assert_eq!(err.code(), codes::NOT_FOUND);

    let err = call_error(
        client
            .request::<serde_json::Value, _>("blob_put", rpc_params!["not base64!"])
            .await,
    );
    assert_eq!(err.code(), codes::INVALID_PARAMS);
    assert!(reason(&err).contains("invalid base64"), "{err:?}");

    let err = call_error(
        client
            .request::<serde_json::Value, _>("blob_upload_status", rpc_params!["upload../../etc"])
            .await,
    );
    assert_eq!(err.code(), codes::INVALID_PARAMS);
    let unknown = UploadId::from_random([9; 16]);
    let err = call_error(BlobApiClient::upload_status(&client, unknown).await);
    assert_eq!(err.code(), codes::NOT_FOUND);
    assert_eq!(error_data(&err).unwrap().kind, "upload_not_found");
    node.stop().await;
}

#[tokio::test]
async fn oversized_requests_and_batches_are_refused_and_the_node_keeps_serving() {
    let node = TestNode::start_with(&["rpc.max_batch=4"]).await;
    let client = node.client().await;
    // 9 MiB of payload is 12 MiB of base64: over the 10 MiB request limit. Over HTTP the
    // node answers 413 with code -32007; over WebSocket it sends the same error with id null,
    // which the jsonrpsee client treats as fatal for that connection.
    let huge = vec![0u8; 9 * 1024 * 1024];
    let (status, body) = http_post(node.node().rpc_addr(), &huge_put_body(&huge)).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains(&codes::OVERSIZED_REQUEST.to_string()),
        "{body}"
    );
    assert!(
        BlobApiClient::put(&client, huge.into(), None)
            .await
            .is_err()
    );

    // Inline puts over blobs.max_inline_bytes (4 MiB) that still fit the transport.
    let client = node.client().await;
    let err =
        call_error(BlobApiClient::put(&client, vec![0u8; 5 * 1024 * 1024].into(), None).await);
    assert_eq!(err.code(), codes::LIMIT_EXCEEDED);
    assert_eq!(error_data(&err).unwrap().kind, "inline_too_large");

    // A batch over rpc.max_batch is answered with one error (id null) carrying -32010.
    let calls: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"node_health","params":[]}}"#))
        .collect();
    let (_, body) = http_post(node.node().rpc_addr(), &format!("[{}]", calls.join(","))).await;
    assert!(body.contains(&codes::OVERSIZED_BATCH.to_string()), "{body}");

    let mut batch = BatchRequestBuilder::new();
    for _ in 0..4 {
        batch.insert("node_health", rpc_params![]).unwrap();
    }
    let ok: BatchResponse<serde_json::Value> = client.batch_request(batch).await.unwrap();
    assert_eq!(ok.num_successful_calls(), 4);

    let fresh = node.client().await;
    assert!(NodeApiClient::health(&fresh).await.unwrap().ready);
    node.stop().await;
}

fn huge_put_body(data: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"blob_put","params":["{b64}"]}}"#)
}

/// A POST over a raw socket: status code and body.
async fn http_post(addr: std::net::SocketAddr, body: &str) -> (u16, String) {
    let (status, _, body) = common::raw::http(addr, "POST", &[], body).await;
    (status, body)
}

#[tokio::test]
async fn chunked_upload_resumes_and_rejects_inconsistent_appends() {
    let node =
        TestNode::start_with(&["blobs.max_chunk_bytes=1000", "blobs.max_open_uploads=2"]).await;
    let client = node.client().await;
    let data = pseudo_random_bytes(2500, 3);
    let status = BlobApiClient::upload_begin(&client, 2500, Some("text/plain".into()))
        .await
        .unwrap();
    assert_eq!(status.received, 0);
    assert_eq!(status.max_chunk_bytes, 1000);
    let id = status.upload_id.clone();
    BlobApiClient::upload_append(&client, id.clone(), 0, data[..1000].to_vec().into())
        .await
        .unwrap();

    // A chunk over the limit.
    let err = call_error(
        BlobApiClient::upload_append(&client, id.clone(), 1000, vec![0; 1001].into()).await,
    );
    assert_eq!(err.code(), codes::LIMIT_EXCEEDED);
    // A gap: the error says where to resume.
    let err = call_error(
        BlobApiClient::upload_append(&client, id.clone(), 1500, vec![0; 10].into()).await,
    );
    assert_eq!(err.code(), codes::CONFLICT);
    assert_eq!(error_data(&err).unwrap().detail["expected_offset"], 1000);
    // Re-sending the last chunk (lost reply) is accepted without writing twice ...
    let s = BlobApiClient::upload_append(&client, id.clone(), 0, data[..1000].to_vec().into())
        .await
        .unwrap();
    assert_eq!(s.received, 1000);
    // ... but different bytes at that offset are a conflict.
    let err = call_error(
        BlobApiClient::upload_append(&client, id.clone(), 0, vec![0; 1000].into()).await,
    );
    assert_eq!(err.code(), codes::CONFLICT);
    // Finishing early says how far it got.
    let err = call_error(BlobApiClient::upload_finish(&client, id.clone(), None).await);
    assert_eq!(error_data(&err).unwrap().kind, "upload_incomplete");

    // A new connection (the old one "dropped") resumes from upload_status.
    drop(client);
    let client = node.client().await;
    let s = BlobApiClient::upload_status(&client, id.clone())
        .await
        .unwrap();
    assert_eq!(s.received, 1000);
    BlobApiClient::upload_append(&client, id.clone(), 1000, data[1000..2000].to_vec().into())
        .await
        .unwrap();
    let err = call_error(
        BlobApiClient::upload_append(&client, id.clone(), 2000, vec![0; 1000].into()).await,
    );
    assert_eq!(error_data(&err).unwrap().kind, "past_declared_size");
    BlobApiClient::upload_append(&client, id.clone(), 2000, data[2000..].to_vec().into())
        .await
        .unwrap();

    // Wrong expected id: refused, nothing stored under either id.
    let wrong = BlobId::of(b"something else");
    let err = call_error(BlobApiClient::upload_finish(&client, id.clone(), Some(wrong)).await);
    assert_eq!(error_data(&err).unwrap().kind, "hash_mismatch");
    assert_eq!(
        BlobApiClient::list(&client, None, None)
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    let stat = BlobApiClient::upload_finish(&client, id.clone(), Some(BlobId::of(&data)))
        .await
        .unwrap();
    assert_eq!(stat.mime.as_deref(), Some("text/plain"));
    assert_eq!(read_all(&client, stat.id, 1000).await, data);
    // The session is gone once finished.
    let err = call_error(BlobApiClient::upload_status(&client, id.clone()).await);
    assert_eq!(err.code(), codes::NOT_FOUND);

    // Open-session cap, and abort frees a slot (idempotently).
    let a = BlobApiClient::upload_begin(&client, 10, None)
        .await
        .unwrap();
    BlobApiClient::upload_begin(&client, 10, None)
        .await
        .unwrap();
    let err = call_error(BlobApiClient::upload_begin(&client, 10, None).await);
    assert_eq!(err.code(), codes::BUSY);
    assert!(
        BlobApiClient::upload_abort(&client, a.upload_id.clone())
            .await
            .unwrap()
    );
    assert!(
        !BlobApiClient::upload_abort(&client, a.upload_id)
            .await
            .unwrap()
    );
    BlobApiClient::upload_begin(&client, 10, None)
        .await
        .unwrap();
    node.stop().await;
}

#[tokio::test]
async fn size_caps_are_enforced_before_storing() {
    let node = TestNode::start_with(&["blobs.max_blob_bytes=1000"]).await;
    let client = node.client().await;
    let err = call_error(BlobApiClient::upload_begin(&client, 1001, None).await);
    assert_eq!(err.code(), codes::LIMIT_EXCEEDED);
    assert_eq!(error_data(&err).unwrap().kind, "blob_too_large");
    let err = call_error(BlobApiClient::put(&client, vec![0; 1001].into(), None).await);
    assert_eq!(err.code(), codes::LIMIT_EXCEEDED);
    assert_eq!(
        BlobApiClient::list(&client, None, None)
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    node.stop().await;
}

#[tokio::test]
async fn listing_pages_through_every_blob_in_id_order() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let mut ids = Vec::new();
    for i in 0..25u32 {
        ids.push(
            BlobApiClient::put(&client, i.to_le_bytes().to_vec().into(), None)
                .await
                .unwrap()
                .id,
        );
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = BlobApiClient::list(&client, cursor, Some(10))
            .await
            .unwrap();
        assert!(page.items.len() <= 10);
        seen.extend(page.items.iter().map(|s| s.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let err = call_error(BlobApiClient::list(&client, Some("garbage".into()), None).await);
    assert_eq!(err.code(), codes::INVALID_PARAMS);
    node.stop().await;
}

#[tokio::test]
async fn restart_keeps_blobs_and_open_uploads() {
    let mut node = TestNode::start_with(&["blobs.max_chunk_bytes=65536"]).await;
    let small = pseudo_random_bytes(20_000, 21);
    let large = pseudo_random_bytes(300_000, 22);
    let (small_id, large_id, upload) = {
        let client = node.client().await;
        let small_id = BlobApiClient::put(&client, small.clone().into(), Some("a/b".into()))
            .await
            .unwrap()
            .id;
        let large_id = store(&client, &large, 65_536).await.id;
        let upload = BlobApiClient::upload_begin(&client, 100, None)
            .await
            .unwrap()
            .upload_id;
        BlobApiClient::upload_append(&client, upload.clone(), 0, vec![7; 40].into())
            .await
            .unwrap();
        (small_id, large_id, upload)
    };
    node.restart().await;
    let client = node.client().await;
    assert_eq!(read_all(&client, small_id, 65_536).await, small);
    assert_eq!(read_all(&client, large_id, 65_536).await, large);
    assert_eq!(
        BlobApiClient::stat(&client, small_id)
            .await
            .unwrap()
            .mime
            .as_deref(),
        Some("a/b")
    );
    assert_eq!(
        BlobApiClient::list(&client, None, None)
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let s = BlobApiClient::upload_status(&client, upload.clone())
        .await
        .unwrap();
    assert_eq!(s.received, 40);
    BlobApiClient::upload_append(&client, upload.clone(), 40, vec![7; 60].into())
        .await
        .unwrap();
    let stat = BlobApiClient::upload_finish(&client, upload, None)
        .await
        .unwrap();
    assert_eq!(stat.id, BlobId::of(&[7; 100]));
    node.stop().await;
}

#[tokio::test]
async fn concurrent_clients_upload_in_parallel() {
    let node = TestNode::start().await;
    let url = node.url();
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = common::ws_client(&url).await;
            let data = pseudo_random_bytes(200_000 + i as usize, 100 + i);
            let stat = store(&client, &data, 50_000).await;
            assert_eq!(stat.id, BlobId::of(&data));
            stat.id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let client = node.client().await;
    assert_eq!(
        BlobApiClient::list(&client, None, None)
            .await
            .unwrap()
            .items
            .len(),
        8
    );
    node.stop().await;
}

#[tokio::test]
async fn strict_input_names_unknown_fields_ids_and_units() {
    let node = TestNode::start_with(&["rpc.auth=false"]).await;
    let addr = node.node().rpc_addr();
    let client = node.client().await;
    let program = common::deploy_kvstore(&client, None).await;
    let mut ws = common::raw::ws_connect(addr, None).await;

    // A typo in an option is an error naming the field, not a silently ignored idempotency key.
    let typo = common::raw::ws_call(
        &mut ws,
        "program_execute",
        &format!(r#"["{program}", "e30=", {{"requestId": "r1"}}]"#),
    )
    .await;
    assert_eq!(typo["error"]["code"], codes::INVALID_PARAMS, "{typo}");
    assert!(
        typo.to_string().contains("unknown field `requestId`"),
        "{typo}"
    );
    let job_typo = common::raw::ws_call(
        &mut ws,
        "job_submit",
        &format!(r#"[{{"program_id": "{program}", "request_id": "j1", "retries": 3}}]"#),
    )
    .await;
    assert!(
        job_typo.to_string().contains("unknown field `retries`"),
        "{job_typo}"
    );
    let deploy_typo =
        common::raw::ws_call(&mut ws, "program_deploy", r#"[{"wasm": "AA=="}]"#).await;
    assert!(
        deploy_typo.to_string().contains("unknown field `wasm`"),
        "{deploy_typo}"
    );

    // Fuel and timeouts: the same bounds and words for a call and a job.
    for (params, needle) in [
        (
            format!(r#"["{program}", "e30=", {{"fuel": 0}}]"#),
            "fuel must be 1..=",
        ),
        (
            format!(r#"["{program}", "e30=", {{"timeout_ms": 0}}]"#),
            "timeout_ms must be 1..=",
        ),
        (
            format!(r#"["{program}", "e30=", {{"timeout_ms": 99999999}}]"#),
            "ms (vm.max_call_ms)",
        ),
    ] {
        let answer = common::raw::ws_call(&mut ws, "program_execute", &params).await;
        assert_eq!(answer["error"]["code"], codes::INVALID_PARAMS, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
        assert!(!message.contains("bytes"), "{message}");
    }
    let job_fuel = common::raw::ws_call(
        &mut ws,
        "job_submit",
        &format!(r#"[{{"program_id": "{program}", "request_id": "j2", "fuel": 0}}]"#),
    )
    .await;
    assert!(
        job_fuel["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fuel must be 1..="),
        "{job_fuel}"
    );

    // Ids that are objects or arrays are invalid requests, answered with id null.
    for id in ["{}", "[1]", r#"{"a":1}"#] {
        common::raw::send_text(
            &mut ws,
            &format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"node_health"}}"#),
        )
        .await;
        let answer: serde_json::Value =
            serde_json::from_str(&common::raw::read_text(&mut ws).await).unwrap();
        assert_eq!(answer["error"]["code"], codes::INVALID_REQUEST, "{answer}");
        assert!(answer["id"].is_null(), "{answer}");
    }
    // The connection still serves.
    let health = common::raw::ws_call(&mut ws, "node_health", "[]").await;
    assert_eq!(health["result"]["ready"], true);
    node.stop().await;
}
