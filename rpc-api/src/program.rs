//! Programs, executions and receipts: the signed objects and their pure verifiers.
//!
//! Every hashed or signed object is encoded with postcard (the canonical binary encoding) and
//! hashed or signed under a domain tag naming what it is; signatures also bind the network id.

use serde::{Deserialize, Serialize};

use crate::hash32::{Hash32, HexBytes};
use crate::ids::{BlobId, ProgramId, ReceiptId};
use crate::types::Base64Bytes;

/// v2 binds the deployer: in v1 the same wasm and salt deployed on two nodes at once gave one
/// id with two different manifests and homes, and the network split over it.
pub const PROGRAM_ID_TAG: &[u8] = b"onvm/program-id/v2";
pub const MANIFEST_SIG_TAG: &[u8] = b"onvm/manifest-sig/v1";
pub const RECEIPT_ID_TAG: &[u8] = b"onvm/receipt-id/v1";
pub const RECEIPT_SIG_TAG: &[u8] = b"onvm/receipt-sig/v1";
pub const SEED_TAG: &[u8] = b"onvm/call-seed/v1";
pub const WRITES_TAG: &[u8] = b"onvm/write-digest/v1";
/// v2 binds the caller: a signed request is committed at most once per caller, and one caller
/// can never take (or block) another caller's request id.
pub const CALL_ID_TAG: &[u8] = b"onvm/call-id/v2";
/// `ExecutionReceipt::version` this build writes (2: receipts carry `call_id`; 3: and the
/// caller's proof of a signed call).
pub const RECEIPT_VERSION: u32 = 3;
/// Longest `request_id` of a call or a job, in bytes.
/// Fuel per call when a call names none (`vm.default_fuel`'s default): enough for any sample
/// program's heaviest documented input with room to spare; far below `vm.max_fuel`. A signed
/// call must name its fuel (it is signed); clients that sign use this unless told otherwise.
pub const DEFAULT_FUEL: u64 = 50_000_000;

pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// BLAKE3(tag, program id, caller, request id): the id under which a writing call is committed
/// at most once, whichever committee member sequences it and however often it is retried or
/// replayed. Anonymous calls have the all-zero caller.
pub fn call_id(program: &ProgramId, caller: &Hash32, request_id: &str) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(CALL_ID_TAG)
        .update(program.as_bytes())
        .update(&caller.0)
        .update(&(request_id.len() as u64).to_le_bytes())
        .update(request_id.as_bytes());
    Hash32(*h.finalize().as_bytes())
}
/// The guest ABI version (docs/ABI.md).
pub const ABI_VERSION: u32 = 1;

/// `prog` + BLAKE3(tag, deployer, code hash, salt), CREATE2-style: the same deployer, wasm and
/// salt always give the same id (a repeated deploy is idempotent), and two deployers can never
/// produce the same id, whatever wasm and salt they choose.
pub fn program_id(deployer: &Hash32, code: &BlobId, salt: &str) -> ProgramId {
    let mut h = blake3::Hasher::new();
    h.update(PROGRAM_ID_TAG)
        .update(&deployer.0)
        .update(code.as_bytes())
        .update(&(salt.len() as u64).to_le_bytes())
        .update(salt.as_bytes());
    ProgramId::from_bytes(*h.finalize().as_bytes())
}

/// The deterministic seed of a call, from its position and inputs.
pub fn call_seed(
    program: &ProgramId,
    height: u64,
    root_in: &Hash32,
    input_hash: &Hash32,
) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(SEED_TAG)
        .update(program.as_bytes())
        .update(&height.to_le_bytes())
        .update(&root_in.0)
        .update(&input_hash.0);
    Hash32(*h.finalize().as_bytes())
}

/// Digest of a call's writes: sorted by key, each `(key, Some(value) | None)`.
pub fn write_digest<'a>(writes: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(WRITES_TAG);
    for (k, v) in writes {
        h.update(&(k.len() as u64).to_le_bytes()).update(k);
        match v {
            Some(v) => h
                .update(&[1])
                .update(&(v.len() as u64).to_le_bytes())
                .update(v),
            None => h.update(&[0]),
        };
    }
    Hash32(*h.finalize().as_bytes())
}

/// A call's writes: key -> new value, or `None` for a delete. Sorted by key.
pub type Writes = std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The encoding of a call's writes that replicas receive (inline in a DAG node or as a blob):
/// postcard of the sorted `(key, value)` pairs.
pub fn encode_writes(writes: &Writes) -> Vec<u8> {
    postcard::to_allocvec(writes).unwrap_or_default()
}

/// Decodes writes received from a peer and checks them against the receipt's `write_digest`,
/// so a replica applies exactly what the executor committed.
pub fn decode_writes(bytes: &[u8], expected: &Hash32) -> Result<Writes, String> {
    let writes: Writes =
        postcard::from_bytes(bytes).map_err(|e| format!("malformed writes: {e}"))?;
    let digest = write_digest(writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())));
    if &digest != expected {
        return Err(format!(
            "writes digest {digest} does not match the receipt's {expected}"
        ));
    }
    Ok(writes)
}

fn tagged_message(tag: &[u8], network_id: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(tag.len() + network_id.len() + body.len() + 16);
    m.extend_from_slice(tag);
    m.extend_from_slice(&(network_id.len() as u64).to_le_bytes());
    m.extend_from_slice(network_id.as_bytes());
    m.extend_from_slice(body);
    m
}

fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard cannot fail on these plain structs; an empty encoding would fail verification.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// What a deployer signs: everything needed to run and audit the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramManifest {
    pub version: u32,
    pub network_id: String,
    pub program_id: ProgramId,
    /// The wasm module, stored as a blob.
    pub code: BlobId,
    pub code_size: u64,
    pub salt: String,
    /// Exported functions callable as entrypoints, with the default first.
    pub entrypoints: Vec<String>,
    /// Blobs the program may read with `onvm_blob_read`.
    pub blob_refs: Vec<BlobId>,
    pub abi_version: u32,
    /// Engine and ABI fingerprint the program was validated with.
    pub engine: String,
    pub initial_state_root: Hash32,
    /// ed25519 public key (iroh endpoint id) of the deploying node.
    pub deployer: Hash32,
    pub deployed_at_ms: u64,
    /// Who attests the program's calls (`committee::select`: the deployer first). A call is
    /// final with `threshold` member signatures; a committee of one is the deployer alone.
    pub committee: Vec<crate::committee::Member>,
    pub threshold: u32,
    /// How many programs the deployer deployed before this one, counted in the DAG below the
    /// deploy (the committee rank's nonce).
    pub deploy_nonce: u64,
    /// The endpoint ids, sorted, of every node announced in the DAG below the deploy: the
    /// candidates the committee was chosen from. Replicas recompute both from the DAG and
    /// refuse a deploy whose committee does not follow `committee::select` over them.
    pub candidates: Vec<Hash32>,
    /// Writing calls must be signed (`DeployRequest::require_signed_calls`); members and
    /// replicas refuse anonymous receipts of this program.
    pub require_signed_calls: bool,
}

impl ProgramManifest {
    /// The committee in the form receipts are verified against.
    pub fn committee(&self) -> crate::committee::Committee {
        crate::committee::Committee {
            program_id: self.program_id,
            epoch: 0,
            members: self.committee.clone(),
            threshold: self.threshold,
        }
    }

    /// The bytes the deployer signs.
    pub fn signing_message(&self) -> Vec<u8> {
        tagged_message(MANIFEST_SIG_TAG, &self.network_id, &canonical(self))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    pub manifest: ProgramManifest,
    /// ed25519 signature (64 bytes) by `manifest.deployer` over `signing_message()`.
    pub signature: HexBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("id does not match the content (claimed {claimed}, computed {computed})")]
    IdMismatch { claimed: String, computed: String },
    #[error("signature is invalid")]
    BadSignature,
    #[error("public key is malformed or not in the group")]
    BadPublicKey,
    #[error("signed for network `{found}`, expected `{expected}`")]
    WrongNetwork { expected: String, found: String },
    #[error(
        "committee must start with the deployer and have 1..=256 members, threshold 1..=members"
    )]
    BadCommittee,
    #[error("caller: {0}")]
    Caller(#[from] crate::caller::CallerError),
}

/// Checks the program id and the deployer's ed25519 signature.
pub fn verify_manifest(signed: &SignedManifest) -> Result<(), VerifyError> {
    let m = &signed.manifest;
    let computed = program_id(&m.deployer, &m.code, &m.salt);
    if computed != m.program_id {
        return Err(VerifyError::IdMismatch {
            claimed: m.program_id.to_string(),
            computed: computed.to_string(),
        });
    }
    if m.committee.first().map(|c| c.endpoint_id) != Some(m.deployer)
        || m.threshold == 0
        || m.threshold as usize > m.committee.len()
        || m.committee.len() > crate::committee::MAX_COMMITTEE
    {
        return Err(VerifyError::BadCommittee);
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(&m.deployer.0)
        .map_err(|_| VerifyError::BadPublicKey)?;
    let sig: [u8; 64] = signed
        .signature
        .0
        .as_slice()
        .try_into()
        .map_err(|_| VerifyError::BadSignature)?;
    key.verify_strict(
        &m.signing_message(),
        &ed25519_dalek::Signature::from_bytes(&sig),
    )
    .map_err(|_| VerifyError::BadSignature)
}

/// The trap kind of a failure inside the engine rather than the guest (instantiation failed,
/// e.g. because the instance pool is exhausted): local to one node, never attested.
pub const ENGINE_TRAP_KIND: &str = "engine";

/// How a call ended. In JSON: `"ok"`, `"out_of_fuel"`, ... or `{"trap": {"kind": .., "message": ..}}`.
/// (Externally tagged: the canonical postcard encoding cannot decode internally tagged enums.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// The guest trapped; `kind` is e.g. `unreachable`, `memory_out_of_bounds`,
    /// `host_bad_pointer`, `guest_abort`, `read_only`.
    Trap {
        kind: String,
        message: String,
    },
    OutOfFuel,
    MemoryLimit,
    StackOverflow,
    Timeout,
    BadOutput {
        message: String,
    },
    Rejected {
        message: String,
    },
    /// Stopped on request (a cancelled job). Appended last: variant indexes are encoded.
    Cancelled,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// Whether every committee member re-running the call gets this outcome too. Fuel-bounded
    /// outcomes are; a wall-clock timeout, a cancellation or an engine failure (e.g. an
    /// exhausted instance pool) is one node's local event. Only reproducible outcomes are
    /// committed at a height and attested (docs/PROTOCOL.md, "What is attested").
    pub fn is_reproducible(&self) -> bool {
        match self {
            Outcome::Timeout | Outcome::Cancelled => false,
            Outcome::Trap { kind, .. } => kind != ENGINE_TRAP_KIND,
            _ => true,
        }
    }

    /// Stable snake_case name (the `kind` in RPC errors).
    pub fn kind(&self) -> &str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Trap { .. } => "trap",
            Outcome::OutOfFuel => "out_of_fuel",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::StackOverflow => "stack_overflow",
            Outcome::Timeout => "timeout",
            Outcome::BadOutput { .. } => "bad_output",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// The record of one committed call (DESIGN.md §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionReceipt {
    pub version: u32,
    pub network_id: String,
    pub program_id: ProgramId,
    pub code_hash: BlobId,
    /// Engine and ABI fingerprint of the executor.
    pub engine: String,
    pub entrypoint: String,
    /// Position of this call in the program's log (0, 1, 2, ...).
    pub height: u64,
    pub input_hash: Hash32,
    /// The caller's ed25519 public key for a signed call, all zeros for an anonymous one.
    pub caller: Hash32,
    /// `call_id(program, caller, request_id)`: a retried request finds this receipt instead of
    /// running again.
    pub call_id: Hash32,
    /// For a signed call, what lets anyone check that `caller` asked for it
    /// (`caller::verify_caller`); absent for an anonymous call.
    pub caller_proof: Option<crate::caller::CallerProof>,
    pub timestamp_ms: u64,
    pub seed: Hash32,
    pub state_root_in: Hash32,
    pub state_root_out: Hash32,
    pub write_digest: Hash32,
    pub output_hash: Hash32,
    pub output_len: u64,
    pub fuel_limit: u64,
    pub fuel_used: u64,
    pub outcome: Outcome,
    /// ed25519 public key (endpoint id) of the node that executed the call.
    pub executor: Hash32,
}

impl ExecutionReceipt {
    pub fn id(&self) -> ReceiptId {
        let mut h = blake3::Hasher::new();
        h.update(RECEIPT_ID_TAG).update(&canonical(self));
        ReceiptId::from_bytes(*h.finalize().as_bytes())
    }
}

/// The bytes a committee member signs for a receipt.
pub fn receipt_signing_message(network_id: &str, id: &ReceiptId) -> Vec<u8> {
    tagged_message(RECEIPT_SIG_TAG, network_id, id.as_bytes())
}

/// A receipt with its executor's BLS signature and, for a committee of more than one, the
/// committee's aggregate signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub id: ReceiptId,
    pub receipt: ExecutionReceipt,
    /// Compressed BLS12-381 G2 public key (96 bytes) of the signer.
    pub signer_bls_key: HexBytes,
    /// Compressed G1 signature (48 bytes) over `receipt_signing_message`.
    pub signature: HexBytes,
    /// The committee's attestation (absent for a committee of one).
    #[serde(default)]
    pub attestation: Option<Attestation>,
}

/// Which committee members precommitted a receipt, in which consensus round, and their
/// aggregate signature: the commit certificate of the receipt's height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub epoch: u64,
    /// The Tendermint round of the receipt's height whose precommits are aggregated.
    pub round: u32,
    /// Bit i (little-endian within each byte) set: member i signed.
    pub signers: HexBytes,
    /// Compressed G1 aggregate signature (48 bytes) of the signers' precommits
    /// (`committee::precommit_message`).
    pub signature: HexBytes,
}

impl SignedReceipt {
    /// The receipt in the form `committee::VerifiedCommittee::verify` checks. A receipt without
    /// an attestation is its executor's word only: as an aggregate of one signer.
    pub fn aggregated(&self) -> crate::committee::AggregatedReceipt {
        match &self.attestation {
            Some(a) => crate::committee::AggregatedReceipt {
                id: self.id,
                receipt: self.receipt.clone(),
                epoch: a.epoch,
                round: Some(a.round),
                signers: a.signers.clone(),
                signature: a.signature.clone(),
            },
            None => crate::committee::AggregatedReceipt {
                id: self.id,
                receipt: self.receipt.clone(),
                epoch: 0,
                round: None,
                signers: HexBytes(vec![1]),
                signature: self.signature.clone(),
            },
        }
    }
}

/// Checks a receipt's id, its caller's proof (`caller::verify_caller`) and its signature,
/// optionally that it belongs to `network_id` and was signed by `expected_key`. Pure: no
/// re-execution, no node needed.
pub fn verify_receipt(
    signed: &SignedReceipt,
    network_id: Option<&str>,
    expected_key: Option<&[u8]>,
) -> Result<(), VerifyError> {
    let computed = signed.receipt.id();
    if computed != signed.id {
        return Err(VerifyError::IdMismatch {
            claimed: signed.id.to_string(),
            computed: computed.to_string(),
        });
    }
    if let Some(expected) = network_id
        && expected != signed.receipt.network_id
    {
        return Err(VerifyError::WrongNetwork {
            expected: expected.to_string(),
            found: signed.receipt.network_id.clone(),
        });
    }
    if let Some(key) = expected_key
        && key != signed.signer_bls_key.0.as_slice()
    {
        return Err(VerifyError::BadPublicKey);
    }
    crate::caller::verify_caller(&signed.receipt)?;
    let pk = crate::bls::public_key(&signed.signer_bls_key.0).ok_or(VerifyError::BadPublicKey)?;
    let msg = receipt_signing_message(&signed.receipt.network_id, &signed.id);
    if crate::bls::verify_with_key(&pk, &msg, &signed.signature.0, crate::bls::SIG_DST) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

// ---- RPC request/response types ----

/// `program_deploy` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The wasm module inline (base64) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_base64: Option<Base64Bytes>,
    /// ... or a blob already stored on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_blob: Option<BlobId>,
    /// Default `onvm_main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// Further exported functions callable as entrypoints.
    #[serde(default)]
    pub extra_entrypoints: Vec<String>,
    #[serde(default)]
    pub blob_refs: Vec<BlobId>,
    /// Distinguishes deployments of the same code; default empty.
    #[serde(default)]
    pub salt: String,
    /// Committee size K (default `committee.default_size`, at most `committee.max_size`);
    /// fewer if the network has fewer announced nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committee_size: Option<u32>,
    /// Signatures a call needs (default more than two thirds of the committee).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// Refuse anonymous writing calls (and jobs, which cannot be signed yet): every committed
    /// call then has a verified caller.
    #[serde(default)]
    pub require_signed_calls: bool,
}

/// `program_deploy` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployResult {
    pub program_id: ProgramId,
    /// False when the same code and salt were already deployed (idempotent).
    pub created: bool,
    pub manifest: SignedManifest,
}

/// A program in the catalog with its current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramInfo {
    pub program_id: ProgramId,
    pub manifest: SignedManifest,
    pub state_root: Hash32,
    /// Number of receipts (committed calls) so far: the next call's height.
    pub height: u64,
    pub keys: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramPage {
    pub items: Vec<ProgramInfo>,
    pub next_cursor: Option<String>,
}

/// `program_execute` options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteOptions {
    /// Fuel for this call; default `vm.default_fuel`, at most `vm.max_fuel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Run against the latest committed state without writing and without a receipt.
    #[serde(default)]
    pub read_only: bool,
    /// Exported function to call; default the manifest's first entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// Wall-clock limit in milliseconds; default and cap `vm.max_call_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The call's timestamp (unix ms) as proposed by the client, accepted within
    /// `vm.max_clock_skew_ms` of the node's clock and never before the program's previous call.
    /// Default: the node's clock (kept monotonic per program).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<u64>,
    /// Idempotency key (1..=128 bytes): a writing call with a request id that was already
    /// committed returns that call's result instead of running again, with empty `logs`
    /// (the same request id with a different input or entrypoint is a `conflict`).
    /// Default: a fresh random id, which the node that accepted the call reuses when it
    /// retries the call on another committee member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Make the call as a caller: its ed25519 signature over the network, program,
    /// entrypoint, input hash, `request_id` and an expiry (`caller::sign_call`). Needs
    /// `request_id` and `entrypoint`. Absent: the call is anonymous (caller all zeros).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<crate::caller::CallSignature>,
}

/// `program_execute` result (also the `data.result` of a failed call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteResult {
    pub program_id: ProgramId,
    pub outcome: Outcome,
    pub output_base64: Base64Bytes,
    pub fuel_used: u64,
    pub state_root_in: Hash32,
    pub state_root_out: Hash32,
    pub logs: Vec<String>,
    pub logs_truncated: bool,
    /// Absent for read-only calls.
    pub receipt: Option<SignedReceipt>,
}

/// `state_get` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateValue {
    pub program_id: ProgramId,
    pub key_base64: Base64Bytes,
    pub value_base64: Option<Base64Bytes>,
    pub state_root: Hash32,
}

/// `state_root` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRoot {
    pub program_id: ProgramId,
    pub state_root: Hash32,
    /// Receipts so far (the root is the one after the last of them).
    pub height: u64,
    pub keys: u64,
}

/// `state_proof` result: verify with [`crate::smt::verify_proof`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateProof {
    pub program_id: ProgramId,
    pub key_base64: Base64Bytes,
    pub value_base64: Option<Base64Bytes>,
    pub state_root: Hash32,
    pub proof: crate::smt::SmtProof,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptPage {
    pub items: Vec<SignedReceipt>,
    /// Pass as `before_height` for the next (older) page.
    pub next_before_height: Option<u64>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A receipt with every field set (callers change what they test).
    pub(crate) fn sample_receipt() -> ExecutionReceipt {
        receipt_with(Outcome::Ok)
    }

    fn receipt_with(outcome: Outcome) -> ExecutionReceipt {
        ExecutionReceipt {
            version: 1,
            network_id: "net".into(),
            program_id: ProgramId::from_bytes([1; 32]),
            code_hash: BlobId::from_bytes([2; 32]),
            engine: "e".into(),
            entrypoint: "onvm_main".into(),
            height: 3,
            input_hash: Hash32([4; 32]),
            caller: Hash32([5; 32]),
            call_id: Hash32([16; 32]),
            caller_proof: None,
            timestamp_ms: 6,
            seed: Hash32([7; 32]),
            state_root_in: Hash32([8; 32]),
            state_root_out: Hash32([9; 32]),
            write_digest: Hash32([10; 32]),
            output_hash: Hash32([11; 32]),
            output_len: 12,
            fuel_limit: 13,
            fuel_used: 14,
            outcome,
            executor: Hash32([15; 32]),
        }
    }

    #[test]
    fn receipts_round_trip_through_both_encodings() {
        for outcome in [
            Outcome::Ok,
            Outcome::OutOfFuel,
            Outcome::Trap {
                kind: "unreachable".into(),
                message: "m".into(),
            },
            Outcome::BadOutput {
                message: "x".into(),
            },
        ] {
            let r = receipt_with(outcome);
            let bin = postcard::to_allocvec(&r).unwrap();
            assert_eq!(postcard::from_bytes::<ExecutionReceipt>(&bin).unwrap(), r);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<ExecutionReceipt>(&json).unwrap(), r);
            assert_eq!(
                r.id(),
                serde_json::from_str::<ExecutionReceipt>(&json)
                    .unwrap()
                    .id()
            );
        }
    }

    #[test]
    fn program_ids_bind_deployer_code_and_salt() {
        let code = BlobId::from_bytes([1; 32]);
        let (me, other) = (Hash32([7; 32]), Hash32([8; 32]));
        assert_eq!(program_id(&me, &code, "a"), program_id(&me, &code, "a"));
        assert_ne!(program_id(&me, &code, "a"), program_id(&me, &code, "b"));
        // Two deployers of the same wasm and salt never collide.
        assert_ne!(program_id(&me, &code, "a"), program_id(&other, &code, "a"));
        assert_ne!(
            program_id(&me, &code, ""),
            program_id(&me, &BlobId::from_bytes([2; 32]), "")
        );
    }

    #[test]
    fn write_digest_depends_on_every_write() {
        let a = write_digest([(b"k".as_slice(), Some(b"v".as_slice()))]);
        let b = write_digest([(b"k".as_slice(), None)]);
        let c = write_digest([(b"k".as_slice(), Some(b"".as_slice()))]);
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_eq!(
            write_digest(std::iter::empty()),
            write_digest(std::iter::empty())
        );
    }
}
