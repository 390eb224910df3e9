//! Guest SDK for ONVM programs.
//!
//! An ONVM program is a `wasm32-unknown-unknown` module that exports `memory` and an entrypoint
//! and imports only the host functions of `docs/ABI.md` (module `env`, ABI version 1). This crate
//! gives a program:
//!
//! - `sys`: the raw `extern "C"` declarations of every host import (wasm32 only);
//! - safe wrappers: [`state`] (per-program key/value state), [`blob`] (read-only blobs),
//!   [`log`], [`caller`], [`context`] and [`abort`];
//! - [`entry!`]: generates the entrypoint export from `fn(&[u8]) -> Vec<u8>`;
//! - `onvm_alloc`, the input allocator export, behind the default feature `alloc-export`.
//!
//! ```no_run
//! fn handle(input: &[u8]) -> Vec<u8> {
//!     let n = onvm_sdk::state::get(b"n").map_or(0, |v| v.len());
//!     onvm_sdk::logf!("{} input bytes, {} stored", input.len(), n);
//!     onvm_sdk::state::put(b"n", input);
//!     input.to_vec()
//! }
//! onvm_sdk::entry!(handle);
//! ```
//!
//! The crate is `no_std` + `alloc` and defines neither a `#[global_allocator]` nor a
//! `#[panic_handler]`: a program built with `std` gets both from `std`; a `no_std` program must
//! provide them itself.
//!
//! Off wasm32 (for native unit tests of a program's logic) the host functions are served by
//! `mock`, an in-memory host with the same return conventions and limits (not on wasm32).

#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

pub mod blob;
mod host;
#[cfg(not(target_arch = "wasm32"))]
pub mod mock;
pub mod state;
#[cfg(target_arch = "wasm32")]
pub mod sys;

/// The ABI version this SDK implements (`docs/ABI.md`).
pub const ABI_VERSION: u32 = 1;

/// `ONVM_NOT_FOUND = -(2^32)`: the "no such key / blob / next key" return value.
pub const NOT_FOUND: i64 = -(1i64 << 32);

/// Appends a UTF-8 line to the call's log (the host keeps at most `vm.max_log_bytes` per call).
pub fn log(msg: &str) {
    host::log(msg.as_bytes());
}

/// Formats its arguments like `format!` and passes the result to [`log`].
#[macro_export]
macro_rules! logf {
    ($($arg:tt)*) => {
        $crate::log(&$crate::__private::format!($($arg)*))
    };
}

/// The 32-byte caller id: the ed25519 public key of the node that accepted the call.
pub fn caller() -> [u8; 32] {
    let mut id = [0u8; 32];
    host::caller(&mut id);
    id
}

/// The call's deterministic context, identical on every node that executes the call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Context {
    /// Block height the call executes at.
    pub height: u64,
    /// Timestamp in milliseconds (the only clock a program has).
    pub timestamp_ms: u64,
    /// 32 bytes of deterministic randomness (the only randomness a program has).
    pub seed: [u8; 32],
}

impl Context {
    /// The 48-byte wire form written by `onvm_context`: height LE, timestamp_ms LE, seed.
    pub fn to_bytes(&self) -> [u8; 48] {
        let mut b = [0u8; 48];
        b[..8].copy_from_slice(&self.height.to_le_bytes());
        b[8..16].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        b[16..].copy_from_slice(&self.seed);
        b
    }

    /// Parses the 48-byte wire form.
    pub fn from_bytes(b: &[u8; 48]) -> Context {
        let mut height = [0u8; 8];
        let mut timestamp_ms = [0u8; 8];
        let mut seed = [0u8; 32];
        height.copy_from_slice(&b[..8]);
        timestamp_ms.copy_from_slice(&b[8..16]);
        seed.copy_from_slice(&b[16..]);
        Context {
            height: u64::from_le_bytes(height),
            timestamp_ms: u64::from_le_bytes(timestamp_ms),
            seed,
        }
    }
}

/// Returns the call's [`Context`].
pub fn context() -> Context {
    let mut b = [0u8; 48];
    host::context(&mut b);
    Context::from_bytes(&b)
}

/// Ends the call as a failure (outcome `trap`, kind `guest_abort`) with `msg`. Nothing the call
/// wrote to state is kept. Off wasm32 (tests) this panics with `guest_abort: <msg>`.
pub fn abort(msg: &str) -> ! {
    host::abort(msg.as_bytes())
}

/// Generates an entrypoint export from a handler `fn(&[u8]) -> Vec<u8>`.
///
/// `entry!(handler)` exports `onvm_main`; `entry!(handler as name)` exports `name` instead (a
/// program may have several entrypoints). The export has the ABI's *packed* shape
/// `(ptr: i32, len: i32) -> i64`: the handler's output `Vec` is leaked and returned as
/// `(out_ptr << 32) | out_len`, so the host can copy it after the call.
///
/// The export is generated on wasm32 only; on other targets the macro just type-checks the
/// handler, so the program's logic can be unit-tested natively.
#[macro_export]
macro_rules! entry {
    ($handler:path as $name:ident) => {
        const _: fn(&[u8]) -> $crate::__private::Vec<u8> = $handler;

        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(ptr: i32, len: i32) -> i64 {
            // SAFETY: the host placed `len` input bytes at `ptr` (ABI calling convention, step 1);
            // nothing else refers to them during the call.
            let input = unsafe { $crate::__private::input(ptr, len) };
            $crate::__private::output($handler(input))
        }
    };
    ($handler:path) => {
        $crate::entry!($handler as onvm_main);
    };
}

/// Implementation details of the macros. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use alloc::format;
    pub use alloc::vec::Vec;

    /// The input slice the host placed at `(ptr, len)`.
    ///
    /// # Safety
    /// `(ptr, len)` must be the input region handed to the entrypoint by the host.
    pub unsafe fn input(ptr: i32, len: i32) -> &'static [u8] {
        if len <= 0 {
            return &[];
        }
        // SAFETY: guaranteed by the caller; both values are unsigned 32-bit offsets.
        unsafe {
            core::slice::from_raw_parts(ptr as u32 as usize as *const u8, len as u32 as usize)
        }
    }

    /// Leaks `out` and packs its location as `(out_ptr << 32) | out_len`.
    pub fn output(out: Vec<u8>) -> i64 {
        let out = core::mem::ManuallyDrop::new(out);
        crate::pack(out.as_ptr() as usize as u32, out.len() as u32)
    }
}

/// Packs an output location for the *packed* entrypoint shape: `(out_ptr << 32) | out_len`.
pub const fn pack(out_ptr: u32, out_len: u32) -> i64 {
    (((out_ptr as u64) << 32) | out_len as u64) as i64
}

/// `onvm_alloc(len) -> ptr`: the host calls it to get `len` bytes for the call input.
///
/// Never returns 0 for a successful allocation: at least one byte is allocated, so `len == 0`
/// also yields a real, non-zero pointer. Returns 0 (which the host rejects) only for a negative
/// `len` or when the allocator is out of memory. The memory is never freed: an instance serves a
/// single call.
#[cfg(all(feature = "alloc-export", target_arch = "wasm32"))]
#[unsafe(no_mangle)]
pub extern "C" fn onvm_alloc(len: i32) -> i32 {
    if len < 0 {
        return 0;
    }
    let size = (len as usize).max(1);
    match core::alloc::Layout::from_size_align(size, 8) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { alloc::alloc::alloc(layout) as usize as i32 },
        Err(_) => 0,
    }
}

/// Decoded form of the ABI's `i64` buffer-filling return value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ret {
    /// `>= 0`: that many bytes were written.
    Written(usize),
    /// `-n`: the buffer is too small, `n` bytes are needed; nothing was written.
    TooSmall(usize),
    /// `ONVM_NOT_FOUND`.
    NotFound,
}

impl Ret {
    /// Decodes `r` for a call that had a buffer of `cap` bytes; a value no conforming host can
    /// return aborts the call.
    pub(crate) fn decode(r: i64, cap: usize, what: &str) -> Ret {
        if r == NOT_FOUND {
            Ret::NotFound
        } else if r >= 0 {
            if r as u64 > cap as u64 {
                host_bug(what)
            }
            Ret::Written(r as usize)
        } else if r > NOT_FOUND {
            let needed = r.unsigned_abs() as usize;
            if needed <= cap {
                host_bug(what)
            }
            Ret::TooSmall(needed)
        } else {
            host_bug(what)
        }
    }
}

#[cold]
fn host_bug(what: &str) -> ! {
    abort(&alloc::format!(
        "onvm-sdk: invalid return value from {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_layout() {
        assert_eq!(pack(0x0001_0000, 5), 0x0001_0000_0000_0005);
        assert_eq!(pack(u32::MAX, u32::MAX), -1);
        assert_eq!(NOT_FOUND, -4_294_967_296);
    }

    #[test]
    fn decode_return_values() {
        assert_eq!(Ret::decode(3, 8, "t"), Ret::Written(3));
        assert_eq!(Ret::decode(0, 0, "t"), Ret::Written(0));
        assert_eq!(Ret::decode(-9, 8, "t"), Ret::TooSmall(9));
        assert_eq!(
            Ret::decode(-4_294_967_295, 8, "t"),
            Ret::TooSmall(4_294_967_295)
        );
        assert_eq!(Ret::decode(NOT_FOUND, 8, "t"), Ret::NotFound);
    }

    #[test]
    #[should_panic(expected = "guest_abort")]
    fn decode_rejects_oversized_write() {
        Ret::decode(9, 8, "t");
    }

    #[test]
    fn context_roundtrip() {
        let c = Context {
            height: 7,
            timestamp_ms: 1_700_000_000_000,
            seed: [3; 32],
        };
        assert_eq!(Context::from_bytes(&c.to_bytes()), c);
        mock::reset();
        mock::with(|h| h.context = c);
        assert_eq!(context(), c);
    }

    #[test]
    fn log_and_caller() {
        mock::reset();
        mock::with(|h| h.caller = [9; 32]);
        assert_eq!(caller(), [9; 32]);
        log("hello");
        logf!("{} + {} = {}", 1, 2, 3);
        assert_eq!(mock::take_logs(), ["hello", "1 + 2 = 3"]);
    }
}
