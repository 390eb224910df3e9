//! The WebAssembly engine (wasmtime): deterministic configuration, deploy-time validation, a
//! compiled-module cache, the host ABI of docs/ABI.md, and typed call outcomes. The only module
//! that imports wasmtime. Calls are synchronous: run them on a blocking thread.
//!
//! Wall-clock limits (timeout, cancel) are checked every `FUEL_SLICE` units of fuel, where
//! wasmtime has saved the fuel counter: an interrupted call reports exactly the fuel it used.
//! (Epoch interruption would stop sooner in theory, but its check does not save the counter,
//! so every interrupted call reported the fuel of its last function call.)

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use onvm_rpc_api::program::{ABI_VERSION, Outcome};
use onvm_rpc_api::{BlobId, Hash32};
use wasmtime::{
    Caller, Config, Engine, ExternType, FuncType, InstanceAllocationStrategy, InstancePre, Linker,
    Memory, Module, OptLevel, PoolingAllocationConfig, ResourceLimiter, Store, Trap, Val, ValType,
};

use crate::config::VmConfig;

/// Returned by buffer-filling host functions when the key/blob does not exist (docs/ABI.md).
pub const ONVM_NOT_FOUND: i64 = -(1i64 << 32);
/// Fuel between two checks of the call's deadline and cancel flag: about 10-50 µs of guest
/// work, so a timeout is noticed promptly, while the check (a clock read and a fiber switch)
/// stays far below 1% of the run.
const FUEL_SLICE: u64 = 100_000;
/// Fiber stack beyond the guest's `vm.max_stack_bytes`, for wasmtime's and the host
/// functions' own frames.
const HOST_STACK_BYTES: usize = 1024 * 1024;
const WASM_MAGIC: &[u8] = b"\0asm\x01\0\0\0";
const ALLOC_EXPORT: &str = "onvm_alloc";
const MAX_LOG_LINES: usize = 1000;
const PAGE: usize = 65536;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("module is {size} bytes, over the limit of {max} (vm.max_module_bytes)")]
    ModuleTooLarge { size: u64, max: u64 },
    #[error("not a WebAssembly module: it must start with the wasm magic and version 1")]
    NotWasm,
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
    #[error("import `{module}.{name}` is not part of the ONVM ABI v{ABI_VERSION} (docs/ABI.md)")]
    UnknownImport { module: String, name: String },
    #[error("import `env.{name}` has type {found}, the ABI expects {expected}")]
    BadImportType {
        name: String,
        found: String,
        expected: String,
    },
    #[error("module must export a linear memory named `memory`")]
    NoMemory,
    #[error("module's initial memory ({bytes} bytes) exceeds the memory cap ({max} bytes)")]
    MemoryTooLarge { bytes: u64, max: u64 },
    #[error("entrypoint `{0}` is not an exported function")]
    MissingEntrypoint(String),
    #[error(
        "entrypoint `{name}` has type {found}; expected (i32,i32)->(i32,i32), (i32,i32)->i64 or (i32,i32,i32)->()"
    )]
    BadEntrypoint { name: String, found: String },
    #[error("export `onvm_alloc` must have type (i32)->i32, found {0}")]
    BadAllocator(String),
    #[error("engine setup failed: {0}")]
    Engine(String),
}

/// How an entrypoint returns its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    MultiValue,
    Packed,
    Sret,
}

/// A validated, compiled module ready to instantiate in microseconds.
pub struct Compiled {
    pre: InstancePre<HostState>,
    entrypoints: HashMap<String, Shape>,
    has_alloc: bool,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("entrypoints", &self.entrypoints)
            .field("has_alloc", &self.has_alloc)
            .finish_non_exhaustive()
    }
}

/// Committed state as the call sees it (a consistent snapshot).
pub trait StateView: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
    /// Smallest key with `prefix` strictly greater than `after` (or the first, with `None`).
    fn next_key(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<Option<Vec<u8>>, String>;
}

/// The deterministic context of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    pub height: u64,
    pub timestamp_ms: u64,
    pub seed: Hash32,
    pub caller: Hash32,
    pub state_root_in: Hash32,
}

pub struct CallRequest {
    pub entrypoint: String,
    pub input: Vec<u8>,
    pub fuel: u64,
    pub timeout: Duration,
    pub read_only: bool,
    pub context: CallContext,
    /// Blobs the program may read (its manifest's blob_refs), already loaded.
    pub blobs: Arc<HashMap<BlobId, Arc<Vec<u8>>>>,
    /// Set from another thread to stop the call (checked every `FUEL_SLICE` of fuel).
    pub cancel: Option<Arc<AtomicBool>>,
}

/// What a call produced. `writes` is empty unless the outcome is ok and the call may write.
#[derive(Debug)]
pub struct CallResult {
    pub outcome: Outcome,
    pub output: Vec<u8>,
    pub fuel_used: u64,
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pub logs: Vec<String>,
    pub logs_truncated: bool,
}

/// Host-side failure inside an ABI function: ends the call with a typed trap.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
struct HostTrap {
    kind: &'static str,
    message: String,
}

fn host_trap(kind: &'static str, message: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(HostTrap {
        kind,
        message: message.into(),
    })
}

struct HostState {
    state: Arc<dyn StateView>,
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    read_only: bool,
    context: CallContext,
    blobs: Arc<HashMap<BlobId, Arc<Vec<u8>>>>,
    logs: Vec<String>,
    log_bytes: usize,
    logs_truncated: bool,
    /// Bytes of the pending write set (keys and values), bounded by
    /// `vm.max_write_bytes_per_call` so one call cannot hold gigabytes in memory.
    write_bytes: u64,
    limits: VmConfig,
}

impl HostState {
    /// Accounts for writing `key` (a value of `value_len` bytes, or a delete) in the write set.
    fn account_write(&mut self, key: &[u8], value_len: Option<usize>) -> wasmtime::Result<()> {
        let size = |v: Option<usize>| key.len() as u64 + v.unwrap_or(0) as u64;
        let old = self
            .overlay
            .get(key)
            .map(|v| size(v.as_ref().map(Vec::len)))
            .unwrap_or(0);
        let new = self.write_bytes - old + size(value_len);
        if new > self.limits.max_write_bytes_per_call {
            return Err(host_trap(
                "host_limit",
                format!(
                    "the call's state writes would reach {new} bytes, over vm.max_write_bytes_per_call = {}",
                    self.limits.max_write_bytes_per_call
                ),
            ));
        }
        self.write_bytes = new;
        Ok(())
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limits.max_memory_bytes {
            return Err(host_trap(
                "memory_limit",
                format!(
                    "memory would grow to {desired} bytes, over the cap of {} (vm.max_memory_bytes)",
                    self.limits.max_memory_bytes
                ),
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl HostState {
    fn get(&self, key: &[u8]) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        self.state
            .get(key)
            .map_err(|e| host_trap("host_error", format!("reading state: {e}")))
    }

    /// Merges committed keys and this call's writes in key order.
    fn next_key(&self, prefix: &[u8], after: Option<&[u8]>) -> wasmtime::Result<Option<Vec<u8>>> {
        let mut cursor: Option<Vec<u8>> = after.map(<[u8]>::to_vec);
        loop {
            let committed = self
                .state
                .next_key(prefix, cursor.as_deref())
                .map_err(|e| host_trap("host_error", format!("reading state: {e}")))?;
            let lower = match &cursor {
                Some(c) => std::ops::Bound::Excluded(c.clone()),
                None => std::ops::Bound::Included(prefix.to_vec()),
            };
            let overlaid = self
                .overlay
                .range::<Vec<u8>, _>((lower, std::ops::Bound::Unbounded))
                .find(|(k, _)| k.starts_with(prefix) || k.as_slice() > prefix)
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.is_some()));
            let candidate = match (committed, overlaid) {
                (None, None) => return Ok(None),
                (Some(c), None) => (c, None),
                (None, Some((k, live))) => (k, Some(live)),
                (Some(c), Some((k, live))) => {
                    if k <= c {
                        (k, Some(live))
                    } else {
                        (c, None)
                    }
                }
            };
            let (key, overlay_live) = candidate;
            let live = match overlay_live {
                Some(live) => live,
                // A committed key is live unless this call deleted it.
                None => !matches!(self.overlay.get(&key), Some(None)),
            };
            if live {
                return Ok(Some(key));
            }
            cursor = Some(key);
        }
    }
}

fn memory(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| host_trap("host_bad_pointer", "module has no exported memory"))
}

fn span(
    func: &str,
    ptr: i32,
    len: i32,
    mem_len: usize,
) -> wasmtime::Result<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let len = len as u32 as usize;
    let end = start
        .checked_add(len)
        .filter(|&e| e <= mem_len)
        .ok_or_else(|| {
            host_trap(
                "host_bad_pointer",
                format!("{func}: range {start}+{len} is outside guest memory ({mem_len} bytes)"),
            )
        })?;
    Ok(start..end)
}

fn read_guest(
    caller: &mut Caller<'_, HostState>,
    func: &str,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Vec<u8>> {
    let mem = memory(caller)?;
    let data = mem.data(&*caller);
    let r = span(func, ptr, len, data.len())?;
    Ok(data[r].to_vec())
}

fn write_guest(
    caller: &mut Caller<'_, HostState>,
    func: &str,
    ptr: i32,
    bytes: &[u8],
) -> wasmtime::Result<()> {
    let mem = memory(caller)?;
    let data = mem.data_mut(&mut *caller);
    let r = span(func, ptr, bytes.len() as i32, data.len())?;
    data[r].copy_from_slice(bytes);
    Ok(())
}

/// Copies `value` into the guest buffer if it fits; the ABI's i64 convention otherwise.
fn fill(
    caller: &mut Caller<'_, HostState>,
    func: &str,
    buf: i32,
    cap: i32,
    value: &[u8],
) -> wasmtime::Result<i64> {
    // Validate the buffer even when it is too small, so bad pointers always trap.
    let mem = memory(caller)?;
    span(func, buf, cap, mem.data_size(&*caller))?;
    if value.len() > cap as u32 as usize {
        return Ok(-(value.len() as i64));
    }
    write_guest(caller, func, buf, value)?;
    Ok(value.len() as i64)
}

fn check_key(limits: &VmConfig, func: &str, key: &[u8]) -> wasmtime::Result<()> {
    if key.is_empty() || key.len() as u64 > limits.max_key_bytes {
        return Err(host_trap(
            "host_limit",
            format!(
                "{func}: keys must be 1..={} bytes, got {}",
                limits.max_key_bytes,
                key.len()
            ),
        ));
    }
    Ok(())
}

fn read_blob_id(
    caller: &mut Caller<'_, HostState>,
    func: &str,
    ptr: i32,
) -> wasmtime::Result<BlobId> {
    let bytes = read_guest(caller, func, ptr, 32)?;
    let mut id = [0u8; 32];
    id.copy_from_slice(&bytes);
    Ok(BlobId::from_bytes(id))
}

fn define_abi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "onvm_state_get",
        |mut c: Caller<'_, HostState>,
         kp: i32,
         kl: i32,
         bp: i32,
         bc: i32|
         -> wasmtime::Result<i64> {
            let key = read_guest(&mut c, "onvm_state_get", kp, kl)?;
            match c.data().get(&key)? {
                Some(v) => {
                    charge(&mut c, v.len().min(bc as u32 as usize), FUEL_PER_BYTE_READ)?;
                    fill(&mut c, "onvm_state_get", bp, bc, &v)
                }
                None => {
                    let mem = memory(&mut c)?;
                    span("onvm_state_get", bp, bc, mem.data_size(&c))?;
                    Ok(ONVM_NOT_FOUND)
                }
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "onvm_state_put",
        |mut c: Caller<'_, HostState>,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> wasmtime::Result<i32> {
            if c.data().read_only {
                return Err(host_trap("read_only", "onvm_state_put in a read-only call"));
            }
            let key = read_guest(&mut c, "onvm_state_put", kp, kl)?;
            let value = read_guest(&mut c, "onvm_state_put", vp, vl)?;
            charge(&mut c, key.len() + value.len(), FUEL_PER_BYTE_WRITTEN)?;
            let st = c.data_mut();
            check_key(&st.limits, "onvm_state_put", &key)?;
            if value.len() as u64 > st.limits.max_value_bytes {
                return Err(host_trap(
                    "host_limit",
                    format!(
                        "onvm_state_put: value of {} bytes exceeds {}",
                        value.len(),
                        st.limits.max_value_bytes
                    ),
                ));
            }
            if !st.overlay.contains_key(&key)
                && st.overlay.len() as u64 >= st.limits.max_writes_per_call
            {
                return Err(host_trap(
                    "host_limit",
                    format!(
                        "more than {} distinct keys written in one call",
                        st.limits.max_writes_per_call
                    ),
                ));
            }
            st.account_write(&key, Some(value.len()))?;
            st.overlay.insert(key, Some(value));
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "env",
        "onvm_state_del",
        |mut c: Caller<'_, HostState>, kp: i32, kl: i32| -> wasmtime::Result<i32> {
            let key = read_guest(&mut c, "onvm_state_del", kp, kl)?;
            if c.data().read_only {
                return Err(host_trap("read_only", "onvm_state_del in a read-only call"));
            }
            check_key(&c.data().limits, "onvm_state_del", &key)?;
            charge(&mut c, key.len(), FUEL_PER_BYTE_WRITTEN)?;
            let existed = c.data().get(&key)?.is_some();
            let st = c.data_mut();
            if !st.overlay.contains_key(&key)
                && st.overlay.len() as u64 >= st.limits.max_writes_per_call
            {
                return Err(host_trap(
                    "host_limit",
                    "too many distinct keys written in one call",
                ));
            }
            st.account_write(&key, None)?;
            st.overlay.insert(key, None);
            Ok(i32::from(existed))
        },
    )?;
    linker.func_wrap(
        "env",
        "onvm_state_next",
        |mut c: Caller<'_, HostState>,
         pp: i32,
         pl: i32,
         ap: i32,
         al: i32,
         bp: i32,
         bc: i32|
         -> wasmtime::Result<i64> {
            let prefix = read_guest(&mut c, "onvm_state_next", pp, pl)?;
            let after = if al == 0 {
                None
            } else {
                Some(read_guest(&mut c, "onvm_state_next", ap, al)?)
            };
            match c.data().next_key(&prefix, after.as_deref())? {
                Some(k) => {
                    charge(&mut c, k.len().min(bc as u32 as usize), FUEL_PER_BYTE_READ)?;
                    fill(&mut c, "onvm_state_next", bp, bc, &k)
                }
                None => {
                    let mem = memory(&mut c)?;
                    span("onvm_state_next", bp, bc, mem.data_size(&c))?;
                    Ok(ONVM_NOT_FOUND)
                }
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "onvm_state_root",
        |mut c: Caller<'_, HostState>, bp: i32| -> wasmtime::Result<i32> {
            let root = c.data().context.state_root_in;
            write_guest(&mut c, "onvm_state_root", bp, &root.0)?;
            Ok(32)
        },
    )?;
    linker.func_wrap(
        "env",
        "onvm_blob_len",
        |mut c: Caller<'_, HostState>, ip: i32| -> wasmtime::Result<i64> {
            let id = read_blob_id(&mut c, "onvm_blob_len", ip)?;
            Ok(c.data()
                .blobs
                .get(&id)
                .map(|b| b.len() as i64)
                .unwrap_or(ONVM_NOT_FOUND))
        },
    )?;
    linker.func_wrap(
        "env",
        "onvm_blob_read",
        |mut c: Caller<'_, HostState>,
         ip: i32,
         offset: i64,
         bp: i32,
         bc: i32|
         -> wasmtime::Result<i64> {
            let id = read_blob_id(&mut c, "onvm_blob_read", ip)?;
            let mem = memory(&mut c)?;
            span("onvm_blob_read", bp, bc, mem.data_size(&c))?;
            let Some(blob) = c.data().blobs.get(&id).cloned() else {
                return Ok(ONVM_NOT_FOUND);
            };
            let start = (offset.max(0) as u64).min(blob.len() as u64) as usize;
            let end = start.saturating_add(bc as u32 as usize).min(blob.len());
            charge(&mut c, end - start, FUEL_PER_BYTE_READ)?;
            write_guest(&mut c, "onvm_blob_read", bp, &blob[start..end])?;
            Ok((end - start) as i64)
        },
    )?;
    linker.func_wrap(
        "env",
        "onvm_log",
        |mut c: Caller<'_, HostState>, p: i32, l: i32| -> wasmtime::Result<()> {
            let bytes = read_guest(&mut c, "onvm_log", p, l)?;
            charge(&mut c, bytes.len(), FUEL_PER_BYTE_LOGGED)?;
            let st = c.data_mut();
            if st.logs.len() >= MAX_LOG_LINES
                || st.log_bytes + bytes.len() > st.limits.max_log_bytes as usize
            {
                st.logs_truncated = true;
                return Ok(());
            }
            st.log_bytes += bytes.len();
            st.logs.push(String::from_utf8_lossy(&bytes).into_owned());
            Ok(())
        },
    )?;
    linker.func_wrap(
        "env",
        "onvm_caller",
        |mut c: Caller<'_, HostState>, bp: i32| -> wasmtime::Result<i32> {
            let caller = c.data().context.caller;
            write_guest(&mut c, "onvm_caller", bp, &caller.0)?;
            Ok(32)
        },
    )?;
    linker.func_wrap(
        "env",
        "onvm_context",
        |mut c: Caller<'_, HostState>, bp: i32| -> wasmtime::Result<i32> {
            let ctx = c.data().context.clone();
            let mut buf = [0u8; 48];
            buf[..8].copy_from_slice(&ctx.height.to_le_bytes());
            buf[8..16].copy_from_slice(&ctx.timestamp_ms.to_le_bytes());
            buf[16..].copy_from_slice(&ctx.seed.0);
            write_guest(&mut c, "onvm_context", bp, &buf)?;
            Ok(48)
        },
    )?;
    linker.func_wrap(
        "env",
        "onvm_abort",
        |mut c: Caller<'_, HostState>, p: i32, l: i32| -> wasmtime::Result<()> {
            let len = (l as u32).min(4096) as i32;
            let msg = read_guest(&mut c, "onvm_abort", p, len)?;
            Err(host_trap(
                "guest_abort",
                String::from_utf8_lossy(&msg).into_owned(),
            ))
        },
    )?;
    Ok(())
}

/// The ABI's imports and their exact types, for deploy-time validation.
fn abi_signature(name: &str) -> Option<(&'static [ValType], &'static [ValType])> {
    use ValType::{I32, I64};
    Some(match name {
        "onvm_state_get" => (&[I32, I32, I32, I32], &[I64]),
        "onvm_state_put" => (&[I32, I32, I32, I32], &[I32]),
        "onvm_state_del" => (&[I32, I32], &[I32]),
        "onvm_state_next" => (&[I32, I32, I32, I32, I32, I32], &[I64]),
        "onvm_state_root" | "onvm_caller" | "onvm_context" => (&[I32], &[I32]),
        "onvm_blob_len" => (&[I32], &[I64]),
        "onvm_blob_read" => (&[I32, I64, I32, I32], &[I64]),
        "onvm_log" | "onvm_abort" => (&[I32, I32], &[]),
        _ => return None,
    })
}

fn types_match(actual: impl ExactSizeIterator<Item = ValType>, expected: &[ValType]) -> bool {
    actual.len() == expected.len() && actual.zip(expected).all(|(a, e)| ValType::eq(&a, e))
}

fn describe(ty: &FuncType) -> String {
    let list = |it: &mut dyn Iterator<Item = ValType>| {
        it.map(|t| t.to_string()).collect::<Vec<_>>().join(",")
    };
    format!(
        "({})->({})",
        list(&mut ty.params()),
        list(&mut ty.results())
    )
}

fn shape_of(ty: &FuncType) -> Option<Shape> {
    use ValType::{I32, I64};
    if types_match(ty.params(), &[I32, I32]) && types_match(ty.results(), &[I32, I32]) {
        Some(Shape::MultiValue)
    } else if types_match(ty.params(), &[I32, I32]) && types_match(ty.results(), &[I64]) {
        Some(Shape::Packed)
    } else if types_match(ty.params(), &[I32, I32, I32]) && ty.results().len() == 0 {
        Some(Shape::Sret)
    } else {
        None
    }
}

/// The wasmtime engine with the node's deterministic settings.
pub struct Vm {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Mutex<HashMap<BlobId, Arc<Compiled>>>,
    limits: VmConfig,
}

/// Engine + ABI fingerprint recorded in manifests and receipts: fuel totals and semantics are
/// only comparable between executors with the same fingerprint.
pub const ENGINE_FINGERPRINT: &str = "onvm-abi-1/wasmtime-48/fuel-v2/nan-canonical";

/// Fuel per byte a call writes to state (key and value of `onvm_state_put`, key of
/// `onvm_state_del`). A written byte costs every node of the network a hash in the Merkle
/// tree, a database write, a copy in the replicated log and storage for good, where a wasm
/// instruction costs one unit: 20 lets a default call (50M units) write about 2.5 MB.
pub const FUEL_PER_BYTE_WRITTEN: u64 = 20;
/// Fuel per byte logged with `onvm_log` (kept with the call's result, at most
/// `vm.max_log_bytes`).
pub const FUEL_PER_BYTE_LOGGED: u64 = 20;
/// Fuel per byte copied into the guest by `onvm_state_get`, `onvm_state_next` and
/// `onvm_blob_read`: a memory copy, like an instruction per byte.
pub const FUEL_PER_BYTE_READ: u64 = 1;
/// Fuel per byte of the call's output, charged when the entrypoint returns.
pub const FUEL_PER_BYTE_RETURNED: u64 = 1;

/// Takes `bytes × per_byte` fuel from the running call; running out is `out_of_fuel`, exactly
/// as if the guest had spent it on instructions.
fn charge(c: &mut Caller<'_, HostState>, bytes: usize, per_byte: u64) -> wasmtime::Result<()> {
    let cost = (bytes as u64).saturating_mul(per_byte);
    if cost == 0 {
        return Ok(());
    }
    let left = c.get_fuel()?;
    if left < cost {
        c.set_fuel(0)?;
        return Err(wasmtime::Error::new(Trap::OutOfFuel));
    }
    c.set_fuel(left - cost)
}

impl Vm {
    pub fn new(limits: VmConfig) -> Result<Self, VmError> {
        // Threads, GC and the component model are compiled out (wasmtime features), so
        // guests cannot observe scheduling or host-dependent behaviour.
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .cranelift_nan_canonicalization(true)
            .cranelift_opt_level(OptLevel::Speed)
            .wasm_relaxed_simd(false)
            .relaxed_simd_deterministic(true)
            .wasm_memory64(false)
            .wasm_multi_memory(false)
            .wasm_multi_value(true)
            .max_wasm_stack(limits.max_stack_bytes as usize)
            // Calls run on a fiber (so they can pause every FUEL_SLICE); its stack holds the
            // guest's stack plus the host functions' frames.
            .async_stack_size(limits.max_stack_bytes as usize + HOST_STACK_BYTES)
            // Our memories never exceed the cap, so reserve only that much address space.
            .memory_reservation(limits.max_memory_bytes)
            .memory_guard_size(PAGE as u64)
            .memory_reservation_for_growth(0);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(limits.max_concurrent_calls)
            .total_memories(limits.max_concurrent_calls)
            .total_tables(limits.max_concurrent_calls)
            .total_stacks(limits.max_concurrent_calls)
            .max_memory_size(limits.max_memory_bytes as usize)
            .max_memories_per_module(1)
            .table_elements(100_000);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| VmError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        define_abi(&mut linker).map_err(|e| VmError::Engine(format!("{e:#}")))?;
        Ok(Self {
            engine,
            linker,
            cache: Mutex::new(HashMap::new()),
            limits,
        })
    }

    pub fn limits(&self) -> &VmConfig {
        &self.limits
    }

    /// Validates `wasm` against the ABI and compiles it. Checks run cheapest first: size and
    /// magic before compiling, imports and exports before accepting.
    pub fn compile(&self, wasm: &[u8], entrypoints: &[String]) -> Result<Compiled, VmError> {
        if wasm.len() as u64 > self.limits.max_module_bytes {
            return Err(VmError::ModuleTooLarge {
                size: wasm.len() as u64,
                max: self.limits.max_module_bytes,
            });
        }
        if !wasm.starts_with(WASM_MAGIC) {
            return Err(VmError::NotWasm);
        }
        let module = Module::from_binary(&self.engine, wasm)
            .map_err(|e| VmError::Invalid(format!("{e:#}")))?;
        for import in module.imports() {
            let name = import.name().to_string();
            let expected = (import.module() == "env")
                .then(|| abi_signature(&name))
                .flatten();
            let Some((params, results)) = expected else {
                return Err(VmError::UnknownImport {
                    module: import.module().to_string(),
                    name,
                });
            };
            let ok = match import.ty() {
                ExternType::Func(f) => {
                    types_match(f.params(), params) && types_match(f.results(), results)
                }
                _ => false,
            };
            if !ok {
                let found = match import.ty() {
                    ExternType::Func(f) => describe(&f),
                    other => format!("{other:?}"),
                };
                let expected = describe(&FuncType::new(
                    &self.engine,
                    params.iter().cloned(),
                    results.iter().cloned(),
                ));
                return Err(VmError::BadImportType {
                    name,
                    found,
                    expected,
                });
            }
        }
        match module.get_export("memory") {
            Some(ExternType::Memory(m)) => {
                let bytes = m.minimum() * PAGE as u64;
                if bytes > self.limits.max_memory_bytes {
                    return Err(VmError::MemoryTooLarge {
                        bytes,
                        max: self.limits.max_memory_bytes,
                    });
                }
            }
            _ => return Err(VmError::NoMemory),
        }
        let mut shapes = HashMap::new();
        for name in entrypoints {
            let ty = match module.get_export(name) {
                Some(ExternType::Func(f)) => f,
                _ => return Err(VmError::MissingEntrypoint(name.clone())),
            };
            let shape = shape_of(&ty).ok_or_else(|| VmError::BadEntrypoint {
                name: name.clone(),
                found: describe(&ty),
            })?;
            shapes.insert(name.clone(), shape);
        }
        let has_alloc = match module.get_export(ALLOC_EXPORT) {
            None => false,
            Some(ExternType::Func(f))
                if types_match(f.params(), &[ValType::I32])
                    && types_match(f.results(), &[ValType::I32]) =>
            {
                true
            }
            Some(ExternType::Func(f)) => return Err(VmError::BadAllocator(describe(&f))),
            Some(other) => return Err(VmError::BadAllocator(format!("{other:?}"))),
        };
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| VmError::Invalid(format!("{e:#}")))?;
        Ok(Compiled {
            pre,
            entrypoints: shapes,
            has_alloc,
        })
    }

    pub fn cached(&self, code: &BlobId) -> Option<Arc<Compiled>> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(code)
            .cloned()
    }

    pub fn insert_compiled(&self, code: BlobId, compiled: Arc<Compiled>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.limits.module_cache_entries as usize
            && let Some(evict) = cache.keys().next().copied()
        {
            cache.remove(&evict);
        }
        cache.insert(code, compiled);
    }

    /// The compiled module for `code`, compiling (and caching) it on first use.
    pub fn compiled(
        &self,
        code: BlobId,
        entrypoints: &[String],
        load_wasm: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Arc<Compiled>, VmError> {
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&code)
        {
            return Ok(c.clone());
        }
        let wasm = load_wasm().map_err(VmError::Invalid)?;
        let compiled = Arc::new(self.compile(&wasm, entrypoints)?);
        self.insert_compiled(code, compiled.clone());
        Ok(compiled)
    }

    /// Runs one call to completion (or to its first trap). Never panics on guest behaviour.
    pub fn call(
        &self,
        compiled: &Compiled,
        req: CallRequest,
        state: Arc<dyn StateView>,
    ) -> CallResult {
        let deadline = std::time::Instant::now() + req.timeout;
        let cancel = req.cancel.clone();
        self.call_until(compiled, req, state, move || {
            if cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                Some(host_trap("cancelled", "the call was cancelled"))
            } else if std::time::Instant::now() >= deadline {
                Some(wasmtime::Error::new(Trap::Interrupt))
            } else {
                None
            }
        })
    }

    /// `call` with its wall-clock checks given: `stop` runs every `FUEL_SLICE` of fuel and may
    /// end the call with an error.
    fn call_until(
        &self,
        compiled: &Compiled,
        req: CallRequest,
        state: Arc<dyn StateView>,
        stop: impl FnMut() -> Option<wasmtime::Error>,
    ) -> CallResult {
        let host = HostState {
            state,
            overlay: BTreeMap::new(),
            read_only: req.read_only,
            context: req.context,
            blobs: req.blobs,
            logs: Vec::new(),
            log_bytes: 0,
            logs_truncated: false,
            write_bytes: 0,
            limits: self.limits.clone(),
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        let fuel = req.fuel;
        let result = match store
            .set_fuel(fuel)
            .and_then(|()| store.fuel_async_yield_interval(Some(FUEL_SLICE)))
        {
            Ok(()) => run_until(
                run(
                    &mut store,
                    compiled,
                    &req.entrypoint,
                    &req.input,
                    self.limits.max_output_bytes,
                ),
                stop,
            ),
            Err(e) => Err(e),
        };
        // The output is paid for like any other byte the call makes the node handle.
        let returned = match &result {
            Ok(Ok(output)) => (output.len() as u64).saturating_mul(FUEL_PER_BYTE_RETURNED),
            _ => 0,
        };
        let left = store.get_fuel().unwrap_or(0);
        let result = if returned > left {
            let _ = store.set_fuel(0);
            Err(wasmtime::Error::new(Trap::OutOfFuel))
        } else {
            let _ = store.set_fuel(left - returned);
            result
        };
        let fuel_used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let host = store.into_data();
        let (outcome, output) = match result {
            Ok(Ok(output)) => (Outcome::Ok, output),
            Ok(Err(bad)) => (Outcome::BadOutput { message: bad }, Vec::new()),
            Err(e) => (classify(&e), Vec::new()),
        };
        let writes = if outcome.is_ok() && !req.read_only {
            host.overlay
        } else {
            BTreeMap::new()
        };
        CallResult {
            outcome,
            output,
            fuel_used,
            writes,
            logs: host.logs,
            logs_truncated: host.logs_truncated,
        }
    }
}

/// Drives a call on this thread. The guest pauses every `FUEL_SLICE` of fuel, with the fuel
/// counter saved; there `stop` may end the call with its error (dropping the future unwinds
/// the guest's fiber, and the store stays usable).
fn run_until<T>(
    call: impl Future<Output = wasmtime::Result<T>>,
    mut stop: impl FnMut() -> Option<wasmtime::Error>,
) -> wasmtime::Result<T> {
    let mut call = pin!(call);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(result) = call.as_mut().poll(&mut cx) {
            return result;
        }
        if let Some(error) = stop() {
            return Err(error);
        }
    }
}

/// Instantiates, places the input, calls the entrypoint and copies the output out.
/// Outer error: the call trapped. Inner error: the output was unusable.
async fn run(
    store: &mut Store<HostState>,
    compiled: &Compiled,
    entrypoint: &str,
    input: &[u8],
    max_output: u64,
) -> wasmtime::Result<Result<Vec<u8>, String>> {
    let shape = *compiled.entrypoints.get(entrypoint).ok_or_else(|| {
        host_trap(
            "rejected",
            format!("`{entrypoint}` is not an entrypoint of this program"),
        )
    })?;
    let instance = compiled.pre.instantiate_async(&mut *store).await?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| host_trap("host_bad_pointer", "module has no exported memory"))?;
    let input_len = i32::try_from(input.len())
        .map_err(|_| host_trap("rejected", "input is larger than 2 GiB"))?;
    let (input_ptr, sret_ptr) = if compiled.has_alloc {
        let alloc = instance.get_typed_func::<i32, i32>(&mut *store, ALLOC_EXPORT)?;
        let p = alloc.call_async(&mut *store, input_len).await?;
        let s = if shape == Shape::Sret {
            alloc.call_async(&mut *store, 8).await?
        } else {
            0
        };
        (p, s)
    } else {
        // Fresh pages past the module's data: nothing of the guest's lives there.
        let needed = input.len() + 16;
        let pages = needed.div_ceil(PAGE).max(1) as u64;
        let old_pages = memory.grow(&mut *store, pages)?;
        let base = (old_pages as usize) * PAGE;
        let sret = base + input.len().div_ceil(8) * 8;
        (base as i32, sret as i32)
    };
    let mem_len = memory.data_size(&*store);
    if input_ptr == 0 || span("onvm_alloc", input_ptr, input_len, mem_len).is_err() {
        return Err(host_trap(
            "host_bad_pointer",
            format!("onvm_alloc returned an invalid pointer {input_ptr}"),
        ));
    }
    let r = span("input", input_ptr, input_len, mem_len)?;
    memory.data_mut(&mut *store)[r].copy_from_slice(input);
    let func = instance
        .get_func(&mut *store, entrypoint)
        .ok_or_else(|| host_trap("rejected", format!("`{entrypoint}` is not exported")))?;
    let (out_ptr, out_len) = match shape {
        Shape::MultiValue => {
            let mut results = [Val::I32(0), Val::I32(0)];
            func.call_async(
                &mut *store,
                &[Val::I32(input_ptr), Val::I32(input_len)],
                &mut results,
            )
            .await?;
            (
                results[0].i32().unwrap_or(0) as u32 as usize,
                results[1].i32().unwrap_or(0) as u32 as usize,
            )
        }
        Shape::Packed => {
            let mut results = [Val::I64(0)];
            func.call_async(
                &mut *store,
                &[Val::I32(input_ptr), Val::I32(input_len)],
                &mut results,
            )
            .await?;
            let packed = results[0].i64().unwrap_or(0) as u64;
            ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize)
        }
        Shape::Sret => {
            if sret_ptr == 0 || span("sret", sret_ptr, 8, memory.data_size(&*store)).is_err() {
                return Err(host_trap(
                    "host_bad_pointer",
                    "no valid return slot for an sret entrypoint",
                ));
            }
            func.call_async(
                &mut *store,
                &[Val::I32(sret_ptr), Val::I32(input_ptr), Val::I32(input_len)],
                &mut [],
            )
            .await?;
            let data = memory.data(&*store);
            let s = sret_ptr as usize;
            let word = |i: usize| {
                u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize
            };
            (word(s), word(s + 4))
        }
    };
    if out_len as u64 > max_output {
        return Ok(Err(format!(
            "output of {out_len} bytes exceeds the cap of {max_output} (vm.max_output_bytes)"
        )));
    }
    let data = memory.data(&*store);
    match out_ptr
        .checked_add(out_len)
        .filter(|&end| end <= data.len())
    {
        Some(end) => Ok(Ok(data[out_ptr..end].to_vec())),
        None => Ok(Err(format!(
            "output range {out_ptr}+{out_len} is outside guest memory ({} bytes)",
            data.len()
        ))),
    }
}

fn classify(err: &wasmtime::Error) -> Outcome {
    if let Some(h) = err.downcast_ref::<HostTrap>() {
        return match h.kind {
            "memory_limit" => Outcome::MemoryLimit,
            "cancelled" => Outcome::Cancelled,
            "rejected" => Outcome::Rejected {
                message: h.message.clone(),
            },
            kind => Outcome::Trap {
                kind: kind.to_string(),
                message: h.message.clone(),
            },
        };
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => Outcome::OutOfFuel,
            Trap::StackOverflow => Outcome::StackOverflow,
            Trap::Interrupt => Outcome::Timeout,
            other => Outcome::Trap {
                kind: trap_kind(other).to_string(),
                message: other.to_string(),
            },
        };
    }
    // Instantiation failures (e.g. the pool is exhausted) and anything else wasmtime reports.
    Outcome::Trap {
        kind: onvm_rpc_api::program::ENGINE_TRAP_KIND.to_string(),
        message: format!("{err:#}"),
    }
}

fn trap_kind(trap: &Trap) -> &'static str {
    match trap {
        Trap::MemoryOutOfBounds => "memory_out_of_bounds",
        Trap::HeapMisaligned => "heap_misaligned",
        Trap::TableOutOfBounds => "table_out_of_bounds",
        Trap::IndirectCallToNull => "indirect_call_to_null",
        Trap::BadSignature => "bad_signature",
        Trap::IntegerOverflow => "integer_overflow",
        Trap::IntegerDivisionByZero => "integer_division_by_zero",
        Trap::BadConversionToInteger => "bad_conversion_to_integer",
        Trap::UnreachableCodeReached => "unreachable",
        _ => "trap",
    }
}

/// Committed state held in memory, sorted by key: for audits that replay a program off-node,
/// and for tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryState(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl MemoryState {
    /// Applies a call's writes (`None` deletes).
    pub fn apply(&mut self, writes: &onvm_rpc_api::program::Writes) {
        for (key, value) in writes {
            match value {
                Some(v) => self.0.insert(key.clone(), v.clone()),
                None => self.0.remove(key),
            };
        }
    }
}

impl StateView for MemoryState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.get(key).cloned())
    }
    fn next_key(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<Option<Vec<u8>>, String> {
        let lower = match after {
            Some(a) => std::ops::Bound::Excluded(a.to_vec()),
            None => std::ops::Bound::Included(prefix.to_vec()),
        };
        Ok(self
            .0
            .range::<Vec<u8>, _>((lower, std::ops::Bound::Unbounded))
            .map(|(k, _)| k.clone())
            .find(|k| k.starts_with(prefix) || k.as_slice() > prefix)
            .filter(|k| k.starts_with(prefix)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> Vm {
        Vm::new(VmConfig {
            max_memory_bytes: 4 * 1024 * 1024,
            max_concurrent_calls: 4,
            ..VmConfig::default()
        })
        .unwrap()
    }

    fn request(input: &[u8]) -> CallRequest {
        CallRequest {
            entrypoint: "onvm_main".into(),
            input: input.to_vec(),
            fuel: 10_000_000,
            timeout: Duration::from_secs(10),
            read_only: false,
            context: CallContext {
                height: 7,
                timestamp_ms: 1000,
                seed: Hash32([9; 32]),
                caller: Hash32([1; 32]),
                state_root_in: Hash32([2; 32]),
            },
            blobs: Arc::new(HashMap::new()),
            cancel: None,
        }
    }

    fn call_wat(vm: &Vm, wat: &str, input: &[u8], state: MemoryState) -> CallResult {
        let wasm = wat::parse_str(wat).unwrap();
        let compiled = vm.compile(&wasm, &["onvm_main".to_string()]).unwrap();
        vm.call(&compiled, request(input), Arc::new(state))
    }

    const ECHO_MULTI: &str = r#"(module (memory (export "memory") 1)
        (func (export "onvm_main") (param i32 i32) (result i32 i32) local.get 0 local.get 1))"#;
    const ECHO_PACKED: &str = r#"(module (memory (export "memory") 1)
        (func (export "onvm_main") (param i32 i32) (result i64)
          local.get 0 i64.extend_i32_u i64.const 32 i64.shl local.get 1 i64.extend_i32_u i64.or))"#;
    const ECHO_SRET: &str = r#"(module (memory (export "memory") 1)
        (func (export "onvm_main") (param i32 i32 i32)
          local.get 0 local.get 1 i32.store local.get 0 local.get 2 i32.store offset=4))"#;

    /// Writes `n` values of `size` bytes (input: n, size as little-endian u32s).
    const WRITER: &str = include_str!("../../tests/fixtures/writer.wat");

    fn writes(n: u32, size: u32) -> Vec<u8> {
        [n.to_le_bytes(), size.to_le_bytes()].concat()
    }

    #[test]
    fn written_bytes_cost_fuel_and_running_out_is_out_of_fuel() {
        let vm = vm();
        let small = call_wat(&vm, WRITER, &writes(1, 1), MemoryState::default());
        let large = call_wat(&vm, WRITER, &writes(1, 10_001), MemoryState::default());
        assert_eq!(small.outcome, Outcome::Ok);
        assert_eq!(large.outcome, Outcome::Ok);
        assert_eq!(
            large.fuel_used - small.fuel_used,
            10_000 * FUEL_PER_BYTE_WRITTEN,
            "the only difference is 10,000 more bytes written"
        );
        // 1 MiB at 20 units per byte is more than the 10M units the call has.
        let broke = call_wat(&vm, WRITER, &writes(1, 1 << 20), MemoryState::default());
        assert_eq!(broke.outcome, Outcome::OutOfFuel);
        assert!(broke.writes.is_empty());
        assert_eq!(broke.fuel_used, 10_000_000);
    }

    #[test]
    fn a_call_cannot_hold_more_than_max_write_bytes_per_call() {
        let vm = Vm::new(VmConfig {
            max_memory_bytes: 4 * 1024 * 1024,
            max_write_bytes_per_call: 2 * 1024 * 1024,
            ..VmConfig::default()
        })
        .unwrap();
        let compiled = vm
            .compile(&wat::parse_str(WRITER).unwrap(), &["onvm_main".to_string()])
            .unwrap();
        let mut req = request(&writes(1000, 1 << 20));
        req.fuel = 1_000_000_000;
        let r = vm.call(&compiled, req, Arc::new(MemoryState::default()));
        match &r.outcome {
            Outcome::Trap { kind, message } => {
                assert_eq!(kind, "host_limit");
                assert!(message.contains("vm.max_write_bytes_per_call"), "{message}");
            }
            other => panic!("expected the write cap, got {other:?}"),
        }
        assert!(r.writes.is_empty());
        // Overwriting one key stays within the cap however often it is done.
        let mut req = request(&writes(1, 1 << 20));
        req.fuel = 1_000_000_000;
        assert_eq!(
            vm.call(&compiled, req, Arc::new(MemoryState::default()))
                .outcome,
            Outcome::Ok
        );
    }

    #[test]
    fn three_entrypoint_shapes_return_the_input() {
        let vm = vm();
        for wat in [ECHO_MULTI, ECHO_PACKED, ECHO_SRET] {
            let r = call_wat(&vm, wat, b"hello shapes", MemoryState::default());
            assert_eq!(r.outcome, Outcome::Ok, "{wat}");
            assert_eq!(r.output, b"hello shapes");
            assert!(r.fuel_used > 0);
        }
    }

    #[test]
    fn input_is_never_at_address_zero() {
        let vm = vm();
        // Returns (ptr, 0) as output length 4 containing the pointer value.
        let wat = r#"(module (memory (export "memory") 1)
            (func (export "onvm_main") (param i32 i32) (result i32 i32)
              i32.const 0 local.get 0 i32.store i32.const 0 i32.const 4))"#;
        let r = call_wat(&vm, wat, b"", MemoryState::default());
        let ptr = u32::from_le_bytes(r.output[..4].try_into().unwrap());
        assert!(ptr >= 65536, "input placed at {ptr}");
    }

    #[test]
    fn state_abi_round_trip_and_buffer_conventions() {
        let vm = vm();
        // put("k","vv"); get("k") into a 1-byte buffer (expects -2); get into 8 bytes; get missing.
        let wat = r#"(module
            (import "env" "onvm_state_put" (func $put (param i32 i32 i32 i32) (result i32)))
            (import "env" "onvm_state_get" (func $get (param i32 i32 i32 i32) (result i64)))
            (memory (export "memory") 1)
            (data (i32.const 16) "kvvx")
            (func (export "onvm_main") (param i32 i32) (result i32 i32)
              (drop (call $put (i32.const 16) (i32.const 1) (i32.const 17) (i32.const 2)))
              (i64.store (i32.const 100) (call $get (i32.const 16) (i32.const 1) (i32.const 200) (i32.const 1)))
              (i64.store (i32.const 108) (call $get (i32.const 16) (i32.const 1) (i32.const 200) (i32.const 8)))
              (i64.store (i32.const 116) (call $get (i32.const 19) (i32.const 1) (i32.const 200) (i32.const 8)))
              i32.const 100 i32.const 24))"#;
        let r = call_wat(&vm, wat, b"", MemoryState::default());
        assert_eq!(r.outcome, Outcome::Ok);
        let word = |i: usize| i64::from_le_bytes(r.output[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(word(0), -2, "too small: minus the needed size");
        assert_eq!(word(1), 2);
        assert_eq!(word(2), ONVM_NOT_FOUND);
        assert_eq!(r.writes.get(b"k".as_slice()), Some(&Some(b"vv".to_vec())));
    }

    #[test]
    fn hostile_programs_get_typed_outcomes_and_write_nothing() {
        let vm = vm();
        let writes_then = |body: &str| {
            format!(
                r#"(module
                (import "env" "onvm_state_put" (func $put (param i32 i32 i32 i32) (result i32)))
                (memory (export "memory") 1)
                (func $rec (param i32) (result i32) local.get 0 i32.const 1 i32.add call $rec)
                (func (export "onvm_main") (param i32 i32) (result i32 i32)
                  (drop (call $put (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 1)))
                  {body}))"#
            )
        };
        let cases = [
            ("(loop $l br $l) i32.const 0 i32.const 0", "out_of_fuel"),
            (
                "(loop $l (drop (memory.grow (i32.const 1))) br $l) i32.const 0 i32.const 0",
                "memory_limit",
            ),
            (
                "i32.const 0 call $rec drop i32.const 0 i32.const 0",
                "stack_overflow",
            ),
            ("unreachable", "trap"),
            ("i32.const 0 i32.const 100000000", "bad_output"),
            ("i32.const 1 i32.const 0 i32.div_u i32.const 0", "trap"),
        ];
        for (body, expected) in cases {
            let r = call_wat(&vm, &writes_then(body), b"", MemoryState::default());
            assert_eq!(r.outcome.kind(), expected, "{body}: {:?}", r.outcome);
            assert!(r.writes.is_empty(), "{body}: a failed call must not write");
        }
    }

    #[test]
    fn out_of_bounds_pointers_trap_in_every_host_function() {
        let vm = vm();
        let calls = [
            (
                "onvm_state_get",
                "(param i32 i32 i32 i32) (result i64)",
                "(drop (call $f (i32.const 1000000) (i32.const 1) (i32.const 0) (i32.const 1)))",
            ),
            (
                "onvm_state_get",
                "(param i32 i32 i32 i32) (result i64)",
                "(drop (call $f (i32.const 0) (i32.const 1) (i32.const 1000000) (i32.const 100)))",
            ),
            (
                "onvm_state_put",
                "(param i32 i32 i32 i32) (result i32)",
                "(drop (call $f (i32.const 0) (i32.const 1) (i32.const -1) (i32.const 10)))",
            ),
            (
                "onvm_state_del",
                "(param i32 i32) (result i32)",
                "(drop (call $f (i32.const 1000000) (i32.const 10)))",
            ),
            (
                "onvm_state_next",
                "(param i32 i32 i32 i32 i32 i32) (result i64)",
                "(drop (call $f (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000000) (i32.const 4)))",
            ),
            (
                "onvm_state_root",
                "(param i32) (result i32)",
                "(drop (call $f (i32.const 1000000)))",
            ),
            (
                "onvm_blob_len",
                "(param i32) (result i64)",
                "(drop (call $f (i32.const 1000000)))",
            ),
            (
                "onvm_blob_read",
                "(param i32 i64 i32 i32) (result i64)",
                "(drop (call $f (i32.const 0) (i64.const 0) (i32.const 1000000) (i32.const 100)))",
            ),
            (
                "onvm_log",
                "(param i32 i32)",
                "(call $f (i32.const 1000000) (i32.const 1000))",
            ),
            (
                "onvm_caller",
                "(param i32) (result i32)",
                "(drop (call $f (i32.const -8)))",
            ),
            (
                "onvm_context",
                "(param i32) (result i32)",
                "(drop (call $f (i32.const 1000000)))",
            ),
            (
                "onvm_abort",
                "(param i32 i32)",
                "(call $f (i32.const 1000000) (i32.const 2))",
            ),
        ];
        for (name, ty, call) in calls {
            let wat = format!(
                r#"(module (import "env" "{name}" (func $f {ty})) (memory (export "memory") 1)
                  (func (export "onvm_main") (param i32 i32) (result i32 i32) {call} i32.const 0 i32.const 0))"#
            );
            let wasm = wat::parse_str(&wat).unwrap();
            // Inputs go to fresh pages, so memory is 2 pages; use a pre-grown-free alloc path.
            let compiled = vm.compile(&wasm, &["onvm_main".to_string()]).unwrap();
            let mut req = request(b"");
            req.input = Vec::new();
            let r = vm.call(&compiled, req, Arc::new(MemoryState::default()));
            match &r.outcome {
                Outcome::Trap { kind, message } => {
                    assert_eq!(kind, "host_bad_pointer", "{name}: {message}");
                    assert!(message.contains(name), "{name}: {message}");
                }
                other => panic!("{name}: expected a bad-pointer trap, got {other:?}"),
            }
        }
    }

    #[test]
    fn deploy_validation_rejects_bad_modules_with_reasons() {
        let vm = vm();
        let ep = ["onvm_main".to_string()];
        assert!(matches!(
            vm.compile(b"not wasm", &ep),
            Err(VmError::NotWasm)
        ));
        let mut truncated = wat::parse_str(ECHO_MULTI).unwrap();
        truncated.truncate(truncated.len() - 3);
        assert!(matches!(
            vm.compile(&truncated, &ep),
            Err(VmError::Invalid(_))
        ));
        let unknown = wat::parse_str(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
               (memory (export "memory") 1) (func (export "onvm_main") (param i32 i32) (result i64) i64.const 0))"#,
        )
        .unwrap();
        let err = vm.compile(&unknown, &ep).unwrap_err();
        assert!(
            err.to_string().contains("wasi_snapshot_preview1.fd_write"),
            "{err}"
        );
        let wrong_type = wat::parse_str(
            r#"(module (import "env" "onvm_log" (func (param i32)))
               (memory (export "memory") 1) (func (export "onvm_main") (param i32 i32) (result i64) i64.const 0))"#,
        )
        .unwrap();
        assert!(matches!(
            vm.compile(&wrong_type, &ep),
            Err(VmError::BadImportType { .. })
        ));
        let no_memory = wat::parse_str(
            r#"(module (func (export "onvm_main") (param i32 i32) (result i64) i64.const 0))"#,
        )
        .unwrap();
        assert!(matches!(
            vm.compile(&no_memory, &ep),
            Err(VmError::NoMemory)
        ));
        let bad_entry = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "onvm_main") (param i32) (result i32) i32.const 0))"#).unwrap();
        assert!(matches!(
            vm.compile(&bad_entry, &ep),
            Err(VmError::BadEntrypoint { .. })
        ));
        let huge_memory = wat::parse_str(r#"(module (memory (export "memory") 1000) (func (export "onvm_main") (param i32 i32) (result i64) i64.const 0))"#).unwrap();
        let err = vm.compile(&huge_memory, &ep).unwrap_err();
        // The pooling allocator refuses it while compiling; either way the reason names memory.
        assert!(
            matches!(err, VmError::MemoryTooLarge { .. })
                || err.to_string().contains("memory has a minimum byte size"),
            "{err:?}"
        );
        let small = Vm::new(VmConfig {
            max_module_bytes: 10,
            max_concurrent_calls: 1,
            ..VmConfig::default()
        })
        .unwrap();
        assert!(matches!(
            small.compile(&wat::parse_str(ECHO_MULTI).unwrap(), &ep),
            Err(VmError::ModuleTooLarge { .. })
        ));
    }

    #[test]
    fn next_key_merges_committed_state_with_this_calls_writes() {
        let mut committed = MemoryState::default();
        for k in [b"p/a".as_slice(), b"p/c", b"p/e", b"q/z"] {
            committed.0.insert(k.to_vec(), b"1".to_vec());
        }
        let mut host = HostState {
            state: Arc::new(committed),
            overlay: BTreeMap::new(),
            read_only: false,
            context: request(b"").context,
            blobs: Arc::new(HashMap::new()),
            logs: Vec::new(),
            log_bytes: 0,
            logs_truncated: false,
            write_bytes: 0,
            limits: VmConfig::default(),
        };
        host.overlay.insert(b"p/b".to_vec(), Some(b"2".to_vec()));
        host.overlay.insert(b"p/c".to_vec(), None);
        let mut keys = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        while let Some(k) = host.next_key(b"p/", after.as_deref()).unwrap() {
            keys.push(String::from_utf8(k.clone()).unwrap());
            after = Some(k);
        }
        assert_eq!(keys, ["p/a", "p/b", "p/e"]);
    }

    #[test]
    fn cancellation_stops_a_running_call_promptly() {
        let vm = vm();
        let wat = r#"(module (memory (export "memory") 1)
            (func (export "onvm_main") (param i32 i32) (result i32 i32) (loop $l br $l) i32.const 0 i32.const 0))"#;
        let compiled = vm
            .compile(&wat::parse_str(wat).unwrap(), &["onvm_main".to_string()])
            .unwrap();
        let mut req = request(b"");
        req.fuel = u64::MAX / 2;
        let flag = Arc::new(AtomicBool::new(false));
        req.cancel = Some(flag.clone());
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            flag.store(true, Ordering::Relaxed);
        });
        let started = std::time::Instant::now();
        let r = vm.call(&compiled, req, Arc::new(MemoryState::default()));
        setter.join().unwrap();
        assert_eq!(r.outcome, Outcome::Cancelled);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn timeouts_stop_long_calls() {
        let vm = vm();
        let wat = r#"(module (memory (export "memory") 1)
            (func (export "onvm_main") (param i32 i32) (result i32 i32) (loop $l br $l) i32.const 0 i32.const 0))"#;
        let compiled = vm
            .compile(&wat::parse_str(wat).unwrap(), &["onvm_main".to_string()])
            .unwrap();
        let mut req = request(b"");
        req.fuel = u64::MAX / 2;
        req.timeout = Duration::from_millis(50);
        let r = vm.call(&compiled, req, Arc::new(MemoryState::default()));
        assert_eq!(r.outcome, Outcome::Timeout);
    }

    /// An interrupted call reports the fuel it really ran: `stop` fires at the n-th check, so
    /// the call ran n slices (each ends at the first fuel check past it, a few units over).
    #[test]
    fn an_interrupted_call_reports_the_fuel_it_ran() {
        let vm = vm();
        let wat = r#"(module (memory (export "memory") 1)
            (func (export "onvm_main") (param i32 i32) (result i32 i32) (loop $l br $l) i32.const 0 i32.const 0))"#;
        let compiled = vm
            .compile(&wat::parse_str(wat).unwrap(), &["onvm_main".to_string()])
            .unwrap();
        let mut used = Vec::new();
        for slices in [1u64, 3, 10] {
            let mut req = request(b"");
            req.fuel = u64::MAX / 2;
            let mut checks = 0;
            let r = vm.call_until(&compiled, req, Arc::new(MemoryState::default()), || {
                checks += 1;
                (checks == slices).then(|| host_trap("cancelled", "stop"))
            });
            assert_eq!(r.outcome, Outcome::Cancelled);
            assert!(
                r.fuel_used >= slices * FUEL_SLICE && r.fuel_used < slices * (FUEL_SLICE + 100),
                "{slices} slices reported {} fuel",
                r.fuel_used
            );
            used.push(r.fuel_used);
        }
        assert!(used[0] < used[1] && used[1] < used[2], "{used:?}");
    }

    /// The store survives an interrupted call: the next call on the same module runs normally.
    #[test]
    fn a_call_after_an_interrupted_one_runs_normally() {
        let vm = vm();
        let wat = r#"(module (memory (export "memory") 1)
            (func (export "onvm_main") (param i32 i32) (result i32 i32)
              (if (i32.eqz (local.get 1)) (then (loop $l br $l)))
              local.get 0 local.get 1))"#;
        let compiled = vm
            .compile(&wat::parse_str(wat).unwrap(), &["onvm_main".to_string()])
            .unwrap();
        for _ in 0..3 {
            let mut req = request(b"");
            req.fuel = u64::MAX / 2;
            req.timeout = Duration::from_millis(20);
            let r = vm.call(&compiled, req, Arc::new(MemoryState::default()));
            assert_eq!(r.outcome, Outcome::Timeout);
            assert!(r.fuel_used >= FUEL_SLICE, "{}", r.fuel_used);
            let r = vm.call(
                &compiled,
                request(b"echo"),
                Arc::new(MemoryState::default()),
            );
            assert_eq!((r.outcome, r.output), (Outcome::Ok, b"echo".to_vec()));
        }
    }
}
