//! The README's "Try it" section, run as written: every `sh` block in it, in order, in one fresh
//! bash with `set -e`, from a temporary working directory, against a dev node. So the README can
//! never drift from the CLI, and following it leaves the checkout clean.
//!
//! Two adjustments, both printed: `/tmp/` becomes this test's own temporary directory (so runs
//! never meet), and `watch-jobs`, which follows the feed until Ctrl-C, gets 3 seconds.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

/// The `sh` blocks of the README section headed `## {title}`.
fn sh_blocks(readme: &str, title: &str) -> Vec<String> {
    let section: String = readme
        .split("\n## ")
        .find(|s| s.starts_with(title))
        .unwrap_or_else(|| panic!("README has no `## {title}` section"))
        .to_string();
    section
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default().to_string())
        .collect()
}

fn git_status(root: &Path) -> Option<String> {
    let out = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=all"])
        .current_dir(root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn the_readme_try_it_section_runs_as_written_and_leaves_the_checkout_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = sh_blocks(&readme, "Try it");
    assert!(blocks.len() >= 4, "{blocks:?}");
    // The sample programs the README deploys (built once, as the README says).
    common::program_wasm("kvstore");
    let before = git_status(root);

    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    for name in ["README.md", "wasm_programs"] {
        std::os::unix::fs::symlink(root.join(name), work.join(name)).unwrap();
    }
    // The dev node of "The two commands", with the fuel the README's long job asks for.
    let mut dev = Command::new(common::onvm_bin())
        .args([
            "dev",
            "--rpc",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            tmp.path().join("dev").to_str().unwrap(),
            "--set",
            "vm.max_fuel=1000000000000",
        ])
        .env("HOME", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = common::rpc_url_of(&mut dev);

    let mut script = String::from("set -euo pipefail\n");
    for block in &blocks {
        for line in block.lines() {
            let mut line = line.replace("/tmp/", &format!("{}/", out.display()));
            if line.trim_start().starts_with("onvm watch-jobs") {
                let command = line
                    .split(" #")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                line = format!("timeout 3 {command} || [ $? -eq 124 ]");
            }
            script.push_str(&line);
            script.push('\n');
        }
    }
    println!("running, in {}:\n{script}", work.display());
    let bin_dir = common::onvm_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env("PATH", path)
        .env("ONVM_RPC", &url)
        .env("HOME", tmp.path())
        .env_remove("ONVM_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = dev.kill();
    let _ = dev.wait();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the README's Try it section failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        run.status
    );
    // What the commands say they do, they did.
    assert!(stdout.contains(r#""data_base64":"aGVsbG8=""#), "{stdout}");
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(out.join("copy.md").exists());
    assert_eq!(
        std::fs::read(out.join("copy.md")).unwrap(),
        readme.as_bytes(),
        "get-blob returned the README"
    );
    assert_eq!(
        git_status(root),
        before,
        "the README's commands changed the checkout"
    );
}
