//! What committees cost, against bare anchors, in one run.
//!
//! `cargo build --release --bin onvm && cargo run --release --example bench_committee` (builds
//! wasm_programs first if needed). Everything runs offline, on loopback, in this process
//! except part 5:
//!
//! 1. Aggregate receipt verification with 3, 16 and 64 signers (every member signs):
//!    `VerifiedCommittee::verify` (pure-Rust bls12_381; the committee is built once, outside
//!    the timing, as a verifier caches it) against blst's `fast_aggregate_verify` on the same
//!    message and keys. The blst timing includes decompressing the 48-byte aggregate
//!    signature (with the subgroup check), since `verify` decodes it from bytes as well; the
//!    keys are decoded once for both. Also the one-time cost of `VerifiedCommittee::new`
//!    (decoding, subgroup and proof-of-possession checks of every key).
//! 2. `program_execute` latency of a writing kvstore call on a K=4 committee (the default,
//!    threshold 3) against the same program deployed with a committee of one, on four nodes joined by ticket, over the
//!    WebSocket client of node 1 (the deployer). Every K=4 receipt's attestation is verified
//!    afterwards with `VerifiedCommittee`.
//! 3. Checking one K=4 receipt against re-running its call: `VerifiedCommittee::verify` vs a
//!    read-only `program_execute` of the same input on node 1 (a `put` in a read-only call
//!    traps `read_only` at its first write, after the parsing and reads), vs a read-only `get`
//!    of the same key (a complete read-only call) and vs a raw wasmtime re-execution of the
//!    input from the receipt's pre-state with a minimal in-memory host, checked against the
//!    receipt's output hash and write digest.
//! 4. Failover: four nodes, a K=4 program (threshold 3) homed on node 1, puts sent through
//!    node 2. Latency with the home alive; then node 1 shuts down (its connections close) and
//!    the time until the first put through node 2 commits on another member (what a client
//!    waits once), then the latency of later puts with the new sequencer.
//! 5. Failover after kill -9: four `onvm run-node` processes (the release binary: run
//!    `cargo build --release --bin onvm` first), the default committee homed on node 1, with
//!    `net.idle_timeout_ms` at its floor (1000). After warm-up puts, node 1 gets SIGKILL and at
//!    once a put goes through node 3 (a member: PBFT replaces the dead leader by a view change
//!    after `committee.view_timeout_ms`) and a job through node 4 (forwarded to the dead home
//!    first, then to the next member). Five rounds, each on a fresh network.

#[path = "support/mod.rs"]
mod support;

use support::{WAIT, percentiles, within};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use blst::min_sig::{AggregateSignature, PublicKey, SecretKey, Signature};
use jsonrpsee::core::ClientError;
use jsonrpsee::ws_client::WsClient;
use onvm::node::Node;
use onvm::rpc_api::api::{DagApiClient, ProgramApiClient};
use onvm::rpc_api::bls::{POP_DST, SIG_DST};
use onvm::rpc_api::committee::{
    AggregatedReceipt, Committee, Member, VerifiedCommittee, default_threshold, set_signer,
};
use onvm::rpc_api::error::error_data;
use onvm::rpc_api::program::{
    DeployRequest, ExecuteOptions, ExecutionReceipt, Outcome, SignedReceipt, write_digest,
};
use onvm::rpc_api::types::Base64Bytes;
use onvm::rpc_api::{BlobId, Hash32, HexBytes, ProgramId};

/// Every wait is bounded by this, so a broken run fails loudly instead of hanging.
/// The network id used for the synthetic receipts of part 1.
const NET: &str = "onvm-devnet";
const SIZES: [usize; 3] = [3, 16, 64];
/// Timed iterations per committee size in part 1 (each runs onvm and blst once, interleaved).
const VERIFY_ITERS: usize = 100;
/// Untimed iterations before them.
const VERIFY_WARMUP: usize = 5;
/// Timed writing calls per program in part 2.
const EXEC_CALLS: usize = 200;
/// Untimed writing calls per program before them (first-call compilation, connections).
const EXEC_WARMUP: usize = 10;
/// Timed iterations of each measurement in part 3.
const RECHECK_ITERS: usize = 200;
/// Part 2 also counts the calls at least this slow (a bimodal tail shows here).
const SLOW: Duration = Duration::from_millis(50);
const ONVM_NOT_FOUND: i64 = -(1i64 << 32);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(samples: &[Duration]) -> Result<Duration> {
    ensure!(!samples.is_empty(), "no samples");
    let mut s = samples.to_vec();
    s.sort_unstable();
    Ok(s[(s.len() - 1) / 2])
}

#[tokio::main]
async fn main() -> Result<()> {
    let wasm = support::program_wasm("kvstore").context("the kvstore program")?;

    println!("== 1. aggregate receipt verification ==");
    let mut aggregate_rows = Vec::new();
    for n in SIZES {
        let row = bench_aggregate(n).with_context(|| format!("aggregate verify, {n} signers"))?;
        println!("{n} signers: done");
        aggregate_rows.push((n, row));
    }

    println!("\n== 2. execute latency, K=4 committee vs single node ==");
    let exec = bench_execute(&wasm).await.context("execute benchmark")?;

    println!("\n== 3. failover, K=4 committee, the home stops ==");
    let failover = bench_failover(&wasm).await.context("failover benchmark")?;

    println!(
        "\n== 4. failover after kill -9 of the home, {KILL_ROUNDS} rounds of 4 onvm processes, default committee, net.idle_timeout_ms={IDLE_FLOOR_MS} =="
    );
    let mut kills = Vec::new();
    for round in 0..KILL_ROUNDS {
        let k = bench_kill9(&wasm)
            .await
            .with_context(|| format!("kill -9 failover, round {}", round + 1))?;
        println!(
            "round {}: call via a member {:.0} ms, job via another member {:.0} ms after the kill",
            round + 1,
            ms(k.call),
            ms(k.job)
        );
        kills.push(k);
    }

    println!("\n== results ==");
    for (n, row) in &aggregate_rows {
        println!(
            "aggregate verify {n} signers: onvm {:.2} ms | blst {:.2} ms | ratio {:.1}x (VerifiedCommittee::new {:.1} ms once)",
            ms(row.onvm),
            ms(row.blst),
            row.onvm.as_secs_f64() / row.blst.as_secs_f64(),
            ms(row.new_once)
        );
    }
    let k4 = percentiles(&exec.k4)?;
    let k1 = percentiles(&exec.k1)?;
    println!(
        "execute put K=4 ({EXEC_CALLS} calls): {} | attestations verified {}/{EXEC_CALLS} ({})",
        k4, exec.k4_verified, exec.k4_signers
    );
    println!(
        "execute put K=1 ({EXEC_CALLS} calls): {} | receipts without attestation verified {}/{EXEC_CALLS}",
        k1, exec.k1_verified
    );
    println!(
        "execute ratio K=4/K=1: p50 {:.1}x  p90 {:.1}x  p99 {:.1}x",
        k4.p50 / k1.p50,
        k4.p90 / k1.p90,
        k4.p99 / k1.p99
    );
    let slow = |v: &[Duration]| v.iter().filter(|d| **d >= SLOW).count();
    println!(
        "execute calls taking >= {} ms: K=4 {}/{EXEC_CALLS}, K=1 {}/{EXEC_CALLS}",
        SLOW.as_millis(),
        slow(&exec.k4),
        slow(&exec.k1)
    );
    let r = &exec.recheck;
    println!(
        "one K=4 receipt (height {}): VerifiedCommittee::verify {:.3} ms | read-only execute, same input (traps read_only at the put) {:.3} ms | read-only get, same key {:.3} ms | raw wasmtime re-execution {:.3} ms",
        r.height,
        ms(r.verify),
        ms(r.ro_same),
        ms(r.ro_get),
        ms(r.raw)
    );
    println!(
        "ratio verify / read-only execute (same input): {:.2}x | verify / read-only get: {:.2}x | verify / raw wasmtime: {:.1}x",
        r.verify.as_secs_f64() / r.ro_same.as_secs_f64(),
        r.verify.as_secs_f64() / r.ro_get.as_secs_f64(),
        r.verify.as_secs_f64() / r.raw.as_secs_f64()
    );
    let before = percentiles(&failover.before)?;
    let after = percentiles(&failover.after)?;
    println!("failover K=4, puts via node 2, home alive ({FAILOVER_CALLS} calls): {before}");
    println!(
        "failover: first put after the home stopped committed in {:.0} ms (height {}, sequenced by another member)",
        ms(failover.first),
        failover.first_height
    );
    println!("failover K=4, puts via node 2 after the takeover ({FAILOVER_CALLS} calls): {after}");
    println!(
        "failover ratio after/before: p50 {:.1}x  p90 {:.1}x",
        after.p50 / before.p50,
        after.p90 / before.p90
    );
    let calls: Vec<Duration> = kills.iter().map(|k| k.call).collect();
    let jobs: Vec<Duration> = kills.iter().map(|k| k.job).collect();
    println!(
        "failover after kill -9 ({KILL_ROUNDS} rounds): first call {} | first job {}",
        percentiles(&calls)?,
        percentiles(&jobs)?
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------
// 4b. Failover after kill -9, with processes
// ------------------------------------------------------------------------------------------

const KILL_ROUNDS: usize = 5;
/// `net.idle_timeout_ms` at its floor: how soon a silent (killed) peer's connection is dropped.
const IDLE_FLOOR_MS: u64 = 1000;

struct Kill9 {
    /// From the kill to the answer of a put sent to a surviving member.
    call: Duration,
    /// From the kill to the completion of a job submitted to another surviving node.
    job: Duration,
}

/// Four `onvm run-node` processes (release), the kvstore on the default committee (K=4,
/// threshold 3) homed on the first; warm-up puts, then SIGKILL of the home, then at once a put
/// through one survivor and a job through another.
async fn bench_kill9(wasm: &[u8]) -> Result<Kill9> {
    use onvm::rpc_api::api::{JobApiClient, NodeApiClient, PeerApiClient};
    use onvm::rpc_api::jobs::{JobStatus, SubmitJob};
    let bin = support::onvm_release_bin()?;
    let tmp = tempfile::tempdir()?;
    let idle = format!("net.idle_timeout_ms={IDLE_FLOOR_MS}");
    let mut nodes = Vec::new();
    for i in 0..4 {
        let dir = tmp.path().join(format!("n{i}"));
        nodes.push(support::NodeProcess::spawn(&bin, &dir, &["--set", &idle])?);
    }
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(n.client().await?);
    }
    let ticket = within("node_info", NodeApiClient::info(&clients[0]))
        .await?
        .context("node_info")?
        .ticket;
    for c in &clients[1..] {
        within("peer_connect", PeerApiClient::connect(c, ticket.clone()))
            .await?
            .context("peer_connect")?;
    }
    converge(&clients, "processes joined").await?;
    let res = within(
        "program_deploy",
        ProgramApiClient::deploy(
            &clients[0],
            DeployRequest {
                wasm_base64: Some(wasm.to_vec().into()),
                ..Default::default()
            },
        ),
    )
    .await?
    .context("program_deploy with the default committee")?;
    let p = res.program_id;
    let members = res.manifest.manifest.committee.len();
    ensure!(members == 4, "default committee of {members}, expected 4");
    converge(&clients, "after deploying").await?;
    for i in 0..EXEC_WARMUP {
        within(
            "warm-up put",
            execute(&clients[1], p, put_input(&format!("w{i}"))?, None),
        )
        .await?
        .context("warm-up put")?;
    }
    converge(&clients, "after the warm-up").await?;

    nodes[0].kill9();
    let killed = Instant::now();
    let job = SubmitJob {
        program_id: p,
        request_id: "after-kill".into(),
        input_base64: Some(Base64Bytes::from(put_input("job")?)),
        input_blob: None,
        entrypoint: None,
        max_retries: Some(0),
        timeout_ms: None,
        fuel: None,
        metadata: None,
        signed: None,
    };
    let (call, job) = tokio::join!(
        async {
            let r = within(
                "put after the kill",
                execute(&clients[2], p, put_input("call")?, None),
            )
            .await?
            .context("put after the kill")?;
            ensure!(r.receipt.is_some(), "the put has no receipt");
            Ok::<_, anyhow::Error>(killed.elapsed())
        },
        async {
            let submitted = within("job_submit", JobApiClient::submit(&clients[3], job))
                .await?
                .context("job_submit after the kill")?;
            let id = submitted.job.job_id;
            loop {
                let j = within("job_status", JobApiClient::status(&clients[3], id))
                    .await?
                    .context("job_status")?;
                if j.status.is_terminal() {
                    ensure!(j.status == JobStatus::Completed, "job ended {:?}", j.status);
                    return Ok::<_, anyhow::Error>(killed.elapsed());
                }
                ensure!(
                    killed.elapsed() < WAIT,
                    "the job did not finish within {WAIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    );
    Ok(Kill9 {
        call: call?,
        job: job?,
    })
}

// ------------------------------------------------------------------------------------------
// 4. Failover
// ------------------------------------------------------------------------------------------

const FAILOVER_CALLS: usize = 100;

struct Failover {
    before: Vec<Duration>,
    first: Duration,
    first_height: u64,
    after: Vec<Duration>,
}

async fn timed_puts(c: &WsClient, p: ProgramId, prefix: &str) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(FAILOVER_CALLS);
    for i in 0..FAILOVER_CALLS {
        let key = format!("{prefix}{i}");
        let t = Instant::now();
        within("put", execute(c, p, put_input(&key)?, None))
            .await?
            .with_context(|| format!("put {key}"))?;
        latencies.push(t.elapsed());
    }
    Ok(latencies)
}

async fn bench_failover(wasm: &[u8]) -> Result<Failover> {
    let (dirs, nodes, clients) = joined_nodes(4).await?;
    let home = nodes[0].info().endpoint_id;
    let p = deploy(&clients[0], wasm, "failover", 4).await?;
    converge(&clients, "after deploying").await?;
    let via = &clients[1];
    for i in 0..EXEC_WARMUP {
        within(
            "warm-up put",
            execute(via, p, put_input(&format!("w{i}"))?, None),
        )
        .await?
        .context("warm-up put")?;
    }
    let before = timed_puts(via, p, "a").await?;

    let mut nodes = nodes.into_iter();
    let first_node = nodes.next().context("node 1")?;
    within("node 1 shutdown", first_node.shutdown()).await?;
    let t = Instant::now();
    let res = within(
        "first put after the stop",
        execute(via, p, put_input("first")?, None),
    )
    .await?
    .context("first put after the home stopped")?;
    let first = t.elapsed();
    let receipt = res.receipt.context("no receipt")?;
    ensure!(
        receipt.receipt.executor.to_string() != home,
        "the put after the stop was sequenced by the stopped home"
    );
    let after = timed_puts(via, p, "b").await?;

    drop(clients);
    for n in nodes {
        within("node shutdown", n.shutdown()).await?;
    }
    drop(dirs);
    Ok(Failover {
        before,
        first,
        first_height: receipt.receipt.height,
        after,
    })
}

// ------------------------------------------------------------------------------------------
// 1. Aggregate verification
// ------------------------------------------------------------------------------------------

struct Key {
    sk: SecretKey,
    pk: PublicKey,
    member: Member,
}

/// A blst min_sig key with its proof of possession, as nodes make them (and tests/committee.rs).
fn key(i: u64) -> Result<Key> {
    let mut ikm = [0u8; 32];
    ikm[..8].copy_from_slice(&i.to_le_bytes());
    ikm[8] = 0xa5;
    let sk = SecretKey::key_gen(&ikm, &[]).map_err(|e| anyhow!("key_gen: {e:?}"))?;
    let pk = sk.sk_to_pk();
    let compressed = pk.compress();
    let pop = sk.sign(&compressed, POP_DST, &[]).compress();
    Ok(Key {
        sk,
        pk,
        member: Member {
            endpoint_id: Hash32(*blake3::hash(&i.to_le_bytes()).as_bytes()),
            bls_public_key: HexBytes(compressed.to_vec()),
            proof_of_possession: HexBytes(pop.to_vec()),
        },
    })
}

fn synthetic_receipt(program: ProgramId) -> ExecutionReceipt {
    ExecutionReceipt {
        version: 1,
        network_id: NET.into(),
        program_id: program,
        code_hash: BlobId::from_bytes([1; 32]),
        engine: "bench".into(),
        entrypoint: "onvm_main".into(),
        height: 7,
        input_hash: Hash32([2; 32]),
        caller: Hash32::ZERO,
        call_id: Hash32::ZERO,
        caller_proof: None,
        timestamp_ms: 1,
        seed: Hash32([3; 32]),
        state_root_in: Hash32([4; 32]),
        state_root_out: Hash32([5; 32]),
        write_digest: Hash32([6; 32]),
        output_hash: Hash32([7; 32]),
        output_len: 0,
        fuel_limit: 10,
        fuel_used: 5,
        outcome: Outcome::Ok,
        executor: Hash32([8; 32]),
    }
}

struct AggregateRow {
    onvm: Duration,
    blst: Duration,
    new_once: Duration,
}

fn bench_aggregate(n: usize) -> Result<AggregateRow> {
    let keys: Vec<Key> = (0..n as u64).map(key).collect::<Result<_>>()?;
    let program = ProgramId::from_bytes([n as u8; 32]);
    let committee = Committee {
        program_id: program,
        epoch: 0,
        members: keys.iter().map(|k| k.member.clone()).collect(),
        threshold: default_threshold(n),
    };
    let t = Instant::now();
    let verified = VerifiedCommittee::new(committee).map_err(|e| anyhow!("committee: {e}"))?;
    let new_once = t.elapsed();

    // Every member signs the same receipt; the signatures are aggregated.
    let mut receipt = synthetic_receipt(program);
    receipt.executor = keys[0].member.endpoint_id;
    let id = receipt.id();
    let msg = onvm::rpc_api::committee::precommit_message(&receipt, &id, 0, 0);
    let sigs: Vec<Signature> = keys.iter().map(|k| k.sk.sign(&msg, SIG_DST, &[])).collect();
    let refs: Vec<&Signature> = sigs.iter().collect();
    let aggregate = AggregateSignature::aggregate(&refs, true)
        .map_err(|e| anyhow!("aggregating signatures: {e:?}"))?
        .to_signature();
    let mut bitmap = Vec::new();
    for i in 0..n {
        set_signer(&mut bitmap, n, i);
    }
    let agg = AggregatedReceipt {
        id,
        receipt,
        epoch: 0,
        round: Some(0),
        signers: HexBytes(bitmap),
        signature: HexBytes(aggregate.compress().to_vec()),
    };
    let pks: Vec<&PublicKey> = keys.iter().map(|k| &k.pk).collect();

    let blst_once = |sig_bytes: &[u8]| -> Result<()> {
        let sig = Signature::uncompress(sig_bytes).map_err(|e| anyhow!("uncompress: {e:?}"))?;
        let r = sig.fast_aggregate_verify(true, &msg, SIG_DST, &pks);
        ensure!(
            r == blst::BLST_ERROR::BLST_SUCCESS,
            "blst fast_aggregate_verify: {r:?}"
        );
        Ok(())
    };
    let onvm_once = || -> Result<()> {
        verified
            .verify(&agg, NET)
            .map_err(|e| anyhow!("VerifiedCommittee::verify: {e}"))
    };
    let signers = verified
        .signers(&agg.signers.0)
        .map_err(|e| anyhow!("bitmap: {e}"))?;
    ensure!(
        signers.len() == n,
        "{} signers in the bitmap",
        signers.len()
    );

    for _ in 0..VERIFY_WARMUP {
        onvm_once()?;
        blst_once(&agg.signature.0)?;
    }
    let mut onvm = Vec::with_capacity(VERIFY_ITERS);
    let mut blst_t = Vec::with_capacity(VERIFY_ITERS);
    for _ in 0..VERIFY_ITERS {
        let t = Instant::now();
        onvm_once()?;
        onvm.push(t.elapsed());
        let t = Instant::now();
        blst_once(&agg.signature.0)?;
        blst_t.push(t.elapsed());
    }
    Ok(AggregateRow {
        onvm: median(&onvm)?,
        blst: median(&blst_t)?,
        new_once,
    })
}

// ------------------------------------------------------------------------------------------
// 2. Execute latency on four nodes (the default committee)
// ------------------------------------------------------------------------------------------

/// `n` fresh nodes joined to the first, converged.
async fn joined_nodes(n: usize) -> Result<(Vec<tempfile::TempDir>, Vec<Node>, Vec<WsClient>)> {
    let (dirs, nodes, clients) = support::joined_nodes(n).await?;
    let took = converge(&clients, "after joining").await?;
    println!("{n} nodes converged after {:.0} ms", ms(took));
    Ok((dirs, nodes, clients))
}

async fn converge(clients: &[WsClient], what: &str) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let mut states = Vec::new();
        for c in clients {
            let mut h = within("dag_heads", DagApiClient::heads(c))
                .await?
                .context("dag_heads")?;
            h.heads.sort();
            states.push((h.heads, h.count));
        }
        if states.windows(2).all(|w| w[0] == w[1]) {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < WAIT,
            "the nodes' DAG heads did not converge within {WAIT:?} ({what})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kv(op: serde_json::Value) -> Result<Vec<u8>> {
    serde_json::to_vec(&op).context("encoding a kvstore request")
}

fn put_input(key: &str) -> Result<Vec<u8>> {
    kv(serde_json::json!({"op": "put", "key": key, "data_base64": "dg=="}))
}

async fn deploy(c: &WsClient, wasm: &[u8], salt: &str, k: u32) -> Result<ProgramId> {
    let res = within(
        "program_deploy",
        ProgramApiClient::deploy(
            c,
            DeployRequest {
                wasm_base64: Some(wasm.to_vec().into()),
                salt: salt.into(),
                committee_size: Some(k),
                ..Default::default()
            },
        ),
    )
    .await?
    .with_context(|| format!("program_deploy (committee_size {k}, salt {salt:?})"))?;
    let members = res.manifest.manifest.committee.len();
    ensure!(
        members == k as usize,
        "deployed with {members} committee members, asked for {k} (does the deployer know the other nodes' announcements?)"
    );
    Ok(res.program_id)
}

async fn execute(
    c: &WsClient,
    p: ProgramId,
    input: Vec<u8>,
    options: Option<ExecuteOptions>,
) -> std::result::Result<onvm::rpc_api::program::ExecuteResult, ClientError> {
    ProgramApiClient::execute(c, p, Base64Bytes::from(input), options).await
}

/// `EXEC_WARMUP` untimed then `EXEC_CALLS` timed writing calls; returns latencies and receipts.
async fn run_puts(c: &WsClient, p: ProgramId) -> Result<(Vec<Duration>, Vec<SignedReceipt>)> {
    for i in 0..EXEC_WARMUP {
        let key = format!("w{i}");
        within("warm-up put", execute(c, p, put_input(&key)?, None))
            .await?
            .with_context(|| format!("warm-up put {key}"))?;
    }
    let mut latencies = Vec::with_capacity(EXEC_CALLS);
    let mut receipts = Vec::with_capacity(EXEC_CALLS);
    for i in 0..EXEC_CALLS {
        let key = format!("k{i}");
        let input = put_input(&key)?;
        let t = Instant::now();
        let res = within("put", execute(c, p, input, None))
            .await?
            .with_context(|| format!("put {key}"))?;
        latencies.push(t.elapsed());
        receipts.push(
            res.receipt
                .with_context(|| format!("put {key} returned no receipt"))?,
        );
    }
    Ok((latencies, receipts))
}

struct ExecResult {
    k4: Vec<Duration>,
    k1: Vec<Duration>,
    k4_verified: usize,
    k4_signers: String,
    k1_verified: usize,
    recheck: Recheck,
}

async fn bench_execute(wasm: &[u8]) -> Result<ExecResult> {
    let (dirs, nodes, clients) = joined_nodes(4).await?;
    let net = nodes[0].info().network_id;

    let c1 = &clients[0];
    let p4 = deploy(c1, wasm, "", 4).await?;
    let p1 = deploy(c1, wasm, "single", 1).await?;
    // The members must hold the deployment before they can attest its calls.
    converge(&clients, "after deploying").await?;
    println!("deployed kvstore: K=4 {p4}, K=1 {p1}");

    let (k4, k4_receipts) = run_puts(c1, p4).await.context("K=4 puts")?;
    converge(&clients, "after the K=4 puts").await?;
    let (k1, k1_receipts) = run_puts(c1, p1).await.context("K=1 puts")?;
    converge(&clients, "after the K=1 puts").await?;

    // Not timed: every K=4 receipt carries an attestation that verifies offline.
    let committee4 = within("program_committee", ProgramApiClient::committee(c1, p4))
        .await?
        .context("program_committee K=4")?;
    ensure!(
        committee4.members.len() == 4,
        "{} members",
        committee4.members.len()
    );
    let verified4 =
        VerifiedCommittee::new(committee4).map_err(|e| anyhow!("K=4 committee: {e}"))?;
    let mut signer_counts = BTreeMap::<usize, usize>::new();
    for (i, r) in k4_receipts.iter().enumerate() {
        let att = r
            .attestation
            .as_ref()
            .with_context(|| format!("K=4 receipt {i} has no attestation"))?;
        let signers = verified4
            .signers(&att.signers.0)
            .map_err(|e| anyhow!("K=4 receipt {i}: {e}"))?;
        *signer_counts.entry(signers.len()).or_default() += 1;
        verified4
            .verify(&r.aggregated(), &net)
            .map_err(|e| anyhow!("K=4 receipt {i} does not verify: {e}"))?;
    }
    let k4_signers = signer_counts
        .iter()
        .map(|(s, count)| format!("{count} with {s} of 3 signers"))
        .collect::<Vec<_>>()
        .join(", ");
    println!("K=4: all {EXEC_CALLS} attestations verify ({k4_signers})");

    let committee1 = within("program_committee", ProgramApiClient::committee(c1, p1))
        .await?
        .context("program_committee K=1")?;
    let verified1 =
        VerifiedCommittee::new(committee1).map_err(|e| anyhow!("K=1 committee: {e}"))?;
    let mut k1_verified = 0;
    for (i, r) in k1_receipts.iter().enumerate() {
        ensure!(
            r.attestation.is_none(),
            "K=1 receipt {i} carries an attestation"
        );
        if verified1.verify(&r.aggregated(), &net).is_ok() {
            k1_verified += 1;
        }
    }

    let recheck = bench_recheck(c1, p4, &k4_receipts[0], &verified4, &net, wasm)
        .await
        .context("verify vs re-execute")?;

    drop(clients);
    for (i, n) in nodes.into_iter().enumerate() {
        within("node shutdown", n.shutdown())
            .await
            .with_context(|| format!("node {}", i + 1))?;
    }
    drop(dirs);
    Ok(ExecResult {
        k4,
        k1,
        k4_verified: EXEC_CALLS,
        k4_signers,
        k1_verified,
        recheck,
    })
}

// ------------------------------------------------------------------------------------------
// 3. Verifying a receipt vs re-executing its call
// ------------------------------------------------------------------------------------------

struct Recheck {
    height: u64,
    verify: Duration,
    ro_same: Duration,
    ro_get: Duration,
    raw: Duration,
}

/// The receipt is the first timed K=4 put (`k0`), made after `EXEC_WARMUP` warm-up puts.
async fn bench_recheck(
    c: &WsClient,
    p: ProgramId,
    receipt: &SignedReceipt,
    verified: &VerifiedCommittee,
    net: &str,
    wasm: &[u8],
) -> Result<Recheck> {
    let input = put_input("k0")?;
    ensure!(
        receipt.receipt.input_hash == Hash32::of(&input),
        "the receipt is not for the k0 put"
    );
    ensure!(
        receipt.receipt.height == EXEC_WARMUP as u64,
        "the k0 put is at height {}, expected {EXEC_WARMUP}",
        receipt.receipt.height
    );
    let agg = receipt.aggregated();

    // VerifiedCommittee::verify (the committee was built before).
    for _ in 0..VERIFY_WARMUP {
        verified
            .verify(&agg, net)
            .map_err(|e| anyhow!("verify: {e}"))?;
    }
    let mut verify_t = Vec::with_capacity(RECHECK_ITERS);
    for _ in 0..RECHECK_ITERS {
        let t = Instant::now();
        verified
            .verify(&agg, net)
            .map_err(|e| anyhow!("verify: {e}"))?;
        verify_t.push(t.elapsed());
    }

    // Read-only program_execute of the same input: it runs against the latest state and
    // traps `read_only` at the put.
    let ro = ExecuteOptions {
        read_only: true,
        ..Default::default()
    };
    match within(
        "read-only put",
        execute(c, p, input.clone(), Some(ro.clone())),
    )
    .await?
    {
        Err(ClientError::Call(e)) => {
            let data = error_data(&e).context("the read-only put's error has no data")?;
            ensure!(
                data.kind == "trap" || data.kind == "read_only",
                "read-only put failed with {}: {}",
                data.kind,
                e.message()
            );
            let text = serde_json::to_string(&data.detail).unwrap_or_default();
            ensure!(
                text.contains("read_only"),
                "read-only put failed otherwise: {} {text}",
                e.message()
            );
        }
        Err(e) => bail!("read-only put: {e}"),
        Ok(r) => bail!("a read-only put succeeded: {:?}", r.outcome),
    }
    let mut ro_same = Vec::with_capacity(RECHECK_ITERS);
    for _ in 0..RECHECK_ITERS {
        let t = Instant::now();
        let r = within(
            "read-only put",
            execute(c, p, input.clone(), Some(ro.clone())),
        )
        .await?;
        ro_same.push(t.elapsed());
        match r {
            Err(ClientError::Call(_)) => {}
            Err(e) => bail!("read-only put: {e}"),
            Ok(r) => bail!("a read-only put succeeded: {:?}", r.outcome),
        }
    }

    // A complete read-only call on the same key.
    let get = kv(serde_json::json!({"op": "get", "key": "k0"}))?;
    let mut ro_get = Vec::with_capacity(RECHECK_ITERS);
    for i in 0..VERIFY_WARMUP + RECHECK_ITERS {
        let t = Instant::now();
        let r = within(
            "read-only get",
            execute(c, p, get.clone(), Some(ro.clone())),
        )
        .await?
        .context("read-only get k0")?;
        let elapsed = t.elapsed();
        ensure!(
            r.output_base64.0.starts_with(br#"{"ok":true"#),
            "get k0 returned {}",
            String::from_utf8_lossy(&r.output_base64.0)
        );
        if i >= VERIFY_WARMUP {
            ro_get.push(elapsed);
        }
    }

    // Raw wasmtime: the same input from the receipt's pre-state (the warm-up entries).
    let mut pre = BTreeMap::new();
    for i in 0..EXEC_WARMUP {
        pre.insert(format!("d/w{i}").into_bytes(), b"v".to_vec());
    }
    pre.insert(
        b"m/count".to_vec(),
        (EXEC_WARMUP as u64).to_le_bytes().to_vec(),
    );
    pre.insert(
        b"m/bytes".to_vec(),
        (EXEC_WARMUP as u64).to_le_bytes().to_vec(),
    );
    let raw = raw_reexecute(wasm, &input, Arc::new(pre), &receipt.receipt)
        .map_err(|e| anyhow!("raw wasmtime re-execution: {e:#}"))?;

    Ok(Recheck {
        height: receipt.receipt.height,
        verify: median(&verify_t)?,
        ro_same: median(&ro_same)?,
        ro_get: median(&ro_get)?,
        raw,
    })
}

/// A call's buffered writes (`None`: deleted), ordered as the node digests them.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

struct RawHost {
    state: Arc<BTreeMap<Vec<u8>, Vec<u8>>>,
    overlay: Writes,
}

impl RawHost {
    fn get(&self, key: &[u8]) -> Option<&[u8]> {
        match self.overlay.get(key) {
            Some(v) => v.as_deref(),
            None => self.state.get(key).map(Vec::as_slice),
        }
    }
}

fn guest_memory(c: &mut wasmtime::Caller<'_, RawHost>) -> wasmtime::Result<wasmtime::Memory> {
    c.get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("no exported memory"))
}

fn read_guest(
    c: &mut wasmtime::Caller<'_, RawHost>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Vec<u8>> {
    let mem = guest_memory(c)?;
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(&*c)
        .get(p..p + l)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg("guest pointer out of bounds"))
}

/// A minimal ABI host (state get/put/del over an in-memory map; every other import traps) and
/// `RECHECK_ITERS` timed re-executions of `input` from `pre`, each in a fresh store from a
/// module compiled once (as the node caches it). Returns the median; checks the output hash
/// and write digest against `expected`.
fn raw_reexecute(
    wasm: &[u8],
    input: &[u8],
    pre: Arc<BTreeMap<Vec<u8>, Vec<u8>>>,
    expected: &ExecutionReceipt,
) -> wasmtime::Result<Duration> {
    use wasmtime::{Caller, Engine, Linker, Module, Store};
    let engine = Engine::default();
    let module = Module::from_binary(&engine, wasm)?;
    let mut linker: Linker<RawHost> = Linker::new(&engine);
    linker.func_wrap(
        "env",
        "onvm_state_get",
        |mut c: Caller<'_, RawHost>, kp: i32, kl: i32, bp: i32, bc: i32| -> wasmtime::Result<i64> {
            let key = read_guest(&mut c, kp, kl)?;
            let Some(value) = c.data().get(&key).map(<[u8]>::to_vec) else {
                return Ok(ONVM_NOT_FOUND);
            };
            let cap = bc as u32 as usize;
            if value.len() > cap {
                return Ok(-(value.len() as i64));
            }
            let mem = guest_memory(&mut c)?;
            let p = bp as u32 as usize;
            mem.data_mut(&mut c)
                .get_mut(p..p + value.len())
                .ok_or_else(|| wasmtime::Error::msg("guest buffer out of bounds"))?
                .copy_from_slice(&value);
            Ok(value.len() as i64)
        },
    )?;
    linker.func_wrap(
        "env",
        "onvm_state_put",
        |mut c: Caller<'_, RawHost>, kp: i32, kl: i32, vp: i32, vl: i32| -> wasmtime::Result<i32> {
            let key = read_guest(&mut c, kp, kl)?;
            let value = read_guest(&mut c, vp, vl)?;
            c.data_mut().overlay.insert(key, Some(value));
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "env",
        "onvm_state_del",
        |mut c: Caller<'_, RawHost>, kp: i32, kl: i32| -> wasmtime::Result<i32> {
            let key = read_guest(&mut c, kp, kl)?;
            let existed = c.data().get(&key).is_some();
            c.data_mut().overlay.insert(key, None);
            Ok(existed as i32)
        },
    )?;
    linker.define_unknown_imports_as_traps(&module)?;
    let pre_instance = linker.instantiate_pre(&module)?;

    let run = || -> wasmtime::Result<(Vec<u8>, Writes)> {
        let mut store = Store::new(
            &engine,
            RawHost {
                state: pre.clone(),
                overlay: BTreeMap::new(),
            },
        );
        let instance = pre_instance.instantiate(&mut store)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| wasmtime::Error::msg("no memory"))?;
        let alloc = instance.get_typed_func::<i32, i32>(&mut store, "onvm_alloc")?;
        let ptr = alloc.call(&mut store, input.len() as i32)? as u32 as usize;
        memory
            .data_mut(&mut store)
            .get_mut(ptr..ptr + input.len())
            .ok_or_else(|| wasmtime::Error::msg("onvm_alloc returned a bad pointer"))?
            .copy_from_slice(input);
        let main = instance.get_typed_func::<(i32, i32), i64>(&mut store, "onvm_main")?;
        let packed = main.call(&mut store, (ptr as i32, input.len() as i32))? as u64;
        let (p, l) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        let output = memory
            .data(&store)
            .get(p..p + l)
            .ok_or_else(|| wasmtime::Error::msg("output out of bounds"))?
            .to_vec();
        Ok((output, std::mem::take(&mut store.data_mut().overlay)))
    };

    let (output, writes) = run()?;
    if Hash32::of(&output) != expected.output_hash {
        return Err(wasmtime::Error::msg(format!(
            "output {} differs from the receipt's",
            String::from_utf8_lossy(&output)
        )));
    }
    let digest = write_digest(writes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())));
    if digest != expected.write_digest {
        return Err(wasmtime::Error::msg(
            "the writes differ from the receipt's write digest",
        ));
    }
    for _ in 0..VERIFY_WARMUP {
        run()?;
    }
    let mut samples = Vec::with_capacity(RECHECK_ITERS);
    for _ in 0..RECHECK_ITERS {
        let t = Instant::now();
        std::hint::black_box(run()?);
        samples.push(t.elapsed());
    }
    median(&samples).map_err(|e| wasmtime::Error::msg(e.to_string()))
}
