//! `kvstore`: a key/value store on program state, driven by JSON requests.
//!
//! Every call returns a JSON object; failures are `{"ok":false,"error":"<code>","message":"…"}`
//! (with `"key"` where one applies), never a trap. See README.md for the operations.
//!
//! State layout (all writes go through [`onvm_sdk::state`]):
//!
//! | state key | value |
//! |---|---|
//! | `b"d/" + key` | the raw bytes stored under `key` (one entry per key) |
//! | `b"m/count"` | number of `d/` entries, u64 little-endian |
//! | `b"m/bytes"` | sum of the lengths of the `d/` values, u64 little-endian |
//!
//! The two counters are updated in the same call as the entries they count, so they always match
//! the `d/` entries exactly. Both are present when the store holds at least one entry and both are
//! deleted when it becomes empty, so an empty store is an empty state.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use onvm_sdk::state;
use serde::{Deserialize, Serialize};

/// Prefix of the state keys holding user data.
pub const DATA_PREFIX: &[u8] = b"d/";
/// State key of the entry counter.
pub const COUNT_KEY: &[u8] = b"m/count";
/// State key of the total value size counter.
pub const BYTES_KEY: &[u8] = b"m/bytes";
/// Longest accepted key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 200;
/// Largest accepted value (the host's default `vm.max_value_bytes`).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// `list` page size when the request has no `limit`.
pub const DEFAULT_LIMIT: u64 = 100;
/// Largest `list` page size; a larger `limit` is reduced to it.
pub const MAX_LIMIT: u64 = 1000;
/// Most entries one `clear` deletes; it reports `"more":true` when entries remain. Keeps a call
/// well below the node's limit on distinct keys written per call (`vm.max_writes_per_call`,
/// default 10 000).
pub const CLEAR_BATCH: u64 = 5000;

onvm_sdk::entry!(handle);

/// The entrypoint's logic: JSON request in, JSON response out.
pub fn handle(input: &[u8]) -> Vec<u8> {
    let result = match serde_json::from_slice::<Request>(input) {
        Ok(req) => dispatch(req),
        Err(e) => Err(Error::new("bad_request", format!("invalid request: {e}"))),
    };
    match result {
        Ok(out) => out,
        Err(e) => to_json(&e),
    }
}

#[derive(Deserialize)]
struct Request {
    op: String,
    key: Option<String>,
    data_base64: Option<String>,
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<u64>,
}

/// An error response.
#[derive(Debug, Serialize)]
struct Error {
    ok: bool,
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    message: String,
}

impl Error {
    fn new(error: &'static str, message: impl Into<String>) -> Error {
        Error {
            ok: false,
            error,
            key: None,
            message: message.into(),
        }
    }

    fn with_key(mut self, key: String) -> Error {
        self.key = Some(key);
        self
    }
}

type Response = Result<Vec<u8>, Error>;

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| {
        br#"{"ok":false,"error":"internal","message":"cannot serialise the response"}"#.to_vec()
    })
}

fn dispatch(req: Request) -> Response {
    match req.op.as_str() {
        "put" => {
            let key = required(req.key, "key")?;
            let data = required(req.data_base64, "data_base64")?;
            put(key, &data)
        }
        "get" => get(required(req.key, "key")?),
        "list" => list(req.prefix, req.after, req.limit),
        "delete" => delete(required(req.key, "key")?),
        "clear" => clear(),
        "stats" => stats(),
        other => Err(Error::new(
            "unknown_op",
            format!("unknown op {other:?}; expected put, get, list, delete, clear or stats"),
        )),
    }
}

fn required(field: Option<String>, name: &str) -> Result<String, Error> {
    field.ok_or_else(|| Error::new("bad_request", format!("missing field `{name}`")))
}

/// Checks a key, a `list` prefix or an `after` cursor: 1..=200 UTF-8 bytes (prefix and cursor
/// may be empty).
fn check_key(what: &str, key: &str, may_be_empty: bool) -> Result<(), Error> {
    if key.is_empty() && !may_be_empty {
        return Err(Error::new("bad_key", format!("{what} must not be empty")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::new(
            "bad_key",
            format!(
                "{what} is {} bytes; the maximum is {MAX_KEY_BYTES}",
                key.len()
            ),
        ));
    }
    Ok(())
}

fn data_key(key: &str) -> Vec<u8> {
    [DATA_PREFIX, key.as_bytes()].concat()
}

/// The entry count and total value size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counters {
    count: u64,
    bytes: u64,
}

fn corrupt(message: String) -> Error {
    Error::new("corrupt_state", message)
}

fn read_counter(key: &[u8]) -> Result<u64, Error> {
    match state::get(key) {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| {
                let name = String::from_utf8_lossy(key);
                corrupt(format!("counter {name} has {} bytes, not 8", v.len()))
            }),
    }
}

impl Counters {
    fn read() -> Result<Counters, Error> {
        Ok(Counters {
            count: read_counter(COUNT_KEY)?,
            bytes: read_counter(BYTES_KEY)?,
        })
    }

    /// Stores `self` if it differs from `old`: both counters when the store is non-empty,
    /// neither when it is empty.
    fn write(self, old: Counters) {
        if self == old {
            return;
        }
        if self.count == 0 {
            state::del(COUNT_KEY);
            state::del(BYTES_KEY);
        } else {
            state::put(COUNT_KEY, &self.count.to_le_bytes());
            state::put(BYTES_KEY, &self.bytes.to_le_bytes());
        }
    }

    /// The counters after replacing a value of `old_len` (`None`: absent) by one of `new_len`
    /// (`None`: deleted).
    fn replace(self, old_len: Option<usize>, new_len: Option<usize>) -> Result<Counters, Error> {
        let inconsistent = || corrupt(format!("counters {self:?} do not match the entries"));
        let mut next = self;
        if let Some(old) = old_len {
            next.count = next.count.checked_sub(1).ok_or_else(inconsistent)?;
            next.bytes = next
                .bytes
                .checked_sub(old as u64)
                .ok_or_else(inconsistent)?;
        }
        if let Some(new) = new_len {
            next.count += 1;
            next.bytes += new as u64;
        }
        Ok(next)
    }
}

#[derive(Serialize)]
struct PutResponse {
    ok: bool,
    key: String,
    size: usize,
    created: bool,
}

fn put(key: String, data_base64: &str) -> Response {
    check_key("key", &key, false)?;
    let data = BASE64
        .decode(data_base64)
        .map_err(|e| Error::new("bad_base64", format!("data_base64: {e}")).with_key(key.clone()))?;
    if data.len() > MAX_VALUE_BYTES {
        let message = format!(
            "value is {} bytes; the maximum is {MAX_VALUE_BYTES}",
            data.len()
        );
        return Err(Error::new("value_too_large", message).with_key(key));
    }
    let skey = data_key(&key);
    let counters = Counters::read()?;
    let old_len = state::len(&skey);
    let next = counters.replace(old_len, Some(data.len()))?;
    state::put(&skey, &data);
    next.write(counters);
    Ok(to_json(&PutResponse {
        ok: true,
        key,
        size: data.len(),
        created: old_len.is_none(),
    }))
}

#[derive(Serialize)]
struct GetResponse {
    ok: bool,
    key: String,
    data_base64: String,
    size: usize,
}

fn get(key: String) -> Response {
    check_key("key", &key, false)?;
    match state::get(&data_key(&key)) {
        Some(data) => Ok(to_json(&GetResponse {
            ok: true,
            data_base64: BASE64.encode(&data),
            size: data.len(),
            key,
        })),
        None => Err(Error::new("not_found", "no value is stored under this key").with_key(key)),
    }
}

#[derive(Serialize)]
struct ListResponse {
    ok: bool,
    keys: Vec<String>,
    next: Option<String>,
}

fn list(prefix: Option<String>, after: Option<String>, limit: Option<u64>) -> Response {
    let prefix = prefix.unwrap_or_default();
    check_key("prefix", &prefix, true)?;
    let after = after.filter(|a| !a.is_empty());
    if let Some(after) = &after {
        check_key("after", after, true)?;
    }
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 {
        return Err(Error::new("bad_request", "limit must be at least 1"));
    }
    let limit = limit.min(MAX_LIMIT) as usize;

    let full_prefix = data_key(&prefix);
    let mut cursor = after.as_deref().map(data_key);
    let mut keys = Vec::new();
    let mut exhausted = false;
    while keys.len() < limit {
        match state::next_key(&full_prefix, cursor.as_deref()) {
            Some(k) => {
                keys.push(String::from_utf8_lossy(&k[DATA_PREFIX.len()..]).into_owned());
                cursor = Some(k);
            }
            None => {
                exhausted = true;
                break;
            }
        }
    }
    // A cursor only when another key really follows.
    let more = !exhausted && state::next_key(&full_prefix, cursor.as_deref()).is_some();
    let next = if more { keys.last().cloned() } else { None };
    Ok(to_json(&ListResponse {
        ok: true,
        keys,
        next,
    }))
}

#[derive(Serialize)]
struct DeleteResponse {
    ok: bool,
    key: String,
    deleted: bool,
}

fn delete(key: String) -> Response {
    check_key("key", &key, false)?;
    let skey = data_key(&key);
    let old_len = state::len(&skey);
    if old_len.is_some() {
        let counters = Counters::read()?;
        let next = counters.replace(old_len, None)?;
        state::del(&skey);
        next.write(counters);
    }
    Ok(to_json(&DeleteResponse {
        ok: true,
        key,
        deleted: old_len.is_some(),
    }))
}

#[derive(Serialize)]
struct ClearResponse {
    ok: bool,
    deleted: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    more: bool,
}

fn clear() -> Response {
    let counters = Counters::read()?;
    // Decide everything before writing: an error response must not come with deletions.
    let mut batch = Vec::new();
    let mut more = false;
    for k in state::keys(DATA_PREFIX) {
        if batch.len() as u64 == CLEAR_BATCH {
            more = true;
            break;
        }
        let len = state::len(&k).unwrap_or(0);
        batch.push((k, len));
    }
    let next = if more {
        batch
            .iter()
            .try_fold(counters, |c, (_, len)| c.replace(Some(*len), None))?
    } else {
        // The store ends empty whatever the counters said.
        Counters { count: 0, bytes: 0 }
    };
    for (k, _) in &batch {
        state::del(k);
    }
    next.write(counters);
    Ok(to_json(&ClearResponse {
        ok: true,
        deleted: batch.len() as u64,
        more,
    }))
}

#[derive(Serialize)]
struct StatsResponse {
    ok: bool,
    count: u64,
    total_bytes: u64,
}

fn stats() -> Response {
    let c = Counters::read()?;
    Ok(to_json(&StatsResponse {
        ok: true,
        count: c.count,
        total_bytes: c.bytes,
    }))
}

#[cfg(test)]
mod tests;
