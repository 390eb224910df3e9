//! Pure-Rust BLS12-381 signature verification (min_sig: signatures in G1, public keys in G2),
//! compatible with blst's `min_sig` signing. Lets browsers and auditors verify without C code.

use bls12_381::hash_to_curve::{ExpandMsgXmd, HashToCurve};
use bls12_381::{G1Affine, G1Projective, G2Affine, G2Prepared, Gt, multi_miller_loop};

/// The IETF BLS ciphersuite for signatures when keys carry a proof of possession.
pub const SIG_DST: &[u8] = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";
/// The IETF BLS ciphersuite for proofs of possession.
pub const POP_DST: &[u8] = b"BLS_POP_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";

/// Decodes a compressed G2 public key, with subgroup check; rejects the identity.
pub fn public_key(bytes: &[u8]) -> Option<G2Affine> {
    let arr: &[u8; 96] = bytes.try_into().ok()?;
    let pk: Option<G2Affine> = G2Affine::from_compressed(arr).into();
    pk.filter(|p| !bool::from(p.is_identity()))
}

fn signature(bytes: &[u8]) -> Option<G1Affine> {
    let arr: &[u8; 48] = bytes.try_into().ok()?;
    let sig: Option<G1Affine> = G1Affine::from_compressed(arr).into();
    sig.filter(|s| !bool::from(s.is_identity()))
}

/// Checks e(sig, g2) == e(H(msg), pk).
pub fn verify_with_key(pk: &G2Affine, message: &[u8], sig: &[u8], dst: &[u8]) -> bool {
    let Some(sig) = signature(sig) else {
        return false;
    };
    let h =
        <G1Projective as HashToCurve<ExpandMsgXmd<sha2::Sha256>>>::hash_to_curve([message], dst);
    let h = G1Affine::from(h);
    let neg_g2 = G2Prepared::from(-G2Affine::generator());
    let pk = G2Prepared::from(*pk);
    multi_miller_loop(&[(&sig, &neg_g2), (&h, &pk)]).final_exponentiation() == Gt::identity()
}

pub fn verify(public_key_bytes: &[u8], message: &[u8], sig: &[u8], dst: &[u8]) -> bool {
    match public_key(public_key_bytes) {
        Some(pk) => verify_with_key(&pk, message, sig, dst),
        None => false,
    }
}

/// A proof of possession is the key's signature over its own compressed encoding.
pub fn verify_proof_of_possession(public_key_bytes: &[u8], pop: &[u8]) -> bool {
    verify(public_key_bytes, public_key_bytes, pop, POP_DST)
}
