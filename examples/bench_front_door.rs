//! The cost of the RPC front door (Origin/Host checks, cookie or token lookup, scope check,
//! rate limits) on a read-only call, against its bare anchor in the same run: a plain
//! jsonrpsee server (same version and limits) answering a method of the same shape.
//!
//! Measured: sequential latency over one WebSocket, and throughput with 8 clients in parallel,
//! with the process CPU time per call (client and server share this process, so it is the
//! CPU of both ends; the ratio between rows is what matters).
//!
//! Then signed against anonymous writing calls (`program_execute` of a program that stores its
//! caller id, committee of one), with the bare anchor of the difference: one ed25519
//! `verify_strict` of a call signature, measured alone in the same run.
//!
//! `cargo run --release --example bench_front_door`

#[path = "support/mod.rs"]
mod support;

use std::time::Instant;

use anyhow::{Context, Result};
use jsonrpsee::core::client::ClientT;
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::{HeaderMap, WsClient, WsClientBuilder};
use onvm::rpc_api::api::TokenApiClient;
use onvm::rpc_api::auth::{Scope, TokenRequest};

const SEQUENTIAL: usize = 5000;
const PARALLEL_CLIENTS: usize = 8;
const PER_CLIENT: usize = 10_000;

struct Row {
    name: &'static str,
    p50_us: f64,
    p99_us: f64,
    calls_per_sec: f64,
    cpu_us_per_call: f64,
}

async fn measure(name: &'static str, url: &str, headers: HeaderMap, method: &str) -> Result<Row> {
    let client = WsClientBuilder::default()
        .set_headers(headers.clone())
        .build(url)
        .await
        .with_context(|| format!("{name}: connecting"))?;
    for _ in 0..200 {
        let _: serde_json::Value = client.request(method, rpc_params![]).await?;
    }
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        let _: serde_json::Value = client.request(method, rpc_params![]).await?;
        samples.push(t.elapsed());
    }
    let p = support::percentiles(&samples)?;
    let mut clients: Vec<WsClient> = Vec::new();
    for _ in 0..PARALLEL_CLIENTS {
        clients.push(
            WsClientBuilder::default()
                .set_headers(headers.clone())
                .build(url)
                .await?,
        );
    }
    let cpu0 = support::cpu_seconds();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in clients {
        let method = method.to_string();
        tasks.spawn(async move {
            for _ in 0..PER_CLIENT {
                let r: Result<serde_json::Value, _> = c.request(&method, rpc_params![]).await;
                r?;
            }
            Ok::<_, jsonrpsee::core::ClientError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    let cpu = support::cpu_seconds() - cpu0;
    let calls = (PARALLEL_CLIENTS * PER_CLIENT) as f64;
    Ok(Row {
        name,
        p50_us: p.p50 * 1e3,
        p99_us: p.p99 * 1e3,
        calls_per_sec: calls / elapsed.as_secs_f64(),
        cpu_us_per_call: cpu * 1e6 / calls,
    })
}

/// The anchor: jsonrpsee with the node's transport limits and a method returning a small
/// object, no middleware.
async fn bare_server() -> Result<(String, jsonrpsee::server::ServerHandle)> {
    use jsonrpsee::server::{BatchRequestConfig, Server, ServerConfig};
    let config = ServerConfig::builder()
        .max_request_body_size(10 << 20)
        .max_response_body_size(10 << 20)
        .max_connections(100)
        .set_batch_request_config(BatchRequestConfig::Limit(32))
        .build();
    let server = Server::builder()
        .set_config(config)
        .build("127.0.0.1:0")
        .await?;
    let addr = server.local_addr()?;
    let mut module = jsonrpsee::RpcModule::new(());
    module.register_method("node_info", |_, _, _| {
        serde_json::json!({
            "endpoint_id": "0".repeat(64),
            "version": "0.1.0",
            "network_id": "onvm-devnet",
            "offline": true,
            "addresses": ["127.0.0.1:7600"],
            "uptime_secs": 1,
        })
    })?;
    Ok((format!("ws://{addr}"), server.start(module)))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let (bare_url, bare) = bare_server().await?;
    let bare_row = measure(
        "bare jsonrpsee (anchor)",
        &bare_url,
        HeaderMap::new(),
        "node_info",
    )
    .await?;
    bare.stop()?;

    let (_dir, node) = support::bench_node_with(&[
        "rpc.calls_per_sec=1000000".into(),
        "rpc.calls_burst=1000000".into(),
        "rpc.client_calls_per_sec=1000000".into(),
        "rpc.client_calls_burst=1000000".into(),
    ])
    .await?;
    let operator = support::client(&node).await?;
    let token = TokenApiClient::create(
        &operator,
        TokenRequest {
            scopes: vec![Scope::Read],
            expires_in_secs: None,
            origins: vec![],
            label: Some("bench".into()),
        },
    )
    .await?
    .token;
    let url = node.rpc_url();
    let mut cookie_headers = HeaderMap::new();
    if let Some(cookie) = onvm::node::rpc::cookie::read_for(node.rpc_addr().port()) {
        cookie_headers.insert("authorization", format!("Bearer {cookie}").parse()?);
    }
    let mut token_headers = HeaderMap::new();
    token_headers.insert("authorization", format!("Bearer {token}").parse()?);
    let rows = [
        bare_row,
        measure(
            "onvm node_info, no token (scope check)",
            &url,
            HeaderMap::new(),
            "node_info",
        )
        .await?,
        measure("onvm node_info, cookie", &url, cookie_headers, "node_info").await?,
        measure(
            "onvm node_info, API token (lookup + rate limits)",
            &url,
            token_headers,
            "node_info",
        )
        .await?,
    ];
    let signed_rows = measure_signed_calls(&node).await?;
    node.shutdown().await;

    println!(
        "{:<50} {:>10} {:>10} {:>12} {:>14} {:>8}",
        "read-only call over WebSocket", "p50 µs", "p99 µs", "calls/s (8)", "CPU µs/call", "ratio"
    );
    let anchor = rows[0].cpu_us_per_call;
    for r in &rows {
        println!(
            "{:<50} {:>10.1} {:>10.1} {:>12.0} {:>14.1} {:>7.2}x",
            r.name,
            r.p50_us,
            r.p99_us,
            r.calls_per_sec,
            r.cpu_us_per_call,
            r.cpu_us_per_call / anchor
        );
    }
    println!();
    println!(
        "{:<50} {:>10} {:>10}",
        "writing call (committee of one)", "p50 µs", "p99 µs"
    );
    for (name, p50, p99) in &signed_rows {
        println!("{name:<50} {p50:>10.1} {p99:>10.1}");
    }
    Ok(())
}

const SIGNED_CALLS: usize = 2000;

/// p50/p99 of anonymous and signed writing calls, and of the signature check alone.
async fn measure_signed_calls(node: &onvm::node::Node) -> Result<Vec<(String, f64, f64)>> {
    use onvm::rpc_api::api::ProgramApiClient;
    use onvm::rpc_api::caller::{SignedTerms, SigningKey, call_signing_message, sign_call};
    use onvm::rpc_api::program::{DeployRequest, ExecuteOptions};

    let client = support::client(node).await?;
    let wasm = wat::parse_str(include_str!("../tests/fixtures/whoami.wat"))?;
    let program = ProgramApiClient::deploy(
        &client,
        DeployRequest {
            wasm_base64: Some(wasm.into()),
            ..Default::default()
        },
    )
    .await?
    .program_id;
    let network = node.info().network_id;
    let key = SigningKey::from_bytes(&[7; 32]);
    let expires = u64::MAX / 2;
    let terms = SignedTerms::call(expires, onvm::rpc_api::program::DEFAULT_FUEL);
    let options = |i: usize, signed: bool| {
        let request_id = format!("{}-{i}", if signed { "s" } else { "a" });
        ExecuteOptions {
            entrypoint: Some("onvm_main".into()),
            request_id: Some(request_id.clone()),
            fuel: Some(terms.fuel),
            signed: signed.then(|| {
                sign_call(
                    &key,
                    &network,
                    &program,
                    "onvm_main",
                    b"",
                    &request_id,
                    &terms,
                )
            }),
            ..Default::default()
        }
    };
    // Interleaved, so drift in the machine's load hits both rows alike.
    let mut samples = [
        Vec::with_capacity(SIGNED_CALLS),
        Vec::with_capacity(SIGNED_CALLS),
    ];
    for i in 0..SIGNED_CALLS + 100 {
        for signed in [false, true] {
            // Signed before timing: the client's signing cost is not the node's.
            let o = options(i, signed);
            let t = Instant::now();
            ProgramApiClient::execute(&client, program, Vec::new().into(), Some(o)).await?;
            if i >= 100 {
                samples[signed as usize].push(t.elapsed());
            }
        }
    }
    let mut rows = Vec::new();
    for (signed, name) in [(0, "onvm execute, anonymous"), (1, "onvm execute, signed")] {
        let p = support::percentiles(&samples[signed])?;
        rows.push((name.to_string(), p.p50 * 1e3, p.p99 * 1e3));
    }
    // The anchor of the difference: verifying one call signature, nothing else.
    let sig = sign_call(&key, &network, &program, "onvm_main", b"", "r", &terms);
    let message = call_signing_message(
        &network,
        &program,
        "onvm_main",
        &onvm::rpc_api::Hash32::of(b""),
        "r",
        &terms,
    );
    let public = key.verifying_key();
    let signature =
        onvm::rpc_api::caller::Signature::from_bytes(&sig.signature.0.as_slice().try_into()?);
    let mut samples = Vec::with_capacity(SIGNED_CALLS);
    for _ in 0..SIGNED_CALLS {
        let t = Instant::now();
        public.verify_strict(&message, &signature)?;
        samples.push(t.elapsed());
    }
    let p = support::percentiles(&samples)?;
    rows.push((
        "ed25519 verify_strict alone (anchor)".to_string(),
        p.p50 * 1e3,
        p.p99 * 1e3,
    ));
    Ok(rows)
}
