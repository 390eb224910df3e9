//! Wire types of the RPC (JSON). Hashed and signed objects use postcard, never these.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{BlobId, UploadId};

/// Bytes carried in JSON as standard base64 (with padding).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Base64Bytes(pub Vec<u8>);

impl std::fmt::Debug for Base64Bytes {
    // Payloads can be megabytes; debug output shows only their size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Base64Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Base64Bytes)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

impl From<Vec<u8>> for Base64Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

/// `node_info`: who this node is and how to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The iroh endpoint id (the node's ed25519 public key), 64 hex digits as iroh prints it.
    pub endpoint_id: String,
    /// An iroh endpoint ticket other nodes can dial (holds the id and current addresses).
    pub ticket: String,
    /// The node software version.
    pub version: String,
    /// The network this node belongs to; signatures are bound to it.
    pub network_id: String,
    /// Direct socket addresses the iroh endpoint is bound to or was seen at.
    pub addresses: Vec<String>,
    /// The node's home relay (the configured relay closest to it), once it has one; peers
    /// that cannot reach its direct addresses reach it there.
    pub relay_url: Option<String>,
    /// Whether the node is connected to its home relay right now.
    #[serde(default)]
    pub relay_connected: bool,
    /// The relays the node is configured with (`net.relays` resolved: `default` is iroh's
    /// public relays, empty when offline).
    #[serde(default)]
    pub relays: Vec<String>,
    /// Whether every connection goes through a relay (`net.relay_only`).
    #[serde(default)]
    pub relay_only: bool,
    /// The node's BLS12-381 public key (min_sig: G2, 96 bytes compressed), hex.
    pub bls_public_key: String,
    /// Whether the node runs without relays and external address lookup.
    pub offline: bool,
    pub uptime_secs: u64,
}

/// One readiness check in `node_health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// `node_health`: liveness (the process answers) and readiness (it can serve requests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub live: bool,
    pub ready: bool,
    /// Why the node is not ready; `None` when it is.
    pub reason: Option<String>,
    pub checks: Vec<HealthCheck>,
}

/// `node_metrics`: monotonically increasing counters and point-in-time gauges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub uptime_secs: u64,
    pub counters: BTreeMap<String, u64>,
    pub gauges: BTreeMap<String, u64>,
}

/// Metadata of one stored blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStat {
    pub id: BlobId,
    pub size: u64,
    pub mime: Option<String>,
    /// When this node first stored the blob (unix milliseconds).
    pub created_at_ms: u64,
}

/// A byte range of a blob, from `blob_get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobChunk {
    pub id: BlobId,
    pub offset: u64,
    pub data_base64: Base64Bytes,
    /// Size of the whole blob, so a reader knows how many ranges remain.
    pub total_size: u64,
    /// True when this chunk reaches the end of the blob.
    pub eof: bool,
    pub mime: Option<String>,
}

/// A page of `blob_list`, ordered by blob id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobPage {
    pub items: Vec<BlobStat>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// State of a chunked upload session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStatus {
    pub upload_id: UploadId,
    /// The size declared at `blob_upload_begin`.
    pub size: u64,
    /// Bytes received so far: the offset the next `blob_upload_append` must use.
    pub received: u64,
    pub mime: Option<String>,
    /// The largest chunk `blob_upload_append` accepts.
    pub max_chunk_bytes: u64,
    /// The session is dropped if untouched until then (unix milliseconds).
    pub expires_at_ms: u64,
}

/// A peer this node knows (`peer_list`, `peer_connect`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub endpoint_id: String,
    /// A ticket to dial the peer (its id and last known addresses).
    pub ticket: String,
    pub network_id: String,
    pub version: String,
    /// `direct` (UDP path in use), `relayed`, or `unknown` (no active path right now).
    pub connection: String,
    /// Round trip of the last ONVM ping, in milliseconds.
    pub latency_ms: Option<f64>,
    /// When the peer last answered (unix ms).
    pub last_seen_ms: u64,
    /// Why the last contact failed, if it did.
    pub last_error: Option<String>,
    /// Invalid messages (forged, malformed or refused DAG nodes) this peer sent; at 16 it is
    /// ignored until this node restarts.
    #[serde(default)]
    pub rejected: u32,
    /// A call to this peer failed within `net.suspect_ms`, here or on a node that reported it
    /// (it is tried last when calls are routed to committee members).
    #[serde(default)]
    pub suspected: bool,
}
