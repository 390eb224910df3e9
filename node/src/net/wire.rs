//! Every ONVM wire type in one place: the ALPNs, the peer protocol (postcard), the call
//! protocol (JSON) and the gossip message (postcard). A change here is a change to
//! docs/PROTOCOL.md; postcard enums are encoded by variant order, so append, never reorder.

/// Versioned ALPN of the ONVM peer protocol (hello, ping, blob lookup).
pub const PEER_ALPN: &[u8] = b"/onvm/peer/1";
/// Largest peer message accepted; longer streams are reset with [`TOO_LONG`].
pub const MAX_PEER_MESSAGE: usize = 64 * 1024;
/// Largest reply to a peer request a node reads: room for a batch of DAG nodes
/// ([`PeerRequest::DagLogAfter`]), which is what makes joining a long history fast.
pub const MAX_PEER_REPLY: usize = 4 * 1024 * 1024;
/// Most DAG nodes one [`PeerRequest::DagLogAfter`] reply carries.
pub const MAX_DAG_LOG_BATCH: u32 = 1024;
/// Stream reset code for a message over [`MAX_PEER_MESSAGE`].
const TOO_LONG: u32 = 1;
/// Reads one request of at most `max` bytes from a stream; over it, both halves of the stream
/// are reset with [`TOO_LONG`] and None is returned (as for a stream that broke).
pub(super) async fn read_request(
    send: &mut iroh::endpoint::SendStream,
    recv: &mut iroh::endpoint::RecvStream,
    max: usize,
    remote: iroh::EndpointId,
) -> Option<Vec<u8>> {
    match recv.read_to_end(max).await {
        Ok(bytes) => Some(bytes),
        Err(iroh::endpoint::ReadToEndError::TooLong) => {
            tracing::debug!(%remote, "request over {max} bytes: stream reset");
            let _ = recv.stop(iroh::endpoint::VarInt::from_u32(TOO_LONG));
            let _ = send.reset(iroh::endpoint::VarInt::from_u32(TOO_LONG));
            None
        }
        Err(_) => None,
    }
}

/// Stream reset code for a message that does not decode.
pub(super) const MALFORMED: u32 = 2;
/// Stream reset code on `/onvm/call/1`: the node stopped before it finished the call.
pub(super) const STOPPING: u32 = 3;

/// Requests on [`PEER_ALPN`], postcard-encoded, one per bi-directional stream. The variant
/// order is the wire encoding: append new variants, never reorder.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum PeerRequest {
    Hello(Hello),
    Ping {
        nonce: u64,
    },
    /// Does the peer hold this blob? (BLAKE3 hash)
    HasBlob {
        hash: [u8; 32],
    },
    /// The peer's current DAG heads.
    DagHeads,
    /// One DAG node by id.
    DagGet {
        id: [u8; 32],
    },
    /// The peer's DAG nodes in its arrival order after position `after_seq` (at most `limit`,
    /// capped at [`MAX_DAG_LOG_BATCH`] and by [`MAX_PEER_REPLY`] bytes). A node enters the log
    /// only after its parents, so the log is parents-first: a joining node ingests it in order.
    DagLogAfter {
        after_seq: u64,
        limit: u32,
    },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum PeerResponse {
    Hello(Hello),
    Pong {
        nonce: u64,
    },
    HasBlob {
        size: Option<u64>,
        mime: Option<String>,
    },
    Refused {
        reason: String,
    },
    DagHeads {
        heads: Vec<[u8; 32]>,
    },
    /// The postcard-encoded node, or None if the peer does not have it.
    DagNode {
        node: Option<Vec<u8>>,
    },
    /// Answer to `DagLogAfter`: (position, postcard-encoded node) in log order; empty at the
    /// end of the log.
    DagLog {
        nodes: Vec<(u64, Vec<u8>)>,
    },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    pub network_id: String,
    pub version: String,
    /// The sender's own ticket, so the receiver can dial back.
    pub ticket: String,
    /// Tickets of other peers the sender knows (a bounded sample).
    pub peers: Vec<String>,
}

/// Versioned ALPN on which a program's home accepts calls and jobs accepted by other nodes.
pub const CALL_ALPN: &[u8] = b"/onvm/call/1";

/// A call forwarded to a program's home. JSON-encoded (the RPC types, errors with their
/// structured `data`), one per bi-directional stream.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ForwardedCall {
    Execute {
        program_id: onvm_rpc_api::ProgramId,
        input_base64: onvm_rpc_api::types::Base64Bytes,
        options: onvm_rpc_api::program::ExecuteOptions,
    },
    SubmitJob {
        request: onvm_rpc_api::jobs::SubmitJob,
    },
    CancelJob {
        job_id: onvm_rpc_api::JobId,
    },
    /// Run this call although this node is not the home: the home and the members ranked
    /// before this one could not be reached; any member may enter a call into its committee's
    /// consensus.
    ExecuteTakeover {
        program_id: onvm_rpc_api::ProgramId,
        input_base64: onvm_rpc_api::types::Base64Bytes,
        options: onvm_rpc_api::program::ExecuteOptions,
    },
    /// Accept and run this job although this node is not the home: the home and the members
    /// ranked before this one could not be reached (job failover).
    SubmitJobTakeover {
        request: onvm_rpc_api::jobs::SubmitJob,
    },
}

/// The home's answer: the RPC result, or the RPC error it would have returned to a client.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ForwardedReply {
    Executed {
        result: Box<onvm_rpc_api::program::ExecuteResult>,
    },
    Submitted {
        result: Box<onvm_rpc_api::jobs::SubmitResult>,
    },
    Cancelled {
        job: Box<onvm_rpc_api::jobs::JobInfo>,
    },
    Error {
        code: i32,
        message: String,
        data: Option<serde_json::Value>,
    },
}

/// Versioned ALPN of the committee protocol: Tendermint messages between the members of a
/// program's committee (docs/PROTOCOL.md, "Committees"). v1 carried PBFT.
pub const COMMITTEE_ALPN: &[u8] = b"/onvm/committee/2";

/// One committee message, JSON-encoded, one per unidirectional stream: a consensus message of
/// one program (`consensus::tendermint` bytes, versioned, signed where they are votes or
/// proposals), with the data the consensus core leaves out of its messages.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteeEnvelope {
    pub network_id: String,
    pub program_id: onvm_rpc_api::ProgramId,
    /// `tendermint::sequencer::Message::encode`; absent in a notice (an `Interrupted`
    /// attachment alone).
    #[serde(default)]
    pub message: Option<onvm_rpc_api::HexBytes>,
    pub attachment: Attachment,
}

/// What a committee message carries beside itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attachment {
    None,
    /// With a `Forward`: the calls' payloads (the leader admits them again before running).
    Calls {
        calls: Vec<crate::programs::CallPayload>,
    },
    /// With a proposal: the proposed receipt body (its id is the value's receipt id) and the
    /// call's input, which members re-execute before they prevote.
    Proposal {
        receipt: Box<onvm_rpc_api::program::ExecutionReceipt>,
        input_base64: onvm_rpc_api::types::Base64Bytes,
    },
    /// A notice from a leader to the member that forwarded it `call_id`: its run of the call
    /// was interrupted (a wall-clock timeout, a cancellation: no receipt), so that member's
    /// waiting client learns what happened instead of waiting for a decision.
    Interrupted {
        call_id: onvm_rpc_api::Hash32,
        result: Box<onvm_rpc_api::program::ExecuteResult>,
    },
    /// A notice from the member whose client cancelled `call_id` (a job) to the others: a
    /// run of it in progress or to come stops as cancelled.
    Cancel {
        call_id: onvm_rpc_api::Hash32,
    },
}

/// One gossip message, postcard-encoded. Variant order is the encoding: append, never reorder.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum GossipMessage {
    /// A postcard-encoded `DagNode`.
    DagNode(Vec<u8>),
    /// A liveness report, signed by its reporter's endpoint key over
    /// [`LivenessReport::signing_message`].
    Liveness {
        report: LivenessReport,
        signature: Vec<u8>,
    },
}

/// How many `GossipMessage` variants this version knows: a message whose variant index is
/// higher comes from a newer node and is ignored, not held against its relayer.
pub const GOSSIP_VARIANTS: u64 = 2;

/// "My call to `subject` failed" (`alive: false`), or "I, `subject`, am alive" (`alive: true`,
/// `reporter == subject`), shared so the network pays a dead member's dial timeout once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LivenessReport {
    pub network_id: String,
    /// The endpoint id that signs the report.
    pub reporter: [u8; 32],
    pub subject: [u8; 32],
    pub alive: bool,
    /// The reporter's wall clock (unix ms): a report older than `net.suspect_ms` is ignored.
    pub at_ms: u64,
}

impl LivenessReport {
    /// The bytes the reporter signs: a domain tag, then the postcard encoding.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = b"onvm/liveness/v1\0".to_vec();
        m.extend(postcard::to_allocvec(self).unwrap_or_default());
        m
    }
}
