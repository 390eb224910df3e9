#!/usr/bin/env node
// A minimal reference host for ONVM guest programs, following docs/ABI.md (version 1), on
// Node's WebAssembly engine. For trying programs locally and for tools/test_examples.mjs — not
// the real node: no fuel, no memory cap, no watchdog, and the state root is whatever you pass.
// Limits are the node's defaults: keys 1..=256 bytes, values <= 1 MiB, 10 000 distinct keys
// written per call, logs <= 64 KiB and 1000 lines, output <= 4 MiB.
//
// CLI: node tools/minihost.mjs MODULE.wasm [INPUT_FILE|-] [--state STATE.json] [--read-only]
//        [--blob HEXID=FILE]... [--entry NAME]
// Prints the output to stdout and the log lines and the outcome to stderr. With --state, the
// state ({"<hex key>": "<hex value>"}) is read from the file and, if the call ends `ok` and is
// not read-only, written back. Exit status: 0 ok, 1 any other outcome.

import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export const NOT_FOUND = -(2n ** 32n);
const MAX_KEY_BYTES = 256;
const MAX_VALUE_BYTES = 1 << 20;
const MAX_LOG_BYTES = 64 * 1024;
const MAX_LOG_LINES = 1000;
const MAX_WRITES_PER_CALL = 10000;
const MAX_OUTPUT_BYTES = 4 << 20;
const PAGE = 65536;

const ABI = [
  'onvm_state_get', 'onvm_state_put', 'onvm_state_del', 'onvm_state_next', 'onvm_state_root',
  'onvm_blob_len', 'onvm_blob_read', 'onvm_log', 'onvm_caller', 'onvm_context', 'onvm_abort',
];

export class Outcome extends Error {
  constructor(outcome, kind, message) {
    super(`${outcome}${kind ? ` (${kind})` : ''}: ${message}`);
    this.outcome = outcome;
    this.kind = kind;
  }
}
const trap = (kind, message) => new Outcome('trap', kind, message);

export const hex = (bytes) => Buffer.from(bytes).toString('hex');
export const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'));

/**
 * Runs one call. `state`: Map<hex key, Uint8Array>; `blobs`: Map<hex id, Uint8Array>.
 * Returns {output: Uint8Array, state: Map (new state), logs: string[], truncated: bool};
 * throws an Outcome for any outcome but `ok`.
 */
export function call(wasm, input, opts = {}) {
  const {
    state = new Map(), blobs = new Map(), readOnly = false, entry = 'onvm_main',
    caller = new Uint8Array(32), root = new Uint8Array(32),
    context = { height: 0n, timestampMs: 0n, seed: new Uint8Array(32) },
  } = opts;
  const module = new WebAssembly.Module(wasm);
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== 'env' || imp.kind !== 'function' || !ABI.includes(imp.name)) {
      throw new Outcome('rejected', null, `import ${imp.module}.${imp.name} is not in the ABI`);
    }
  }
  const overlay = new Map(state);
  const written = new Set();
  const logs = [];
  let logBytes = 0;
  let truncated = false;
  let memory = null;

  const view = (fn, ptr, len) => {
    ptr >>>= 0; len >>>= 0;
    if (ptr + len > memory.buffer.byteLength) throw trap('host_bad_pointer', fn);
    return new Uint8Array(memory.buffer, ptr, len);
  };
  const bytes = (fn, ptr, len) => view(fn, ptr, len).slice();
  const fill = (fn, ptr, cap, data) => {
    const buf = view(fn, ptr, cap);
    if (data.length > buf.length) return -BigInt(data.length);
    buf.set(data);
    return BigInt(data.length);
  };
  const checkWrite = (fn, key) => {
    if (readOnly) throw trap('read_only', fn);
    if (key.length < 1 || key.length > MAX_KEY_BYTES) throw trap('host_limit', `${fn}: key length`);
    const k = hex(key);
    if (!written.has(k) && written.size >= MAX_WRITES_PER_CALL) {
      throw trap('host_limit', `${fn}: more than ${MAX_WRITES_PER_CALL} keys written`);
    }
    written.add(k);
  };

  const env = {
    onvm_state_get(kp, kl, bp, bc) {
      const v = overlay.get(hex(bytes('onvm_state_get', kp, kl)));
      return v === undefined ? NOT_FOUND : fill('onvm_state_get', bp, bc, v);
    },
    onvm_state_put(kp, kl, vp, vl) {
      const key = bytes('onvm_state_put', kp, kl);
      const value = bytes('onvm_state_put', vp, vl);
      checkWrite('onvm_state_put', key);
      if (value.length > MAX_VALUE_BYTES) throw trap('host_limit', 'onvm_state_put: value length');
      overlay.set(hex(key), value);
      return 0;
    },
    onvm_state_del(kp, kl) {
      const key = bytes('onvm_state_del', kp, kl);
      checkWrite('onvm_state_del', key);
      return overlay.delete(hex(key)) ? 1 : 0;
    },
    onvm_state_next(pp, pl, ap, al, bp, bc) {
      // Lowercase hex preserves bytewise order (and prefixes).
      const prefix = hex(bytes('onvm_state_next', pp, pl));
      const after = hex(bytes('onvm_state_next', ap, al));
      let best = null;
      for (const k of overlay.keys()) {
        if (k.startsWith(prefix) && (after === '' || k > after) && (best === null || k < best)) {
          best = k;
        }
      }
      return best === null ? NOT_FOUND : fill('onvm_state_next', bp, bc, unhex(best));
    },
    onvm_state_root(bp) { view('onvm_state_root', bp, 32).set(root); return 32; },
    onvm_blob_len(ip) {
      const b = blobs.get(hex(bytes('onvm_blob_len', ip, 32)));
      return b === undefined ? NOT_FOUND : BigInt(b.length);
    },
    onvm_blob_read(ip, offset, bp, bc) {
      const b = blobs.get(hex(bytes('onvm_blob_read', ip, 32)));
      if (b === undefined) return NOT_FOUND;
      if (offset < 0n) throw trap('host_bad_pointer', 'onvm_blob_read: negative offset');
      const start = offset > BigInt(b.length) ? b.length : Number(offset);
      const chunk = b.subarray(start, start + (bc >>> 0));
      return fill('onvm_blob_read', bp, bc, chunk);
    },
    onvm_log(p, l) {
      const line = bytes('onvm_log', p, l);
      if (logs.length >= MAX_LOG_LINES || logBytes + line.length > MAX_LOG_BYTES) {
        truncated = true;
        return;
      }
      logBytes += line.length;
      logs.push(Buffer.from(line).toString('utf8'));
    },
    onvm_caller(bp) { view('onvm_caller', bp, 32).set(caller); return 32; },
    onvm_context(bp) {
      const b = Buffer.alloc(48);
      b.writeBigUInt64LE(BigInt(context.height), 0);
      b.writeBigUInt64LE(BigInt(context.timestampMs), 8);
      b.set(context.seed, 16);
      view('onvm_context', bp, 48).set(b);
      return 48;
    },
    onvm_abort(p, l) {
      throw trap('guest_abort', Buffer.from(bytes('onvm_abort', p, l)).toString('utf8'));
    },
  };

  let output;
  try {
    const instance = new WebAssembly.Instance(module, { env });
    const ex = instance.exports;
    memory = ex.memory;
    if (!(memory instanceof WebAssembly.Memory)) throw new Outcome('rejected', null, 'no memory export');
    const f = ex[entry];
    if (typeof f !== 'function') throw new Outcome('rejected', null, `no entrypoint ${entry}`);

    // 1. Place the input.
    let ptr;
    if (typeof ex.onvm_alloc === 'function') {
      ptr = ex.onvm_alloc(input.length) >>> 0;
      if (ptr === 0 || ptr + input.length > memory.buffer.byteLength) {
        throw trap('bad_alloc', `onvm_alloc(${input.length}) returned ${ptr}`);
      }
    } else {
      ptr = memory.grow(Math.max(1, Math.ceil(input.length / PAGE))) * PAGE;
    }
    new Uint8Array(memory.buffer, ptr, input.length).set(input);

    // 2. Call the entrypoint (shape by arity and result type).
    let outPtr, outLen;
    if (f.length === 3) {
      const sret = memory.grow(1) * PAGE;
      f(sret, ptr, input.length);
      const dv = new DataView(memory.buffer);
      outPtr = dv.getUint32(sret, true);
      outLen = dv.getUint32(sret + 4, true);
    } else {
      const r = f(ptr, input.length);
      if (typeof r === 'bigint') {
        const u = BigInt.asUintN(64, r);
        outPtr = Number(u >> 32n);
        outLen = Number(u & 0xffffffffn);
      } else if (Array.isArray(r) && r.length === 2) {
        outPtr = r[0] >>> 0;
        outLen = r[1] >>> 0;
      } else {
        throw new Outcome('rejected', null, 'entrypoint has no known shape');
      }
    }
    // 3. Copy the output.
    if (outPtr + outLen > memory.buffer.byteLength || outLen > MAX_OUTPUT_BYTES) {
      throw new Outcome('bad_output', null, `output (${outPtr}, ${outLen})`);
    }
    output = new Uint8Array(memory.buffer, outPtr, outLen).slice();
  } catch (e) {
    if (e instanceof Outcome) throw e;
    if (e instanceof WebAssembly.RuntimeError) throw trap('wasm', e.message);
    if (e instanceof RangeError) throw new Outcome('memory_limit', null, e.message);
    throw e;
  }
  return { output, state: readOnly ? new Map(state) : overlay, logs, truncated };
}

function main(argv) {
  const args = argv.slice(2);
  const opts = { blobs: new Map() };
  let statePath = null;
  const positional = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--state') statePath = args[++i];
    else if (a === '--read-only') opts.readOnly = true;
    else if (a === '--entry') opts.entry = args[++i];
    else if (a === '--blob') {
      const [id, file] = args[++i].split('=');
      opts.blobs.set(id.toLowerCase(), new Uint8Array(fs.readFileSync(file)));
    } else positional.push(a);
  }
  if (positional.length < 1) {
    process.stderr.write('usage: minihost.mjs MODULE.wasm [INPUT_FILE|-] [--state FILE] ' +
      '[--read-only] [--blob HEXID=FILE]... [--entry NAME]\n');
    return 2;
  }
  const wasm = fs.readFileSync(positional[0]);
  const inputPath = positional[1] ?? '-';
  const input = new Uint8Array(fs.readFileSync(inputPath === '-' ? 0 : inputPath));
  if (statePath && fs.existsSync(statePath)) {
    const obj = JSON.parse(fs.readFileSync(statePath, 'utf8'));
    opts.state = new Map(Object.entries(obj).map(([k, v]) => [k, unhex(v)]));
  }
  try {
    const r = call(wasm, input, opts);
    for (const line of r.logs) process.stderr.write(`log: ${line}\n`);
    if (r.truncated) process.stderr.write('log: (truncated)\n');
    process.stdout.write(r.output);
    process.stderr.write('\noutcome: ok\n');
    if (statePath && !opts.readOnly) {
      const obj = Object.fromEntries([...r.state.entries()].sort().map(([k, v]) => [k, hex(v)]));
      fs.writeFileSync(statePath, JSON.stringify(obj, null, 1) + '\n');
    }
    return 0;
  } catch (e) {
    if (!(e instanceof Outcome)) throw e;
    process.stderr.write(`outcome: ${e.message}\n`);
    return 1;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === fs.realpathSync(process.argv[1])) {
  process.exit(main(process.argv));
}
