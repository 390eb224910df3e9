//! In-memory host for native unit tests (every target except wasm32).
//!
//! Each thread has its own [`MockHost`] (the test harness runs each test on its own thread).
//! It follows `docs/ABI.md` and the node's defaults: the same return conventions, key limit
//! (1..=256 bytes), value limit (1 MiB), limit on distinct keys written per call (10 000,
//! `vm.max_writes_per_call`) and read-only rule. Where the real host would end the call with a
//! trap, the mock panics with `trap <kind>: <message>`; [`abort`](crate::abort) panics with
//! `guest_abort: <message>`. Writes apply immediately; [`begin_call`] marks a call boundary for
//! the per-call write limit.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::Context;

/// Key length limit (`vm.max_key_bytes`, default).
pub const MAX_KEY_BYTES: usize = 256;
/// Value length limit (`vm.max_value_bytes`, default).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Distinct keys a call may write (`vm.max_writes_per_call`, default).
pub const MAX_WRITES_PER_CALL: usize = 10_000;

/// The mock host's whole state. Mutate it with [`with`].
#[derive(Clone, Debug)]
pub struct MockHost {
    /// The program's key/value state.
    pub state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Visible blobs by id (the id is not checked against the content).
    pub blobs: BTreeMap<[u8; 32], Vec<u8>>,
    /// Returned by [`caller`](crate::caller).
    pub caller: [u8; 32],
    /// Returned by [`context`](crate::context).
    pub context: Context,
    /// Returned by [`state::root`](crate::state::root).
    pub root: [u8; 32],
    /// Lines passed to [`log`](crate::log).
    pub logs: Vec<String>,
    /// When true, state writes trap (`read_only`) like in a read-only call.
    pub read_only: bool,
    /// Distinct keys written (put or deleted) since the last [`begin_call`].
    pub written: BTreeSet<Vec<u8>>,
    /// A write of one more distinct key traps (`host_limit`).
    pub max_writes_per_call: usize,
}

impl Default for MockHost {
    fn default() -> Self {
        MockHost {
            state: BTreeMap::new(),
            blobs: BTreeMap::new(),
            caller: [0; 32],
            context: Context::default(),
            root: [0; 32],
            logs: Vec::new(),
            read_only: false,
            written: BTreeSet::new(),
            max_writes_per_call: MAX_WRITES_PER_CALL,
        }
    }
}

std::thread_local! {
    static HOST: RefCell<MockHost> = RefCell::new(MockHost::default());
}

/// Resets this thread's mock host to empty state and default context.
pub fn reset() {
    with(|h| *h = MockHost::default());
}

/// Starts a new call: forgets the keys written so far (for the per-call write limit).
pub fn begin_call() {
    with(|h| h.written.clear());
}

/// Runs `f` with this thread's mock host.
pub fn with<R>(f: impl FnOnce(&mut MockHost) -> R) -> R {
    HOST.with(|h| f(&mut h.borrow_mut()))
}

/// A copy of the current state.
pub fn state() -> BTreeMap<Vec<u8>, Vec<u8>> {
    with(|h| h.state.clone())
}

/// Makes the blob `data` visible under `id`.
pub fn insert_blob(id: [u8; 32], data: Vec<u8>) {
    with(|h| {
        h.blobs.insert(id, data);
    });
}

/// Takes the log lines written so far.
pub fn take_logs() -> Vec<String> {
    with(|h| core::mem::take(&mut h.logs))
}

fn trap(kind: &str, msg: &str) -> ! {
    panic!("trap {kind}: {msg}")
}

/// The mock side of the slice-level host layer (see `host.rs`).
pub(crate) mod imp {
    use super::*;
    use core::mem::MaybeUninit;
    use core::ops::Bound;

    fn fill(buf: &mut [MaybeUninit<u8>], data: &[u8]) -> i64 {
        if data.len() > buf.len() {
            return -(data.len() as i64);
        }
        for (d, s) in buf.iter_mut().zip(data) {
            d.write(*s);
        }
        data.len() as i64
    }

    fn check_write(h: &mut MockHost, func: &str, key: &[u8]) {
        if h.read_only {
            trap("read_only", func)
        }
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            trap(
                "host_limit",
                &std::format!("{func}: key of {} bytes", key.len()),
            )
        }
        if !h.written.contains(key) {
            if h.written.len() >= h.max_writes_per_call {
                let msg = std::format!("{func}: more than {} keys written", h.max_writes_per_call);
                trap("host_limit", &msg)
            }
            h.written.insert(key.to_vec());
        }
    }

    pub(crate) fn state_get(key: &[u8], buf: &mut [MaybeUninit<u8>]) -> i64 {
        with(|h| match h.state.get(key) {
            Some(v) => fill(buf, v),
            None => crate::NOT_FOUND,
        })
    }

    pub(crate) fn state_put(key: &[u8], value: &[u8]) {
        with(|h| {
            check_write(h, "onvm_state_put", key);
            if value.len() > MAX_VALUE_BYTES {
                let msg = std::format!("onvm_state_put: value of {} bytes", value.len());
                trap("host_limit", &msg)
            }
            h.state.insert(key.to_vec(), value.to_vec());
        })
    }

    pub(crate) fn state_del(key: &[u8]) -> bool {
        with(|h| {
            check_write(h, "onvm_state_del", key);
            h.state.remove(key).is_some()
        })
    }

    pub(crate) fn state_next(prefix: &[u8], after: &[u8], buf: &mut [MaybeUninit<u8>]) -> i64 {
        with(|h| {
            let start = if !after.is_empty() && after >= prefix {
                Bound::Excluded(after)
            } else {
                Bound::Included(prefix)
            };
            let next = h
                .state
                .range::<[u8], _>((start, Bound::Unbounded))
                .next()
                .map(|(k, _)| k)
                .filter(|k| k.starts_with(prefix));
            match next {
                Some(k) => fill(buf, k),
                None => crate::NOT_FOUND,
            }
        })
    }

    pub(crate) fn state_root(out: &mut [u8; 32]) {
        with(|h| *out = h.root)
    }

    pub(crate) fn blob_len(id: &[u8; 32]) -> i64 {
        with(|h| match h.blobs.get(id) {
            Some(b) => b.len() as i64,
            None => crate::NOT_FOUND,
        })
    }

    pub(crate) fn blob_read(id: &[u8; 32], offset: i64, buf: &mut [MaybeUninit<u8>]) -> i64 {
        with(|h| match h.blobs.get(id) {
            Some(b) => {
                if offset < 0 {
                    trap("host_bad_pointer", "onvm_blob_read: negative offset")
                }
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                let n = (b.len() - start).min(buf.len());
                fill(&mut buf[..n], &b[start..start + n])
            }
            None => crate::NOT_FOUND,
        })
    }

    pub(crate) fn log(msg: &[u8]) {
        with(|h| h.logs.push(String::from_utf8_lossy(msg).into_owned()))
    }

    pub(crate) fn caller(out: &mut [u8; 32]) {
        with(|h| *out = h.caller)
    }

    pub(crate) fn context(out: &mut [u8; 48]) {
        with(|h| *out = h.context.to_bytes())
    }

    pub(crate) fn abort(msg: &[u8]) -> ! {
        panic!("guest_abort: {}", String::from_utf8_lossy(msg))
    }
}
