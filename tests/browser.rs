//! Browser dApps in a real headless Chromium (Debian's `chromium`, which `.ci/run` installs):
//! the RSVP example with two browser profiles (two callers) against a 3-node network, each
//! answer shown verified by the committee in both pages; a tampered receipt shown as failed; the
//! dashboard following live calls, jobs and DAG operations with a read-only token. Screenshots go
//! to `target/tmp/browser/` (look at them).

#[path = "common/cdp.rs"]
mod cdp;
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cdp::{Browser, Page};
use common::TestNode;
use onvm::rpc_api::api::{ProgramApiClient, ReceiptApiClient};
use onvm::rpc_api::auth::{Scope, TokenRequest};
use onvm::rpc_api::program::DeployRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where screenshots go.
fn shots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser")
}

/// A static file server for `examples/rsvp` on loopback: the RSVP page must work from any
/// static server (another origin than the node's).
async fn serve_example() -> std::net::SocketAddr {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rsvp");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let root = root.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 8192];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&request[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let path = path.split('?').next().unwrap_or("/");
                let name = if path == "/" {
                    "index.html"
                } else {
                    path.trim_start_matches('/')
                };
                let (status, body, kind) = match std::fs::read(root.join(name)) {
                    Ok(body) if !name.contains("..") => {
                        let kind = if name.ends_with(".js") {
                            "text/javascript"
                        } else {
                            "text/html; charset=utf-8"
                        };
                        ("200 OK", body, kind)
                    }
                    _ => ("404 Not Found", b"not found".to_vec(), "text/plain"),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    addr
}

/// A token for a page of `origin`: reads and signed calls, usable from that origin only.
async fn page_token(node: &TestNode, origin: &str) -> String {
    use onvm::rpc_api::api::TokenApiClient;
    TokenApiClient::create(
        &node.client().await,
        TokenRequest {
            scopes: vec![Scope::Read, Scope::Execute],
            expires_in_secs: Some(3600),
            origins: vec![origin.to_string()],
            label: Some("rsvp page".into()),
        },
    )
    .await
    .expect("token_create")
    .token
}

/// Answers on the RSVP page: yes, or no with a reason.
async fn answer(page: &Page<'_>, attending: bool, reason: &str) {
    page.wait_for(
        "!document.querySelector('#answer-yes').disabled",
        Duration::from_secs(60),
    )
    .await;
    if attending {
        page.eval("document.querySelector('#answer-yes').click()")
            .await;
    } else {
        page.eval("document.querySelector('#answer-no').click()")
            .await;
        let set = format!(
            "(() => {{ const r = document.querySelector('#reason'); r.value = {}; r.dispatchEvent(new Event('input')); document.querySelector('#send-no').click(); return true; }})()",
            serde_json::to_string(reason).unwrap()
        );
        page.eval(&set).await;
    }
}

/// The answers a page shows: `(caller, attending, verified, signers, committee size)`.
async fn answers(page: &Page<'_>) -> Vec<(String, String, String, u64, u64)> {
    let rows = page
        .eval(
            "[...document.querySelectorAll('#answers li[data-answer]')].map(r => [r.dataset.caller, r.dataset.attending, r.dataset.verified, Number(r.dataset.signers), Number(r.dataset.committeeSize)])",
        )
        .await;
    serde_json::from_value::<Vec<(String, String, String, u64, u64)>>(rows).unwrap_or_default()
}

#[tokio::test]
async fn two_browsers_answer_the_rsvp_and_each_sees_both_answers_verified_by_the_committee() {
    let example = serve_example().await;
    let origin = format!("http://{example}");
    let allow = format!("rpc.allowed_origins=[\"{origin}\"]");
    let a = TestNode::start_with(&[&allow]).await;
    let b = TestNode::start_with(&[&allow]).await;
    let c = TestNode::start_with(&[&allow]).await;
    common::join(&a, &[&b, &c]).await;
    let program = ProgramApiClient::deploy(
        &a.client().await,
        DeployRequest {
            wasm_base64: Some(common::program_wasm("rsvp").into()),
            committee_size: Some(3),
            require_signed_calls: true,
            ..Default::default()
        },
    )
    .await
    .expect("rsvp deploys")
    .program_id;
    common::converge(&[&a, &b, &c]).await;

    // Two people, two browser profiles (two keys in two IndexedDBs), on two different nodes.
    let (alice, bob) = (Browser::launch().await, Browser::launch().await);
    let url = |node: &TestNode, token: &str| {
        format!(
            "{origin}/index.html?node={}&program={program}&token={token}",
            node.url()
        )
    };
    let started = Instant::now();
    let alice_page = alice.open(&url(&a, &page_token(&a, &origin).await)).await;
    alice_page
        .wait_for(
            "document.querySelector('#status').dataset.state === 'open'",
            Duration::from_secs(60),
        )
        .await;
    println!("RSVP page load to live feed: {:?}", started.elapsed());
    let bob_page = bob.open(&url(&b, &page_token(&b, &origin).await)).await;
    bob_page
        .wait_for(
            "document.querySelector('#status').dataset.state === 'open'",
            Duration::from_secs(60),
        )
        .await;
    let alice_id = alice_page
        .wait_for("window.rsvpPage.callerId", Duration::from_secs(10))
        .await;
    let bob_id = bob_page
        .wait_for("window.rsvpPage.callerId", Duration::from_secs(10))
        .await;
    assert_ne!(alice_id, bob_id, "two profiles are two callers");

    answer(&alice_page, true, "").await;
    answer(&bob_page, false, "Why tho? Washing my hair").await;

    for (who, page) in [("alice", &alice_page), ("bob", &bob_page)] {
        page.wait_for(
            "document.querySelectorAll('#answers li[data-answer][data-verified=\"true\"]').length === 2",
            Duration::from_secs(90),
        )
        .await;
        let shown = answers(page).await;
        assert_eq!(shown.len(), 2, "{who}: {shown:?}");
        for (caller, attending, verified, signers, size) in &shown {
            assert_eq!(verified, "true");
            assert_eq!(*size, 3, "a committee of 3");
            assert!(*signers >= 2, "at least a quorum signed: {signers}");
            let expected = if caller == alice_id.as_str().unwrap() {
                "true"
            } else {
                "false"
            };
            assert_eq!(attending, expected, "{who} sees {caller} as {attending}");
        }
        let text = page
            .eval("document.querySelector('#answers').innerText")
            .await;
        assert!(
            text.as_str().unwrap().contains("Washing my hair"),
            "{who} sees bob's reason: {text}"
        );
        page.screenshot(&shots().join(format!("rsvp-{who}.png")))
            .await;
    }

    // A tampered receipt (the answer flipped after the committee signed) is shown as failed.
    let receipts = ReceiptApiClient::list(&a.client().await, program, None, Some(10))
        .await
        .expect("receipt_list");
    let mut tampered = serde_json::to_value(&receipts.items[0]).unwrap();
    tampered["receipt"]["fuel_used"] = serde_json::json!(1);
    let ingest = format!("window.rsvpPage.ingest({tampered})");
    alice_page.eval(&ingest).await;
    alice_page
        .wait_for(
            "document.querySelector('#receipts li[data-verified=\"false\"]')",
            Duration::from_secs(10),
        )
        .await;
    let verdict = alice_page
        .eval("document.querySelector('#receipts li[data-verified=\"false\"]').textContent")
        .await;
    assert!(verdict.as_str().unwrap().contains("failed"), "{verdict}");
    alice_page
        .screenshot(&shots().join("rsvp-alice-tampered.png"))
        .await;

    // Verification in the page against the CLI's Rust code on the same receipt (3 signers).
    let receipt = serde_json::to_string(&receipts.items[0]).unwrap();
    let timed = format!(
        "(async () => {{ const v = await window.rsvpPage.client.verifier(); const r = {receipt}; const c = await window.rsvpPage.client.programCommittee(r.receipt.program_id); v.verifyReceipt({{receipt: r, committee: c}}); const t0 = performance.now(); let ok; for (let i = 0; i < 20; i++) ok = v.verifyReceipt({{receipt: r, committee: c}}); return [ok.ok, (performance.now() - t0) / 20]; }})()"
    );
    let (ok, page_ms): (bool, f64) = serde_json::from_value(alice_page.eval(&timed).await).unwrap();
    assert!(ok, "the page's verifier accepts the committee's receipt");
    let committee = ProgramApiClient::committee(&a.client().await, program)
        .await
        .unwrap();
    let network = receipts.items[0].receipt.network_id.clone();
    let verified = onvm::rpc_api::committee::VerifiedCommittee::new(committee).unwrap();
    let native = Instant::now();
    for _ in 0..20 {
        let v = onvm::rpc_api::committee::verify_signed(&receipts.items[0], &verified, &network);
        assert!(v.valid, "{v:?}");
    }
    println!(
        "receipt verification, 3 of 3 signers, committee checked once: page (wasm) {page_ms:.2} ms, native Rust (debug test build, bls12_381 at opt-level 2) {:.2} ms",
        native.elapsed().as_secs_f64() * 1000.0 / 20.0
    );

    // 16 signers: a committee of 16 keys made here (no 16-node network needed to measure).
    let (receipt16, committee16) = attested_by(16, &network);
    let timed = format!(
        "(async () => {{ const v = await window.rsvpPage.client.verifier(); const a = {{receipt: {}, committee: {}}}; const first = v.verifyReceipt(a); const t0 = performance.now(); let ok; for (let i = 0; i < 10; i++) ok = v.verifyReceipt(a); return [first.ok && ok.ok, ok.signers, (performance.now() - t0) / 10]; }})()",
        serde_json::to_string(&receipt16).unwrap(),
        serde_json::to_string(&committee16).unwrap()
    );
    let (ok, signers, page_ms): (bool, u64, f64) =
        serde_json::from_value(alice_page.eval(&timed).await).unwrap();
    assert!(ok && signers == 16, "the page accepts 16 signatures");
    let verified = onvm::rpc_api::committee::VerifiedCommittee::new(committee16).unwrap();
    let native = Instant::now();
    for _ in 0..10 {
        let v = onvm::rpc_api::committee::verify_signed(&receipt16, &verified, &network);
        assert!(v.valid, "{v:?}");
    }
    println!(
        "receipt verification, 16 of 16 signers, committee checked once: page (wasm) {page_ms:.2} ms, native Rust {:.2} ms",
        native.elapsed().as_secs_f64() * 1000.0 / 10.0
    );
}

/// A receipt executed by member 0 of a `k`-member committee and attested by all `k`, with
/// keys made here (blst, as nodes sign).
fn attested_by(
    k: usize,
    network: &str,
) -> (
    onvm::rpc_api::program::SignedReceipt,
    onvm::rpc_api::committee::Committee,
) {
    use blst::min_sig::{AggregateSignature, SecretKey};
    use onvm::rpc_api::bls::{POP_DST, SIG_DST};
    use onvm::rpc_api::committee::{Committee, Member, default_threshold, set_signer};
    use onvm::rpc_api::program::{
        Attestation, ExecutionReceipt, Outcome, SignedReceipt, receipt_signing_message,
    };
    use onvm::rpc_api::{BlobId, Hash32, HexBytes, ProgramId};
    let keys: Vec<(SecretKey, Member)> = (0..k as u64)
        .map(|i| {
            let mut ikm = [0x5au8; 32];
            ikm[..8].copy_from_slice(&i.to_le_bytes());
            let sk = SecretKey::key_gen(&ikm, &[]).unwrap();
            let pk = sk.sk_to_pk().compress();
            let pop = sk.sign(&pk, POP_DST, &[]).compress();
            let member = Member {
                endpoint_id: Hash32(*blake3::hash(&ikm).as_bytes()),
                bls_public_key: HexBytes(pk.to_vec()),
                proof_of_possession: HexBytes(pop.to_vec()),
            };
            (sk, member)
        })
        .collect();
    let program = ProgramId::from_bytes([7; 32]);
    let receipt = ExecutionReceipt {
        version: 1,
        network_id: network.into(),
        program_id: program,
        code_hash: BlobId::from_bytes([1; 32]),
        engine: "test".into(),
        entrypoint: "onvm_main".into(),
        height: 9,
        input_hash: Hash32([2; 32]),
        caller: Hash32::ZERO,
        call_id: Hash32([9; 32]),
        caller_proof: None,
        timestamp_ms: 1,
        seed: Hash32([3; 32]),
        state_root_in: Hash32([4; 32]),
        state_root_out: Hash32([5; 32]),
        write_digest: Hash32([6; 32]),
        output_hash: Hash32([7; 32]),
        output_len: 0,
        fuel_limit: 10,
        fuel_used: 5,
        outcome: Outcome::Ok,
        executor: keys[0].1.endpoint_id,
    };
    let id = receipt.id();
    // The executor signs its receipt; every member (the executor too) precommits round 0.
    let own = keys[0]
        .0
        .sign(&receipt_signing_message(network, &id), SIG_DST, &[]);
    let precommit = onvm::rpc_api::committee::precommit_message(&receipt, &id, 0, 0);
    let signatures: Vec<_> = keys
        .iter()
        .map(|(sk, _)| sk.sign(&precommit, SIG_DST, &[]))
        .collect();
    let refs: Vec<_> = signatures.iter().collect();
    let aggregate = AggregateSignature::aggregate(&refs, true)
        .unwrap()
        .to_signature();
    let mut bitmap = Vec::new();
    for i in 0..k {
        set_signer(&mut bitmap, k, i);
    }
    let signed = SignedReceipt {
        id,
        receipt,
        signer_bls_key: keys[0].1.bls_public_key.clone(),
        signature: HexBytes(own.compress().to_vec()),
        attestation: Some(Attestation {
            epoch: 0,
            round: 0,
            signers: HexBytes(bitmap),
            signature: HexBytes(aggregate.compress().to_vec()),
        }),
    };
    let committee = Committee {
        program_id: program,
        epoch: 0,
        members: keys.into_iter().map(|(_, m)| m).collect(),
        threshold: default_threshold(k),
    };
    (signed, committee)
}

#[tokio::test]
async fn the_dashboard_follows_calls_jobs_and_dag_operations_live_with_a_read_only_token() {
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    common::join(&a, &[&b, &c]).await;
    let operator = a.client().await;
    let reader = common::new_token(&operator, &[Scope::Read], "dashboard").await;
    let kv = common::deploy_kvstore(&operator, Some(3)).await;
    common::converge(&[&a, &b, &c]).await;

    let browser = Browser::launch().await;
    let started = Instant::now();
    let addr = a.node().rpc_addr();
    let page = browser
        .open(&format!("http://{addr}/?token={reader}"))
        .await;
    page.wait_for(
        "document.querySelector('#conn').dataset.state === 'open'",
        Duration::from_secs(60),
    )
    .await;
    println!("dashboard load to live: {:?}", started.elapsed());
    let shown_id = page
        .wait_for(
            "document.querySelector('#node-id').textContent.length > 10 && document.querySelector('#node-id').textContent",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(shown_id.as_str(), Some(a.node().endpoint_id().as_str()));
    let address_bar = page.eval("location.href").await;
    assert!(
        !address_bar.as_str().unwrap().contains("token="),
        "the token leaves the address bar: {address_bar}"
    );
    page.wait_for(
        "document.querySelector('#health').dataset.ready === 'true'",
        Duration::from_secs(30),
    )
    .await;
    page.wait_for(
        "document.querySelectorAll('#peers [data-peer]').length === 2",
        Duration::from_secs(30),
    )
    .await;

    // Live: calls committed by the committee, a job, DAG operations, after the page opened.
    let before = Instant::now();
    for i in 0..3 {
        ProgramApiClient::execute(
            &b.client().await,
            kv,
            common::kv_put(&format!("k{i}")),
            common::with_request_id(&format!("dash-{i}")),
        )
        .await
        .expect("kvstore put");
    }
    let job_program = ProgramApiClient::deploy(
        &operator,
        DeployRequest {
            wasm_base64: Some(common::program_wasm("job_test").into()),
            ..Default::default()
        },
    )
    .await
    .expect("job_test deploys")
    .program_id;
    let job = onvm::rpc_api::api::JobApiClient::submit(
        &operator,
        onvm::rpc_api::jobs::SubmitJob {
            program_id: job_program,
            request_id: "dashboard-job".into(),
            input_base64: Some(common::example("job-test", "count.json").into()),
            input_blob: None,
            entrypoint: None,
            max_retries: Some(0),
            timeout_ms: None,
            fuel: Some(1_000_000_000),
            metadata: None,
            signed: None,
        },
    )
    .await
    .expect("job_submit")
    .job
    .job_id;
    page.wait_for(
        "document.querySelectorAll('[data-receipt][data-verified=\"true\"]').length >= 3",
        Duration::from_secs(60),
    )
    .await;
    println!(
        "3 committee calls made to verified in the dashboard: {:?}",
        before.elapsed()
    );
    let job_row = format!("[data-job=\"{job}\"][data-status=\"completed\"]");
    page.wait_for(
        &format!(
            "document.querySelector({})",
            serde_json::to_string(&job_row).unwrap()
        ),
        Duration::from_secs(60),
    )
    .await;
    page.wait_for(
        "document.querySelector('[data-dag-op]')",
        Duration::from_secs(30),
    )
    .await;
    let program_row = format!("[data-program=\"{kv}\"]");
    let height = page
        .wait_for(
            &format!(
                "(() => {{ const r = document.querySelector({}); return r && Number(r.dataset.height) >= 2 && r.dataset.committeeSize; }})()",
                serde_json::to_string(&program_row).unwrap()
            ),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(height.as_str(), Some("3"), "the program's committee size");
    page.wait_for(
        "Number(document.querySelector('#chart-calls').dataset.points) > 1",
        Duration::from_secs(30),
    )
    .await;
    let failed = page
        .eval("document.querySelectorAll('[data-receipt][data-verified=\"false\"]').length")
        .await;
    assert_eq!(failed, 0, "no honest receipt fails in the page");
    let error = page
        .eval("document.querySelector('#error').textContent")
        .await;
    assert_eq!(
        error,
        "",
        "a read-only token is enough: {}",
        browser.log_text()
    );
    page.screenshot(&shots().join("dashboard.png")).await;
}
