//! `job-test`: small deterministic tasks for testing job execution — results, fuel limits,
//! timeouts and cancellation (`stress`), memory limits (`stress` with `memory_mb`), retries
//! (`fail`), exactly-once state writes (`count`) and the call log (`log`).
//!
//! Input `{"task":"…","iterations":N?,"data":S?,"memory_mb":M?}`; see README.md for each task.
//! Invalid input yields `{"ok":false,"error":"bad_request"|"unknown_task"|…,"message":"…"}`.

use std::hint::black_box;

use onvm_sdk::state;
use serde::{Deserialize, Serialize};

/// The modulus of `compute`'s Fibonacci number.
pub const FIB_MODULUS: u64 = 1_000_000_007;
/// `compute`'s iterations when the request has none.
pub const DEFAULT_COMPUTE_ITERATIONS: u64 = 1000;
/// `stress`'s iterations when the request has none.
pub const DEFAULT_STRESS_ITERATIONS: u64 = 100_000;
/// State key of `count`'s counter (u64 little-endian).
pub const RUNS_KEY: &[u8] = b"runs";

onvm_sdk::entry!(handle);

/// The entrypoint's logic: JSON request in, JSON response out.
pub fn handle(input: &[u8]) -> Vec<u8> {
    let result = match serde_json::from_slice::<Request>(input) {
        Ok(req) => run(req),
        Err(e) => Err(Error::new("bad_request", format!("invalid request: {e}"))),
    };
    match result {
        Ok(out) => out,
        Err(e) => to_json(&e),
    }
}

#[derive(Deserialize)]
struct Request {
    task: String,
    iterations: Option<u64>,
    data: Option<String>,
    memory_mb: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Error {
    ok: bool,
    error: &'static str,
    message: String,
}

impl Error {
    fn new(error: &'static str, message: impl Into<String>) -> Error {
        Error {
            ok: false,
            error,
            message: message.into(),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| {
        br#"{"ok":false,"error":"internal","message":"cannot serialise the response"}"#.to_vec()
    })
}

fn run(req: Request) -> Result<Vec<u8>, Error> {
    let data = req.data.unwrap_or_default();
    Ok(match req.task.as_str() {
        "compute" => {
            let iterations = req.iterations.unwrap_or(DEFAULT_COMPUTE_ITERATIONS);
            let (sum_of_squares, fibonacci) = compute(iterations);
            to_json(&ComputeResponse {
                task: "compute",
                iterations,
                result: ComputeResult {
                    sum_of_squares,
                    fibonacci,
                },
            })
        }
        "hash" => {
            let iterations = req.iterations.unwrap_or(1);
            if iterations == 0 {
                return Err(Error::new("bad_request", "hash needs iterations >= 1"));
            }
            to_json(&HashResponse {
                task: "hash",
                iterations,
                hex: hex(&hash_chain(data.as_bytes(), iterations)),
            })
        }
        "transform" => to_json(&TransformResponse {
            task: "transform",
            upper: data.to_uppercase(),
            reversed: data.chars().rev().collect(),
            length: data.len(),
            chars: data.chars().count(),
        }),
        "stress" => {
            let iterations = req.iterations.unwrap_or(DEFAULT_STRESS_ITERATIONS);
            let memory_mb = req.memory_mb.unwrap_or(0);
            let checksum = stress(iterations, memory_mb);
            to_json(&StressResponse {
                task: "stress",
                iterations,
                memory_mb,
                checksum,
            })
        }
        "fail" => onvm_sdk::abort("deliberate failure"),
        "count" => {
            let runs = count()?;
            to_json(&CountResponse {
                task: "count",
                runs,
            })
        }
        "log" => {
            let lines = req.iterations.unwrap_or(1);
            let mut i = 0u64;
            while i < lines {
                onvm_sdk::log(&data);
                i += 1;
            }
            to_json(&LogResponse { task: "log", lines })
        }
        "context" => {
            let c = onvm_sdk::context();
            to_json(&ContextResponse {
                task: "context",
                caller: hex(&onvm_sdk::caller()),
                height: c.height,
                timestamp_ms: c.timestamp_ms,
                seed: hex(&c.seed),
                state_root: hex(&state::root()),
            })
        }
        "blob" => {
            let id = parse_id(&data)
                .ok_or_else(|| Error::new("bad_request", "data must be a 64-hex-digit blob id"))?;
            let content = onvm_sdk::blob::read_all(&id)
                .ok_or_else(|| Error::new("not_found", "the blob is not visible"))?;
            to_json(&BlobResponse {
                task: "blob",
                size: content.len(),
                blake3: hex(blake3::hash(&content).as_bytes()),
            })
        }
        other => {
            return Err(Error::new(
                "unknown_task",
                format!(
                    "unknown task {other:?}; expected compute, hash, transform, stress, fail, \
                     count, log, context or blob"
                ),
            ));
        }
    })
}

#[derive(Serialize)]
struct ComputeResponse {
    task: &'static str,
    iterations: u64,
    result: ComputeResult,
}

#[derive(Serialize)]
struct ComputeResult {
    sum_of_squares: u64,
    fibonacci: u64,
}

/// `(Σ_{i=1..=n} i² mod 2^64, F(n) mod 1_000_000_007)` with `F(0) = 0`, `F(1) = 1`, computed
/// with one loop iteration per `i`.
pub fn compute(n: u64) -> (u64, u64) {
    let mut sum = 0u64;
    let (mut a, mut b) = (0u64, 1u64);
    let mut i = 0u64;
    while i < n {
        i += 1;
        sum = sum.wrapping_add(i.wrapping_mul(i));
        let c = (a + b) % FIB_MODULUS;
        a = b;
        b = c;
    }
    (sum, a)
}

#[derive(Serialize)]
struct HashResponse {
    task: &'static str,
    iterations: u64,
    hex: String,
}

/// `h_1 = blake3(data)`, `h_{k+1} = blake3(h_k)`; returns `h_n` (`n >= 1`).
pub fn hash_chain(data: &[u8], n: u64) -> [u8; 32] {
    let mut h = *blake3::hash(data).as_bytes();
    for _ in 1..n {
        h = *blake3::hash(&h).as_bytes();
    }
    h
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn parse_id(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut id = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        id[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(id)
}

#[derive(Serialize)]
struct TransformResponse {
    task: &'static str,
    upper: String,
    reversed: String,
    length: usize,
    chars: usize,
}

#[derive(Serialize)]
struct StressResponse {
    task: &'static str,
    iterations: u64,
    memory_mb: u64,
    checksum: u64,
}

/// Allocates `memory_mb` MiB and writes one byte in every 4 KiB of it, then runs `iterations`
/// rounds of xorshift64 that the optimiser cannot remove; returns a checksum of both.
///
/// An allocation beyond the memory cap traps the call (the host reports it); one that cannot
/// exist in a 32-bit address space aborts with `memory_mb is too large`.
pub fn stress(iterations: u64, memory_mb: u64) -> u64 {
    let mut checksum = 0u64;
    if memory_mb > 0 {
        let Some(bytes) = memory_mb
            .checked_mul(1 << 20)
            .and_then(|b| usize::try_from(b).ok())
            .filter(|&b| b <= isize::MAX as usize)
        else {
            onvm_sdk::abort("memory_mb is too large")
        };
        let mut memory = vec![0u8; bytes];
        for (i, page) in memory.chunks_mut(4096).enumerate() {
            page[0] = black_box(i as u8 ^ 0x5a);
        }
        for page in memory.chunks(4096) {
            checksum = checksum.wrapping_add(u64::from(black_box(page)[0]));
        }
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut i = 0u64;
    while i < iterations {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        checksum = black_box(checksum.wrapping_add(x ^ i));
        i += 1;
    }
    checksum
}

#[derive(Serialize)]
struct CountResponse {
    task: &'static str,
    runs: u64,
}

/// Increments the u64 LE counter at [`RUNS_KEY`] (absent = 0); returns the new value.
fn count() -> Result<u64, Error> {
    let runs = match state::get(RUNS_KEY) {
        None => 0,
        Some(v) => match <[u8; 8]>::try_from(v.as_slice()) {
            Ok(b) => u64::from_le_bytes(b),
            Err(_) => {
                let message = format!("state key \"runs\" has {} bytes, not 8", v.len());
                return Err(Error::new("corrupt_state", message));
            }
        },
    };
    let runs = runs.wrapping_add(1);
    state::put(RUNS_KEY, &runs.to_le_bytes());
    Ok(runs)
}

#[derive(Serialize)]
struct LogResponse {
    task: &'static str,
    lines: u64,
}

#[derive(Serialize)]
struct ContextResponse {
    task: &'static str,
    caller: String,
    height: u64,
    timestamp_ms: u64,
    seed: String,
    state_root: String,
}

#[derive(Serialize)]
struct BlobResponse {
    task: &'static str,
    size: usize,
    blake3: String,
}

#[cfg(test)]
mod tests;
