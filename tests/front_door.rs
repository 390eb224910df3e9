//! The RPC front door, tried as an attacker and as a browser would: foreign origins and hosts,
//! tokens with scopes (and forged, expired, revoked ones), the operator's cookie, idle sockets
//! that never answer pings, and one address trying to take every connection slot.

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use common::raw::{http, read_frame, ws_call, ws_connect, ws_handshake};
use onvm::rpc_api::api::{NodeApiClient, ProgramApiClient, TokenApiClient};
use onvm::rpc_api::auth::{Scope, TokenRequest};
use onvm::rpc_api::error as codes;
use onvm::rpc_api::program::DeployRequest;

fn error_code(response: &serde_json::Value) -> Option<i64> {
    response["error"]["code"].as_i64()
}

#[tokio::test]
async fn foreign_origins_and_hosts_are_refused_and_admitted_origins_get_cors() {
    let node = TestNode::start_with(&["rpc.allowed_origins=[\"https://app.example\"]"]).await;
    let addr = node.node().rpc_addr();
    let port = addr.port().to_string();

    // A web page elsewhere cannot open a WebSocket, nor POST.
    let evil = ws_handshake(addr, "/", &[("Origin", "http://evil.example")], None).await;
    assert_eq!(evil.status, 403, "{}", evil.head);
    assert!(evil.body.contains("rpc.allowed_origins"), "{}", evil.body);
    let (status, _, _) = http(
        addr,
        "POST",
        &[("Origin", "http://evil.example")],
        r#"{"jsonrpc":"2.0","id":1,"method":"node_info"}"#,
    )
    .await;
    assert_eq!(status, 403);

    // DNS rebinding: a name that resolves to loopback is still not this node's name.
    let rebound = ws_handshake(
        addr,
        "/",
        &[("Host", &format!("rebind.evil.example:{port}"))],
        None,
    )
    .await;
    assert_eq!(rebound.status, 403);
    assert!(
        rebound.body.contains("rpc.allowed_hosts"),
        "{}",
        rebound.body
    );
    let localhost = ws_handshake(addr, "/", &[("Host", &format!("localhost:{port}"))], None).await;
    assert_eq!(localhost.status, 101, "{}", localhost.head);

    // The admitted origin: preflight, then a POST it may read, then a WebSocket.
    let (status, head, _) = http(
        addr,
        "OPTIONS",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 204, "{head}");
    let head = head.to_lowercase();
    assert!(head.contains("access-control-allow-origin: https://app.example"));
    assert!(head.contains("access-control-allow-headers: content-type, authorization"));
    let (status, head, body) = http(
        addr,
        "POST",
        &[("Origin", "https://app.example")],
        r#"{"jsonrpc":"2.0","id":1,"method":"node_health"}"#,
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_lowercase()
            .contains("access-control-allow-origin: https://app.example")
    );
    assert!(body.contains("\"ready\""), "{body}");
    let app = ws_handshake(addr, "/", &[("Origin", "https://app.example")], None).await;
    assert_eq!(app.status, 101);

    // The node's own pages (same origin as the URL dialed).
    let own = ws_handshake(
        addr,
        "/",
        &[("Origin", &format!("http://127.0.0.1:{port}"))],
        None,
    )
    .await;
    assert_eq!(own.status, 101);
    node.stop().await;
}

#[tokio::test]
async fn each_scope_allows_exactly_its_methods_and_tokens_die_when_revoked() {
    let node = TestNode::start().await;
    let addr = node.node().rpc_addr();
    // The operator (cookie) may do anything, including creating tokens.
    let operator = common::ws_client(&node.url()).await;

    // Without a token: reads only, and the refusal says what to do.
    let mut anonymous = ws_connect(addr, None).await;
    let info = ws_call(&mut anonymous, "node_info", "[]").await;
    assert!(info["result"]["endpoint_id"].is_string(), "{info}");
    let deploy = ws_call(
        &mut anonymous,
        "program_deploy",
        r#"[{"wasm_base64":"AA=="}]"#,
    )
    .await;
    assert_eq!(
        error_code(&deploy),
        Some(codes::FORBIDDEN as i64),
        "{deploy}"
    );
    let message = deploy["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("needs scope `deploy`") && message.contains("onvm token create"),
        "{message}"
    );
    assert_eq!(deploy["error"]["data"]["kind"], "scope_required");
    // Inside a batch too, call by call.
    let (_, _, body) = http(
        addr,
        "POST",
        &[],
        r#"[{"jsonrpc":"2.0","id":1,"method":"node_health"},{"jsonrpc":"2.0","id":2,"method":"program_deploy","params":[{"wasm_base64":"AA=="}]}]"#,
    )
    .await;
    let answers: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let by_id = |id: i64| answers.iter().find(|a| a["id"] == id).unwrap().clone();
    assert!(by_id(1)["result"]["ready"].is_boolean(), "{body}");
    assert_eq!(
        error_code(&by_id(2)),
        Some(codes::FORBIDDEN as i64),
        "{body}"
    );

    // One representative call per method family, with parameters that are valid enough to
    // get past parsing; what matters is whether the answer is FORBIDDEN.
    let calls: &[(&str, &str, Scope)] = &[
        ("node_info", "[]", Scope::Read),
        ("blob_list", "[]", Scope::Read),
        ("program_list", "[]", Scope::Read),
        ("dag_heads", "[]", Scope::Read),
        ("peer_list", "[]", Scope::Read),
        ("job_list", "[]", Scope::Read),
        ("program_execute", r#"["prog00", "AA=="]"#, Scope::Execute),
        ("job_cancel", r#"["job00"]"#, Scope::Execute),
        (
            "program_deploy",
            r#"[{"wasm_base64":"AA=="}]"#,
            Scope::Deploy,
        ),
        ("blob_put", r#"["aGk="]"#, Scope::Upload),
        ("blob_upload_begin", "[10]", Scope::Upload),
        ("peer_connect", r#"["not-a-ticket"]"#, Scope::Peers),
        ("token_list", "[]", Scope::Admin),
    ];
    for scope in Scope::ALL {
        let token = TokenApiClient::create(
            &operator,
            TokenRequest {
                scopes: vec![scope],
                expires_in_secs: None,
                origins: vec![],
                label: Some(format!("only {scope}")),
            },
        )
        .await
        .unwrap();
        let path = format!("/?token={}", token.token);
        let handshake = ws_handshake(addr, &path, &[], None).await;
        assert_eq!(handshake.status, 101, "{}", handshake.head);
        let mut client = handshake.stream;
        for (method, params, needs) in calls {
            let answer = ws_call(&mut client, method, params).await;
            let forbidden = error_code(&answer) == Some(codes::FORBIDDEN as i64);
            assert_eq!(
                forbidden,
                *needs != scope,
                "token with scope {scope} calling {method}: {answer}"
            );
        }
    }

    // A token for a dApp: read + execute, revoked while its connection is open.
    let dapp = TokenApiClient::create(
        &operator,
        TokenRequest {
            scopes: vec![Scope::Read, Scope::Execute],
            expires_in_secs: Some(3600),
            origins: vec![],
            label: Some("dapp".into()),
        },
    )
    .await
    .unwrap();
    let listed = TokenApiClient::list(&operator).await.unwrap();
    assert!(listed.iter().any(|t| t.id == dapp.info.id));
    assert!(
        !serde_json::to_string(&listed)
            .unwrap()
            .contains(dapp.token.rsplit('_').next().unwrap()),
        "token_list must never show a secret"
    );
    let mut open = ws_handshake(
        addr,
        "/",
        &[("Authorization", &format!("Bearer {}", dapp.token))],
        None,
    )
    .await
    .stream;
    let before = ws_call(&mut open, "job_cancel", r#"["job00"]"#).await;
    assert_ne!(
        error_code(&before),
        Some(codes::FORBIDDEN as i64),
        "{before}"
    );
    assert!(
        TokenApiClient::revoke(&operator, dapp.info.id.clone())
            .await
            .unwrap()
    );
    let after = ws_call(&mut open, "job_cancel", r#"["job00"]"#).await;
    assert_eq!(error_code(&after), Some(codes::FORBIDDEN as i64), "{after}");
    assert!(
        after["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    let again = ws_handshake(addr, &format!("/?token={}", dapp.token), &[], None).await;
    assert_eq!(again.status, 401);

    // Forged and malformed tokens are refused at the door, with a reason.
    let forged = format!("onvm_{}_{}", dapp.info.id, "00".repeat(32));
    for bad in [forged.as_str(), "onvm_nope", "hunter2"] {
        let h = ws_handshake(
            addr,
            "/",
            &[("Authorization", &format!("Bearer {bad}"))],
            None,
        )
        .await;
        assert_eq!(h.status, 401, "{bad}: {}", h.head);
        assert!(h.body.contains("refused"), "{}", h.body);
    }

    // The operator's cookie still deploys.
    let deployed = ProgramApiClient::deploy(
        &operator,
        DeployRequest {
            wasm_base64: Some(common::program_wasm("echo").into()),
            ..Default::default()
        },
    )
    .await;
    assert!(deployed.is_ok(), "{deployed:?}");
    node.stop().await;
}

#[tokio::test]
async fn a_token_bound_to_an_origin_works_only_from_that_origin_and_expires() {
    let node = TestNode::start_with(&["rpc.allowed_origins=[\"*\"]"]).await;
    let addr = node.node().rpc_addr();
    let operator = common::ws_client(&node.url()).await;
    let bound = TokenApiClient::create(
        &operator,
        TokenRequest {
            scopes: vec![Scope::Read, Scope::Execute],
            expires_in_secs: Some(2),
            origins: vec!["https://app.example".into()],
            label: None,
        },
    )
    .await
    .unwrap();
    let path = format!("/?token={}", bound.token);
    let from_app = ws_handshake(addr, &path, &[("Origin", "https://app.example")], None).await;
    assert_eq!(from_app.status, 101);
    let from_elsewhere =
        ws_handshake(addr, &path, &[("Origin", "https://other.example")], None).await;
    assert_eq!(from_elsewhere.status, 403);
    // A client that names no origin (a copied page token in a script) is refused too (a
    // token that outlives this test's other steps, so only the origin decides).
    let lasting = TokenApiClient::create(
        &operator,
        TokenRequest {
            scopes: vec![Scope::Read],
            expires_in_secs: Some(600),
            origins: vec!["https://app.example".into()],
            label: None,
        },
    )
    .await
    .unwrap();
    let from_no_page = ws_handshake(addr, &format!("/?token={}", lasting.token), &[], None).await;
    assert_eq!(from_no_page.status, 403, "{}", from_no_page.body);
    assert!(
        from_no_page.body.contains("names none"),
        "{}",
        from_no_page.body
    );
    let mut app = from_app.stream;
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let late = ws_handshake(addr, &path, &[("Origin", "https://app.example")], None).await;
    assert_eq!(late.status, 401);
    assert!(late.body.contains("expired"), "{}", late.body);
    // The connection opened before expiry loses its scopes too.
    let answer = ws_call(&mut app, "job_cancel", r#"["job00"]"#).await;
    assert_eq!(
        error_code(&answer),
        Some(codes::FORBIDDEN as i64),
        "{answer}"
    );
    node.stop().await;
}

#[tokio::test]
async fn idle_sockets_that_never_answer_pings_are_reaped_and_free_their_slots() {
    let node = TestNode::start_with(&[
        "rpc.max_connections=4",
        "rpc.ping_interval_ms=200",
        "rpc.idle_timeout_ms=400",
    ])
    .await;
    let addr = node.node().rpc_addr();
    // Four sockets that complete the handshake and then never read or answer a ping.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(ws_connect(addr, None).await);
    }
    let locked_out = ws_handshake(addr, "/", &[], None).await;
    assert_eq!(locked_out.status, 429, "{}", locked_out.head);
    // Each idle socket is closed by the node (EOF or a close frame, after pings it ignored).
    let started = Instant::now();
    for mut socket in idle {
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match read_frame(&mut socket).await {
                    None | Some((8, _)) => break,
                    Some(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "an idle socket was not reaped");
    }
    println!(
        "4 idle sockets reaped {} ms after the lockout",
        started.elapsed().as_millis()
    );
    // The slots are free again: a real client connects and is served.
    let mut fresh = None;
    for _ in 0..50 {
        match jsonrpsee::ws_client::WsClientBuilder::default()
            .build(node.url())
            .await
        {
            Ok(c) => {
                fresh = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let fresh = fresh.expect("a fresh client connects once idle sockets are reaped");
    assert!(NodeApiClient::health(&fresh).await.unwrap().ready);
    node.stop().await;
}

#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let node = TestNode::start_with(&["rpc.max_connections_per_ip=2"]).await;
    let addr = node.node().rpc_addr();
    let first = ws_connect(addr, None).await;
    let _second = ws_connect(addr, None).await;
    let third = ws_handshake(addr, "/", &[], None).await;
    assert_eq!(third.status, 429);
    assert!(
        third.body.contains("rpc.max_connections_per_ip = 2"),
        "{}",
        third.body
    );
    // Closing one gives its share back.
    drop(first);
    let mut admitted = false;
    for _ in 0..50 {
        if ws_handshake(addr, "/", &[], None).await.status == 101 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a closed connection's slot was never returned");
    node.stop().await;
}

#[tokio::test]
async fn a_client_over_its_rate_gets_busy_with_a_retry_time_and_others_are_unaffected() {
    let node = TestNode::start_with(&[
        "rpc.calls_per_sec=5",
        "rpc.calls_burst=5",
        "rpc.client_calls_per_sec=8",
        "rpc.client_calls_burst=8",
    ])
    .await;
    let addr = node.node().rpc_addr();
    let operator = common::ws_client(&node.url()).await;
    let noisy = common::new_token(&operator, &[Scope::Read], "noisy").await;
    let quiet = common::new_token(&operator, &[Scope::Read], "quiet").await;
    async fn connect(addr: std::net::SocketAddr, token: &str) -> tokio::net::TcpStream {
        let bearer = format!("Bearer {token}");
        ws_handshake(addr, "/", &[("Authorization", &bearer)], None)
            .await
            .stream
    }
    let mut noisy_a = connect(addr, &noisy).await;
    let mut noisy_b = connect(addr, &noisy).await;
    let mut quiet_conn = connect(addr, &quiet).await;

    // One connection: a burst of 5, then busy with the wait named.
    let mut busy = Vec::new();
    for _ in 0..12 {
        let answer = ws_call(&mut noisy_a, "node_health", "[]").await;
        if error_code(&answer) == Some(codes::BUSY as i64) {
            busy.push(answer);
        }
    }
    assert!(busy.len() >= 6, "{} of 12 calls were limited", busy.len());
    let first = &busy[0]["error"];
    assert_eq!(first["data"]["kind"], "rate_limited");
    assert!(first["data"]["retry_after_ms"].as_u64().unwrap() > 0);
    assert_eq!(first["data"]["config_key"], "rpc.calls_per_sec");
    // The same token on a second connection has its own connection budget but shares the
    // client's (8, of which the first connection used 5): 3 more calls, then busy.
    for i in 0..3 {
        let answer = ws_call(&mut noisy_b, "node_health", "[]").await;
        assert!(answer["result"]["ready"].is_boolean(), "call {i}: {answer}");
    }
    let on_b = ws_call(&mut noisy_b, "node_health", "[]").await;
    assert_eq!(error_code(&on_b), Some(codes::BUSY as i64), "{on_b}");
    assert_eq!(
        on_b["error"]["data"]["config_key"],
        "rpc.client_calls_per_sec"
    );
    // Another client is unaffected, and the operator is never limited.
    for _ in 0..5 {
        let answer = ws_call(&mut quiet_conn, "node_health", "[]").await;
        assert!(answer["result"]["ready"].is_boolean(), "{answer}");
    }
    for _ in 0..50 {
        NodeApiClient::health(&operator).await.unwrap();
    }
    // After the advertised wait, the limited connection is served again.
    let wait = first["data"]["retry_after_ms"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(wait.max(250) + 250)).await;
    let again = ws_call(&mut noisy_a, "node_health", "[]").await;
    assert!(again["result"]["ready"].is_boolean(), "{again}");
    node.stop().await;
}

/// Parameters a method does not take are refused with -32602 naming them, never ignored: a
/// typo like `option` for `options` would otherwise commit a write the caller meant as a dry
/// run. Checked from a raw client, by name and by position.
#[tokio::test]
async fn unknown_and_extra_params_are_refused_by_name() {
    let node = TestNode::start().await;
    let addr = node.node().rpc_addr();
    let cookie = common::cookie_of(&node.url()).unwrap();
    let auth = format!("Bearer {cookie}");
    let handshake = ws_handshake(addr, "/", &[("Authorization", auth.as_str())], None).await;
    assert_eq!(handshake.status, 101, "{}", handshake.body);
    let mut ws = handshake.stream;
    let wasm = common::program_wasm("echo");
    let deployed = ws_call(
        &mut ws,
        "program_deploy",
        &format!(
            r#"{{"request":{{"wasm_base64":"{}"}}}}"#,
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &wasm)
        ),
    )
    .await;
    let program = deployed["result"]["program_id"]
        .as_str()
        .unwrap()
        .to_string();
    let typo = ws_call(
        &mut ws,
        "program_execute",
        &format!(
            r#"{{"program_id":"{program}","input_base64":"aGk=","option":{{"read_only":true}}}}"#
        ),
    )
    .await;
    assert_eq!(
        error_code(&typo),
        Some(codes::INVALID_PARAMS as i64),
        "{typo}"
    );
    let message = typo["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`option`") && message.contains("`options`"),
        "{message}"
    );
    assert_eq!(typo["error"]["data"]["kind"], "unknown_params", "{typo}");
    // Nothing was committed by the refused call.
    let info = ws_call(&mut ws, "program_info", &format!(r#"["{program}"]"#)).await;
    assert_eq!(info["result"]["height"], 0, "{info}");
    let extra = ws_call(&mut ws, "node_info", "[1]").await;
    assert_eq!(
        error_code(&extra),
        Some(codes::INVALID_PARAMS as i64),
        "{extra}"
    );
    let extra = ws_call(&mut ws, "program_info", &format!(r#"["{program}", 2]"#)).await;
    assert_eq!(
        error_code(&extra),
        Some(codes::INVALID_PARAMS as i64),
        "{extra}"
    );
    // The right names still work.
    let ok = ws_call(
        &mut ws,
        "program_execute",
        &format!(
            r#"{{"program_id":"{program}","input_base64":"aGk=","options":{{"read_only":true}}}}"#
        ),
    )
    .await;
    assert!(ok["result"].is_object(), "{ok}");
    node.stop().await;
}

/// `onvm dev` is locked like a Jupyter server: its own CLI (cookie file) and the browser URL it
/// prints get in; a web page elsewhere, or a local process with no credentials, cannot deploy,
/// store or mint tokens; named origins are admitted (still needing a token); it refuses to
/// serve anything but loopback.
#[tokio::test]
async fn a_dev_node_admits_its_cli_and_its_printed_url_and_no_one_else() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("run");
    let onvm = |args: &[&str]| {
        let mut command = std::process::Command::new(common::onvm_bin());
        command
            .args(args)
            .env("ONVM_RUNTIME_DIR", &runtime)
            .env("HOME", tmp.path())
            .env_remove("ONVM_TOKEN")
            .stdin(std::process::Stdio::null());
        command
    };
    let dev_dir = tmp.path().join("dev");
    let mut dev = onvm(&[
        "dev",
        "--rpc",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dev_dir.to_str().unwrap(),
        "--allow-origin",
        "http://127.0.0.1:5173",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let banner = common::banner_of(&mut dev);
    let rpc = banner["rpc"].clone();
    let web = banner["web"].clone();
    let addr: std::net::SocketAddr = rpc.trim_start_matches("ws://").parse().unwrap();
    let token = web
        .split_once("?token=")
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| panic!("the dev URL carries a token: {web}"));
    let deploy = r#"{"jsonrpc":"2.0","id":1,"method":"program_deploy","params":[{}]}"#;
    let mint =
        r#"{"jsonrpc":"2.0","id":1,"method":"token_create","params":[{"scopes":["admin"]}]}"#;

    // A web page on another site: refused at the door, WebSocket or POST.
    let evil = ws_handshake(addr, "/", &[("Origin", "http://evil.example")], None).await;
    assert_eq!(evil.status, 403, "{}", evil.head);
    let (status, _, _) = http(addr, "POST", &[("Origin", "http://evil.example")], mint).await;
    assert_eq!(status, 403);
    // A local process with no credentials: reads only.
    for call in [deploy, mint] {
        let (status, _, body) = http(addr, "POST", &[], call).await;
        assert_eq!(status, 200);
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error_code(&answer), Some(codes::FORBIDDEN as i64), "{body}");
    }
    // The printed URL: the dashboard, and every method with its token.
    let (status, _, _) = common::raw::http_get(addr, "GET", &format!("/?token={token}"), &[]).await;
    assert_eq!(status, 200);
    let bearer = format!("Bearer {token}");
    let (_, _, body) = http(addr, "POST", &[("Authorization", &bearer)], mint).await;
    let minted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(minted["result"]["token"].is_string(), "{body}");
    // A named origin is admitted, and still needs a token to write.
    let named = [("Origin", "http://127.0.0.1:5173")];
    let (status, head, body) = http(addr, "POST", &named, deploy).await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: http://127.0.0.1:5173"),
        "{head}"
    );
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error_code(&answer), Some(codes::FORBIDDEN as i64), "{body}");
    // The CLI on the same machine needs no setup: it finds the cookie.
    let listed = onvm(&["--rpc", &rpc, "--json", "token", "list"])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    let _ = std::process::Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status();
    assert!(dev.wait().unwrap().success());

    // Loopback only, whatever the flag says.
    let open = onvm(&[
        "dev",
        "--rpc",
        "0.0.0.0:0",
        "--data-dir",
        dev_dir.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!open.status.success());
    let said = String::from_utf8_lossy(&open.stderr);
    assert!(said.contains("loopback only"), "{said}");
    // A malformed origin is a clear error, not a silently open door.
    let bad = onvm(&[
        "dev",
        "--data-dir",
        dev_dir.to_str().unwrap(),
        "--allow-origin",
        "evil.example",
    ])
    .output()
    .unwrap();
    assert!(!bad.status.success());
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(said.contains("rpc.allowed_origins"), "{said}");
}

/// A hostile local process with no credentials holds every slot it can get from four loopback
/// addresses (WebSockets that never call) and trickles request bodies from a fifth: the
/// operator's CLI still gets answers at once through its reserved slots; a token client gets
/// in within a second once the flood has sat idle for `rpc.pressure_idle_ms` (the longest idle
/// socket gives up its seat); and every socket that carries no call is closed after
/// `rpc.idle_connection_ms`, pings or not.
#[tokio::test]
async fn a_flood_of_idle_and_slow_connections_never_locks_out_the_operator() {
    use common::raw::{connect_from, handshake_on};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = TestNode::start_with(&[
        "rpc.max_connections=20",
        "rpc.max_connections_per_ip=8",
        "rpc.operator_connections=4",
        // Generous, so a slow machine builds the whole flood before any of it counts as idle.
        "rpc.idle_connection_ms=8000",
        "rpc.pressure_idle_ms=3000",
    ])
    .await;
    let addr = node.node().rpc_addr();
    let operator = node.client().await;
    let reader = common::new_token(&operator, &[Scope::Read], "reader").await;
    drop(operator);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut held = Vec::new();
    let mut refused = 0;
    for host in 2..=5u8 {
        let source = std::net::IpAddr::from([127, 0, 0, host]);
        for _ in 0..8 {
            let stream = connect_from(source, addr).await;
            let h = handshake_on(stream, addr, "/", &[]).await;
            match h.status {
                101 => held.push(h.stream),
                429 => refused += 1,
                other => panic!("unexpected {other}: {}{}", h.head, h.body),
            }
        }
    }
    assert_eq!(held.len(), 20, "the node-wide cap holds: {refused} refused");
    assert!(refused >= 12);
    // Slow bodies from a fifth address: headers, then a trickle that never completes.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from(std::net::IpAddr::from([127, 0, 0, 6]), addr).await;
        s.write_all(
            format!("POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"jsonrpc\"")
                .as_bytes(),
        )
        .await
        .unwrap();
        slow.push(s);
    }

    // The operator (cookie) is served at once, over every cap.
    let started = Instant::now();
    let operator = node.client().await;
    NodeApiClient::info(&operator)
        .await
        .expect("the operator gets in during the flood");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // A token client that is not the operator, while the flood is fresh, is told why.
    let bearer = format!("Bearer {reader}");
    let (status, _, body) = http(
        addr,
        "POST",
        &[("Authorization", &bearer)],
        r#"{"jsonrpc":"2.0","id":1,"method":"node_info"}"#,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("rpc.max_connections"), "{body}");
    // Once the flood has sat idle for pressure_idle_ms, a newcomer takes the seat of the
    // longest idle socket: in within a second, long before idle_connection_ms.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let asked = Instant::now();
    let (status, _, body) = http(
        addr,
        "POST",
        &[("Authorization", &bearer)],
        r#"{"jsonrpc":"2.0","id":1,"method":"node_info"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    println!(
        "a token client got in during the flood after {:?}",
        asked.elapsed()
    );

    // The idle sockets and the trickled bodies are closed within idle_connection_ms (+ a tick).
    let deadline = Instant::now() + Duration::from_secs(10);
    for mut stream in held.into_iter().chain(slow) {
        let mut buf = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                // Pings, or a close frame: keep reading until the socket ends.
                Ok(Ok(_)) => continue,
                Err(_) => panic!("an idle connection was still open after 10 s"),
            }
        }
    }
    println!("idle connections closed after {:?}", started.elapsed());
    // And the slots are back for everyone.
    let (status, _, body) = http(
        addr,
        "POST",
        &[("Authorization", &bearer)],
        r#"{"jsonrpc":"2.0","id":1,"method":"node_info"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The operator's own connection is idle too by now: it reconnects on its next call.
    drop(operator);
    NodeApiClient::info(&node.client().await)
        .await
        .expect("operator again");
}

/// 1,100 idle keep-alive connections (what exhausted the node's 1,024 descriptors before) get
/// seats up to the caps, the rest are closed at once, and uploads still work.
#[tokio::test]
async fn a_thousand_idle_keep_alives_do_not_exhaust_the_node() {
    let node = TestNode::start_with(&["rpc.idle_connection_ms=60000"]).await;
    let addr = node.node().rpc_addr();
    let mut idle = Vec::new();
    for i in 0..1_100u32 {
        let source = std::net::IpAddr::from([127, 0, 1, (i % 200) as u8 + 1]);
        idle.push(common::raw::connect_from(source, addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let operator = node.client().await;
    let stat =
        onvm::rpc_api::api::BlobApiClient::put(&operator, b"still here".to_vec().into(), None)
            .await
            .expect("blob_put works with 1,100 idle connections open");
    assert_eq!(stat.size, 10);
    let health = onvm::rpc_api::api::NodeApiClient::health(&operator)
        .await
        .unwrap();
    assert!(health.ready, "{health:?}");
    drop(idle);
}

/// Jobs and uploads belong to the client that created them: another token with the same
/// scopes cannot cancel the job or append to, read, finish or abort the upload; the owner and
/// an admin can.
#[tokio::test]
async fn jobs_and_uploads_belong_to_the_client_that_created_them() {
    use onvm::rpc_api::api::{BlobApiClient, JobApiClient};
    let node = TestNode::start().await;
    let operator = node.client().await;
    let scopes = [Scope::Read, Scope::Execute, Scope::Upload, Scope::Deploy];
    let alice = common::ws_client_as(
        &node.url(),
        Some(&common::new_token(&operator, &scopes, "alice").await),
    )
    .await;
    let mallory = common::ws_client_as(
        &node.url(),
        Some(&common::new_token(&operator, &scopes, "mallory").await),
    )
    .await;
    let admin = common::ws_client_as(
        &node.url(),
        Some(&common::new_token(&operator, &[Scope::Admin, Scope::Execute], "admin").await),
    )
    .await;
    let not_owner = |e: jsonrpsee::core::client::Error| match e {
        jsonrpsee::core::client::Error::Call(e) => {
            assert_eq!(e.code(), codes::FORBIDDEN);
            assert!(
                e.message().contains("belongs to another client"),
                "{}",
                e.message()
            );
        }
        other => panic!("expected not_owner, got {other}"),
    };

    // A job that runs until cancelled.
    let program = ProgramApiClient::deploy(
        &alice,
        DeployRequest {
            wasm_base64: Some(common::program_wasm("job_test").into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .program_id;
    let job = JobApiClient::submit(
        &alice,
        onvm::rpc_api::jobs::SubmitJob {
            program_id: program,
            request_id: "forever".into(),
            input_base64: Some(common::example("job-test", "stress_forever.json").into()),
            input_blob: None,
            entrypoint: None,
            max_retries: Some(0),
            timeout_ms: None,
            fuel: None,
            metadata: None,
            signed: None,
        },
    )
    .await
    .unwrap()
    .job
    .job_id;
    not_owner(JobApiClient::cancel(&mallory, job).await.unwrap_err());
    let cancelled = JobApiClient::cancel(&alice, job)
        .await
        .expect("the owner cancels");
    assert!(
        cancelled.cancel_requested || cancelled.status.is_terminal(),
        "{cancelled:?}"
    );
    JobApiClient::cancel(&admin, job)
        .await
        .expect("an admin may too");

    // An upload.
    let upload = BlobApiClient::upload_begin(&alice, 8, None)
        .await
        .unwrap()
        .upload_id;
    not_owner(
        BlobApiClient::upload_append(&mallory, upload.clone(), 0, b"evil".to_vec().into())
            .await
            .unwrap_err(),
    );
    not_owner(
        BlobApiClient::upload_status(&mallory, upload.clone())
            .await
            .unwrap_err(),
    );
    not_owner(
        BlobApiClient::upload_abort(&mallory, upload.clone())
            .await
            .unwrap_err(),
    );
    not_owner(
        BlobApiClient::upload_finish(&mallory, upload.clone(), None)
            .await
            .unwrap_err(),
    );
    BlobApiClient::upload_append(&alice, upload.clone(), 0, b"ours".to_vec().into())
        .await
        .expect("the owner appends");
    assert_eq!(
        BlobApiClient::upload_status(&alice, upload.clone())
            .await
            .unwrap()
            .received,
        4
    );
    assert!(
        BlobApiClient::upload_abort(&operator, upload)
            .await
            .expect("the operator aborts")
    );
}

/// Subscribers are never closed for idleness, so they have a cap of their own: connections
/// beyond `rpc.max_subscriber_connections` cannot subscribe (more subscriptions on a connection
/// that has one are fine), and a subscriber's place comes back when it disconnects.
#[tokio::test]
async fn subscriber_connections_have_a_cap_of_their_own() {
    use onvm::rpc_api::api::DagApiClient;
    let node = TestNode::start_with(&["rpc.max_subscriber_connections=2"]).await;
    let first = node.client().await;
    let second = node.client().await;
    let third = node.client().await;
    let _a = DagApiClient::subscribe_nodes(&first, None).await.unwrap();
    let _b = DagApiClient::subscribe_nodes(&second, None).await.unwrap();
    let _b2 = DagApiClient::subscribe_nodes(&second, Some(1))
        .await
        .expect("a second subscription on a subscriber connection");
    match DagApiClient::subscribe_nodes(&third, None).await {
        Err(jsonrpsee::core::client::Error::Call(e)) => {
            assert_eq!(e.code(), codes::LIMIT_EXCEEDED);
            assert!(
                e.message().contains("rpc.max_subscriber_connections"),
                "{}",
                e.message()
            );
        }
        other => panic!("expected too_many_subscribers, got {:?}", other.map(|_| ())),
    }
    // Calls on that connection still work, and a place comes back with its holder.
    NodeApiClient::info(&third)
        .await
        .expect("calls are not subscriptions");
    drop((_a, first));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match DagApiClient::subscribe_nodes(&third, None).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the place never came back: {e}"),
        }
    }
}
