//! Committee bookkeeping: the evidence of disagreements (a proposal whose re-execution here
//! computed another receipt).

use onvm_rpc_api::ProgramId;
use redb::{TableDefinition, WriteTransaction};

use super::{Store, StoreError, decode, encode, receipt_key};

/// Program id ++ height -> postcard Evidence.
const EVIDENCE: TableDefinition<&[u8; 40], &[u8]> = TableDefinition::new("evidence");

pub(super) fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(EVIDENCE)?;
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

    /// Every disagreement this node recorded for `program`, by height.
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
        Ok(out)
    }
}
