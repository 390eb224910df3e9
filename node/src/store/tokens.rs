//! API tokens: id -> the hash of the secret, scopes, origins and expiry. Secrets are never
//! stored, only their BLAKE3 hash, so a copied database grants nothing.

use onvm_rpc_api::Hash32;
use onvm_rpc_api::auth::Scope;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError, decode, encode};

/// Token id (16 hex) -> postcard TokenRecord.
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

pub(super) fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(TOKENS)?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub secret_hash: Hash32,
    pub scopes: Vec<Scope>,
    pub origins: Vec<String>,
    pub label: Option<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
}

impl Store {
    pub fn insert_token(&self, record: &TokenRecord) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        tx.open_table(TOKENS)?
            .insert(record.id.as_str(), encode(record).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a token; false if there was none with that id.
    pub fn remove_token(&self, id: &str) -> Result<bool, StoreError> {
        let tx = self.begin_write()?;
        let existed = tx.open_table(TOKENS)?.remove(id)?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(TOKENS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            out.push(decode::<TokenRecord>("tokens", value.value())?);
        }
        Ok(out)
    }
}
