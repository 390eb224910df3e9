//! Durable PBFT state of the committees this node is a member of (`consensus::driver`'s
//! `Durable`): each program's finalized decisions, one row per height, and its votes at the
//! height being decided. A change is applied with `pbft::VoteRecord::apply`, the rules the
//! simulator checks, inside one write transaction, so a vote is on disk before the message
//! revealing it leaves the node.

use onvm_rpc_api::ProgramId;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError, decode, encode, receipt_key};
use crate::consensus::pbft::{Decision, Persisted, PersistedChange, VoteRecord};

/// Program id ++ height -> postcard Decision (the value and the members that committed it).
const PBFT_LOG: TableDefinition<&[u8; 40], &[u8]> = TableDefinition::new("pbft_log");
/// Program id -> postcard VoteRecord (finalized height count, votes at the next height).
const PBFT_VOTES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("pbft_votes");

pub(super) fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(PBFT_LOG)?;
    tx.open_table(PBFT_VOTES)?;
    Ok(())
}

impl Store {
    /// Durably applies one consensus change of `program`.
    pub fn persist_consensus(
        &self,
        program: &ProgramId,
        change: &PersistedChange,
    ) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            let mut votes = tx.open_table(PBFT_VOTES)?;
            let mut record: VoteRecord = votes
                .get(program.as_bytes())?
                .map(|v| decode("pbft_votes", v.value()))
                .transpose()?
                .unwrap_or_default();
            if let Some(decided) = record.apply(change) {
                tx.open_table(PBFT_LOG)?.insert(
                    &receipt_key(program, decided.height),
                    encode(&decided).as_slice(),
                )?;
            }
            votes.insert(program.as_bytes(), encode(&record).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Everything `program`'s member persisted, to restart it.
    pub fn load_consensus(&self, program: &ProgramId) -> Result<Persisted, StoreError> {
        let tx = self.begin_read()?;
        let record: VoteRecord = tx
            .open_table(PBFT_VOTES)?
            .get(program.as_bytes())?
            .map(|v| decode("pbft_votes", v.value()))
            .transpose()?
            .unwrap_or_default();
        let log_table = tx.open_table(PBFT_LOG)?;
        let mut log: Vec<Decision> = Vec::new();
        let (first, last) = (receipt_key(program, 0), receipt_key(program, u64::MAX));
        for entry in log_table.range::<&[u8; 40]>(&first..=&last)? {
            let (_, v) = entry?;
            log.push(decode("pbft_log", v.value())?);
        }
        if log.len() as u64 != record.next_height
            || log.iter().enumerate().any(|(h, d)| d.height != h as u64)
        {
            return Err(StoreError::Corrupt(format!(
                "the consensus log of {program} has {} rows for {} finalized heights",
                log.len(),
                record.next_height
            )));
        }
        Ok(Persisted {
            log,
            votes: record.votes,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::consensus::pbft::{
        Decision, Persisted, PersistedChange, PreparedCert, Proposal, SentVote,
    };
    use crate::store::Store;

    fn proposal(n: u8) -> Proposal {
        Proposal {
            call_id: [n; 32],
            digest: [n ^ 0xff; 32],
            proposer: 0,
        }
    }

    /// The store applies changes exactly as the in-memory `Persisted` the simulator checks,
    /// and gives them back after a reopen (a restart).
    #[test]
    fn votes_and_decisions_survive_a_reopen_exactly_as_applied_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let program = onvm_rpc_api::ProgramId::from_bytes([7; 32]);
        let other = onvm_rpc_api::ProgramId::from_bytes([8; 32]);
        let changes = vec![
            PersistedChange::Sent {
                height: 0,
                vote: SentVote::PrePrepare {
                    view: 0,
                    proposal: proposal(1),
                },
            },
            PersistedChange::Prepared {
                height: 0,
                cert: PreparedCert {
                    view: 0,
                    proposal: proposal(1),
                    prepares: vec![0, 1, 2],
                },
            },
            PersistedChange::Finalized(Decision {
                height: 0,
                proposal: proposal(1),
                signers: vec![0, 1, 2],
            }),
            // A change for a height that is not the next one is ignored, as in memory.
            PersistedChange::EnteredView { height: 5, view: 3 },
            PersistedChange::EnteredView { height: 1, view: 2 },
            PersistedChange::ViewActivated {
                height: 1,
                view: 2,
                proposal: Some(proposal(2)),
            },
            PersistedChange::Sent {
                height: 1,
                vote: SentVote::Prepare {
                    view: 2,
                    proposal: proposal(2),
                },
            },
        ];
        let store = Store::open(&path).unwrap();
        let mut expected = Persisted::default();
        for change in &changes {
            store.persist_consensus(&program, change).unwrap();
            expected.apply(change);
        }
        assert_eq!(store.load_consensus(&program).unwrap(), expected);
        assert_eq!(expected.log.len(), 1);
        assert_eq!(expected.votes.as_ref().unwrap().height, 1);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.load_consensus(&program).unwrap(), expected);
        // Programs do not share state.
        assert_eq!(store.load_consensus(&other).unwrap(), Persisted::default());
    }
}
