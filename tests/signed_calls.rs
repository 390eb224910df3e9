//! Signed calls: a client key signs what it asks for; the program sees the caller, the receipt
//! records it with the proof, and a forged, replayed or expired request is refused: by the
//! accepting node, by every committee member, and by replicas and auditors.

mod common;

use common::TestNode;
use common::raw::{ws_call, ws_handshake};
use onvm::rpc_api::api::{JobApiClient, PeerApiClient, ProgramApiClient};
use onvm::rpc_api::auth::Scope;
use onvm::rpc_api::caller::{SignedTerms, SigningKey, sign_call};
use onvm::rpc_api::error as codes;
use onvm::rpc_api::program::DEFAULT_FUEL;
use onvm::rpc_api::program::{DeployRequest, ExecuteOptions, ExecuteResult, verify_receipt};
use onvm::rpc_api::{Hash32, ProgramId};
use serde_json::{Value, json};

const WHOAMI: &str = include_str!("fixtures/whoami.wat");
const NETWORK: &str = "onvm-devnet";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn deploy_whoami(client: &jsonrpsee::ws_client::WsClient, require_signed: bool) -> ProgramId {
    ProgramApiClient::deploy(
        client,
        DeployRequest {
            wasm_base64: Some(wat::parse_str(WHOAMI).unwrap().into()),
            extra_entrypoints: vec!["whoami".into()],
            require_signed_calls: require_signed,
            salt: format!("signed={require_signed}"),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .program_id
}

/// The options of a call signed by `key` (the signature covers entrypoint, input, request id
/// and expiry).
fn signed_options(
    key: &SigningKey,
    program: &ProgramId,
    entrypoint: &str,
    input: &[u8],
    request_id: &str,
    expires_at_ms: u64,
) -> ExecuteOptions {
    let terms = SignedTerms::call(expires_at_ms, DEFAULT_FUEL);
    ExecuteOptions {
        entrypoint: Some(entrypoint.into()),
        request_id: Some(request_id.into()),
        fuel: Some(terms.fuel),
        signed: Some(sign_call(
            key, NETWORK, program, entrypoint, input, request_id, &terms,
        )),
        ..Default::default()
    }
}

/// `program_execute` over the raw socket: the result, or the error object.
async fn execute(
    ws: &mut tokio::net::TcpStream,
    program: &ProgramId,
    input: &[u8],
    options: &ExecuteOptions,
) -> Result<ExecuteResult, Value> {
    let params = json!([program, b64(input), options]).to_string();
    let response = ws_call(ws, "program_execute", &params).await;
    match response.get("result") {
        Some(result) => Ok(serde_json::from_value(result.clone()).unwrap()),
        None => Err(response["error"].clone()),
    }
}

fn kind(error: &Value) -> (i64, String) {
    (
        error["code"].as_i64().unwrap_or(0),
        error["data"]["kind"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_calls_name_their_caller_and_forged_replayed_or_expired_ones_are_refused() {
    let node = TestNode::start().await;
    let operator = node.client().await;
    let program = deploy_whoami(&operator, false).await;
    // A dApp: a raw WebSocket with a token that may read and execute, nothing more.
    let token = common::new_token(&operator, &[Scope::Read, Scope::Execute], "dapp").await;
    let bearer = format!("Bearer {token}");
    let handshake = ws_handshake(
        node.node().rpc_addr(),
        "/",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(handshake.status, 101, "{}", handshake.head);
    let mut ws = handshake.stream;
    let (alice, bob) = (key(1), key(2));
    let alice_id = Hash32(alice.verifying_key().to_bytes());
    let bob_id = Hash32(bob.verifying_key().to_bytes());
    let expires = now_ms() + 60_000;

    // Two keys, two callers: the guest sees each, the receipt records each with its proof.
    let mut heights = Vec::new();
    for (who, id, request) in [(&alice, alice_id, "a-1"), (&bob, bob_id, "b-1")] {
        let options = signed_options(who, &program, "onvm_main", b"", request, expires);
        let r = execute(&mut ws, &program, b"", &options).await.unwrap();
        assert_eq!(
            r.output_base64.0,
            id.0.to_vec(),
            "the guest sees its caller"
        );
        let receipt = r.receipt.unwrap();
        assert_eq!(receipt.receipt.caller, id);
        let proof = receipt.receipt.caller_proof.clone().unwrap();
        assert_eq!(proof.request_id, request);
        verify_receipt(&receipt, Some(NETWORK), None).unwrap();
        heights.push(receipt.receipt.height);
    }
    assert_eq!(heights, vec![0, 1]);
    // An anonymous call still works and sees the zero caller.
    let r = execute(&mut ws, &program, b"", &ExecuteOptions::default())
        .await
        .unwrap();
    assert_eq!(r.output_base64.0, vec![0u8; 32]);
    assert_eq!(r.receipt.unwrap().receipt.caller, Hash32::ZERO);
    // A read-only signed call names its caller too (no receipt); the dry run is signed.
    let mut options = signed_options(&bob, &program, "whoami", b"", "b-ro", expires);
    options.read_only = true;
    let refused = execute(&mut ws, &program, b"", &options).await.unwrap_err();
    assert_eq!(
        refused["data"]["kind"], "bad_call_signature",
        "a write's signature is no good for a dry run: {refused}"
    );
    let dry_terms = SignedTerms {
        read_only: true,
        ..SignedTerms::call(expires, DEFAULT_FUEL)
    };
    options.signed = Some(sign_call(
        &bob, NETWORK, &program, "whoami", b"", "b-ro", &dry_terms,
    ));
    let r = execute(&mut ws, &program, b"", &options).await.unwrap();
    assert_eq!(r.output_base64.0, bob_id.0.to_vec());
    assert!(r.receipt.is_none());
    // Nor is a dry run's signature any good for a write (it would commit under bob's id).
    options.read_only = false;
    let refused = execute(&mut ws, &program, b"", &options).await.unwrap_err();
    assert_eq!(refused["data"]["kind"], "bad_call_signature", "{refused}");
    // Whoever sees a signed call cannot send it first with other fuel (an out-of-fuel
    // failure committed under the caller's request id), nor leave the fuel out.
    let mut options = signed_options(&bob, &program, "onvm_main", b"", "b-fuel", expires);
    options.fuel = Some(1);
    let refused = execute(&mut ws, &program, b"", &options).await.unwrap_err();
    assert_eq!(refused["data"]["kind"], "bad_call_signature", "{refused}");
    options.fuel = None;
    let refused = execute(&mut ws, &program, b"", &options).await.unwrap_err();
    assert_eq!(refused["data"]["kind"], "bad_signed_call", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("fuel"),
        "{refused}"
    );
    // Nor pin a timestamp the caller did not sign.
    let mut options = signed_options(&bob, &program, "onvm_main", b"", "b-fuel", expires);
    options.timestamp_ms = Some(now_ms());
    let refused = execute(&mut ws, &program, b"", &options).await.unwrap_err();
    assert_eq!(refused["data"]["kind"], "bad_call_signature", "{refused}");
    // A v1 client (no version) is told to sign v2.
    let mut options = signed_options(&bob, &program, "onvm_main", b"", "b-v1", expires);
    if let Some(signed) = options.signed.as_mut() {
        signed.version = 1;
    }
    let refused = execute(&mut ws, &program, b"", &options).await.unwrap_err();
    assert_eq!(refused["data"]["kind"], "bad_signed_call", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("v2"),
        "{refused}"
    );
    // And the call as signed still runs afterwards: nothing was committed under its id.
    let options = signed_options(&bob, &program, "onvm_main", b"", "b-fuel", expires);
    let r = execute(&mut ws, &program, b"", &options).await.unwrap();
    assert_eq!(r.outcome, onvm::rpc_api::program::Outcome::Ok);

    // Replaying a signed request never executes it again: the committed answer comes back.
    let options = signed_options(&alice, &program, "onvm_main", b"", "a-1", expires);
    let replay = execute(&mut ws, &program, b"", &options).await.unwrap();
    assert_eq!(replay.receipt.unwrap().receipt.height, 0);
    let info = ProgramApiClient::info(&operator, program).await.unwrap();
    assert_eq!(
        info.height, 4,
        "three calls and b-fuel; the refused attempts and the replay took no height"
    );

    // Forged: Alice's signature presented as Bob's.
    let mut forged = signed_options(&alice, &program, "onvm_main", b"", "f-1", expires);
    if let Some(s) = forged.signed.as_mut() {
        s.caller = bob_id;
    }
    let e = execute(&mut ws, &program, b"", &forged).await.unwrap_err();
    assert_eq!(
        kind(&e),
        (codes::FORBIDDEN as i64, "bad_call_signature".into()),
        "{e}"
    );
    // The signature replayed onto another request id, input, entrypoint or program.
    let signed = signed_options(&alice, &program, "onvm_main", b"", "a-2", expires);
    let mut other_id = signed.clone();
    other_id.request_id = Some("a-3".into());
    let mut other_ep = signed.clone();
    other_ep.entrypoint = Some("whoami".into());
    for (input, options) in [
        (&b""[..], &other_id),
        (&b"x"[..], &signed),
        (&b""[..], &other_ep),
    ] {
        let e = execute(&mut ws, &program, input, options)
            .await
            .unwrap_err();
        assert_eq!(kind(&e).1, "bad_call_signature", "{e}");
    }
    let elsewhere = deploy_whoami(&operator, true).await;
    let e = execute(&mut ws, &elsewhere, b"", &signed)
        .await
        .unwrap_err();
    assert_eq!(kind(&e).1, "bad_call_signature", "{e}");
    // Expired.
    let stale = signed_options(&alice, &program, "onvm_main", b"", "a-old", now_ms() - 1);
    let e = execute(&mut ws, &program, b"", &stale).await.unwrap_err();
    assert_eq!(
        kind(&e),
        (codes::FORBIDDEN as i64, "call_expired".into()),
        "{e}"
    );
    // A signed call must name what it signed.
    let mut no_id = signed.clone();
    no_id.request_id = None;
    let e = execute(&mut ws, &program, b"", &no_id).await.unwrap_err();
    assert_eq!(kind(&e).1, "bad_signed_call", "{e}");
    // A malformed signature object is a parameter error naming the field.
    let params = json!([program, "", {"request_id": "z", "entrypoint": "onvm_main",
        "signed": {"caller": alice_id, "expires_at_ms": expires, "signature": "00", "extra": 1}}]);
    let response = ws_call(&mut ws, "program_execute", &params.to_string()).await;
    assert_eq!(
        response["error"]["code"],
        codes::INVALID_PARAMS,
        "{response}"
    );
    assert!(
        response["error"].to_string().contains("extra"),
        "{response}"
    );
    // Nothing refused took a height.
    let info = ProgramApiClient::info(&operator, program).await.unwrap();
    assert_eq!(info.height, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_requires_signed_calls_refuses_anonymous_writes_and_jobs() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let program = deploy_whoami(&client, true).await;
    let info = ProgramApiClient::info(&client, program).await.unwrap();
    assert!(info.manifest.manifest.require_signed_calls);

    let e = ProgramApiClient::execute(&client, program, Vec::new().into(), None)
        .await
        .unwrap_err();
    let data = match &e {
        jsonrpsee::core::ClientError::Call(obj) => {
            assert_eq!(obj.code(), codes::FORBIDDEN);
            codes::error_data(obj).unwrap()
        }
        other => panic!("{other}"),
    };
    assert_eq!(data.kind, "signed_call_required");
    let job = JobApiClient::submit(
        &client,
        onvm::rpc_api::jobs::SubmitJob {
            program_id: program,
            request_id: "j1".into(),
            input_base64: Some(Vec::new().into()),
            input_blob: None,
            entrypoint: None,
            max_retries: None,
            timeout_ms: None,
            fuel: None,
            metadata: None,
            signed: None,
        },
    )
    .await
    .unwrap_err();
    assert!(job.to_string().contains("signed"), "{job}");
    // Reading anonymously is fine (it changes nothing); a signed write goes through.
    let read = ExecuteOptions {
        read_only: true,
        entrypoint: Some("whoami".into()),
        ..Default::default()
    };
    ProgramApiClient::execute(&client, program, Vec::new().into(), Some(read))
        .await
        .unwrap();
    let alice = key(1);
    let options = signed_options(&alice, &program, "onvm_main", b"", "r1", now_ms() + 60_000);
    let r = ProgramApiClient::execute(&client, program, Vec::new().into(), Some(options))
        .await
        .unwrap();
    assert_eq!(
        r.receipt.unwrap().receipt.caller,
        Hash32(alice.verifying_key().to_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_check_the_caller_and_replicas_agree_on_it() {
    // A proposes every signed call under a caller that never signed it; B and C must refuse.
    let a = TestNode::start_with(&["committee.debug_forge_callers=true"]).await;
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    for n in [&b, &c] {
        PeerApiClient::connect(&n.client().await, common::ticket(&a).await)
            .await
            .unwrap();
    }
    common::converge(&[&a, &b, &c]).await;
    let program = ProgramApiClient::deploy(
        &b.client().await,
        DeployRequest {
            wasm_base64: Some(wat::parse_str(WHOAMI).unwrap().into()),
            committee_size: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .program_id;
    common::converge(&[&a, &b, &c]).await;
    let committee = ProgramApiClient::committee(&b.client().await, program)
        .await
        .unwrap();
    assert_eq!(committee.members.len(), 3);

    // B is the home and honest: a signed call is attested by the members (A included: the
    // forging hook only acts when A sequences) and replicated with its caller everywhere.
    let alice = key(1);
    let alice_id = Hash32(alice.verifying_key().to_bytes());
    let options = signed_options(&alice, &program, "onvm_main", b"", "r1", now_ms() + 60_000);
    let r = ProgramApiClient::execute(&b.client().await, program, Vec::new().into(), Some(options))
        .await
        .unwrap();
    let receipt = r.receipt.unwrap();
    assert!(receipt.attestation.is_some());
    assert_eq!(receipt.receipt.caller, alice_id);
    common::converge(&[&a, &b, &c]).await;
    for n in [&a, &b, &c] {
        let seen = onvm::rpc_api::api::ReceiptApiClient::get(&n.client().await, receipt.id)
            .await
            .unwrap();
        assert_eq!(seen.receipt.caller, alice_id);
    }

    // A program led by A: its forged proposal is refused by both other members, a view
    // change hands the call to an honest leader, and it commits under its real caller.
    let forged_program = ProgramApiClient::deploy(
        &a.client().await,
        DeployRequest {
            wasm_base64: Some(wat::parse_str(WHOAMI).unwrap().into()),
            committee_size: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .program_id;
    common::converge(&[&a, &b, &c]).await;
    let options = signed_options(
        &alice,
        &forged_program,
        "onvm_main",
        b"",
        "r1",
        now_ms() + 60_000,
    );
    let r = ProgramApiClient::execute(
        &a.client().await,
        forged_program,
        Vec::new().into(),
        Some(options),
    )
    .await
    .unwrap();
    let receipt = r.receipt.unwrap();
    assert_eq!(receipt.receipt.caller, alice_id, "never the forged caller");
    assert_ne!(
        receipt.receipt.executor.to_string(),
        a.node().endpoint_id(),
        "A's forged proposal was never decided"
    );
    let info = ProgramApiClient::info(&b.client().await, forged_program)
        .await
        .unwrap();
    assert!(info.height <= 1, "committed once");
}

/// A job submission signed by `key` for `program`'s `onvm_main`, allowing `max_retries`.
fn signed_job(
    key: &SigningKey,
    program: ProgramId,
    request_id: &str,
    max_retries: u32,
    expires_at_ms: u64,
) -> onvm::rpc_api::jobs::SubmitJob {
    onvm::rpc_api::jobs::SubmitJob {
        program_id: program,
        request_id: request_id.into(),
        input_base64: Some(Vec::new().into()),
        input_blob: None,
        entrypoint: Some("onvm_main".into()),
        max_retries: Some(max_retries),
        timeout_ms: None,
        fuel: Some(DEFAULT_FUEL),
        metadata: None,
        signed: Some(sign_call(
            key,
            NETWORK,
            &program,
            "onvm_main",
            b"",
            request_id,
            &SignedTerms::job(expires_at_ms, DEFAULT_FUEL, max_retries),
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_jobs_run_as_their_caller_and_forged_ones_are_refused() {
    use onvm::rpc_api::jobs::JobStatus;
    let node = TestNode::start().await;
    let client = node.client().await;
    // A program that accepts only signed calls: its jobs must be signed too.
    let program = deploy_whoami(&client, true).await;
    let alice = key(1);
    let alice_id = Hash32(alice.verifying_key().to_bytes());
    let expires = now_ms() + 60_000;

    let submitted = JobApiClient::submit(&client, signed_job(&alice, program, "job-1", 1, expires))
        .await
        .unwrap();
    assert_eq!(submitted.job.signed.as_ref().unwrap().caller, alice_id);
    let job_id = submitted.job.job_id;
    let mut job = submitted.job;
    for _ in 0..600 {
        if job.status.is_terminal() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        job = JobApiClient::status(&client, job_id).await.unwrap();
    }
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    let output = JobApiClient::output(&client, job_id).await.unwrap();
    assert_eq!(
        output.output_base64.unwrap().0,
        alice_id.0.to_vec(),
        "the attempt ran as Alice"
    );
    let receipt = onvm::rpc_api::api::ReceiptApiClient::get(&client, job.receipt_id.unwrap())
        .await
        .unwrap();
    assert_eq!(receipt.receipt.caller, alice_id);
    let proof = receipt.receipt.caller_proof.clone().unwrap();
    assert_eq!(proof.request_id, "job-1");
    assert_eq!(
        proof.job,
        Some(onvm::rpc_api::caller::JobAttemptProof {
            attempt: 1,
            max_attempts: 2
        })
    );
    verify_receipt(&receipt, Some(NETWORK), None).unwrap();

    let refused = |e: jsonrpsee::core::ClientError| match e {
        jsonrpsee::core::ClientError::Call(obj) => {
            (obj.code(), codes::error_data(&obj).unwrap().kind)
        }
        other => panic!("{other}"),
    };
    // The retry count is signed: raising it breaks the signature.
    let mut more_retries = signed_job(&alice, program, "job-2", 1, expires);
    more_retries.max_retries = Some(5);
    let e = JobApiClient::submit(&client, more_retries)
        .await
        .unwrap_err();
    assert_eq!(refused(e), (codes::FORBIDDEN, "bad_call_signature".into()));
    // So is the request id (a signature cannot be moved to a new job).
    let mut moved = signed_job(&alice, program, "job-3", 1, expires);
    moved.request_id = "job-4".into();
    let e = JobApiClient::submit(&client, moved).await.unwrap_err();
    assert_eq!(refused(e).1, "bad_call_signature");
    // Expired.
    let stale = signed_job(&alice, program, "job-5", 1, now_ms() - 1);
    let e = JobApiClient::submit(&client, stale).await.unwrap_err();
    assert_eq!(refused(e).1, "call_expired");
    // Unsigned, to a program that requires signed calls.
    let mut anonymous = signed_job(&alice, program, "job-6", 1, expires);
    anonymous.signed = None;
    let e = JobApiClient::submit(&client, anonymous).await.unwrap_err();
    assert_eq!(refused(e).1, "signed_call_required");
    // The max_retries must be named: the node's default is not what the caller signed.
    let mut implicit = signed_job(&alice, program, "job-7", 3, expires);
    implicit.max_retries = None;
    let e = JobApiClient::submit(&client, implicit).await.unwrap_err();
    assert_eq!(refused(e).1, "bad_signed_call");
    // A signed caller's request ids are its own: Bob's "job-1" is Bob's job, not Alice's.
    let bob = key(2);
    let bobs = JobApiClient::submit(&client, signed_job(&bob, program, "job-1", 1, expires))
        .await
        .unwrap();
    assert!(bobs.created, "Bob got Alice's job: {bobs:?}");
    assert_ne!(bobs.job.job_id, job_id);
    assert_eq!(
        bobs.job.signed.as_ref().unwrap().caller,
        Hash32(bob.verifying_key().to_bytes())
    );
}
