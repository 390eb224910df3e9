// onvm.js: the browser (and Node 20+) client of an ONVM node. One ES module, no build step, no
// dependencies; a node serves it at `GET /onvm.js`.
//
//   import { Onvm } from 'http://127.0.0.1:8080/onvm.js';
//   const c = await Onvm.connect('ws://127.0.0.1:8080', { token });
//   const info = await c.nodeInfo();
//   const me = await Onvm.callerKey('rsvp');                       // ed25519, kept in IndexedDB
//   const r = await c.programExecute(prog, { op: 'rsvp', attending: true }, { signer: me });
//   for await (const item of c.receiptSubscribe(prog, { fromSeq: 1 })) { … }
//
// The wire contract is docs/RPC.md; every method of rpc-api/src/methods.rs has a camelCase
// method here (`program_execute` → `programExecute`), and `call(method, params)` sends anything.
// Parameters are sent by name. Subscriptions resume by themselves: the client remembers the last
// `seq` it delivered and, after a dropped connection (reconnected with backoff) or a `lagged`
// close, subscribes again from the next one, skipping anything it already delivered.
//
// Signed calls (docs/RPC.md "Signed calls") need the exact bytes to sign, which come from the
// verifier module (`./verifier.js` and its wasm, loaded on first use), and WebCrypto Ed25519.

/** Default lifetime of a call signature. */
const DEFAULT_VALID_FOR_MS = 5 * 60 * 1000;

// ---------------------------------------------------------------------------------------------
// Types (JSDoc). Ids are strings: `blob…`, `prog…`, `rcpt…`, `job…`, `upload…` + hex; hashes and
// keys are lowercase hex; byte payloads are standard base64 (`*_base64`).
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {Object} ConnectOptions
 * @property {string} [token] API token (`onvm token create`); sent as `?token=` (browsers cannot set WebSocket headers).
 * @property {boolean} [reconnect=true] Reconnect with backoff after the connection drops, and resume subscriptions.
 * @property {number} [backoffMinMs=250] First reconnect delay.
 * @property {number} [backoffMaxMs=10000] Longest reconnect delay (the delay doubles, with ±25% jitter).
 * @property {number} [callTimeoutMs=60000] A call with no answer after this long fails (`kind: "timeout"`).
 * @property {number} [connectTimeoutMs=10000] Opening the WebSocket fails after this long.
 * @property {string|URL} [verifierUrl] Where `verifier.js` is (default: next to this module).
 * @property {string|URL} [wasmUrl] Where the verifier's wasm is (default: `./onvm_verifier.wasm` next to this module).
 * @property {Verifier|Promise<Verifier>} [verifier] A verifier already loaded (tests).
 * @property {typeof WebSocket} [WebSocket] WebSocket implementation (default: the global one).
 */

/**
 * @typedef {Object} NodeInfo
 * @property {string} endpoint_id  @property {string} ticket  @property {string} version
 * @property {string} network_id  @property {string[]} addresses  @property {string|null} relay_url
 * @property {boolean} relay_connected  @property {string[]} relays  @property {boolean} relay_only
 * @property {string} bls_public_key  @property {boolean} offline  @property {number} uptime_secs
 */
/** @typedef {{name: string, ok: boolean, detail: string}} HealthCheck */
/** @typedef {{live: boolean, ready: boolean, reason: string|null, checks: HealthCheck[]}} Health */
/**
 * @typedef {Object} Metrics
 * @property {number} uptime_secs
 * @property {Object<string, number>} counters e.g. `calls_executed`, `calls_failed`, `fuel_used`, `jobs_completed`, …
 * @property {Object<string, number>} gauges e.g. `jobs_pending`, `job_latency_p50_ms`, …
 */
/** @typedef {{id: string, size: number, mime: string|null, created_at_ms: number}} BlobStat */
/** @typedef {{id: string, offset: number, data_base64: string, total_size: number, eof: boolean, mime: string|null}} BlobChunk */
/** @typedef {{items: BlobStat[], next_cursor: string|null}} BlobPage */
/** @typedef {{upload_id: string, size: number, received: number, mime: string|null, max_chunk_bytes: number, expires_at_ms: number}} UploadStatus */
/**
 * @typedef {Object} DeployRequest
 * @property {string} [wasm_base64] The module inline, or:
 * @property {string} [code_blob] a blob already stored.
 * @property {string} [entrypoint] Default `onvm_main`.
 * @property {string[]} [extra_entrypoints]  @property {string[]} [blob_refs]  @property {string} [salt]
 * @property {number} [committee_size]  @property {number} [threshold] Only the BFT quorum of the committee is accepted.
 * @property {boolean} [require_signed_calls] Refuse anonymous writing calls.
 */
/** @typedef {{endpoint_id: string, bls_public_key: string, proof_of_possession: string}} Member */
/** @typedef {{program_id: string, epoch: number, members: Member[], threshold: number}} Committee */
/**
 * @typedef {Object} ProgramManifest
 * @property {number} version  @property {string} network_id  @property {string} program_id  @property {string} code
 * @property {number} code_size  @property {string} salt  @property {string[]} entrypoints The default first.
 * @property {string[]} blob_refs  @property {number} abi_version  @property {string} engine
 * @property {string} initial_state_root  @property {string} deployer  @property {number} deployed_at_ms
 * @property {Member[]} committee  @property {number} threshold  @property {number} deploy_nonce
 * @property {string[]} candidates  @property {boolean} require_signed_calls
 */
/** @typedef {{manifest: ProgramManifest, signature: string}} SignedManifest */
/** @typedef {{program_id: string, created: boolean, manifest: SignedManifest}} DeployResult */
/** @typedef {{program_id: string, manifest: SignedManifest, state_root: string, height: number, keys: number}} ProgramInfo */
/** @typedef {{items: ProgramInfo[], next_cursor: string|null}} ProgramPage */
/** @typedef {{version: number, caller: string, expires_at_ms: number, signature: string}} CallSignature */
/**
 * @typedef {Object} ExecuteOptions What `program_execute` takes (all optional), plus the client-side `signer` and `validForMs`.
 * @property {number} [fuel]  @property {boolean} [read_only]  @property {string} [entrypoint]
 * @property {number} [timeout_ms]  @property {number} [timestamp_ms]
 * @property {string} [request_id] Idempotency key (1..=128 bytes). The client picks a random one for writing calls when none is given, so it can resend a call cut off by a dropped connection without running it twice.
 * @property {CallSignature} [signed] A signature made elsewhere; usually give `signer` instead.
 * @property {CallerKey} [signer] Sign the call as this caller (fills `signed`, `request_id` and `entrypoint`).
 * @property {number} [validForMs=300000] Lifetime of the signature made with `signer`.
 */
/**
 * @typedef {"ok"|"out_of_fuel"|"memory_limit"|"stack_overflow"|"timeout"|"cancelled"|{trap: {kind: string, message: string}}|{bad_output: {message: string}}|{rejected: {message: string}}} Outcome
 */
/** @typedef {{request_id: string, expires_at_ms: number, signature: string, job: {attempt: number, max_attempts: number}|null}} CallerProof */
/**
 * @typedef {Object} ExecutionReceipt
 * @property {number} version  @property {string} network_id  @property {string} program_id  @property {string} code_hash
 * @property {string} engine  @property {string} entrypoint  @property {number} height Position in the program's log.
 * @property {string} input_hash BLAKE3 of the input.  @property {string} caller All zeros for an anonymous call.
 * @property {string} call_id  @property {CallerProof|null} caller_proof  @property {number} timestamp_ms
 * @property {string} seed  @property {string} state_root_in  @property {string} state_root_out  @property {string} write_digest
 * @property {string} output_hash  @property {number} output_len  @property {number} fuel_limit  @property {number} fuel_used
 * @property {Outcome} outcome  @property {string} executor
 */
/** @typedef {{epoch: number, signers: string, signature: string}} Attestation `signers`: hex bitmap, bit i = member i. */
/** @typedef {{id: string, receipt: ExecutionReceipt, signer_bls_key: string, signature: string, attestation?: Attestation|null}} SignedReceipt */
/**
 * @typedef {Object} ExecuteResult
 * @property {string} program_id  @property {Outcome} outcome  @property {string} output_base64  @property {number} fuel_used
 * @property {string} state_root_in  @property {string} state_root_out  @property {string[]} logs  @property {boolean} logs_truncated
 * @property {SignedReceipt|null} receipt Absent for read-only calls.
 */
/** @typedef {{program_id: string, key_base64: string, value_base64: string|null, state_root: string}} StateValue */
/** @typedef {{program_id: string, state_root: string, height: number, keys: number}} StateRoot */
/** @typedef {{siblings: string[], terminal: {kind: "empty"}|{kind: "leaf", key_hash: string, value_hash: string}}} SmtProof */
/** @typedef {{program_id: string, key_base64: string, value_base64: string|null, state_root: string, proof: SmtProof}} StateProof */
/** @typedef {{items: SignedReceipt[], next_before_height: number|null}} ReceiptPage */
/** @typedef {{valid: boolean, reason: string|null, signers: string[], threshold: number, committee_size: number}} ReceiptVerification */
/** @typedef {{height: number, proposed: ExecutionReceipt, computed: ExecutionReceipt, recorded_at_ms: number}} Evidence */
/** @typedef {"pending"|"running"|"completed"|"failed"|"cancelled"|"timed_out"} JobStatus */
/**
 * @typedef {Object} SubmitJob
 * @property {string} program_id  @property {string} request_id  @property {string} [input_base64]  @property {string} [input_blob]
 * @property {string} [entrypoint]  @property {number} [max_retries]  @property {number} [timeout_ms]  @property {number} [fuel]
 * @property {*} [metadata]  @property {CallSignature} [signed]
 */
/** @typedef {{number: number, started_at_ms: number, finished_at_ms: number|null, outcome: string|null, error: string|null, fuel_used: number, receipt_id: string|null}} JobAttempt */
/**
 * @typedef {Object} JobInfo
 * @property {string} job_id  @property {string} program_id  @property {string} request_id  @property {string} input_hash
 * @property {number} input_size  @property {string} input_blob  @property {string|null} entrypoint  @property {JobStatus} status
 * @property {number} max_retries  @property {number} timeout_ms  @property {number} fuel  @property {*} metadata
 * @property {JobAttempt[]} attempts  @property {number} created_at_ms  @property {number} updated_at_ms
 * @property {number|null} next_run_at_ms  @property {string|null} error  @property {string|null} output_blob
 * @property {number|null} output_size  @property {string|null} receipt_id  @property {boolean} cancel_requested
 * @property {CallSignature|null} [signed]
 */
/** @typedef {{job: JobInfo, created: boolean}} SubmitResult */
/** @typedef {{job_id: string, output_blob: string, size: number, output_base64: string|null}} JobOutput */
/** @typedef {{job_id: string, attempts: {attempt: number, lines: string[], truncated: boolean}[]}} JobLogs */
/** @typedef {{status?: JobStatus, program_id?: string}} JobFilter */
/** @typedef {{items: JobInfo[], next_cursor: string|null}} JobPage */
/**
 * @typedef {Object} PeerInfo
 * @property {string} endpoint_id  @property {string} ticket  @property {string} network_id  @property {string} version
 * @property {"direct"|"relayed"|"unknown"} connection  @property {number|null} latency_ms  @property {number} last_seen_ms
 * @property {string|null} last_error  @property {number} rejected  @property {boolean} suspected
 */
/** @typedef {{heads: string[], count: number, refused: {id: string, reason: string}[], deferred: number}} DagHeads */
/** @typedef {{body: {version: number, network_id: string, author: string, parents: string[], timestamp_ms: number, payload: Object}, signature: string}} DagNode */
/** @typedef {{scopes: string[], expires_in_secs?: number, origins?: string[], label?: string}} TokenRequest */
/** @typedef {{id: string, scopes: string[], origins: string[], label: string|null, created_at_ms: number, expires_at_ms: number|null}} TokenInfo */
/** @typedef {{token: string, info: TokenInfo}} CreatedToken */
/** @typedef {{type: "receipt", seq: number, receipt: SignedReceipt}} ReceiptItem */
/** @typedef {{type: "event", seq: number, job_id: string, program_id: string, status: JobStatus, attempt: number, fuel_used: number, error: string|null, at_ms: number}} JobEventItem */
/** @typedef {{type: "node", seq: number, id: string, node: DagNode}} DagItem */
/**
 * @typedef {Object} SubscribeOptions
 * @property {number} [fromSeq] Replay from this sequence number (1: everything); absent: only new items (a job's whole history for `jobSubscribe`).
 * @property {(item: Object, sub: Subscription) => void} [onItem] Callback mode: items go here instead of to the async iterator.
 * @property {(error: OnvmError, sub: Subscription) => void} [onError] A subscription that cannot continue (e.g. a scope error).
 * @property {(status: string, sub: Subscription) => void} [onStatus] `subscribed`, `resuming`, `ended`.
 */
/**
 * @typedef {Object} Verifier What `verifier.js`'s `loadVerifier(url)` resolves to (the wasm verifier).
 * @property {(obj: Object) => Object} verifyReceipt
 * @property {(obj: Object) => Object} verifyStateProof
 * @property {(bytes: Uint8Array) => string} blake3Hex
 * @property {(obj: Object) => Uint8Array} callSigningMessage
 */
/**
 * @typedef {Object} ReceiptCheck What `verifyReceipt` returns.
 * @property {boolean} valid  @property {string|null} reason
 * @property {number} signers How many committee members' signatures the receipt carries (k).
 * @property {number} committeeSize n.  @property {number} threshold
 * @property {number} ms How long the check took in this page, in milliseconds.
 * @property {Object} [raw] The verifier's own answer.
 */

// ---------------------------------------------------------------------------------------------
// Bytes, hex, base64
// ---------------------------------------------------------------------------------------------

const te = new TextEncoder();
const td = new TextDecoder();

/** @param {Uint8Array} u8 @returns {string} lowercase hex */
export function toHex(u8) {
  let s = '';
  for (const b of u8) s += b.toString(16).padStart(2, '0');
  return s;
}

/** @param {string} hex @returns {Uint8Array} */
export function fromHex(hex) {
  if (hex.length % 2 || /[^0-9a-fA-F]/.test(hex)) throw new TypeError(`not hex: ${hex.slice(0, 40)}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

/** @param {Uint8Array} u8 @returns {string} standard base64 with padding */
export function toBase64(u8) {
  let s = '';
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  return btoa(s);
}

/** @param {string} b64 @returns {Uint8Array} */
export function fromBase64(b64) {
  const s = atob(b64 || '');
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * Bytes of a call input: a Uint8Array as is, a string as UTF-8, anything else as JSON.
 * @param {Uint8Array|ArrayBuffer|string|Object} input @returns {Uint8Array}
 */
export function inputBytes(input) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (typeof input === 'string') return te.encode(input);
  if (input === undefined || input === null) return new Uint8Array(0);
  return te.encode(JSON.stringify(input));
}

/** The output of an `ExecuteResult` as text. @param {ExecuteResult} r @returns {string} */
export function outputText(r) {
  return td.decode(fromBase64(r.output_base64));
}

/** The output of an `ExecuteResult` parsed as JSON. @param {ExecuteResult} r */
export function outputJson(r) {
  return JSON.parse(outputText(r));
}

/** Number of set bits in a hex bitmap (an attestation's signers). @param {string} hex */
export function countSigners(hex) {
  let n = 0;
  for (const b of fromHex(hex || '')) for (let x = b; x; x >>= 1) n += x & 1;
  return n;
}

function randomId(prefix) {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return prefix + toHex(b);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** An error answer of the node (`code`, `data` as in docs/RPC.md "Errors"), or a client-side failure (`code` 0). */
export class OnvmError extends Error {
  /** @param {string} message @param {number} code @param {*} [data] @param {string} [method] */
  constructor(message, code, data, method) {
    super(message);
    this.name = 'OnvmError';
    /** JSON-RPC code, e.g. -32020 execution failed, -32006 forbidden; 0 for client-side errors. */
    this.code = code;
    /** The error's `data` (an object with `kind` for ONVM errors, a string for -32602). */
    this.data = data;
    /** `data.kind`, or for client-side errors `disconnected`, `timeout`, `closed`, `unsupported`. */
    this.kind = data && typeof data === 'object' ? data.kind : undefined;
    this.method = method;
  }
}

const clientError = (kind, message, method) => new OnvmError(message, 0, { kind }, method);

// ---------------------------------------------------------------------------------------------
// Caller keys (WebCrypto Ed25519, kept in IndexedDB)
// ---------------------------------------------------------------------------------------------

const memoryKeys = new Map();

function idb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open('onvm', 1);
    req.onupgradeneeded = () => req.result.createObjectStore('caller-keys');
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function idbRequest(db, mode, fn) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction('caller-keys', mode);
    const req = fn(tx.objectStore('caller-keys'));
    let result;
    req.onsuccess = () => { result = req.result; };
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(tx.error || req.error);
    tx.onabort = () => reject(tx.error || req.error);
  });
}

/**
 * A caller's ed25519 key: its public key is its caller id (what a program sees through
 * `onvm_caller`). The private key is a non-extractable CryptoKey: the page can sign with it but
 * not read it.
 */
export class CallerKey {
  /** @param {string} name @param {CryptoKeyPair} pair @param {Uint8Array} publicRaw */
  constructor(name, pair, publicRaw) {
    this.name = name;
    /** @type {CryptoKey} */
    this.privateKey = pair.privateKey;
    /** @type {CryptoKey} */
    this.publicKey = pair.publicKey;
    /** The caller id: the raw 32-byte public key in hex. */
    this.callerId = toHex(publicRaw);
  }

  /** Signs `message` (ed25519). @param {Uint8Array} message @returns {Promise<Uint8Array>} 64 bytes */
  async sign(message) {
    return new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, this.privateKey, message));
  }

  /** Wraps an existing key pair. @param {CryptoKeyPair} pair @param {string} [name] */
  static async fromKeyPair(pair, name = '') {
    const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
    return new CallerKey(name, pair, raw);
  }

  /** Makes a fresh key kept nowhere. @param {string} [name] */
  static async generate(name = '') {
    let pair;
    try {
      pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
    } catch (e) {
      throw clientError('unsupported',
        `this browser's WebCrypto cannot make Ed25519 keys (${e && e.message}); ` +
        'signed calls need Chrome 137+, Firefox 129+, Safari 17+ or Node 20+');
    }
    return CallerKey.fromKeyPair(pair, name);
  }
}

/**
 * Loads the caller key `name` of this browser profile from IndexedDB, or makes and stores one.
 * Another profile (or browser) gets another key, so another caller id. Without IndexedDB
 * (Node, or `{storage: 'memory'}`) keys last as long as the process.
 * @param {string} [name='default']
 * @param {{storage?: 'indexeddb'|'memory'}} [opts]
 * @returns {Promise<CallerKey>}
 */
export async function callerKey(name = 'default', opts = {}) {
  const useIdb = opts.storage !== 'memory' && typeof indexedDB !== 'undefined';
  if (!useIdb) {
    if (!memoryKeys.has(name)) memoryKeys.set(name, CallerKey.generate(name));
    return memoryKeys.get(name);
  }
  const db = await idb();
  try {
    const stored = await idbRequest(db, 'readonly', (s) => s.get(name));
    if (stored) return CallerKey.fromKeyPair(stored, name);
    const fresh = await CallerKey.generate(name);
    const pair = { privateKey: fresh.privateKey, publicKey: fresh.publicKey };
    try {
      await idbRequest(db, 'readwrite', (s) => s.add(pair, name));
      return fresh;
    } catch (e) {
      // Another tab stored one first: use that one, so the profile keeps a single identity.
      const won = await idbRequest(db, 'readonly', (s) => s.get(name));
      if (won) return CallerKey.fromKeyPair(won, name);
      throw e;
    }
  } finally {
    db.close();
  }
}

/** Deletes the stored caller key `name` (a new one is made on next use). @param {string} name */
export async function forgetCallerKey(name) {
  memoryKeys.delete(name);
  if (typeof indexedDB === 'undefined') return;
  const db = await idb();
  try { await idbRequest(db, 'readwrite', (s) => s.delete(name)); } finally { db.close(); }
}

// ---------------------------------------------------------------------------------------------
// The verifier (wasm), loaded on first use
// ---------------------------------------------------------------------------------------------

const verifiers = new Map();

/** A file next to this module; a `?token=` this module was loaded with goes along (a node that
 * serves nothing to anonymous clients needs it for every file). */
function besideThisModule(path) {
  const here = new URL(import.meta.url);
  const u = new URL(path, here);
  const token = here.searchParams.get('token');
  if (token) u.searchParams.set('token', token);
  return u;
}

/**
 * Loads the wasm verifier (`verifier.js` next to this module, its wasm `onvm_verifier.wasm`).
 * @param {{verifierUrl?: string|URL, wasmUrl?: string|URL}} [opts]
 * @returns {Promise<Verifier>}
 */
export function loadVerifier(opts = {}) {
  const jsUrl = String(opts.verifierUrl || besideThisModule('./verifier.js'));
  const wasmUrl = String(opts.wasmUrl || besideThisModule('./onvm_verifier.wasm'));
  const key = `${jsUrl} ${wasmUrl}`;
  if (!verifiers.has(key)) {
    const p = import(jsUrl).then((m) => m.loadVerifier(wasmUrl));
    p.catch(() => verifiers.delete(key));
    verifiers.set(key, p);
  }
  return verifiers.get(key);
}

/**
 * The bytes a caller signs (docs/RPC.md "Signed calls"), from the verifier.
 * @param {Verifier} v
 * @param {{network_id: string, program_id: string, entrypoint: string, input: Uint8Array, request_id: string, expires_at_ms: number, max_attempts: number, fuel: number, read_only?: boolean, timestamp_ms?: number}} f
 * @returns {Uint8Array}
 */
export function signingMessage(v, f) {
  const input_hash = v.blake3Hex(f.input);
  const terms = {
    network_id: f.network_id,
    program_id: f.program_id,
    entrypoint: f.entrypoint,
    input_hash,
    request_id: f.request_id,
    expires_at_ms: f.expires_at_ms,
    max_attempts: f.max_attempts,
    fuel: f.fuel,
    read_only: !!f.read_only,
  };
  if (f.timestamp_ms !== undefined && f.timestamp_ms !== null) terms.timestamp_ms = f.timestamp_ms;
  return v.callSigningMessage(terms);
}

/** Fuel a signed call names when none is given (the node's default `vm.default_fuel`): the fuel is signed. */
export const DEFAULT_FUEL = 50_000_000;
/** The signed message version this client makes (docs/RPC.md "Signed calls"). */
export const CALL_SIG_VERSION = 2;

// ---------------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------------

/**
 * A live subscription. Iterate it (`for await (const item of sub)`) or pass `onItem`. Items are
 * the node's stream items (`{type: "receipt"|"event"|"node", seq, …}`), each delivered once and
 * in order; closes (`{type: "closed"}`) are handled here: `lagged` and dropped connections resume
 * from the next sequence number, `finished` (a job's stream) ends it.
 */
export class Subscription {
  /** @param {Onvm} client @param {string} method @param {Object} params @param {SubscribeOptions} opts */
  constructor(client, method, params, opts) {
    this.client = client;
    this.method = method;
    this.params = params;
    this.opts = opts;
    /** Sequence number of the last item delivered (0: none yet). */
    this.lastSeq = 0;
    /** Next `from_seq` to subscribe with (undefined: only new items). */
    this.fromSeq = opts.fromSeq;
    /** The node's subscription id while subscribed. */
    this.id = null;
    /** `subscribing`, `subscribed`, `resuming`, `ended`. */
    this.status = 'subscribing';
    /** How many times it resubscribed (after `lagged` or a reconnect). */
    this.resumes = 0;
    this.error = null;
    this._queue = [];
    this._waiters = [];
    this._ended = false;
    this._attempt = 0;
    this._inflight = false;
  }

  _setStatus(s) {
    this.status = s;
    if (this.opts.onStatus) try { this.opts.onStatus(s, this); } catch (e) { console.error(e); }
  }

  async _subscribe() {
    if (this._ended || this._inflight) return;
    this._inflight = true;
    const params = { ...this.params };
    if (this.fromSeq !== undefined && this.fromSeq !== null) params.from_seq = this.fromSeq;
    let id;
    try {
      id = await this.client.call(this.method, params);
    } catch (e) {
      this._inflight = false;
      if (this._ended) return;
      const transient = e.code === 0 || e.code === -32004 || e.code === -32005 || e.code === -32603;
      if (!transient) { this._fail(e); return; }
      if (e.kind === 'disconnected' || e.kind === 'closed') {
        // Subscribed again once the connection is back (`_resume`).
        this._setStatus('resuming');
        if (this.client.status === 'open') setTimeout(() => this._subscribe(), this.client._backoff(this._attempt++));
        return;
      }
      setTimeout(() => this._subscribe(), this.client._backoff(this._attempt++));
      return;
    }
    this._inflight = false;
    if (this._ended) { this.client._unsubscribeQuietly(this, id); return; }
    this.id = id;
    this._attempt = 0;
    this.client._subs.set(String(id), this);
    this._setStatus('subscribed');
    this.client._flushEarly(String(id));
  }

  /** The connection was lost: subscribe again after it is back. */
  _lost() {
    if (this._ended) return;
    if (this.id !== null) this.client._subs.delete(String(this.id));
    this.id = null;
    this._setStatus('resuming');
  }

  _resume() {
    if (this._ended) return;
    this.resumes++;
    this._subscribe();
  }

  /** @param {Object} item */
  _deliver(item) {
    if (this._ended) return;
    if (item.type === 'closed') {
      if (this.id !== null) this.client._subs.delete(String(this.id));
      this.id = null;
      if (item.reason === 'finished') return this._end();
      // `lagged` (or any other close): continue exactly where the node says.
      if (typeof item.resume_from_seq === 'number') {
        this.fromSeq = Math.max(item.resume_from_seq, this.lastSeq + 1);
      }
      this._setStatus('resuming');
      this.resumes++;
      this._subscribe();
      return;
    }
    if (typeof item.seq === 'number') {
      if (item.seq <= this.lastSeq) return; // already delivered before a resume
      this.lastSeq = item.seq;
      this.fromSeq = item.seq + 1;
    }
    if (this.opts.onItem) {
      try { this.opts.onItem(item, this); } catch (e) { console.error(e); }
      return;
    }
    const w = this._waiters.shift();
    if (w) w.resolve({ value: item, done: false });
    else this._queue.push(item);
  }

  _fail(e) {
    this.error = e;
    if (this.opts.onError) try { this.opts.onError(e, this); } catch (x) { console.error(x); }
    this._end(e);
  }

  _end(error) {
    if (this._ended) return;
    this._ended = true;
    this.client._subsAll.delete(this);
    this._setStatus('ended');
    for (const w of this._waiters.splice(0)) {
      if (error && !this.opts.onError) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
  }

  /** Ends the subscription (unsubscribes on the node). */
  async close() {
    const id = this.id;
    this._end();
    if (id !== null) await this.client._unsubscribeQuietly(this, id);
  }

  /** @returns {AsyncIterator<Object>} */
  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this._queue.length) return Promise.resolve({ value: this._queue.shift(), done: false });
        if (this._ended) {
          if (this.error && !this.opts.onError) return Promise.reject(this.error);
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
      },
      return: async () => {
        await this.close();
        return { value: undefined, done: true };
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/** The WebSocket URL to dial: `ws://host:port/?token=…` from `ws://`, `http://`, `host:port` or `:port`. */
export function wsUrl(url, token) {
  let s = String(url).trim();
  if (s.startsWith(':')) s = `127.0.0.1${s}`;
  if (!/^[a-z]+:\/\//i.test(s)) s = `ws://${s}`;
  const u = new URL(s);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (token) u.searchParams.set('token', token);
  return u.toString();
}

/** The node's HTTP base (`http://host:port`) for a WebSocket URL. */
export function httpUrl(url) {
  const u = new URL(wsUrl(url));
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  u.search = '';
  u.hash = '';
  return u.origin;
}

export class Onvm {
  /**
   * Connects to a node. Fails if the first connection cannot be opened (a refused token or
   * origin shows as a failed handshake: browsers do not tell 401 from 403 from a closed port).
   * @param {string} url `ws://host:port` (also `host:port`, `:port`, `http://…`)
   * @param {ConnectOptions} [opts]
   * @returns {Promise<Onvm>}
   */
  static async connect(url, opts = {}) {
    const c = new Onvm(url, opts);
    await c._open(true);
    return c;
  }

  /** @param {string} url @param {ConnectOptions} [opts] */
  constructor(url, opts = {}) {
    this.url = wsUrl(url);
    this.opts = {
      reconnect: true, backoffMinMs: 250, backoffMaxMs: 10000, callTimeoutMs: 60000, connectTimeoutMs: 10000,
      ...opts,
    };
    this._token = opts.token || null;
    this._WS = opts.WebSocket || globalThis.WebSocket;
    if (!this._WS) throw clientError('unsupported', 'no WebSocket implementation (Node: run with --experimental-websocket, or pass opts.WebSocket)');
    this._ws = null;
    this._nextId = 1;
    /** @type {Map<number, {resolve: Function, reject: Function, method: string, timer: any}>} */
    this._pending = new Map();
    /** @type {Map<string, Subscription>} */
    this._subs = new Map();
    /** @type {Set<Subscription>} */
    this._subsAll = new Set();
    this._early = new Map();
    this._closed = false;
    this._attempt = 0;
    this._listeners = new Set();
    this._openWaiters = [];
    this._networkId = null;
    this._entrypoints = new Map();
    this._committees = new Map();
    this._manifests = new Map();
    /** `connecting`, `open`, `reconnecting`, `closed`. */
    this.status = 'connecting';
    /** How many times the connection was re-established. */
    this.reconnects = 0;
  }

  /** The URL dialled, without the token. */
  get displayUrl() {
    const u = new URL(this.url);
    u.searchParams.delete('token');
    return u.toString();
  }

  /**
   * Listens to connection changes: `fn(status, detail)` with `open`, `reconnecting` (`detail`:
   * `{delayMs, attempt}`), `closed`. Returns a function that removes the listener.
   */
  onStatus(fn) {
    this._listeners.add(fn);
    return () => this._listeners.delete(fn);
  }

  _emit(status, detail) {
    this.status = status;
    for (const fn of this._listeners) try { fn(status, detail); } catch (e) { console.error(e); }
  }

  _backoff(attempt) {
    const base = Math.min(this.opts.backoffMaxMs, this.opts.backoffMinMs * 2 ** Math.min(attempt, 20));
    return Math.round(base * (0.75 + Math.random() * 0.5));
  }

  _open(first) {
    return new Promise((resolve, reject) => {
      const dial = wsUrl(this.url, this._token);
      let ws;
      try {
        ws = new this._WS(dial);
      } catch (e) {
        reject(clientError('disconnected', `cannot open ${this.displayUrl}: ${e.message}`));
        return;
      }
      let opened = false;
      let failed = false;
      ws.onopen = () => {
        if (failed) return;
        opened = true;
        clearTimeout(timer);
        this._ws = ws;
        this._attempt = 0;
        if (!first) this.reconnects++;
        this._emit('open');
        for (const w of this._openWaiters.splice(0)) w.resolve();
        // Resume every subscription where it stopped.
        for (const sub of this._subsAll) if (sub.id === null && sub.status === 'resuming') sub._resume();
        resolve();
      };
      ws.onmessage = (ev) => this._onMessage(ev.data);
      // Browsers fire `error` then `close` (1006) when the handshake fails; some implementations
      // (Node's) only `error`: either one ends this attempt, once.
      const fail = (ev) => {
        if (opened || failed) return;
        failed = true;
        clearTimeout(timer);
        const code = ev && ev.code ? ` (closed with code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})` : '';
        const err = clientError('disconnected',
          `cannot connect to ${this.displayUrl}${code}: the node is not running there, or it refused ` +
          'the token or this page\'s origin (HTTP 401/403)');
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
        try { ws.close(); } catch { /* ignore */ }
        if (first) { this._closed = true; this._emit('closed', err); reject(err); return; }
        this._scheduleReconnect();
        resolve();
      };
      const timer = setTimeout(() => fail(), this.opts.connectTimeoutMs);
      ws.onerror = (ev) => fail(ev);
      ws.onclose = (ev) => {
        if (!opened) { fail(ev); return; }
        this._onDisconnect(ev);
      };
    });
  }

  _onDisconnect(ev) {
    this._ws = null;
    const err = clientError(this._closed ? 'closed' : 'disconnected',
      `connection to ${this.displayUrl} ${this._closed ? 'closed' : `lost (code ${ev && ev.code})`}`);
    for (const [id, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(err);
      this._pending.delete(id);
    }
    for (const sub of this._subsAll) sub._lost();
    this._subs.clear();
    if (this._closed || !this.opts.reconnect) {
      this._closed = true;
      for (const sub of [...this._subsAll]) sub._end();
      for (const w of this._openWaiters.splice(0)) w.reject(err);
      this._emit('closed', err);
      return;
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this._closed) return;
    const delayMs = this._backoff(this._attempt++);
    this._emit('reconnecting', { delayMs, attempt: this._attempt });
    setTimeout(() => { if (!this._closed) this._open(false); }, delayMs);
  }

  _waitOpen() {
    if (this._ws && this._ws.readyState === 1) return Promise.resolve();
    if (this._closed) return Promise.reject(clientError('closed', `connection to ${this.displayUrl} is closed`));
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      this._openWaiters.push(w);
      setTimeout(() => {
        const i = this._openWaiters.indexOf(w);
        if (i >= 0) {
          this._openWaiters.splice(i, 1);
          reject(clientError('disconnected', `no connection to ${this.displayUrl}`));
        }
      }, this.opts.callTimeoutMs);
    });
  }

  _onMessage(data) {
    let msg;
    try { msg = JSON.parse(typeof data === 'string' ? data : td.decode(data)); } catch { return; }
    for (const m of Array.isArray(msg) ? msg : [msg]) {
      if (m && m.method && m.params && m.params.subscription !== undefined) {
        const key = String(m.params.subscription);
        const sub = this._subs.get(key);
        if (sub) sub._deliver(m.params.result);
        else {
          // A notification can only precede its subscribe answer if the node reorders; keep a few.
          const early = this._early.get(key) || [];
          if (early.length < 1024) early.push(m.params.result);
          this._early.set(key, early);
        }
        continue;
      }
      const p = m && this._pending.get(m.id);
      if (!p) continue;
      this._pending.delete(m.id);
      clearTimeout(p.timer);
      if (m.error) p.reject(new OnvmError(m.error.message, m.error.code, m.error.data, p.method));
      else p.resolve(m.result);
    }
  }

  _flushEarly(key) {
    const items = this._early.get(key);
    this._early.delete(key);
    const sub = this._subs.get(key);
    if (items && sub) for (const it of items) sub._deliver(it);
  }

  /**
   * Sends one JSON-RPC call and returns its result; an error answer throws `OnvmError`.
   * Waits for the connection while it is being re-established.
   * @param {string} method e.g. `node_info`
   * @param {Object|Array} [params] by name (object) or position (array); `undefined` values are left out
   * @returns {Promise<*>}
   */
  async call(method, params) {
    await this._waitOpen();
    const id = this._nextId++;
    const body = { jsonrpc: '2.0', id, method };
    if (params !== undefined) body.params = Array.isArray(params) ? params : clean(params);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(clientError('timeout', `${method}: no answer within ${this.opts.callTimeoutMs} ms`, method));
      }, this.opts.callTimeoutMs);
      this._pending.set(id, { resolve, reject, method, timer });
      try {
        this._ws.send(JSON.stringify(body));
      } catch (e) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(clientError('disconnected', `${method}: ${e.message}`, method));
      }
    });
  }

  /**
   * Sends several calls as one JSON-RPC batch (at most `rpc.max_batch`, 32; no subscriptions).
   * Each entry settles on its own: a result, or an `OnvmError` in its place.
   * @param {Array<[string, (Object|Array)?]>} calls
   * @returns {Promise<Array<*>>}
   */
  async batch(calls) {
    await this._waitOpen();
    const entries = calls.map(([method, params]) => {
      const id = this._nextId++;
      const body = { jsonrpc: '2.0', id, method };
      if (params !== undefined) body.params = Array.isArray(params) ? params : clean(params);
      return { id, method, body };
    });
    const settled = entries.map(({ id, method }) => new Promise((resolve) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        resolve(clientError('timeout', `${method}: no answer within ${this.opts.callTimeoutMs} ms`, method));
      }, this.opts.callTimeoutMs);
      this._pending.set(id, { resolve, reject: resolve, method, timer });
    }));
    this._ws.send(JSON.stringify(entries.map((e) => e.body)));
    return Promise.all(settled);
  }

  /**
   * Opens a subscription (`*_subscribe`) that resumes by itself.
   * @param {string} method @param {Object} params @param {SubscribeOptions} [opts]
   * @returns {Subscription}
   */
  subscribe(method, params = {}, opts = {}) {
    const sub = new Subscription(this, method, clean(params), opts);
    this._subsAll.add(sub);
    sub._subscribe();
    return sub;
  }

  async _unsubscribeQuietly(sub, id) {
    this._subs.delete(String(id));
    const method = sub.method.replace(/subscribe(_all)?$/, (m, all) => `unsubscribe${all || ''}`);
    try { await this.call(method, [id]); } catch { /* gone with the connection anyway */ }
  }

  /** Closes the connection for good: pending calls fail, subscriptions end. */
  close() {
    this._closed = true;
    for (const sub of [...this._subsAll]) sub._end();
    if (this._ws) this._ws.close(1000);
    else this._onDisconnect();
  }

  // ---- helpers over several calls ----

  /** The node's network id (cached). @returns {Promise<string>} */
  async networkId() {
    if (!this._networkId) this._networkId = (await this.nodeInfo()).network_id;
    return this._networkId;
  }

  /** A program's default entrypoint (cached). @param {string} programId @returns {Promise<string>} */
  async defaultEntrypoint(programId) {
    if (!this._entrypoints.has(programId)) await this.manifest(programId);
    return this._entrypoints.get(programId);
  }

  /** A program's committee (cached: membership is fixed at deploy). @param {string} programId @returns {Promise<Committee>} */
  committee(programId) {
    return this._cached(this._committees, programId, () => this.programCommittee(programId));
  }

  /** A program's signed manifest (cached). @param {string} programId @returns {Promise<SignedManifest>} */
  manifest(programId) {
    return this._cached(this._manifests, programId, async () => {
      const info = await this.programInfo(programId);
      this._entrypoints.set(programId, info.manifest.manifest.entrypoints[0] || 'onvm_main');
      return info.manifest;
    });
  }

  _cached(map, key, make) {
    if (!map.has(key)) {
      const p = make();
      map.set(key, p);
      p.catch(() => map.delete(key));
    }
    return map.get(key);
  }

  /** The wasm verifier (loaded once). @returns {Promise<Verifier>} */
  verifier() {
    if (!this._verifier) {
      this._verifier = this.opts.verifier ? Promise.resolve(this.opts.verifier) : loadVerifier(this.opts);
      this._verifier.catch(() => { this._verifier = null; });
    }
    return this._verifier;
  }

  /**
   * Checks a receipt in this page with the wasm verifier: its id, caller proof and executor
   * signature, and its committee's aggregate signature, against the program's signed manifest
   * (checked too: the deployer's signature and the program id), so nothing but the program id
   * is taken from the node. Never throws for a bad receipt: `{valid: false, reason}`.
   * @param {SignedReceipt} receipt
   * @param {{manifest?: SignedManifest, committee?: Committee, networkId?: string}} [opts]
   * @returns {Promise<ReceiptCheck>}
   */
  async verifyReceipt(receipt, opts = {}) {
    const v = await this.verifier();
    const programId = receipt && receipt.receipt && receipt.receipt.program_id;
    let trust = opts.manifest || opts.committee;
    if (!trust) {
      try {
        trust = await this.manifest(programId);
      } catch (e) {
        return { valid: false, reason: `no manifest for ${programId}: ${e.message}`, signers: 0, committeeSize: 0, threshold: 0, ms: 0 };
      }
    }
    return checkReceipt(v, receipt, trust, opts.networkId || await this.networkId());
  }

  /** Checks a `state_proof` result in the page; `expectedRoot`: e.g. a verified receipt's `state_root_out`. */
  async verifyStateProof(proof, expectedRoot) {
    return (await this.verifier()).verifyStateProof(proof, expectedRoot);
  }

  /**
   * Fills `signed` (and `request_id`, `entrypoint`, `fuel`) for a call or job signed by
   * `signer`. The signature also covers the fuel, the dry-run flag and a given timestamp.
   * @param {CallerKey} signer @param {string} programId @param {Uint8Array} input
   * @param {{entrypoint?: string, request_id?: string, expires_at_ms?: number, validForMs?: number, maxAttempts?: number, fuel?: number, read_only?: boolean, timestamp_ms?: number}} f
   * @returns {Promise<{entrypoint: string, request_id: string, fuel: number, signed: CallSignature}>}
   */
  async signCall(signer, programId, input, f = {}) {
    const [v, network_id, entrypoint] = await Promise.all([
      this.verifier(), this.networkId(), f.entrypoint || this.defaultEntrypoint(programId),
    ]);
    const request_id = f.request_id || randomId('web-');
    const expires_at_ms = f.expires_at_ms || Date.now() + (f.validForMs || DEFAULT_VALID_FOR_MS);
    const fuel = f.fuel || DEFAULT_FUEL;
    const message = signingMessage(v, {
      network_id, program_id: programId, entrypoint, input, request_id, expires_at_ms,
      max_attempts: f.maxAttempts || 1, fuel, read_only: f.read_only, timestamp_ms: f.timestamp_ms,
    });
    const signature = toHex(await signer.sign(message));
    return {
      entrypoint, request_id, fuel,
      signed: { version: CALL_SIG_VERSION, caller: signer.callerId, expires_at_ms, signature },
    };
  }

  // ---- node ----

  /** @returns {Promise<NodeInfo>} */
  nodeInfo() { return this.call('node_info', {}); }
  /** @returns {Promise<Health>} */
  nodeHealth() { return this.call('node_health', {}); }
  /** @returns {Promise<Metrics>} */
  nodeMetrics() { return this.call('node_metrics', {}); }

  // ---- blobs ----

  /** Stores a small blob. @param {Uint8Array|string} data bytes, or a string (UTF-8) @param {string} [mime] @returns {Promise<BlobStat>} */
  blobPut(data, mime) { return this.call('blob_put', { data_base64: toBase64(inputBytes(data)), mime }); }
  /** @param {number} size @param {string} [mime] @returns {Promise<UploadStatus>} */
  blobUploadBegin(size, mime) { return this.call('blob_upload_begin', { size, mime }); }
  /** @param {string} uploadId @param {number} offset @param {Uint8Array} data @returns {Promise<UploadStatus>} */
  blobUploadAppend(uploadId, offset, data) {
    return this.call('blob_upload_append', { upload_id: uploadId, offset, data_base64: toBase64(inputBytes(data)) });
  }
  /** @param {string} uploadId @returns {Promise<UploadStatus>} */
  blobUploadStatus(uploadId) { return this.call('blob_upload_status', { upload_id: uploadId }); }
  /** @param {string} uploadId @param {string} [expectedId] @returns {Promise<BlobStat>} */
  blobUploadFinish(uploadId, expectedId) { return this.call('blob_upload_finish', { upload_id: uploadId, expected_id: expectedId }); }
  /** @param {string} uploadId @returns {Promise<boolean>} */
  blobUploadAbort(uploadId) { return this.call('blob_upload_abort', { upload_id: uploadId }); }
  /** @param {string} id @param {number} [offset] @param {number} [length] @returns {Promise<BlobChunk>} */
  blobGet(id, offset, length) { return this.call('blob_get', { id, offset, length }); }
  /** @param {string} id @returns {Promise<BlobStat>} */
  blobStat(id) { return this.call('blob_stat', { id }); }
  /** @param {string} [cursor] @param {number} [limit] @returns {Promise<BlobPage>} */
  blobList(cursor, limit) { return this.call('blob_list', { cursor, limit }); }

  // ---- programs ----

  /** @param {DeployRequest} request @returns {Promise<DeployResult>} */
  programDeploy(request) { return this.call('program_deploy', { request }); }
  /** @param {string} programId @returns {Promise<ProgramInfo>} */
  programInfo(programId) { return this.call('program_info', { program_id: programId }); }
  /** @param {string} [cursor] @param {number} [limit] @returns {Promise<ProgramPage>} */
  programList(cursor, limit) { return this.call('program_list', { cursor, limit }); }
  /** @param {string} programId @returns {Promise<Committee>} */
  programCommittee(programId) { return this.call('program_committee', { program_id: programId }); }

  /**
   * Calls a program. `input`: bytes, a string (UTF-8), or any other value (sent as JSON).
   * With `options.signer` the call is signed as that caller. A writing call always carries a
   * `request_id` (a random one unless given), and a call cut off by a dropped connection is sent
   * again with the same id after reconnecting: it runs at most once.
   * A call that does not succeed throws `OnvmError` -32020 (`kind`: the outcome, `data.result`).
   * @param {string} programId
   * @param {Uint8Array|string|Object} input
   * @param {ExecuteOptions} [options]
   * @returns {Promise<ExecuteResult>}
   */
  async programExecute(programId, input, options = {}) {
    const bytes = inputBytes(input);
    const { signer, validForMs, ...opts } = options;
    if (signer) {
      Object.assign(opts, await this.signCall(signer, programId, bytes, {
        entrypoint: opts.entrypoint, request_id: opts.request_id, expires_at_ms: opts.expires_at_ms, validForMs,
        fuel: opts.fuel, read_only: opts.read_only, timestamp_ms: opts.timestamp_ms,
      }));
    } else if (!opts.read_only && !opts.request_id) {
      opts.request_id = randomId('web-');
    }
    const params = { program_id: programId, input_base64: toBase64(bytes), options: clean(opts) };
    const idempotent = !!opts.request_id && !opts.read_only;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.call('program_execute', params);
      } catch (e) {
        const retry = (idempotent || opts.read_only) && e.kind === 'disconnected' && this.opts.reconnect && attempt < 3;
        if (!retry) throw e;
      }
    }
  }

  /**
   * `programExecute`, then the output parsed as JSON. @param {string} programId
   * @param {*} input @param {ExecuteOptions} [options]
   * @returns {Promise<{output: *, result: ExecuteResult}>}
   */
  async executeJson(programId, input, options) {
    const result = await this.programExecute(programId, input, options);
    return { output: outputJson(result), result };
  }

  // ---- state ----

  /** @param {string} programId @param {Uint8Array|string} key bytes or a string (UTF-8) @returns {Promise<StateValue>} */
  stateGet(programId, key) { return this.call('state_get', { program_id: programId, key_base64: toBase64(inputBytes(key)) }); }
  /** @param {string} programId @returns {Promise<StateRoot>} */
  stateRoot(programId) { return this.call('state_root', { program_id: programId }); }
  /** @param {string} programId @param {Uint8Array|string} key @returns {Promise<StateProof>} */
  stateProof(programId, key) { return this.call('state_proof', { program_id: programId, key_base64: toBase64(inputBytes(key)) }); }

  // ---- receipts ----

  /** @param {string} receiptId @returns {Promise<SignedReceipt>} */
  receiptGet(receiptId) { return this.call('receipt_get', { receipt_id: receiptId }); }
  /** Newest first. @param {string} programId @param {number} [beforeHeight] @param {number} [limit] @returns {Promise<ReceiptPage>} */
  receiptList(programId, beforeHeight, limit) {
    return this.call('receipt_list', { program_id: programId, before_height: beforeHeight, limit });
  }
  /** The node's check (trusts the node's committee catalog); `verifyReceipt` checks in the page. @param {SignedReceipt} receipt @returns {Promise<ReceiptVerification>} */
  receiptVerify(receipt) { return this.call('receipt_verify', { receipt }); }
  /** The committed call's input, base64. @param {string} receiptId @returns {Promise<string>} */
  receiptInput(receiptId) { return this.call('receipt_input', { receipt_id: receiptId }); }
  /** @param {string} programId @returns {Promise<Evidence[]>} */
  receiptEvidence(programId) { return this.call('receipt_evidence', { program_id: programId }); }
  /**
   * Committed receipts of one program (or all with `null`), as `ReceiptItem`s.
   * @param {string|null} [programId] @param {SubscribeOptions} [opts] @returns {Subscription}
   */
  receiptSubscribe(programId, opts = {}) {
    return this.subscribe('receipt_subscribe', { program_id: programId || undefined }, opts);
  }
  /** Raw unsubscribe (a `Subscription`'s `close()` does this). @param {string|number} subscription */
  receiptUnsubscribe(subscription) { return this.call('receipt_unsubscribe', [subscription]); }

  // ---- jobs ----

  /**
   * Submits a durable job. With `opts.signer` every attempt runs as that caller (`entrypoint`
   * and `max_retries` are then filled in if missing and signed).
   * @param {SubmitJob & {input?: Uint8Array|string|Object}} request `input` may replace `input_base64`
   * @param {{signer?: CallerKey, validForMs?: number}} [opts]
   * @returns {Promise<SubmitResult>}
   */
  async jobSubmit(request, opts = {}) {
    const req = { ...request };
    if (req.input !== undefined) {
      req.input_base64 = toBase64(inputBytes(req.input));
      delete req.input;
    }
    if (opts.signer) {
      if (req.input_blob) throw clientError('unsupported', 'a signed job needs its input inline (the signature covers its hash)');
      if (req.max_retries === undefined) req.max_retries = 3;
      const s = await this.signCall(opts.signer, req.program_id, fromBase64(req.input_base64 || ''), {
        entrypoint: req.entrypoint, request_id: req.request_id, validForMs: opts.validForMs || 60 * 60 * 1000,
        maxAttempts: req.max_retries + 1, fuel: req.fuel,
      });
      Object.assign(req, s);
    }
    return this.call('job_submit', { request: clean(req) });
  }
  /** @param {string} jobId @returns {Promise<JobInfo>} */
  jobStatus(jobId) { return this.call('job_status', { job_id: jobId }); }
  /** @param {string} jobId @returns {Promise<JobOutput>} */
  jobOutput(jobId) { return this.call('job_output', { job_id: jobId }); }
  /** @param {string} jobId @returns {Promise<JobInfo>} */
  jobCancel(jobId) { return this.call('job_cancel', { job_id: jobId }); }
  /** @param {JobFilter} [filter] @param {string} [cursor] @param {number} [limit] @returns {Promise<JobPage>} */
  jobList(filter, cursor, limit) { return this.call('job_list', { filter, cursor, limit }); }
  /** @param {string} jobId @returns {Promise<JobLogs>} */
  jobLogs(jobId) { return this.call('job_logs', { job_id: jobId }); }
  /**
   * One job's events (`JobEventItem`), its whole history by default; ends after its terminal status.
   * @param {string} jobId @param {SubscribeOptions} [opts] @returns {Subscription}
   */
  jobSubscribe(jobId, opts = {}) { return this.subscribe('job_subscribe', { job_id: jobId }, opts); }
  /** @param {string|number} subscription */
  jobUnsubscribe(subscription) { return this.call('job_unsubscribe', [subscription]); }
  /**
   * Every job's events (new ones only unless `fromSeq`).
   * @param {JobFilter|null} [filter] @param {SubscribeOptions} [opts] @returns {Subscription}
   */
  jobSubscribeAll(filter, opts = {}) { return this.subscribe('job_subscribe_all', { filter: filter || undefined }, opts); }
  /** @param {string|number} subscription */
  jobUnsubscribeAll(subscription) { return this.call('job_unsubscribe_all', [subscription]); }

  // ---- peers, DAG ----

  /** @param {string} ticket @returns {Promise<PeerInfo>} */
  peerConnect(ticket) { return this.call('peer_connect', { ticket }); }
  /** @returns {Promise<PeerInfo[]>} */
  peerList() { return this.call('peer_list', {}); }
  /** @returns {Promise<DagHeads>} */
  dagHeads() { return this.call('dag_heads', {}); }
  /** @param {string} id 64 hex @returns {Promise<DagNode>} */
  dagGet(id) { return this.call('dag_get', { id }); }
  /** Every DAG node this node stores, in arrival order (`DagItem`). @param {SubscribeOptions} [opts] @returns {Subscription} */
  dagSubscribe(opts = {}) { return this.subscribe('dag_subscribe', {}, opts); }
  /** @param {string|number} subscription */
  dagUnsubscribe(subscription) { return this.call('dag_unsubscribe', [subscription]); }

  // ---- tokens (scope admin) ----

  /** @param {TokenRequest} request @returns {Promise<CreatedToken>} */
  tokenCreate(request) { return this.call('token_create', { request }); }
  /** @returns {Promise<TokenInfo[]>} */
  tokenList() { return this.call('token_list', {}); }
  /** @param {string} id @returns {Promise<boolean>} */
  tokenRevoke(id) { return this.call('token_revoke', { id }); }

  // ---- discovery ----

  /** An OpenRPC document of every method the node serves (scopes in `x-onvm-scope`). @returns {Promise<Object>} */
  rpcDiscover() { return this.call('rpc.discover', {}); }
}

/** Drops `undefined` members of a params object (the node treats a missing name as `None`). */
function clean(obj) {
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return obj;
  const out = {};
  for (const [k, v] of Object.entries(obj)) if (v !== undefined) out[k] = v;
  return out;
}

/**
 * Checks a receipt with a loaded verifier, timing it: its id, caller proof and executor
 * signature, and the committee's aggregate signature against `trust`: a `SignedManifest`
 * (`program_info(…).manifest`: the manifest is checked too, so only the program id is trusted)
 * or a `Committee` (`program_committee`).
 * @param {Verifier} v @param {SignedReceipt} receipt @param {SignedManifest|Committee} trust @param {string} [networkId]
 * @returns {ReceiptCheck}
 */
export function checkReceipt(v, receipt, trust, networkId) {
  const input = { receipt: stripForVerifier(receipt), network_id: networkId };
  if (trust && trust.manifest && trust.signature) input.manifest = trust;
  else if (trust && trust.members) input.committee = trust;
  const members = trust && (trust.members || (trust.manifest && trust.manifest.committee));
  const t0 = performance.now();
  let raw;
  try {
    raw = v.verifyReceipt(input);
  } catch (e) {
    raw = { ok: false, error: String((e && e.message) || e) };
  }
  const ms = performance.now() - t0;
  const valid = !!(raw && raw.ok && (raw.committee_checked !== false || !members));
  return {
    valid,
    reason: valid ? null : (raw && raw.error) || 'the committee was not checked',
    signers: valid && typeof raw.signers === 'number' ? raw.signers
      : receipt.attestation ? countSigners(receipt.attestation.signers) : 1,
    committeeSize: (raw && raw.committee_size) || (members ? members.length : 0),
    threshold: (raw && raw.threshold) || (trust && (trust.threshold || (trust.manifest && trust.manifest.threshold))) || 0,
    ms,
    raw,
  };
}

/** A receipt as the verifier takes it: `receipt_get`'s shape (no extra fields). */
function stripForVerifier(r) {
  const { id, receipt, signer_bls_key, signature, attestation } = r;
  return attestation === undefined ? { id, receipt, signer_bls_key, signature } : { id, receipt, signer_bls_key, signature, attestation };
}

// Static access: `Onvm.callerKey('name')`, `Onvm.loadVerifier()`, helpers.
Onvm.callerKey = callerKey;
Onvm.forgetCallerKey = forgetCallerKey;
Onvm.loadVerifier = loadVerifier;
Onvm.CallerKey = CallerKey;
Onvm.OnvmError = OnvmError;
Onvm.Subscription = Subscription;
Onvm.toHex = toHex;
Onvm.fromHex = fromHex;
Onvm.toBase64 = toBase64;
Onvm.fromBase64 = fromBase64;
Onvm.outputJson = outputJson;
Onvm.outputText = outputText;
Onvm.countSigners = countSigners;
Onvm.checkReceipt = checkReceipt;
Onvm.wsUrl = wsUrl;
Onvm.httpUrl = httpUrl;

/** Method names of the node's API (rpc-api/src/methods.rs) → the client's method. */
export const METHODS = {
  node_info: 'nodeInfo', node_health: 'nodeHealth', node_metrics: 'nodeMetrics',
  blob_put: 'blobPut', blob_upload_begin: 'blobUploadBegin', blob_upload_append: 'blobUploadAppend',
  blob_upload_status: 'blobUploadStatus', blob_upload_finish: 'blobUploadFinish', blob_upload_abort: 'blobUploadAbort',
  blob_get: 'blobGet', blob_stat: 'blobStat', blob_list: 'blobList',
  program_deploy: 'programDeploy', program_info: 'programInfo', program_list: 'programList',
  program_execute: 'programExecute', program_committee: 'programCommittee',
  state_get: 'stateGet', state_root: 'stateRoot', state_proof: 'stateProof',
  receipt_get: 'receiptGet', receipt_list: 'receiptList', receipt_verify: 'receiptVerify',
  receipt_subscribe: 'receiptSubscribe', receipt_unsubscribe: 'receiptUnsubscribe',
  receipt_input: 'receiptInput', receipt_evidence: 'receiptEvidence',
  job_submit: 'jobSubmit', job_status: 'jobStatus', job_output: 'jobOutput', job_cancel: 'jobCancel',
  job_list: 'jobList', job_logs: 'jobLogs', job_subscribe: 'jobSubscribe', job_unsubscribe: 'jobUnsubscribe',
  job_subscribe_all: 'jobSubscribeAll', job_unsubscribe_all: 'jobUnsubscribeAll',
  peer_connect: 'peerConnect', peer_list: 'peerList',
  dag_heads: 'dagHeads', dag_get: 'dagGet', dag_subscribe: 'dagSubscribe', dag_unsubscribe: 'dagUnsubscribe',
  token_create: 'tokenCreate', token_list: 'tokenList', token_revoke: 'tokenRevoke',
  'rpc.discover': 'rpcDiscover',
};

export default Onvm;
