//! Read-only access to blobs by their 32-byte BLAKE3 id. Only the blobs listed in the program's
//! `blob_refs` are visible; any other id reads as absent.

use alloc::vec::Vec;
use core::mem::MaybeUninit;

use crate::{Ret, host};

/// The size of blob `id`, or `None` if it is not visible.
pub fn len(id: &[u8; 32]) -> Option<u64> {
    match host::blob_len(id) {
        r if r >= 0 => Some(r as u64),
        crate::NOT_FOUND => None,
        _ => crate::host_bug("onvm_blob_len"),
    }
}

/// Copies up to `buf.len()` bytes of blob `id` starting at `offset` into `buf`; returns the
/// count (0 at or past the end), or `None` if the blob is not visible.
pub fn read(id: &[u8; 32], offset: u64, buf: &mut [u8]) -> Option<usize> {
    let Ok(offset) = i64::try_from(offset) else {
        // Past the end of any blob.
        return len(id).map(|_| 0);
    };
    // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and the host only writes
    // initialised bytes, so `buf` stays initialised.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    read_uninit(id, offset, uninit)
}

fn read_uninit(id: &[u8; 32], offset: i64, buf: &mut [MaybeUninit<u8>]) -> Option<usize> {
    let cap = buf.len();
    match Ret::decode(host::blob_read(id, offset, buf), cap, "onvm_blob_read") {
        Ret::Written(n) => Some(n),
        Ret::NotFound => None,
        Ret::TooSmall(_) => crate::host_bug("onvm_blob_read"),
    }
}

/// The whole content of blob `id`, or `None` if it is not visible.
pub fn read_all(id: &[u8; 32]) -> Option<Vec<u8>> {
    let size = len(id)?;
    let Ok(size) = usize::try_from(size) else {
        crate::abort("onvm-sdk: blob does not fit in memory")
    };
    let mut out: Vec<u8> = Vec::with_capacity(size);
    while out.len() < size {
        let done = out.len();
        let spare = &mut out.spare_capacity_mut()[..size - done];
        let n = read_uninit(id, done as i64, spare)?;
        if n == 0 {
            crate::abort("onvm-sdk: blob shorter than its length")
        }
        // SAFETY: the host initialised `n` more bytes right after the first `done`.
        unsafe { out.set_len(done + n) };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock;

    #[test]
    fn blobs() {
        mock::reset();
        let id = [1u8; 32];
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        mock::insert_blob(id, data.clone());
        assert_eq!(len(&id), Some(70_000));
        assert_eq!(len(&[2; 32]), None);
        let mut buf = [0u8; 4];
        assert_eq!(read(&id, 1, &mut buf), Some(4));
        assert_eq!(buf, [1, 2, 3, 4]);
        assert_eq!(read(&id, 69_998, &mut buf), Some(2));
        assert_eq!(read(&id, 70_000, &mut buf), Some(0));
        assert_eq!(read(&id, u64::MAX, &mut buf), Some(0));
        assert_eq!(read(&[2; 32], 0, &mut buf), None);
        assert_eq!(read_all(&id), Some(data));
        assert_eq!(read_all(&[2; 32]), None);
        mock::insert_blob([3; 32], Vec::new());
        assert_eq!(read_all(&[3; 32]), Some(Vec::new()));
    }
}
