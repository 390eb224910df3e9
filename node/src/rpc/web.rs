//! What the RPC port serves to plain HTTP GETs (everything else, the WebSocket upgrade
//! included, goes to JSON-RPC): the dashboard page, the JavaScript client and the receipt
//! verifier compiled to wasm, Prometheus metrics, and health and readiness for orchestrators.
//! Every route passes the same front door as a call (Host, Origin, and a presented token must be
//! valid). The pages and scripts are public code with no data in them and need no scope (a page
//! loads its scripts without its token); metrics, health and readiness need the scope of the
//! RPC methods they mirror: `read`, which anonymous clients have by default.

use std::sync::Arc;

use jsonrpsee::server::{HttpBody, HttpResponse};
use onvm_rpc_api::auth::Scope;

use super::auth::Grant;
use crate::node::NodeContext;

/// The browser files, compiled into the binary so a node serves them with no install step.
/// `node/web/` is their one copy; `examples/` pages import the client from a node.
const INDEX_HTML: &str = include_str!("../../web/index.html");
const DASHBOARD_JS: &str = include_str!("../../web/dashboard.js");
const CLIENT_JS: &str = include_str!("../../web/onvm.js");
const VERIFIER_JS: &str = include_str!("../../web/verifier.js");
/// `rpc-api`'s checks built for wasm32 by `build.rs` (the `wasm_programs/verifier` crate).
const VERIFIER_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/onvm_verifier.wasm"));

/// One thing a GET can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    File {
        content_type: &'static str,
        body: &'static [u8],
    },
    Metrics,
    Health,
    Ready,
}

/// The route of a GET or HEAD request, or None for anything JSON-RPC answers (POST, a
/// WebSocket upgrade, other paths).
pub fn route<B>(request: &http::Request<B>) -> Option<Route> {
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return None;
    }
    if request.headers().contains_key(http::header::UPGRADE) {
        return None;
    }
    let file = |content_type, body: &'static [u8]| Some(Route::File { content_type, body });
    match request.uri().path() {
        "/" | "/index.html" => file("text/html; charset=utf-8", INDEX_HTML.as_bytes()),
        "/dashboard.js" => file("text/javascript; charset=utf-8", DASHBOARD_JS.as_bytes()),
        "/onvm.js" => file("text/javascript; charset=utf-8", CLIENT_JS.as_bytes()),
        "/verifier.js" => file("text/javascript; charset=utf-8", VERIFIER_JS.as_bytes()),
        "/onvm_verifier.wasm" => file("application/wasm", VERIFIER_WASM),
        "/metrics" => Some(Route::Metrics),
        "/health" => Some(Route::Health),
        "/ready" => Some(Route::Ready),
        _ => None,
    }
}

/// Answers a routed GET for a request admitted with `grant`.
pub async fn serve(
    route: Route,
    head_only: bool,
    grant: &Grant,
    ctx: &Arc<NodeContext>,
) -> HttpResponse {
    let is_file = matches!(route, Route::File { .. });
    if !is_file && !grant.scopes.allows(Scope::Read) {
        let why = if grant.presented {
            "this token lacks the `read` scope"
        } else {
            "this node serves its metrics and health to no anonymous client: present a token with the `read` scope (`?token=` or `Authorization: Bearer`)"
        };
        return text(
            if grant.presented { 403 } else { 401 },
            "text/plain; charset=utf-8",
            why.into(),
        );
    }
    let (status, content_type, body): (u16, &str, Vec<u8>) = match route {
        Route::File { content_type, body } => (200, content_type, body.to_vec()),
        Route::Metrics => {
            let snapshot = ctx.metrics().await;
            let body = crate::metrics::prometheus_text(&snapshot, &ctx.counters.timings);
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                body.into_bytes(),
            )
        }
        Route::Health | Route::Ready => {
            let health = ctx.health().await;
            let ok = match route {
                Route::Ready => health.ready,
                _ => health.live,
            };
            let body = serde_json::to_vec_pretty(&health).unwrap_or_default();
            (if ok { 200 } else { 503 }, "application/json", body)
        }
    };
    let mut response = text(
        status,
        content_type,
        if head_only { Vec::new() } else { body },
    );
    let headers = response.headers_mut();
    // Pages carry the token in their URL: never leak it to another site in a Referer.
    headers.insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    // The node's own code changes with the binary: always revalidate.
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    if matches!(route, Route::File { content_type, .. } if content_type.starts_with("text/html")) {
        // The dashboard runs only the node's own scripts and the verifier wasm, talks only to
        // this node, and may not be framed by another site.
        headers.insert(
            http::header::CONTENT_SECURITY_POLICY,
            http::HeaderValue::from_static(
                "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'",
            ),
        );
    }
    response
}

fn text(status: u16, content_type: &str, body: Vec<u8>) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> http::Request<()> {
        http::Request::get(path).body(()).unwrap()
    }

    #[test]
    fn plain_gets_are_routed_and_everything_else_goes_to_json_rpc() {
        assert!(matches!(route(&get("/")), Some(Route::File { .. })));
        assert!(matches!(route(&get("/onvm.js")), Some(Route::File { .. })));
        assert_eq!(route(&get("/metrics")), Some(Route::Metrics));
        assert_eq!(route(&get("/ready")), Some(Route::Ready));
        assert_eq!(route(&get("/nope")), None);
        let upgrade = http::Request::get("/")
            .header(http::header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert_eq!(route(&upgrade), None, "a WebSocket handshake is JSON-RPC's");
        let post = http::Request::post("/").body(()).unwrap();
        assert_eq!(route(&post), None);
    }

    #[test]
    fn the_embedded_verifier_is_a_wasm_module() {
        assert_eq!(&VERIFIER_WASM[..4], b"\0asm");
    }
}
