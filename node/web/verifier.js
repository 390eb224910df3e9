// ONVM's receipt, committee and state-proof checks in the page: the `onvm-rpc-api` code the
// CLI and the node verify with, built to wasm (wasm_programs/verifier, `onvm_verifier.wasm`).
// An ES module with no dependencies: `const v = await loadVerifier("/onvm_verifier.wasm")`.
//
// The module's ABI (see wasm_programs/verifier/src/lib.rs): `onvm_alloc(len) -> ptr`,
// `onvm_free(ptr, len)`, and functions `(ptr, len) -> BigInt (resultPtr << 32 | resultLen)`
// over UTF-8 JSON (raw bytes for `blake3_hex`), each result `{ok: true, ...}` or
// `{ok: false, error}`. This wrapper copies inputs in, results out, and frees both.

/**
 * @typedef {{ok: true, [field: string]: any} | {ok: false, error: string}} VerifierResult
 */

/**
 * @typedef {object} Verifier
 * @property {(input: {receipt: object, network_id?: string, program_id?: string,
 *   bls_key?: string, committee?: object, manifest?: object}) => VerifierResult} verifyReceipt
 *   What `onvm verify-receipt` checks: `receipt` as `receipt_get` / `receipt_subscribe` /
 *   `program_execute` return it; with `committee` (`program_committee`) or `manifest`
 *   (`program_info(...).manifest`) also the committee's aggregate BLS signature. Ok:
 *   `{receipt_id, program_id, height, caller, state_root_out, output_hash, signers,
 *   committee_size, threshold, ...}`.
 * @property {(stateProof: object, expectedRoot?: string) => VerifierResult} verifyStateProof
 *   What `onvm state-proof --verify` checks, on the `state_proof` result; `expectedRoot`
 *   (hex, e.g. a verified receipt's `state_root_out`) must be the proof's root.
 * @property {(bytes: Uint8Array) => string} blake3Hex BLAKE3 of `bytes`, 64 hex digits.
 * @property {(call: {network_id: string, program_id: string, entrypoint: string,
 *   request_id: string, expires_at_ms: number, fuel: number, read_only?: boolean,
 *   timestamp_ms?: number, input_base64?: string, input_hash?: string,
 *   max_attempts?: number, max_retries?: number}) => Uint8Array} callSigningMessage
 *   The bytes a caller's Ed25519 key signs for a signed call (WebCrypto:
 *   `crypto.subtle.sign("Ed25519", key, bytes)`); throws on bad fields.
 * @property {(name: string, input: object | Uint8Array) => VerifierResult} call
 *   Any export by name, with the full result object (e.g. `call_signing_message` with
 *   `caller` and `signature` reports `call_id` and `signature_valid`).
 */

/**
 * Fetches and instantiates the verifier module.
 * @param {string | URL | BufferSource | WebAssembly.Module} source URL of
 *   `onvm_verifier.wasm`, or its bytes, or a compiled module.
 * @returns {Promise<Verifier>}
 */
export async function loadVerifier(source) {
  let instance;
  if (source instanceof WebAssembly.Module) {
    instance = await WebAssembly.instantiate(source, {});
  } else if (typeof source === "string" || source instanceof URL) {
    const response = await fetch(source);
    if (!response.ok) {
      throw new Error(`loading ${source}: HTTP ${response.status}`);
    }
    ({ instance } = await WebAssembly.instantiate(await response.arrayBuffer(), {}));
  } else {
    ({ instance } = await WebAssembly.instantiate(source, {}));
  }
  const wasm = /** @type {any} */ (instance.exports);
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  /**
   * @param {string} name
   * @param {object | Uint8Array} input JSON-encoded unless already bytes
   * @returns {VerifierResult}
   */
  function call(name, input) {
    const fn = wasm[name];
    if (typeof fn !== "function") {
      throw new Error(`the verifier has no function ${name}`);
    }
    const bytes = input instanceof Uint8Array ? input : encoder.encode(JSON.stringify(input));
    const ptr = wasm.onvm_alloc(bytes.length);
    let packed;
    try {
      // Views are taken after each call into wasm: memory growth detaches old ones.
      new Uint8Array(wasm.memory.buffer, ptr, bytes.length).set(bytes);
      packed = BigInt.asUintN(64, fn(ptr, bytes.length));
    } finally {
      wasm.onvm_free(ptr, bytes.length);
    }
    const outPtr = Number(packed >> 32n);
    const outLen = Number(packed & 0xffffffffn);
    try {
      return JSON.parse(decoder.decode(new Uint8Array(wasm.memory.buffer, outPtr, outLen)));
    } finally {
      wasm.onvm_free(outPtr, outLen);
    }
  }

  /** @param {VerifierResult} result */
  function unwrap(result) {
    if (!result.ok) {
      throw new Error(result.error);
    }
    return result;
  }

  return {
    verifyReceipt: (input) => call("verify_receipt", input),
    verifyStateProof: (stateProof, expectedRoot) =>
      call(
        "verify_state_proof",
        expectedRoot === undefined ? stateProof : { ...stateProof, expected_root: expectedRoot },
      ),
    blake3Hex: (bytes) => unwrap(call("blake3_hex", bytes)).hash,
    callSigningMessage: (fields) => {
      const hex = unwrap(call("call_signing_message", fields)).message_hex;
      const out = new Uint8Array(hex.length / 2);
      for (let i = 0; i < out.length; i++) {
        out[i] = parseInt(hex.substr(2 * i, 2), 16);
      }
      return out;
    },
    call,
  };
}
