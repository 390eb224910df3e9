//! The node database (redb): the only module that touches redb directly. Records are postcard
//! encoded; every write is one durable transaction.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// Bumped when the layout of a table changes; a node refuses a database it does not understand.
const SCHEMA_VERSION: u32 = 1;

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
/// BLAKE3 hash -> BlobRecord.
const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs");
/// Upload id -> UploadRecord.
const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("node database: {0}")]
    Db(#[from] redb::Error),
    #[error("node database record is corrupt ({table}): {source}")]
    Decode {
        table: &'static str,
        source: postcard::Error,
    },
    #[error(
        "node database schema version {found} is not supported by this build (expects {SCHEMA_VERSION})"
    )]
    Schema { found: u32 },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
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

/// Cloneable handle to the node database. Calls block: use them from `spawn_blocking`.
#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let store = Self { db: Arc::new(db) };
        store.init_schema()?;
        Ok(store)
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
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
        }
        tx.commit()?;
        Ok(())
    }

    /// A cheap read that proves the database answers (health check).
    pub fn check(&self) -> Result<u32, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok(meta.get("schema_version")?.map(|v| v.value()).unwrap_or(0))
    }

    /// Records a blob unless already known; returns the record that is stored afterwards.
    /// A later put may fill in a mime type the first one lacked, but never changes one.
    pub fn upsert_blob(
        &self,
        hash: &[u8; 32],
        record: &BlobRecord,
    ) -> Result<(BlobRecord, bool), StoreError> {
        let tx = self.db.begin_write()?;
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
                    (record.clone(), true)
                }
            }
        };
        tx.commit()?;
        Ok(result)
    }

    pub fn blob(&self, hash: &[u8; 32]) -> Result<Option<BlobRecord>, StoreError> {
        let tx = self.db.begin_read()?;
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
        let tx = self.db.begin_read()?;
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
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(BLOBS)?.len()?)
    }

    pub fn insert_upload(&self, id: &str, record: &UploadRecord) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(UPLOADS)?
            .insert(id, encode(record).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let uploads = tx.open_table(UPLOADS)?;
        uploads
            .get(id)?
            .map(|v| decode("uploads", v.value()))
            .transpose()
    }

    /// Removes an upload; returns whether it existed.
    pub fn remove_upload(&self, id: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let existed = tx.open_table(UPLOADS)?.remove(id)?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    pub fn uploads(&self) -> Result<Vec<(String, UploadRecord)>, StoreError> {
        let tx = self.db.begin_read()?;
        let uploads = tx.open_table(UPLOADS)?;
        let mut out = Vec::new();
        for entry in uploads.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), decode("uploads", v.value())?));
        }
        Ok(out)
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
                assert!(store.upsert_blob(&[i; 32], &rec).unwrap().1);
            }
            // Re-adding keeps the first record but fills in a missing mime type.
            let again = BlobRecord {
                size: 0,
                mime: Some("text/plain".into()),
                created_at_ms: 99,
            };
            let (kept, new) = store.upsert_blob(&[0; 32], &again).unwrap();
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
