// The node's dashboard (served at `GET /`, opened with `?token=…`): identity, health, peers,
// programs, receipts verified in the page, jobs and DAG operations live, and charts. Uses only
// `read` methods, so a read-only token is enough.
import { Onvm, countSigners } from './onvm.js';

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
// The token arrives in the URL (the one `onvm dev` prints): keep it for this tab only and take it
// out of the address bar, so it is not bookmarked, shared in a screenshot or left in history.
const token = params.get('token') || sessionStorage.getItem('onvm-token') || undefined;
if (params.has('token')) {
  try { sessionStorage.setItem('onvm-token', token); } catch { /* storage disabled: URL only */ }
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
}
const MAX_ROWS = 200;
const HISTORY = 90; // chart points
const METRICS_EVERY_MS = 2000;
const SLOW_EVERY_MS = 5000;

// ---- small helpers ----

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}
const short = (s, n = 10) => (s ? (s.length > n + 4 ? `${s.slice(0, n)}…` : s) : '');
const shortId = (id) => {
  const m = /^(blob|prog|rcpt|job|upload)?([0-9a-f]+)$/.exec(id || '');
  return m ? `${m[1] || ''}${m[2].slice(0, 8)}…` : short(id);
};
const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : '');
function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}
function duration(secs) {
  const d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24, m = Math.floor(secs / 60) % 60, s = secs % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}
function num(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(1)}G`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return a >= 10 || Number.isInteger(n) ? String(Math.round(n)) : n.toFixed(1);
}
const outcomeKind = (o) => (typeof o === 'string' ? o : Object.keys(o || {})[0] || '?');
function trimRows(tbody) {
  while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(tbody.rows.length - 1);
}
function showError(msg) {
  $('#error').textContent = msg || '';
}

// ---- connection ----

const conn = $('#conn');
function setConn(state, text) {
  conn.dataset.state = state;
  conn.textContent = text;
}

let c;
async function main() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  try {
    c = await Onvm.connect(`${scheme}://${location.host}`, { token });
  } catch (e) {
    setConn('error', 'not connected');
    showError(`${e.message}${token ? '' : ' — open the URL the node prints, with its ?token=…'}`);
    return;
  }
  setConn('open', 'live');
  c.onStatus((s, d) => {
    if (s === 'open') { setConn('open', 'live'); showError(''); refreshAll(); }
    else if (s === 'reconnecting') setConn('reconnecting', `reconnecting (attempt ${d.attempt})…`);
    else if (s === 'closed') setConn('closed', 'closed');
  });
  await refreshAll();
  startStreams();
  setInterval(pollMetrics, METRICS_EVERY_MS);
  setInterval(() => { if (c.status === 'open') { refreshHealth(); refreshPeers(); refreshInfo(); refreshPrograms(); } }, SLOW_EVERY_MS);
  setInterval(() => { for (const s of document.querySelectorAll('#peers .seen')) s.textContent = ago(Number(s.parentElement.dataset.lastSeen)); }, 1000);
}

async function refreshAll() {
  await Promise.all([refreshInfo(), refreshHealth(), refreshPeers(), refreshPrograms(), refreshJobs(), pollMetrics()]);
}

const guard = (what, fn) => async (...a) => {
  try { return await fn(...a); } catch (e) {
    if (e.kind !== 'disconnected' && e.kind !== 'closed') showError(`${what}: ${e.message}`);
  }
};

// ---- identity ----

let networkId = null;
const refreshInfo = guard('node_info', async () => {
  const i = await c.nodeInfo();
  networkId = i.network_id;
  $('#node-id').textContent = i.endpoint_id;
  $('#node-id').title = i.endpoint_id;
  $('#node-meta').textContent = `${i.network_id} · v${i.version}${i.offline ? ' · offline' : ''}`;
  $('#network-id').textContent = i.network_id;
  $('#version').textContent = i.version;
  $('#uptime').textContent = duration(i.uptime_secs);
  $('#addresses').textContent = i.relay_only ? 'none (relay only)' : (i.addresses.join(', ') || 'none');
  $('#relay').textContent = i.relay_url ? `${i.relay_url} (${i.relay_connected ? 'connected' : 'not connected'})` : (i.relays.length ? 'no home relay yet' : 'none');
  $('#bls-key').textContent = short(i.bls_public_key, 32);
  $('#bls-key').title = i.bls_public_key;
  $('#ticket').textContent = i.ticket;
  document.title = `ONVM ${short(i.endpoint_id, 8)}`;
});

$('#copy-ticket').addEventListener('click', async () => {
  const ticket = $('#ticket').textContent;
  let ok = false;
  try { await navigator.clipboard.writeText(ticket); ok = true; } catch {
    const r = document.createRange();
    r.selectNodeContents($('#ticket'));
    const s = getSelection(); s.removeAllRanges(); s.addRange(r);
    try { ok = document.execCommand('copy'); } catch { ok = false; }
  }
  $('#copy-status').textContent = ok ? 'copied' : 'selected: press Ctrl+C';
  setTimeout(() => { $('#copy-status').textContent = ''; }, 2500);
});

// ---- health ----

const refreshHealth = guard('node_health', async () => {
  const h = await c.nodeHealth();
  const box = $('#health');
  box.dataset.ready = String(h.ready);
  box.dataset.live = String(h.live);
  box.querySelector('.state').textContent = h.ready ? 'ready' : 'not ready';
  box.querySelector('.reason').textContent = h.reason || '';
  box.querySelector('ul').replaceChildren(...h.checks.map((ch) =>
    el('li', { 'data-check': ch.name, 'data-ok': String(ch.ok), title: ch.detail }, `${ch.name}`, el('span', { class: 'muted', text: ch.detail ? ` ${ch.detail}` : '' }))));
});

// ---- peers ----

const refreshPeers = guard('peer_list', async () => {
  const peers = await c.peerList();
  $('#peer-count').textContent = `${peers.length}`;
  const rows = peers.map((p) => el('tr', {
    'data-peer': p.endpoint_id, 'data-connection': p.connection, 'data-latency-ms': p.latency_ms ?? '',
    'data-last-seen': p.last_seen_ms, 'data-suspected': String(p.suspected),
  },
  el('td', { class: 'mono', title: p.endpoint_id, text: short(p.endpoint_id, 12) }),
  el('td', {}, el('span', { class: `pill ${p.connection}`, text: p.connection })),
  el('td', { text: p.latency_ms === null || p.latency_ms === undefined ? '–' : `${p.latency_ms.toFixed(1)} ms` }),
  el('td', { class: 'seen', text: ago(p.last_seen_ms) }),
  el('td', { class: 'muted', title: p.last_error || '', text: [p.suspected ? 'suspected' : '', p.rejected ? `${p.rejected} rejected` : '', p.last_error ? short(p.last_error, 30) : ''].filter(Boolean).join(' · ') })));
  const tbody = $('#peers tbody');
  if (rows.length) tbody.replaceChildren(...rows);
  else tbody.replaceChildren(el('tr', {}, el('td', { colspan: 5, class: 'empty', text: 'no peers: this node is alone (connect one with `onvm connect TICKET`)' })));
});

// ---- programs ----

const programs = new Map(); // id -> row
const manifests = new Map(); // id -> SignedManifest

function programRow(info) {
  const m = info.manifest.manifest;
  manifests.set(info.program_id, info.manifest);
  let row = programs.get(info.program_id);
  const cells = [
    el('td', { class: 'mono', title: info.program_id, text: shortId(info.program_id) }),
    el('td', { class: 'height', text: String(info.height) }),
    el('td', { class: 'keys', text: String(info.keys) }),
    el('td', { title: m.committee.map((x) => x.endpoint_id).join('\n') },
      `${m.threshold} of ${m.committee.length}`, el('span', { class: 'muted', text: ` (${m.committee.map((x) => short(x.endpoint_id, 6)).join(', ')})` })),
    el('td', { text: m.require_signed_calls ? 'required' : 'optional' }),
    el('td', { class: 'muted', title: new Date(m.deployed_at_ms).toISOString(), text: ago(m.deployed_at_ms) }),
  ];
  if (!row) {
    row = el('tr', {});
    programs.set(info.program_id, row);
    const tbody = $('#programs tbody');
    tbody.querySelector('.empty')?.closest('tr')?.remove();
    tbody.prepend(row);
  }
  row.replaceChildren(...cells);
  Object.assign(row.dataset, {
    program: info.program_id, height: String(info.height), committeeSize: String(m.committee.length),
    threshold: String(m.threshold),
  });
  $('#program-count').textContent = `${programs.size}`;
}

const refreshPrograms = guard('program_list', async () => {
  let cursor;
  let n = 0;
  do {
    const page = await c.programList(cursor, 200);
    for (const p of page.items) programRow(p);
    n += page.items.length;
    cursor = page.next_cursor;
  } while (cursor && n < 1000);
  if (!programs.size) $('#programs tbody').replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'empty', text: 'no programs yet' })));
});

async function knowProgram(id) {
  if (programs.has(id)) return;
  try { programRow(await c.programInfo(id)); } catch { /* not replicated yet */ }
}

function bumpHeight(programId, height) {
  const row = programs.get(programId);
  if (!row) { knowProgram(programId); return; }
  if (height + 1 > Number(row.dataset.height)) {
    row.dataset.height = String(height + 1);
    row.querySelector('.height').textContent = String(height + 1);
  }
}

// ---- receipts, verified in the page ----

const verifyQueue = [];
let verifying = false;
const receiptsSeen = new Set();

function addReceipt(signed, seq, live) {
  if (receiptsSeen.has(signed.id)) return;
  receiptsSeen.add(signed.id);
  if (live) { receiptsSinceLast++; fuelSinceLast += signed.receipt.fuel_used; }
  const r = signed.receipt;
  const kind = outcomeKind(r.outcome);
  const zero = /^0+$/.test(r.caller);
  const row = el('tr', {
    'data-receipt': signed.id, 'data-verified': 'pending', 'data-program-id': r.program_id,
    'data-height': r.height, 'data-outcome': kind, 'data-seq': seq ?? '',
  },
  el('td', { class: 'mono', title: signed.id, text: shortId(signed.id) }),
  el('td', { class: 'mono', title: r.program_id, text: shortId(r.program_id) }),
  el('td', { text: String(r.height) }),
  el('td', {}, el('span', { class: `pill ${kind === 'ok' ? 'ok' : 'bad'}`, text: kind, title: typeof r.outcome === 'object' ? JSON.stringify(r.outcome) : '' })),
  el('td', { text: num(r.fuel_used) }),
  el('td', { class: 'mono', title: zero ? 'anonymous call' : r.caller, text: zero ? 'anonymous' : short(r.caller, 8) }),
  el('td', { class: 'verdict', text: 'verifying…' }));
  const tbody = $('#receipts tbody');
  tbody.prepend(row);
  trimRows(tbody);
  bumpHeight(r.program_id, r.height);
  verifyQueue.push({ signed, row });
  pumpVerify();
}

async function pumpVerify() {
  if (verifying) return;
  verifying = true;
  try {
    while (verifyQueue.length) {
      // Newest first (the rows on top), and a macrotask between checks: each one is tens of
      // milliseconds of wasm, and a backlog must not freeze the page or its timers.
      const { signed, row } = verifyQueue.pop();
      if (!row.isConnected) continue;
      await new Promise((r) => setTimeout(r, 0));
      let check;
      try {
        const manifest = manifests.get(signed.receipt.program_id) || await c.manifest(signed.receipt.program_id);
        check = await c.verifyReceipt(signed, { manifest, networkId: networkId || undefined });
      } catch (e) {
        check = { valid: false, reason: e.message, signers: 0, committeeSize: 0, ms: 0 };
      }
      showVerdict(row, check, signed);
    }
  } finally {
    verifying = false;
  }
}

function showVerdict(row, check, signed) {
  row.dataset.verified = String(check.valid);
  row.dataset.signers = String(check.signers);
  row.dataset.committeeSize = String(check.committeeSize);
  row.dataset.verifyMs = check.ms.toFixed(1);
  const cell = row.querySelector('.verdict');
  if (check.valid) {
    cell.textContent = `✓ verified by ${check.signers} of ${check.committeeSize} committee member${check.committeeSize === 1 ? '' : 's'} in ${check.ms < 10 ? check.ms.toFixed(1) : Math.round(check.ms)} ms`;
    cell.title = `receipt ${signed.id}: id, caller proof, executor and committee signatures checked in this page`;
  } else {
    const claimed = signed.attestation ? countSigners(signed.attestation.signers) : 1;
    cell.textContent = `✗ verification FAILED: ${check.reason}`;
    cell.title = `claims ${claimed} signer(s)`;
  }
}

// A receipt can be checked by hand from the console: `onvmDashboard.addReceipt(obj)`.
window.onvmDashboard = { addReceipt: (r) => addReceipt(r), get client() { return c; } };

// ---- jobs ----

const jobs = new Map();

function jobRow(j) {
  let row = jobs.get(j.job_id);
  if (!row) {
    row = el('tr', { 'data-job': j.job_id });
    jobs.set(j.job_id, row);
    const tbody = $('#jobs tbody');
    tbody.querySelector('.empty')?.closest('tr')?.remove();
    tbody.prepend(row);
    trimRows(tbody);
  }
  if (j.seq && Number(row.dataset.seq || 0) > j.seq) return;
  row.dataset.status = j.status;
  row.dataset.programId = j.program_id;
  if (j.seq) row.dataset.seq = String(j.seq);
  row.replaceChildren(
    el('td', { class: 'mono', title: j.job_id, text: shortId(j.job_id) }),
    el('td', { class: 'mono', title: j.program_id, text: shortId(j.program_id) }),
    el('td', {}, el('span', { class: 'pill', text: j.status, title: j.error || '' })),
    el('td', { text: String(j.attempt ?? '') }),
    el('td', { text: num(j.fuel_used) }),
    el('td', { class: 'muted', text: time(j.at_ms) }),
  );
}

const refreshJobs = guard('job_list', async () => {
  const page = await c.jobList(undefined, undefined, 50);
  const items = [...page.items].sort((a, b) => a.updated_at_ms - b.updated_at_ms);
  for (const j of items) {
    const last = j.attempts[j.attempts.length - 1];
    jobRow({ job_id: j.job_id, program_id: j.program_id, status: j.status, attempt: last ? last.number : 0,
      fuel_used: j.attempts.reduce((s, a) => s + a.fuel_used, 0), error: j.error, at_ms: j.updated_at_ms });
  }
  if (!jobs.size) $('#jobs tbody').replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'empty', text: 'no jobs yet' })));
});

// ---- DAG operations ----

let dagCount = 0;
function dagSummary(kind, p) {
  switch (kind) {
    case 'NodeAnnounce': return 'a node joined';
    case 'BlobPublished': return `${shortId(p.blob)} ${num(p.size)} B${p.mime ? ` ${p.mime}` : ''}`;
    case 'ProgramDeployed': return `${shortId(p.manifest.manifest.program_id)} (committee ${p.manifest.manifest.committee.length})`;
    case 'ExecutionCommitted': return `${shortId(p.receipt.receipt.program_id)} height ${p.receipt.receipt.height}, ${outcomeKind(p.receipt.receipt.outcome)}`;
    case 'JobSubmitted': return `${shortId(p.job.job_id)} for ${shortId(p.job.program_id)}`;
    case 'JobStateChanged': return `${shortId(p.job_id)} → ${p.status}`;
    default: return '';
  }
}

function addDagOp(item) {
  const body = item.node.body;
  const kind = Object.keys(body.payload || {})[0] || 'unknown';
  const p = body.payload[kind] || {};
  const row = el('tr', { 'data-dag-op': kind, 'data-seq': item.seq, 'data-id': item.id },
    el('td', { text: String(item.seq) }),
    el('td', {}, el('span', { class: 'pill', text: kind })),
    el('td', { class: 'mono', title: body.author, text: short(body.author, 8) }),
    el('td', { class: 'mono', text: dagSummary(kind, p) }),
    el('td', { class: 'muted', text: time(body.timestamp_ms) }));
  const tbody = $('#dag tbody');
  tbody.prepend(row);
  trimRows(tbody);
  dagCount++;
  $('#dag-count').textContent = `${dagCount} seen`;
  if (kind === 'ProgramDeployed') knowProgram(p.manifest.manifest.program_id);
}

// ---- streams ----

async function startStreams() {
  // Recent history first: sequence numbers are the node's DAG arrival order, 1..count.
  let count = 0;
  try { count = (await c.dagHeads()).count; } catch { /* from now on */ }
  const from = (n) => (count ? Math.max(1, count - n + 1) : undefined);
  const onError = (what) => (e) => showError(`${what}: ${e.message}`);
  c.dagSubscribe({ fromSeq: from(100), onItem: addDagOp, onError: onError('dag_subscribe') });
  c.receiptSubscribe(null, {
    fromSeq: from(300),
    onItem: (it) => addReceipt(it.receipt, it.seq, it.seq > count),
    onError: onError('receipt_subscribe'),
  });
  c.jobSubscribeAll(null, { onItem: (it) => jobRow(it), onError: onError('job_subscribe_all') });
}

// ---- metrics and charts ----

const series = { calls: [], failed: [], committed: [], fuel: [], jobFuel: [], netFuel: [], p50: [], p90: [], p99: [] };
let receiptsSinceLast = 0; // receipts that arrived live (every node's calls, as this node applies them)
let fuelSinceLast = 0; // and the fuel they burned
let lastMetrics = null;
const histograms = []; // [{t, buckets: [[le, count]]}] of program_execute, for windowed percentiles

function push(name, v) {
  series[name].push(v);
  if (series[name].length > HISTORY) series[name].shift();
}

const pollMetrics = guard('node_metrics', async () => {
  if (!c || c.status !== 'open') return;
  const m = await c.nodeMetrics();
  const t = performance.now();
  if (lastMetrics) {
    const dt = (t - lastMetrics.t) / 1000;
    const d = (k) => Math.max(0, (m.counters[k] || 0) - (lastMetrics.m.counters[k] || 0)) / dt;
    const calls = d('calls_executed');
    push('calls', calls);
    push('failed', d('calls_failed'));
    push('committed', receiptsSinceLast / dt);
    push('netFuel', fuelSinceLast / dt);
    push('fuel', d('fuel_used'));
    push('jobFuel', d('job_fuel_used'));
    $('#calls-now').textContent = num(calls);
    $('#fuel-now').textContent = num(Math.max(d('fuel_used') + d('job_fuel_used'), fuelSinceLast / dt));
  }
  lastMetrics = { t, m };
  receiptsSinceLast = 0;
  fuelSinceLast = 0;
  await latency(m);
  drawCharts();
});

/** Call latency percentiles: `program_execute` from `/metrics` over the last 30 s, else the job latency gauges. */
async function latency(m) {
  let p = null;
  try {
    const r = await fetch('/metrics', { headers: token ? { authorization: `Bearer ${token}` } : {}, cache: 'no-store' });
    if (r.ok) p = windowPercentiles(parseHistogram(await r.text(), 'onvm_rpc_call_duration_seconds', 'method="program_execute"'));
  } catch { /* not served: fall back */ }
  if (p) {
    $('#latency-title').textContent = 'Call latency (ms)';
    $('#latency-source').textContent = 'program_execute here, last 30 s (/metrics)';
  } else {
    const g = m.gauges;
    p = { p50: g.job_latency_p50_ms, p90: g.job_latency_p90_ms, p99: g.job_latency_p99_ms };
    $('#latency-title').textContent = 'Job latency (ms)';
    $('#latency-source').textContent = 'jobs, submit to end (node_metrics)';
  }
  push('p50', p.p50 ?? null);
  push('p90', p.p90 ?? null);
  push('p99', p.p99 ?? null);
  $('#p50-now').textContent = num(p.p50);
  $('#p90-now').textContent = num(p.p90);
  $('#p99-now').textContent = num(p.p99);
}

function parseHistogram(text, name, label) {
  const buckets = [];
  const re = new RegExp(`^${name}_bucket\\{([^}]*)\\} (\\S+)$`, 'gm');
  for (const [, labels, v] of text.matchAll(re)) {
    if (!labels.includes(label)) continue;
    const le = /le="([^"]+)"/.exec(labels)[1];
    buckets.push([le === '+Inf' ? Infinity : Number(le), Number(v)]);
  }
  return buckets.length ? buckets : null;
}

function windowPercentiles(buckets) {
  if (!buckets) return histograms.length ? { p50: null, p90: null, p99: null } : null;
  const now = performance.now();
  histograms.push({ t: now, buckets });
  while (histograms.length > 2 && now - histograms[1].t >= 30000) histograms.shift();
  const base = histograms.length > 1 && now - histograms[0].t >= 30000 ? histograms[0].buckets : null;
  const w = buckets.map(([le, n], i) => [le, n - (base ? base[i][1] : 0)]);
  const total = w[w.length - 1][1];
  if (!total) return { p50: null, p90: null, p99: null };
  const q = (f) => {
    const want = f * total;
    let prevLe = 0, prevN = 0;
    for (const [le, n] of w) {
      if (n >= want) {
        if (le === Infinity) return prevLe * 1000;
        const frac = n === prevN ? 1 : (want - prevN) / (n - prevN);
        return (prevLe + (le - prevLe) * frac) * 1000;
      }
      prevLe = le; prevN = n;
    }
    return prevLe * 1000;
  };
  return { p50: q(0.5), p90: q(0.9), p99: q(0.99) };
}

function drawCharts() {
  lineChart($('#chart-calls'), [[series.calls, '#3157d5'], [series.failed, '#c62828'], [series.committed, '#8a63d2']]);
  lineChart($('#chart-fuel'), [[series.fuel, '#14804a'], [series.jobFuel, '#b26a00'], [series.netFuel, '#8a63d2']]);
  lineChart($('#chart-latency'), [[series.p50, '#3157d5'], [series.p90, '#b26a00'], [series.p99, '#c62828']]);
}

const SVG = 'http://www.w3.org/2000/svg';
function lineChart(svg, lines) {
  const W = 300, H = 120, pad = 14;
  const values = lines.flatMap(([s]) => s.filter((v) => v !== null && Number.isFinite(v)));
  const max = Math.max(1, ...values) * 1.1;
  const parts = [];
  for (const f of [0.5, 1]) {
    const y = H - pad - (H - 2 * pad) * f;
    parts.push(`<line x1="0" x2="${W}" y1="${y}" y2="${y}" stroke="#e6e8ee" stroke-width="1"/>`);
    parts.push(`<text x="3" y="${y - 2}" font-size="9" fill="#8a93a3">${num(max * f)}</text>`);
  }
  for (const [s, color] of lines) {
    let d = '';
    let pen = false;
    s.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) { pen = false; return; }
      const x = (W * (i + HISTORY - s.length)) / (HISTORY - 1);
      const y = H - pad - ((H - 2 * pad) * v) / max;
      d += `${pen ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`;
      pen = true;
    });
    if (d) parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6" vector-effect="non-scaling-stroke"/>`);
  }
  const doc = new DOMParser().parseFromString(`<svg xmlns="${SVG}">${parts.join('')}</svg>`, 'image/svg+xml');
  svg.replaceChildren(...[...doc.documentElement.childNodes].map((n) => document.importNode(n, true)));
  const first = lines[0][0];
  svg.dataset.points = String(first.length);
  svg.dataset.last = first.length ? String(first[first.length - 1] ?? '') : '';
}

main();
