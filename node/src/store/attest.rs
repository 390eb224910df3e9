//! Committee bookkeeping: the votes a member has cast (one receipt per program and height,
//! persisted before the signature leaves the node) and the evidence of disagreements.

use onvm_rpc_api::program::ExecutionReceipt;
use onvm_rpc_api::types::Base64Bytes;
use onvm_rpc_api::{ProgramId, ReceiptId};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError, decode, encode, receipt_key};

/// Program id ++ height -> postcard Vote: the receipt this node signed there, with its input,
/// so a member taking over can finish a call whose sequencer died mid-attestation.
const VOTES: TableDefinition<&[u8; 40], &[u8]> = TableDefinition::new("votes");
/// Program id ++ height -> postcard Evidence.
const EVIDENCE: TableDefinition<&[u8; 40], &[u8]> = TableDefinition::new("evidence");

pub(super) fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(VOTES)?;
    tx.open_table(EVIDENCE)?;
    Ok(())
}

pub use onvm_rpc_api::committee::Evidence;

/// A receipt this node signed as a committee member (or proposed as the sequencer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vote {
    pub receipt: ExecutionReceipt,
    pub input: Base64Bytes,
}

impl Store {
    /// Records this node's vote for `receipt` at its program and height, durably, unless it
    /// already voted for another receipt there (then returns that one and records nothing).
    /// Voting twice for the same receipt is allowed (a retried request).
    pub fn record_vote(
        &self,
        receipt: &ExecutionReceipt,
        input: &[u8],
    ) -> Result<Result<(), ReceiptId>, StoreError> {
        let key = receipt_key(&receipt.program_id, receipt.height);
        let id = receipt.id();
        let tx = self.begin_write()?;
        {
            let mut votes = tx.open_table(VOTES)?;
            let existing = votes
                .get(&key)?
                .map(|v| decode::<Vote>("votes", v.value()))
                .transpose()?;
            match existing {
                Some(other) if other.receipt.id() != id => {
                    drop(votes);
                    tx.abort()?;
                    return Ok(Err(other.receipt.id()));
                }
                Some(_) => {}
                None => {
                    let vote = Vote {
                        receipt: receipt.clone(),
                        input: Base64Bytes(input.to_vec()),
                    };
                    votes.insert(&key, encode(&vote).as_slice())?;
                }
            }
        }
        tx.commit()?;
        Ok(Ok(()))
    }

    /// The receipt this node signed for `program` at `height`, if any.
    pub fn vote_at(&self, program: &ProgramId, height: u64) -> Result<Option<Vote>, StoreError> {
        let tx = self.begin_read()?;
        tx.open_table(VOTES)?
            .get(&receipt_key(program, height))?
            .map(|v| decode("votes", v.value()))
            .transpose()
    }

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
