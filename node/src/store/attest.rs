//! Committee bookkeeping: the votes a member has cast (one receipt per program and height,
//! persisted before the signature leaves the node) and the evidence of disagreements.

use onvm_rpc_api::{ProgramId, ReceiptId};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError, decode, encode, receipt_key};

/// Program id ++ height -> receipt id this node signed there.
const VOTES: TableDefinition<&[u8; 40], &[u8; 32]> = TableDefinition::new("votes");
/// Program id ++ height -> postcard Evidence.
const EVIDENCE: TableDefinition<&[u8; 40], &[u8]> = TableDefinition::new("evidence");

pub(super) fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(VOTES)?;
    tx.open_table(EVIDENCE)?;
    Ok(())
}

pub use onvm_rpc_api::committee::Evidence;

impl Store {
    /// Records this node's vote for `receipt` at its program and height, durably, unless it
    /// already voted for another receipt there (then returns that one and records nothing).
    /// Voting twice for the same receipt is allowed (a retried request).
    pub fn record_vote(
        &self,
        program: &ProgramId,
        height: u64,
        receipt: &ReceiptId,
    ) -> Result<Result<(), ReceiptId>, StoreError> {
        let key = receipt_key(program, height);
        let tx = self.db.begin_write()?;
        {
            let mut votes = tx.open_table(VOTES)?;
            let existing = votes.get(&key)?.map(|v| ReceiptId::from_bytes(*v.value()));
            match existing {
                Some(other) if other != *receipt => {
                    drop(votes);
                    tx.abort()?;
                    return Ok(Err(other));
                }
                Some(_) => {}
                None => {
                    votes.insert(&key, receipt.as_bytes())?;
                }
            }
        }
        tx.commit()?;
        Ok(Ok(()))
    }

    pub fn record_evidence(
        &self,
        program: &ProgramId,
        height: u64,
        evidence: &Evidence,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(EVIDENCE)?
            .insert(&receipt_key(program, height), encode(evidence).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Every disagreement this node recorded for `program`, by height.
    pub fn evidence(&self, program: &ProgramId) -> Result<Vec<Evidence>, StoreError> {
        let tx = self.db.begin_read()?;
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
