//! `echo`: returns its input with ASCII letters uppercased; every other byte is unchanged.
//!
//! The smallest possible ONVM program: `no_std`, no allocator and no SDK. It does not export
//! `onvm_alloc`, so the host places the input in freshly grown pages; the program uppercases it
//! in place and returns the same region through the packed entrypoint shape
//! `onvm_main(ptr: i32, len: i32) -> i64` = `(out_ptr << 32) | out_len`.

#![cfg_attr(target_arch = "wasm32", no_std)]

/// Uppercases the ASCII letters of `data` in place.
pub fn uppercase_in_place(data: &mut [u8]) {
    data.make_ascii_uppercase();
}

/// Packs an output location: `(out_ptr << 32) | out_len`, both unsigned 32-bit.
pub const fn pack(out_ptr: u32, out_len: u32) -> i64 {
    (((out_ptr as u64) << 32) | out_len as u64) as i64
}

/// The entrypoint: uppercases the input in place and returns it.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub extern "C" fn onvm_main(ptr: i32, len: i32) -> i64 {
    let (ptr, len) = (ptr as u32, len as u32);
    if len > 0 {
        // SAFETY: the host copied `len` input bytes to `ptr` in this module's memory and nothing
        // else refers to them during the call.
        let input =
            unsafe { core::slice::from_raw_parts_mut(ptr as usize as *mut u8, len as usize) };
        uppercase_in_place(input);
    }
    pack(ptr, len)
}

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples documented in README.md: `examples/<name>` → `examples/<name>.expected`.
    const EXAMPLES: &[(&[u8], &[u8])] = &[
        (
            include_bytes!("../examples/hello.txt"),
            include_bytes!("../examples/hello.txt.expected"),
        ),
        (
            include_bytes!("../examples/mixed.txt"),
            include_bytes!("../examples/mixed.txt.expected"),
        ),
    ];

    #[test]
    fn examples() {
        for (input, expected) in EXAMPLES {
            let mut data = input.to_vec();
            uppercase_in_place(&mut data);
            assert_eq!(&data, expected);
        }
    }

    #[test]
    fn readme_documents_the_examples() {
        let readme = include_str!("../README.md");
        for (_, expected) in EXAMPLES {
            let expected = core::str::from_utf8(expected).unwrap();
            assert!(readme.contains(expected), "README.md lacks {expected:?}");
        }
    }

    #[test]
    fn non_ascii_is_untouched() {
        let mut data = "grüße, 123 \u{0}\u{ff}".as_bytes().to_vec();
        uppercase_in_place(&mut data);
        assert_eq!(data, "GRüßE, 123 \u{0}\u{ff}".as_bytes());
        assert_eq!(pack(0x0002_0000, 3), 0x0002_0000_0000_0003);
    }
}
