//! Signed calls: a client's ed25519 key says "I ask for this call", and the receipt carries the
//! proof so every member, replica and auditor (and anyone holding the receipt) can check it.
//!
//! The caller signs the network, program, entrypoint, input hash, request id, an expiry and how
//! many attempts it allows (1 for a call; a job's `max_retries + 1`). The request id makes the
//! call's `call_id` (bound to the caller), which a program commits at most once: a replayed
//! request never runs twice, and a signed job runs at most the attempts its caller allowed. The expiry is checked against the node's clock
//! when the call is accepted and against the receipt's timestamp everywhere else, so the check
//! is the same on every node and in an audit years later. Pure: no IO, no clock.

use serde::{Deserialize, Serialize};

use crate::hash32::{Hash32, HexBytes};
use crate::ids::ProgramId;
use crate::program::{ExecutionReceipt, MAX_REQUEST_ID_BYTES, call_id};

/// The key type clients sign with (re-exported so they need no direct ed25519 dependency).
pub use ed25519_dalek::{Signature, SigningKey};

pub const CALL_SIG_TAG: &[u8] = b"onvm/call-sig/v1";

/// What a client adds to a call (`ExecuteOptions::signed`) to make it as itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSignature {
    /// The caller's ed25519 public key: the caller id the program sees (`onvm_caller`).
    pub caller: Hash32,
    /// Unix ms after which the call may no longer be committed.
    pub expires_at_ms: u64,
    /// ed25519 signature (64 bytes) by `caller` over `call_signing_message`.
    pub signature: HexBytes,
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
        "the call signature does not verify for caller {caller} (wrong key, or signed for other fields)"
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
}

impl CallerError {
    /// The `data.kind` a client sees for this refusal (docs/RPC.md, "Signed calls").
    pub fn kind(&self) -> &'static str {
        match self {
            CallerError::Expired { .. } => "call_expired",
            CallerError::Missing(_) | CallerError::BadRequestId => "bad_signed_call",
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
    max_attempts: u32,
    signed: &CallSignature,
    now_ms: u64,
) -> Result<(), CallerError> {
    verify_call_signature(
        network_id,
        program,
        entrypoint,
        input_hash,
        request_id,
        max_attempts,
        signed,
    )?;
    if now_ms > signed.expires_at_ms {
        return Err(CallerError::Expired {
            expires_at_ms: signed.expires_at_ms,
            at_ms: now_ms,
        });
    }
    Ok(())
}

/// The bytes a caller signs. `max_attempts` is 1 for a call, `max_retries + 1` for a job.
pub fn call_signing_message(
    network_id: &str,
    program: &ProgramId,
    entrypoint: &str,
    input_hash: &Hash32,
    request_id: &str,
    expires_at_ms: u64,
    max_attempts: u32,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(CALL_SIG_TAG.len() + 160 + network_id.len() + request_id.len());
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
    m.extend_from_slice(&expires_at_ms.to_le_bytes());
    m.extend_from_slice(&max_attempts.to_le_bytes());
    m
}

/// Signs a call (`program_execute`) as `key` (clients: the CLI, Rust programs).
pub fn sign_call(
    key: &ed25519_dalek::SigningKey,
    network_id: &str,
    program: &ProgramId,
    entrypoint: &str,
    input: &[u8],
    request_id: &str,
    expires_at_ms: u64,
) -> CallSignature {
    sign(
        key,
        network_id,
        program,
        entrypoint,
        input,
        request_id,
        expires_at_ms,
        1,
    )
}

/// Signs a job (`job_submit`) as `key`: its attempts may run until `expires_at_ms`, at most
/// `max_retries + 1` of them.
#[allow(clippy::too_many_arguments)]
pub fn sign_job(
    key: &ed25519_dalek::SigningKey,
    network_id: &str,
    program: &ProgramId,
    entrypoint: &str,
    input: &[u8],
    request_id: &str,
    expires_at_ms: u64,
    max_retries: u32,
) -> CallSignature {
    let max_attempts = max_retries.saturating_add(1);
    sign(
        key,
        network_id,
        program,
        entrypoint,
        input,
        request_id,
        expires_at_ms,
        max_attempts,
    )
}

#[allow(clippy::too_many_arguments)]
fn sign(
    key: &ed25519_dalek::SigningKey,
    network_id: &str,
    program: &ProgramId,
    entrypoint: &str,
    input: &[u8],
    request_id: &str,
    expires_at_ms: u64,
    max_attempts: u32,
) -> CallSignature {
    use ed25519_dalek::Signer;
    let message = call_signing_message(
        network_id,
        program,
        entrypoint,
        &Hash32::of(input),
        request_id,
        expires_at_ms,
        max_attempts,
    );
    CallSignature {
        caller: Hash32(key.verifying_key().to_bytes()),
        expires_at_ms,
        signature: HexBytes(key.sign(&message).to_bytes().to_vec()),
    }
}

/// Checks a caller's signature over a call's fields (the accepting node, before it runs the
/// call; the expiry is checked separately against its clock). `max_attempts`: 1 for a call,
/// `max_retries + 1` for a job.
pub fn verify_call_signature(
    network_id: &str,
    program: &ProgramId,
    entrypoint: &str,
    input_hash: &Hash32,
    request_id: &str,
    max_attempts: u32,
    signed: &CallSignature,
) -> Result<(), CallerError> {
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
    let message = call_signing_message(
        network_id,
        program,
        entrypoint,
        input_hash,
        request_id,
        signed.expires_at_ms,
        max_attempts,
    );
    key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| CallerError::BadSignature {
            caller: signed.caller,
        })
}

/// Checks that a receipt's caller really asked for the call: an anonymous receipt (caller all
/// zeros) has no proof; a signed one has a proof whose signature verifies over the receipt's
/// fields, whose request id (for a job: with the attempt, which must be one the caller allowed)
/// gives the receipt's `call_id`, and which had not expired at the receipt's timestamp. Members run it before they attest, replicas before they apply, and
/// `verify_receipt` for everyone else.
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
    verify_call_signature(
        &receipt.network_id,
        &receipt.program_id,
        &receipt.entrypoint,
        &receipt.input_hash,
        &proof.request_id,
        max_attempts,
        &CallSignature {
            caller: receipt.caller,
            expires_at_ms: proof.expires_at_ms,
            signature: proof.signature.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt_signed_by(key: &ed25519_dalek::SigningKey, request_id: &str) -> ExecutionReceipt {
        let program = ProgramId::from_bytes([3; 32]);
        let input = b"hello";
        let signed = sign_call(key, "net", &program, "main", input, request_id, 1_000);
        let mut r = crate::program::tests::sample_receipt();
        r.network_id = "net".into();
        r.program_id = program;
        r.entrypoint = "main".into();
        r.input_hash = Hash32::of(input);
        r.timestamp_ms = 999;
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
        let signed = sign_job(&key, "net", &program, "main", b"in", "job-1", 1_000, 2);
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
