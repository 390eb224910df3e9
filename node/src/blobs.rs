//! Blobs: the iroh-blobs store (bytes, BAO outboards, tags) plus the node's catalog entry for
//! each blob (size, mime, creation time) and resumable chunked uploads. The only module that
//! imports iroh-blobs.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use iroh_blobs::api::blobs::{AddPathOptions, ImportMode};
use iroh_blobs::store::fs::FsStore;
use iroh_blobs::{BlobFormat, Hash, HashAndFormat};
use onvm_rpc_api::types::{BlobChunk, BlobPage, BlobStat, UploadStatus};
use onvm_rpc_api::{BlobId, UploadId};

use crate::config::BlobsConfig;
use crate::metrics::{self, Counters};
use crate::store::{BlobRecord, Store, StoreError, UploadRecord};
use crate::util::now_ms;

/// Largest page `blob_list` returns.
pub const MAX_LIST_LIMIT: u32 = 1000;
const DEFAULT_LIST_LIMIT: u32 = 100;
/// Mime types are short labels, not payloads.
const MAX_MIME_LEN: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(BlobId),
    #[error("upload {0} not found (finished, aborted or expired)")]
    UploadNotFound(UploadId),
    #[error("blob of {size} bytes exceeds the limit of {max} bytes (blobs.max_blob_bytes)")]
    TooLarge { size: u64, max: u64 },
    #[error(
        "{size} bytes is too large to send inline (limit {max}, blobs.max_inline_bytes); use blob_upload_begin/append/finish"
    )]
    InlineTooLarge { size: u64, max: u64 },
    #[error("chunk of {len} bytes exceeds the limit of {max} bytes (blobs.max_chunk_bytes)")]
    ChunkTooLarge { len: u64, max: u64 },
    #[error(
        "range of {len} bytes exceeds the limit of {max} bytes per blob_get (blobs.max_inline_bytes); pass offset and length to read it in parts (blob size {size})"
    )]
    RangeTooLarge { len: u64, max: u64, size: u64 },
    #[error("offset {offset} is past the end of the blob ({size} bytes)")]
    OffsetOutOfRange { offset: u64, size: u64 },
    #[error(
        "append at offset {got}, but the upload has received {expected} bytes: resume at {expected}"
    )]
    OffsetMismatch { expected: u64, got: u64 },
    #[error("chunk would take the upload to {would_be} bytes, past its declared size of {size}")]
    PastDeclaredSize { would_be: u64, size: u64 },
    #[error("upload is incomplete: {received} of {size} bytes received")]
    Incomplete { received: u64, size: u64 },
    #[error("uploaded content hashes to {actual}, not the expected {expected}")]
    HashMismatch { expected: BlobId, actual: BlobId },
    #[error(
        "too many open uploads ({max}, blobs.max_open_uploads); finish or abort some, or retry later"
    )]
    TooManyUploads { max: u32 },
    #[error(
        "this client already has {max} open uploads (blobs.max_open_uploads_per_client); finish or abort some first"
    )]
    TooManyClientUploads { max: u32 },
    #[error(
        "not enough free disk space for {needed} more bytes: {free} bytes free, of which blobs.min_free_disk_bytes = {reserve} stay free and {pending} are promised to open uploads"
    )]
    DiskSpace {
        needed: u64,
        free: u64,
        reserve: u64,
        pending: u64,
    },
    #[error("mime type longer than {MAX_MIME_LEN} bytes")]
    MimeTooLong,
    #[error("invalid cursor `{0}`: pass the next_cursor of the previous page")]
    BadCursor(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("blob store: {0}")]
    Backend(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl BlobError {
    /// Whether the blob store failed for lack of disk space. iroh-blobs reports its errors as
    /// text, so for those the OS error number in the text is what tells.
    pub fn is_disk_full(&self) -> bool {
        match self {
            BlobError::Io { source, .. } => crate::store::is_disk_full(source),
            BlobError::Backend(text) => {
                text.contains("os error 28") || text.contains("No space left on device")
            }
            BlobError::Store(StoreError::DiskFull(_)) => true,
            _ => false,
        }
    }
}

/// Below this much free disk space a node reports not ready whatever `blobs.min_free_disk_bytes`
/// says: a database commit needs room to grow, and with less than this the next one may not
/// find it.
pub const MIN_FREE_FOR_READY: u64 = 1 << 20;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BlobError {
    let context = context.into();
    move |source| BlobError::Io { context, source }
}

fn backend(context: &str) -> impl FnOnce(String) -> BlobError + '_ {
    move |e| BlobError::Backend(format!("{context}: {e}"))
}

/// Runs blocking redb / file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Backend(format!("blocking task failed: {e}")))?
}

fn blob_tag(hash: &Hash) -> String {
    format!("onvm/blob/{hash}")
}

fn check_mime(mime: &Option<String>) -> Result<(), BlobError> {
    match mime {
        Some(m) if m.len() > MAX_MIME_LEN => Err(BlobError::MimeTooLong),
        _ => Ok(()),
    }
}

/// Cloneable handle to the blob service.
#[derive(Clone)]
pub struct Blobs {
    fs: FsStore,
    db: Store,
    limits: BlobsConfig,
    uploads_dir: PathBuf,
    upload_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Upload id -> the client that began it (in memory: after a restart, open uploads count
    /// only against `blobs.max_open_uploads`).
    upload_owners: Arc<Mutex<HashMap<String, String>>>,
    counters: Arc<Counters>,
}

impl Blobs {
    /// Opens the iroh-blobs store under `blobs_dir` and the upload area under `uploads_dir`.
    pub async fn open(
        blobs_dir: &Path,
        uploads_dir: &Path,
        db: Store,
        limits: BlobsConfig,
        counters: Arc<Counters>,
    ) -> Result<Self, BlobError> {
        std::fs::create_dir_all(uploads_dir)
            .map_err(io_err(format!("creating {}", uploads_dir.display())))?;
        let fs = FsStore::load(blobs_dir)
            .await
            .map_err(|e| BlobError::Backend(format!("opening {}: {e}", blobs_dir.display())))?;
        let blobs = Self {
            fs,
            db,
            limits,
            uploads_dir: uploads_dir.to_path_buf(),
            upload_locks: Arc::default(),
            upload_owners: Arc::default(),
            counters,
        };
        blobs.reap_uploads().await?;
        Ok(blobs)
    }

    /// The iroh-blobs store, for the network protocol handler.
    pub fn store(&self) -> &iroh_blobs::api::Store {
        &self.fs
    }

    /// Stops the store's actor and flushes its database. Call before reopening the directory.
    pub async fn shutdown(&self) -> Result<(), BlobError> {
        self.fs
            .shutdown()
            .await
            .map_err(|e| BlobError::Backend(format!("shutting down the blob store: {e}")))
    }

    /// iroh-blobs batches its metadata commits; a blob is acknowledged only after they are on
    /// disk, so a kill -9 right after an acknowledgement cannot lose it (found by tests/crash.rs).
    async fn sync(&self) -> Result<(), BlobError> {
        self.fs
            .sync_db()
            .await
            .map_err(|e| BlobError::Backend(format!("syncing the blob store: {e}")))
    }

    /// Health: the store actor answers.
    pub async fn check(&self) -> Result<(), BlobError> {
        self.fs
            .status(Hash::EMPTY)
            .await
            .map(|_| ())
            .map_err(|e| BlobError::Backend(e.to_string()))
    }

    /// Stores `data` (small blobs, sent inline). Same bytes, same id; idempotent.
    pub async fn put(&self, data: Vec<u8>, mime: Option<String>) -> Result<BlobStat, BlobError> {
        let size = data.len() as u64;
        if size > self.limits.max_inline_bytes {
            return Err(BlobError::InlineTooLarge {
                size,
                max: self.limits.max_inline_bytes,
            });
        }
        self.check_free_space(size, 0)?;
        self.add(data, mime).await
    }

    /// Stores bytes the node already holds in memory (e.g. deployed wasm), up to the blob cap,
    /// and announces the blob in the DAG.
    pub async fn add(&self, data: Vec<u8>, mime: Option<String>) -> Result<BlobStat, BlobError> {
        self.add_with(data, mime, true).await
    }

    /// Like `add`, without a DAG announcement: for blobs another DAG node already names (the
    /// writes of a large call).
    pub async fn add_unannounced(&self, data: Vec<u8>) -> Result<BlobStat, BlobError> {
        self.add_with(data, None, false).await
    }

    async fn add_with(
        &self,
        data: Vec<u8>,
        mime: Option<String>,
        publish: bool,
    ) -> Result<BlobStat, BlobError> {
        check_mime(&mime)?;
        let size = data.len() as u64;
        self.check_size(size)?;
        let expected = Hash::new(&data);
        let hf = self
            .fs
            .add_bytes(data)
            .with_named_tag(blob_tag(&expected))
            .await
            .map_err(|e| BlobError::Backend(format!("adding blob: {e}")))?;
        self.sync().await?;
        self.record(hf.hash, size, mime, publish).await
    }

    fn check_size(&self, size: u64) -> Result<(), BlobError> {
        if size > self.limits.max_blob_bytes {
            return Err(BlobError::TooLarge {
                size,
                max: self.limits.max_blob_bytes,
            });
        }
        Ok(())
    }

    async fn record(
        &self,
        hash: Hash,
        size: u64,
        mime: Option<String>,
        publish: bool,
    ) -> Result<BlobStat, BlobError> {
        let db = self.db.clone();
        let key = *hash.as_bytes();
        let record = BlobRecord {
            size,
            mime,
            created_at_ms: now_ms(),
        };
        let (stored, new) = blocking(move || Ok(db.upsert_blob(&key, &record, publish)?)).await?;
        if new {
            metrics::add(&self.counters.blobs_added, 1);
            metrics::add(&self.counters.blob_bytes_added, size);
        }
        Ok(stat(BlobId::from_bytes(key), stored))
    }

    pub async fn stat(&self, id: BlobId) -> Result<BlobStat, BlobError> {
        let db = self.db.clone();
        let key = *id.as_bytes();
        let record = blocking(move || Ok(db.blob(&key)?)).await?;
        record.map(|r| stat(id, r)).ok_or(BlobError::NotFound(id))
    }

    /// Reads `length` bytes (default: to the end) from `offset`, at most `max_inline_bytes`.
    pub async fn get(
        &self,
        id: BlobId,
        offset: Option<u64>,
        length: Option<u64>,
    ) -> Result<BlobChunk, BlobError> {
        let info = self.stat(id).await?;
        let offset = offset.unwrap_or(0);
        if offset > info.size {
            return Err(BlobError::OffsetOutOfRange {
                offset,
                size: info.size,
            });
        }
        let available = info.size - offset;
        let len = match length {
            Some(l) => l.min(available),
            None => available,
        };
        if len > self.limits.max_inline_bytes {
            return Err(BlobError::RangeTooLarge {
                len,
                max: self.limits.max_inline_bytes,
                size: info.size,
            });
        }
        let data = if len == 0 {
            Vec::new()
        } else {
            self.fs
                .export_ranges(Hash::from_bytes(*id.as_bytes()), offset..offset + len)
                .concatenate()
                .await
                .map_err(|e| BlobError::Backend(format!("reading {id}: {e}")))?
        };
        metrics::add(&self.counters.blob_reads, 1);
        metrics::add(&self.counters.blob_bytes_read, data.len() as u64);
        Ok(BlobChunk {
            id,
            offset,
            eof: offset + len == info.size,
            total_size: info.size,
            data_base64: data.into(),
            mime: info.mime,
        })
    }

    pub async fn list(
        &self,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> Result<BlobPage, BlobError> {
        let after = match cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(
                *c.parse::<BlobId>()
                    .map_err(|_| BlobError::BadCursor(c.to_string()))?
                    .as_bytes(),
            ),
        };
        let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT).clamp(1, MAX_LIST_LIMIT) as usize;
        let db = self.db.clone();
        // One extra row tells whether another page follows.
        let mut rows = blocking(move || Ok(db.blobs_after(after.as_ref(), limit + 1)?)).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|(k, _)| BlobId::from_bytes(*k).to_string())
        } else {
            None
        };
        Ok(BlobPage {
            items: rows
                .into_iter()
                .map(|(k, r)| stat(BlobId::from_bytes(k), r))
                .collect(),
            next_cursor,
        })
    }

    /// The whole blob in memory; callers bound the size first (via `stat`).
    pub async fn read_all(&self, id: BlobId) -> Result<Vec<u8>, BlobError> {
        let info = self.stat(id).await?;
        if info.size == 0 {
            return Ok(Vec::new());
        }
        self.fs
            .export_ranges(Hash::from_bytes(*id.as_bytes()), 0..info.size)
            .concatenate()
            .await
            .map_err(|e| BlobError::Backend(format!("reading {id}: {e}")))
    }

    /// Fetches a blob from a peer over iroh-blobs (BAO-verified while streaming). The size is
    /// verified against the hash before any data is downloaded and checked against the cap.
    pub async fn fetch(
        &self,
        conn: iroh::endpoint::Connection,
        id: BlobId,
        mime: Option<String>,
    ) -> Result<BlobStat, BlobError> {
        check_mime(&mime)?;
        let hash = Hash::from_bytes(*id.as_bytes());
        let (size, _) = iroh_blobs::get::request::get_verified_size(&conn, &hash)
            .await
            .map_err(|e| BlobError::Backend(format!("asking a peer for the size of {id}: {e}")))?;
        self.check_size(size)?;
        self.fs
            .remote()
            .fetch(conn, hash)
            .await
            .map_err(|e| BlobError::Backend(format!("fetching {id} from a peer: {e}")))?;
        self.fs
            .tags()
            .set(blob_tag(&hash), HashAndFormat::raw(hash))
            .await
            .map_err(|e| backend("tagging blob")(e.to_string()))?;
        self.sync().await?;
        metrics::add(&self.counters.blobs_fetched, 1);
        self.record(hash, size, mime, false).await
    }

    pub async fn blob_count(&self) -> Result<u64, BlobError> {
        let db = self.db.clone();
        blocking(move || Ok(db.blob_count()?)).await
    }

    // ---- chunked uploads ----

    fn part_path(&self, id: &UploadId) -> PathBuf {
        // UploadId is validated as `upload` + hex, so it is a safe file name.
        self.uploads_dir.join(format!("{id}.part"))
    }

    fn lock_for(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.upload_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    fn forget_lock(&self, id: &UploadId) {
        let mut locks = self.upload_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.remove(id.as_str());
    }

    pub async fn upload_begin(
        &self,
        size: u64,
        mime: Option<String>,
        owner: Option<String>,
    ) -> Result<UploadStatus, BlobError> {
        check_mime(&mime)?;
        self.check_size(size)?;
        let db = self.db.clone();
        let dir = self.uploads_dir.clone();
        // Open sessions and the bytes they may still write.
        let (open, pending) = blocking(move || {
            let sessions = db.uploads()?;
            let pending: u64 = sessions
                .iter()
                .map(|(key, record)| {
                    let have = std::fs::metadata(dir.join(format!("{key}.part")))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    record.size.saturating_sub(have)
                })
                .sum();
            let open: std::collections::HashSet<String> =
                sessions.into_iter().map(|(k, _)| k).collect();
            Ok((open, pending))
        })
        .await?;
        if open.len() >= self.limits.max_open_uploads as usize {
            return Err(BlobError::TooManyUploads {
                max: self.limits.max_open_uploads,
            });
        }
        if let Some(owner) = &owner {
            let mut owners = self.upload_owners.lock().unwrap_or_else(|p| p.into_inner());
            owners.retain(|id, _| open.contains(id));
            let held = owners.values().filter(|o| *o == owner).count();
            if held >= self.limits.max_open_uploads_per_client as usize {
                return Err(BlobError::TooManyClientUploads {
                    max: self.limits.max_open_uploads_per_client,
                });
            }
        }
        self.check_free_space(size, pending)?;
        let id = UploadId::from_random(rand::random());
        let path = self.part_path(&id);
        let record = UploadRecord {
            size,
            mime,
            created_at_ms: now_ms(),
        };
        let db = self.db.clone();
        let key = id.to_string();
        let rec = record.clone();
        blocking(move || {
            std::fs::File::create(&path).map_err(io_err(format!("creating {}", path.display())))?;
            db.insert_upload(&key, &rec)?;
            Ok(())
        })
        .await?;
        if let Some(owner) = owner {
            self.upload_owners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_string(), owner);
        }
        metrics::add(&self.counters.uploads_started, 1);
        Ok(self.status_of(&id, &record, 0))
    }

    /// Free bytes on the data dir's disk and the floor below which the node is not ready
    /// (`blobs.min_free_disk_bytes`, at least `MIN_FREE_FOR_READY`); None if it cannot be told.
    pub fn disk_headroom(&self) -> Option<(u64, u64)> {
        let free = crate::util::free_disk_bytes(&self.uploads_dir)?;
        Some((
            free,
            self.limits.min_free_disk_bytes.max(MIN_FREE_FOR_READY),
        ))
    }

    /// Refuses to promise `needed` more bytes unless the disk keeps `blobs.min_free_disk_bytes`
    /// free after every open upload (`pending` bytes still to come) has finished.
    fn check_free_space(&self, needed: u64, pending: u64) -> Result<(), BlobError> {
        let Some(free) = crate::util::free_disk_bytes(&self.uploads_dir) else {
            return Ok(());
        };
        let reserve = self.limits.min_free_disk_bytes;
        if free < needed.saturating_add(pending).saturating_add(reserve) {
            return Err(BlobError::DiskSpace {
                needed,
                free,
                reserve,
                pending,
            });
        }
        Ok(())
    }

    fn status_of(&self, id: &UploadId, record: &UploadRecord, received: u64) -> UploadStatus {
        UploadStatus {
            upload_id: id.clone(),
            size: record.size,
            received,
            mime: record.mime.clone(),
            max_chunk_bytes: self.limits.max_chunk_bytes,
            expires_at_ms: now_ms() + self.limits.upload_ttl_secs * 1000,
        }
    }

    async fn open_upload(&self, id: &UploadId) -> Result<(UploadRecord, u64), BlobError> {
        let db = self.db.clone();
        let key = id.to_string();
        let path = self.part_path(id);
        let found = blocking(move || {
            let Some(record) = db.upload(&key)? else {
                return Ok(None);
            };
            match std::fs::metadata(&path) {
                Ok(m) => Ok(Some((record, m.len()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
            }
        })
        .await?;
        found.ok_or_else(|| BlobError::UploadNotFound(id.clone()))
    }

    pub async fn upload_status(&self, id: UploadId) -> Result<UploadStatus, BlobError> {
        let (record, received) = self.open_upload(&id).await?;
        Ok(self.status_of(&id, &record, received))
    }

    /// Appends `data` at `offset`. `offset` must be the received count; re-sending exactly the
    /// last chunk (a client that lost our reply) is recognised and accepted without writing.
    pub async fn upload_append(
        &self,
        id: UploadId,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<UploadStatus, BlobError> {
        let len = data.len() as u64;
        if len > self.limits.max_chunk_bytes {
            return Err(BlobError::ChunkTooLarge {
                len,
                max: self.limits.max_chunk_bytes,
            });
        }
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let (record, received) = self.open_upload(&id).await?;
        let path = self.part_path(&id);
        if offset == received {
            let would_be = received + len;
            if would_be > record.size {
                return Err(BlobError::PastDeclaredSize {
                    would_be,
                    size: record.size,
                });
            }
            blocking(move || {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_err(format!("opening {}", path.display())))?;
                f.write_all(&data)
                    .map_err(io_err(format!("writing {}", path.display())))?;
                Ok(())
            })
            .await?;
            return Ok(self.status_of(&id, &record, would_be));
        }
        if len > 0 && offset < received && offset + len == received {
            let same = blocking(move || {
                let mut f = std::fs::File::open(&path)
                    .map_err(io_err(format!("opening {}", path.display())))?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(io_err("seeking upload"))?;
                let mut existing = vec![0u8; data.len()];
                f.read_exact(&mut existing)
                    .map_err(io_err("reading upload"))?;
                Ok(existing == data)
            })
            .await?;
            if same {
                return Ok(self.status_of(&id, &record, received));
            }
        }
        Err(BlobError::OffsetMismatch {
            expected: received,
            got: offset,
        })
    }

    /// Imports a complete upload into the blob store and drops the session.
    pub async fn upload_finish(
        &self,
        id: UploadId,
        expected: Option<BlobId>,
    ) -> Result<BlobStat, BlobError> {
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let (record, received) = self.open_upload(&id).await?;
        if received != record.size {
            return Err(BlobError::Incomplete {
                received,
                size: record.size,
            });
        }
        let path = self.part_path(&id);
        // A temp tag protects the content until the named tag is set, and lets a mismatching
        // upload be dropped without ever becoming a named blob.
        let temp = self
            .fs
            .add_path_with_opts(AddPathOptions {
                path: path.clone(),
                format: BlobFormat::Raw,
                mode: ImportMode::Copy,
            })
            .temp_tag()
            .await
            .map_err(|e| BlobError::Backend(format!("importing upload {id}: {e}")))?;
        let hash = temp.hash();
        let actual = BlobId::from_bytes(*hash.as_bytes());
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(BlobError::HashMismatch { expected, actual });
        }
        self.fs
            .tags()
            .set(blob_tag(&hash), HashAndFormat::raw(hash))
            .await
            .map_err(|e| backend("tagging blob")(e.to_string()))?;
        drop(temp);
        self.sync().await?;
        let stat = self
            .record(hash, record.size, record.mime.clone(), true)
            .await?;
        self.remove_upload(&id).await?;
        metrics::add(&self.counters.uploads_finished, 1);
        Ok(stat)
    }

    /// Drops an upload and its partial data; returns whether it existed.
    pub async fn upload_abort(&self, id: UploadId) -> Result<bool, BlobError> {
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let existed = self.remove_upload(&id).await?;
        if existed {
            metrics::add(&self.counters.uploads_aborted, 1);
        }
        Ok(existed)
    }

    async fn remove_upload(&self, id: &UploadId) -> Result<bool, BlobError> {
        let db = self.db.clone();
        let key = id.to_string();
        let path = self.part_path(id);
        let existed = blocking(move || {
            let existed = db.remove_upload(&key)?;
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("removing {}", path.display()))(e)),
            }
            Ok(existed)
        })
        .await?;
        self.forget_lock(id);
        Ok(existed)
    }

    /// Drops expired uploads, sessions whose data file vanished, and data files with no session
    /// (left by a crash between creating the file and committing the session).
    pub async fn reap_uploads(&self) -> Result<usize, BlobError> {
        let db = self.db.clone();
        let dir = self.uploads_dir.clone();
        let ttl = Duration::from_secs(self.limits.upload_ttl_secs);
        let reaped = blocking(move || {
            let mut reaped = 0;
            let sessions = db.uploads()?;
            let known: std::collections::HashSet<String> =
                sessions.iter().map(|(k, _)| format!("{k}.part")).collect();
            for (key, _) in &sessions {
                let path = dir.join(format!("{key}.part"));
                let expired = match std::fs::metadata(&path).and_then(|m| m.modified()) {
                    Ok(modified) => SystemTime::now()
                        .duration_since(modified)
                        .map(|age| age > ttl)
                        .unwrap_or(false),
                    Err(_) => true,
                };
                if expired {
                    db.remove_upload(key)?;
                    let _ = std::fs::remove_file(&path);
                    reaped += 1;
                }
            }
            let entries =
                std::fs::read_dir(&dir).map_err(io_err(format!("listing {}", dir.display())))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.ends_with(".part") && !known.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            Ok(reaped)
        })
        .await?;
        metrics::add(&self.counters.uploads_expired, reaped as u64);
        Ok(reaped)
    }

    pub async fn open_upload_count(&self) -> Result<u64, BlobError> {
        let db = self.db.clone();
        blocking(move || Ok(db.uploads()?.len() as u64)).await
    }
}

fn stat(id: BlobId, r: BlobRecord) -> BlobStat {
    BlobStat {
        id,
        size: r.size,
        mime: r.mime,
        created_at_ms: r.created_at_ms,
    }
}
