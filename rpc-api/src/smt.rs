//! The sparse Merkle tree's hashing rules and the pure proof verifier (DESIGN.md §6).
//!
//! Keys are 256-bit: `key_hash = BLAKE3(user key)`; bit `i` (from the most significant bit of
//! byte 0) picks the child at depth `i` (0 = left, 1 = right). The tree is *compact*: a subtree
//! that holds exactly one leaf is represented by that leaf, and an empty subtree by [`EMPTY`],
//! so depth grows with log(n), not 256. The shape is canonical: the same key set gives the same
//! root whatever the order of updates.

use serde::{Deserialize, Serialize};

use crate::hash32::Hash32;

/// The hash of an empty subtree (and the root of an empty state).
pub const EMPTY: Hash32 = Hash32([0; 32]);

const LEAF_TAG: &[u8] = b"onvm/smt/leaf/v1";
const NODE_TAG: &[u8] = b"onvm/smt/node/v1";

pub fn key_hash(key: &[u8]) -> Hash32 {
    Hash32::of(key)
}

pub fn value_hash(value: &[u8]) -> Hash32 {
    Hash32::of(value)
}

pub fn leaf_hash(key_hash: &Hash32, value_hash: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(LEAF_TAG).update(&key_hash.0).update(&value_hash.0);
    Hash32(*h.finalize().as_bytes())
}

pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(NODE_TAG).update(&left.0).update(&right.0);
    Hash32(*h.finalize().as_bytes())
}

/// Bit `depth` of `key` (0 = most significant bit of byte 0).
pub fn bit(key: &Hash32, depth: usize) -> bool {
    (key.0[depth / 8] >> (7 - depth % 8)) & 1 == 1
}

/// Where the path to a key ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProofTerminal {
    /// An empty subtree: the key is absent.
    Empty,
    /// A leaf: the key itself (inclusion) or another key sharing the path (absence).
    Leaf {
        key_hash: Hash32,
        value_hash: Hash32,
    },
}

/// A proof of inclusion or absence of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtProof {
    /// Sibling hashes from the root down (index = depth).
    pub siblings: Vec<Hash32>,
    pub terminal: ProofTerminal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("proof does not lead to the given root (computed {computed}, expected {expected})")]
    RootMismatch { computed: Hash32, expected: Hash32 },
    #[error("proof shows the key is present, but absence was claimed")]
    UnexpectedPresence,
    #[error("proof shows the key is absent, but a value was claimed")]
    UnexpectedAbsence,
    #[error("proof's leaf holds a different value")]
    ValueMismatch,
    #[error("proof's leaf is not on the key's path")]
    LeafOffPath,
    #[error("proof is deeper than 256 levels")]
    TooDeep,
}

/// Checks that `proof` shows `key` maps to `value` (or is absent, when `value` is `None`) in
/// the tree with root `root`.
pub fn verify_proof(
    root: &Hash32,
    key: &[u8],
    value: Option<&[u8]>,
    proof: &SmtProof,
) -> Result<(), ProofError> {
    let kh = key_hash(key);
    let depth = proof.siblings.len();
    if depth > 256 {
        return Err(ProofError::TooDeep);
    }
    let mut acc = match (&proof.terminal, value) {
        (ProofTerminal::Empty, None) => EMPTY,
        (ProofTerminal::Empty, Some(_)) => return Err(ProofError::UnexpectedAbsence),
        (
            ProofTerminal::Leaf {
                key_hash: lk,
                value_hash: lv,
            },
            claimed,
        ) => {
            if (0..depth).any(|d| bit(lk, d) != bit(&kh, d)) {
                return Err(ProofError::LeafOffPath);
            }
            match claimed {
                Some(v) if *lk == kh && value_hash(v) != *lv => {
                    return Err(ProofError::ValueMismatch);
                }
                Some(_) if *lk == kh => {}
                Some(_) => return Err(ProofError::UnexpectedAbsence),
                None if *lk == kh => return Err(ProofError::UnexpectedPresence),
                None => {}
            }
            leaf_hash(lk, lv)
        }
    };
    for d in (0..depth).rev() {
        let sibling = &proof.siblings[d];
        acc = if bit(&kh, d) {
            node_hash(sibling, &acc)
        } else {
            node_hash(&acc, sibling)
        };
    }
    if acc != *root {
        return Err(ProofError::RootMismatch {
            computed: acc,
            expected: *root,
        });
    }
    Ok(())
}
