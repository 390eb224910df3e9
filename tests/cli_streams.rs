//! The CLI reaches every RPC method, and its live feeds behave in pipes: `job-logs`, `dag-get`,
//! `receipt-evidence`, `abort-upload`, `watch-receipts` and `watch-dag` through the built
//! `onvm` binary against a real `onvm run-node`, each with a wrong id too, and a stream whose
//! reader leaves (`onvm watch-dag --from-seq 1 | head -1`) ending quietly.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Processes, onvm_bin};

/// A `run-node` in a temp dir, killed when dropped.
struct Node {
    rpc: String,
    dir: tempfile::TempDir,
    _processes: Processes,
}

fn start_node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    common::init_plaintext(&data);
    let (child, rpc) = common::spawn_node(&data, &[]);
    Node {
        rpc,
        dir,
        _processes: Processes(vec![child]),
    }
}

impl Node {
    fn onvm(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(onvm_bin());
        cmd.arg("--rpc")
            .arg(&self.rpc)
            .args(args)
            .stdin(Stdio::null())
            .env_remove("ONVM_RPC")
            .env_remove("ONVM_TOKEN")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Deploys a sample program through the CLI; returns its id.
    fn deploy(&self, program: &str) -> String {
        let wasm = self.dir.path().join(format!("{program}.wasm"));
        std::fs::write(&wasm, common::program_wasm(program)).unwrap();
        run_ok(self.onvm(&["deploy", "--file", wasm.to_str().unwrap()]))
            .trim()
            .to_string()
    }

    fn put(&self, program: &str, key: &str) {
        let input = format!(r#"{{"op":"put","key":"{key}","data_base64":"dg=="}}"#);
        run_ok(self.onvm(&["execute", "--program-id", program, "--input-json", &input]));
    }
}

/// Runs `cmd` to its end, killing it (and failing) after `secs`: a follower that does not stop
/// must not hang the test.
fn run_within(mut cmd: Command, secs: u64) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run onvm");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.expect("wait for onvm"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} did not end within {secs} s");
        }
    }
}

fn run_ok(cmd: Command) -> String {
    let out = run_within(cmd, 120);
    assert!(
        out.status.success(),
        "onvm failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 stdout")
}

/// A failing command: its exit code and its stderr.
fn run_err(cmd: Command) -> (Option<i32>, String, String) {
    let out = run_within(cmd, 120);
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn zeros(prefix: &str, hex_digits: usize) -> String {
    format!("{prefix}{}", "0".repeat(hex_digits))
}

/// SIGPIPE's number on Linux.
const SIGPIPE: i32 = 13;

#[test]
fn job_logs_dag_get_receipt_evidence_and_abort_upload_reach_the_node() {
    let node = start_node();
    let program = node.deploy("job_test");
    let input =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm_programs/job-test/examples/log.json");
    let input = input.to_str().unwrap();
    let submit = [
        "submit-job",
        "--program-id",
        &program,
        "--input",
        input,
        "--request-id",
        "logs",
    ];
    let job = run_ok(node.onvm(&submit)).trim().to_string();
    assert!(job.starts_with("job"), "{job}");
    // The same request id again, followed to its end.
    run_ok(node.onvm(&[&submit[..], &["--wait"]].concat()));

    // job-logs: per attempt, a header then the lines as the program logged them.
    let logs = run_ok(node.onvm(&["job-logs", "--job-id", &job]));
    assert_eq!(
        logs,
        "--- attempt 1 ---\nhello from job-test\nhello from job-test\nhello from job-test\n"
    );
    let logs: serde_json::Value = serde_json::from_str(&run_ok(
        node.onvm(&["--json", "job-logs", "--job-id", &job]),
    ))
    .unwrap();
    assert_eq!(logs["job_id"], job.as_str());
    assert_eq!(logs["attempts"][0]["attempt"], 1);
    assert_eq!(logs["attempts"][0]["lines"].as_array().unwrap().len(), 3);
    let (code, _, stderr) = run_err(node.onvm(&["job-logs", "--job-id", &zeros("job", 64)]));
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("not found") && stderr.contains("onvm list-jobs"),
        "{stderr}"
    );
    // Under --json the error is JSON on stdout.
    let (_, stdout, _) = run_err(node.onvm(&["--json", "job-logs", "--job-id", &zeros("job", 64)]));
    let error: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON error");
    assert_eq!(error["error"]["rpc_code"], -32001, "{error}");
    assert_eq!(error["error"]["exit_code"], 4, "{error}");

    // dag-get: a head printed by dag-heads, as JSON.
    let heads = run_ok(node.onvm(&["dag-heads"]));
    let head = heads.lines().next().expect("a head").to_string();
    let dag_node: serde_json::Value =
        serde_json::from_str(&run_ok(node.onvm(&["dag-get", "--id", &head]))).unwrap();
    assert_eq!(dag_node["body"]["version"], 1, "{dag_node}");
    assert!(dag_node["body"]["payload"].is_object(), "{dag_node}");
    assert!(dag_node["signature"].is_string(), "{dag_node}");
    let (code, _, stderr) = run_err(node.onvm(&["dag-get", "--id", &"a".repeat(64)]));
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("not found") && stderr.contains("onvm dag-heads"),
        "{stderr}"
    );
    let (code, _, stderr) = run_err(node.onvm(&["dag-get", "--id", "not-an-id"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("64 hex digits"), "{stderr}");

    // receipt-evidence: a single node refuses nothing, so none; as a JSON list, an empty one.
    let out = run_within(
        node.onvm(&["receipt-evidence", "--program-id", &program]),
        60,
    );
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no disagreements"));
    let evidence = run_ok(node.onvm(&["--json", "receipt-evidence", "--program-id", &program]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&evidence).unwrap(),
        serde_json::json!([])
    );
    let (code, _, stderr) =
        run_err(node.onvm(&["receipt-evidence", "--program-id", &zeros("prog", 64)]));
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("not found") && stderr.contains("onvm program-catalog"),
        "{stderr}"
    );

    // abort-upload: an upload begun over RPC is gone afterwards.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(common::ws_client(&node.rpc));
    let begin = |size| {
        use onvm::rpc_api::api::BlobApiClient;
        runtime
            .block_on(BlobApiClient::upload_begin(&client, size, None))
            .expect("blob_upload_begin")
            .upload_id
            .to_string()
    };
    let upload = begin(100);
    let out = run_ok(node.onvm(&["abort-upload", "--upload-id", &upload]));
    assert_eq!(out.trim(), format!("aborted upload {upload}"));
    {
        use onvm::rpc_api::api::BlobApiClient;
        match runtime.block_on(BlobApiClient::upload_status(
            &client,
            upload.parse().unwrap(),
        )) {
            Err(jsonrpsee::core::ClientError::Call(e)) => assert_eq!(e.code(), -32001, "{e:?}"),
            other => panic!("the upload is still there: {other:?}"),
        }
    }
    let (code, _, stderr) = run_err(node.onvm(&["abort-upload", "--upload-id", &upload]));
    assert_ne!(code, Some(0));
    assert!(stderr.contains("has no upload"), "{stderr}");
    let upload = begin(10);
    let out: serde_json::Value = serde_json::from_str(&run_ok(node.onvm(&[
        "--json",
        "abort-upload",
        "--upload-id",
        &upload,
    ])))
    .unwrap();
    assert_eq!(
        out,
        serde_json::json!({"upload_id": upload, "aborted": true})
    );

    // Every new command shows an example and is known to the shell completions.
    let mut completions = Command::new(onvm_bin());
    completions.args(["completions", "bash"]);
    let bash = run_ok(completions);
    for command in [
        "job-logs",
        "watch-receipts",
        "watch-dag",
        "dag-get",
        "receipt-evidence",
        "abort-upload",
    ] {
        let mut help = Command::new(onvm_bin());
        help.args([command, "--help"]);
        let help = run_ok(help);
        assert!(help.contains("Example:\n  onvm "), "{command}: {help}");
        assert!(bash.contains(command), "completions lack {command}");
    }
}

#[test]
fn watch_receipts_and_watch_dag_follow_the_node_and_stop_after_limit() {
    let node = start_node();
    let program = node.deploy("kvstore");
    node.put(&program, "a");
    node.put(&program, "b");

    // Text: one line per receipt, in height order.
    let out = run_ok(node.onvm(&[
        "watch-receipts",
        "--program-id",
        &program,
        "--from-seq",
        "1",
        "--limit",
        "2",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (height, line) in lines.iter().enumerate() {
        assert!(line.starts_with('#'), "{line}");
        assert!(line.contains(" rcpt"), "{line}");
        assert!(line.contains(&format!("height {height} ")), "{line}");
        assert!(
            line.contains(" ok ") && line.contains("caller anonymous"),
            "{line}"
        );
    }
    // --json: one object per line, the receipts program-receipts lists.
    let out = run_ok(node.onvm(&[
        "--json",
        "watch-receipts",
        "--from-seq",
        "1",
        "--limit",
        "2",
    ]));
    let items = json_lines(&out);
    assert_eq!(items.len(), 2, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&run_ok(node.onvm(&[
        "--json",
        "program-receipts",
        "--program-id",
        &program,
    ])))
    .unwrap();
    let listed = listed.to_string();
    for (height, item) in items.iter().enumerate() {
        assert!(item["seq"].as_u64().unwrap() > 0, "{item}");
        assert_eq!(
            item["receipt"]["receipt"]["height"], height as u64,
            "{item}"
        );
        assert_eq!(item["receipt"]["receipt"]["program_id"], program.as_str());
        let id = item["receipt"]["id"].as_str().unwrap();
        assert!(listed.contains(id), "{id} not in program-receipts");
        assert!(lines[height].contains(id), "text and JSON agree");
        assert!(
            item.get("signers").is_none(),
            "a committee of one attests nothing"
        );
    }
    assert!(items[0]["seq"].as_u64() < items[1]["seq"].as_u64());

    // Live: a watcher of new receipts only sees the next call, then stops at its limit.
    let watcher = {
        let cmd = node.onvm(&["watch-receipts", "--program-id", &program, "--limit", "1"]);
        std::thread::spawn(move || run_within(cmd, 120))
    };
    // Whether the watcher subscribes before or after the call, a later call reaches it.
    let mut height = 2;
    let out = loop {
        std::thread::sleep(Duration::from_millis(500));
        node.put(&program, &format!("k{height}"));
        if watcher.is_finished() {
            break watcher.join().unwrap();
        }
        height += 1;
        assert!(height < 60, "the watcher saw none of the new calls");
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        !out.contains("height 0 ") && !out.contains("height 1 "),
        "only new receipts: {out}"
    );

    // watch-dag from the start: the node's own announcement first, then the deploy.
    let out = run_ok(node.onvm(&["watch-dag", "--from-seq", "1", "--limit", "3"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("#{} ", i + 1)), "{line}");
        assert!(line.contains(" author "), "{line}");
    }
    assert!(lines[0].contains("NodeAnnounce"), "{out}");
    assert!(
        out.contains("ProgramDeployed") && out.contains(&program),
        "{out}"
    );
    let out = run_ok(node.onvm(&["--json", "watch-dag", "--from-seq", "1", "--limit", "3"]));
    let items = json_lines(&out);
    assert_eq!(items.len(), 3, "{out}");
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["seq"], i as u64 + 1);
        let id = item["id"].as_str().unwrap();
        assert!(lines[i].contains(id), "text and JSON agree");
        // The node dag-get prints is the one the feed carried.
        let got: serde_json::Value =
            serde_json::from_str(&run_ok(node.onvm(&["dag-get", "--id", id]))).unwrap();
        assert_eq!(got, item["node"]);
    }

    // A program the node does not know: said at once, not a silent wait.
    let (code, stdout, stderr) = run_err(node.onvm(&[
        "--json",
        "watch-receipts",
        "--program-id",
        &zeros("prog", 64),
    ]));
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("not found") && stderr.contains("onvm program-catalog"),
        "{stderr}"
    );
    let error: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON error");
    assert_eq!(error["error"]["rpc_code"], -32001, "{error}");
    let (code, _, stderr) = run_err(node.onvm(&["watch-receipts", "--program-id", "prog12"]));
    assert_eq!(code, Some(2), "{stderr}");
}

/// `onvm watch-dag --from-seq 1 | head -1`: the reader leaves after one line, while the
/// follower waits for more with nothing to write. It ends at once, quietly, as any Unix filter
/// does when its reader is gone (by SIGPIPE; the pipeline's status is head's, 0).
#[test]
fn stream_commands_end_quietly_when_their_reader_leaves() {
    use std::os::unix::process::ExitStatusExt;
    let node = start_node();

    // The history is shown (it fits the pipe), then the follower idles; the reader leaves.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let mut cmd = node.onvm(&["watch-dag", "--from-seq", "1"]);
    let mut child = cmd.stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
    drop(cmd);
    let mut first = String::new();
    BufReader::new(reader).read_line(&mut first).unwrap();
    assert!(
        first.starts_with("#1 ") && first.contains("NodeAnnounce"),
        "{first}"
    );
    // (BufReader took the reader and is dropped here: the pipe has no reader any more.)
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("watch-dag kept running after its reader left");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "quietly: {stderr}");
    assert_eq!(status.signal(), Some(SIGPIPE), "{status:?}");

    // A follower that never wrote a line (no new receipts) notices too.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    let mut cmd = node.onvm(&["--json", "watch-receipts"]);
    let mut child = cmd.stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
    drop(cmd);
    std::thread::sleep(Duration::from_secs(1));
    drop(reader);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("watch-receipts kept running after its reader left");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.signal(), Some(SIGPIPE), "{status:?}");

    // Through a shell, as a user types it: the pipeline succeeds and says nothing else.
    let script = format!(
        "'{}' --rpc '{}' watch-dag --from-seq 1 | head -1",
        onvm_bin().display(),
        node.rpc
    );
    let mut sh = Command::new("bash");
    sh.args(["-c", &script]).env_remove("RUST_LOG");
    let out = run_within(sh, 60);
    assert!(out.status.success(), "{:?}", out.status);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("#1 "), "{stdout}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// On a committee, every receipt carries its signers: `watch-receipts` names them, by the
/// endpoint ids `program-committee` lists.
#[test]
fn watch_receipts_names_the_committee_members_that_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = Command::new(onvm_bin());
    dev.args(["dev", "--nodes", "3", "--rpc", "127.0.0.1:0"])
        .env("ONVM_DEV_DIR", tmp.path().join("dev"))
        .env_remove("ONVM_IDENTITY_PASSPHRASE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = dev.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let _processes = Processes(vec![child]);
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let rpc = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("rpc:").map(|u| u.trim().to_string()))
        .expect("dev prints its RPC URL");
    // Keep draining stdout so the nodes never block on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let node = Node {
        rpc,
        dir: tmp,
        _processes: Processes::default(),
    };
    // The committee is chosen at deploy from the nodes announced in the DAG: wait for all three.
    let mut announced = 0;
    for _ in 0..300 {
        let out = run_ok(node.onvm(&["--json", "watch-dag", "--from-seq", "1", "--limit", "3"]));
        announced = json_lines(&out)
            .iter()
            .filter(|n| n["node"]["body"]["payload"]["NodeAnnounce"].is_object())
            .count();
        if announced == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(announced, 3, "the three dev nodes announced themselves");
    let program = node.deploy("kvstore");
    let committee: serde_json::Value = serde_json::from_str(&run_ok(node.onvm(&[
        "program-committee",
        "--program-id",
        &program,
    ])))
    .unwrap();
    let members: Vec<String> = committee["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["endpoint_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(members.len(), 3, "{committee}");
    node.put(&program, "a");

    let watch = [
        "watch-receipts",
        "--program-id",
        &program,
        "--from-seq",
        "1",
        "--limit",
        "1",
    ];
    let out = run_ok(node.onvm(&watch));
    assert!(out.contains("  signers 3: "), "{out}");
    for m in &members {
        assert!(out.contains(&m[..10]), "{m} missing: {out}");
    }
    let item = &json_lines(&run_ok(node.onvm(&[&["--json"][..], &watch].concat())))[0];
    let mut signers: Vec<String> = item["signers"]
        .as_array()
        .expect("signers")
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    signers.sort();
    let mut expected = members.clone();
    expected.sort();
    assert_eq!(signers, expected);
}
