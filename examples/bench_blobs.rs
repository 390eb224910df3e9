//! Blob throughput over the WebSocket JSON-RPC API vs the bare iroh-blobs store, in one run.
//!
//! `cargo run --release --example bench_blobs [-- SIZE_MIB]` (default 100 MiB). It starts a real
//! node (temp dir, offline, loopback), uploads SIZE bytes with blob_upload_* in 4 MiB chunks,
//! downloads them with blob_get ranges, then adds and reads the same bytes with a bare
//! iroh-blobs FsStore (the anchor), and prints MB/s and the ratio.

#[path = "support/mod.rs"]
mod support;

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use iroh_blobs::store::fs::FsStore;
use onvm::rpc_api::BlobId;
use onvm::rpc_api::api::BlobApiClient;

const CHUNK: usize = 4 * 1024 * 1024;

fn mb_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn data(len: usize) -> Vec<u8> {
    // Incompressible and reproducible: BLAKE3 in XOF mode from a fixed seed.
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"onvm bench seed 1")
        .finalize_xof()
        .fill(&mut out);
    out
}

#[tokio::main]
async fn main() -> Result<()> {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100);
    let size = mib * 1024 * 1024;
    let bytes = data(size);
    let expected = BlobId::of(&bytes);
    println!("payload: {mib} MiB, id {expected}");

    // ---- ONVM over WebSocket ----
    let (_dir, node) = support::bench_node().await?;
    let client = support::operator(&node)
        .max_request_size(64 * 1024 * 1024)
        .max_response_size(64 * 1024 * 1024)
        .build(node.rpc_url())
        .await?;

    let t = Instant::now();
    let status = BlobApiClient::upload_begin(&client, size as u64, None).await?;
    let mut offset = 0u64;
    for piece in bytes.chunks(CHUNK) {
        BlobApiClient::upload_append(
            &client,
            status.upload_id.clone(),
            offset,
            piece.to_vec().into(),
        )
        .await?;
        offset += piece.len() as u64;
    }
    let stat = BlobApiClient::upload_finish(&client, status.upload_id, Some(expected)).await?;
    let rpc_up = t.elapsed().as_secs_f64();
    ensure!(stat.id == expected);

    let t = Instant::now();
    let mut back = Vec::with_capacity(size);
    loop {
        let c = BlobApiClient::get(
            &client,
            expected,
            Some(back.len() as u64),
            Some(CHUNK as u64),
        )
        .await?;
        back.extend_from_slice(&c.data_base64.0);
        if c.eof {
            break;
        }
    }
    let rpc_down = t.elapsed().as_secs_f64();
    ensure!(back == bytes, "RPC download differs");
    drop(client);
    node.shutdown().await;

    // ---- bare iroh-blobs FsStore (the anchor) ----
    let raw_dir = tempfile::tempdir()?;
    let store = FsStore::load(raw_dir.path())
        .await
        .context("opening FsStore")?;
    let t = Instant::now();
    let tag = store.add_bytes(bytes.clone()).await?;
    let raw_add = t.elapsed().as_secs_f64();
    ensure!(tag.hash.as_bytes() == expected.as_bytes());
    let t = Instant::now();
    let raw_back = store.get_bytes(tag.hash).await?;
    let raw_read = t.elapsed().as_secs_f64();
    ensure!(raw_back.as_ref() == bytes.as_slice(), "raw read differs");
    store.shutdown().await?;

    let up = mb_per_s(size, rpc_up);
    let down = mb_per_s(size, rpc_down);
    let add = mb_per_s(size, raw_add);
    let read = mb_per_s(size, raw_read);
    println!("{:<34} {:>10} {:>10}", "", "MB/s", "seconds");
    println!(
        "{:<34} {:>10.1} {:>10.3}",
        "onvm upload (WS, 4 MiB chunks)", up, rpc_up
    );
    println!(
        "{:<34} {:>10.1} {:>10.3}",
        "iroh-blobs add_bytes (FsStore)", add, raw_add
    );
    println!(
        "{:<34} {:>10.1} {:>10.3}",
        "onvm download (WS, 4 MiB ranges)", down, rpc_down
    );
    println!(
        "{:<34} {:>10.1} {:>10.3}",
        "iroh-blobs get_bytes (FsStore)", read, raw_read
    );
    println!("upload ratio   onvm/raw = {:.2}", up / add);
    println!("download ratio onvm/raw = {:.2}", down / read);
    Ok(())
}
