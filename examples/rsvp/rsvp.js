// The RSVP dApp: answers to the `rsvp` program (wasm_programs/rsvp), signed with this browser
// profile's Ed25519 key, and every answer shown as its receipt arrives, checked in the page.
//
// A classic script, so the page also works opened from disk (file://); the client is imported
// from the node itself (`http://<node>/onvm.js`), the one copy of it. URL parameters:
//   ?node=ws://127.0.0.1:8080&program=prog…&token=onvm_…
// For tests: `window.rsvpPage.ingest(signedReceipt)` shows any receipt as if it had arrived
// (a tampered one is shown as failed).
(function () {
  'use strict';

  const $ = (sel) => document.querySelector(sel);
  const params = new URLSearchParams(location.search);
  const store = (() => { try { return window.localStorage; } catch { return null; } })();
  const remembered = (k) => (store ? store.getItem(`onvm-rsvp.${k}`) : null);
  const remember = (k, v) => { try { if (store) store.setItem(`onvm-rsvp.${k}`, v); } catch { /* private mode */ } };

  const nodeUrl = params.get('node') || remembered('node') || 'ws://127.0.0.1:8080';
  const programId = (params.get('program') || remembered('program') || '').trim();
  const token = params.get('token') || '';
  const MAX_REASON = 280;

  $('#node-url').value = nodeUrl;
  $('#program-id').value = programId;
  $('#token').value = token;
  if (params.get('title')) $('#title').textContent = params.get('title');

  let Onvm = null; // the client module's class
  let c = null; // the connection
  let me = null; // CallerKey
  const answers = new Map(); // caller hex -> {height, row}
  const seenReceipts = new Set();
  let chain = Promise.resolve(); // receipts are processed in arrival order

  // ---- status ----

  function setStatus(state, text) {
    const s = $('#status');
    s.dataset.state = state;
    s.textContent = text;
  }
  function setAnswerStatus(state, text) {
    const s = $('#answer-status');
    s.dataset.state = state;
    s.textContent = text;
  }

  /** `ws://host:port` → `http://host:port` (the node serves the client on its RPC port). */
  function httpBase(url) {
    let s = String(url).trim();
    if (s.startsWith(':')) s = `127.0.0.1${s}`;
    if (!/^[a-z]+:\/\//i.test(s)) s = `ws://${s}`;
    const u = new URL(s);
    u.protocol = u.protocol === 'wss:' || u.protocol === 'https:' ? 'https:' : 'http:';
    return u.origin;
  }

  // ---- settings ----

  $('#settings').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams();
    const node = $('#node-url').value.trim();
    const prog = $('#program-id').value.trim();
    const tok = $('#token').value.trim();
    if (node) next.set('node', node);
    if (prog) next.set('program', prog);
    if (tok) next.set('token', tok);
    if (params.get('title')) next.set('title', params.get('title'));
    remember('node', node);
    remember('program', prog);
    location.search = next.toString();
  });

  // ---- answering ----

  const yes = $('#answer-yes');
  const no = $('#answer-no');
  const reason = $('#reason');
  const sendNo = $('#send-no');

  function updateReason() {
    const n = [...reason.value.trim()].length;
    $('#reason-count').textContent = String(n);
    sendNo.disabled = !c || !me || n === 0 || n > MAX_REASON;
  }
  reason.addEventListener('input', updateReason);
  reason.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); if (!sendNo.disabled) sendNo.click(); }
  });
  yes.addEventListener('click', () => {
    $('#reason-box').hidden = true;
    no.setAttribute('aria-pressed', 'false');
    answer(true);
  });
  no.addEventListener('click', () => {
    $('#reason-box').hidden = false;
    no.setAttribute('aria-pressed', 'true');
    yes.setAttribute('aria-pressed', 'false');
    reason.focus();
    updateReason();
  });
  sendNo.addEventListener('click', () => answer(false, reason.value.trim().replace(/\s+/g, ' ')));

  function setBusy(busy) {
    yes.disabled = busy || !c || !me;
    no.disabled = busy || !c || !me;
    sendNo.disabled = busy;
    if (!busy) updateReason();
  }

  async function answer(attending, why) {
    if (!c || !me) return;
    setBusy(true);
    setAnswerStatus('sending', 'Signing and sending…');
    const input = { op: 'rsvp', attending };
    if (why) input.reason = why;
    try {
      const t0 = performance.now();
      const result = await c.programExecute(programId, input, { signer: me });
      const out = Onvm.outputJson(result);
      const ms = Math.round(performance.now() - t0);
      setAnswerStatus('ok', `${out.replaced ? 'Answer changed' : 'Answer recorded'}: ${attending ? 'coming' : 'not coming'} (height ${out.answer.height}, ${ms} ms).`);
      yes.setAttribute('aria-pressed', String(attending));
      no.setAttribute('aria-pressed', String(!attending));
      if (!attending) { reason.value = ''; $('#reason-box').hidden = true; }
      if (result.receipt) queue(result.receipt, null); // the subscription brings it too: shown once
    } catch (e) {
      setAnswerStatus('error', explain(e));
    } finally {
      setBusy(false);
    }
  }

  /** A person's words for a failed call. */
  function explain(e) {
    const trap = e && e.data && e.data.trap_message;
    if (trap) return trap.replace(/^[a-z_]+: /, '').replace(/^./, (ch) => ch.toUpperCase());
    if (e && e.kind === 'signed_call_required') return 'This program accepts only signed calls, and this one was not signed.';
    if (e && e.kind === 'scope_required') return `Your token may not do this: ${e.message}`;
    if (e && e.kind === 'unsupported') return e.message;
    return (e && e.message) || String(e);
  }

  // ---- receipts → answers ----

  function queue(signed, seq) {
    chain = chain.then(() => ingest(signed, seq)).catch((e) => console.error('rsvp: receipt', e));
    return chain;
  }

  const isZero = (hex) => /^0*$/.test(hex || '');
  const shortCaller = (hex) => `${hex.slice(0, 6)}…${hex.slice(-4)}`;
  const fmtMs = (ms) => (ms < 10 ? ms.toFixed(1) : String(Math.round(ms)));
  function proofText(check) {
    return check.valid
      ? `✓ verified by ${check.signers} of ${check.committeeSize} committee member${check.committeeSize === 1 ? '' : 's'} in ${fmtMs(check.ms)} ms`
      : `✗ verification failed: ${check.reason}`;
  }

  async function ingest(signed, seq) {
    if (!signed || !signed.receipt) return;
    // The same receipt comes from the call and from the feed: shown once. A different object
    // claiming a seen id (a tampered copy) is checked like any other.
    const key = JSON.stringify([signed.id, signed.receipt, signed.signer_bls_key, signed.signature, signed.attestation || null]);
    if (seenReceipts.has(key)) return;
    seenReceipts.add(key);
    const r = signed.receipt;
    const check = await c.verifyReceipt(signed);
    const outcome = typeof r.outcome === 'string' ? r.outcome : Object.keys(r.outcome || {})[0];
    logReceipt(signed, check, outcome, seq);
    if (r.program_id !== programId && check.valid) return;
    if (outcome !== 'ok' && check.valid) return; // a refused request: not an answer

    // What was answered: the call's input, which must hash to the receipt's input_hash.
    let input = null;
    let inputProblem = null;
    try {
      const bytes = Onvm.fromBase64(await c.receiptInput(signed.id));
      const v = await c.verifier();
      if (v.blake3Hex(bytes) !== r.input_hash) inputProblem = 'the node sent an input that does not match the receipt';
      else input = JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) {
      inputProblem = `no input for this receipt (${e.message})`;
    }
    if (input && input.op !== 'rsvp') return;
    const attending = input ? !!input.attending : null;
    const why = input && typeof input.reason === 'string' && input.reason.trim() ? input.reason.trim() : null;
    if (!check.valid || inputProblem) {
      // Shown on its own, never in place of an answer that verified.
      showAnswer({ key: `receipt:${signed.id}`, caller: r.caller, attending, reason: why, height: r.height,
        timestamp: r.timestamp_ms, receipt: signed.id, check: check.valid ? { ...check, valid: false, reason: inputProblem } : check });
      return;
    }
    if (isZero(r.caller)) return; // the program refuses anonymous answers
    const prev = answers.get(r.caller);
    if (prev && prev.height >= r.height) return;
    showAnswer({ key: r.caller, caller: r.caller, attending, reason: why, height: r.height, timestamp: r.timestamp_ms, receipt: signed.id, check });
  }

  function colour(hex) {
    const h = parseInt(hex.slice(0, 4) || '0', 16) % 360;
    return `hsl(${h} 55% 45%)`;
  }

  function showAnswer(a) {
    const list = $('#answers');
    list.querySelector('[data-empty]')?.remove();
    let row = list.querySelector(`li[data-key="${CSS.escape(a.key)}"]`);
    if (!row) {
      row = document.createElement('li');
      row.dataset.key = a.key;
    }
    const mine = !!me && a.caller === me.callerId;
    Object.assign(row.dataset, {
      caller: a.caller, attending: a.attending === null ? 'unknown' : String(a.attending),
      verified: String(a.check.valid), height: String(a.height), receipt: a.receipt, mine: String(mine),
      signers: String(a.check.signers || 0), committeeSize: String(a.check.committeeSize || 0), verifyMs: (a.check.ms || 0).toFixed(1),
    });
    row.setAttribute('data-answer', a.attending === null ? 'unknown' : a.attending ? 'yes' : 'no');
    const avatar = document.createElement('div');
    avatar.className = 'avatar';
    avatar.style.background = isZero(a.caller) ? '#999' : colour(a.caller);
    avatar.textContent = a.caller.slice(0, 2).toUpperCase();
    const who = document.createElement('div');
    who.className = 'who';
    who.title = a.caller;
    who.append(document.createTextNode(isZero(a.caller) ? 'anonymous' : shortCaller(a.caller)));
    if (mine) { const you = document.createElement('span'); you.className = 'you'; you.textContent = '(you)'; who.append(you); }
    const when = document.createElement('span');
    when.className = 'muted';
    when.style.fontWeight = '400';
    when.style.fontSize = '13px';
    when.textContent = ` · ${new Date(a.timestamp).toLocaleString()} · height ${a.height}`;
    who.append(when);
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = a.attending === null ? '?' : a.attending ? 'Coming' : 'Not coming';
    const rs = document.createElement('div');
    rs.className = 'reason';
    rs.textContent = a.reason ? `“${a.reason}”` : '';
    const proof = document.createElement('div');
    proof.className = 'proof';
    proof.textContent = proofText(a.check);
    proof.title = `receipt ${a.receipt}`;
    row.replaceChildren(avatar, who, badge, rs, proof);
    if (a.key === a.caller) answers.set(a.caller, { height: a.height, row, attending: a.attending });
    // Newest first.
    const rows = [...list.children].filter((x) => x !== row);
    const before = rows.find((x) => Number(x.dataset.height) < a.height);
    list.insertBefore(row, before || null);
    if (mine) $('#my-answer').textContent = a.attending ? 'coming' : 'not coming';
    updateTotals();
  }

  function updateTotals() {
    let y = 0, n = 0;
    for (const a of answers.values()) { if (a.attending) y++; else n++; }
    $('#count-yes').textContent = String(y);
    $('#count-no').textContent = String(n);
  }

  function logReceipt(signed, check, outcome, seq) {
    const li = document.createElement('li');
    li.dataset.receipt = signed.id;
    li.dataset.verified = String(check.valid);
    li.dataset.outcome = outcome;
    li.dataset.height = String(signed.receipt.height);
    if (seq) li.dataset.seq = String(seq);
    li.textContent = `#${signed.receipt.height} ${outcome} · ${signed.id.slice(0, 12)}… · ${proofText(check)}`;
    $('#receipts').prepend(li);
    $('#receipt-count').textContent = String($('#receipts').children.length);
  }

  // ---- deploy ----

  $('#deploy-file').addEventListener('change', async (ev) => {
    const file = ev.target.files && ev.target.files[0];
    if (!file) return;
    const st = $('#deploy-status');
    if (!c) { st.textContent = 'connect to a node first'; return; }
    try {
      st.textContent = 'deploying…';
      const bytes = new Uint8Array(await file.arrayBuffer());
      const d = await c.programDeploy({ wasm_base64: Onvm.toBase64(bytes), require_signed_calls: true });
      st.textContent = `${d.created ? 'deployed' : 'already deployed'}: ${d.program_id}`;
      $('#program-id').value = d.program_id;
      $('#settings').requestSubmit();
    } catch (e) {
      st.textContent = explain(e);
    }
  });

  // ---- start ----

  window.rsvpPage = {
    /** Shows a receipt as if it had arrived (tests); resolves once it is shown. */
    ingest: (signed) => queue(signed, null),
    get client() { return c; },
    get callerId() { return me && me.callerId; },
    programId,
  };

  async function start() {
    setStatus('connecting', 'loading the client…');
    const base = httpBase(nodeUrl);
    try {
      const mod = await import(`${base}/onvm.js${token ? `?token=${encodeURIComponent(token)}` : ''}`);
      Onvm = mod.Onvm;
    } catch (e) {
      setStatus('error', 'cannot load the client');
      setAnswerStatus('error', `Could not load ${base}/onvm.js: is the node running there, and does it admit this page's origin? (${e.message})`);
      return;
    }
    try {
      me = await Onvm.callerKey('rsvp');
      $('#identity').textContent = me.callerId;
      $('#identity').title = 'your caller id: the public half of a key this browser profile keeps';
    } catch (e) {
      $('#identity').textContent = 'no key';
      setAnswerStatus('error', isSecureContext ? explain(e) : 'Signing needs a secure page (https, localhost or a file): this page can only watch.');
    }
    setStatus('connecting', 'connecting…');
    try {
      c = await Onvm.connect(nodeUrl, { token: token || undefined });
    } catch (e) {
      setStatus('error', 'not connected');
      setAnswerStatus('error', explain(e));
      return;
    }
    c.onStatus((s, d) => {
      if (s === 'open') setStatus('open', 'live');
      else if (s === 'reconnecting') setStatus('reconnecting', `reconnecting (attempt ${d.attempt})…`);
      else if (s === 'closed') setStatus('closed', 'disconnected');
    });
    c.nodeInfo().then((i) => { $('#node-info').textContent = `${i.network_id} · node ${i.endpoint_id.slice(0, 12)}… · ${c.displayUrl}`; }).catch(() => {});
    if (!programId) {
      setStatus('error', 'no program');
      setAnswerStatus('error', 'No program: give its id below (or ?program=prog… in the URL), or deploy rsvp.wasm.');
      return;
    }
    try {
      await c.manifest(programId);
    } catch (e) {
      setStatus('error', 'unknown program');
      setAnswerStatus('error', `Program ${programId}: ${explain(e)}`);
      return;
    }
    setStatus('open', 'live');
    setBusy(false);
    c.receiptSubscribe(programId, {
      fromSeq: 1,
      onItem: (item) => queue(item.receipt, item.seq),
      onError: (e) => { setStatus('error', 'feed stopped'); setAnswerStatus('error', explain(e)); },
    });
  }

  start();
})();
