//! Builds the receipt verifier that web pages run (`wasm_programs/verifier`: `onvm-rpc-api`'s
//! checks compiled for wasm32) and leaves it in `OUT_DIR` for the node to serve at
//! `GET /onvm_verifier.wasm`. It is built from source on every machine, never committed.
//!
//! The build uses the `wasm_programs` workspace's own target directory and the same flags as
//! `wasm_programs/build.sh`, so the tests' builds of the sample programs and this one share
//! their compiled dependencies instead of invalidating each other.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env("OUT_DIR")).join("onvm_verifier.wasm");
    println!("cargo:rerun-if-env-changed=ONVM_VERIFIER_WASM");
    // A prebuilt module (e.g. for a build machine without the wasm32 target): used as is.
    if let Ok(prebuilt) = std::env::var("ONVM_VERIFIER_WASM") {
        println!("cargo:rerun-if-changed={prebuilt}");
        copy(Path::new(&prebuilt), &out);
        return;
    }
    let workspace = manifest_dir
        .join("../wasm_programs")
        .canonicalize()
        .unwrap_or_else(|e| fail(&format!("finding ../wasm_programs: {e}")));
    for watched in [
        "verifier/src",
        "verifier/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
        "../rpc-api/src",
        "../rpc-api/Cargo.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    if !build(&workspace) {
        // The one setup step the first build may lack: the wasm32 target (rustup only).
        let added = Command::new("rustup")
            .args(["target", "add", TARGET])
            .status()
            .is_ok_and(|s| s.success());
        if !added || !build(&workspace) {
            fail(&format!(
                "building the receipt verifier (wasm_programs/verifier) for {TARGET} failed: install the target with `rustup target add {TARGET}`, or point ONVM_VERIFIER_WASM at a prebuilt onvm_verifier.wasm"
            ));
        }
    }
    copy(
        &workspace.join(format!("target/{TARGET}/release/onvm_verifier.wasm")),
        &out,
    );
}

/// `cargo build --release -p onvm-verifier` in the wasm_programs workspace.
fn build(workspace: &Path) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    // The same path remapping as build.sh (reproducible bytes, and the same fingerprints).
    let repo = workspace.parent().unwrap_or(workspace);
    let remap = format!(
        "--remap-path-prefix={}=/onvm --remap-path-prefix={}=/onvm/wasm_programs --remap-path-prefix={cargo_home}=/cargo",
        repo.display(),
        workspace.display()
    );
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            TARGET,
            "-p",
            "onvm-verifier",
        ])
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
            format!(" {remap}"),
        );
    // What the outer cargo set for this build script must not leak into the inner build:
    // its target dir, flags and compiler wrappers (clippy's among them).
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MANIFEST_DIR",
        "CARGO_PRIMARY_PACKAGE",
        "TARGET",
        "HOST",
        "OPT_LEVEL",
        "PROFILE",
        "DEBUG",
    ] {
        command.env_remove(var);
    }
    match command.status() {
        Ok(status) => status.success(),
        Err(e) => fail(&format!("running cargo for the verifier: {e}")),
    }
}

fn copy(from: &Path, to: &Path) {
    if let Err(e) = std::fs::copy(from, to) {
        fail(&format!(
            "copying {} to {}: {e}",
            from.display(),
            to.display()
        ));
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(&format!("{name} is not set (not run by cargo?)")))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
