//! The program's key/value state, as seen by this call (committed state plus this call's own
//! earlier writes). Keys are ordered bytewise. Writes are buffered by the host and applied only if
//! the call ends with outcome `ok` and is not read-only.
//!
//! Host limits (defaults): keys 1..=256 bytes, values at most 1 MiB; a violation traps the call
//! (`host_limit`), as does any write in a read-only call (`read_only`).

use alloc::vec::Vec;

use crate::{Ret, host};

/// First buffer size tried by [`get`] and [`next_key`]; larger values cost one more host call.
const INITIAL_CAPACITY: usize = 256;

/// Calls `f` with the spare capacity of a growing buffer until the result fits.
fn read_with(
    what: &str,
    mut f: impl FnMut(&mut [core::mem::MaybeUninit<u8>]) -> i64,
) -> Option<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(INITIAL_CAPACITY);
    loop {
        let spare = buf.spare_capacity_mut();
        let cap = spare.len();
        match Ret::decode(f(spare), cap, what) {
            Ret::Written(n) => {
                // SAFETY: the host initialised the first `n <= cap` bytes of the spare capacity.
                unsafe { buf.set_len(n) };
                return Some(buf);
            }
            Ret::TooSmall(needed) => buf.reserve_exact(needed),
            Ret::NotFound => return None,
        }
    }
}

/// The value of `key`, or `None` if it has none.
pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    read_with("onvm_state_get", |buf| host::state_get(key, buf))
}

/// The length of the value of `key` without copying it, or `None` if it has none.
pub fn len(key: &[u8]) -> Option<usize> {
    match Ret::decode(host::state_get(key, &mut []), 0, "onvm_state_get") {
        Ret::Written(n) | Ret::TooSmall(n) => Some(n),
        Ret::NotFound => None,
    }
}

/// Whether `key` has a value.
pub fn contains(key: &[u8]) -> bool {
    len(key).is_some()
}

/// Sets the value of `key` (buffered until the call ends).
pub fn put(key: &[u8], value: &[u8]) {
    host::state_put(key, value)
}

/// Deletes `key`; returns whether it existed.
pub fn del(key: &[u8]) -> bool {
    host::state_del(key)
}

/// The smallest key that starts with `prefix` and is strictly greater than `after` (from the
/// first key with `prefix` when `after` is `None`), or `None` when there is none.
pub fn next_key(prefix: &[u8], after: Option<&[u8]>) -> Option<Vec<u8>> {
    let after = after.unwrap_or(&[]);
    read_with("onvm_state_next", |buf| {
        host::state_next(prefix, after, buf)
    })
}

/// Iterates over the keys starting with `prefix`, in bytewise order.
///
/// Each step asks the host for the next key after the previous one, so the iteration sees the
/// call's own writes: deleting the key just returned (as a "clear" does) is fine.
pub fn keys(prefix: &[u8]) -> Keys {
    Keys {
        prefix: prefix.to_vec(),
        last: None,
        done: false,
    }
}

/// Iterator returned by [`keys`].
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: Vec<u8>,
    last: Option<Vec<u8>>,
    done: bool,
}

impl Iterator for Keys {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        match next_key(&self.prefix, self.last.as_deref()) {
            Some(k) => {
                self.last = Some(k.clone());
                Some(k)
            }
            None => {
                self.done = true;
                None
            }
        }
    }
}

/// The 32-byte sparse-Merkle state root the call started from (it does not reflect this call's
/// own writes).
pub fn root() -> [u8; 32] {
    let mut root = [0u8; 32];
    host::state_root(&mut root);
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock;
    use alloc::vec;

    #[test]
    fn get_put_del() {
        mock::reset();
        assert_eq!(get(b"a"), None);
        assert_eq!(len(b"a"), None);
        put(b"a", b"1");
        put(b"e", b"");
        assert_eq!(get(b"a"), Some(b"1".to_vec()));
        assert_eq!(len(b"a"), Some(1));
        assert_eq!(get(b"e"), Some(vec![]));
        assert_eq!(len(b"e"), Some(0));
        assert!(contains(b"e"));
        assert!(del(b"a"));
        assert!(!del(b"a"));
        assert_eq!(get(b"a"), None);
    }

    #[test]
    fn get_retries_with_a_bigger_buffer() {
        mock::reset();
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        put(b"big", &big);
        assert_eq!(get(b"big"), Some(big.clone()));
        assert_eq!(len(b"big"), Some(100_000));
        let exact = vec![7u8; INITIAL_CAPACITY];
        put(b"exact", &exact);
        assert_eq!(get(b"exact"), Some(exact));
    }

    #[test]
    fn next_key_and_keys() {
        mock::reset();
        for k in [&b"a"[..], b"b/1", b"b/2", b"b/3\xff", b"c"] {
            put(k, b"v");
        }
        assert_eq!(next_key(b"b/", None), Some(b"b/1".to_vec()));
        assert_eq!(next_key(b"b/", Some(b"b/1")), Some(b"b/2".to_vec()));
        assert_eq!(next_key(b"b/", Some(b"a")), Some(b"b/1".to_vec()));
        assert_eq!(next_key(b"b/", Some(b"b/3\xff")), None);
        assert_eq!(next_key(b"x", None), None);
        let all: Vec<_> = keys(b"").collect();
        assert_eq!(all.len(), 5);
        let b: Vec<_> = keys(b"b/").collect();
        assert_eq!(b, [b"b/1".to_vec(), b"b/2".to_vec(), b"b/3\xff".to_vec()]);
        // Deleting while iterating.
        let mut n = 0;
        for k in keys(b"b/") {
            assert!(del(&k));
            n += 1;
        }
        assert_eq!(n, 3);
        assert_eq!(mock::state().len(), 2);
        let long_key = vec![b'k'; 256];
        put(&long_key, b"v");
        assert_eq!(next_key(b"k", None), Some(long_key));
    }

    #[test]
    fn root_comes_from_the_host() {
        mock::reset();
        mock::with(|h| h.root = [5; 32]);
        assert_eq!(root(), [5; 32]);
    }

    #[test]
    #[should_panic(expected = "trap read_only")]
    fn read_only_calls_cannot_write() {
        mock::reset();
        mock::with(|h| h.read_only = true);
        put(b"a", b"b");
    }

    #[test]
    fn writes_per_call_are_limited() {
        mock::reset();
        mock::with(|h| h.max_writes_per_call = 3);
        put(b"a", b"1");
        put(b"a", b"2");
        assert!(del(b"a"));
        put(b"b", b"1");
        put(b"c", b"1");
        mock::begin_call();
        put(b"d", b"1");
        let r = std::panic::catch_unwind(|| {
            put(b"e", b"1");
            put(b"f", b"1");
            put(b"g", b"1");
        });
        assert!(r.is_err());
    }

    #[test]
    #[should_panic(expected = "trap host_limit")]
    fn empty_keys_trap() {
        mock::reset();
        put(b"", b"b");
    }
}
