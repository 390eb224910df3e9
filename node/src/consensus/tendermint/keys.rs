//! The node's side of [`Verifier`] and [`Signing`]: a committee's BLS keys (min_sig, the
//! proof-of-possession ciphersuite `identity::BLS_SIG_DST`) and this member's own key. Every
//! key's proof of possession is checked once, when the committee is built, which is what makes
//! the fast aggregate verify of certificates sound (no rogue-key aggregation).

use std::sync::Arc;

use onvm_rpc_api::committee::Member;

use super::context::MemberIndex;
use super::sign::{Signing, Verifier};
use crate::identity::{self, BLS_SIG_DST, Identity};

/// The public keys of a committee, in member order.
#[derive(Clone, Debug)]
pub struct CommitteeKeys {
    keys: Arc<Vec<Vec<u8>>>,
}

impl CommitteeKeys {
    /// Checks every member's key and proof of possession; names the first bad one.
    pub fn new(members: &[Member]) -> Result<Self, String> {
        let mut keys = Vec::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            if !identity::verify_proof_of_possession(&m.bls_public_key.0, &m.proof_of_possession.0)
            {
                return Err(format!(
                    "member {i} ({}): its BLS key or proof of possession does not verify",
                    m.endpoint_id
                ));
            }
            keys.push(m.bls_public_key.0.clone());
        }
        Ok(Self {
            keys: Arc::new(keys),
        })
    }

    fn key(&self, member: MemberIndex) -> Option<&[u8]> {
        self.keys.get(member.0 as usize).map(Vec::as_slice)
    }
}

impl Verifier for CommitteeKeys {
    fn verify(&self, member: MemberIndex, msg: &[u8], signature: &[u8]) -> bool {
        self.key(member)
            .is_some_and(|key| identity::bls_verify(key, msg, signature, BLS_SIG_DST))
    }

    fn aggregate(&self, signatures: &[&[u8]]) -> Option<Vec<u8>> {
        identity::bls_aggregate(signatures).map(|a| a.to_vec())
    }

    fn verify_aggregate(&self, members: &[MemberIndex], msg: &[u8], signature: &[u8]) -> bool {
        let mut distinct = members.to_vec();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != members.len() {
            return false;
        }
        let Some(keys) = members
            .iter()
            .map(|m| self.key(*m))
            .collect::<Option<Vec<&[u8]>>>()
        else {
            return false;
        };
        identity::bls_verify_aggregate(&keys, msg, signature, BLS_SIG_DST)
    }
}

/// This member's keys: the committee's, to verify, and its own identity, to sign.
#[derive(Clone, Debug)]
pub struct MemberKeys {
    committee: CommitteeKeys,
    identity: Arc<Identity>,
}

impl MemberKeys {
    pub fn new(committee: CommitteeKeys, identity: Arc<Identity>) -> Self {
        Self {
            committee,
            identity,
        }
    }
}

impl Verifier for MemberKeys {
    fn verify(&self, member: MemberIndex, msg: &[u8], signature: &[u8]) -> bool {
        self.committee.verify(member, msg, signature)
    }

    fn aggregate(&self, signatures: &[&[u8]]) -> Option<Vec<u8>> {
        self.committee.aggregate(signatures)
    }

    fn verify_aggregate(&self, members: &[MemberIndex], msg: &[u8], signature: &[u8]) -> bool {
        self.committee.verify_aggregate(members, msg, signature)
    }
}

impl Signing for MemberKeys {
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.identity.bls_sign(BLS_SIG_DST, msg).to_vec()
    }
}
