//! Committee arithmetic: the fault bound and the quorum size. Pure functions only.
//!
//! A committee has `k` ranked members, indices `0..k`. Up to `f = (k-1)/3` of them may be faulty
//! (crashed or lying). Two quorums of size `q = k - f` intersect in `2q - k = k - 2f >= f + 1`
//! members, so every two quorums share at least one honest member: that is what makes a value
//! decided by one quorum visible to any later quorum.

/// Largest number of faulty members a committee of `k` tolerates: `(k - 1) / 3`.
/// `k = 0` is meaningless and yields 0 rather than underflowing.
pub fn faults(k: usize) -> usize {
    k.saturating_sub(1) / 3
}

/// Quorum size `q = k - f`: k=1→1, 2→2, 3→3, 4→3, 7→5.
pub fn quorum(k: usize) -> usize {
    k - faults(k)
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
        // must be exactly the BFT quorum K - f for every committee size.
        for k in 1..=onvm_rpc_api::committee::MAX_COMMITTEE {
            assert_eq!(
                onvm_rpc_api::committee::default_threshold(k) as usize,
                quorum(k),
                "k={k}"
            );
        }
    }
}
