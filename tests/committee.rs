//! Aggregated receipts: the pure-Rust verifier in `rpc-api` against signatures made with blst
//! (what nodes use), for 3, 16 and 64 signers, and every way a receipt can be wrong.

use blst::min_sig::{AggregateSignature, SecretKey, Signature};
use onvm::rpc_api::bls::{POP_DST, SIG_DST};
use onvm::rpc_api::committee::precommit_message;
use onvm::rpc_api::committee::{
    AggregatedReceipt, Committee, CommitteeError, Member, VerifiedCommittee, default_threshold,
    select, set_signer,
};
use onvm::rpc_api::program::{ExecutionReceipt, Outcome, receipt_signing_message};
use onvm::rpc_api::{BlobId, Hash32, HexBytes, ProgramId};

const NET: &str = "onvm-devnet";

struct Key {
    sk: SecretKey,
    member: Member,
}

fn key(i: u64) -> Key {
    let mut ikm = [0u8; 32];
    ikm[..8].copy_from_slice(&i.to_le_bytes());
    ikm[8] = 0xa5;
    let sk = SecretKey::key_gen(&ikm, &[]).unwrap();
    let pk = sk.sk_to_pk().compress();
    let pop = sk.sign(&pk, POP_DST, &[]).compress();
    Key {
        sk,
        member: Member {
            endpoint_id: Hash32(*blake3::hash(&i.to_le_bytes()).as_bytes()),
            bls_public_key: HexBytes(pk.to_vec()),
            proof_of_possession: HexBytes(pop.to_vec()),
        },
    }
}

fn receipt(program: ProgramId, height: u64) -> ExecutionReceipt {
    ExecutionReceipt {
        version: 1,
        network_id: NET.into(),
        program_id: program,
        code_hash: BlobId::from_bytes([1; 32]),
        engine: "test".into(),
        entrypoint: "onvm_main".into(),
        height,
        input_hash: Hash32([2; 32]),
        caller: Hash32::ZERO,
        call_id: Hash32::ZERO,
        caller_proof: None,
        timestamp_ms: 1,
        seed: Hash32([3; 32]),
        state_root_in: Hash32([4; 32]),
        state_root_out: Hash32([5; 32]),
        write_digest: Hash32([6; 32]),
        output_hash: Hash32([7; 32]),
        output_len: 0,
        fuel_limit: 10,
        fuel_used: 5,
        outcome: Outcome::Ok,
        executor: Hash32([8; 32]),
    }
}

fn committee(keys: &[Key], program: ProgramId) -> Committee {
    Committee {
        program_id: program,
        epoch: 0,
        members: keys.iter().map(|k| k.member.clone()).collect(),
        threshold: default_threshold(keys.len()),
    }
}

/// Member 0's execution of `r`, precommitted in round 0 by the members at `signers`, their
/// signatures aggregated.
fn attest(keys: &[Key], signers: &[usize], r: ExecutionReceipt) -> AggregatedReceipt {
    let mut r = r;
    r.executor = keys[0].member.endpoint_id;
    let id = r.id();
    let msg = precommit_message(&r, &id, 0, 0);
    signed_by(keys, signers, r, &msg, Some(0))
}

/// `r` with the aggregate of `signers`' signatures over `msg`, naming `round`.
fn signed_by(
    keys: &[Key],
    signers: &[usize],
    r: ExecutionReceipt,
    msg: &[u8],
    round: Option<u32>,
) -> AggregatedReceipt {
    let sigs: Vec<Signature> = signers
        .iter()
        .map(|&i| keys[i].sk.sign(msg, SIG_DST, &[]))
        .collect();
    let refs: Vec<&Signature> = sigs.iter().collect();
    let agg = AggregateSignature::aggregate(&refs, true)
        .unwrap()
        .to_signature();
    let mut bitmap = Vec::new();
    for &i in signers {
        set_signer(&mut bitmap, keys.len(), i);
    }
    AggregatedReceipt {
        id: r.id(),
        receipt: r,
        epoch: 0,
        round,
        signers: HexBytes(bitmap),
        signature: HexBytes(agg.compress().to_vec()),
    }
}

/// A certificate proves one round's precommits for this very value: signatures of another
/// round, of the receipt id alone (the old single-round attestation), with no round, or for
/// an execution by a non-member prove nothing.
#[test]
fn an_attestation_is_the_precommits_of_the_one_round_it_names() {
    let keys: Vec<Key> = (0..4).map(key).collect();
    let program = ProgramId::from_bytes([11; 32]);
    let verified = VerifiedCommittee::new(committee(&keys, program)).unwrap();
    let good = attest(&keys, &[1, 2, 3], receipt(program, 3));
    verified.verify(&good, NET).unwrap();
    // The same signatures presented as another round's.
    let mut moved = good.clone();
    moved.round = Some(1);
    assert_eq!(
        verified.verify(&moved, NET),
        Err(CommitteeError::BadSignature)
    );
    // Round 1's precommits are valid for round 1 only.
    let r = good.receipt.clone();
    let round1 = signed_by(
        &keys,
        &[0, 1, 3],
        r.clone(),
        &precommit_message(&r, &good.id, 1, 0),
        Some(1),
    );
    verified.verify(&round1, NET).unwrap();
    // Two members of round 0 and one of round 1 never make a certificate, whatever it names.
    let mixed_sigs = [
        keys[1]
            .sk
            .sign(&precommit_message(&r, &good.id, 0, 0), SIG_DST, &[]),
        keys[2]
            .sk
            .sign(&precommit_message(&r, &good.id, 0, 0), SIG_DST, &[]),
        keys[3]
            .sk
            .sign(&precommit_message(&r, &good.id, 1, 0), SIG_DST, &[]),
    ];
    let refs: Vec<&Signature> = mixed_sigs.iter().collect();
    let mixed_agg = AggregateSignature::aggregate(&refs, true)
        .unwrap()
        .to_signature();
    for round in [0, 1] {
        let mut mixed = good.clone();
        mixed.round = Some(round);
        mixed.signature = HexBytes(mixed_agg.compress().to_vec());
        assert_eq!(
            verified.verify(&mixed, NET),
            Err(CommitteeError::BadSignature)
        );
    }
    // The old attestation: a quorum's signatures over the receipt id.
    let old = signed_by(
        &keys,
        &[0, 1, 2],
        r.clone(),
        &receipt_signing_message(NET, &good.id),
        Some(0),
    );
    assert_eq!(
        verified.verify(&old, NET),
        Err(CommitteeError::BadSignature)
    );
    let mut no_round = old;
    no_round.round = None;
    assert_eq!(
        verified.verify(&no_round, NET),
        Err(CommitteeError::NoRound(4))
    );
    let mut reserved = good.clone();
    reserved.round = Some(u32::MAX);
    assert_eq!(
        verified.verify(&reserved, NET),
        Err(CommitteeError::BadRound(u32::MAX))
    );
    // Another member named as the executor: another value.
    let other_executor = signed_by(
        &keys,
        &[0, 1, 2],
        r.clone(),
        &precommit_message(&r, &good.id, 0, 1),
        Some(0),
    );
    assert_eq!(
        verified.verify(&other_executor, NET),
        Err(CommitteeError::BadSignature)
    );
    // An executor outside the committee.
    let mut stranger = r;
    stranger.executor = Hash32([8; 32]);
    let sid = stranger.id();
    let outside = signed_by(
        &keys,
        &[0, 1, 2],
        stranger.clone(),
        &precommit_message(&stranger, &sid, 0, 0),
        Some(0),
    );
    assert_eq!(
        verified.verify(&outside, NET),
        Err(CommitteeError::ExecutorNotMember)
    );
}

#[test]
fn threshold_signatures_from_3_16_and_64_members_verify() {
    for n in [3usize, 16, 64] {
        let keys: Vec<Key> = (0..n as u64).map(key).collect();
        let program = ProgramId::from_bytes([n as u8; 32]);
        let verified = VerifiedCommittee::new(committee(&keys, program)).unwrap();
        let threshold = default_threshold(n) as usize;
        // Exactly the threshold, taken from the end so the bitmap is not a prefix.
        let signers: Vec<usize> = (n - threshold..n).collect();
        let agg = attest(&keys, &signers, receipt(program, 7));
        verified.verify(&agg, NET).unwrap();
        assert_eq!(verified.signers(&agg.signers.0).unwrap(), signers);
        // One fewer is not enough.
        let short = attest(&keys, &signers[1..], receipt(program, 7));
        assert!(matches!(
            verified.verify(&short, NET),
            Err(CommitteeError::BelowThreshold { .. })
        ));
    }
}

#[test]
fn tampered_receipts_wrong_bitmaps_and_replayed_signatures_are_rejected() {
    let keys: Vec<Key> = (0..4).map(key).collect();
    let program = ProgramId::from_bytes([9; 32]);
    let verified = VerifiedCommittee::new(committee(&keys, program)).unwrap();
    let good = attest(&keys, &[0, 1, 2], receipt(program, 1));
    verified.verify(&good, NET).unwrap();

    // A changed field with the old id: the id no longer matches.
    let mut tampered = good.clone();
    tampered.receipt.fuel_used += 1;
    assert_eq!(
        verified.verify(&tampered, NET),
        Err(CommitteeError::WrongId)
    );
    // ... and with a recomputed id: the signatures are over another id.
    tampered.id = tampered.receipt.id();
    assert_eq!(
        verified.verify(&tampered, NET),
        Err(CommitteeError::BadSignature)
    );

    // The bitmap claims signers that did not sign.
    let mut wrong_bitmap = good.clone();
    wrong_bitmap.signers = HexBytes(vec![0b1110]);
    assert_eq!(
        verified.verify(&wrong_bitmap, NET),
        Err(CommitteeError::BadSignature)
    );
    // Bits beyond the committee, or a bitmap of the wrong length.
    wrong_bitmap.signers = HexBytes(vec![0b1_0111]);
    assert_eq!(
        verified.verify(&wrong_bitmap, NET),
        Err(CommitteeError::BadBitmap(4))
    );
    wrong_bitmap.signers = HexBytes(vec![0b111, 0]);
    assert_eq!(
        verified.verify(&wrong_bitmap, NET),
        Err(CommitteeError::BadBitmap(4))
    );

    // A valid aggregate for another receipt (another height), replayed onto this one.
    let other = attest(&keys, &[0, 1, 2], receipt(program, 2));
    let mut replayed = good.clone();
    replayed.signature = other.signature.clone();
    assert_eq!(
        verified.verify(&replayed, NET),
        Err(CommitteeError::BadSignature)
    );
    // The right receipt presented for another program, epoch or network.
    let other_program =
        VerifiedCommittee::new(committee(&keys, ProgramId::from_bytes([1; 32]))).unwrap();
    assert!(matches!(
        other_program.verify(&good, NET),
        Err(CommitteeError::WrongProgram { .. })
    ));
    let mut epoch = good.clone();
    epoch.epoch = 1;
    assert!(matches!(
        verified.verify(&epoch, NET),
        Err(CommitteeError::WrongEpoch { .. })
    ));
    assert!(matches!(
        verified.verify(&good, "another-net"),
        Err(CommitteeError::WrongNetwork { .. })
    ));
    // Garbage signature bytes.
    let mut garbage = good;
    garbage.signature = HexBytes(vec![0xff; 48]);
    assert_eq!(
        verified.verify(&garbage, NET),
        Err(CommitteeError::BadSignature)
    );
}

#[test]
fn keys_without_a_valid_proof_of_possession_are_never_members() {
    let mut keys: Vec<Key> = (0..4).map(key).collect();
    // Member 2 shows member 3's proof: the classic rogue-key setup.
    keys[2].member.proof_of_possession = keys[3].member.proof_of_possession.clone();
    let program = ProgramId::from_bytes([5; 32]);
    assert_eq!(
        VerifiedCommittee::new(committee(&keys, program)).unwrap_err(),
        CommitteeError::BadKey(2)
    );
    let candidates: Vec<Member> = keys.iter().map(|k| k.member.clone()).collect();
    let chosen = select(&candidates[0], 0, &candidates, 4);
    assert_eq!(chosen.len(), 3);
    assert!(!chosen.contains(&candidates[2]));
}

#[test]
fn the_committee_rule_is_deterministic_and_puts_the_home_first() {
    let keys: Vec<Key> = (0..10).map(key).collect();
    let candidates: Vec<Member> = keys.iter().map(|k| k.member.clone()).collect();
    let home = candidates[7].clone();
    let a = select(&home, 0, &candidates, 3);
    let mut shuffled = candidates.clone();
    shuffled.reverse();
    shuffled.rotate_left(3);
    let b = select(&home, 0, &shuffled, 3);
    assert_eq!(a, b);
    assert_eq!(a[0], home);
    assert_eq!(a.len(), 3);
    // The deployer's next program draws (almost surely) another committee from the same
    // nodes; the salt or code of a program has no say in it.
    let next = select(&home, 1, &candidates, 3);
    assert_eq!(next[0], home);
    assert_ne!(a, next);
    // Asking for more members than exist gives everyone, once.
    assert_eq!(select(&home, 0, &candidates, 50).len(), 10);
}
