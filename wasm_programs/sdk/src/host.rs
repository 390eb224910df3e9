//! Slice-level host layer shared by the safe wrappers: on wasm32 it calls the raw imports of
//! [`crate::sys`]; elsewhere the in-memory [`crate::mock`] host. Both keep the ABI's return
//! conventions, so the wrappers (and their retry logic) are the same code on every target.

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::mock::imp::*;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::*;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use crate::sys;
    use core::mem::MaybeUninit;

    fn ptr(s: &[u8]) -> i32 {
        s.as_ptr() as usize as i32
    }
    fn len(s: &[u8]) -> i32 {
        s.len() as i32
    }
    fn mptr<T>(s: &mut [T]) -> i32 {
        s.as_mut_ptr() as usize as i32
    }
    fn mlen<T>(s: &[T]) -> i32 {
        s.len() as i32
    }

    pub(crate) fn state_get(key: &[u8], buf: &mut [MaybeUninit<u8>]) -> i64 {
        // SAFETY: every (ptr, len) pair describes a live slice; the host writes only inside buf.
        unsafe { sys::onvm_state_get(ptr(key), len(key), mptr(buf), mlen(buf)) }
    }

    pub(crate) fn state_put(key: &[u8], value: &[u8]) {
        // SAFETY: as above; the host only reads.
        unsafe { sys::onvm_state_put(ptr(key), len(key), ptr(value), len(value)) };
    }

    pub(crate) fn state_del(key: &[u8]) -> bool {
        // SAFETY: as above.
        unsafe { sys::onvm_state_del(ptr(key), len(key)) != 0 }
    }

    pub(crate) fn state_next(prefix: &[u8], after: &[u8], buf: &mut [MaybeUninit<u8>]) -> i64 {
        // SAFETY: as above.
        unsafe {
            sys::onvm_state_next(
                ptr(prefix),
                len(prefix),
                ptr(after),
                len(after),
                mptr(buf),
                mlen(buf),
            )
        }
    }

    pub(crate) fn state_root(out: &mut [u8; 32]) {
        // SAFETY: the host writes exactly 32 bytes.
        unsafe { sys::onvm_state_root(mptr(out)) };
    }

    pub(crate) fn blob_len(id: &[u8; 32]) -> i64 {
        // SAFETY: the host reads 32 bytes.
        unsafe { sys::onvm_blob_len(ptr(id)) }
    }

    pub(crate) fn blob_read(id: &[u8; 32], offset: i64, buf: &mut [MaybeUninit<u8>]) -> i64 {
        // SAFETY: as above.
        unsafe { sys::onvm_blob_read(ptr(id), offset, mptr(buf), mlen(buf)) }
    }

    pub(crate) fn log(msg: &[u8]) {
        // SAFETY: as above.
        unsafe { sys::onvm_log(ptr(msg), len(msg)) }
    }

    pub(crate) fn caller(out: &mut [u8; 32]) {
        // SAFETY: the host writes exactly 32 bytes.
        unsafe { sys::onvm_caller(mptr(out)) };
    }

    pub(crate) fn context(out: &mut [u8; 48]) {
        // SAFETY: the host writes exactly 48 bytes.
        unsafe { sys::onvm_context(mptr(out)) };
    }

    pub(crate) fn abort(msg: &[u8]) -> ! {
        // SAFETY: as above.
        unsafe { sys::onvm_abort(ptr(msg), len(msg)) };
        // `onvm_abort` never returns.
        core::arch::wasm32::unreachable()
    }
}
