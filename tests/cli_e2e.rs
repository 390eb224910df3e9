//! End to end through the built `onvm` binary: init, run-node in the background, upload and
//! download, graceful shutdown on SIGTERM, restart, and the errors an operator can hit.

mod common;

use std::borrow::BorrowMut;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{onvm_bin, pseudo_random_bytes};

const PASS: &str = "correct horse battery staple";

fn onvm(args: &[&str]) -> Command {
    let mut cmd = Command::new(onvm_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .env_remove("ONVM_RPC")
        .env_remove("RUST_LOG");
    cmd
}

fn run_ok(mut cmd: impl BorrowMut<Command>) -> String {
    let out = cmd.borrow_mut().output().expect("run onvm");
    assert!(
        out.status.success(),
        "onvm failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 stdout")
}

fn run_err(mut cmd: impl BorrowMut<Command>) -> Output {
    let out = cmd.borrow_mut().output().expect("run onvm");
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// A background `onvm run-node`; its RPC URL is read from its stdout.
struct RunningNode {
    child: Child,
    rpc: String,
}

impl RunningNode {
    fn start(data_dir: &Path, passphrase: &str) -> Self {
        Self::spawn(
            data_dir,
            &["--listen", "127.0.0.1:0"],
            Some(passphrase),
            Stdio::inherit(),
        )
    }

    /// `run-node --offline` on `data_dir` with RPC on a free port, plus `extra` arguments.
    fn spawn(data_dir: &Path, extra: &[&str], passphrase: Option<&str>, stderr: Stdio) -> Self {
        let mut cmd = onvm(&[
            "run-node",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--rpc",
            "127.0.0.1:0",
            "--offline",
        ]);
        cmd.args(extra);
        if let Some(p) = passphrase {
            cmd.env("ONVM_IDENTITY_PASSPHRASE", p);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn run-node");
        let rpc = common::rpc_url_of(&mut child);
        Self { child, rpc }
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "run-node exited with {status:?} after SIGTERM"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("run-node did not stop within 30 s of SIGTERM");
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn init_run_upload_download_shutdown_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("node");
    let dir = data_dir.to_str().unwrap();
    let out = run_ok(onvm(&["init", "--data-dir", dir]).env("ONVM_IDENTITY_PASSPHRASE", PASS));
    assert!(out.contains("created encrypted identity"), "{out}");
    let config = std::fs::read_to_string(data_dir.join("config.toml")).unwrap();
    assert!(config.contains("max_batch = 32"));
    let identity_before = std::fs::read(data_dir.join("identity.json")).unwrap();
    // Re-running init keeps the identity.
    let out = run_ok(onvm(&["init", "--data-dir", dir]).env("ONVM_IDENTITY_PASSPHRASE", "other"));
    assert!(out.contains("kept it"), "{out}");
    assert_eq!(
        std::fs::read(data_dir.join("identity.json")).unwrap(),
        identity_before
    );

    let node = RunningNode::start(&data_dir, PASS);
    let rpc = node.rpc.clone();
    let small = tmp.path().join("small.txt");
    std::fs::write(&small, b"hello onvm\n").unwrap();
    let large = tmp.path().join("large.bin");
    let large_bytes = pseudo_random_bytes(9 * 1024 * 1024 + 17, 0xc11);
    std::fs::write(&large, &large_bytes).unwrap();

    let small_id = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "upload-blob",
        "--file",
        small.to_str().unwrap(),
        "--mime",
        "text/plain",
    ]));
    let small_id = small_id.trim().to_string();
    assert_eq!(
        small_id,
        format!("blob{}", blake3::hash(b"hello onvm\n").to_hex())
    );
    let large_id = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "upload-blob",
        "--file",
        large.to_str().unwrap(),
    ]));
    let large_id = large_id.trim().to_string();
    assert_eq!(
        large_id,
        format!("blob{}", blake3::hash(&large_bytes).to_hex())
    );

    let out_file = tmp.path().join("large.out");
    run_ok(onvm(&[
        "--rpc",
        &rpc,
        "get-blob",
        "--id",
        &large_id,
        "--out",
        out_file.to_str().unwrap(),
    ]));
    assert!(
        std::fs::read(&out_file).unwrap() == large_bytes,
        "downloaded bytes differ"
    );
    let stdout_copy = run_ok(onvm(&[
        "--rpc", &rpc, "get-blob", "--id", &small_id, "--out", "-",
    ]));
    assert_eq!(stdout_copy, "hello onvm\n");

    let listing: serde_json::Value =
        serde_json::from_str(&run_ok(onvm(&["--rpc", &rpc, "--json", "list-blobs"]))).unwrap();
    assert_eq!(listing["items"].as_array().unwrap().len(), 2);
    let info: serde_json::Value =
        serde_json::from_str(&run_ok(onvm(&["--rpc", &rpc, "--json", "node-info"]))).unwrap();
    assert!(info["ticket"].as_str().unwrap().starts_with("endpoint"));
    let health = run_ok(onvm(&["--rpc", &rpc, "health"]));
    assert!(health.starts_with("ready"), "{health}");

    // A missing blob: non-zero exit and a one-line reason.
    let missing = format!("blob{}", "0".repeat(64));
    let out = run_err(&mut onvm(&[
        "--rpc", &rpc, "get-blob", "--id", &missing, "--out", "-",
    ]));
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not found") && stderr.contains("-32001"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    node.stop();

    // After a clean shutdown the node restarts on the same data and still has everything.
    let node = RunningNode::start(&data_dir, PASS);
    let again = tmp.path().join("again.out");
    run_ok(onvm(&[
        "--rpc",
        &node.rpc,
        "get-blob",
        "--id",
        &large_id,
        "--out",
        again.to_str().unwrap(),
    ]));
    assert!(std::fs::read(&again).unwrap() == large_bytes);
    node.stop();
}

#[test]
fn wrong_passphrase_and_bad_config_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let d = dir.to_str().unwrap();
    run_ok(onvm(&["init", "--data-dir", d]).env("ONVM_IDENTITY_PASSPHRASE", PASS));
    let out = run_err(
        onvm(&[
            "run-node",
            "--data-dir",
            d,
            "--rpc",
            ":0",
            "--listen",
            ":0",
            "--offline",
        ])
        .env("ONVM_IDENTITY_PASSPHRASE", "not it"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let config = dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    // A misspelt key: the error names it.
    std::fs::write(&config, text.replace("max_batch = 32", "max_bach = 32")).unwrap();
    let out = run_err(
        onvm(&[
            "run-node",
            "--data-dir",
            d,
            "--rpc",
            ":0",
            "--listen",
            ":0",
            "--offline",
        ])
        .env("ONVM_IDENTITY_PASSPHRASE", PASS),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_bach"), "{stderr}");
}

#[test]
fn init_refuses_plaintext_without_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let out = run_err(
        onvm(&["init", "--data-dir", dir.to_str().unwrap()]).env_remove("ONVM_IDENTITY_PASSPHRASE"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-plaintext-identity"), "{stderr}");
    assert!(!dir.join("identity.json").exists());
    let out = run_ok(
        onvm(&[
            "init",
            "--data-dir",
            dir.to_str().unwrap(),
            "--allow-plaintext-identity",
        ])
        .env_remove("ONVM_IDENTITY_PASSPHRASE"),
    );
    assert!(out.contains("PLAINTEXT"), "{out}");
}

#[test]
fn dev_creates_its_data_dir_and_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let dev_dir = tmp.path().join("dev");
    let mut child = onvm(&["dev", "--rpc", "127.0.0.1:0"])
        .env("ONVM_DEV_DIR", &dev_dir)
        .env_remove("ONVM_IDENTITY_PASSPHRASE")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut rpc = None;
    let mut ticket = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(u) = line.strip_prefix("rpc:") {
            rpc = Some(u.trim().to_string());
        }
        if let Some(t) = line.strip_prefix("ticket:") {
            ticket = Some(t.trim().to_string());
            break;
        }
    }
    let rpc = rpc.expect("dev printed its RPC URL");
    assert!(
        ticket
            .expect("dev printed a ticket")
            .starts_with("endpoint")
    );
    assert!(dev_dir.join("identity.json").exists());
    let info: serde_json::Value =
        serde_json::from_str(&run_ok(onvm(&["--rpc", &rpc, "--json", "node-info"]))).unwrap();
    assert_eq!(info["offline"], true);
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn deploy_execute_receipts_and_offline_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("node");
    run_ok(
        onvm(&["init", "--data-dir", data_dir.to_str().unwrap()])
            .env("ONVM_IDENTITY_PASSPHRASE", PASS),
    );
    let node = RunningNode::start(&data_dir, PASS);
    let rpc = node.rpc.clone();
    let wasm = tmp.path().join("kvstore.wasm");
    std::fs::write(&wasm, common::program_wasm("kvstore")).unwrap();

    let program = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "deploy",
        "--file",
        wasm.to_str().unwrap(),
    ]));
    let program = program.trim().to_string();
    assert!(program.starts_with("prog"), "{program}");
    let put = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "execute",
        "--program-id",
        &program,
        "--input-json",
        r#"{"op":"put","key":"greeting","data_base64":"aGVsbG8="}"#,
    ]));
    assert_eq!(
        put.trim(),
        r#"{"ok":true,"key":"greeting","size":5,"created":true}"#
    );
    let get = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "execute",
        "--program-id",
        &program,
        "--input-json",
        r#"{"op":"get","key":"greeting"}"#,
    ]));
    assert!(get.contains(r#""data_base64":"aGVsbG8=""#), "{get}");
    assert_eq!(
        run_ok(onvm(&[
            "--rpc",
            &rpc,
            "state-get",
            "--program-id",
            &program,
            "--key",
            "d/greeting"
        ]))
        .trim(),
        "hello"
    );
    let proof = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "state-proof",
        "--program-id",
        &program,
        "--key",
        "d/greeting",
        "--verify",
    ]));
    assert!(
        proof.contains("inclusion proof") && proof.contains("verified locally: ok"),
        "{proof}"
    );

    let receipts = tmp.path().join("receipts");
    let listing = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "program-receipts",
        "--program-id",
        &program,
        "--save-dir",
        receipts.to_str().unwrap(),
    ]));
    assert_eq!(listing.lines().count(), 2, "{listing}");
    let files: Vec<_> = std::fs::read_dir(&receipts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    for f in &files {
        // verify-receipt needs no node: no --rpc is given and none is reachable.
        let out = run_ok(onvm(&[
            "verify-receipt",
            "--file",
            f.to_str().unwrap(),
            "--network-id",
            "onvm-devnet",
        ]));
        assert!(out.contains("is valid"), "{out}");
    }
    // A tampered receipt (different output hash) fails verification.
    let mut receipt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    receipt["receipt"]["fuel_used"] = serde_json::json!(1);
    let tampered = tmp.path().join("tampered.json");
    std::fs::write(&tampered, serde_json::to_vec(&receipt).unwrap()).unwrap();
    let out = run_err(onvm(&[
        "verify-receipt",
        "--file",
        tampered.to_str().unwrap(),
    ]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID"));
    let out = run_err(onvm(&[
        "verify-receipt",
        "--file",
        files[0].to_str().unwrap(),
        "--network-id",
        "other-net",
    ]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("other-net"));

    // A failing call: exit code 4, the reason on one line, the receipt summary on stderr.
    let jt = tmp.path().join("job_test.wasm");
    std::fs::write(&jt, common::program_wasm("job_test")).unwrap();
    let jt_id = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "deploy",
        "--file",
        jt.to_str().unwrap(),
    ]));
    let out = run_err(onvm(&[
        "--rpc",
        &rpc,
        "execute",
        "--program-id",
        jt_id.trim(),
        "--input-json",
        r#"{"task":"fail"}"#,
    ]));
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("deliberate failure") && stderr.contains("-32020"),
        "{stderr}"
    );
    assert!(stderr.contains("receipt rcpt"), "{stderr}");
    let out = run_err(onvm(&[
        "--rpc",
        &rpc,
        "deploy",
        "--file",
        small_garbage(&tmp).to_str().unwrap(),
    ]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly module"));

    // The audit replays the program's history (a put, a get that wrote nothing, ...) and
    // agrees with every receipt.
    let out = run_ok(onvm(&["--rpc", &rpc, "audit", "--program-id", &program]));
    assert!(out.starts_with("audit OK"), "{out}");
    node.stop();

    // Someone edits the stored input of the call at height 1: the audit names that height.
    {
        let db = redb::Database::open(data_dir.join("node.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<&[u8; 40], &[u8]> =
                redb::TableDefinition::new("call_inputs");
            let mut t = tx.open_table(table).unwrap();
            let mut key = [0u8; 40];
            let id: onvm::rpc_api::ProgramId = program.parse().unwrap();
            key[..32].copy_from_slice(id.as_bytes());
            key[32..].copy_from_slice(&1u64.to_be_bytes());
            assert!(redb::ReadableTable::get(&t, &key).unwrap().is_some());
            t.insert(&key, br#"{"op":"get","key":"other"}"#.as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let node = RunningNode::start(&data_dir, PASS);
    let out = run_err(onvm(&[
        "--rpc",
        &node.rpc,
        "audit",
        "--program-id",
        &program,
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("audit FAILED at height 1"), "{stderr}");
    node.stop();
}

fn small_garbage(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    let p = tmp.path().join("garbage.wasm");
    std::fs::write(&p, b"this is not wasm").unwrap();
    p
}

#[test]
fn jobs_from_the_cli_wait_cancel_and_survive_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("node");
    run_ok(
        onvm(&[
            "init",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--set",
            "vm.max_fuel=1000000000000",
        ])
        .env("ONVM_IDENTITY_PASSPHRASE", PASS),
    );
    let node = RunningNode::start(&data_dir, PASS);
    let rpc = node.rpc.clone();
    let wasm = tmp.path().join("job_test.wasm");
    std::fs::write(&wasm, common::program_wasm("job_test")).unwrap();
    let program = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "deploy",
        "--file",
        wasm.to_str().unwrap(),
    ]));
    let program = program.trim().to_string();

    // --wait follows the job live (progress on stderr) and prints the output.
    let out = onvm(&[
        "--rpc",
        &rpc,
        "submit-job",
        "--program-id",
        &program,
        "--input-json",
        r#"{"task":"hash","iterations":3,"data":"hello"}"#,
        "--request-id",
        "cli-1",
        "--wait",
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for status in ["pending", "running", "completed"] {
        assert!(stderr.contains(status), "progress shows {status}: {stderr}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""task":"hash""#));

    // A long job is cancelled while running.
    let long = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "submit-job",
        "--program-id",
        &program,
        "--input-json",
        r#"{"task":"stress","iterations":18446744073709551615}"#,
        "--request-id",
        "cli-long",
        "--fuel",
        "1000000000000",
        "--timeout-ms",
        "10000",
    ]));
    let long = long.trim().to_string();
    for _ in 0..200 {
        if run_ok(onvm(&["--rpc", &rpc, "job-status", "--job-id", &long])).contains("running") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    run_ok(onvm(&["--rpc", &rpc, "cancel-job", "--job-id", &long]));
    let mut status = String::new();
    for _ in 0..100 {
        status = run_ok(onvm(&["--rpc", &rpc, "job-status", "--job-id", &long]));
        if status.contains("cancelled") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(status.contains("status       cancelled"), "{status}");
    node.stop();

    // Restarting the node loses nothing.
    let node = RunningNode::start(&data_dir, PASS);
    let list = run_ok(onvm(&["--rpc", &node.rpc, "list-jobs"]));
    assert!(
        list.contains("completed") && list.contains("cancelled"),
        "{list}"
    );
    let out_file = tmp.path().join("out.json");
    let first = list
        .lines()
        .find(|l| l.contains("cli-1"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    run_ok(onvm(&[
        "--rpc",
        &node.rpc,
        "job-output",
        "--job-id",
        &first,
        "--out",
        out_file.to_str().unwrap(),
    ]));
    assert!(
        std::fs::read_to_string(&out_file)
            .unwrap()
            .contains(r#""task":"hash""#)
    );
    node.stop();
}

#[test]
fn two_nodes_ticket_connect_and_blob_across() {
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("n1"), tmp.path().join("n2"));
    for d in [&d1, &d2] {
        run_ok(
            onvm(&["init", "--data-dir", d.to_str().unwrap()])
                .env("ONVM_IDENTITY_PASSPHRASE", PASS),
        );
    }
    let n1 = RunningNode::start(&d1, PASS);
    let n2 = RunningNode::start(&d2, PASS);
    let ticket = run_ok(onvm(&["--rpc", &n1.rpc, "ticket"]));
    let ticket = ticket.trim().to_string();
    assert!(ticket.starts_with("endpoint"));
    let out = run_ok(onvm(&["--rpc", &n2.rpc, "connect", &ticket]));
    assert!(out.starts_with("connected to "), "{out}");
    let peers = run_ok(onvm(&["--rpc", &n2.rpc, "peers"]));
    assert!(peers.contains("direct"), "{peers}");
    // Upload on node 1, download on node 2.
    let file = tmp.path().join("data.bin");
    let bytes = pseudo_random_bytes(2 * 1024 * 1024 + 3, 77);
    std::fs::write(&file, &bytes).unwrap();
    let id = run_ok(onvm(&[
        "--rpc",
        &n1.rpc,
        "upload-blob",
        "--file",
        file.to_str().unwrap(),
    ]));
    let out_file = tmp.path().join("copy.bin");
    run_ok(onvm(&[
        "--rpc",
        &n2.rpc,
        "get-blob",
        "--id",
        id.trim(),
        "--out",
        out_file.to_str().unwrap(),
    ]));
    assert!(std::fs::read(&out_file).unwrap() == bytes);
    // Both nodes end with the same DAG heads (2 announcements + 1 published blob).
    let mut same = false;
    for _ in 0..200 {
        let h1 = run_ok(onvm(&["--rpc", &n1.rpc, "--json", "dag-heads"]));
        let h2 = run_ok(onvm(&["--rpc", &n2.rpc, "--json", "dag-heads"]));
        if h1 == h2 && h1.contains(r#""count": 3"#) {
            same = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(same, "DAG heads never converged");

    // Deploy on node 1, execute on node 2 (forwarded to node 1), read the state on node 2.
    let wasm = tmp.path().join("kvstore.wasm");
    std::fs::write(&wasm, common::program_wasm("kvstore")).unwrap();
    let program = run_ok(onvm(&[
        "--rpc",
        &n1.rpc,
        "deploy",
        "--file",
        wasm.to_str().unwrap(),
    ]));
    let program = program.trim().to_string();
    let mut put = None;
    for _ in 0..200 {
        // The program reaches node 2's catalog within a moment of the deploy.
        let out = onvm(&[
            "--rpc",
            &n2.rpc,
            "execute",
            "--program-id",
            &program,
            "--input-json",
            r#"{"op":"put","key":"greeting","data_base64":"aGVsbG8="}"#,
        ])
        .output()
        .unwrap();
        if out.status.success() {
            put = Some(String::from_utf8(out.stdout).unwrap());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        put.expect("execute on node 2 succeeded").trim(),
        r#"{"ok":true,"key":"greeting","size":5,"created":true}"#
    );
    let greeting = |rpc: &str| {
        onvm(&[
            "--rpc",
            rpc,
            "state-get",
            "--program-id",
            &program,
            "--key",
            "d/greeting",
        ])
    };
    // The node that accepted the call answers once it applied it: read-your-writes there.
    assert_eq!(run_ok(greeting(&n2.rpc)).trim(), "hello");
    // The other member applies the decided height when its DAG node reaches it.
    let mut seen = None;
    let waited = std::time::Instant::now();
    for _ in 0..200 {
        let out = greeting(&n1.rpc).output().unwrap();
        if out.status.success() {
            seen = Some(String::from_utf8(out.stdout).unwrap());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "node 1 applied the write {:?} after node 2 answered",
        waited.elapsed()
    );
    assert_eq!(seen.expect("node 1 applies the write").trim(), "hello");
    // Two nodes make a committee of two: the receipt carries both signatures, and verifies
    // offline against the committee saved from either node.
    let committee = tmp.path().join("committee.json");
    let receipts = tmp.path().join("receipts");
    run_ok(onvm(&[
        "--rpc",
        &n2.rpc,
        "program-committee",
        "--program-id",
        &program,
        "--out",
        committee.to_str().unwrap(),
    ]));
    run_ok(onvm(&[
        "--rpc",
        &n2.rpc,
        "program-receipts",
        "--program-id",
        &program,
        "--save-dir",
        receipts.to_str().unwrap(),
    ]));
    let file = std::fs::read_dir(&receipts)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = run_ok(onvm(&[
        "verify-receipt",
        "--file",
        file.to_str().unwrap(),
        "--committee",
        committee.to_str().unwrap(),
    ]));
    assert!(out.contains("attested by 2 of 2"), "{out}");
    // Node 2 holds the replicated inputs: the audit replays the history from there.
    let out = run_ok(onvm(&["--rpc", &n2.rpc, "audit", "--program-id", &program]));
    assert!(out.starts_with("audit OK: 1 calls"), "{out}");
    // A receipt edited after the fact fails.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut receipt: serde_json::Value = serde_json::from_str(&text).unwrap();
    receipt["receipt"]["fuel_used"] = serde_json::json!(1);
    std::fs::write(&file, receipt.to_string()).unwrap();
    let bad = run_err(onvm(&[
        "verify-receipt",
        "--file",
        file.to_str().unwrap(),
        "--committee",
        committee.to_str().unwrap(),
    ]));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("INVALID"));
    n1.stop();
    n2.stop();
}

/// A plaintext node started with `run-node --offline` and no `--listen`.
fn start_offline(dir: &Path) -> RunningNode {
    RunningNode::spawn(dir, &[], None, Stdio::null())
}

#[test]
fn offline_nodes_bind_loopback_share_a_machine_and_a_busy_rpc_port_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|d| tmp.path().join(d)).collect();
    for d in &dirs {
        common::init_plaintext(d);
    }
    // Two nodes with the default iroh port: the second takes a free one.
    let a = start_offline(&dirs[0]);
    let b = start_offline(&dirs[1]);
    let mut ports = Vec::new();
    for node in [&a, &b] {
        let info: serde_json::Value =
            serde_json::from_str(&run_ok(onvm(&["--rpc", &node.rpc, "--json", "node-info"])))
                .unwrap();
        let addresses: Vec<String> = info["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert!(!addresses.is_empty());
        for addr in &addresses {
            assert!(addr.starts_with("127.0.0.1:"), "--offline bound {addr}");
        }
        ports.push(addresses[0].clone());
    }
    assert_ne!(ports[0], ports[1]);

    // A busy RPC port: one clear cause (not twice) and what to do.
    let port = a.rpc.rsplit(':').next().unwrap();
    let out = run_err(onvm(&[
        "run-node",
        "--data-dir",
        dirs[2].to_str().unwrap(),
        "--rpc",
        &format!("127.0.0.1:{port}"),
        "--offline",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds this port"), "{stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );

    // Tokens from the CLI: the operator (cookie) creates one; a client elsewhere (no cookie)
    // gets exactly its scopes.
    let token = run_ok(onvm(&[
        "--rpc",
        &a.rpc,
        "token",
        "create",
        "--scope",
        "read",
        "--expires",
        "1h",
        "--label",
        "cli-test",
    ]));
    let token = token.trim();
    assert!(token.starts_with("onvm_"), "{token}");
    let listed = run_ok(onvm(&["--rpc", &a.rpc, "token", "list"]));
    assert!(
        listed.contains("cli-test") && !listed.contains(token),
        "{listed}"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let no_cookie = |args: &[&str]| {
        let mut cmd = onvm(args);
        cmd.env("ONVM_RUNTIME_DIR", elsewhere.path());
        cmd
    };
    let wasm = tmp.path().join("echo.wasm");
    std::fs::write(&wasm, common::program_wasm("echo")).unwrap();
    let denied = run_err(no_cookie(&[
        "--rpc",
        &a.rpc,
        "deploy",
        "--file",
        wasm.to_str().unwrap(),
    ]));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("needs scope `deploy`"), "{stderr}");
    assert_eq!(denied.status.code(), Some(4));
    let denied = run_err(no_cookie(&[
        "--rpc",
        &a.rpc,
        "--token",
        token,
        "deploy",
        "--file",
        wasm.to_str().unwrap(),
    ]));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("this token has only: read"));
    run_ok(no_cookie(&["--rpc", &a.rpc, "--token", token, "health"]));
    let id = token.trim_start_matches("onvm_").split('_').next().unwrap();
    run_ok(onvm(&["--rpc", &a.rpc, "token", "revoke", id]));
    let refused = run_err(no_cookie(&["--rpc", &a.rpc, "--token", token, "health"]));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refused the token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    a.stop();
    b.stop();
}

#[test]
fn every_flag_has_help_and_newcomer_errors_say_what_to_do() {
    // Every subcommand's every option carries a description (`-h` puts it on the same line).
    let top = run_ok(onvm(&["--help"]));
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() > 30, "{top}");
    for command in &commands {
        let help = run_ok(onvm(&[command.as_str(), "-h"]));
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if !(t.starts_with("--") || t.starts_with("-h")) {
                continue;
            }
            // "--flag <VALUE>  description", or the description alone on the next line (clap
            // does that when some help of the command is long).
            let same_line = t.split("  ").filter(|p| !p.trim().is_empty()).count() >= 2;
            let next_line = lines.get(i + 1).is_some_and(|next| {
                let n = next.trim_start();
                !n.is_empty() && !n.starts_with('-') && next.len() - n.len() > line.len() - t.len()
            });
            assert!(
                same_line || next_line,
                "`onvm {command}`: no help for `{t}`"
            );
        }
    }
    let list_jobs = run_ok(onvm(&["list-jobs", "-h"]));
    assert!(list_jobs.contains("timed_out"), "{list_jobs}");
    // Every command that takes input shows an example (`--help`, the long form, prints it).
    for command in &commands {
        let help = run_ok(onvm(&[command.as_str(), "--help"]));
        let takes_input = help.lines().any(|l| {
            let t = l.trim_start();
            let global = ["--help", "--rpc", "--json", "--token"]
                .iter()
                .any(|g| t.starts_with(g));
            (t.starts_with("--") && !global) || l.starts_with("  <")
        });
        let has_subcommands = help.contains("Commands:");
        if takes_input && !has_subcommands {
            assert!(
                help.contains("Example:\n  onvm "),
                "`onvm {command} --help` has no example"
            );
        }
    }
    // --rpc typed on an offline command is a mistake, said as such; ONVM_RPC is fine.
    let out = run_err(onvm(&[
        "--rpc",
        ":9",
        "verify-receipt",
        "--file",
        "/nonexistent.json",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("works offline"));
    let out =
        run_err(onvm(&["verify-receipt", "--file", "/nonexistent.json"]).env("ONVM_RPC", ":9"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("works offline"));
    let out = run_err(onvm(&[
        "key",
        "show",
        "--key",
        "/nonexistent.key",
        "--rpc",
        ":9",
    ]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("works offline"));
    // Shell completions know the commands and their flags.
    let bash = run_ok(onvm(&["completions", "bash"]));
    assert!(bash.contains("_onvm") && bash.contains("submit-job") && bash.contains("--program-id"));
    for shell in ["zsh", "fish"] {
        let script = run_ok(onvm(&["completions", shell]));
        assert!(script.contains("submit-job"), "{shell}");
    }
    for sub in [
        ["key", "new"],
        ["key", "show"],
        ["token", "create"],
        ["token", "revoke"],
    ] {
        let help = run_ok(onvm(&[sub[0], sub[1], "--help"]));
        assert!(help.contains("Example:\n  onvm "), "onvm {sub:?}");
    }

    // A second node on the same data dir: says why and what to do.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    common::init_plaintext(&dir);
    let first = start_offline(&dir);
    let out = run_err(onvm(&[
        "run-node",
        "--data-dir",
        dir.to_str().unwrap(),
        "--rpc",
        "127.0.0.1:0",
        "--offline",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another running node") && stderr.contains("--data-dir"),
        "{stderr}"
    );
    // --json on ticket; peers and blobs counted for people.
    let ticket: serde_json::Value =
        serde_json::from_str(&run_ok(onvm(&["--rpc", &first.rpc, "--json", "ticket"]))).unwrap();
    assert!(ticket["ticket"].as_str().unwrap().len() > 20);
    let blobs = onvm(&["--rpc", &first.rpc, "list-blobs"]).output().unwrap();
    assert!(String::from_utf8_lossy(&blobs.stderr).contains("0 blobs"));
    first.stop();
}

#[test]
fn signed_calls_from_the_cli_key_new_execute_verify_and_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("node");
    run_ok(
        onvm(&["init", "--data-dir", data_dir.to_str().unwrap()])
            .env("ONVM_IDENTITY_PASSPHRASE", PASS),
    );
    let node = RunningNode::start(&data_dir, PASS);
    let rpc = node.rpc.clone();
    let key = tmp.path().join("alice.key");
    let key = key.to_str().unwrap();
    let caller = run_ok(onvm(&["key", "new", "--out", key]))
        .trim()
        .to_string();
    assert_eq!(caller.len(), 64, "{caller}");
    let shown = run_ok(onvm(&["--json", "key", "show", "--key", key]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&shown).unwrap()["caller"],
        caller.as_str()
    );
    // A key file is never overwritten.
    let out = run_err(onvm(&["key", "new", "--out", key]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwritten"));

    let wasm = tmp.path().join("whoami.wasm");
    std::fs::write(
        &wasm,
        wat::parse_str(include_str!("fixtures/whoami.wat")).unwrap(),
    )
    .unwrap();
    let program = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "deploy",
        "--file",
        wasm.to_str().unwrap(),
        "--extra-entrypoint",
        "whoami",
        "--require-signed-calls",
    ]));
    let program = program.trim();
    // Anonymous writes are refused, and the error says how to sign.
    let out = run_err(onvm(&["--rpc", &rpc, "execute", "--program-id", program]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("-32006") && stderr.contains("--key"),
        "{stderr}"
    );
    // Signed: the program sees the key's caller id, and the receipt records it.
    let out = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "--json",
        "execute",
        "--program-id",
        program,
        "--key",
        key,
        "--valid-for",
        "2m",
    ]));
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        result["receipt"]["receipt"]["caller"],
        caller.as_str(),
        "{out}"
    );
    use base64::Engine as _;
    let output = base64::engine::general_purpose::STANDARD
        .decode(result["output_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(hex::encode(output), caller);

    // The saved receipt verifies offline, caller proof included; a tampered proof does not.
    let receipts = tmp.path().join("receipts");
    run_ok(onvm(&[
        "--rpc",
        &rpc,
        "program-receipts",
        "--program-id",
        program,
        "--save-dir",
        receipts.to_str().unwrap(),
    ]));
    let file = std::fs::read_dir(&receipts)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = run_ok(onvm(&["verify-receipt", "--file", file.to_str().unwrap()]));
    assert!(out.contains("is valid"), "{out}");
    let mut receipt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    receipt["receipt"]["caller_proof"]["expires_at_ms"] = serde_json::json!(u64::MAX);
    let tampered = tmp.path().join("tampered.json");
    std::fs::write(&tampered, serde_json::to_vec(&receipt).unwrap()).unwrap();
    let out = run_err(onvm(&[
        "verify-receipt",
        "--file",
        tampered.to_str().unwrap(),
    ]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID"));

    // A signed job: its attempt runs as the caller too.
    let out = run_ok(onvm(&[
        "--rpc",
        &rpc,
        "--json",
        "submit-job",
        "--program-id",
        program,
        "--request-id",
        "j1",
        "--key",
        key,
    ]));
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["job"]["signed"]["caller"], caller.as_str(), "{out}");
    assert_eq!(job["job"]["max_retries"], 3, "the signed default: {out}");

    // The audit replays the call as that caller and agrees.
    let out = run_ok(onvm(&["--rpc", &rpc, "audit", "--program-id", program]));
    assert!(out.starts_with("audit OK"), "{out}");
    node.stop();
}

#[test]
fn dev_nodes_start_a_joined_network_and_stop_together_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let dev_dir = tmp.path().join("dev");
    let mut child = onvm(&["dev", "--nodes", "3", "--rpc", "127.0.0.1:0"])
        .env("ONVM_DEV_DIR", &dev_dir)
        .env_remove("ONVM_IDENTITY_PASSPHRASE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut urls = Vec::new();
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    for line in lines.by_ref() {
        if let Some(u) = line.strip_prefix("rpc:") {
            urls.push(u.trim().to_string());
            if urls.len() == 3 {
                break;
            }
        }
    }
    // Keep draining stdout so the nodes never block on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    assert_eq!(urls.len(), 3, "each node prints its RPC URL");
    for i in 2..=3 {
        let mut dir = dev_dir.clone().into_os_string();
        dir.push(format!("-{i}"));
        assert!(std::path::Path::new(&dir).join("identity.json").exists());
    }
    // The nodes joined: each sees the other two (the joins are asynchronous).
    for url in &urls {
        let mut peers = 0;
        for _ in 0..200 {
            let listed: serde_json::Value =
                serde_json::from_str(&run_ok(onvm(&["--rpc", url, "--json", "peers"]))).unwrap();
            peers = listed.as_array().map_or(0, |a| a.len());
            if peers >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(peers >= 2, "{url} sees {peers} peers");
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("dev --nodes 3 did not stop within 30 s of Ctrl-C");
}

/// The CLI behaves in pipes: a reader that stops early (`onvm completions bash | head`) ends
/// it quietly instead of a "Broken pipe" panic (exit 101), and under `--json` an error is JSON
/// on stdout too, with the exit code, for scripts that parse stdout.
#[test]
fn the_cli_behaves_in_pipes_and_reports_json_errors() {
    use std::os::unix::process::ExitStatusExt;
    // A pipe whose reader is gone before the command starts: its first write fails, every run.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = onvm(&["completions", "bash"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run onvm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc_sigpipe()),
        "ended by SIGPIPE like any filter: {:?}",
        out.status
    );

    let out = run_err(onvm(&["--rpc", "127.0.0.1:1", "--json", "node-info"]));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let error: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(error["error"]["exit_code"], 3, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach"),
        "{error}"
    );
    assert_eq!(out.status.code(), Some(3));
}

/// SIGPIPE's number on Linux.
fn libc_sigpipe() -> i32 {
    13
}
