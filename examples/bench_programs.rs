//! Program hot paths against their bare anchors, in one run:
//! - execute echo over WebSocket (read-only and committing) vs raw wasmtime instantiate + call;
//! - committing 10k state keys (redb + sparse Merkle tree) vs one raw redb transaction;
//! - receipt signing (id + BLS) vs raw blst sign; pure-Rust receipt verification vs blst verify.
//!
//! `cargo run --release --example bench_programs` (builds wasm_programs first if needed).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use onvm::node::Identity;
use onvm::node::identity::BLS_SIG_DST;
use onvm::node::store::Store;
use onvm::rpc_api::api::ProgramApiClient;
use onvm::rpc_api::program::{
    DeployRequest, ExecuteOptions, ExecutionReceipt, Outcome, ProgramManifest, SignedManifest,
    SignedReceipt, receipt_signing_message, verify_receipt,
};
use onvm::rpc_api::{BlobId, Hash32, HexBytes, ProgramId};

fn per_op_us(total: std::time::Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1e6 / n as f64
}

fn row(name: &str, us: f64) {
    println!("{name:<52} {us:>12.1} µs/op");
}

fn raw_wasmtime_echo(wasm: &[u8], n: usize, input: &[u8]) -> wasmtime::Result<f64> {
    use wasmtime::{Engine, Linker, Module, Store as WStore};
    let engine = Engine::default();
    let module = Module::from_binary(&engine, wasm)?;
    let linker: Linker<()> = Linker::new(&engine);
    let pre = linker.instantiate_pre(&module)?;
    let mut check = Vec::new();
    let start = Instant::now();
    for _ in 0..n {
        let mut store = WStore::new(&engine, ());
        let instance = pre.instantiate(&mut store)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| wasmtime::Error::msg("no memory"))?;
        let base = memory.grow(&mut store, 1)? as usize * 65536;
        memory.data_mut(&mut store)[base..base + input.len()].copy_from_slice(input);
        let f = instance.get_typed_func::<(i32, i32), i64>(&mut store, "onvm_main")?;
        let packed = f.call(&mut store, (base as i32, input.len() as i32))? as u64;
        let (p, l) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
        check = memory.data(&store)[p..p + l].to_vec();
    }
    let us = per_op_us(start.elapsed(), n);
    if check != input.to_ascii_uppercase() {
        return Err(wasmtime::Error::msg("raw echo returned the wrong bytes"));
    }
    Ok(us)
}

async fn bench_execute(wasm: &[u8]) -> Result<()> {
    const N: usize = 500;
    let input = b"hello, benchmark! the quick brown fox";
    let (_dir, node) = support::bench_node().await?;
    let client = support::operator(&node).build(node.rpc_url()).await?;
    let req = DeployRequest {
        wasm_base64: Some(wasm.to_vec().into()),
        ..Default::default()
    };
    let p = ProgramApiClient::deploy(&client, req).await?.program_id;
    let ro = ExecuteOptions {
        read_only: true,
        ..Default::default()
    };
    for _ in 0..50 {
        ProgramApiClient::execute(&client, p, input.to_vec().into(), Some(ro.clone())).await?;
    }
    let start = Instant::now();
    for _ in 0..N {
        let r =
            ProgramApiClient::execute(&client, p, input.to_vec().into(), Some(ro.clone())).await?;
        if r.output_base64.0 != input.to_ascii_uppercase() {
            bail!("echo returned the wrong bytes");
        }
    }
    let onvm_ro = per_op_us(start.elapsed(), N);
    let start = Instant::now();
    for _ in 0..N / 5 {
        ProgramApiClient::execute(&client, p, input.to_vec().into(), None).await?;
    }
    let onvm_commit = per_op_us(start.elapsed(), N / 5);
    drop(client);
    node.shutdown().await;
    let raw = raw_wasmtime_echo(wasm, N, input).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    row("raw wasmtime instantiate+call (echo)", raw);
    row("onvm program_execute over WS, read-only (echo)", onvm_ro);
    row(
        "onvm program_execute over WS, committed+receipt",
        onvm_commit,
    );
    println!(
        "ratio read-only/raw = {:.1}x, committed/raw = {:.1}x",
        onvm_ro / raw,
        onvm_commit / raw
    );
    Ok(())
}

fn dummy_manifest(id: ProgramId) -> SignedManifest {
    SignedManifest {
        manifest: ProgramManifest {
            version: 1,
            network_id: "bench".into(),
            program_id: id,
            code: BlobId::from_bytes([0; 32]),
            code_size: 0,
            salt: String::new(),
            entrypoints: vec!["onvm_main".into()],
            blob_refs: vec![],
            abi_version: 1,
            engine: "bench".into(),
            initial_state_root: Hash32::ZERO,
            deployer: Hash32::ZERO,
            deployed_at_ms: 0,
            committee: vec![],
            threshold: 1,
            deploy_nonce: 0,
            candidates: vec![],
            require_signed_calls: false,
        },
        signature: HexBytes(vec![]),
    }
}

fn receipt_template() -> ExecutionReceipt {
    ExecutionReceipt {
        version: 1,
        network_id: "bench".into(),
        program_id: ProgramId::from_bytes([1; 32]),
        code_hash: BlobId::from_bytes([2; 32]),
        engine: "bench".into(),
        entrypoint: "onvm_main".into(),
        height: 0,
        input_hash: Hash32([3; 32]),
        caller: Hash32::ZERO,
        call_id: Hash32::ZERO,
        caller_proof: None,
        timestamp_ms: 0,
        seed: Hash32([4; 32]),
        state_root_in: Hash32::ZERO,
        state_root_out: Hash32::ZERO,
        write_digest: Hash32::ZERO,
        output_hash: Hash32::ZERO,
        output_len: 0,
        fuel_limit: 0,
        fuel_used: 0,
        outcome: Outcome::Ok,
        executor: Hash32::ZERO,
    }
}

fn bench_state_commit() -> Result<()> {
    const KEYS: usize = 10_000;
    let writes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = (0..KEYS)
        .map(|i| {
            (
                format!("key-{i:06}").into_bytes(),
                Some(format!("value-{i}").into_bytes()),
            )
        })
        .collect();
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("node.redb"))?;
    let id = ProgramId::from_bytes([7; 32]);
    store.insert_program(&dummy_manifest(id))?;
    let start = Instant::now();
    store.commit_call(
        &id,
        onvm::node::store::CallEffects {
            height: 0,
            timestamp_ms: 0,
            writes: &writes,
            encoded_writes: &onvm::rpc_api::program::encode_writes(&writes),
            input: b"",
            output: b"",
            call_id: Hash32::ZERO,
        },
        |root| {
            let mut r = receipt_template();
            r.state_root_out = root;
            SignedReceipt {
                id: r.id(),
                receipt: r,
                signer_bls_key: HexBytes(vec![]),
                signature: HexBytes(vec![]),
                attestation: None,
            }
        },
    )?;
    let onvm = start.elapsed();

    const RAW: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("raw");
    let raw_dir = tempfile::tempdir()?;
    let db = redb::Database::create(raw_dir.path().join("raw.redb"))?;
    let start = Instant::now();
    let tx = db.begin_write()?;
    {
        let mut t = tx.open_table(RAW)?;
        for (k, v) in &writes {
            if let Some(v) = v {
                t.insert(k.as_slice(), v.as_slice())?;
            }
        }
    }
    tx.commit()?;
    let raw = start.elapsed();
    println!(
        "{:<52} {:>12.1} ms",
        "raw redb: one txn inserting 10k keys",
        raw.as_secs_f64() * 1e3
    );
    println!(
        "{:<52} {:>12.1} ms",
        "onvm commit_call: 10k keys + SMT + receipt",
        onvm.as_secs_f64() * 1e3
    );
    println!(
        "ratio onvm/raw = {:.1}x",
        onvm.as_secs_f64() / raw.as_secs_f64()
    );
    Ok(())
}

fn bench_receipts() -> Result<()> {
    const N: usize = 300;
    let identity = Identity::generate();
    let raw_sk = blst::min_sig::SecretKey::key_gen(&[42u8; 32], &[])
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let msg = receipt_signing_message("bench", &receipt_template().id());

    let start = Instant::now();
    for _ in 0..N {
        std::hint::black_box(raw_sk.sign(&msg, BLS_SIG_DST, &[]));
    }
    let raw_sign = per_op_us(start.elapsed(), N);

    let mut last = None;
    let start = Instant::now();
    for h in 0..N {
        let mut r = receipt_template();
        r.height = h as u64;
        let id = r.id();
        let sig = identity.bls_sign(BLS_SIG_DST, &receipt_signing_message("bench", &id));
        last = Some(SignedReceipt {
            id,
            receipt: r,
            signer_bls_key: HexBytes(identity.bls_public_key().to_vec()),
            signature: HexBytes(sig.to_vec()),
            attestation: None,
        });
    }
    let onvm_sign = per_op_us(start.elapsed(), N);
    let signed = last.context("no receipt")?;

    let raw_pk = raw_sk.sk_to_pk();
    let raw_sig = raw_sk.sign(&msg, BLS_SIG_DST, &[]);
    let start = Instant::now();
    for _ in 0..N / 3 {
        let ok = raw_sig.verify(true, &msg, BLS_SIG_DST, &[], &raw_pk, true);
        if ok != blst::BLST_ERROR::BLST_SUCCESS {
            bail!("blst verify failed");
        }
    }
    let raw_verify = per_op_us(start.elapsed(), N / 3);
    let start = Instant::now();
    for _ in 0..N / 3 {
        verify_receipt(&signed, Some("bench"), None).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let onvm_verify = per_op_us(start.elapsed(), N / 3);
    row("raw blst min_sig sign", raw_sign);
    row("onvm receipt id + BLS sign", onvm_sign);
    println!("ratio = {:.2}x", onvm_sign / raw_sign);
    row("raw blst verify (with key validation)", raw_verify);
    row("onvm verify_receipt (pure Rust bls12_381)", onvm_verify);
    println!("ratio = {:.2}x", onvm_verify / raw_verify);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let wasm = support::program_wasm("echo")?;
    println!("== execute echo ==");
    bench_execute(&wasm).await?;
    println!("\n== state commit ==");
    bench_state_commit()?;
    println!("\n== receipts ==");
    bench_receipts()?;
    Ok(())
}
