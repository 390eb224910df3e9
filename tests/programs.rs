//! Programs end to end through the RPC: the real sample programs (built from wasm_programs/),
//! WAT fixtures for entrypoint shapes and hostile behaviour, receipts and state proofs.

mod common;

use common::{TestNode, example, program_wasm};
use jsonrpsee::core::ClientError;
use onvm::rpc_api::api::{NodeApiClient, ProgramApiClient, ReceiptApiClient, StateApiClient};
use onvm::rpc_api::error::{self as codes, error_data};
use onvm::rpc_api::program::{
    DeployRequest, ExecuteOptions, ExecuteResult, Outcome, verify_manifest, verify_receipt,
};
use onvm::rpc_api::smt::{EMPTY, verify_proof};
use onvm::rpc_api::{Hash32, ProgramId};

fn call_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> jsonrpsee::types::ErrorObjectOwned {
    match r {
        Err(ClientError::Call(e)) => e,
        other => panic!("expected a call error, got {other:?}"),
    }
}

async fn deploy(client: &impl ProgramApiClient, wasm: Vec<u8>) -> ProgramId {
    let req = DeployRequest {
        wasm_base64: Some(wasm.into()),
        ..Default::default()
    };
    ProgramApiClient::deploy(client, req)
        .await
        .expect("deploy")
        .program_id
}

async fn run(client: &impl ProgramApiClient, p: ProgramId, input: &[u8]) -> ExecuteResult {
    ProgramApiClient::execute(client, p, input.to_vec().into(), None)
        .await
        .expect("execute")
}

fn json_out(r: &ExecuteResult) -> serde_json::Value {
    serde_json::from_slice(&r.output_base64.0).unwrap_or_else(|e| {
        panic!(
            "output is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&r.output_base64.0)
        )
    })
}

/// The failed result carried in a -32020 error.
fn failed(err: &jsonrpsee::types::ErrorObjectOwned) -> ExecuteResult {
    assert_eq!(err.code(), codes::EXECUTION_FAILED, "{err:?}");
    let data = error_data(err).expect("typed data");
    serde_json::from_value(data.detail["result"].clone()).expect("result in data")
}

#[tokio::test]
async fn echo_uppercases_and_receipts_verify() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let p = deploy(&client, program_wasm("echo")).await;
    let r = run(&client, p, b"hello, onvm!").await;
    assert_eq!(r.output_base64.0, b"HELLO, ONVM!");
    assert_eq!(r.outcome, Outcome::Ok);
    let receipt = r.receipt.expect("writing calls get a receipt");
    verify_receipt(&receipt, Some("onvm-devnet"), None).unwrap();
    let info = NodeApiClient::info(&client).await.unwrap();
    verify_receipt(
        &receipt,
        None,
        Some(&hex::decode(&info.bls_public_key).unwrap()),
    )
    .unwrap();
    assert_eq!(receipt.receipt.output_hash, Hash32::of(b"HELLO, ONVM!"));
    assert_eq!(receipt.receipt.input_hash, Hash32::of(b"hello, onvm!"));
    assert_eq!(receipt.receipt.height, 0);
    // Stored and listed.
    assert_eq!(
        ReceiptApiClient::get(&client, receipt.id).await.unwrap(),
        receipt
    );
    // The manifest is signed by the deployer.
    let pinfo = ProgramApiClient::info(&client, p).await.unwrap();
    verify_manifest(&pinfo.manifest).unwrap();
    assert_eq!(pinfo.height, 1);
    // Redeploying the same code and salt is idempotent; another salt is another program.
    let again = ProgramApiClient::deploy(
        &client,
        DeployRequest {
            wasm_base64: Some(program_wasm("echo").into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!again.created);
    assert_eq!(again.program_id, p);
    let salted = ProgramApiClient::deploy(
        &client,
        DeployRequest {
            wasm_base64: Some(program_wasm("echo").into()),
            salt: "v2".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(salted.created);
    assert_ne!(salted.program_id, p);
    node.stop().await;
}

#[tokio::test]
async fn kvstore_documented_session_and_roots_change_exactly_with_state() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let p = deploy(&client, program_wasm("kvstore")).await;
    // (example file, documented output, does it change state?)
    let session: &[(&str, &str, bool)] = &[
        (
            "put.json",
            r#"{"ok":true,"key":"greeting","size":11,"created":true}"#,
            true,
        ),
        (
            "put_overwrite.json",
            r#"{"ok":true,"key":"greeting","size":11,"created":false}"#,
            true,
        ),
        (
            "put_apple.json",
            r#"{"ok":true,"key":"fruit/apple","size":3,"created":true}"#,
            true,
        ),
        (
            "put_banana.json",
            r#"{"ok":true,"key":"fruit/banana","size":6,"created":true}"#,
            true,
        ),
        (
            "get.json",
            r#"{"ok":true,"key":"greeting","data_base64":"aGVsbG8sIG9udm0=","size":11}"#,
            false,
        ),
        (
            "get_missing.json",
            r#"{"ok":false,"error":"not_found","key":"fruit/cherry","message":"no value is stored under this key"}"#,
            false,
        ),
        (
            "list.json",
            r#"{"ok":true,"keys":["fruit/apple","fruit/banana","greeting"],"next":null}"#,
            false,
        ),
        (
            "list_page1.json",
            r#"{"ok":true,"keys":["fruit/apple"],"next":"fruit/apple"}"#,
            false,
        ),
        (
            "list_page2.json",
            r#"{"ok":true,"keys":["fruit/banana"],"next":null}"#,
            false,
        ),
        (
            "stats.json",
            r#"{"ok":true,"count":3,"total_bytes":20}"#,
            false,
        ),
        (
            "delete.json",
            r#"{"ok":true,"key":"fruit/apple","deleted":true}"#,
            true,
        ),
        (
            "delete.json",
            r#"{"ok":true,"key":"fruit/apple","deleted":false}"#,
            false,
        ),
        (
            "stats.json",
            r#"{"ok":true,"count":2,"total_bytes":17}"#,
            false,
        ),
        ("clear.json", r#"{"ok":true,"deleted":2}"#, true),
        (
            "stats.json",
            r#"{"ok":true,"count":0,"total_bytes":0}"#,
            false,
        ),
        (
            "bad_key.json",
            r#"{"ok":false,"error":"bad_key","message":"key must not be empty"}"#,
            false,
        ),
    ];
    let mut root = EMPTY;
    for (file, expected, changes) in session {
        let r = run(&client, p, &example("kvstore", file)).await;
        let expected: serde_json::Value = serde_json::from_str(expected).unwrap();
        assert_eq!(json_out(&r), expected, "{file}");
        assert_eq!(r.state_root_in, root, "{file}");
        let moved = r.state_root_out != r.state_root_in;
        assert_eq!(moved, *changes, "{file}: root moved = {moved}");
        root = r.state_root_out;
    }
    // Writing the same value again leaves the root where it is.
    run(&client, p, &example("kvstore", "put_apple.json")).await;
    let same = run(&client, p, &example("kvstore", "put_apple.json")).await;
    assert_eq!(same.state_root_in, same.state_root_out);
    run(&client, p, &example("kvstore", "clear.json")).await;
    root = ProgramApiClient::info(&client, p).await.unwrap().state_root;
    // `clear` really deletes: the state is empty again, so the root is the empty root.
    assert_eq!(root, EMPTY);
    let info = ProgramApiClient::info(&client, p).await.unwrap();
    assert_eq!(info.keys, 0);
    assert_eq!(info.height, session.len() as u64 + 3);
    // Read-only calls see the state, write nothing, get no receipt.
    let ro = ProgramApiClient::execute(
        &client,
        p,
        example("kvstore", "stats.json").into(),
        Some(ExecuteOptions {
            read_only: true,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert!(ro.receipt.is_none());
    assert_eq!(
        ProgramApiClient::info(&client, p).await.unwrap().height,
        info.height
    );
    // A read-only put is refused by the host, nothing changes.
    let err = call_error(
        ProgramApiClient::execute(
            &client,
            p,
            example("kvstore", "put.json").into(),
            Some(ExecuteOptions {
                read_only: true,
                ..Default::default()
            }),
        )
        .await,
    );
    let f = failed(&err);
    assert!(
        matches!(&f.outcome, Outcome::Trap { kind, .. } if kind == "read_only"),
        "{:?}",
        f.outcome
    );
    assert_eq!(
        ProgramApiClient::info(&client, p).await.unwrap().state_root,
        EMPTY
    );
    node.stop().await;
}

#[tokio::test]
async fn state_proofs_verify_and_tampering_fails() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let p = deploy(&client, program_wasm("kvstore")).await;
    for (k, v) in [("a", "MQ=="), ("b", "Mg=="), ("c", "Mw==")] {
        run(
            &client,
            p,
            format!(r#"{{"op":"put","key":"{k}","data_base64":"{v}"}}"#).as_bytes(),
        )
        .await;
    }
    let proof = StateApiClient::proof(&client, p, b"d/b".to_vec().into())
        .await
        .unwrap();
    let value = proof.value_base64.clone().expect("present");
    assert_eq!(value.0, b"2");
    verify_proof(&proof.state_root, b"d/b", Some(&value.0), &proof.proof).unwrap();
    assert!(verify_proof(&proof.state_root, b"d/b", Some(b"3"), &proof.proof).is_err());
    let mut tampered = proof.proof.clone();
    if let Some(s) = tampered.siblings.first_mut() {
        s.0[0] ^= 0xff;
        assert!(verify_proof(&proof.state_root, b"d/b", Some(&value.0), &tampered).is_err());
    }
    let absent = StateApiClient::proof(&client, p, b"d/zzz".to_vec().into())
        .await
        .unwrap();
    assert!(absent.value_base64.is_none());
    verify_proof(&absent.state_root, b"d/zzz", None, &absent.proof).unwrap();
    assert!(verify_proof(&absent.state_root, b"d/zzz", Some(b"x"), &absent.proof).is_err());
    let root = StateApiClient::root(&client, p).await.unwrap();
    assert_eq!(root.state_root, proof.state_root);
    assert_eq!(root.keys, 5, "3 data keys + 2 counters");
    let got = StateApiClient::get(&client, p, b"d/c".to_vec().into())
        .await
        .unwrap();
    assert_eq!(got.value_base64.unwrap().0, b"3");
    node.stop().await;
}

#[tokio::test]
async fn analytics_and_job_test_match_their_documented_outputs() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let a = deploy(&client, program_wasm("analytics")).await;
    let cases = [
        (
            "text.json",
            r#"{"text":{"bytes":74,"blake3":"6e16dccd8696ea32c5e8bacf70b3cf9558a11df3d5ba4b7324c5d653b8da9aa8","tokens":15,"unique_tokens":10,"top_tokens":[["the",4],["dog",2],["fox",2]]}}"#,
        ),
        (
            "numbers.json",
            r#"{"numbers":{"count":8,"mean":5.0,"variance":4.571428571428571,"min":2.0,"max":9.0}}"#,
        ),
        (
            "full.json",
            r#"{"text":{"bytes":60,"blake3":"bc2b372826ea7d5713c22ae27f565b9364303156f429a7cd4700cde0b5796092","tokens":16,"unique_tokens":8,"top_tokens":[["be",4],["to",4]]},"numbers":{"count":3,"mean":3.0833333333333335,"variance":39.395833333333336,"min":-2.25,"max":10.0},"lz4":{"original_size":60,"compressed_size":47,"compressed_base64":"0XRvIGJlIG9yIG5vdCANABIsBwAJFADwBzogdGhhdCBpcyB0aGUgcXVlc3Rpb24="}}"#,
        ),
    ];
    for (file, expected) in cases {
        let r = run(&client, a, &example("analytics", file)).await;
        assert_eq!(r.output_base64.0, expected.as_bytes(), "{file}");
    }
    let j = deploy(&client, program_wasm("job_test")).await;
    let jobs = [
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
        ("count.json", r#"{"task":"count","runs":1}"#),
        ("count.json", r#"{"task":"count","runs":2}"#),
    ];
    for (file, expected) in jobs {
        let r = ProgramApiClient::execute(
            &client,
            j,
            example("job-test", file).into(),
            Some(ExecuteOptions {
                fuel: Some(1_000_000_000),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&r.output_base64.0),
            expected,
            "{file}"
        );
    }
    let err = call_error(
        ProgramApiClient::execute(&client, j, example("job-test", "fail.json").into(), None).await,
    );
    let f = failed(&err);
    assert_eq!(
        f.outcome,
        Outcome::Trap {
            kind: "guest_abort".into(),
            message: "deliberate failure".into()
        }
    );
    assert_eq!(error_data(&err).unwrap().kind, "trap");
    assert_eq!(error_data(&err).unwrap().detail["trap_kind"], "guest_abort");
    // Failed calls get receipts too, with the state unchanged.
    let receipt = f.receipt.expect("failed writing calls get a receipt");
    assert_eq!(
        receipt.receipt.state_root_in,
        receipt.receipt.state_root_out
    );
    verify_receipt(&receipt, None, None).unwrap();
    node.stop().await;
}

const SHAPES: [(&str, &str); 3] = [
    (
        "multi",
        r#"(module (memory (export "memory") 1)
        (func (export "onvm_main") (param i32 i32) (result i32 i32) local.get 0 local.get 1))"#,
    ),
    (
        "packed",
        r#"(module (memory (export "memory") 1)
        (func (export "onvm_main") (param i32 i32) (result i64)
          local.get 0 i64.extend_i32_u i64.const 32 i64.shl local.get 1 i64.extend_i32_u i64.or))"#,
    ),
    (
        "sret",
        r#"(module (memory (export "memory") 1)
        (func (export "onvm_main") (param i32 i32 i32)
          local.get 0 local.get 1 i32.store local.get 0 local.get 2 i32.store offset=4))"#,
    ),
];

#[tokio::test]
async fn all_three_entrypoint_shapes_work_through_the_rpc() {
    let node = TestNode::start().await;
    let client = node.client().await;
    for (name, wat_src) in SHAPES {
        let p = deploy(&client, wat::parse_str(wat_src).unwrap()).await;
        let r = run(&client, p, name.as_bytes()).await;
        assert_eq!(r.output_base64.0, name.as_bytes(), "{name}");
    }
    node.stop().await;
}

/// Each hostile module writes a key first, then misbehaves: a typed error, no state change.
#[tokio::test]
async fn hostile_programs_fail_cleanly_and_the_node_stays_healthy() {
    let node =
        TestNode::start_with(&["vm.max_memory_bytes=8388608", "vm.max_output_bytes=65536"]).await;
    let client = node.client().await;
    let module = |body: &str| {
        format!(
            r#"(module
            (import "env" "onvm_state_put" (func $put (param i32 i32 i32 i32) (result i32)))
            (import "env" "onvm_state_get" (func $get (param i32 i32 i32 i32) (result i64)))
            (memory (export "memory") 1)
            (func $deep (param i32) (result i32) local.get 0 i32.const 1 i32.add call $deep)
            (func (export "onvm_main") (param i32 i32) (result i32 i32)
              (drop (call $put (i32.const 0) (i32.const 4) (i32.const 0) (i32.const 4)))
              {body}))"#
        )
    };
    let cases = [
        (
            "loop forever",
            "(loop $l br $l) i32.const 0 i32.const 0",
            "out_of_fuel",
        ),
        (
            "eat memory",
            "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) i32.const 0 i32.const 0",
            "memory_limit",
        ),
        (
            "recurse 1e6 deep",
            "i32.const 0 call $deep drop i32.const 0 i32.const 0",
            "stack_overflow",
        ),
        ("huge output", "i32.const 0 i32.const 1000000", "bad_output"),
        (
            "bad pointer",
            "(drop (call $get (i32.const 0) (i32.const 4) (i32.const 2000000000) (i32.const 8))) i32.const 0 i32.const 0",
            "trap",
        ),
    ];
    for (what, body, kind) in cases {
        let p = deploy(&client, wat::parse_str(module(body)).unwrap()).await;
        let err = call_error(
            ProgramApiClient::execute(
                &client,
                p,
                vec![].into(),
                Some(ExecuteOptions {
                    fuel: Some(5_000_000),
                    ..Default::default()
                }),
            )
            .await,
        );
        assert_eq!(error_data(&err).unwrap().kind, kind, "{what}: {err:?}");
        let f = failed(&err);
        if what == "bad pointer" {
            assert_eq!(
                error_data(&err).unwrap().detail["trap_kind"],
                "host_bad_pointer",
                "{err:?}"
            );
        }
        assert_eq!(f.state_root_out, EMPTY, "{what}: nothing written");
        let info = ProgramApiClient::info(&client, p).await.unwrap();
        assert_eq!(
            (info.keys, info.state_root, info.height),
            (0, EMPTY, 1),
            "{what}"
        );
    }
    // Deploy-time refusals: malformed, unknown import, missing entrypoint.
    let bad = [
        (b"\0asm\x01\0\0\0\x01\xff".to_vec(), "invalid WebAssembly"),
        (b"#!/bin/sh\necho hi".to_vec(), "not a WebAssembly module"),
        (wat::parse_str(r#"(module (import "env" "system" (func)) (memory (export "memory") 1) (func (export "onvm_main") (param i32 i32) (result i64) i64.const 0))"#).unwrap(), "env.system"),
        (wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap(), "onvm_main"),
    ];
    for (wasm, reason) in bad {
        let err = call_error(
            ProgramApiClient::deploy(
                &client,
                DeployRequest {
                    wasm_base64: Some(wasm.into()),
                    ..Default::default()
                },
            )
            .await,
        );
        assert_eq!(err.code(), codes::INVALID_PROGRAM, "{reason}");
        assert!(err.message().contains(reason), "{}", err.message());
    }
    let catalog = ProgramApiClient::list(&client, None, None).await.unwrap();
    assert_eq!(catalog.items.len(), cases.len());
    assert!(NodeApiClient::health(&client).await.unwrap().ready);
    // Limits on the request itself.
    let p = catalog.items[0].program_id;
    let err = call_error(
        ProgramApiClient::execute(
            &client,
            p,
            vec![].into(),
            Some(ExecuteOptions {
                fuel: Some(u64::MAX),
                ..Default::default()
            }),
        )
        .await,
    );
    assert_eq!(err.code(), codes::INVALID_PARAMS);
    assert!(
        err.message().contains("fuel must be 1..="),
        "{}",
        err.message()
    );
    let unknown = ProgramId::from_bytes([3; 32]);
    let err = call_error(ProgramApiClient::execute(&client, unknown, vec![].into(), None).await);
    assert_eq!(err.code(), codes::NOT_FOUND);
    node.stop().await;
}

#[tokio::test]
async fn the_same_calls_on_two_fresh_nodes_give_identical_receipts() {
    // Two separate nodes with one identity: the same deployer, wasm and salt give the same
    // program id (ids bind the deployer), and the same calls give byte-identical receipts.
    let a = TestNode::start().await;
    let b = TestNode::start_as(&a).await;
    let (ca, cb) = (a.client().await, b.client().await);
    let pa = deploy(&ca, program_wasm("kvstore")).await;
    let pb = deploy(&cb, program_wasm("kvstore")).await;
    assert_eq!(pa, pb, "program ids are content-derived");
    // Another deployer of the same wasm gets another program.
    let c = TestNode::start().await;
    let pc = deploy(&c.client().await, program_wasm("kvstore")).await;
    assert_ne!(pa, pc, "program ids bind the deployer");
    c.stop().await;
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let inputs = [
        "put.json",
        "put_apple.json",
        "get.json",
        "list.json",
        "delete.json",
        "stats.json",
    ];
    for (i, file) in inputs.iter().enumerate() {
        let opts = ExecuteOptions {
            timestamp_ms: Some(t0 + i as u64),
            request_id: Some(format!("call-{i}")),
            ..Default::default()
        };
        let ra =
            ProgramApiClient::execute(&ca, pa, example("kvstore", file).into(), Some(opts.clone()))
                .await
                .unwrap();
        let rb = ProgramApiClient::execute(&cb, pb, example("kvstore", file).into(), Some(opts))
            .await
            .unwrap();
        let (xa, xb) = (ra.receipt.unwrap().receipt, rb.receipt.unwrap().receipt);
        assert_eq!(
            postcard::to_allocvec(&xa).unwrap(),
            postcard::to_allocvec(&xb).unwrap(),
            "{file}"
        );
    }
    let stats_at = |timestamp_ms: u64| {
        ProgramApiClient::execute(
            &ca,
            pa,
            example("kvstore", "stats.json").into(),
            Some(ExecuteOptions {
                timestamp_ms: Some(timestamp_ms),
                ..Default::default()
            }),
        )
    };
    // A timestamp going backwards is refused.
    let err = call_error(stats_at(t0).await);
    assert_eq!(err.code(), codes::INVALID_PARAMS);
    // A timestamp far ahead of the node clock is refused: it would become the program's clock
    // and make later short-lived signed calls fail as expired.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let err = call_error(stats_at(now + 29_000).await);
    assert_eq!(err.code(), codes::INVALID_PARAMS);
    assert!(
        err.message().contains("vm.max_future_skew_ms"),
        "{}",
        err.message()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn receipts_page_newest_first_and_survive_restart() {
    let mut node = TestNode::start().await;
    let p = {
        let client = node.client().await;
        let p = deploy(&client, program_wasm("echo")).await;
        for i in 0..7 {
            run(&client, p, format!("call {i}").as_bytes()).await;
        }
        p
    };
    node.restart().await;
    let client = node.client().await;
    let first = ReceiptApiClient::list(&client, p, None, Some(3))
        .await
        .unwrap();
    assert_eq!(
        first
            .items
            .iter()
            .map(|r| r.receipt.height)
            .collect::<Vec<_>>(),
        [6, 5, 4]
    );
    let next = ReceiptApiClient::list(&client, p, first.next_before_height, Some(10))
        .await
        .unwrap();
    assert_eq!(
        next.items
            .iter()
            .map(|r| r.receipt.height)
            .collect::<Vec<_>>(),
        [3, 2, 1, 0]
    );
    assert_eq!(next.next_before_height, None);
    for r in first.items.iter().chain(&next.items) {
        verify_receipt(r, None, None).unwrap();
    }
    // Heights continue after the restart.
    let r = run(&client, p, b"after restart").await;
    assert_eq!(r.receipt.unwrap().receipt.height, 7);
    node.stop().await;
}

#[tokio::test]
async fn programs_read_only_the_blobs_they_declare() {
    use onvm::rpc_api::api::BlobApiClient;
    let node = TestNode::start().await;
    let client = node.client().await;
    let blob = BlobApiClient::put(&client, b"hello world".to_vec().into(), None)
        .await
        .unwrap()
        .id;
    let wasm = program_wasm("job_test");
    // Deployed by blob id, with the blob declared.
    let code = BlobApiClient::put(&client, wasm.into(), Some("application/wasm".into()))
        .await
        .unwrap()
        .id;
    let with_ref = ProgramApiClient::deploy(
        &client,
        DeployRequest {
            code_blob: Some(code),
            blob_refs: vec![blob],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(with_ref.manifest.manifest.code, code);
    let r = run(
        &client,
        with_ref.program_id,
        &example("job-test", "blob.json"),
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&r.output_base64.0),
        r#"{"task":"blob","size":11,"blake3":"d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24"}"#
    );
    // The same code without the declaration cannot see the blob.
    let without = ProgramApiClient::deploy(
        &client,
        DeployRequest {
            code_blob: Some(code),
            salt: "no-refs".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let out = ProgramApiClient::execute(
        &client,
        without.program_id,
        example("job-test", "blob.json").into(),
        None,
    )
    .await;
    match out {
        Ok(r) => assert!(
            String::from_utf8_lossy(&r.output_base64.0).contains("not_found"),
            "{:?}",
            r.output_base64
        ),
        Err(e) => assert_eq!(call_error::<()>(Err(e)).code(), codes::EXECUTION_FAILED),
    }
    // Declaring a blob the node does not have is refused at deploy.
    let missing = onvm::rpc_api::BlobId::of(b"absent");
    let err = call_error(
        ProgramApiClient::deploy(
            &client,
            DeployRequest {
                code_blob: Some(code),
                blob_refs: vec![missing],
                salt: "x".into(),
                ..Default::default()
            },
        )
        .await,
    );
    assert_eq!(err.code(), codes::NOT_FOUND);
    node.stop().await;
}
