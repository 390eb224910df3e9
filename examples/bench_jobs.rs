//! Job throughput and latency over WebSocket, next to the bare execute path, in one run.
//!
//! `cargo run --release --example bench_jobs [-- JOBS]` (default 500). Submits echo jobs as fast
//! as one client can while a second connection follows the job feed; reports completed jobs per
//! second and submit-to-completed-event latency (p50, p99), then the same number of committed
//! `program_execute` calls on the same node (the bare path a job wraps).

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use jsonrpsee::core::client::Subscription;
use onvm::rpc_api::api::{JobApiClient, ProgramApiClient};
use onvm::rpc_api::jobs::{JobStatus, JobStreamItem, SubmitJob};
use onvm::rpc_api::program::DeployRequest;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(500);
    let (_dir, node) = support::bench_node().await?;
    let submitter = support::operator(&node).build(node.rpc_url()).await?;
    let watcher = support::operator(&node).build(node.rpc_url()).await?;
    let req = DeployRequest {
        wasm_base64: Some(support::program_wasm("echo")?.into()),
        ..Default::default()
    };
    let program = ProgramApiClient::deploy(&submitter, req).await?.program_id;

    let mut feed: Subscription<JobStreamItem> =
        JobApiClient::subscribe_feed(&watcher, None, None).await?;
    let started = Instant::now();
    let mut submitted_at = HashMap::new();
    let collector = tokio::spawn(async move {
        let mut done = HashMap::new();
        while done.len() < n {
            match feed.next().await {
                Some(Ok(JobStreamItem::Event(e))) if e.status == JobStatus::Completed => {
                    done.insert(e.job_id, Instant::now());
                }
                Some(Ok(JobStreamItem::Event(e))) if e.status.is_terminal() => {
                    return Err(anyhow::anyhow!(
                        "job {} ended {:?}: {:?}",
                        e.job_id,
                        e.status,
                        e.error
                    ));
                }
                Some(Ok(JobStreamItem::Closed { reason, .. })) => {
                    return Err(anyhow::anyhow!("feed closed: {reason}"));
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(anyhow::anyhow!("feed ended")),
                _ => {}
            }
        }
        Ok(done)
    });
    for i in 0..n {
        let req = SubmitJob {
            program_id: program,
            request_id: format!("bench-{i}"),
            input_base64: Some(format!("job number {i}").into_bytes().into()),
            input_blob: None,
            entrypoint: None,
            max_retries: Some(0),
            timeout_ms: None,
            fuel: None,
            metadata: None,
            signed: None,
        };
        let r = JobApiClient::submit(&submitter, req).await?;
        submitted_at.insert(r.job.job_id, Instant::now());
    }
    let done = collector.await??;
    let elapsed = started.elapsed();
    let mut latencies: Vec<Duration> = done
        .iter()
        .filter_map(|(id, at)| {
            submitted_at
                .get(id)
                .map(|s| at.saturating_duration_since(*s))
        })
        .collect();
    latencies.sort();

    let start = Instant::now();
    for i in 0..n {
        ProgramApiClient::execute(
            &submitter,
            program,
            format!("call {i}").into_bytes().into(),
            None,
        )
        .await?;
    }
    let exec = start.elapsed();
    drop((submitter, watcher));
    node.shutdown().await;

    println!(
        "jobs: {n} echo jobs completed in {:.2} s = {:.0} jobs/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "submit -> completed event: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        pct(&latencies, 1.0)
    );
    let per_exec = exec.as_secs_f64() * 1e3 / n as f64;
    println!(
        "bare program_execute (committed, sequential): {per_exec:.2} ms/call = {:.0} calls/s",
        1e3 / per_exec
    );
    println!(
        "ratio job latency p50 / execute = {:.1}x",
        pct(&latencies, 0.5) / per_exec
    );
    Ok(())
}
