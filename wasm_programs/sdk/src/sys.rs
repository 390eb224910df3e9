//! Raw host imports (module `env`), exactly as listed in `docs/ABI.md`, version 1.
//!
//! All pointers and lengths are `i32` offsets into the exported `memory`; a pair that falls
//! outside memory traps the call (`host_bad_pointer`). Functions that fill a buffer return `i64`:
//! `>= 0` bytes written, `-n` (`1 <= n < 2^32`) buffer too small with `n` bytes needed (nothing
//! written), or [`NOT_FOUND`](crate::NOT_FOUND). Prefer the safe wrappers of the crate root,
//! [`state`](crate::state) and [`blob`](crate::blob).

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// Reads the value of a key as seen by this call into `buf`.
    pub fn onvm_state_get(key_ptr: i32, key_len: i32, buf_ptr: i32, buf_cap: i32) -> i64;

    /// Buffers a write; returns 0. Traps on limit violations and in read-only calls.
    pub fn onvm_state_put(key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32) -> i32;

    /// Buffers a delete; returns 1 if the key existed (as seen by this call), else 0.
    pub fn onvm_state_del(key_ptr: i32, key_len: i32) -> i32;

    /// The smallest key starting with `prefix` and strictly greater than `after`
    /// (`after_len = 0` to start), written to `buf`; `NOT_FOUND` when there is none.
    pub fn onvm_state_next(
        prefix_ptr: i32,
        prefix_len: i32,
        after_ptr: i32,
        after_len: i32,
        buf_ptr: i32,
        buf_cap: i32,
    ) -> i64;

    /// Writes the 32-byte state root the call started from; returns 32.
    pub fn onvm_state_root(buf_ptr: i32) -> i32;

    /// Size of the blob whose 32-byte BLAKE3 hash is at `id_ptr`, or `NOT_FOUND`.
    pub fn onvm_blob_len(id_ptr: i32) -> i64;

    /// Copies up to `buf_cap` bytes of the blob from `offset`; returns the count (0 at or past
    /// the end), or `NOT_FOUND`.
    pub fn onvm_blob_read(id_ptr: i32, offset: i64, buf_ptr: i32, buf_cap: i32) -> i64;

    /// Appends a (lossy) UTF-8 line to the call's log.
    pub fn onvm_log(ptr: i32, len: i32);

    /// Writes the 32-byte caller id; returns 32.
    pub fn onvm_caller(buf_ptr: i32) -> i32;

    /// Writes 48 bytes: `height: u64 LE`, `timestamp_ms: u64 LE`, `seed: [u8; 32]`; returns 48.
    pub fn onvm_context(buf_ptr: i32) -> i32;

    /// Ends the call as a failure (`guest_abort`) with the given message. Never returns.
    pub fn onvm_abort(msg_ptr: i32, msg_len: i32);
}
