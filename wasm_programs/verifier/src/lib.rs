//! ONVM's offline checks for web pages: the receipt id, the caller's signature, the executor's
//! BLS signature, the committee's aggregate BLS attestation and sparse-Merkle state proofs,
//! plus BLAKE3 and the bytes a caller signs (which WebCrypto lacks). It is the `onvm-rpc-api`
//! code the CLI (`onvm verify-receipt`, `onvm state-proof --verify`) and the node run, built
//! for wasm32-unknown-unknown with a plain C ABI: no wasm-bindgen, no imports, driven from JS
//! with `WebAssembly.instantiate` (node/web/verifier.js wraps it).
//!
//! # ABI
//! All pointers and lengths are u32 offsets into the module's exported `memory`.
//! - `onvm_alloc(len) -> ptr`: a buffer of `len` bytes for an input; `onvm_free(ptr, len)`
//!   frees it (and frees result buffers).
//! - `verify_receipt`, `verify_state_proof`, `call_signing_message` take `(ptr, len)` of UTF-8
//!   JSON; `blake3_hex` takes `(ptr, len)` of raw bytes. Each returns an i64 (a BigInt in JS)
//!   `(result_ptr << 32) | result_len` of a UTF-8 JSON result that the caller owns and frees
//!   with `onvm_free(result_ptr, result_len)`. The input buffer stays the caller's too.
//! - A result is `{"ok": true, ...}` or `{"ok": false, "error": "<why>"}`; bad input (malformed
//!   JSON, a missing field, bad hex) is an `ok: false`, never a trap.
//!
//! The functions and their JSON are documented on [`verify_receipt_json`],
//! [`verify_state_proof_json`], [`blake3_hex_json`] and [`call_signing_message_json`], the
//! safe Rust entry points the exports call.

use onvm_rpc_api::caller::{
    SignedTerms, call_signing_message as signing_message, verify_call_signature,
};
use onvm_rpc_api::committee::{Committee, VerifiedCommittee, verify_signed};
use onvm_rpc_api::program::{
    SignedManifest, SignedReceipt, StateProof, VerifyError, call_id, verify_manifest,
    verify_receipt as verify_signed_receipt,
};
use onvm_rpc_api::types::Base64Bytes;
use onvm_rpc_api::{Hash32, HexBytes, ProgramId};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Mutex;

// ---- The C ABI (wasm32: pointers are u32) ----

/// Allocates `len` zeroed bytes for an input buffer; free with [`onvm_free`].
#[unsafe(no_mangle)]
pub extern "C" fn onvm_alloc(len: u32) -> *mut u8 {
    Box::leak(vec![0u8; len as usize].into_boxed_slice()).as_mut_ptr()
}

/// Frees a buffer from [`onvm_alloc`] or a result buffer, given its exact length.
///
/// # Safety
/// `ptr` and `len` must be those of a buffer this module handed out and not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn onvm_free(ptr: *mut u8, len: u32) {
    if !ptr.is_null() {
        // SAFETY: a boxed slice of exactly `len` bytes leaked by `onvm_alloc` or `packed`.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len as usize)) });
    }
}

/// SAFETY: `ptr..ptr+len` must be readable memory (an `onvm_alloc` buffer), or `len` 0.
unsafe fn input<'a>(ptr: *const u8, len: u32) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's promise above.
        unsafe { std::slice::from_raw_parts(ptr, len as usize) }
    }
}

/// Hands a result buffer to the caller as `(ptr << 32) | len` (meaningful on wasm32 only).
fn packed(result: Vec<u8>) -> u64 {
    let len = result.len() as u64;
    let ptr = Box::leak(result.into_boxed_slice()).as_mut_ptr();
    ((ptr as usize as u64) << 32) | len
}

macro_rules! export {
    ($(#[$doc:meta])* $name:ident => $body:path) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// `(ptr, len)` must be a readable buffer (from `onvm_alloc`), or `len` 0.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(ptr: *const u8, len: u32) -> u64 {
            // SAFETY: forwarded from the caller.
            packed($body(unsafe { input(ptr, len) }))
        }
    };
}

export!(
    /// `verify_receipt(ptr, len)`: see [`verify_receipt_json`].
    verify_receipt => verify_receipt_json
);
export!(
    /// `verify_state_proof(ptr, len)`: see [`verify_state_proof_json`].
    verify_state_proof => verify_state_proof_json
);
export!(
    /// `blake3_hex(ptr, len)` of raw bytes: see [`blake3_hex_json`].
    blake3_hex => blake3_hex_json
);
export!(
    /// `call_signing_message(ptr, len)`: see [`call_signing_message_json`].
    call_signing_message => call_signing_message_json
);

// ---- The checks, as safe Rust (native tests call these) ----

/// `{"ok": true, ...fields}` or `{"ok": false, "error": why}`, as JSON bytes.
fn respond(result: Result<Map<String, Value>, String>) -> Vec<u8> {
    let value = match result {
        Ok(mut fields) => {
            fields.insert("ok".into(), Value::Bool(true));
            Value::Object(fields)
        }
        Err(error) => json!({ "ok": false, "error": error }),
    };
    serde_json::to_vec(&value).unwrap_or_else(|_| br#"{"ok":false,"error":"internal"}"#.to_vec())
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("malformed input: {e}"))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptInput {
    receipt: SignedReceipt,
    #[serde(default)]
    network_id: Option<String>,
    #[serde(default)]
    program_id: Option<ProgramId>,
    #[serde(default)]
    bls_key: Option<HexBytes>,
    #[serde(default)]
    committee: Option<Committee>,
    #[serde(default)]
    manifest: Option<SignedManifest>,
}

/// What `onvm verify-receipt` checks, on
/// `{"receipt": SignedReceipt, "network_id"?, "program_id"?, "bls_key"?, "committee"? | "manifest"?}`:
/// - `receipt`: as `receipt_get`, `receipt_list`, `receipt_subscribe` (its `receipt` field),
///   `program_execute` (its `receipt`) return it, or a `program-receipts --save-dir` file.
/// - Always: the receipt id is the hash of its contents, the caller's ed25519 proof of a signed
///   call (`caller::verify_caller`) and the executor's BLS signature; `network_id`, `program_id`
///   and `bls_key` (hex), when given, must match.
/// - `committee` (what `program_committee` returns, or `onvm program-committee` prints):
///   also the committee's check (`committee::verify_signed`): the executor is a member, and a
///   threshold of members, those in the attestation's bitmap, signed it (aggregate BLS).
/// - `manifest` instead (the `manifest` of `program_info`): first the manifest itself is
///   checked (program id = hash of deployer, code and salt; the deployer's ed25519 signature),
///   then its committee as above, so a page that trusts only the program id needs nothing else.
///
/// Ok: `{receipt_id, program_id, network_id, height, outcome, caller (null: anonymous),
/// executor, signer_bls_key, input_hash, output_hash, output_len, state_root_in,
/// state_root_out, timestamp_ms, attested, committee_checked, signers, signer_ids,
/// committee_size, threshold}` (the last four null without a committee).
pub fn verify_receipt_json(input: &[u8]) -> Vec<u8> {
    respond(parse(input).and_then(check_receipt))
}

fn check_receipt(input: ReceiptInput) -> Result<Map<String, Value>, String> {
    let signed = &input.receipt;
    let r = &signed.receipt;
    if let Some(expected) = input.program_id
        && expected != r.program_id
    {
        return Err(format!(
            "receipt is for program {}, expected {expected}",
            r.program_id
        ));
    }
    verify_signed_receipt(
        signed,
        input.network_id.as_deref(),
        input.bls_key.as_ref().map(|k| k.0.as_slice()),
    )
    .map_err(|e| e.to_string())?;
    let committee = match (input.committee, input.manifest) {
        (Some(_), Some(_)) => return Err("give a committee or a manifest, not both".into()),
        (Some(committee), None) => Some(committee),
        (None, Some(manifest)) => {
            verify_manifest(&manifest).map_err(|e| format!("manifest: {e}"))?;
            if let Some(expected) = input.network_id.as_deref()
                && expected != manifest.manifest.network_id
            {
                let e = VerifyError::WrongNetwork {
                    expected: expected.into(),
                    found: manifest.manifest.network_id.clone(),
                };
                return Err(format!("manifest: {e}"));
            }
            Some(manifest.manifest.committee())
        }
        (None, None) => None,
    };
    let mut attestation = json!({
        "committee_checked": false, "signers": null, "signer_ids": null,
        "committee_size": null, "threshold": null,
    });
    if let Some(committee) = committee {
        let verified = verified_committee(committee)?;
        let network = input.network_id.as_deref().unwrap_or(&r.network_id);
        let v = verify_signed(signed, &verified, network);
        if !v.valid {
            return Err(v.reason.unwrap_or_else(|| "invalid".into()));
        }
        attestation = json!({
            "committee_checked": true, "signers": v.signers.len(), "signer_ids": v.signers,
            "committee_size": v.committee_size, "threshold": v.threshold,
        });
    }
    let mut out = object(json!({
        "receipt_id": signed.id,
        "program_id": r.program_id,
        "network_id": r.network_id,
        "height": r.height,
        "outcome": r.outcome.kind(),
        "caller": (r.caller != Hash32::ZERO).then_some(r.caller),
        "executor": r.executor,
        "signer_bls_key": signed.signer_bls_key,
        "input_hash": r.input_hash,
        "output_hash": r.output_hash,
        "output_len": r.output_len,
        "state_root_in": r.state_root_in,
        "state_root_out": r.state_root_out,
        "timestamp_ms": r.timestamp_ms,
        "attested": signed.attestation.is_some(),
    }));
    out.extend(object(attestation));
    Ok(out)
}

/// The committee checked (its keys decoded, subgroup- and proof-of-possession-checked: one
/// pairing check per member), reusing the last one when the same committee comes again, as it
/// does for a page verifying one program's receipts one by one.
fn verified_committee(committee: Committee) -> Result<VerifiedCommittee, String> {
    static LAST: Mutex<Option<VerifiedCommittee>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(verified) = last.as_ref()
        && verified.committee == committee
    {
        return Ok(verified.clone());
    }
    let verified =
        VerifiedCommittee::new(committee).map_err(|e| format!("the committee is invalid: {e}"))?;
    *last = Some(verified.clone());
    Ok(verified)
}

/// What `onvm state-proof --verify` checks (`smt::verify_proof`), on the `state_proof` result
/// `{program_id, key_base64, value_base64, state_root, proof}` with one optional extra field
/// `"expected_root"` (hex; e.g. a verified receipt's `state_root_out`) that `state_root` must
/// equal. The proof shows the key holds `value_base64`, or is absent when that is null.
///
/// Ok: `{program_id, state_root, key_base64, value_base64, present, siblings}`.
pub fn verify_state_proof_json(input: &[u8]) -> Vec<u8> {
    respond(parse::<Value>(input).and_then(check_state_proof))
}

fn check_state_proof(mut value: Value) -> Result<Map<String, Value>, String> {
    let expected: Option<Hash32> = match value.as_object_mut() {
        Some(map) => match map.remove("expected_root") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v).map_err(|e| format!("malformed expected_root: {e}"))?,
            ),
        },
        None => return Err("malformed input: expected a state_proof result object".into()),
    };
    let p: StateProof =
        serde_json::from_value(value).map_err(|e| format!("malformed input: {e}"))?;
    onvm_rpc_api::smt::verify_proof(
        &p.state_root,
        &p.key_base64.0,
        p.value_base64.as_ref().map(|v| v.0.as_slice()),
        &p.proof,
    )
    .map_err(|e| e.to_string())?;
    if let Some(expected) = expected
        && expected != p.state_root
    {
        return Err(format!(
            "the proof is under state root {}, expected {expected}",
            p.state_root
        ));
    }
    Ok(object(json!({
        "program_id": p.program_id,
        "state_root": p.state_root,
        "key_base64": p.key_base64,
        "present": p.value_base64.is_some(),
        "value_base64": p.value_base64,
        "siblings": p.proof.siblings.len(),
    })))
}

/// BLAKE3 of the raw input bytes: `{"ok": true, "hash": "<64 hex digits>"}` (a blob id is
/// `blob` + this hash; a receipt's `input_hash` / `output_hash` are this of the call's bytes).
pub fn blake3_hex_json(input: &[u8]) -> Vec<u8> {
    respond(Ok(object(json!({ "hash": Hash32::of(input) }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallInput {
    network_id: String,
    program_id: ProgramId,
    entrypoint: String,
    request_id: String,
    expires_at_ms: u64,
    #[serde(default)]
    input_base64: Option<Base64Bytes>,
    #[serde(default)]
    input_hash: Option<Hash32>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    max_retries: Option<u32>,
    /// Fuel per attempt: signed, so a signed call names it (`options.fuel`, a job's `fuel`).
    fuel: u64,
    /// A dry run (`options.read_only`).
    #[serde(default)]
    read_only: bool,
    /// The call's timestamp (`options.timestamp_ms`); absent: the accepting node's clock.
    #[serde(default)]
    timestamp_ms: Option<u64>,
    #[serde(default)]
    caller: Option<Hash32>,
    #[serde(default)]
    signature: Option<HexBytes>,
}

/// The bytes a caller's ed25519 key signs for a signed call or job (`caller::call_signing_message`,
/// message v2), from `{network_id, program_id, entrypoint, request_id, expires_at_ms, fuel,
/// read_only?, timestamp_ms?, input_base64 | input_hash, max_attempts? | max_retries?, caller?,
/// signature?}`: `input_base64` is the call's input (as in `program_execute`), or give its BLAKE3
/// `input_hash` (hex); `max_attempts` defaults to 1 (a call), a job gives its `max_retries`
/// (signed as `max_retries + 1`). Sign `message` as is (Ed25519, e.g. WebCrypto) and send
/// `"signed": {"version": 2, "caller": <public key hex>, "expires_at_ms", "signature": <hex>}`
/// with `entrypoint`, `request_id`, `fuel` (and `read_only`, `timestamp_ms` if signed) in the
/// call's options. The caller id is the public key itself.
///
/// Ok: `{message_hex, message_base64, input_hash, max_attempts}`, plus with `caller` the
/// `call_id` its receipt will carry, and with `caller` and `signature` whether that signature
/// verifies (`signature_valid`, as the node will check it).
pub fn call_signing_message_json(input: &[u8]) -> Vec<u8> {
    respond(parse(input).and_then(build_call_message))
}

fn build_call_message(c: CallInput) -> Result<Map<String, Value>, String> {
    let input_hash = match (c.input_base64, c.input_hash) {
        (Some(input), None) => Hash32::of(&input.0),
        (None, Some(hash)) => hash,
        _ => return Err("give exactly one of input_base64 and input_hash".into()),
    };
    let max_attempts = match (c.max_attempts, c.max_retries) {
        (None, None) => 1,
        (Some(n), None) if n > 0 => n,
        (None, Some(retries)) => retries.saturating_add(1),
        _ => return Err("give at most one of max_attempts (1 or more) and max_retries".into()),
    };
    if c.request_id.is_empty()
        || c.request_id.len() > onvm_rpc_api::program::MAX_REQUEST_ID_BYTES
        || c.entrypoint.is_empty()
    {
        return Err(format!(
            "a signed call needs an entrypoint and a request_id of 1..={} bytes",
            onvm_rpc_api::program::MAX_REQUEST_ID_BYTES
        ));
    }
    if c.fuel == 0 {
        return Err("fuel must be at least 1".into());
    }
    let terms = SignedTerms {
        expires_at_ms: c.expires_at_ms,
        max_attempts,
        fuel: c.fuel,
        read_only: c.read_only,
        timestamp_ms: c.timestamp_ms,
    };
    let message = signing_message(
        &c.network_id,
        &c.program_id,
        &c.entrypoint,
        &input_hash,
        &c.request_id,
        &terms,
    );
    let mut out = object(json!({
        "message_hex": hex::encode(&message),
        "message_base64": Base64Bytes(message),
        "input_hash": input_hash,
        "max_attempts": max_attempts,
    }));
    if let Some(caller) = c.caller {
        out.insert(
            "call_id".into(),
            json!(call_id(&c.program_id, &caller, &c.request_id)),
        );
        if let Some(signature) = c.signature {
            let signed = onvm_rpc_api::caller::CallSignature {
                version: onvm_rpc_api::caller::CALL_SIG_VERSION,
                caller,
                expires_at_ms: c.expires_at_ms,
                signature,
            };
            let valid = verify_call_signature(
                &c.network_id,
                &c.program_id,
                &c.entrypoint,
                &input_hash,
                &c.request_id,
                &terms,
                &signed,
            );
            out.insert("signature_valid".into(), json!(valid.is_ok()));
        }
    } else if c.signature.is_some() {
        return Err("a signature needs its caller (the public key, hex)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: fn(&[u8]) -> Vec<u8>, input: &[u8]) -> Value {
        serde_json::from_slice(&f(input)).expect("results are JSON")
    }

    #[test]
    fn bad_json_is_an_error_result_not_a_panic() {
        for f in [
            verify_receipt_json,
            verify_state_proof_json,
            call_signing_message_json,
        ] {
            for input in [
                &b""[..],
                b"{",
                b"null",
                b"[1,2]",
                b"{\"receipt\": 7}",
                b"\xff\xfe",
            ] {
                let v = run(f, input);
                assert_eq!(v["ok"], false, "{v}");
                assert!(v["error"].as_str().unwrap().starts_with("malformed"), "{v}");
            }
        }
        let v = run(verify_receipt_json, br#"{"comittee": {}}"#);
        assert!(
            v["error"].as_str().unwrap().contains("unknown field"),
            "{v}"
        );
    }

    #[test]
    fn blake3_of_abc() {
        let v = run(blake3_hex_json, b"abc");
        assert_eq!(v["ok"], true);
        assert_eq!(
            v["hash"],
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }

    #[test]
    fn the_call_message_is_the_one_the_node_checks() {
        let key = onvm_rpc_api::caller::SigningKey::from_bytes(&[7; 32]);
        let program = ProgramId::from_bytes([3; 32]);
        let terms = SignedTerms::call(1_000, 5_000);
        let signed = onvm_rpc_api::caller::sign_call(
            &key,
            "net",
            &program,
            "onvm_main",
            b"hi",
            "r1",
            &terms,
        );
        let input = json!({
            "network_id": "net", "program_id": program, "entrypoint": "onvm_main",
            "request_id": "r1", "expires_at_ms": 1_000, "fuel": 5_000, "input_base64": "aGk=",
            "caller": signed.caller, "signature": signed.signature,
        });
        let v = run(call_signing_message_json, input.to_string().as_bytes());
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["signature_valid"], true);
        let expected = signing_message(
            "net",
            &program,
            "onvm_main",
            &Hash32::of(b"hi"),
            "r1",
            &terms,
        );
        assert_eq!(v["message_hex"], hex::encode(expected));
        assert_eq!(v["call_id"], json!(call_id(&program, &signed.caller, "r1")));
        // A job's message differs (max_attempts is signed), so the call signature fails there.
        let mut job = input.clone();
        job["max_retries"] = json!(2);
        let v = run(call_signing_message_json, job.to_string().as_bytes());
        assert_eq!(
            (v["max_attempts"].clone(), v["signature_valid"].clone()),
            (json!(3), json!(false))
        );
        // So are the fuel and the dry-run flag.
        for (field, value) in [("fuel", json!(1)), ("read_only", json!(true))] {
            let mut changed = input.clone();
            changed[field] = value;
            let v = run(call_signing_message_json, changed.to_string().as_bytes());
            assert_eq!(v["signature_valid"], false, "{field}");
        }
    }
}
