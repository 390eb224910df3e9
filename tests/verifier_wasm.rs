//! The browser verifier (`wasm_programs/verifier`, `onvm_verifier.wasm`), run under wasmtime on
//! receipts, committees, manifests and state proofs fetched over RPC from real nodes exactly as
//! a web page gets them, gives the verdict and the reason `onvm_rpc_api`'s native checks give
//! (what `onvm verify-receipt` and `onvm state-proof --verify` run): on good receipts of a
//! single-node program and of a 4-member committee, and on tampered ones.
//!
//! `ONVM_VERIFIER_FIXTURES=DIR` also writes every case as `DIR/NN-name.json`
//! (`{function, input, expected}`) for checking the JS wrapper (node/web/verifier.js).

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::WsClient;
use onvm::rpc_api::api::{NodeApiClient, ProgramApiClient};
use onvm::rpc_api::caller::{SignedTerms, SigningKey, sign_call};
use onvm::rpc_api::committee::{Committee, VerifiedCommittee, verify_signed};
use onvm::rpc_api::program::{
    DeployRequest, ExecuteOptions, SignedManifest, SignedReceipt, StateProof, verify_manifest,
    verify_receipt,
};
use onvm::rpc_api::smt::verify_proof;
use onvm::rpc_api::{Hash32, ProgramId};
use serde_json::{Value, json};
use wasmtime::{Engine, Instance, Memory, Module, Store, TypedFunc};

/// One instance of the verifier module, driven through its C ABI as verifier.js drives it.
struct Verifier {
    store: Store<()>,
    instance: Instance,
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    free: TypedFunc<(u32, u32), ()>,
}

impl Verifier {
    fn new(engine: &Engine, module: &Module) -> Self {
        let mut store = Store::new(engine, ());
        // The module imports nothing: no host, no JS glue.
        let instance = Instance::new(&mut store, module, &[]).expect("instantiate");
        let memory = instance.get_memory(&mut store, "memory").expect("memory");
        let alloc = instance.get_typed_func(&mut store, "onvm_alloc").unwrap();
        let free = instance.get_typed_func(&mut store, "onvm_free").unwrap();
        Self {
            store,
            instance,
            memory,
            alloc,
            free,
        }
    }

    fn call(&mut self, function: &str, input: &[u8]) -> Value {
        let f: TypedFunc<(u32, u32), u64> = self
            .instance
            .get_typed_func(&mut self.store, function)
            .unwrap_or_else(|e| panic!("{function}: {e}"));
        let len = input.len() as u32;
        let ptr = self.alloc.call(&mut self.store, len).unwrap();
        self.memory
            .write(&mut self.store, ptr as usize, input)
            .unwrap();
        let packed = f.call(&mut self.store, (ptr, len)).expect("no trap");
        self.free.call(&mut self.store, (ptr, len)).unwrap();
        let (out, out_len) = ((packed >> 32) as u32, packed as u32);
        let mut bytes = vec![0; out_len as usize];
        self.memory
            .read(&self.store, out as usize, &mut bytes)
            .unwrap();
        self.free.call(&mut self.store, (out, out_len)).unwrap();
        serde_json::from_slice(&bytes).expect("the result is JSON")
    }
}

fn malformed(e: serde_json::Error) -> String {
    format!("malformed input: {e}")
}

/// The native verdict on a `verify_receipt` input: `onvm verify-receipt`'s checks
/// (cli/src/programs.rs), with a manifest's committee when a manifest is given.
fn native_receipt(input: &Value) -> Result<(), String> {
    let signed: SignedReceipt =
        serde_json::from_value(input["receipt"].clone()).map_err(malformed)?;
    let network = input.get("network_id").and_then(Value::as_str);
    verify_receipt(&signed, network, None).map_err(|e| e.to_string())?;
    let committee: Option<Committee> = match (input.get("committee"), input.get("manifest")) {
        (Some(c), None) => Some(serde_json::from_value(c.clone()).map_err(malformed)?),
        (None, Some(m)) => {
            let m: SignedManifest = serde_json::from_value(m.clone()).map_err(malformed)?;
            verify_manifest(&m).map_err(|e| format!("manifest: {e}"))?;
            Some(m.manifest.committee())
        }
        _ => None,
    };
    if let Some(committee) = committee {
        let verified = VerifiedCommittee::new(committee)
            .map_err(|e| format!("the committee is invalid: {e}"))?;
        let v = verify_signed(
            &signed,
            &verified,
            network.unwrap_or(&signed.receipt.network_id),
        );
        if !v.valid {
            return Err(v.reason.unwrap_or_default());
        }
    }
    Ok(())
}

/// The native verdict on a `verify_state_proof` input (`onvm state-proof --verify`).
fn native_proof(input: &Value) -> Result<(), String> {
    let p: StateProof = serde_json::from_value(input.clone()).map_err(malformed)?;
    verify_proof(
        &p.state_root,
        &p.key_base64.0,
        p.value_base64.as_ref().map(|v| v.0.as_slice()),
        &p.proof,
    )
    .map_err(|e| e.to_string())?;
    if let Some(expected) = input.get("expected_root") {
        let expected: Hash32 = serde_json::from_value(expected.clone()).map_err(malformed)?;
        if expected != p.state_root {
            return Err(format!(
                "the proof is under state root {}, expected {expected}",
                p.state_root
            ));
        }
    }
    Ok(())
}

async fn rpc(
    client: &WsClient,
    method: &str,
    params: jsonrpsee::core::params::ArrayParams,
) -> Value {
    client
        .request(method, params)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"))
}

fn kv(op: Value) -> Vec<u8> {
    serde_json::to_vec(&op).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A put, anonymous or signed by `key`: the raw receipt JSON `receipt_get` returns for it.
async fn put(
    client: &WsClient,
    network: &str,
    p: ProgramId,
    key: Option<&SigningKey>,
    name: &str,
) -> Value {
    let input = kv(json!({"op": "put", "key": name, "data_base64": "dg=="}));
    let options = key.map(|key| {
        let request_id = format!("req-{name}");
        let terms = SignedTerms::call(now_ms() + 600_000, onvm::rpc_api::program::DEFAULT_FUEL);
        ExecuteOptions {
            entrypoint: Some("onvm_main".into()),
            request_id: Some(request_id.clone()),
            fuel: Some(terms.fuel),
            signed: Some(sign_call(
                key,
                network,
                &p,
                "onvm_main",
                &input,
                &request_id,
                &terms,
            )),
            ..Default::default()
        }
    });
    let result = ProgramApiClient::execute(client, p, input.into(), options)
        .await
        .expect("put");
    let id = result.receipt.expect("a receipt").id;
    rpc(client, "receipt_get", rpc_params![id]).await
}

/// `receipt` with its contents changed by `edit` and its id recomputed, so that the id check
/// passes and only the signatures can catch the change.
fn re_id(receipt: &Value, edit: impl FnOnce(&mut SignedReceipt)) -> Value {
    let mut r: SignedReceipt = serde_json::from_value(receipt.clone()).unwrap();
    edit(&mut r);
    r.id = r.receipt.id();
    serde_json::to_value(r).unwrap()
}

fn flip_hex(v: &mut Value) {
    let s = v.as_str().unwrap();
    let first = if s.starts_with('0') { '1' } else { '0' };
    *v = Value::String(format!("{first}{}", &s[1..]));
}

struct Case {
    name: &'static str,
    function: &'static str,
    input: Value,
    /// What a correct verifier must say, independently of both implementations.
    ok: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wasm_verifier_agrees_with_the_native_checks_on_real_receipts() {
    let engine = Engine::default();
    let wasm = common::verifier_wasm();
    println!("onvm_verifier.wasm: {} bytes", wasm.len());
    let module = Module::new(&engine, &wasm).expect("the verifier compiles");

    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let c = TestNode::start().await;
    // D's re-executions disagree, so it signs none of A's proposals: A's calls carry exactly
    // three of the four members' signatures, and D is a member that did not sign.
    let d = TestNode::start_with(&["committee.debug_corrupt_results=true"]).await;
    common::join(&a, &[&b, &c, &d]).await;
    let ca = a.client().await;
    let network = NodeApiClient::info(&ca).await.unwrap().network_id;
    let deploy = |size: u32, salt: &str| DeployRequest {
        wasm_base64: Some(common::program_wasm("kvstore").into()),
        committee_size: Some(size),
        salt: salt.into(),
        ..Default::default()
    };
    let p1 = ProgramApiClient::deploy(&ca, deploy(1, "single"))
        .await
        .unwrap()
        .program_id;
    let p4 = ProgramApiClient::deploy(&ca, deploy(4, "committee"))
        .await
        .unwrap()
        .program_id;
    common::converge(&[&a, &b, &c, &d]).await;
    let key = SigningKey::from_bytes(&[9; 32]);

    let single = put(&ca, &network, p1, None, "s0").await;
    let single_signed = put(&ca, &network, p1, Some(&key), "s1").await;
    let attested = put(&ca, &network, p4, None, "k0").await;
    let attested_signed = put(&ca, &network, p4, Some(&key), "k1").await;
    let committee1 = rpc(&ca, "program_committee", rpc_params![p1]).await;
    let committee4 = rpc(&ca, "program_committee", rpc_params![p4]).await;
    let manifest4 = rpc(&ca, "program_info", rpc_params![p4]).await["manifest"].clone();
    assert_eq!(committee4["members"].as_array().unwrap().len(), 4);
    assert!(single["attestation"].is_null());
    assert!(attested["attestation"].is_object());

    // The same receipt as another node streams it (receipt_subscribe), as a page following
    // the program gets it.
    common::converge(&[&a, &b, &c, &d]).await;
    let cb = b.client().await;
    let mut sub = cb
        .subscribe::<Value, _>(
            "receipt_subscribe",
            rpc_params![p4, 1],
            "receipt_unsubscribe",
        )
        .await
        .unwrap();
    let streamed = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("a streamed receipt")
        .unwrap()
        .unwrap();
    assert_eq!(streamed["type"], "receipt");
    let streamed = streamed["receipt"].clone();
    assert_eq!(streamed["id"], attested["id"]);

    // A member that did not sign, in the bitmap (or, should D have signed after a view
    // change, a signer taken out of it): the aggregate no longer matches the claimed set.
    let verified4 =
        VerifiedCommittee::new(serde_json::from_value(committee4.clone()).unwrap()).unwrap();
    let attestation = &attested["attestation"];
    let bitmap = hex::decode(attestation["signers"].as_str().unwrap()).unwrap();
    let signers = verified4.signers(&bitmap).unwrap();
    println!("attested receipt signed by members {signers:?} of 4");
    let mut lying_bitmap = bitmap.clone();
    match (0..4).find(|i| !signers.contains(i)) {
        Some(absent) => lying_bitmap[0] |= 1 << absent,
        None => lying_bitmap[0] &= !(1 << 3),
    }
    let mut claims_non_signer = attested.clone();
    claims_non_signer["attestation"]["signers"] = json!(hex::encode(&lying_bitmap));
    let mut below_threshold = attested.clone();
    below_threshold["attestation"]["signers"] = json!(hex::encode([1u8]));

    let with = |receipt: &Value, extra: Value| {
        let mut input = json!({ "receipt": receipt });
        input
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        input
    };
    let mut flipped_output = attested.clone();
    flip_hex(&mut flipped_output["receipt"]["output_hash"]);
    let flipped_output_re_id = re_id(&attested, |r| r.receipt.output_hash.0[0] ^= 1);
    let mut wrong_executor_sig = single.clone();
    wrong_executor_sig["signature"] = single_signed["signature"].clone();
    let mut replayed_aggregate = attested.clone();
    replayed_aggregate["attestation"]["signature"] =
        attested_signed["attestation"]["signature"].clone();
    let mut no_attestation = attested.clone();
    no_attestation["attestation"] = Value::Null;
    let forged_caller = re_id(&single_signed, |r| {
        if let Some(p) = r.receipt.caller_proof.as_mut() {
            p.signature.0[5] ^= 1;
        }
    });
    let other_caller = re_id(&single_signed, |r| {
        r.receipt.caller = Hash32(SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes());
    });
    let mut forged_manifest = manifest4.clone();
    forged_manifest["manifest"]["threshold"] = json!(1);

    let mut cases = vec![
        Case {
            name: "single",
            function: "verify_receipt",
            input: with(&single, json!({})),
            ok: true,
        },
        Case {
            name: "single-committee",
            function: "verify_receipt",
            input: with(
                &single,
                json!({"committee": committee1, "network_id": network}),
            ),
            ok: true,
        },
        Case {
            name: "single-signed",
            function: "verify_receipt",
            input: with(&single_signed, json!({"committee": committee1})),
            ok: true,
        },
        Case {
            name: "attested",
            function: "verify_receipt",
            input: with(&attested, json!({"committee": committee4})),
            ok: true,
        },
        Case {
            name: "attested-signed",
            function: "verify_receipt",
            input: with(
                &attested_signed,
                json!({"committee": committee4, "network_id": network}),
            ),
            ok: true,
        },
        Case {
            name: "attested-manifest",
            function: "verify_receipt",
            input: with(&attested, json!({"manifest": manifest4})),
            ok: true,
        },
        Case {
            name: "streamed",
            function: "verify_receipt",
            input: with(&streamed, json!({"committee": committee4})),
            ok: true,
        },
        Case {
            name: "flipped-output",
            function: "verify_receipt",
            input: with(&flipped_output, json!({"committee": committee4})),
            ok: false,
        },
        Case {
            name: "flipped-output-re-id",
            function: "verify_receipt",
            input: with(&flipped_output_re_id, json!({})),
            ok: false,
        },
        Case {
            name: "wrong-executor-signature",
            function: "verify_receipt",
            input: with(&wrong_executor_sig, json!({})),
            ok: false,
        },
        Case {
            name: "replayed-aggregate",
            function: "verify_receipt",
            input: with(&replayed_aggregate, json!({"committee": committee4})),
            ok: false,
        },
        Case {
            name: "claims-non-signer",
            function: "verify_receipt",
            input: with(&claims_non_signer, json!({"committee": committee4})),
            ok: false,
        },
        Case {
            name: "below-threshold",
            function: "verify_receipt",
            input: with(&below_threshold, json!({"committee": committee4})),
            ok: false,
        },
        Case {
            name: "no-attestation",
            function: "verify_receipt",
            input: with(&no_attestation, json!({"committee": committee4})),
            ok: false,
        },
        Case {
            name: "wrong-network",
            function: "verify_receipt",
            input: with(&attested, json!({"network_id": "other-net"})),
            ok: false,
        },
        Case {
            name: "wrong-network-committee",
            function: "verify_receipt",
            input: with(
                &attested,
                json!({"network_id": "other-net", "committee": committee4}),
            ),
            ok: false,
        },
        Case {
            name: "other-program-committee",
            function: "verify_receipt",
            input: with(&attested, json!({"committee": committee1})),
            ok: false,
        },
        Case {
            name: "forged-caller-signature",
            function: "verify_receipt",
            input: with(&forged_caller, json!({})),
            ok: false,
        },
        Case {
            name: "other-caller",
            function: "verify_receipt",
            input: with(&other_caller, json!({})),
            ok: false,
        },
        Case {
            name: "forged-manifest",
            function: "verify_receipt",
            input: with(&attested, json!({"manifest": forged_manifest})),
            ok: false,
        },
        Case {
            name: "malformed",
            function: "verify_receipt",
            input: json!({"receipt": {"id": 1}}),
            ok: false,
        },
    ];

    // State proofs of the committee program: a key present, a key absent, and tampered ones.
    let key_b64 = |k: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(k)
    };
    let present = rpc(&ca, "state_proof", rpc_params![p4, key_b64("d/k0")]).await;
    let absent = rpc(&ca, "state_proof", rpc_params![p4, key_b64("d/nope")]).await;
    assert!(present["value_base64"].is_string() && absent["value_base64"].is_null());
    let latest_root = attested_signed["receipt"]["state_root_out"].clone();
    let first_root = attested["receipt"]["state_root_in"].clone();
    assert_eq!(present["state_root"], latest_root);
    let mut other_value = present.clone();
    other_value["value_base64"] = json!(key_b64("forged"));
    let mut claimed_absent = present.clone();
    claimed_absent["value_base64"] = Value::Null;
    let mut tampered_sibling = present.clone();
    assert!(!present["proof"]["siblings"].as_array().unwrap().is_empty());
    flip_hex(&mut tampered_sibling["proof"]["siblings"][0]);
    let mut other_root = present.clone();
    flip_hex(&mut other_root["state_root"]);
    let with_root = |proof: &Value, root: &Value| {
        let mut p = proof.clone();
        p["expected_root"] = root.clone();
        p
    };
    cases.extend([
        Case {
            name: "proof-present",
            function: "verify_state_proof",
            input: present.clone(),
            ok: true,
        },
        Case {
            name: "proof-absent",
            function: "verify_state_proof",
            input: absent.clone(),
            ok: true,
        },
        Case {
            name: "proof-receipt-root",
            function: "verify_state_proof",
            input: with_root(&present, &latest_root),
            ok: true,
        },
        Case {
            name: "proof-stale-root",
            function: "verify_state_proof",
            input: with_root(&present, &first_root),
            ok: false,
        },
        Case {
            name: "proof-other-value",
            function: "verify_state_proof",
            input: other_value,
            ok: false,
        },
        Case {
            name: "proof-claimed-absent",
            function: "verify_state_proof",
            input: claimed_absent,
            ok: false,
        },
        Case {
            name: "proof-tampered-sibling",
            function: "verify_state_proof",
            input: tampered_sibling,
            ok: false,
        },
        Case {
            name: "proof-other-root",
            function: "verify_state_proof",
            input: other_root,
            ok: false,
        },
    ]);

    let fixtures = std::env::var_os("ONVM_VERIFIER_FIXTURES").map(std::path::PathBuf::from);
    if let Some(dir) = &fixtures {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut verifier = Verifier::new(&engine, &module);
    for (i, case) in cases.iter().enumerate() {
        let native = match case.function {
            "verify_receipt" => native_receipt(&case.input),
            _ => native_proof(&case.input),
        };
        let got = verifier.call(case.function, case.input.to_string().as_bytes());
        let expected = match &native {
            Ok(()) => json!({"ok": true}),
            Err(e) => json!({"ok": false, "error": e}),
        };
        println!("{:<26} native {:<5} wasm {got}", case.name, native.is_ok());
        assert_eq!(
            native.is_ok(),
            case.ok,
            "{}: native says {native:?}",
            case.name
        );
        assert_eq!(got["ok"], expected["ok"], "{}: {got}", case.name);
        // The same reason, word for word (a parse error's wording differs: the wasm parses
        // the whole input at once, this test one field at a time).
        match native.as_ref().err() {
            Some(e) if e.starts_with("malformed input") => {
                assert!(
                    got["error"]
                        .as_str()
                        .unwrap()
                        .starts_with("malformed input")
                )
            }
            Some(_) => assert_eq!(got["error"], expected["error"], "{}", case.name),
            None => {}
        }
        if let Some(dir) = &fixtures {
            // verifier.js must give exactly what the module gave here.
            let fixture = json!({"function": case.function, "input": case.input, "expected": got});
            std::fs::write(
                dir.join(format!("{i:02}-{}.json", case.name)),
                fixture.to_string(),
            )
            .unwrap();
        }
    }

    // What the page learns from a good attested, signed receipt.
    let input = with(&attested_signed, json!({"committee": committee4}));
    let got = verifier.call("verify_receipt", input.to_string().as_bytes());
    assert_eq!(got["receipt_id"], attested_signed["id"]);
    assert_eq!(got["program_id"], json!(p4));
    assert_eq!(got["height"], attested_signed["receipt"]["height"]);
    assert_eq!(got["caller"], json!(Hash32(key.verifying_key().to_bytes())));
    assert_eq!(
        (got["committee_size"].clone(), got["threshold"].clone()),
        (json!(4), json!(3))
    );
    assert_eq!(got["signers"], json!(signers.len()));
    assert_eq!(got["state_root_out"], latest_root);
    let got = verifier.call(
        "verify_receipt",
        with(&single, json!({})).to_string().as_bytes(),
    );
    assert_eq!(
        (got["caller"].clone(), got["committee_checked"].clone()),
        (Value::Null, json!(false))
    );

    // Cost of one check of an attested receipt (3 signers): wasmtime vs native (the test
    // profile builds bls12_381 with opt-level 2). "Cold" includes checking the committee's
    // keys (a proof-of-possession pairing per member), which the verifier then caches.
    let input = with(&attested, json!({"committee": committee4})).to_string();
    let runs = 5;
    let mut cold = Duration::ZERO;
    for _ in 0..runs {
        let mut fresh = Verifier::new(&engine, &module);
        let started = Instant::now();
        assert_eq!(fresh.call("verify_receipt", input.as_bytes())["ok"], true);
        cold += started.elapsed();
    }
    let started = Instant::now();
    for _ in 0..runs {
        assert_eq!(
            verifier.call("verify_receipt", input.as_bytes())["ok"],
            true
        );
    }
    let warm = started.elapsed();
    let parsed: Value = serde_json::from_str(&input).unwrap();
    let started = Instant::now();
    for _ in 0..runs {
        native_receipt(&parsed).unwrap();
    }
    let native_cold = started.elapsed();
    let receipt: SignedReceipt = serde_json::from_value(attested.clone()).unwrap();
    let started = Instant::now();
    for _ in 0..runs {
        assert!(verify_signed(&receipt, &verified4, &network).valid);
    }
    let native_warm = started.elapsed();
    let per = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0 / runs as f64);
    println!(
        "verify_receipt, 3 of 4 signers: wasm cold {} warm {} | native cold {} warm {}",
        per(cold),
        per(warm),
        per(native_cold),
        per(native_warm)
    );
    let proof = present.to_string();
    let started = Instant::now();
    for _ in 0..runs {
        assert_eq!(
            verifier.call("verify_state_proof", proof.as_bytes())["ok"],
            true
        );
    }
    println!("verify_state_proof: wasm {}", per(started.elapsed()));
}
