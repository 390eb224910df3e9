//! Shared by the benchmark examples: a throwaway node and the sample programs.
#![allow(dead_code)]

use std::path::Path;

use anyhow::{Context, Result, bail};
use onvm::node::{Config, Identity, Node};

/// A fresh node in a temp dir: offline, loopback, random ports. Keep the dir alive.
pub async fn bench_node() -> Result<(tempfile::TempDir, Node)> {
    let dir = tempfile::tempdir()?;
    let config = Config::from_toml(
        "",
        "bench",
        &[
            "rpc.listen=127.0.0.1:0".into(),
            "net.listen=127.0.0.1:0".into(),
            "net.offline=true".into(),
        ],
    )?;
    let node = Node::start(dir.path(), config, Identity::generate()).await?;
    Ok((dir, node))
}

/// A sample program's wasm, building `wasm_programs` first if needed.
pub fn program_wasm(name: &str) -> Result<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm_programs");
    let path = root.join(format!("target/wasm32-unknown-unknown/release/{name}.wasm"));
    if !path.exists() {
        let status = std::process::Command::new("bash")
            .arg(root.join("build.sh"))
            .arg("--quiet")
            .status()?;
        if !status.success() {
            bail!("building wasm_programs failed");
        }
    }
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}
