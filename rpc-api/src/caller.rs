//! Signed calls: a client's ed25519 key says "I ask for this call", and the receipt carries the
//! proof so every member, replica and auditor (and anyone holding the receipt) can check it.
//!
//! Signed message v2 covers everything that changes what runs or what is recorded: the network,
//! program, entrypoint, input hash and request id; an expiry and how many attempts it allows (1
//! for a call; a job's `max_retries + 1`); the fuel per attempt (the receipt's `fuel_limit`);
//! whether it is a dry run (`read_only`, which never has a receipt, so a signed dry run cannot
//! be replayed as a write); and the call's timestamp, or that the accepting node's clock picks
//! it. So nobody who sees a signed call can send it first with other terms (one unit of fuel,
//! say) and commit a failure under its request id. The wall-clock `timeout_ms` is not covered:
//! a call it stops happened on one node only, leaves no receipt and can be retried with the same
//! request id. The request id makes the call's `call_id` (bound to the caller), which a program
//! commits at most once. The expiry is checked against the node's clock when the call is
//! accepted and against the receipt's timestamp everywhere else, so the check is the same on
//! every node and in an audit years later. Pure: no IO, no clock.

use serde::{Deserialize, Serialize};

use crate::hash32::{Hash32, HexBytes};
use crate::ids::ProgramId;
use crate::program::{ExecutionReceipt, MAX_REQUEST_ID_BYTES, call_id};

/// The key type clients sign with (re-exported so they need no direct ed25519 dependency).
pub use ed25519_dalek::{Signature, SigningKey};

pub const CALL_SIG_TAG: &[u8] = b"onvm/call-sig/v2";
/// The signed message version this code signs and accepts (`CallSignature::version`).
pub const CALL_SIG_VERSION: u32 = 2;

/// What a client adds to a call (`ExecuteOptions::signed`) to make it as itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSignature {
    /// The signed message's version: 2 ([`CALL_SIG_VERSION`]). Absent means 1, which covered
    /// fewer options and is refused.
    #[serde(default = "version_one")]
    pub version: u32,
    /// The caller's ed25519 public key: the caller id the program sees (`onvm_caller`).
    pub caller: Hash32,
    /// Unix ms after which the call may no longer be committed.
    pub expires_at_ms: u64,
    /// ed25519 signature (64 bytes) by `caller` over `call_signing_message`.
    pub signature: HexBytes,
}

fn version_one() -> u32 {
    1
}

/// The terms a caller signs besides what identifies the call (program, entrypoint, input,
/// request id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedTerms {
    /// Unix ms after which the call may no longer be committed.
    pub expires_at_ms: u64,
    /// 1 for a call; `max_retries + 1` for a job.
    pub max_attempts: u32,
    /// Fuel per attempt: what the receipt records as `fuel_limit`.
    pub fuel: u64,
    /// A dry run: no writes, no receipt.
    pub read_only: bool,
    /// The call's timestamp as the receipt records it; None: the accepting node's clock.
    pub timestamp_ms: Option<u64>,
}

impl SignedTerms {
    /// The terms of a writing call with `fuel` that expires at `expires_at_ms`, timestamped by
    /// the node that accepts it.
    pub fn call(expires_at_ms: u64, fuel: u64) -> Self {
        Self {
            expires_at_ms,
            max_attempts: 1,
            fuel,
            read_only: false,
            timestamp_ms: None,
        }
    }

    /// The terms of a job: at most `max_retries + 1` attempts of `fuel` each.
    pub fn job(expires_at_ms: u64, fuel: u64, max_retries: u32) -> Self {
        Self {
            max_attempts: max_retries.saturating_add(1),
            ..Self::call(expires_at_ms, fuel)
        }
    }
}

/// What a receipt records of a signed call: with the receipt's own fields it is everything the
/// signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerProof {
    /// The request id the caller signed (for a job: the job's).
    pub request_id: String,
    pub expires_at_ms: u64,
    pub signature: HexBytes,
    /// For an attempt of a signed job: which one, of how many the caller allowed.
    pub job: Option<JobAttemptProof>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAttemptProof {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `max_retries + 1` of the job, as signed.
    pub max_attempts: u32,
}

/// Why a caller's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    #[error(
        "the call signature does not verify for caller {caller} (wrong key, or signed for other fields or terms: fuel, read_only, timestamp_ms, expiry, attempts)"
    )]
    BadSignature { caller: Hash32 },
    #[error("the caller is not a valid ed25519 public key")]
    BadKey,
    #[error("the signed call expired at {expires_at_ms} (unix ms); it was made at {at_ms}")]
    Expired { expires_at_ms: u64, at_ms: u64 },
    #[error("a signed call needs {0}")]
    Missing(&'static str),
    #[error("request_id must be 1..={MAX_REQUEST_ID_BYTES} bytes")]
    BadRequestId,
    #[error("the receipt's call_id is not derived from the caller and the signed request id")]
    CallIdMismatch,
    #[error("an anonymous receipt carries a caller proof, or a signed one lacks it")]
    Inconsistent,
    #[error("attempt {attempt} of a job whose caller allowed {max_attempts}")]
    TooManyAttempts { attempt: u32, max_attempts: u32 },
    #[error(
        "signed call message v{0} is no longer accepted: sign v{CALL_SIG_VERSION} (\"version\": {CALL_SIG_VERSION}), which also covers fuel, read_only and timestamp_ms (docs/RPC.md, \"Signed calls\")"
    )]
    OldVersion(u32),
}

impl CallerError {
    /// The `data.kind` a client sees for this refusal (docs/RPC.md, "Signed calls").
    pub fn kind(&self) -> &'static str {
        match self {
            CallerError::Expired { .. } => "call_expired",
            CallerError::Missing(_) | CallerError::BadRequestId | CallerError::OldVersion(_) => {
                "bad_signed_call"
            }
            _ => "bad_call_signature",
        }
    }
}

/// What the node accepting a signed call or job checks: the signature over what is asked, and
/// that it has not expired by `now_ms` (its clock; everyone else checks the receipt's time).
#[allow(clippy::too_many_arguments)]
pub fn check_signed_request(
    network_id: &str,
    program: &ProgramId,
    entrypoint: &str,
    input_hash: &Hash32,
    request_id: &str,
    terms: &SignedTerms,
    signed: &CallSignature,
    now_ms: u64,
) -> Result<(), CallerError> {
    verify_call_signature(
        network_id, program, entrypoint, input_hash, request_id, terms, signed,
    )?;
    if now_ms > signed.expires_at_ms {
        return Err(CallerError::Expired {
            expires_at_ms: signed.expires_at_ms,
            at_ms: now_ms,
        });
    }
    Ok(())
}

/// The bytes a caller signs (message v2): the tag, the length-prefixed network id, entrypoint
/// and request id, the program id and input hash (32 bytes each), then the terms: expiry (u64),
/// attempts (u32), fuel (u64), read-only (one byte, 0 or 1) and the timestamp (one byte 0 for
/// "the node's clock", or 1 and a u64), integers little-endian.
pub fn call_signing_message(
    network_id: &str,
    program: &ProgramId,
    entrypoint: &str,
    input_hash: &Hash32,
    request_id: &str,
    terms: &SignedTerms,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(CALL_SIG_TAG.len() + 180 + network_id.len() + request_id.len());
    m.extend_from_slice(CALL_SIG_TAG);
    for field in [
        network_id.as_bytes(),
        entrypoint.as_bytes(),
        request_id.as_bytes(),
    ] {
        m.extend_from_slice(&(field.len() as u64).to_le_bytes());
        m.extend_from_slice(field);
    }
    m.extend_from_slice(program.as_bytes());
    m.extend_from_slice(&input_hash.0);
    m.extend_from_slice(&terms.expires_at_ms.to_le_bytes());
    m.extend_from_slice(&terms.max_attempts.to_le_bytes());
    m.extend_from_slice(&terms.fuel.to_le_bytes());
    m.push(u8::from(terms.read_only));
    match terms.timestamp_ms {
        None => m.push(0),
        Some(t) => {
            m.push(1);
            m.extend_from_slice(&t.to_le_bytes());
        }
    }
    m
}

/// Signs a call (`program_execute`) or a job (`job_submit`, with [`SignedTerms::job`]) as `key`
/// (clients: the CLI, Rust programs).
pub fn sign_call(
    key: &ed25519_dalek::SigningKey,
    network_id: &str,
    program: &ProgramId,
    entrypoint: &str,
    input: &[u8],
    request_id: &str,
    terms: &SignedTerms,
) -> CallSignature {
    use ed25519_dalek::Signer;
    let message = call_signing_message(
        network_id,
        program,
        entrypoint,
        &Hash32::of(input),
        request_id,
        terms,
    );
    CallSignature {
        version: CALL_SIG_VERSION,
        caller: Hash32(key.verifying_key().to_bytes()),
        expires_at_ms: terms.expires_at_ms,
        signature: HexBytes(key.sign(&message).to_bytes().to_vec()),
    }
}

/// Checks a caller's signature over a call's fields and `terms` (the accepting node, before it
/// runs the call; the expiry is checked separately against its clock). `terms.expires_at_ms`
/// is taken from `signed`.
pub fn verify_call_signature(
    network_id: &str,
    program: &ProgramId,
    entrypoint: &str,
    input_hash: &Hash32,
    request_id: &str,
    terms: &SignedTerms,
    signed: &CallSignature,
) -> Result<(), CallerError> {
    if signed.version != CALL_SIG_VERSION {
        return Err(CallerError::OldVersion(signed.version));
    }
    if request_id.is_empty() || request_id.len() > MAX_REQUEST_ID_BYTES {
        return Err(CallerError::BadRequestId);
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(&signed.caller.0)
        .map_err(|_| CallerError::BadKey)?;
    let sig: [u8; 64] =
        signed
            .signature
            .0
            .as_slice()
            .try_into()
            .map_err(|_| CallerError::BadSignature {
                caller: signed.caller,
            })?;
    let terms = SignedTerms {
        expires_at_ms: signed.expires_at_ms,
        ..*terms
    };
    let message = call_signing_message(
        network_id, program, entrypoint, input_hash, request_id, &terms,
    );
    key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| CallerError::BadSignature {
            caller: signed.caller,
        })
}

/// Checks that a receipt's caller really asked for the call: an anonymous receipt (caller all
/// zeros) has no proof; a signed one has a proof whose signature verifies over the receipt's
/// fields and terms (its `fuel_limit`, not a dry run, and its timestamp, or the node's clock if
/// the caller left that to the node: either statement is one the caller signed), whose request
/// id (for a job: with the attempt, which must be one the caller allowed) gives the receipt's
/// `call_id`, and which had not expired at the receipt's timestamp. Members run it before they
/// attest, replicas before they apply, and `verify_receipt` for everyone else.
pub fn verify_caller(receipt: &ExecutionReceipt) -> Result<(), CallerError> {
    let proof = match (&receipt.caller_proof, receipt.caller == Hash32::ZERO) {
        (None, true) => return Ok(()),
        (Some(proof), false) => proof,
        _ => return Err(CallerError::Inconsistent),
    };
    if receipt.timestamp_ms > proof.expires_at_ms {
        return Err(CallerError::Expired {
            expires_at_ms: proof.expires_at_ms,
            at_ms: receipt.timestamp_ms,
        });
    }
    let (call_request_id, max_attempts) = match proof.job {
        None => (proof.request_id.clone(), 1),
        Some(JobAttemptProof {
            attempt,
            max_attempts,
        }) => {
            if attempt == 0 || attempt > max_attempts {
                return Err(CallerError::TooManyAttempts {
                    attempt,
                    max_attempts,
                });
            }
            let job = crate::jobs::job_id(&receipt.program_id, &receipt.caller, &proof.request_id);
            (crate::jobs::attempt_request_id(&job, attempt), max_attempts)
        }
    };
    if call_id(&receipt.program_id, &receipt.caller, &call_request_id) != receipt.call_id {
        return Err(CallerError::CallIdMismatch);
    }
    let signed = CallSignature {
        version: CALL_SIG_VERSION,
        caller: receipt.caller,
        expires_at_ms: proof.expires_at_ms,
        signature: proof.signature.clone(),
    };
    let verify = |timestamp_ms| {
        verify_call_signature(
            &receipt.network_id,
            &receipt.program_id,
            &receipt.entrypoint,
            &receipt.input_hash,
            &proof.request_id,
            &SignedTerms {
                expires_at_ms: proof.expires_at_ms,
                max_attempts,
                fuel: receipt.fuel_limit,
                read_only: false,
                timestamp_ms,
            },
            &signed,
        )
    };
    verify(Some(receipt.timestamp_ms)).or_else(|_| verify(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUEL: u64 = 1_000_000;

    fn receipt_signed_by(key: &ed25519_dalek::SigningKey, request_id: &str) -> ExecutionReceipt {
        let program = ProgramId::from_bytes([3; 32]);
        let input = b"hello";
        let signed = sign_call(
            key,
            "net",
            &program,
            "main",
            input,
            request_id,
            &SignedTerms::call(1_000, FUEL),
        );
        let mut r = crate::program::tests::sample_receipt();
        r.network_id = "net".into();
        r.program_id = program;
        r.entrypoint = "main".into();
        r.input_hash = Hash32::of(input);
        r.timestamp_ms = 999;
        r.fuel_limit = FUEL;
        r.caller = signed.caller;
        r.call_id = call_id(&program, &signed.caller, request_id);
        r.caller_proof = Some(CallerProof {
            request_id: request_id.into(),
            expires_at_ms: signed.expires_at_ms,
            signature: signed.signature,
            job: None,
        });
        r
    }

    #[test]
    fn a_signed_job_allows_exactly_the_attempts_its_caller_signed() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let program = ProgramId::from_bytes([3; 32]);
        let signed = sign_call(
            &key,
            "net",
            &program,
            "main",
            b"in",
            "job-1",
            &SignedTerms::job(1_000, FUEL, 2),
        );
        let caller = Hash32(key.verifying_key().to_bytes());
        let job = crate::jobs::job_id(&program, &caller, "job-1");
        // A signed caller's request ids are its own; anonymous ones are shared.
        assert_ne!(
            job,
            crate::jobs::job_id(&program, &Hash32([9; 32]), "job-1")
        );
        assert_ne!(job, crate::jobs::job_id(&program, &Hash32::ZERO, "job-1"));
        let receipt_of = |attempt: u32, max_attempts: u32| {
            let mut r = crate::program::tests::sample_receipt();
            r.network_id = "net".into();
            r.program_id = program;
            r.entrypoint = "main".into();
            r.input_hash = Hash32::of(b"in");
            r.timestamp_ms = 10;
            r.fuel_limit = FUEL;
            r.caller = signed.caller;
            r.call_id = call_id(
                &program,
                &signed.caller,
                &crate::jobs::attempt_request_id(&job, attempt),
            );
            r.caller_proof = Some(CallerProof {
                request_id: "job-1".into(),
                expires_at_ms: signed.expires_at_ms,
                signature: signed.signature.clone(),
                job: Some(JobAttemptProof {
                    attempt,
                    max_attempts,
                }),
            });
            r
        };
        for attempt in 1..=3 {
            assert_eq!(verify_caller(&receipt_of(attempt, 3)), Ok(()));
        }
        for attempt in [0, 4] {
            assert!(matches!(
                verify_caller(&receipt_of(attempt, 3)),
                Err(CallerError::TooManyAttempts { .. })
            ));
        }
        // Claiming more attempts than were signed breaks the signature.
        assert!(matches!(
            verify_caller(&receipt_of(4, 4)),
            Err(CallerError::BadSignature { .. })
        ));
        // A job signature is not a call signature.
        let mut as_call = receipt_of(1, 3);
        if let Some(p) = as_call.caller_proof.as_mut() {
            p.job = None;
        }
        as_call.call_id = call_id(&program, &signed.caller, "job-1");
        assert!(matches!(
            verify_caller(&as_call),
            Err(CallerError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_signed_receipt_verifies_and_every_covered_field_is_bound() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let good = receipt_signed_by(&key, "r1");
        assert_eq!(verify_caller(&good), Ok(()));

        let mut r = good.clone();
        r.entrypoint = "other".into();
        assert!(matches!(
            verify_caller(&r),
            Err(CallerError::BadSignature { .. })
        ));
        let mut r = good.clone();
        r.input_hash = Hash32::of(b"changed");
        assert!(matches!(
            verify_caller(&r),
            Err(CallerError::BadSignature { .. })
        ));
        let mut r = good.clone();
        r.network_id = "other-net".into();
        assert!(matches!(
            verify_caller(&r),
            Err(CallerError::BadSignature { .. })
        ));
        // Another key cannot claim the signature.
        let mut r = good.clone();
        r.caller = Hash32(
            ed25519_dalek::SigningKey::from_bytes(&[8; 32])
                .verifying_key()
                .to_bytes(),
        );
        r.call_id = call_id(&r.program_id, &r.caller, "r1");
        assert!(matches!(
            verify_caller(&r),
            Err(CallerError::BadSignature { .. })
        ));
        // The expiry is signed: extending it breaks the signature.
        let mut r = good.clone();
        if let Some(p) = r.caller_proof.as_mut() {
            p.expires_at_ms = 5_000;
        }
        assert!(matches!(
            verify_caller(&r),
            Err(CallerError::BadSignature { .. })
        ));
        // The terms are signed: other fuel (a pre-emptive out-of-fuel failure), another
        // timestamp than the signed one, or a signed dry run replayed as a write.
        let mut r = good.clone();
        r.fuel_limit = 1;
        assert!(matches!(
            verify_caller(&r),
            Err(CallerError::BadSignature { .. })
        ));
        let program = good.program_id;
        let pinned = sign_call(
            &key,
            "net",
            &program,
            "main",
            b"hello",
            "r1",
            &SignedTerms {
                timestamp_ms: Some(999),
                ..SignedTerms::call(1_000, FUEL)
            },
        );
        let mut r = good.clone();
        if let Some(p) = r.caller_proof.as_mut() {
            p.signature = pinned.signature.clone();
        }
        assert_eq!(verify_caller(&r), Ok(()), "the signed timestamp");
        r.timestamp_ms = 998;
        assert!(
            matches!(verify_caller(&r), Err(CallerError::BadSignature { .. })),
            "another timestamp than the signed one"
        );
        let dry_run = sign_call(
            &key,
            "net",
            &program,
            "main",
            b"hello",
            "r1",
            &SignedTerms {
                read_only: true,
                ..SignedTerms::call(1_000, FUEL)
            },
        );
        let mut r = good.clone();
        if let Some(p) = r.caller_proof.as_mut() {
            p.signature = dry_run.signature;
        }
        assert!(matches!(
            verify_caller(&r),
            Err(CallerError::BadSignature { .. })
        ));
        // Version 1 signatures are refused by name.
        let mut old = pinned.clone();
        old.version = 1;
        assert_eq!(
            verify_call_signature(
                "net",
                &program,
                "main",
                &Hash32::of(b"hello"),
                "r1",
                &SignedTerms::call(1_000, FUEL),
                &old
            ),
            Err(CallerError::OldVersion(1))
        );
        let parsed: CallSignature = serde_json::from_str(&format!(
            r#"{{"caller":"{}","expires_at_ms":1,"signature":"00"}}"#,
            pinned.caller
        ))
        .unwrap();
        assert_eq!(parsed.version, 1, "a v1 client sends no version");
        // Replaying the signature under another request id (a second execution) is refused.
        let mut r = good.clone();
        if let Some(p) = r.caller_proof.as_mut() {
            p.request_id = "r2".into();
        }
        assert_eq!(verify_caller(&r), Err(CallerError::CallIdMismatch));
        r.call_id = call_id(&r.program_id, &r.caller, "r2");
        assert!(matches!(
            verify_caller(&r),
            Err(CallerError::BadSignature { .. })
        ));
    }

    #[test]
    fn expiry_is_checked_against_the_receipt_timestamp() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mut r = receipt_signed_by(&key, "r1");
        r.timestamp_ms = 1_000;
        assert_eq!(verify_caller(&r), Ok(()));
        r.timestamp_ms = 1_001;
        assert_eq!(
            verify_caller(&r),
            Err(CallerError::Expired {
                expires_at_ms: 1_000,
                at_ms: 1_001
            })
        );
    }

    #[test]
    fn anonymous_and_signed_receipts_cannot_be_mixed_up() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mut r = receipt_signed_by(&key, "r1");
        r.caller = Hash32::ZERO;
        assert_eq!(verify_caller(&r), Err(CallerError::Inconsistent));
        let mut r = receipt_signed_by(&key, "r1");
        r.caller_proof = None;
        assert_eq!(verify_caller(&r), Err(CallerError::Inconsistent));
        let mut anonymous = crate::program::tests::sample_receipt();
        anonymous.caller = Hash32::ZERO;
        anonymous.caller_proof = None;
        assert_eq!(verify_caller(&anonymous), Ok(()));
    }

    #[test]
    fn the_call_id_binds_the_caller() {
        let p = ProgramId::from_bytes([1; 32]);
        assert_ne!(
            call_id(&p, &Hash32::ZERO, "r"),
            call_id(&p, &Hash32([1; 32]), "r")
        );
    }
}
