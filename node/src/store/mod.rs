//! The node database (redb): the only module that touches redb directly. Records are postcard
//! encoded; every write is one durable transaction.

use std::path::Path;
use std::sync::Arc;

use onvm_rpc_api::dag::DataRef;
use onvm_rpc_api::program::{SignedManifest, SignedReceipt, Writes};
use onvm_rpc_api::smt::{self, SmtProof};
use onvm_rpc_api::{Hash32, ProgramId, ReceiptId};
use redb::{
    Database, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::state::{self as smt_state, NodeStore, SmtNode, StateError};

mod attest;
mod consensus;
mod dag;
mod jobs;
mod tokens;
pub use attest::Evidence;
pub use dag::{DagAuthor, DeployContext, ForeignInsert, ReplicatedCall};
pub use jobs::{JobCommit, JobUpdate};
pub use tokens::TokenRecord;

/// Bumped when the layout of a table changes; a node refuses a database it does not understand.
/// 4: program ids bind the deployer (v2), refused and deferred DAG payloads are kept.
/// 5: receipts carry the caller's proof (v3), manifests `require_signed_calls`, call ids bind
/// the caller (v2).
/// 6: attestations are Tendermint commit certificates naming their round; the consensus log
/// is `consensus_wal` / `consensus_decisions` (PBFT's `pbft_log`, `pbft_votes` and the
/// single-round `votes` are gone).
const SCHEMA_VERSION: u32 = 6;

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
/// BLAKE3 hash -> BlobRecord.
const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs");
/// Upload id -> UploadRecord.
const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// `job:<id>` / `upload:<id>` -> the client that created it on this node (`rpc::auth::owner`).
const OWNERS: TableDefinition<&str, &str> = TableDefinition::new("owners");
/// Program id -> ProgramRecord.
const PROGRAMS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("programs");
/// Program id ++ user key -> value.
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
/// SMT node hash -> SmtNode (content-addressed, shared by all programs and roots).
const SMT_NODES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("smt_nodes");
/// Program id ++ height (big endian) -> SignedReceipt.
const RECEIPTS: TableDefinition<&[u8; 40], &[u8]> = TableDefinition::new("receipts");
/// Program id ++ height -> the call's input (for audits).
const CALL_INPUTS: TableDefinition<&[u8; 40], &[u8]> = TableDefinition::new("call_inputs");
/// Program id ++ height -> the call's output (what a retried request is answered with).
const CALL_OUTPUTS: TableDefinition<&[u8; 40], &[u8]> = TableDefinition::new("call_outputs");
/// Program id ++ call id -> height: a request id commits at most once per program.
const CALL_IDS: TableDefinition<&[u8; 64], u64> = TableDefinition::new("call_ids");
/// Receipt id -> program id ++ height.
const RECEIPT_INDEX: TableDefinition<&[u8; 32], &[u8; 40]> = TableDefinition::new("receipt_index");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("node database: {0}")]
    Db(#[from] redb::Error),
    #[error(
        "the database {path} is in use by another running node: one data dir serves one node (start a second node with its own --data-dir, or stop the first)"
    )]
    InUse { path: String },
    #[error("node database record is corrupt ({table}): {source}")]
    Decode {
        table: &'static str,
        source: postcard::Error,
    },
    #[error(
        "node database schema version {found} is not supported by this build (expects {SCHEMA_VERSION}); it cannot be migrated: start from a fresh data directory (docs/OPERATIONS.md, \"Upgrading\")"
    )]
    Schema { found: u32 },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("internal error: a read-only snapshot was asked to write")]
    ReadOnlySnapshot,
    #[error("job record is corrupt: {0}")]
    JobDecode(String),
    #[error("job {0} not found")]
    UnknownJob(onvm_rpc_api::JobId),
    #[error(
        "request id `{request_id}` was already used for job {existing} with a different {what}"
    )]
    RequestConflict {
        request_id: String,
        existing: onvm_rpc_api::JobId,
        what: &'static str,
    },
    #[error("replicated execution refused: {0}")]
    ReplicaRejected(String),
    #[error("DAG node parent {0} is not stored")]
    DagMissingParent(Hash32),
    #[error("the job queue is full ({max} jobs waiting); retry later")]
    QueueFull { max: u64 },
    #[error("program {0} is not in the catalog")]
    UnknownProgram(ProgramId),
    #[error("program {program} moved to height {found} while a call for height {expected} ran")]
    HeightRace {
        program: ProgramId,
        expected: u64,
        found: u64,
    },
    #[error("call {call_id} of program {program} is already committed")]
    CallCommitted { program: ProgramId, call_id: Hash32 },
    #[error("node database: {0}")]
    Corrupt(String),
    /// A write failed because the disk is full. Nothing was committed by it; what was
    /// committed before is intact.
    #[error(
        "the disk holding the node database is full ({0}): nothing was written; free space, then retry (the node recovers without a restart)"
    )]
    DiskFull(String),
    /// An earlier write failed and the database is being reopened.
    #[error(
        "the node database is recovering from a failed write ({0}); retry shortly (free disk space if it is full)"
    )]
    Recovering(String),
}

thread_local! {
    /// Set while [`Store::with_batched_dag_commits`] runs on this thread.
    static LAZY_DAG_COMMITS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether an I/O error means "no space left" (ENOSPC, or a quota: EDQUOT).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(libc::ENOSPC)
        || e.raw_os_error() == Some(libc::EDQUOT)
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                match redb::Error::from(e) {
                    redb::Error::Io(io) if is_disk_full(&io) => StoreError::DiskFull(io.to_string()),
                    redb::Error::PreviousIo => StoreError::Recovering(
                        "a write failed earlier in this transaction's lifetime".into(),
                    ),
                    other => StoreError::Db(other),
                }
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What the node knows about a stored blob beyond its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    pub mime: Option<String>,
    pub created_at_ms: u64,
}

/// A chunked upload in progress. The bytes live in a file; its length is the received count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub size: u64,
    pub mime: Option<String>,
    pub created_at_ms: u64,
}

fn decode<T: for<'a> Deserialize<'a>>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|source| StoreError::Decode { table, source })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard into a Vec only fails on types serde cannot represent; ours are plain structs.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// The database, reopened in place after a failed write. redb refuses every transaction once a
/// write has failed (a full disk, an I/O error) until the database is closed and opened again;
/// doing that here lets a node recover as soon as space is back, without a restart.
#[derive(Debug)]
struct Db {
    path: std::path::PathBuf,
    /// redb's page cache, in bytes (config `node.db_cache_bytes`).
    cache_bytes: usize,
    current: std::sync::RwLock<Option<Arc<Database>>>,
    /// Set when a failed write was seen; the health probe then checks that writes work again.
    suspect: std::sync::atomic::AtomicBool,
}

/// How long a reopen waits for transactions of the failed handle to finish (they hold the
/// file's lock until they end; after a failed write they all fail fast).
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Db {
    fn open_file(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
        redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                    path: path.display().to_string(),
                },
                other => StoreError::from(redb::Error::from(other)),
            })
    }

    fn handle(&self) -> Result<Arc<Database>, StoreError> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match current {
            Some(db) => Ok(db),
            None => self.reopen(None),
        }
    }

    /// Replaces the handle `broken` (by address; the caller dropped its reference) with a
    /// freshly opened database, unless another thread did so already.
    fn reopen(&self, broken: Option<usize>) -> Result<Arc<Database>, StoreError> {
        let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
        match (&*slot, broken) {
            (Some(db), Some(addr)) if Arc::as_ptr(db) as usize != addr => return Ok(db.clone()),
            (Some(db), None) => return Ok(db.clone()),
            _ => {}
        }
        self.suspect
            .store(true, std::sync::atomic::Ordering::Release);
        // Dropping the last handle closes the file once the failed transactions end.
        *slot = None;
        let deadline = std::time::Instant::now() + REOPEN_WAIT;
        loop {
            match Self::open_file(&self.path, self.cache_bytes) {
                Ok(db) => {
                    tracing::warn!(path = %self.path.display(), "reopened the node database after a failed write");
                    let db = Arc::new(db);
                    *slot = Some(db.clone());
                    return Ok(db);
                }
                Err(StoreError::InUse { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), "reopening the node database failed: {e}");
                    return Err(match e {
                        StoreError::DiskFull(_) => e,
                        other => StoreError::Recovering(other.to_string()),
                    });
                }
            }
        }
    }
}

/// Cloneable handle to the node database. Calls block: use them from `spawn_blocking`.
#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Db>,
    dag_author: Arc<std::sync::OnceLock<DagAuthor>>,
    /// Bumped after every commit that may have added DAG nodes (gossip and `dag_subscribe`
    /// then read the log from their cursor).
    dag_changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// Committees whose keys were checked once, for verifying replicated receipts.
    committees: Arc<
        std::sync::Mutex<
            std::collections::HashMap<ProgramId, Arc<onvm_rpc_api::committee::VerifiedCommittee>>,
        >,
    >,
}

impl Store {
    /// Opens (or creates) the database at `path` with the default page cache.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, crate::config::DEFAULT_DB_CACHE_BYTES as usize)
    }

    /// Opens (or creates) the database at `path` with a page cache of `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let db = Db::open_file(path, cache_bytes)?;
        let store = Self {
            db: Arc::new(Db {
                path: path.to_path_buf(),
                cache_bytes,
                current: std::sync::RwLock::new(Some(Arc::new(db))),
                suspect: std::sync::atomic::AtomicBool::new(false),
            }),
            dag_author: Arc::default(),
            dag_changed: Arc::new(tokio::sync::watch::channel(0).0),
            committees: Arc::default(),
        };
        store.init_schema()?;
        Ok(store)
    }

    /// Starts a write transaction, reopening the database first if an earlier write failed.
    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let db = self.db.handle()?;
        match db.begin_write() {
            Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo)) => {
                let addr = Arc::as_ptr(&db) as usize;
                drop(db);
                Ok(self.db.reopen(Some(addr))?.begin_write()?)
            }
            other => Ok(other?),
        }
    }

    /// Starts a read transaction, reopening the database first if an earlier write failed.
    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        let db = self.db.handle()?;
        match db.begin_read() {
            Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo)) => {
                let addr = Arc::as_ptr(&db) as usize;
                drop(db);
                Ok(self.db.reopen(Some(addr))?.begin_read()?)
            }
            other => Ok(other?),
        }
    }

    /// Commits a transaction that may have appended DAG nodes and wakes their readers.
    fn commit_dag(&self, mut tx: redb::WriteTransaction) -> Result<(), StoreError> {
        if LAZY_DAG_COMMITS.get() {
            tx.set_durability(redb::Durability::None)
                .map_err(|e| StoreError::Db(redb::Error::from(e)))?;
        }
        tx.commit()?;
        self.dag_changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Runs `ingest` (foreign DAG nodes stored one after the other on this thread) with their
    /// commits made durable together, by one fsync at the end, instead of one fsync each: a
    /// node joining a long history stores thousands of nodes. A crash before the end loses only
    /// nodes that were never acknowledged to anyone; they are pulled again. Commits of other
    /// threads (local operations) stay durable one by one.
    pub fn with_batched_dag_commits<T>(&self, ingest: impl FnOnce() -> T) -> Result<T, StoreError> {
        /// Resets the flag however `ingest` ends (a panic must not leave this pool thread
        /// committing lazily for whatever runs on it next).
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                LAZY_DAG_COMMITS.set(false);
            }
        }
        LAZY_DAG_COMMITS.set(true);
        let reset = Reset;
        let out = ingest();
        drop(reset);
        // A durable commit makes every earlier non-durable one durable too.
        self.begin_write()?.commit()?;
        Ok(out)
    }

    /// Changes whenever DAG nodes may have been added.
    pub fn dag_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.dag_changed.subscribe()
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
                Some(v) if v == SCHEMA_VERSION => {}
                Some(found) => return Err(StoreError::Schema { found }),
            }
            tx.open_table(BLOBS)?;
            tx.open_table(UPLOADS)?;
            tx.open_table(OWNERS)?;
            tx.open_table(PROGRAMS)?;
            tx.open_table(STATE)?;
            tx.open_table(SMT_NODES)?;
            tx.open_table(RECEIPTS)?;
            tx.open_table(RECEIPT_INDEX)?;
            tx.open_table(CALL_INPUTS)?;
            tx.open_table(CALL_OUTPUTS)?;
            tx.open_table(CALL_IDS)?;
            jobs::create_tables(&tx)?;
            dag::create_tables(&tx)?;
            attest::create_tables(&tx)?;
            consensus::create_tables(&tx)?;
            tokens::create_tables(&tx)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Proves the database answers (health check): a read, and after a failed write was seen,
    /// a small write too, so a node whose disk is full reports it until writes work again.
    pub fn check(&self) -> Result<u32, StoreError> {
        use std::sync::atomic::Ordering;
        let version = {
            let tx = self.begin_read()?;
            let meta = tx.open_table(META)?;
            meta.get("schema_version")?.map(|v| v.value()).unwrap_or(0)
        };
        if self.db.suspect.load(Ordering::Acquire) {
            let tx = self.begin_write()?;
            {
                let mut meta = tx.open_table(META)?;
                let probes = meta.get("write_probes")?.map(|v| v.value()).unwrap_or(0);
                meta.insert("write_probes", probes.wrapping_add(1))?;
            }
            tx.commit()?;
            self.db.suspect.store(false, Ordering::Release);
            tracing::info!("writes to the node database work again");
        }
        Ok(version)
    }

    /// Records a blob unless already known; returns the record that is stored afterwards.
    /// A later put may fill in a mime type the first one lacked, but never changes one.
    /// `publish`: a blob first stored here (not fetched from a peer) gets a DAG node.
    pub fn upsert_blob(
        &self,
        hash: &[u8; 32],
        record: &BlobRecord,
        publish: bool,
    ) -> Result<(BlobRecord, bool), StoreError> {
        let tx = self.begin_write()?;
        let result = {
            let mut blobs = tx.open_table(BLOBS)?;
            let existing = blobs
                .get(hash)?
                .map(|v| decode::<BlobRecord>("blobs", v.value()))
                .transpose()?;
            match existing {
                Some(mut old) => {
                    if old.mime.is_none() && record.mime.is_some() {
                        old.mime = record.mime.clone();
                        blobs.insert(hash, encode(&old).as_slice())?;
                    }
                    (old, false)
                }
                None => {
                    blobs.insert(hash, encode(record).as_slice())?;
                    if publish {
                        dag::append(
                            &tx,
                            self.author(),
                            onvm_rpc_api::dag::DagPayload::BlobPublished {
                                blob: onvm_rpc_api::BlobId::from_bytes(*hash),
                                size: record.size,
                                mime: record.mime.clone(),
                            },
                        )?;
                    }
                    (record.clone(), true)
                }
            }
        };
        self.commit_dag(tx)?;
        Ok(result)
    }

    pub fn blob(&self, hash: &[u8; 32]) -> Result<Option<BlobRecord>, StoreError> {
        let tx = self.begin_read()?;
        let blobs = tx.open_table(BLOBS)?;
        blobs
            .get(hash)?
            .map(|v| decode("blobs", v.value()))
            .transpose()
    }

    /// Up to `limit` blobs with hash strictly greater than `after`, in hash order.
    pub fn blobs_after(
        &self,
        after: Option<&[u8; 32]>,
        limit: usize,
    ) -> Result<Vec<([u8; 32], BlobRecord)>, StoreError> {
        let tx = self.begin_read()?;
        let blobs = tx.open_table(BLOBS)?;
        let range = match after {
            Some(after) => blobs.range::<&[u8; 32]>((
                std::ops::Bound::Excluded(after),
                std::ops::Bound::Unbounded,
            ))?,
            None => blobs.range::<&[u8; 32]>(..)?,
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in range.take(limit) {
            let (k, v) = entry?;
            out.push((*k.value(), decode("blobs", v.value())?));
        }
        Ok(out)
    }

    pub fn blob_count(&self) -> Result<u64, StoreError> {
        let tx = self.begin_read()?;
        Ok(tx.open_table(BLOBS)?.len()?)
    }

    pub fn insert_upload(&self, id: &str, record: &UploadRecord) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        tx.open_table(UPLOADS)?
            .insert(id, encode(record).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>, StoreError> {
        let tx = self.begin_read()?;
        let uploads = tx.open_table(UPLOADS)?;
        uploads
            .get(id)?
            .map(|v| decode("uploads", v.value()))
            .transpose()
    }

    /// Records who created `key` (`job:<id>`, `upload:<id>`); the first owner stays.
    pub fn set_owner(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            let mut owners = tx.open_table(OWNERS)?;
            if owners.get(key)?.is_none() {
                owners.insert(key, owner)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Who created `key` on this node, if it was created here.
    pub fn owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        let tx = self.begin_read()?;
        let owners = tx.open_table(OWNERS)?;
        Ok(owners.get(key)?.map(|v| v.value().to_string()))
    }

    /// Removes an upload; returns whether it existed.
    pub fn remove_upload(&self, id: &str) -> Result<bool, StoreError> {
        let tx = self.begin_write()?;
        let existed = tx.open_table(UPLOADS)?.remove(id)?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    pub fn uploads(&self) -> Result<Vec<(String, UploadRecord)>, StoreError> {
        let tx = self.begin_read()?;
        let uploads = tx.open_table(UPLOADS)?;
        let mut out = Vec::new();
        for entry in uploads.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), decode("uploads", v.value())?));
        }
        Ok(out)
    }
}

/// A deployed program and where its state stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramRecord {
    pub manifest: SignedManifest,
    pub state_root: Hash32,
    /// Receipts so far; the next call's height.
    pub height: u64,
    pub keys: u64,
    /// Timestamp of the last call: call timestamps never go backwards.
    pub last_timestamp_ms: u64,
}

/// The record of `program` from either kind of transaction, or `UnknownProgram`.
fn require_program(
    programs: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    program: &ProgramId,
) -> Result<ProgramRecord, StoreError> {
    programs
        .get(program.as_bytes())?
        .map(|v| decode("programs", v.value()))
        .transpose()?
        .ok_or(StoreError::UnknownProgram(*program))
}

fn state_key(program: &ProgramId, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(32 + key.len());
    k.extend_from_slice(program.as_bytes());
    k.extend_from_slice(key);
    k
}

fn receipt_key(program: &ProgramId, height: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(program.as_bytes());
    k[32..].copy_from_slice(&height.to_be_bytes());
    k
}

/// What a call commits besides its receipt.
#[derive(Debug, Clone, Copy)]
pub struct CallEffects<'a> {
    /// The height the call ran at; must still be the program's height when it commits.
    pub height: u64,
    pub timestamp_ms: u64,
    pub writes: &'a Writes,
    /// `program::encode_writes(writes)`: the caller encodes once, to decide whether the writes
    /// need a blob (stored before the commit that names it).
    pub encoded_writes: &'a [u8],
    /// Kept (and replicated) so auditors can replay the call.
    pub input: &'a [u8],
    /// Kept (and replicated) so a retried request gets the same answer on any node.
    pub output: &'a [u8],
    pub call_id: Hash32,
}

fn call_id_key(program: &ProgramId, call_id: &Hash32) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(program.as_bytes());
    k[32..].copy_from_slice(&call_id.0);
    k
}

/// Stores what every node keeps of a committed call besides its receipt, under `key`
/// (program ++ height). Shared by the sequencer's commit and replicas.
pub(super) fn record_call(
    tx: &redb::WriteTransaction,
    key: &[u8; 40],
    receipt: &SignedReceipt,
    input: &[u8],
    output: &[u8],
) -> Result<(), StoreError> {
    let r = &receipt.receipt;
    tx.open_table(RECEIPTS)?
        .insert(key, encode(receipt).as_slice())?;
    tx.open_table(RECEIPT_INDEX)?
        .insert(receipt.id.as_bytes(), key)?;
    tx.open_table(CALL_INPUTS)?.insert(key, input)?;
    tx.open_table(CALL_OUTPUTS)?.insert(key, output)?;
    tx.open_table(CALL_IDS)?
        .insert(&call_id_key(&r.program_id, &r.call_id), r.height)?;
    Ok(())
}

/// The id of the receipt committed at `key` (program ‖ height), if any.
pub(super) fn receipt_id_at(
    tx: &redb::WriteTransaction,
    key: &[u8; 40],
) -> Result<Option<ReceiptId>, StoreError> {
    let receipts = tx.open_table(RECEIPTS)?;
    let stored = receipts.get(key)?;
    stored
        .map(|v| decode::<SignedReceipt>("receipts", v.value()).map(|r| r.id))
        .transpose()
}

/// The height at which `call_id` of `program` was committed, if it was.
pub(super) fn call_height(
    tx: &redb::WriteTransaction,
    program: &ProgramId,
    call_id: &Hash32,
) -> Result<Option<u64>, StoreError> {
    Ok(tx
        .open_table(CALL_IDS)?
        .get(&call_id_key(program, call_id))?
        .map(|v| v.value()))
}

/// Where a receipt is stored: its program ‖ height key.
fn receipt_location(
    tx: &redb::ReadTransaction,
    id: &ReceiptId,
) -> Result<Option<[u8; 40]>, StoreError> {
    Ok(tx
        .open_table(RECEIPT_INDEX)?
        .get(id.as_bytes())?
        .map(|v| *v.value()))
}

/// A committed call found by its call id.
#[derive(Debug, Clone)]
pub struct CommittedCall {
    pub receipt: SignedReceipt,
    pub output: Vec<u8>,
}

/// Applies `writes` to `program`'s state and tree inside `tx`, updating the record's root and
/// key count; returns the new root. Shared by the executor's commit and replicas.
fn apply_writes(
    tx: &redb::WriteTransaction,
    program: &ProgramId,
    record: &mut ProgramRecord,
    writes: &Writes,
) -> Result<Hash32, StoreError> {
    let mut state = tx.open_table(STATE)?;
    let mut nodes = WriteNodes {
        table: tx.open_table(SMT_NODES)?,
        pending: std::collections::HashMap::new(),
    };
    let mut root = record.state_root;
    for (key, value) in writes {
        let k = state_key(program, key);
        let existed = match value {
            Some(v) => state.insert(k.as_slice(), v.as_slice())?.is_some(),
            None => state.remove(k.as_slice())?.is_some(),
        };
        match (existed, value.is_some()) {
            (false, true) => record.keys += 1,
            (true, false) => record.keys = record.keys.saturating_sub(1),
            _ => {}
        }
        let vh = value.as_deref().map(smt::value_hash);
        root = smt_state::update(&mut nodes, root, &smt::key_hash(key), vh.as_ref())?;
    }
    nodes.flush(root)?;
    record.state_root = root;
    Ok(root)
}

/// SMT nodes inside a write transaction. New nodes stay in memory until `flush`, which writes
/// only those reachable from the final root: a batch of k updates creates k·log(n) nodes, most
/// of them replaced by later updates in the same batch, and those never reach the disk.
struct WriteNodes<'t> {
    table: redb::Table<'t, &'static [u8; 32], &'static [u8]>,
    pending: std::collections::HashMap<Hash32, SmtNode>,
}

impl WriteNodes<'_> {
    fn flush(&mut self, root: Hash32) -> Result<(), StoreError> {
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            // Nodes not pending were stored by earlier commits, and so were their children.
            if let Some(node) = self.pending.remove(&h) {
                self.table.insert(&h.0, encode(&node).as_slice())?;
                if let SmtNode::Internal { left, right } = node {
                    stack.push(left);
                    stack.push(right);
                }
            }
        }
        self.pending.clear();
        Ok(())
    }
}

impl NodeStore for WriteNodes<'_> {
    type Error = StoreError;
    fn get_node(&self, hash: &Hash32) -> Result<Option<SmtNode>, StoreError> {
        if let Some(n) = self.pending.get(hash) {
            return Ok(Some(n.clone()));
        }
        self.table
            .get(&hash.0)?
            .map(|v| decode("smt_nodes", v.value()))
            .transpose()
    }
    fn put_node(&mut self, hash: &Hash32, node: &SmtNode) -> Result<(), StoreError> {
        self.pending.insert(*hash, node.clone());
        Ok(())
    }
}

/// SMT nodes in a read snapshot (proofs only read).
struct ReadNodes(ReadOnlyTable<&'static [u8; 32], &'static [u8]>);

impl NodeStore for ReadNodes {
    type Error = StoreError;
    fn get_node(&self, hash: &Hash32) -> Result<Option<SmtNode>, StoreError> {
        self.0
            .get(&hash.0)?
            .map(|v| decode("smt_nodes", v.value()))
            .transpose()
    }
    fn put_node(&mut self, _: &Hash32, _: &SmtNode) -> Result<(), StoreError> {
        Err(StoreError::ReadOnlySnapshot)
    }
}

/// A consistent read-only view of one program's state, for a call to run against.
pub struct StateSnapshot {
    program: ProgramId,
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl StateSnapshot {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let k = state_key(&self.program, key);
        Ok(self.table.get(k.as_slice())?.map(|v| v.value().to_vec()))
    }

    /// Smallest key with `prefix` strictly after `after` (or the first).
    pub fn next_key(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let full_prefix = state_key(&self.program, prefix);
        let lower = match after {
            Some(a) => std::ops::Bound::Excluded(state_key(&self.program, a)),
            None => std::ops::Bound::Included(full_prefix.clone()),
        };
        let lower_ref = match &lower {
            std::ops::Bound::Excluded(v) => std::ops::Bound::Excluded(v.as_slice()),
            std::ops::Bound::Included(v) => std::ops::Bound::Included(v.as_slice()),
            std::ops::Bound::Unbounded => std::ops::Bound::Unbounded,
        };
        let mut range = self
            .table
            .range::<&[u8]>((lower_ref, std::ops::Bound::Unbounded))?;
        match range.next() {
            Some(entry) => {
                let (k, _) = entry?;
                let k = k.value();
                if k.starts_with(&full_prefix) {
                    Ok(Some(k[32..].to_vec()))
                } else {
                    Ok(None)
                }
            }
            None => Ok(None),
        }
    }
}

impl Store {
    /// Adds a program unless present; returns the stored record and whether it was new.
    pub fn insert_program(
        &self,
        manifest: &SignedManifest,
    ) -> Result<(ProgramRecord, bool), StoreError> {
        self.insert_program_with(&manifest.manifest.program_id, |_| Ok(manifest.clone()))
    }

    /// Deploys program `id` unless it exists (then returns it, `false`): `build` signs the
    /// manifest given the deploy context of the DAG node that will record it (its committee
    /// candidates and the deployer's nonce), inside the same transaction, so the committee is
    /// chosen from exactly what replicas will recompute.
    pub fn insert_program_with<E: From<StoreError>>(
        &self,
        id: &ProgramId,
        build: impl FnOnce(&DeployContext) -> Result<SignedManifest, E>,
    ) -> Result<(ProgramRecord, bool), E> {
        let tx = self.begin_write()?;
        let existing = tx
            .open_table(PROGRAMS)
            .map_err(StoreError::from)?
            .get(id.as_bytes())
            .map_err(StoreError::from)?
            .map(|v| decode::<ProgramRecord>("programs", v.value()))
            .transpose()?;
        if let Some(record) = existing {
            return Ok((record, false));
        }
        let mut signed = None;
        dag::append_with(&tx, self.author(), |context| {
            let manifest = build(context)?;
            signed = Some(manifest.clone());
            Ok::<_, E>(onvm_rpc_api::dag::DagPayload::ProgramDeployed {
                manifest: Box::new(manifest),
            })
        })?;
        let manifest = signed.ok_or_else(|| StoreError::ReplicaRejected("no manifest".into()))?;
        let record = ProgramRecord {
            state_root: manifest.manifest.initial_state_root,
            manifest,
            height: 0,
            keys: 0,
            last_timestamp_ms: 0,
        };
        tx.open_table(PROGRAMS)
            .map_err(StoreError::from)?
            .insert(id.as_bytes(), encode(&record).as_slice())
            .map_err(StoreError::from)?;
        self.commit_dag(tx)?;
        Ok((record, true))
    }

    pub fn program(&self, id: &ProgramId) -> Result<Option<ProgramRecord>, StoreError> {
        let tx = self.begin_read()?;
        let programs = tx.open_table(PROGRAMS)?;
        programs
            .get(id.as_bytes())?
            .map(|v| decode("programs", v.value()))
            .transpose()
    }

    pub fn programs_after(
        &self,
        after: Option<&ProgramId>,
        limit: usize,
    ) -> Result<Vec<ProgramRecord>, StoreError> {
        let tx = self.begin_read()?;
        let programs = tx.open_table(PROGRAMS)?;
        let range = match after {
            Some(a) => programs.range::<&[u8; 32]>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            ))?,
            None => programs.range::<&[u8; 32]>(..)?,
        };
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (_, v) = entry?;
            out.push(decode("programs", v.value())?);
        }
        Ok(out)
    }

    /// A snapshot of `program`'s committed state and its record at the same instant.
    pub fn snapshot(
        &self,
        program: &ProgramId,
    ) -> Result<(ProgramRecord, StateSnapshot), StoreError> {
        let tx = self.begin_read()?;
        let record = require_program(&tx.open_table(PROGRAMS)?, program)?;
        let table = tx.open_table(STATE)?;
        Ok((
            record,
            StateSnapshot {
                program: *program,
                table,
            },
        ))
    }

    /// `program`'s committee with its keys decoded and proof-of-possession-checked (cached).
    pub fn verified_committee(
        &self,
        manifest: &onvm_rpc_api::program::ProgramManifest,
    ) -> Result<Arc<onvm_rpc_api::committee::VerifiedCommittee>, StoreError> {
        let mut cache = self.committees.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(&manifest.program_id) {
            return Ok(c.clone());
        }
        let verified = onvm_rpc_api::committee::VerifiedCommittee::new(manifest.committee())
            .map_err(|e| StoreError::ReplicaRejected(format!("committee: {e}")))?;
        let verified = Arc::new(verified);
        cache.insert(manifest.program_id, verified.clone());
        Ok(verified)
    }

    /// The state root `writes` would lead to from `program`'s current state (nothing is
    /// written): what a sequencer proposes and a member checks before the call commits.
    pub fn preview_root(&self, program: &ProgramId, writes: &Writes) -> Result<Hash32, StoreError> {
        let tx = self.begin_write()?;
        let root = {
            let mut record = require_program(&tx.open_table(PROGRAMS)?, program)?;
            apply_writes(&tx, program, &mut record, writes)?
        };
        tx.abort()?;
        Ok(root)
    }

    /// Commits one call atomically: applies `writes` to the program's state and tree, then
    /// stores the receipt `sign` builds from the new root. `height` must still be current.
    pub fn commit_call(
        &self,
        program: &ProgramId,
        call: CallEffects<'_>,
        sign: impl FnOnce(Hash32) -> SignedReceipt,
    ) -> Result<SignedReceipt, StoreError> {
        self.commit_call_with_job(program, call, sign, None)
            .map(|(r, _)| r)
    }

    /// Like [`Store::commit_call`], and in the same transaction applies `job`'s update to its
    /// job record, so a job's state writes and its completion are one atomic step.
    pub fn commit_call_with_job(
        &self,
        program: &ProgramId,
        call: CallEffects<'_>,
        sign: impl FnOnce(Hash32) -> SignedReceipt,
        job: Option<JobCommit>,
    ) -> Result<(SignedReceipt, Option<onvm_rpc_api::jobs::JobEvent>), StoreError> {
        let CallEffects {
            height,
            timestamp_ms,
            writes,
            encoded_writes,
            input,
            output,
            call_id,
        } = call;
        let tx = self.begin_write()?;
        let receipt = {
            let mut programs = tx.open_table(PROGRAMS)?;
            let mut record = require_program(&programs, program)?;
            if record.height != height {
                return Err(StoreError::HeightRace {
                    program: *program,
                    expected: height,
                    found: record.height,
                });
            }
            let root = apply_writes(&tx, program, &mut record, writes)?;
            let receipt = sign(root);
            record.height += 1;
            record.last_timestamp_ms = record.last_timestamp_ms.max(timestamp_ms);
            programs.insert(program.as_bytes(), encode(&record).as_slice())?;
            if tx
                .open_table(CALL_IDS)?
                .get(&call_id_key(program, &call_id))?
                .is_some()
            {
                return Err(StoreError::CallCommitted {
                    program: *program,
                    call_id,
                });
            }
            if receipt.receipt.call_id != call_id {
                return Err(StoreError::ReplicaRejected(
                    "the receipt names another call id".into(),
                ));
            }
            record_call(&tx, &receipt_key(program, height), &receipt, input, output)?;
            dag::append(
                &tx,
                self.author(),
                onvm_rpc_api::dag::DagPayload::ExecutionCommitted {
                    receipt: Box::new(receipt.clone()),
                    writes: DataRef::of(encoded_writes),
                    input: DataRef::of(input),
                    output: DataRef::of(output),
                },
            )?;
            let event = match job {
                Some(job) => Some(jobs::apply_commit(&tx, self.author(), job, &receipt)?),
                None => None,
            };
            (receipt, event)
        };
        self.commit_dag(tx)?;
        Ok(receipt)
    }

    /// The call committed under `call_id` for `program`, if any, with its output.
    pub fn committed_call(
        &self,
        program: &ProgramId,
        call_id: &Hash32,
    ) -> Result<Option<CommittedCall>, StoreError> {
        let tx = self.begin_read()?;
        let Some(height) = tx
            .open_table(CALL_IDS)?
            .get(&call_id_key(program, call_id))?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        let key = receipt_key(program, height);
        let receipt = tx
            .open_table(RECEIPTS)?
            .get(&key)?
            .map(|v| decode::<SignedReceipt>("receipts", v.value()))
            .transpose()?
            .ok_or_else(|| StoreError::ReplicaRejected(format!("call {call_id}: no receipt")))?;
        let output = tx
            .open_table(CALL_OUTPUTS)?
            .get(&key)?
            .map(|v| v.value().to_vec())
            .unwrap_or_default();
        Ok(Some(CommittedCall { receipt, output }))
    }

    /// The input of the call a receipt commits (kept by the executor and every replica).
    pub fn call_input(&self, id: &ReceiptId) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.begin_read()?;
        let Some(key) = receipt_location(&tx, id)? else {
            return Ok(None);
        };
        Ok(tx
            .open_table(CALL_INPUTS)?
            .get(&key)?
            .map(|v| v.value().to_vec()))
    }

    pub fn receipt(&self, id: &ReceiptId) -> Result<Option<SignedReceipt>, StoreError> {
        let tx = self.begin_read()?;
        let Some(key) = receipt_location(&tx, id)? else {
            return Ok(None);
        };
        tx.open_table(RECEIPTS)?
            .get(&key)?
            .map(|v| decode("receipts", v.value()))
            .transpose()
    }

    /// Receipts of `program` with height below `before` (default: all), newest first.
    pub fn receipts(
        &self,
        program: &ProgramId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<SignedReceipt>, StoreError> {
        let tx = self.begin_read()?;
        let receipts = tx.open_table(RECEIPTS)?;
        let lo = receipt_key(program, 0);
        let hi = match before {
            Some(h) => receipt_key(program, h),
            None => {
                let mut k = receipt_key(program, u64::MAX);
                k[39] = 0xff;
                k
            }
        };
        let range = if before.is_some() {
            receipts.range::<&[u8; 40]>(&lo..&hi)?
        } else {
            receipts.range::<&[u8; 40]>(&lo..=&hi)?
        };
        let mut out = Vec::new();
        for entry in range.rev().take(limit) {
            let (_, v) = entry?;
            out.push(decode("receipts", v.value())?);
        }
        Ok(out)
    }

    /// The value of `key`, the current root, and a proof tying them together.
    pub fn state_proof(
        &self,
        program: &ProgramId,
        key: &[u8],
    ) -> Result<(Hash32, Option<Vec<u8>>, SmtProof), StoreError> {
        let tx = self.begin_read()?;
        let record = require_program(&tx.open_table(PROGRAMS)?, program)?;
        let value = tx
            .open_table(STATE)?
            .get(state_key(program, key).as_slice())?
            .map(|v| v.value().to_vec());
        let nodes = ReadNodes(tx.open_table(SMT_NODES)?);
        let proof = smt_state::prove(&nodes, record.state_root, &smt::key_hash(key))?;
        Ok((record.state_root, value, proof))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_persist_and_page_in_hash_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        {
            let store = Store::open(&path).unwrap();
            for i in 0..5u8 {
                let rec = BlobRecord {
                    size: u64::from(i),
                    mime: None,
                    created_at_ms: 1,
                };
                assert!(store.upsert_blob(&[i; 32], &rec, true).unwrap().1);
            }
            // Re-adding keeps the first record but fills in a missing mime type.
            let again = BlobRecord {
                size: 0,
                mime: Some("text/plain".into()),
                created_at_ms: 99,
            };
            let (kept, new) = store.upsert_blob(&[0; 32], &again, true).unwrap();
            assert!(!new);
            assert_eq!(kept.created_at_ms, 1);
            assert_eq!(kept.mime.as_deref(), Some("text/plain"));
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.blob_count().unwrap(), 5);
        let first = store.blobs_after(None, 2).unwrap();
        assert_eq!(
            first.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let next = store.blobs_after(Some(&first[1].0), 10).unwrap();
        assert_eq!(
            next.iter().map(|(k, _)| k[0]).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(store.blob(&[9; 32]).unwrap(), None);
    }

    #[test]
    fn batched_commits_keep_every_reachable_tree_node() {
        let effects = |height: u64, writes, encoded_writes| CallEffects {
            height,
            timestamp_ms: 0,
            writes,
            encoded_writes,
            input: b"",
            output: b"",
            call_id: Hash32::of(&height.to_le_bytes()),
        };
        use onvm_rpc_api::program::{ExecutionReceipt, Outcome, ProgramManifest};
        use onvm_rpc_api::{BlobId, HexBytes};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let program = ProgramId::from_bytes([1; 32]);
        let manifest = SignedManifest {
            manifest: ProgramManifest {
                version: 1,
                network_id: "t".into(),
                program_id: program,
                code: BlobId::from_bytes([0; 32]),
                code_size: 0,
                salt: String::new(),
                entrypoints: vec!["onvm_main".into()],
                blob_refs: vec![],
                abi_version: 1,
                engine: "t".into(),
                initial_state_root: Hash32::ZERO,
                deployer: Hash32::ZERO,
                deployed_at_ms: 0,
                committee: vec![],
                threshold: 1,
                deploy_nonce: 0,
                candidates: vec![],
                require_signed_calls: false,
            },
            signature: HexBytes(vec![]),
        };
        let receipt = |root: Hash32, height: u64| {
            let r = ExecutionReceipt {
                version: 1,
                network_id: "t".into(),
                program_id: program,
                code_hash: BlobId::from_bytes([0; 32]),
                engine: "t".into(),
                entrypoint: "onvm_main".into(),
                height,
                input_hash: Hash32::ZERO,
                caller: Hash32::ZERO,
                call_id: Hash32::of(&height.to_le_bytes()),
                caller_proof: None,
                timestamp_ms: 0,
                seed: Hash32::ZERO,
                state_root_in: Hash32::ZERO,
                state_root_out: root,
                write_digest: Hash32::ZERO,
                output_hash: Hash32::ZERO,
                output_len: 0,
                fuel_limit: 0,
                fuel_used: 0,
                outcome: Outcome::Ok,
                executor: Hash32::ZERO,
            };
            SignedReceipt {
                id: r.id(),
                receipt: r,
                signer_bls_key: HexBytes(vec![]),
                signature: HexBytes(vec![]),
                attestation: None,
            }
        };
        let first: Writes = (0..500u32)
            .map(|i| (i.to_be_bytes().to_vec(), Some(vec![1])))
            .collect();
        let second: Writes = (0..500u32)
            .step_by(3)
            .map(|i| {
                (
                    i.to_be_bytes().to_vec(),
                    if i % 2 == 0 { None } else { Some(vec![2]) },
                )
            })
            .collect();
        let (first_encoded, second_encoded) = (
            onvm_rpc_api::program::encode_writes(&first),
            onvm_rpc_api::program::encode_writes(&second),
        );
        {
            let store = Store::open(&path).unwrap();
            store.insert_program(&manifest).unwrap();
            store
                .commit_call(&program, effects(0, &first, &first_encoded), |r| {
                    receipt(r, 0)
                })
                .unwrap();
            store
                .commit_call(&program, effects(1, &second, &second_encoded), |r| {
                    receipt(r, 1)
                })
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        for i in 0..500u32 {
            let key = i.to_be_bytes();
            let (root, value, proof) = store.state_proof(&program, &key).unwrap();
            onvm_rpc_api::smt::verify_proof(&root, &key, value.as_deref(), &proof).unwrap();
            let expected = match second.get(key.as_slice()) {
                Some(v) => v.clone(),
                None => Some(vec![1]),
            };
            assert_eq!(value, expected, "key {i}");
        }
    }

    #[test]
    fn uploads_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("node.redb")).unwrap();
        let rec = UploadRecord {
            size: 10,
            mime: Some("a/b".into()),
            created_at_ms: 5,
        };
        store.insert_upload("upload1", &rec).unwrap();
        assert_eq!(store.upload("upload1").unwrap(), Some(rec));
        assert_eq!(store.uploads().unwrap().len(), 1);
        assert!(store.remove_upload("upload1").unwrap());
        assert!(!store.remove_upload("upload1").unwrap());
    }
}
