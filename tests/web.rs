//! What the RPC port serves to plain HTTP: the dashboard, the JavaScript client and the wasm
//! verifier, Prometheus metrics, health and readiness, behind the same front door as calls;
//! and `rpc.discover`, the OpenRPC description of every method.

mod common;

use common::raw::http_get;
use common::{TestNode, new_token};
use jsonrpsee::core::client::ClientT;
use onvm::rpc_api::api::NodeApiClient;
use onvm::rpc_api::auth::Scope;

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn metrics_health_and_readiness_speak_to_operators_and_their_tools() {
    let node = TestNode::start().await;
    let addr = node.node().rpc_addr();
    let client = node.client().await;
    for _ in 0..3 {
        client.info().await.expect("node_info");
    }

    let (status, head, body) = http_get(addr, "GET", "/metrics", &[]).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(body).unwrap();
    for line in text.lines() {
        let sample = line
            .rsplit_once(' ')
            .is_some_and(|(name, value)| !name.is_empty() && value.parse::<f64>().is_ok());
        assert!(
            line.starts_with("# ") || sample,
            "not Prometheus text: {line}"
        );
    }
    let count = text
        .lines()
        .find(|l| l.starts_with("onvm_rpc_call_duration_seconds_count{method=\"node_info\"}"))
        .unwrap_or_else(|| panic!("no node_info latency in:\n{text}"));
    assert!(count.ends_with(" 3"), "{count}");
    for family in [
        "onvm_uptime_seconds ",
        "onvm_calls_executed_total ",
        "onvm_jobs_pending ",
        "onvm_dag_nodes ",
        "onvm_peers_known ",
        "onvm_decisions_refused_total ",
        "onvm_vm_call_duration_seconds_count ",
        "onvm_subscription_send_wait_seconds_count ",
        "onvm_subscriptions_lagged_total ",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }

    let (status, head, body) = http_get(addr, "GET", "/health", &[]).await;
    assert_eq!(status, 200, "{head}");
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["live"], true);
    let (status, _, body) = http_get(addr, "GET", "/ready", &[]).await;
    assert_eq!(status, 200);
    let ready: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    // HEAD: the same status, no body (orchestrators often probe this way).
    let (status, _, body) = http_get(addr, "HEAD", "/ready", &[]).await;
    assert_eq!((status, body.len()), (200, 0));
}

#[tokio::test]
async fn operator_endpoints_pass_the_same_front_door_as_calls() {
    // No anonymous access at all: every route needs a token with `read`.
    let node = TestNode::start_with(&["rpc.anonymous_scopes=[]"]).await;
    let addr = node.node().rpc_addr();
    let operator = node.client().await;
    let reader = new_token(&operator, &[Scope::Read], "scraper").await;
    let writer = new_token(&operator, &[Scope::Execute], "writer").await;

    // The pages and scripts are public code: no scope needed, but a bad token is still refused.
    for path in ["/", "/onvm.js", "/verifier.js", "/onvm_verifier.wasm"] {
        let (status, _, _) = http_get(addr, "GET", path, &[]).await;
        assert_eq!(status, 200, "{path} without a token");
        let (status, _, _) = http_get(addr, "GET", &format!("{path}?token=forged"), &[]).await;
        assert_eq!(status, 401, "{path} with a forged token");
    }
    for path in ["/metrics", "/health", "/ready"] {
        let (status, _, body) = http_get(addr, "GET", path, &[]).await;
        assert_eq!(status, 401, "{path} without a token");
        assert!(String::from_utf8_lossy(&body).contains("read"), "{path}");
        let (status, _, _) = http_get(addr, "GET", &format!("{path}?token={writer}"), &[]).await;
        assert_eq!(status, 403, "{path} with a token without `read`");
        let (status, _, _) = http_get(addr, "GET", &format!("{path}?token={reader}"), &[]).await;
        assert_eq!(status, 200, "{path} with a read token in the URL");
        let bearer = format!("Bearer {reader}");
        let (status, _, _) = http_get(addr, "GET", path, &[("Authorization", &bearer)]).await;
        assert_eq!(status, 200, "{path} with a read token in a header");
        let (status, _, _) = http_get(addr, "GET", &format!("{path}?token=forged"), &[]).await;
        assert_eq!(status, 401, "{path} with a forged token");
    }
    // A page on another site cannot read the metrics, even with a token.
    let (status, _, _) = http_get(
        addr,
        "GET",
        &format!("/metrics?token={reader}"),
        &[("Origin", "http://evil.example")],
    )
    .await;
    assert_eq!(status, 403);
    // Nor can a rebound DNS name.
    let (status, _, _) = http_get(
        addr,
        "GET",
        &format!("/health?token={reader}"),
        &[("Host", "evil.example")],
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_dashboard_the_client_and_the_verifier_are_served_from_the_binary() {
    let node = TestNode::start().await;
    let addr = node.node().rpc_addr();

    let (status, head, body) = http_get(addr, "GET", "/", &[]).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&body).contains("<html"));
    let csp = header(&head, "content-security-policy").expect("a CSP on the dashboard");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&head, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));

    for script in ["/onvm.js", "/verifier.js", "/dashboard.js"] {
        let (status, head, body) = http_get(addr, "GET", script, &[]).await;
        assert_eq!(status, 200, "{script}");
        assert_eq!(
            header(&head, "content-type"),
            Some("text/javascript; charset=utf-8"),
            "{script}"
        );
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("export ") || text.contains("import "),
            "{script} is a module"
        );
    }
    let (status, head, body) = http_get(addr, "GET", "/onvm_verifier.wasm", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-type"), Some("application/wasm"));
    assert_eq!(&body[..4], b"\0asm");

    // An admitted cross-origin page (the RSVP example served elsewhere) may import the client.
    let (status, head, _) =
        http_get(addr, "GET", "/onvm.js", &[("Origin", "http://127.0.0.1:9")]).await;
    assert_eq!(status, 403, "not an admitted origin: {head}");

    // Anything else is still JSON-RPC's: GET elsewhere is not a page, and the WebSocket
    // upgrade at `/` still opens a connection.
    let (status, _, _) = http_get(addr, "GET", "/etc/passwd", &[]).await;
    assert_ne!(status, 200);
    node.client()
        .await
        .info()
        .await
        .expect("WebSocket at / still works");
}

#[tokio::test]
async fn rpc_discover_describes_every_method_and_the_docs_name_each_one() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let doc: serde_json::Value = client
        .request("rpc.discover", jsonrpsee::rpc_params![])
        .await
        .expect("rpc.discover");
    assert_eq!(doc["openrpc"], "1.2.6");
    let methods = doc["methods"].as_array().expect("methods");
    let table = onvm::rpc_api::methods::METHODS;
    assert_eq!(methods.len(), table.len());
    let rpc_md = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/RPC.md"),
    )
    .unwrap();
    for (described, spec) in methods.iter().zip(table) {
        assert_eq!(described["name"], spec.name);
        assert_eq!(
            described["x-onvm-scope"].as_str(),
            onvm::rpc_api::auth::scope_of(spec.name)
                .flatten()
                .map(|s| s.to_string())
                .as_deref(),
            "{}: OpenRPC and the scope check disagree",
            spec.name
        );
        assert!(
            rpc_md.contains(&format!("`{}`", spec.name))
                || rpc_md.contains(&format!("`{}(", spec.name)),
            "docs/RPC.md never names `{}`",
            spec.name
        );
    }
}
