//! Committee arithmetic for PBFT: fault bound, quorum size, leader rotation, vote tallies and
//! view-timeout backoff. Pure functions only; the state machine lives in `super::pbft`.
//!
//! A committee has `k` ranked members, indices `0..k`. Up to `f = (k-1)/3` of them may be faulty
//! (crashed or lying). Two quorums of size `q = k - f` intersect in `2q - k = k - 2f >= f + 1`
//! members, so every two quorums share at least one honest member: that is what makes a value
//! finalized by one quorum visible to any later quorum.

/// Largest number of faulty members a committee of `k` tolerates: `(k - 1) / 3`.
/// `k = 0` is meaningless and yields 0 rather than underflowing.
pub fn faults(k: usize) -> usize {
    k.saturating_sub(1) / 3
}

/// Quorum size `q = k - f`: k=1→1, 2→2, 3→3, 4→3, 7→5.
pub fn quorum(k: usize) -> usize {
    k - faults(k)
}

/// How many distinct members' vote reports a reader must collect to be sure at least one of them
/// comes from a signer of any value that `q` members signed: the non-signers are at most `k - q`,
/// so `k - q + 1` answers cannot all be non-signers. (A signer may still be lying if faulty; callers
/// that need an honest signer must add `f`.)
pub fn recovery_answers(k: usize, q: usize) -> usize {
    (k + 1).saturating_sub(q)
}

/// Leader of a view: members take turns in rank order starting from `first`, the leader of a
/// height's view 0, and each view change moves to the next rank. A height's `first` is the
/// leader that got the previous height decided (0, the program's home, for height 0): a healthy
/// leader keeps leading, and after a failover the new leader keeps the lead instead of every
/// later height waiting out a view timeout for the dead one.
pub fn leader(k: usize, first: usize, view: u64) -> usize {
    if k == 0 {
        return 0;
    }
    ((first % k) + (view % k as u64) as usize) % k
}

/// The view timeout doubles with each view (`base_ms * 2^view`) so that, after the network heals,
/// some view eventually lasts long enough for an honest leader to finish; it is capped at
/// `base_ms * 2^MAX_BACKOFF_SHIFT` (32 × base) so a member that went through many view changes
/// during a long partition does not wait for hours once the partition heals.
pub const MAX_BACKOFF_SHIFT: u64 = 5;

/// Timeout of `view`, see [`MAX_BACKOFF_SHIFT`]. Saturates instead of overflowing.
pub fn view_timeout(base_ms: u64, view: u64) -> u64 {
    base_ms.saturating_mul(1u64 << view.min(MAX_BACKOFF_SHIFT))
}

/// What happened to a vote given to [`Tally::add`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    /// First vote of this sender: counted.
    Counted,
    /// The sender already voted for this same value (network duplicate): not counted again.
    Duplicate,
    /// The sender already voted for a different value: not counted, recorded as evidence.
    Equivocation,
    /// Sender index outside the committee: ignored.
    UnknownSender,
}

/// Votes of one kind (e.g. Prepares of one height and view), one per sender.
///
/// A sender's first vote is the one that counts; a later vote for another value is kept only as
/// equivocation evidence. Counting a faulty sender for one value only is safe: quorum intersection
/// already assumes the `f` faulty members may appear in both quorums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally<T> {
    votes: Vec<Option<T>>,
    equivocators: Vec<usize>,
}

impl<T: Copy + Eq> Tally<T> {
    /// An empty tally for a committee of `k` members.
    pub fn new(k: usize) -> Self {
        Tally {
            votes: vec![None; k],
            equivocators: Vec::new(),
        }
    }

    /// Records `sender`'s vote for `value`.
    pub fn add(&mut self, sender: usize, value: T) -> VoteOutcome {
        let Some(slot) = self.votes.get_mut(sender) else {
            return VoteOutcome::UnknownSender;
        };
        match slot {
            None => {
                *slot = Some(value);
                VoteOutcome::Counted
            }
            Some(existing) if *existing == value => VoteOutcome::Duplicate,
            Some(_) => {
                if !self.equivocators.contains(&sender) {
                    self.equivocators.push(sender);
                }
                VoteOutcome::Equivocation
            }
        }
    }

    /// Number of distinct senders that voted for `value`.
    pub fn count(&self, value: &T) -> usize {
        self.votes
            .iter()
            .filter(|v| v.as_ref() == Some(value))
            .count()
    }

    /// The value that at least `threshold` distinct senders voted for, if any. With
    /// `threshold > k/2` at most one value can qualify; otherwise the lowest-ranked voter's wins.
    pub fn reached(&self, threshold: usize) -> Option<T> {
        self.votes
            .iter()
            .flatten()
            .find(|value| self.count(value) >= threshold)
            .copied()
    }

    /// Senders that voted for `value`, in rank order.
    pub fn senders(&self, value: &T) -> Vec<usize> {
        self.votes
            .iter()
            .enumerate()
            .filter(|(_, v)| v.as_ref() == Some(value))
            .map(|(i, _)| i)
            .collect()
    }

    /// What `sender` voted for first, if anything.
    pub fn vote_of(&self, sender: usize) -> Option<T> {
        self.votes.get(sender).copied().flatten()
    }

    /// True if nobody voted.
    pub fn is_empty(&self) -> bool {
        self.votes.iter().all(Option::is_none)
    }

    /// Senders caught voting for two different values.
    pub fn equivocators(&self) -> &[usize] {
        &self.equivocators
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_and_quorum_sizes() {
        let table = [
            (1, 0, 1),
            (2, 0, 2),
            (3, 0, 3),
            (4, 1, 3),
            (5, 1, 4),
            (6, 1, 5),
            (7, 2, 5),
            (10, 3, 7),
        ];
        for (k, f, q) in table {
            assert_eq!(faults(k), f, "faults({k})");
            assert_eq!(quorum(k), q, "quorum({k})");
            // Two quorums share at least f + 1 members, hence one honest member.
            assert!(2 * q - k > f, "intersection for k={k}");
        }
        assert_eq!(faults(0), 0);
    }

    #[test]
    fn the_manifests_default_threshold_is_the_quorum() {
        // Programs deployed without an explicit threshold get onvm_rpc_api's ⌊2K/3⌋+1, which
        // must be exactly the PBFT quorum K - f for every committee size.
        for k in 1..=onvm_rpc_api::committee::MAX_COMMITTEE {
            assert_eq!(
                onvm_rpc_api::committee::default_threshold(k) as usize,
                quorum(k),
                "k={k}"
            );
        }
    }

    #[test]
    fn recovery_answers_reach_a_signer() {
        assert_eq!(recovery_answers(4, 3), 2);
        assert_eq!(recovery_answers(7, 5), 3);
        assert_eq!(recovery_answers(1, 1), 1);
        for k in 1..20 {
            let q = quorum(k);
            // Non-signers are k - q; one more answer must include a signer.
            assert_eq!(recovery_answers(k, q), k - q + 1);
        }
    }

    #[test]
    fn leader_rotates_in_rank_order() {
        assert_eq!(leader(4, 0, 0), 0);
        assert_eq!(leader(4, 0, 1), 1);
        assert_eq!(leader(4, 0, 5), 1);
        assert_eq!(leader(4, 2, 0), 2);
        assert_eq!(leader(4, 2, 3), 1);
        assert_eq!(leader(1, 0, 99), 0);
        assert_eq!(leader(0, 1, 3), 0);
        assert_eq!(leader(7, 6, u64::MAX), (6 + (u64::MAX % 7) as usize) % 7);
    }

    #[test]
    fn timeout_backs_off_and_caps() {
        assert_eq!(view_timeout(100, 0), 100);
        assert_eq!(view_timeout(100, 1), 200);
        assert_eq!(view_timeout(100, 3), 800);
        assert_eq!(view_timeout(100, MAX_BACKOFF_SHIFT), 3200);
        assert_eq!(view_timeout(100, u64::MAX), 3200);
        assert_eq!(view_timeout(u64::MAX, 4), u64::MAX);
    }

    #[test]
    fn tally_counts_distinct_senders_once() {
        let mut t = Tally::new(4);
        assert!(t.is_empty());
        assert_eq!(t.add(0, 7u8), VoteOutcome::Counted);
        assert_eq!(t.add(0, 7u8), VoteOutcome::Duplicate);
        assert_eq!(t.add(1, 7u8), VoteOutcome::Counted);
        assert_eq!(t.reached(3), None);
        assert_eq!(t.add(2, 7u8), VoteOutcome::Counted);
        assert_eq!(t.reached(3), Some(7));
        assert_eq!(t.senders(&7), vec![0, 1, 2]);
        assert_eq!(t.add(9, 7u8), VoteOutcome::UnknownSender);
        assert_eq!(t.count(&7), 3);
    }

    #[test]
    fn tally_records_equivocation_without_counting_it() {
        let mut t = Tally::new(4);
        t.add(3, 1u8);
        assert_eq!(t.add(3, 2u8), VoteOutcome::Equivocation);
        assert_eq!(t.add(3, 2u8), VoteOutcome::Equivocation);
        assert_eq!(t.equivocators(), &[3]);
        assert_eq!(t.count(&2), 0);
        assert_eq!(t.vote_of(3), Some(1));
    }
}
