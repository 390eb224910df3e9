//! Cost of a call as a program's history grows (issue "flat in history").
//!
//! One release node (committee of one, offline), the `kvstore` program, 8 WebSocket clients
//! putting 64-byte values under fresh keys. The program is grown to `ONVM_BENCH_CALLS`
//! committed calls (default 100,000); at every decade of height from 1,000 on, a window of
//! `ONVM_BENCH_WINDOW` calls (default 1,000) is measured: node CPU per call, p50/p99 latency,
//! the process's RSS and the bytes on disk per committed call. At the end (and at every decade
//! of 10,000 or more, unless `ONVM_BENCH_JOIN=0`) a fresh node joins by ticket and the time
//! until it has applied every call is reported.
//!
//! The anchor, measured in the same run: one durable raw redb transaction inserting one 64-byte
//! row, which is the least a committed call must pay (a committed call is fsync'd).
//!
//! CPU is this process's (client and node share it), so the ratio between decades is what
//! matters, not the absolute figure. `cargo run --release --example bench_history`.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use onvm::rpc_api::ProgramId;
use onvm::rpc_api::api::{PeerApiClient, ProgramApiClient};
use onvm::rpc_api::program::DeployRequest;

const CLIENTS: usize = 8;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn put_input(n: u64) -> Vec<u8> {
    let value = base64::engine::general_purpose::STANDARD.encode([n as u8; 64]);
    format!(r#"{{"op":"put","key":"k{n:08}","data_base64":"{value}"}}"#).into_bytes()
}

/// Commits `calls` puts from `CLIENTS` clients, numbering keys from `next`; returns each
/// call's latency.
async fn run_calls(
    clients: &Arc<Vec<jsonrpsee::ws_client::WsClient>>,
    program: ProgramId,
    next: &Arc<AtomicU64>,
    calls: u64,
) -> Result<Vec<Duration>> {
    let end = next.load(Ordering::SeqCst) + calls;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let clients = clients.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= end {
                    // Leave the counter where the run ended, for the next run.
                    next.fetch_min(end, Ordering::SeqCst);
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                let r = ProgramApiClient::execute(&clients[c], program, put_input(n).into(), None)
                    .await
                    .with_context(|| format!("put #{n}"))?;
                latencies.push(t.elapsed());
                if r.receipt.is_none() {
                    bail!("put #{n} committed no receipt: {:?}", r.outcome);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// The anchor: one durable redb transaction inserting one 64-byte row, per call.
fn raw_redb_commit(n: usize) -> Result<(f64, f64)> {
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("anchor");
    let dir = tempfile::tempdir()?;
    let db = redb::Database::create(dir.path().join("anchor.redb"))?;
    let (cpu0, t) = (support::cpu_seconds(), Instant::now());
    for i in 0..n as u64 {
        let tx = db.begin_write()?;
        tx.open_table(T)?.insert(i, [7u8; 64].as_slice())?;
        tx.commit()?;
    }
    let wall_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let cpu_us = (support::cpu_seconds() - cpu0) * 1e6 / n as f64;
    Ok((wall_us, cpu_us))
}

/// Starts a fresh node, joins it to `ticket` and waits until it has applied `height` calls of
/// `program`; returns the seconds from the join request.
async fn join_time(ticket: String, program: ProgramId, height: u64) -> Result<f64> {
    let (_dir, node) = support::bench_node().await?;
    let client = support::client(&node).await?;
    let t = Instant::now();
    support::within("peer_connect", PeerApiClient::connect(&client, ticket)).await??;
    let limit = Duration::from_secs(600);
    loop {
        if let Ok(info) = ProgramApiClient::info(&client, program).await
            && info.height >= height
        {
            break;
        }
        if t.elapsed() > limit {
            bail!("the joining node did not reach height {height} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(client);
    node.shutdown().await;
    Ok(secs)
}

#[tokio::main]
async fn main() -> Result<()> {
    let total = env_u64("ONVM_BENCH_CALLS", 100_000);
    let window = env_u64("ONVM_BENCH_WINDOW", 1_000);
    let join = env_u64("ONVM_BENCH_JOIN", 1) != 0;
    let wasm = support::program_wasm("kvstore")?;

    let (anchor_wall, anchor_cpu) = raw_redb_commit(2_000)?;
    println!(
        "anchor: raw redb durable 1-row commit: {anchor_wall:.1} µs wall, {anchor_cpu:.1} µs CPU"
    );

    let (dir, node) = support::bench_node().await?;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(support::client(&node).await?);
    }
    let clients = Arc::new(clients);
    let program = ProgramApiClient::deploy(
        &clients[0],
        DeployRequest {
            wasm_base64: Some(wasm.into()),
            ..Default::default()
        },
    )
    .await?
    .program_id;
    let next = Arc::new(AtomicU64::new(0));

    println!(
        "{:>9} {:>12} {:>8} {:>9} {:>9} {:>9} {:>12} {:>10}",
        "height", "CPU µs/call", "x anchor", "p50 ms", "p99 ms", "RSS MiB", "disk B/call", "join s"
    );
    let mut decade = 1_000;
    let mut first_cpu = None;
    while decade <= total {
        let grow = decade.saturating_sub(next.load(Ordering::SeqCst));
        run_calls(&clients, program, &next, grow).await?;
        let (cpu0, t0) = (support::cpu_seconds(), Instant::now());
        let latencies = run_calls(&clients, program, &next, window).await?;
        let cpu_us = (support::cpu_seconds() - cpu0) * 1e6 / window as f64;
        let wall = t0.elapsed();
        let p = support::percentiles(&latencies)?;
        let height = next.load(Ordering::SeqCst);
        let per_call = disk_bytes(dir.path()) as f64 / height as f64;
        let joined = if join && decade >= 10_000 {
            format!(
                "{:.1}",
                join_time(node.info().ticket, program, height).await?
            )
        } else {
            "-".into()
        };
        println!(
            "{height:>9} {cpu_us:>12.0} {:>8.1} {:>9.2} {:>9.2} {:>9.0} {per_call:>12.0} {joined:>10}",
            cpu_us / anchor_cpu.max(1.0),
            p.p50,
            p.p99,
            rss_mib(),
        );
        let first = *first_cpu.get_or_insert(cpu_us);
        println!(
            "          ({:.0} calls/s over the window, CPU per call {:.2}x the 1k decade)",
            window as f64 / wall.as_secs_f64(),
            cpu_us / first
        );
        decade *= 10;
    }
    drop(clients);
    node.shutdown().await;
    Ok(())
}
