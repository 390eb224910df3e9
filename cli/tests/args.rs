//! The `onvm` binary's argument handling and exit codes, without a node.
//! (Also makes `cargo test --workspace` build the binary the workspace-level CLI tests run.)

use std::process::{Command, Stdio};

fn onvm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_onvm"))
        .args(args)
        .stdin(Stdio::null())
        .env_remove("ONVM_RPC")
        .output()
        .expect("run onvm")
}

#[test]
fn help_lists_the_commands() {
    let out = onvm(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "init",
        "run-node",
        "dev",
        "node-info",
        "health",
        "upload-blob",
        "get-blob",
        "list-blobs",
    ] {
        assert!(text.contains(cmd), "missing {cmd} in\n{text}");
    }
}

#[test]
fn unreachable_node_exits_3_with_one_line() {
    // Port 1 on loopback: nothing listens there.
    let out = onvm(&["--rpc", "127.0.0.1:1", "health"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: cannot reach the node at ws://127.0.0.1:1"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1);
}

#[test]
fn bad_arguments_are_usage_errors() {
    let out = onvm(&["--rpc", "nonsense", "health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not host:port"));
    let out = onvm(&["get-blob", "--id", "prog1234", "--out", "-"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed blob id"));
}
