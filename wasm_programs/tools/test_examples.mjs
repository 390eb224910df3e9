#!/usr/bin/env node
// Runs the built .wasm programs (./build.sh first) on every documented example under
// tools/minihost.mjs and compares the outputs with the programs' README.md files; also checks
// the ABI paths the native unit tests cannot reach (input placement, packed output, buffer
// retries, traps). Usage: node tools/test_examples.mjs
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { call, hex, Outcome } from './minihost.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const wasmDir = path.join(root, 'target/wasm32-unknown-unknown/release');
const load = (name) => fs.readFileSync(path.join(wasmDir, `${name}.wasm`));
const read = (...p) => fs.readFileSync(path.join(root, ...p));
const text = (u8) => Buffer.from(u8).toString('utf8');
const enc = (s) => new Uint8Array(Buffer.from(s, 'utf8'));

let failures = 0;
let checks = 0;
function check(cond, what) {
  checks++;
  if (!cond) { failures++; console.log(`FAIL: ${what}`); }
}
function expectOutcome(fn, outcome, kind, what) {
  try { fn(); check(false, `${what}: expected ${outcome}/${kind}, got ok`); } catch (e) {
    if (!(e instanceof Outcome)) throw e;
    check(e.outcome === outcome && e.kind === kind, `${what}: got ${e.message}`);
    return e;
  }
}

// echo: examples/<name> -> examples/<name>.expected, via the fresh-pages input path.
{
  const wasm = load('echo');
  const exports = WebAssembly.Module.exports(new WebAssembly.Module(wasm)).map((e) => e.name);
  check(!exports.includes('onvm_alloc'), 'echo must not export onvm_alloc');
  for (const f of fs.readdirSync(path.join(root, 'echo/examples'))) {
    if (f.endsWith('.expected')) continue;
    const out = call(wasm, read('echo/examples', f)).output;
    check(Buffer.compare(out, read('echo/examples', `${f}.expected`)) === 0, `echo ${f}`);
  }
  check(call(wasm, new Uint8Array(0)).output.length === 0, 'echo of empty input');
  const big = enc('abc'.repeat(100000));
  check(text(call(wasm, big).output) === 'ABC'.repeat(100000), 'echo of 300 kB');
}

// kvstore: the README's session, in order, with state carried from call to call.
{
  const wasm = load('kvstore');
  const readme = read('kvstore/README.md').toString();
  const rows = [...readme.matchAll(/^\| (\d+) \| `([^`]+)` \| `(.*)` \| `(.*)` \|$/gm)];
  check(rows.length === 17, `kvstore README rows: ${rows.length}`);
  let state = new Map();
  for (const [, step, file, input, expected] of rows) {
    const raw = read('kvstore/examples', file);
    check(raw.toString().trim() === input, `kvstore ${file} matches README`);
    const r = call(wasm, raw, { state });
    state = r.state;
    check(text(r.output) === expected, `kvstore step ${step} ${file}: ${text(r.output)}`);
  }
  check(state.size === 0, 'kvstore state empty after the session');
  // A value larger than the SDK's first buffer (retry path), read in a read-only call.
  const value = Buffer.alloc(5000, 7).toString('base64');
  state = call(wasm, enc(JSON.stringify({ op: 'put', key: 'big', data_base64: value })), { state }).state;
  const got = JSON.parse(text(call(wasm, enc('{"op":"get","key":"big"}'), { state, readOnly: true }).output));
  check(got.data_base64 === value && got.size === 5000, 'kvstore get of 5000 bytes');
  check(state.get(hex(enc('m/count'))).length === 8, 'kvstore m/count is 8 bytes');
  // Writes in a read-only call trap; bad input does not.
  expectOutcome(() => call(wasm, enc('{"op":"put","key":"x","data_base64":""}'), { state, readOnly: true }),
    'trap', 'read_only', 'kvstore put in a read-only call');
  const bad = JSON.parse(text(call(wasm, enc('\u0000garbage')).output));
  check(bad.ok === false && bad.error === 'bad_request', 'kvstore garbage input');
  // Keys of every length up to the maximum, paged through.
  state = new Map();
  for (let i = 1; i <= 200; i += 7) {
    state = call(wasm, enc(JSON.stringify({ op: 'put', key: 'k'.repeat(i), data_base64: 'AA==' })), { state }).state;
  }
  let after = null; let seen = 0;
  for (;;) {
    const r = JSON.parse(text(call(wasm, enc(JSON.stringify({ op: 'list', after, limit: 4 })), { state }).output));
    seen += r.keys.length;
    if (r.next === null) break;
    after = r.next;
  }
  check(seen === 29, `kvstore paged through ${seen} keys`);
  const cleared = call(wasm, enc('{"op":"clear"}'), { state });
  check(text(cleared.output) === '{"ok":true,"deleted":29}' && cleared.state.size === 0, 'kvstore clear');
  // clear in batches of 5000, below the host's 10 000 writes per call.
  state = new Map();
  for (let i = 0; i < 5003; i++) state.set(hex(enc(`d/k${String(i).padStart(5, '0')}`)), enc('ab'));
  state.set(hex(enc('m/count')), new Uint8Array(Buffer.from('8b13000000000000', 'hex'))); // 5003
  state.set(hex(enc('m/bytes')), new Uint8Array(Buffer.from('1627000000000000', 'hex'))); // 10006
  let r = call(wasm, enc('{"op":"clear"}'), { state });
  check(text(r.output) === '{"ok":true,"deleted":5000,"more":true}', `kvstore clear batch 1: ${text(r.output)}`);
  check(text(call(wasm, enc('{"op":"stats"}'), { state: r.state }).output) === '{"ok":true,"count":3,"total_bytes":6}', 'kvstore stats after batch 1');
  r = call(wasm, enc('{"op":"clear"}'), { state: r.state });
  check(text(r.output) === '{"ok":true,"deleted":3}' && r.state.size === 0, `kvstore clear batch 2: ${text(r.output)}`);
}

// analytics: the README's blocks.
{
  const wasm = load('analytics');
  const readme = read('analytics/README.md').toString();
  const blocks = [...readme.matchAll(/^`([^`]+)`:\n```json\n(.*)\n```\n→\n```json\n(.*)\n```$/gm)];
  check(blocks.length === 4, `analytics README blocks: ${blocks.length}`);
  for (const [, file, input, expected] of blocks) {
    const raw = read('analytics/examples', file);
    check(raw.toString().trim() === input, `analytics ${file} matches README`);
    check(text(call(wasm, raw).output) === expected, `analytics ${file}: ${text(call(wasm, raw).output)}`);
  }
}

// job-test: the README's rows, in order, plus the calls without output.
{
  const wasm = load('job_test');
  const readme = read('job-test/README.md').toString();
  const rows = [...readme.matchAll(/^\| `([^`]+\.json)` \| `(.*?)` \| `(.*?)`/gm)];
  check(rows.length === 9, `job-test README rows: ${rows.length}`);
  let state = new Map();
  const blobs = new Map([['d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24', enc('hello world')]]);
  for (const [, file, input, expected] of rows) {
    const raw = read('job-test/examples', file);
    check(raw.toString().trim() === input, `job-test ${file} matches README`);
    const r = call(wasm, raw, { state, blobs });
    state = r.state;
    check(text(r.output) === expected, `job-test ${file}: ${text(r.output)}`);
    if (file === 'log.json') check(r.logs.length === 3 && r.logs[0] === 'hello from job-test', 'job-test logs');
  }
  check(state.size === 1 && hex(state.get(hex(enc('runs')))) === '0200000000000000', 'job-test runs = 2');
  const e = expectOutcome(() => call(wasm, read('job-test/examples/fail.json'), { state }), 'trap', 'guest_abort', 'job-test fail');
  check(e && e.message.endsWith('deliberate failure'), 'job-test fail message');
  expectOutcome(() => call(wasm, read('job-test/examples/count.json'), { state, readOnly: true }),
    'trap', 'read_only', 'job-test count in a read-only call');
  const ctx = JSON.parse(text(call(wasm, read('job-test/examples/context.json'), {
    caller: new Uint8Array(32).fill(0xab), root: new Uint8Array(32).fill(1),
    context: { height: 12n, timestampMs: 1700000000000n, seed: new Uint8Array(32).fill(0x0f) },
  }).output));
  check(ctx.caller === 'ab'.repeat(32) && ctx.height === 12 && ctx.timestamp_ms === 1700000000000 &&
    ctx.seed === '0f'.repeat(32) && ctx.state_root === '01'.repeat(32), `job-test context ${JSON.stringify(ctx)}`);
  const nf = JSON.parse(text(call(wasm, read('job-test/examples/blob.json')).output));
  check(nf.error === 'not_found', 'job-test blob not visible');
  // A blob larger than one read.
  const bigBlob = new Uint8Array(300000).map((_, i) => i % 251);
  const r = JSON.parse(text(call(wasm, read('job-test/examples/blob.json'), { blobs: new Map([[blobs.keys().next().value, bigBlob]]) }).output));
  check(r.size === 300000, 'job-test blob of 300 kB');
  // Memory: 8 MiB works (the stress row above); 5000 MiB aborts.
  expectOutcome(() => call(wasm, enc('{"task":"stress","iterations":1,"memory_mb":5000}')), 'trap', 'guest_abort', 'job-test absurd memory_mb');
}

console.log(`${checks - failures}/${checks} checks passed`);
process.exit(failures ? 1 : 0);
