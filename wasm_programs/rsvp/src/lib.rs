//! `rsvp`: who comes, who does not and why, keyed by the signed caller.
//!
//! The program behind `examples/rsvp/` (the browser dApp): every answer belongs to the caller id
//! the node checked (`onvm_caller`, the caller's ed25519 public key), so nobody can answer for
//! someone else, and answering again replaces one's previous answer. See README.md.
//!
//! Bad input ends the call with `onvm_abort` (outcome `trap`, kind `guest_abort`, RPC error
//! -32020) and a message starting with an error code, e.g. `reason_required: …`: a writing call
//! that does not record an answer never commits as `ok`, so a receipt with outcome `ok` of an
//! `rsvp` request is exactly an answer that was recorded.
//!
//! State layout:
//!
//! | state key | value |
//! |---|---|
//! | `b"a/" + caller (32 bytes)` | the answer, JSON `{"attending","reason","height","timestamp_ms"}` |
//! | `b"m/yes"`, `b"m/no"` | how many answers say yes / no, u64 little-endian (absent: 0) |

use onvm_sdk::state;
use serde::{Deserialize, Serialize};

/// Prefix of the answer keys.
pub const ANSWER_PREFIX: &[u8] = b"a/";
/// Counter of the answers that say yes.
pub const YES_KEY: &[u8] = b"m/yes";
/// Counter of the answers that say no.
pub const NO_KEY: &[u8] = b"m/no";
/// Longest reason, in characters (Unicode scalar values), after trimming.
pub const MAX_REASON_CHARS: usize = 280;
/// `list` page size when the request has no `limit`, and the largest one.
pub const MAX_LIMIT: u64 = 1000;

onvm_sdk::entry!(handle);

/// The entrypoint's logic: JSON request in, JSON response out; bad input aborts the call.
pub fn handle(input: &[u8]) -> Vec<u8> {
    match run(input) {
        Ok(out) => out,
        Err(e) => onvm_sdk::abort(&e.to_string()),
    }
}

/// Why a request was refused: `code: message` is the abort message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Stable code: `bad_request`, `anonymous`, `reason_required`, `bad_reason`,
    /// `bad_caller`, `corrupt_state`.
    pub code: &'static str,
    /// What was wrong, for people.
    pub message: String,
}

impl Error {
    fn new(code: &'static str, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Rsvp {
        attending: bool,
        #[serde(default)]
        reason: Option<String>,
    },
    List {
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        limit: Option<u64>,
    },
    Get {
        #[serde(default)]
        caller: Option<String>,
    },
}

/// An answer as stored (the caller is in the key).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Stored {
    attending: bool,
    reason: Option<String>,
    height: u64,
    timestamp_ms: u64,
}

/// An answer as returned.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
struct Answer {
    caller: String,
    attending: bool,
    reason: Option<String>,
    /// Height of the call that gave this answer: its receipt's `height`.
    height: u64,
    /// That call's timestamp (the receipt's `timestamp_ms`), unix ms.
    timestamp_ms: u64,
}

impl Answer {
    fn new(caller: &[u8; 32], s: Stored) -> Answer {
        Answer {
            caller: hex(caller),
            attending: s.attending,
            reason: s.reason,
            height: s.height,
            timestamp_ms: s.timestamp_ms,
        }
    }
}

/// Runs one request: the response, or why it was refused (nothing written then).
pub fn run(input: &[u8]) -> Result<Vec<u8>, Error> {
    let req: Request = serde_json::from_slice(input).map_err(|e| {
        Error::new(
            "bad_request",
            format!(
                "{e}; expected {{\"op\":\"rsvp\",\"attending\":true|false,\"reason\":\"…\"}}, \
                 {{\"op\":\"list\"}} or {{\"op\":\"get\"}}"
            ),
        )
    })?;
    match req {
        Request::Rsvp { attending, reason } => rsvp(attending, reason),
        Request::List { after, limit } => list(after, limit),
        Request::Get { caller } => get(caller),
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value)
        .unwrap_or_else(|_| onvm_sdk::abort("corrupt_state: cannot serialise the response"))
}

/// The trimmed reason, `None` when absent or blank; refused when too long or not one line.
fn check_reason(reason: Option<String>) -> Result<Option<String>, Error> {
    let Some(reason) = reason else {
        return Ok(None);
    };
    let reason = reason.trim();
    if reason.is_empty() {
        return Ok(None);
    }
    let chars = reason.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(Error::new(
            "bad_reason",
            format!("the reason is {chars} characters; the maximum is {MAX_REASON_CHARS}"),
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err(Error::new(
            "bad_reason",
            "the reason must be one line of text (no line breaks or control characters)",
        ));
    }
    Ok(Some(reason.to_string()))
}

fn answer_key(caller: &[u8; 32]) -> Vec<u8> {
    [ANSWER_PREFIX, caller.as_slice()].concat()
}

fn read_answer(key: &[u8]) -> Result<Option<Stored>, Error> {
    match state::get(key) {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| {
            Error::new(
                "corrupt_state",
                format!("a stored answer is unreadable: {e}"),
            )
        }),
    }
}

fn read_counter(key: &[u8]) -> Result<u64, Error> {
    match state::get(key) {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| Error::new("corrupt_state", "a counter is not 8 bytes")),
    }
}

fn write_counter(key: &[u8], value: u64) {
    if value == 0 {
        state::del(key);
    } else {
        state::put(key, &value.to_le_bytes());
    }
}

#[derive(Serialize)]
struct RsvpResponse {
    ok: bool,
    answer: Answer,
    /// Whether this caller had answered before (that answer is replaced).
    replaced: bool,
}

fn rsvp(attending: bool, reason: Option<String>) -> Result<Vec<u8>, Error> {
    let caller = onvm_sdk::caller();
    if caller == [0; 32] {
        return Err(Error::new(
            "anonymous",
            "an answer needs a signed call: answers are kept under the caller id, and an \
             anonymous call has none (sign the call with a caller key)",
        ));
    }
    let reason = check_reason(reason)?;
    if !attending && reason.is_none() {
        return Err(Error::new(
            "reason_required",
            "a \"no\" needs a reason: send {\"op\":\"rsvp\",\"attending\":false,\"reason\":\"…\"}",
        ));
    }
    let key = answer_key(&caller);
    let old = read_answer(&key)?;
    let (mut yes, mut no) = (read_counter(YES_KEY)?, read_counter(NO_KEY)?);
    let inconsistent = || Error::new("corrupt_state", "the counters do not match the answers");
    match &old {
        Some(o) if o.attending => yes = yes.checked_sub(1).ok_or_else(inconsistent)?,
        Some(_) => no = no.checked_sub(1).ok_or_else(inconsistent)?,
        None => {}
    }
    if attending {
        yes += 1;
    } else {
        no += 1;
    }
    let ctx = onvm_sdk::context();
    let stored = Stored {
        attending,
        reason,
        height: ctx.height,
        timestamp_ms: ctx.timestamp_ms,
    };
    state::put(&key, &to_json(&stored));
    write_counter(YES_KEY, yes);
    write_counter(NO_KEY, no);
    Ok(to_json(&RsvpResponse {
        ok: true,
        answer: Answer::new(&caller, stored),
        replaced: old.is_some(),
    }))
}

#[derive(Serialize)]
struct ListResponse {
    ok: bool,
    answers: Vec<Answer>,
    /// Totals over every answer (not only this page).
    attending: u64,
    not_attending: u64,
    /// The last caller of this page when more answers follow (pass it as `after`), else null.
    next: Option<String>,
}

fn list(after: Option<String>, limit: Option<u64>) -> Result<Vec<u8>, Error> {
    let limit = limit.unwrap_or(MAX_LIMIT);
    if limit == 0 {
        return Err(Error::new("bad_request", "limit must be at least 1"));
    }
    let limit = limit.min(MAX_LIMIT) as usize;
    let mut cursor = match after.as_deref().filter(|a| !a.is_empty()) {
        Some(a) => Some(answer_key(&parse_caller(a, "after")?)),
        None => None,
    };
    let mut answers = Vec::new();
    let mut more = false;
    while let Some(k) = state::next_key(ANSWER_PREFIX, cursor.as_deref()) {
        if answers.len() == limit {
            more = true;
            break;
        }
        let caller = <[u8; 32]>::try_from(&k[ANSWER_PREFIX.len()..])
            .map_err(|_| Error::new("corrupt_state", "an answer key is not a caller id"))?;
        let stored = read_answer(&k)?
            .ok_or_else(|| Error::new("corrupt_state", "an answer vanished while listing"))?;
        answers.push(Answer::new(&caller, stored));
        cursor = Some(k);
    }
    let next = if more {
        answers.last().map(|a| a.caller.clone())
    } else {
        None
    };
    Ok(to_json(&ListResponse {
        ok: true,
        answers,
        attending: read_counter(YES_KEY)?,
        not_attending: read_counter(NO_KEY)?,
        next,
    }))
}

#[derive(Serialize)]
struct GetResponse {
    ok: bool,
    answer: Option<Answer>,
}

fn get(caller: Option<String>) -> Result<Vec<u8>, Error> {
    let caller = match caller {
        Some(c) => parse_caller(&c, "caller")?,
        None => {
            let c = onvm_sdk::caller();
            if c == [0; 32] {
                return Err(Error::new(
                    "anonymous",
                    "an anonymous call has no answer of its own: sign the call, or name the \
                     caller ({\"op\":\"get\",\"caller\":\"<64 hex>\"})",
                ));
            }
            c
        }
    };
    let answer = read_answer(&answer_key(&caller))?.map(|s| Answer::new(&caller, s));
    Ok(to_json(&GetResponse { ok: true, answer }))
}

/// A caller id: 64 hex digits (either case).
fn parse_caller(s: &str, what: &str) -> Result<[u8; 32], Error> {
    let bad = || {
        Error::new(
            "bad_caller",
            format!("{what} must be a caller id of 64 hex digits, got {s:?}"),
        )
    };
    let b = s.as_bytes();
    if b.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
        let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests;
