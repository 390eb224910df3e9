//! Committee bookkeeping: evidence against members, as this node saw it: disagreements (a
//! proposal whose re-execution here computed another receipt) and equivocations (a member's
//! two signed messages of one height and round).

use onvm_rpc_api::ProgramId;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError, receipt_key};

/// Evidence is stored as JSON: its enum is tagged by `kind`, which postcard cannot encode.
fn encode(evidence: &Evidence) -> Vec<u8> {
    serde_json::to_vec(evidence).unwrap_or_default()
}

fn decode(table: &str, bytes: &[u8]) -> Result<Evidence, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{table}: {e}")))
}

/// Program id ++ height -> JSON Evidence (a disagreement).
const EVIDENCE: TableDefinition<&[u8; 40], &[u8]> = TableDefinition::new("evidence");
/// Program id ++ height ++ round ++ member index ++ kind (what) -> Evidence (an
/// equivocation, JSON; the first one recorded per key is kept).
const EQUIVOCATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("equivocations");
/// Most equivocations kept per program: a lying member cannot fill the disk with them.
pub const MAX_EQUIVOCATIONS: usize = 1024;

pub(super) fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(EVIDENCE)?;
    tx.open_table(EQUIVOCATIONS)?;
    Ok(())
}

pub use onvm_rpc_api::committee::Evidence;

impl Store {
    pub fn record_evidence(
        &self,
        program: &ProgramId,
        height: u64,
        evidence: &Evidence,
    ) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        tx.open_table(EVIDENCE)?
            .insert(&receipt_key(program, height), encode(evidence).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Records an equivocation (unless one is recorded for the same member, height, round and
    /// kind, or the program already has [`MAX_EQUIVOCATIONS`]).
    pub fn record_equivocation(
        &self,
        program: &ProgramId,
        e: &onvm_rpc_api::committee::Equivocation,
    ) -> Result<(), StoreError> {
        let mut key = receipt_key(program, e.height).to_vec();
        key.extend_from_slice(&e.round.to_be_bytes());
        key.extend_from_slice(&e.member_index.to_be_bytes());
        key.extend_from_slice(e.what.as_bytes());
        let tx = self.begin_write()?;
        {
            let mut table = tx.open_table(EQUIVOCATIONS)?;
            let lo = program.as_bytes().to_vec();
            let mut hi = lo.clone();
            hi.push(0xff);
            let full =
                table.range::<&[u8]>(lo.as_slice()..hi.as_slice())?.count() >= MAX_EQUIVOCATIONS;
            if !full && table.get(key.as_slice())?.is_none() {
                let evidence = Evidence::Equivocation(e.clone());
                table.insert(key.as_slice(), encode(&evidence).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every disagreement and equivocation this node recorded for `program`, by height.
    pub fn evidence(&self, program: &ProgramId) -> Result<Vec<Evidence>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(EVIDENCE)?;
        let lo = receipt_key(program, 0);
        let hi = receipt_key(program, u64::MAX);
        let mut out = Vec::new();
        for entry in table.range::<&[u8; 40]>(&lo..=&hi)? {
            let (_, v) = entry?;
            out.push(decode("evidence", v.value())?);
        }
        let table = tx.open_table(EQUIVOCATIONS)?;
        let lo = program.as_bytes().to_vec();
        let mut hi = lo.clone();
        hi.push(0xff);
        for entry in table.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
            let (_, v) = entry?;
            out.push(decode("equivocations", v.value())?);
        }
        out.sort_by_key(Evidence::height);
        Ok(out)
    }
}
