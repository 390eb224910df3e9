//! A seeded fuzzer for the JSON-RPC surface: thousands of malformed calls across every method
//! (random and almost-valid parameters, wrong id types, broken JSON, batches), over one raw
//! WebSocket. Every answer must be well-formed JSON-RPC with a documented error code, the
//! connection must stay open, and the node must be healthy afterwards.
//! `ONVM_TEST_SEED=<seed>` replays a run; `ONVM_FUZZ_CALLS=<n>` changes its length.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::TestNode;
use common::raw::{read_text, send_text};
use onvm::rpc_api::error as codes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Every method the node serves, plus names it does not.
const METHODS: &[&str] = &[
    "node_info",
    "node_health",
    "node_metrics",
    "blob_put",
    "blob_upload_begin",
    "blob_upload_append",
    "blob_upload_status",
    "blob_upload_finish",
    "blob_upload_abort",
    "blob_get",
    "blob_stat",
    "blob_list",
    "program_deploy",
    "program_info",
    "program_list",
    "program_execute",
    "program_committee",
    "state_get",
    "state_root",
    "state_proof",
    "receipt_get",
    "receipt_list",
    "receipt_verify",
    "receipt_subscribe",
    "receipt_unsubscribe",
    "receipt_input",
    "receipt_evidence",
    "job_submit",
    "job_status",
    "job_output",
    "job_cancel",
    "job_list",
    "job_logs",
    "job_subscribe",
    "job_unsubscribe",
    "job_subscribe_all",
    "job_unsubscribe_all",
    "peer_connect",
    "peer_list",
    "dag_heads",
    "dag_get",
    "dag_subscribe",
    "dag_unsubscribe",
    "token_create",
    "token_list",
    "token_revoke",
    "no_such_method",
    "",
    "node_info ",
    "rpc.discover",
];

/// The codes docs/RPC.md lists. INTERNAL_ERROR is documented for storage failures, which
/// malformed input must never cause, so it is not accepted here.
const DOCUMENTED: &[i32] = &[
    codes::PARSE_ERROR,
    codes::INVALID_REQUEST,
    codes::METHOD_NOT_FOUND,
    codes::INVALID_PARAMS,
    codes::OVERSIZED_REQUEST,
    codes::OVERSIZED_BATCH,
    codes::NOT_FOUND,
    codes::LIMIT_EXCEEDED,
    codes::CONFLICT,
    codes::BUSY,
    codes::UNAVAILABLE,
    codes::FORBIDDEN,
    codes::EXECUTION_FAILED,
    codes::INVALID_PROGRAM,
    codes::JOB_NOT_READY,
];

struct Fuzzer {
    rng: StdRng,
    /// Real ids, so some calls get past parsing into the handlers.
    known: Vec<String>,
}

impl Fuzzer {
    fn string(&mut self) -> String {
        let choice = self.rng.random_range(0..10);
        match choice {
            0 => String::new(),
            1 => "A".repeat(self.rng.random_range(1..2000)),
            2 => format!("blob{}", hex64(&mut self.rng)),
            3 => format!("prog{}", hex64(&mut self.rng)),
            4 => format!("job{}", hex64(&mut self.rng)),
            5 => hex64(&mut self.rng),
            6 => self.known[self.rng.random_range(0..self.known.len())].clone(),
            7 => "e30=".into(),
            8 => "\u{0}\u{ffff}é\"\\".into(),
            _ => (0..self.rng.random_range(1..40))
                .map(|_| self.rng.random_range(32u8..127) as char)
                .collect(),
        }
    }

    fn value(&mut self, depth: u32) -> Value {
        let top = if depth > 2 { 6 } else { 9 };
        match self.rng.random_range(0..top) {
            0 => Value::Null,
            1 => json!(self.rng.random_bool(0.5)),
            2 => json!(
                [
                    0i64,
                    -1,
                    1,
                    i64::MAX,
                    i64::MIN,
                    u32::MAX as i64,
                    self.rng.random_range(0..100_000)
                ][self.rng.random_range(0..7)]
            ),
            3 => json!([0.5f64, -1e300, 1e300, f64::EPSILON][self.rng.random_range(0..4)]),
            4 | 5 => Value::String(self.string()),
            6 | 7 => Value::Array(
                (0..self.rng.random_range(0..5))
                    .map(|_| self.value(depth + 1))
                    .collect(),
            ),
            _ => {
                let mut map = serde_json::Map::new();
                for _ in 0..self.rng.random_range(0..5) {
                    let key = [
                        "fuel",
                        "read_only",
                        "entrypoint",
                        "timeout_ms",
                        "request_id",
                        "program_id",
                        "wasm_base64",
                        "salt",
                        "scopes",
                        "status",
                        "committee_size",
                        "threshold",
                        "input_base64",
                        "max_retries",
                        "metadata",
                        "requestId",
                        "x",
                    ][self.rng.random_range(0..17)];
                    map.insert(key.to_string(), self.value(depth + 1));
                }
                Value::Object(map)
            }
        }
    }

    /// Parameters: positional, named, a bare scalar, or missing.
    fn params(&mut self) -> Option<Value> {
        match self.rng.random_range(0..6) {
            0 => None,
            1 => Some(self.value(1)),
            2 => Some(Value::Object(
                (0..self.rng.random_range(1..4))
                    .map(|_| (self.string(), self.value(1)))
                    .collect(),
            )),
            _ => Some(Value::Array(
                (0..self.rng.random_range(0..5))
                    .map(|_| self.value(1))
                    .collect(),
            )),
        }
    }

    fn call(&mut self, id: u64) -> Value {
        let method = METHODS[self.rng.random_range(0..METHODS.len())];
        let mut call = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(p) = self.params() {
            call["params"] = p;
        }
        if self.rng.random_range(0..20) == 0 {
            call["jsonrpc"] = json!("1.0");
        }
        call
    }
}

fn hex64(rng: &mut StdRng) -> String {
    (0..32)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

fn check_error(answer: &Value, codes_seen: &mut BTreeMap<i64, u64>) {
    assert_eq!(answer["jsonrpc"], "2.0", "{answer}");
    if let Some(error) = answer.get("error") {
        let code = error["code"].as_i64().expect("an error has a numeric code");
        assert!(error["message"].is_string(), "{answer}");
        assert!(
            DOCUMENTED.contains(&(code as i32)),
            "undocumented error code {code}: {answer}"
        );
        if code == codes::FORBIDDEN as i64 && !codes_seen.contains_key(&code) {
            println!("first FORBIDDEN: {answer}");
        }
        *codes_seen.entry(code).or_default() += 1;
    } else {
        assert!(answer.get("result").is_some(), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_calls_get_documented_errors_and_the_node_stays_healthy() {
    let seed = common::test_seed();
    let total: u64 = std::env::var("ONVM_FUZZ_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let node = TestNode::start().await;
    let client = node.client().await;
    let program = common::deploy_kvstore(&client, None).await;
    let cookie = common::cookie_of(&node.url()).expect("the node's cookie");
    let handshake = common::raw::ws_handshake(
        node.node().rpc_addr(),
        "/",
        &[("Authorization", &format!("Bearer {cookie}"))],
        None,
    )
    .await;
    assert_eq!(handshake.status, 101);
    let mut ws = handshake.stream;
    let mut fuzz = Fuzzer {
        rng: StdRng::seed_from_u64(seed),
        known: vec![program.to_string()],
    };
    let mut codes_seen = BTreeMap::new();
    let mut sent = 0u64;
    let mut next_id = 1u64;
    let mut sent_calls = std::collections::HashMap::new();
    while sent < total {
        match fuzz.rng.random_range(0..20) {
            // Not JSON-RPC at all, or ids JSON-RPC does not allow: one answer with id null.
            0 => {
                let garbage = [
                    "{".to_string(),
                    "[]".into(),
                    "null".into(),
                    "42".into(),
                    r#"{"jsonrpc":"2.0","id":{},"method":"node_info"}"#.into(),
                    r#"{"jsonrpc":"2.0","id":[1],"method":"node_info"}"#.into(),
                    r#"{"jsonrpc":"2.0","method":"node_info"}"#.into(),
                    format!(
                        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"{}",
                        "x".repeat(100)
                    ),
                ][fuzz.rng.random_range(0..8)]
                .clone();
                send_text(&mut ws, &garbage).await;
                let answer = next_answer(&mut ws).await;
                assert!(answer["id"].is_null(), "{garbage} -> {answer}");
                check_error(&answer, &mut codes_seen);
                sent += 1;
            }
            // A batch of up to 40 calls (over rpc.max_batch is one error).
            1 => {
                let n = fuzz.rng.random_range(1..40u64);
                let calls: Vec<Value> = (0..n).map(|i| fuzz.call(next_id + i)).collect();
                send_text(&mut ws, &Value::Array(calls).to_string()).await;
                // A batch has one answer: an array, or one error (id null) for the whole batch.
                loop {
                    match next_answer(&mut ws).await {
                        Value::Array(answers) => {
                            for a in &answers {
                                check_error(a, &mut codes_seen);
                            }
                            break;
                        }
                        single => {
                            check_error(&single, &mut codes_seen);
                            let own = single["id"]
                                .as_u64()
                                .is_some_and(|id| (next_id..next_id + n).contains(&id));
                            if !own {
                                assert!(single["id"].is_null(), "{single}");
                                break;
                            }
                        }
                    }
                }
                next_id += n;
                sent += n;
            }
            // Pipelined single calls.
            _ => {
                let n = fuzz.rng.random_range(1..50u64);
                let mut waiting = HashSet::new();
                for _ in 0..n {
                    let call = fuzz.call(next_id);
                    sent_calls.insert(next_id, call.to_string());
                    waiting.insert(next_id);
                    next_id += 1;
                    send_text(&mut ws, &call.to_string()).await;
                }
                while !waiting.is_empty() {
                    let answer = next_answer(&mut ws).await;
                    check_error(&answer, &mut codes_seen);
                    let id = answer["id"].as_u64();
                    assert!(
                        id.is_some_and(|id| waiting.remove(&id)),
                        "an answer to a call not waiting: {answer}; the call was {:?}; waiting for {waiting:?}",
                        id.and_then(|id| sent_calls.get(&id))
                    );
                }
                sent += n;
            }
        }
    }
    println!("seed {seed}: {sent} malformed calls; error codes seen: {codes_seen:?}");
    // The operator's cookie has every scope, in batches too.
    assert!(
        !codes_seen.contains_key(&(codes::FORBIDDEN as i64)),
        "{codes_seen:?}"
    );
    let health = common::raw::ws_call(&mut ws, "node_health", "[]").await;
    assert_eq!(health["result"]["ready"], true, "{health}");
    use onvm::rpc_api::api::NodeApiClient;
    assert!(NodeApiClient::health(&client).await.unwrap().ready);
    node.stop().await;
}

/// The next message that answers a call (subscription notifications are skipped).
async fn next_answer(ws: &mut tokio::net::TcpStream) -> Value {
    loop {
        let text = tokio::time::timeout(std::time::Duration::from_secs(60), read_text(ws))
            .await
            .expect("the node answers within 60 s");
        let value: Value = serde_json::from_str(&text).expect("answers are JSON");
        if value.get("method").is_some() && value.get("id").is_none() {
            continue;
        }
        return value;
    }
}
