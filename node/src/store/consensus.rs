//! Durable consensus state of the committees this node is a member of (the Tendermint
//! driver's `Durable`): per program, the write-ahead log of the height being decided and one
//! decision (value and aggregated commit certificate) per decided height.
//!
//! Every write is its own redb transaction, committed before the driver performs the next
//! action, so a vote is on disk before the message revealing it leaves the node. Storing a
//! decision truncates the log in the same transaction: the log never holds more than the
//! height in progress, whatever the program's history.

use onvm_rpc_api::ProgramId;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError, receipt_key};
use crate::consensus::tendermint::sequencer::Decided;
use crate::consensus::tendermint::{Height, WalEntry};

/// Program id ++ sequence number -> encoded `WalEntry` (of the height in progress).
const CONSENSUS_WAL: TableDefinition<&[u8; 40], &[u8]> = TableDefinition::new("consensus_wal");
/// Program id ++ height -> encoded `Decided`.
const CONSENSUS_DECISIONS: TableDefinition<&[u8; 40], &[u8]> =
    TableDefinition::new("consensus_decisions");

pub(super) fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(CONSENSUS_WAL)?;
    tx.open_table(CONSENSUS_DECISIONS)?;
    Ok(())
}

fn corrupt(table: &str, program: &ProgramId, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{table} of {program}: {e}"))
}

/// What a member restarts from.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConsensusLog {
    /// The log of the height in progress, in append order.
    pub wal: Vec<WalEntry>,
    /// The newest decision.
    pub last: Option<Decided>,
}

impl Store {
    /// Durably appends `entry` to `program`'s log.
    pub fn consensus_append(
        &self,
        program: &ProgramId,
        entry: &WalEntry,
    ) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            let mut wal = tx.open_table(CONSENSUS_WAL)?;
            let (first, last) = (receipt_key(program, 0), receipt_key(program, u64::MAX));
            let next = match wal.range::<&[u8; 40]>(&first..=&last)?.next_back() {
                Some(row) => {
                    let (key, _) = row?;
                    let mut seq = [0u8; 8];
                    seq.copy_from_slice(&key.value()[32..]);
                    u64::from_be_bytes(seq) + 1
                }
                None => 0,
            };
            wal.insert(&receipt_key(program, next), entry.encode().as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Durably stores `decided` (idempotent) and drops the log entries of heights up to it.
    pub fn consensus_decide(
        &self,
        program: &ProgramId,
        decided: &Decided,
    ) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            tx.open_table(CONSENSUS_DECISIONS)?.insert(
                &receipt_key(program, decided.height.0),
                decided.encode().as_slice(),
            )?;
            let mut wal = tx.open_table(CONSENSUS_WAL)?;
            let (first, last) = (receipt_key(program, 0), receipt_key(program, u64::MAX));
            let mut old = Vec::new();
            for row in wal.range::<&[u8; 40]>(&first..=&last)? {
                let (key, bytes) = row?;
                // An entry that no longer decodes is of no use to a restart either.
                let done =
                    WalEntry::decode(bytes.value()).map_or(true, |e| e.height <= decided.height);
                if done {
                    old.push(*key.value());
                }
            }
            for key in old {
                wal.remove(&key)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Everything `program`'s member needs to restart.
    pub fn consensus_load(&self, program: &ProgramId) -> Result<ConsensusLog, StoreError> {
        let tx = self.begin_read()?;
        let (first, last) = (receipt_key(program, 0), receipt_key(program, u64::MAX));
        let mut wal = Vec::new();
        for row in tx
            .open_table(CONSENSUS_WAL)?
            .range::<&[u8; 40]>(&first..=&last)?
        {
            let (_, bytes) = row?;
            wal.push(
                WalEntry::decode(bytes.value())
                    .map_err(|e| corrupt("consensus_wal", program, e))?,
            );
        }
        let last = match tx
            .open_table(CONSENSUS_DECISIONS)?
            .range::<&[u8; 40]>(&first..=&last)?
            .next_back()
        {
            Some(row) => {
                let (_, bytes) = row?;
                Some(
                    Decided::decode(bytes.value())
                        .map_err(|e| corrupt("consensus_decisions", program, e))?,
                )
            }
            None => None,
        };
        Ok(ConsensusLog { wal, last })
    }

    /// Stored decisions of heights `from..until`, in order (at most `limit`).
    pub fn consensus_decisions(
        &self,
        program: &ProgramId,
        from: Height,
        until: Height,
        limit: usize,
    ) -> Result<Vec<Decided>, StoreError> {
        if from >= until {
            return Ok(Vec::new());
        }
        let tx = self.begin_read()?;
        let (first, last) = (
            receipt_key(program, from.0),
            receipt_key(program, until.0 - 1),
        );
        let mut out = Vec::new();
        for row in tx
            .open_table(CONSENSUS_DECISIONS)?
            .range::<&[u8; 40]>(&first..=&last)?
            .take(limit)
        {
            let (_, bytes) = row?;
            out.push(
                Decided::decode(bytes.value())
                    .map_err(|e| corrupt("consensus_decisions", program, e))?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::tendermint::{AggregateCertificate, MemberIndex, Round, Value};
    use malachitebft_core_consensus::Input;
    use malachitebft_core_types::{Timeout, TimeoutKind};

    fn timeout(height: u64, round: u32) -> WalEntry {
        WalEntry {
            height: Height(height),
            input: Input::TimeoutElapsed(Timeout::new(Round::new(round), TimeoutKind::Propose)),
        }
    }

    fn decided(height: u64) -> Decided {
        let value = Value {
            call_id: [height as u8; 32],
            receipt_id: [0xee; 32],
            proposer: MemberIndex(1),
        };
        Decided {
            height: Height(height),
            value,
            certificate: AggregateCertificate {
                height,
                round: 0,
                value_id: value.id(),
                signers: vec![0b111],
                signature: vec![7; 48],
            },
        }
    }

    /// The log holds the height in progress only; decisions stay; both survive a reopen and
    /// programs do not share them.
    #[test]
    fn the_log_is_truncated_by_each_decision_and_everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let program = ProgramId::from_bytes([7; 32]);
        let other = ProgramId::from_bytes([8; 32]);
        let store = Store::open(&path).unwrap();
        store.consensus_append(&program, &timeout(0, 0)).unwrap();
        store.consensus_append(&program, &timeout(0, 1)).unwrap();
        store.consensus_append(&other, &timeout(3, 0)).unwrap();
        store.consensus_decide(&program, &decided(0)).unwrap();
        store.consensus_append(&program, &timeout(1, 0)).unwrap();
        store.consensus_decide(&program, &decided(0)).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let log = store.consensus_load(&program).unwrap();
        assert_eq!(log.wal, vec![timeout(1, 0)]);
        assert_eq!(log.last, Some(decided(0)));
        store.consensus_decide(&program, &decided(1)).unwrap();
        store.consensus_decide(&program, &decided(2)).unwrap();
        let log = store.consensus_load(&program).unwrap();
        assert!(log.wal.is_empty());
        assert_eq!(log.last, Some(decided(2)));
        assert_eq!(
            store
                .consensus_decisions(&program, Height(1), Height(9), 16)
                .unwrap(),
            vec![decided(1), decided(2)]
        );
        assert_eq!(
            store
                .consensus_decisions(&program, Height(0), Height(3), 1)
                .unwrap(),
            vec![decided(0)]
        );
        let theirs = store.consensus_load(&other).unwrap();
        assert_eq!((theirs.wal, theirs.last), (vec![timeout(3, 0)], None));
    }
}
