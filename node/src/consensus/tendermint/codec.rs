//! Bytes of messages and log entries: a fixed, versioned layout of our own (Malachite's types
//! have no serde), big-endian integers, and decoders that refuse anything malformed, oversized or
//! trailing without panicking (they read what other members send).
//!
//! `Message` = `version (1) ‖ tag ‖ body`; `WalEntry` = `version (1) ‖ height u64 ‖ tag ‖ body`.
//! A round is a `u32`, `u32::MAX` for `Round::Nil`; a signature is `u16 length ‖ bytes`.

use std::fmt;

use malachitebft_core_consensus::{Input, ProposedValue};
use malachitebft_core_types::{
    NilOrVal, PolkaSignature, Round, RoundCertificateType, RoundSignature, Timeout, TimeoutKind,
    Validity, ValueOrigin, VoteType,
};

use super::certificate::AggregateCertificate;
use super::context::{
    Height, MemberIndex, PolkaCertificate, Proposal, RoundCertificate, Signature, SignedProposal,
    SignedVote, Value, ValueId, Vote,
};
use super::instance::{Message, WalEntry};
use super::sequencer::{Decided, Message as SequencerMessage};

const VERSION: u8 = 1;
/// Longest signature accepted (a BLS min_sig signature is 48 bytes).
pub const MAX_SIGNATURE_LEN: usize = 256;
/// Most signatures a certificate may carry (well above any committee size).
pub const MAX_CERT_SIGNATURES: usize = 1024;

/// Why bytes are not a message or a log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed consensus bytes: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

// ---- writing

fn round(out: &mut Vec<u8>, r: Round) {
    out.extend_from_slice(&r.as_u32().unwrap_or(u32::MAX).to_be_bytes());
}

fn member(out: &mut Vec<u8>, m: MemberIndex) {
    out.extend_from_slice(&m.0.to_be_bytes());
}

fn value(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(&v.call_id);
    out.extend_from_slice(&v.receipt_id);
    member(out, v.proposer);
}

fn nil_or_val(out: &mut Vec<u8>, v: &NilOrVal<ValueId>) {
    match v {
        NilOrVal::Nil => out.push(0),
        NilOrVal::Val(id) => {
            out.push(1);
            out.extend_from_slice(&id.0);
        }
    }
}

fn vote_type(out: &mut Vec<u8>, t: VoteType) {
    out.push(match t {
        VoteType::Prevote => 1,
        VoteType::Precommit => 2,
    });
}

fn signature(out: &mut Vec<u8>, s: &Signature) {
    // Signatures come from our own signer or passed the decoder: both are short.
    let len = s.0.len().min(MAX_SIGNATURE_LEN);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s.0[..len]);
}

fn signed_vote(out: &mut Vec<u8>, v: &SignedVote) {
    let m = &v.message;
    out.extend_from_slice(&m.height.0.to_be_bytes());
    round(out, m.round);
    vote_type(out, m.vote_type);
    nil_or_val(out, &m.value);
    member(out, m.voter);
    signature(out, &v.signature);
}

fn signed_proposal(out: &mut Vec<u8>, p: &SignedProposal) {
    let m = &p.message;
    out.extend_from_slice(&m.height.0.to_be_bytes());
    round(out, m.round);
    value(out, &m.value);
    round(out, m.pol_round);
    member(out, m.proposer);
    signature(out, &p.signature);
}

fn count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n.min(MAX_CERT_SIGNATURES) as u16).to_be_bytes());
}

fn polka(out: &mut Vec<u8>, c: &PolkaCertificate) {
    out.extend_from_slice(&c.height.0.to_be_bytes());
    round(out, c.round);
    out.extend_from_slice(&c.value_id.0);
    count(out, c.polka_signatures.len());
    for s in c.polka_signatures.iter().take(MAX_CERT_SIGNATURES) {
        member(out, s.address);
        signature(out, &s.signature);
    }
}

fn round_cert(out: &mut Vec<u8>, c: &RoundCertificate) {
    out.extend_from_slice(&c.height.0.to_be_bytes());
    round(out, c.round);
    out.push(match c.cert_type {
        RoundCertificateType::Skip => 1,
        RoundCertificateType::Precommit => 2,
    });
    count(out, c.round_signatures.len());
    for s in c.round_signatures.iter().take(MAX_CERT_SIGNATURES) {
        vote_type(out, s.vote_type);
        nil_or_val(out, &s.value_id);
        member(out, s.address);
        signature(out, &s.signature);
    }
}

// ---- reading

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
    fn bytes32(&mut self) -> Result<[u8; 32], DecodeError> {
        let mut b = [0; 32];
        b.copy_from_slice(self.take(32)?);
        Ok(b)
    }
    fn height(&mut self) -> Result<Height, DecodeError> {
        Ok(Height(self.u64()?))
    }
    fn round(&mut self) -> Result<Round, DecodeError> {
        Ok(match self.u32()? {
            u32::MAX => Round::Nil,
            r => Round::new(r),
        })
    }
    fn defined_round(&mut self) -> Result<Round, DecodeError> {
        let r = self.round()?;
        if r.is_nil() {
            return Err(DecodeError("a nil round where one is needed"));
        }
        Ok(r)
    }
    fn member(&mut self) -> Result<MemberIndex, DecodeError> {
        Ok(MemberIndex(self.u32()?))
    }
    fn value(&mut self) -> Result<Value, DecodeError> {
        Ok(Value {
            call_id: self.bytes32()?,
            receipt_id: self.bytes32()?,
            proposer: self.member()?,
        })
    }
    fn nil_or_val(&mut self) -> Result<NilOrVal<ValueId>, DecodeError> {
        match self.u8()? {
            0 => Ok(NilOrVal::Nil),
            1 => Ok(NilOrVal::Val(ValueId(self.bytes32()?))),
            _ => Err(DecodeError("bad value tag")),
        }
    }
    fn vote_type(&mut self) -> Result<VoteType, DecodeError> {
        match self.u8()? {
            1 => Ok(VoteType::Prevote),
            2 => Ok(VoteType::Precommit),
            _ => Err(DecodeError("bad vote type")),
        }
    }
    fn signature(&mut self) -> Result<Signature, DecodeError> {
        let len = self.u16()? as usize;
        if len > MAX_SIGNATURE_LEN {
            return Err(DecodeError("signature too long"));
        }
        Ok(Signature(self.take(len)?.to_vec()))
    }
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u16()? as usize;
        if n > MAX_CERT_SIGNATURES {
            return Err(DecodeError("too many signatures"));
        }
        Ok(n)
    }
    fn signed_vote(&mut self) -> Result<SignedVote, DecodeError> {
        let vote = Vote {
            height: self.height()?,
            round: self.defined_round()?,
            vote_type: self.vote_type()?,
            value: self.nil_or_val()?,
            voter: self.member()?,
        };
        Ok(SignedVote::new(vote, self.signature()?))
    }
    fn signed_proposal(&mut self) -> Result<SignedProposal, DecodeError> {
        let proposal = Proposal {
            height: self.height()?,
            round: self.defined_round()?,
            value: self.value()?,
            pol_round: self.round()?,
            proposer: self.member()?,
        };
        Ok(SignedProposal::new(proposal, self.signature()?))
    }
    fn polka(&mut self) -> Result<PolkaCertificate, DecodeError> {
        let (height, round, value_id) = (
            self.height()?,
            self.defined_round()?,
            ValueId(self.bytes32()?),
        );
        let n = self.count()?;
        let mut polka_signatures = Vec::with_capacity(n);
        for _ in 0..n {
            polka_signatures.push(PolkaSignature::new(self.member()?, self.signature()?));
        }
        Ok(PolkaCertificate {
            height,
            round,
            value_id,
            polka_signatures,
        })
    }
    fn round_cert(&mut self) -> Result<RoundCertificate, DecodeError> {
        let (height, round) = (self.height()?, self.defined_round()?);
        let cert_type = match self.u8()? {
            1 => RoundCertificateType::Skip,
            2 => RoundCertificateType::Precommit,
            _ => return Err(DecodeError("bad certificate type")),
        };
        let n = self.count()?;
        let mut round_signatures = Vec::with_capacity(n);
        for _ in 0..n {
            round_signatures.push(RoundSignature::new(
                self.vote_type()?,
                self.nil_or_val()?,
                self.member()?,
                self.signature()?,
            ));
        }
        Ok(RoundCertificate {
            height,
            round,
            cert_type,
            round_signatures,
        })
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes"))
        }
    }
    fn version(&mut self) -> Result<(), DecodeError> {
        if self.u8()? != VERSION {
            return Err(DecodeError("unknown version"));
        }
        Ok(())
    }
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            Message::Proposal(p) => {
                out.push(1);
                signed_proposal(&mut out, p);
            }
            Message::Vote(v) => {
                out.push(2);
                signed_vote(&mut out, v);
            }
            Message::PolkaCertificate(c) => {
                out.push(3);
                polka(&mut out, c);
            }
            Message::RoundCertificate(c) => {
                out.push(4);
                round_cert(&mut out, c);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader(bytes);
        r.version()?;
        let msg = match r.u8()? {
            1 => Message::Proposal(r.signed_proposal()?),
            2 => Message::Vote(r.signed_vote()?),
            3 => Message::PolkaCertificate(r.polka()?),
            4 => Message::RoundCertificate(r.round_cert()?),
            _ => return Err(DecodeError("unknown message")),
        };
        r.end()?;
        Ok(msg)
    }
}

/// Whether the log can hold `input` (the kinds the core appends: votes, proposals, verdicts
/// on values, consensus timeouts, polka certificates).
pub(crate) fn loggable(input: &Input<super::context::OnvmContext>) -> bool {
    match input {
        Input::Vote(_) | Input::Proposal(_) | Input::ProposedValue(..) => true,
        Input::PolkaCertificate(_) => true,
        Input::TimeoutElapsed(t) => matches!(
            t.kind,
            TimeoutKind::Propose | TimeoutKind::Prevote | TimeoutKind::Precommit
        ),
        _ => false,
    }
}

impl WalEntry {
    /// The entry's bytes. Entries hold only what [`loggable`] accepts (the instance halts
    /// rather than log anything else).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.height.0.to_be_bytes());
        match &self.input {
            Input::Vote(v) => {
                out.push(1);
                signed_vote(&mut out, v);
            }
            Input::Proposal(p) => {
                out.push(2);
                signed_proposal(&mut out, p);
            }
            Input::ProposedValue(pv, origin) => {
                out.push(3);
                out.extend_from_slice(&pv.height.0.to_be_bytes());
                round(&mut out, pv.round);
                round(&mut out, pv.valid_round);
                member(&mut out, pv.proposer);
                value(&mut out, &pv.value);
                out.push(if pv.validity.is_valid() { 1 } else { 0 });
                out.push(if origin.is_sync() { 2 } else { 1 });
            }
            Input::TimeoutElapsed(t) => {
                out.push(4);
                round(&mut out, t.round);
                out.push(match t.kind {
                    TimeoutKind::Propose => 1,
                    TimeoutKind::Prevote => 2,
                    _ => 3,
                });
            }
            Input::PolkaCertificate(c) => {
                out.push(5);
                polka(&mut out, c);
            }
            _ => out.push(0),
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<WalEntry, DecodeError> {
        let mut r = Reader(bytes);
        r.version()?;
        let height = r.height()?;
        let input = match r.u8()? {
            1 => Input::Vote(r.signed_vote()?),
            2 => Input::Proposal(r.signed_proposal()?),
            3 => {
                let pv = ProposedValue {
                    height: r.height()?,
                    round: r.round()?,
                    valid_round: r.round()?,
                    proposer: r.member()?,
                    value: r.value()?,
                    validity: match r.u8()? {
                        1 => Validity::Valid,
                        0 => Validity::Invalid,
                        _ => return Err(DecodeError("bad validity")),
                    },
                };
                let origin = match r.u8()? {
                    1 => ValueOrigin::Consensus,
                    2 => ValueOrigin::Sync,
                    _ => return Err(DecodeError("bad origin")),
                };
                Input::ProposedValue(pv, origin)
            }
            4 => {
                let round = r.defined_round()?;
                let kind = match r.u8()? {
                    1 => TimeoutKind::Propose,
                    2 => TimeoutKind::Prevote,
                    3 => TimeoutKind::Precommit,
                    _ => return Err(DecodeError("bad timeout kind")),
                };
                Input::TimeoutElapsed(Timeout::new(round, kind))
            }
            5 => Input::PolkaCertificate(r.polka()?),
            _ => return Err(DecodeError("unknown log entry")),
        };
        r.end()?;
        Ok(WalEntry { height, input })
    }
}

// ---- the sequencer's messages and decisions (what members send each other and store)

/// Most call ids one `Forward` may carry on the wire.
pub const MAX_FORWARD_IDS: usize = 1024;
/// Longest signer bitmap accepted (a committee of at most `8 × 128` members).
const MAX_BITMAP: usize = MAX_CERT_SIGNATURES / 8;

fn decided(out: &mut Vec<u8>, d: &Decided) {
    out.extend_from_slice(&d.height.0.to_be_bytes());
    value(out, &d.value);
    let c = &d.certificate;
    out.extend_from_slice(&c.round.to_be_bytes());
    out.extend_from_slice(&c.value_id.0);
    let len = c.signers.len().min(MAX_BITMAP);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&c.signers[..len]);
    signature(out, &Signature(c.signature.clone()));
}

impl Reader<'_> {
    fn decided(&mut self) -> Result<Decided, DecodeError> {
        let height = self.height()?;
        let value = self.value()?;
        let round = self.u32()?;
        if round == u32::MAX {
            return Err(DecodeError("a nil round where one is needed"));
        }
        let value_id = ValueId(self.bytes32()?);
        let len = self.u16()? as usize;
        if len > MAX_BITMAP {
            return Err(DecodeError("signer bitmap too long"));
        }
        let signers = self.take(len)?.to_vec();
        let signature = self.signature()?.0;
        Ok(Decided {
            height,
            value,
            certificate: AggregateCertificate {
                height: height.0,
                round,
                value_id,
                signers,
                signature,
            },
        })
    }
}

impl Decided {
    /// The decision's bytes (stored by the member, sent to members catching up).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        decided(&mut out, self);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Decided, DecodeError> {
        let mut r = Reader(bytes);
        r.version()?;
        let d = r.decided()?;
        r.end()?;
        Ok(d)
    }
}

impl SequencerMessage {
    /// `version ‖ tag ‖ body`; a consensus message's body is its own encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        match self {
            SequencerMessage::Consensus(m) => {
                out.push(1);
                out.extend_from_slice(&m.encode());
            }
            SequencerMessage::Forward { call_ids } => {
                out.push(2);
                let n = call_ids.len().min(MAX_FORWARD_IDS);
                out.extend_from_slice(&(n as u16).to_be_bytes());
                for id in &call_ids[..n] {
                    out.extend_from_slice(id);
                }
            }
            SequencerMessage::DecisionRequest { from_height } => {
                out.push(3);
                out.extend_from_slice(&from_height.0.to_be_bytes());
            }
            SequencerMessage::Decision(d) => {
                out.push(4);
                decided(&mut out, d);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SequencerMessage, DecodeError> {
        let mut r = Reader(bytes);
        r.version()?;
        let msg = match r.u8()? {
            1 => return Ok(SequencerMessage::Consensus(Message::decode(r.0)?)),
            2 => {
                let n = r.u16()? as usize;
                if n > MAX_FORWARD_IDS {
                    return Err(DecodeError("too many forwarded calls"));
                }
                let mut call_ids = Vec::with_capacity(n);
                for _ in 0..n {
                    call_ids.push(r.bytes32()?);
                }
                SequencerMessage::Forward { call_ids }
            }
            3 => SequencerMessage::DecisionRequest {
                from_height: r.height()?,
            },
            4 => SequencerMessage::Decision(r.decided()?),
            _ => return Err(DecodeError("unknown message")),
        };
        r.end()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    fn decision() -> Decided {
        let value = Value {
            call_id: [1; 32],
            receipt_id: [2; 32],
            proposer: MemberIndex(3),
        };
        Decided {
            height: Height(7),
            value,
            certificate: AggregateCertificate {
                height: 7,
                round: 2,
                value_id: value.id(),
                signers: vec![0b1011],
                signature: vec![9; 48],
            },
        }
    }

    #[test]
    fn sequencer_messages_and_decisions_round_trip() {
        let msgs = [
            SequencerMessage::Forward {
                call_ids: vec![[4; 32], [5; 32]],
            },
            SequencerMessage::DecisionRequest {
                from_height: Height(12),
            },
            SequencerMessage::Decision(decision()),
        ];
        for m in msgs {
            assert_eq!(SequencerMessage::decode(&m.encode()), Ok(m));
        }
        let d = decision();
        assert_eq!(Decided::decode(&d.encode()), Ok(d));
    }

    #[test]
    fn malformed_sequencer_bytes_are_refused_without_panicking() {
        let good = SequencerMessage::Decision(decision()).encode();
        for cut in 0..good.len() {
            assert!(
                SequencerMessage::decode(&good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(SequencerMessage::decode(&trailing).is_err());
        let mut nil_round = decision().encode();
        // version 1 + height 8 + value 68, then the round.
        nil_round[77..81].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Decided::decode(&nil_round).is_err());
        let mut flood = vec![VERSION, 2];
        flood.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(SequencerMessage::decode(&flood).is_err());
        assert!(SequencerMessage::decode(&[VERSION, 9]).is_err());
        assert!(SequencerMessage::decode(&[2, 3, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }
}
