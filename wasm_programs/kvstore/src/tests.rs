use super::*;
use onvm_sdk::mock;
use std::collections::BTreeMap;

fn call(req: &str) -> String {
    mock::begin_call();
    String::from_utf8(handle(req.as_bytes())).expect("responses are UTF-8")
}

fn call_json(req: serde_json::Value) -> serde_json::Value {
    mock::begin_call();
    serde_json::from_slice(&handle(req.to_string().as_bytes())).expect("responses are JSON")
}

/// The README's example session, in order, starting from an empty store.
const SESSION: &[(&str, &str, &str)] = &[
    (
        "put.json",
        include_str!("../examples/put.json"),
        r#"{"ok":true,"key":"greeting","size":11,"created":true}"#,
    ),
    (
        "put_overwrite.json",
        include_str!("../examples/put_overwrite.json"),
        r#"{"ok":true,"key":"greeting","size":11,"created":false}"#,
    ),
    (
        "put_apple.json",
        include_str!("../examples/put_apple.json"),
        r#"{"ok":true,"key":"fruit/apple","size":3,"created":true}"#,
    ),
    (
        "put_banana.json",
        include_str!("../examples/put_banana.json"),
        r#"{"ok":true,"key":"fruit/banana","size":6,"created":true}"#,
    ),
    (
        "get.json",
        include_str!("../examples/get.json"),
        r#"{"ok":true,"key":"greeting","data_base64":"aGVsbG8sIG9udm0=","size":11}"#,
    ),
    (
        "get_missing.json",
        include_str!("../examples/get_missing.json"),
        r#"{"ok":false,"error":"not_found","key":"fruit/cherry","message":"no value is stored under this key"}"#,
    ),
    (
        "list.json",
        include_str!("../examples/list.json"),
        r#"{"ok":true,"keys":["fruit/apple","fruit/banana","greeting"],"next":null}"#,
    ),
    (
        "list_page1.json",
        include_str!("../examples/list_page1.json"),
        r#"{"ok":true,"keys":["fruit/apple"],"next":"fruit/apple"}"#,
    ),
    (
        "list_page2.json",
        include_str!("../examples/list_page2.json"),
        r#"{"ok":true,"keys":["fruit/banana"],"next":null}"#,
    ),
    (
        "stats.json",
        include_str!("../examples/stats.json"),
        r#"{"ok":true,"count":3,"total_bytes":20}"#,
    ),
    (
        "delete.json",
        include_str!("../examples/delete.json"),
        r#"{"ok":true,"key":"fruit/apple","deleted":true}"#,
    ),
    (
        "delete.json",
        include_str!("../examples/delete.json"),
        r#"{"ok":true,"key":"fruit/apple","deleted":false}"#,
    ),
    (
        "stats.json",
        include_str!("../examples/stats.json"),
        r#"{"ok":true,"count":2,"total_bytes":17}"#,
    ),
    (
        "clear.json",
        include_str!("../examples/clear.json"),
        r#"{"ok":true,"deleted":2}"#,
    ),
    (
        "stats.json",
        include_str!("../examples/stats.json"),
        r#"{"ok":true,"count":0,"total_bytes":0}"#,
    ),
    (
        "bad_key.json",
        include_str!("../examples/bad_key.json"),
        r#"{"ok":false,"error":"bad_key","message":"key must not be empty"}"#,
    ),
    (
        "unknown_op.json",
        include_str!("../examples/unknown_op.json"),
        r#"{"ok":false,"error":"unknown_op","message":"unknown op \"frobnicate\"; expected put, get, list, delete, clear or stats"}"#,
    ),
];

#[test]
fn example_session() {
    mock::reset();
    for (i, (file, input, expected)) in SESSION.iter().enumerate() {
        assert_eq!(call(input), *expected, "step {} ({file})", i + 1);
        if *file == "put_banana.json" {
            // The documented state layout.
            let mut want = BTreeMap::new();
            want.insert(b"d/fruit/apple".to_vec(), b"red".to_vec());
            want.insert(b"d/fruit/banana".to_vec(), b"yellow".to_vec());
            want.insert(b"d/greeting".to_vec(), b"hello, onvm".to_vec());
            want.insert(b"m/bytes".to_vec(), 20u64.to_le_bytes().to_vec());
            want.insert(b"m/count".to_vec(), 3u64.to_le_bytes().to_vec());
            assert_eq!(mock::state(), want);
        }
        if *file == "clear.json" {
            assert!(mock::state().is_empty(), "an empty store is an empty state");
        }
    }
}

#[test]
fn readme_documents_the_session() {
    let readme = include_str!("../README.md");
    for (i, (file, input, expected)) in SESSION.iter().enumerate() {
        let row = format!(
            "| {} | `{file}` | `{}` | `{expected}` |",
            i + 1,
            input.trim()
        );
        assert!(readme.contains(&row), "README.md lacks the row\n{row}");
    }
}

#[test]
fn bad_requests_are_json_errors() {
    mock::reset();
    let cases = [
        ("", "bad_request"),
        ("not json", "bad_request"),
        ("[1,2]", "bad_request"),
        (r#"{"key":"a"}"#, "bad_request"),
        (r#"{"op":7}"#, "bad_request"),
        (r#"{"op":"put","key":"a"}"#, "bad_request"),
        (r#"{"op":"put","data_base64":""}"#, "bad_request"),
        (r#"{"op":"get","key":5}"#, "bad_request"),
        (
            r#"{"op":"put","key":"a","data_base64":"***"}"#,
            "bad_base64",
        ),
        (r#"{"op":"list","limit":0}"#, "bad_request"),
        (r#"{"op":"list","limit":-1}"#, "bad_request"),
        (r#"{"op":"delete","key":""}"#, "bad_key"),
        (r#"{"op":"PUT","key":"a","data_base64":""}"#, "unknown_op"),
    ];
    for (input, code) in cases {
        let out = call(input);
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v["ok"], false, "{input} -> {out}");
        assert_eq!(v["error"], code, "{input} -> {out}");
        assert!(v["message"].is_string(), "{input} -> {out}");
    }
    assert!(mock::state().is_empty());
}

#[test]
fn key_and_value_limits() {
    mock::reset();
    let long = "k".repeat(MAX_KEY_BYTES);
    let r = call_json(serde_json::json!({"op":"put","key":long,"data_base64":""}));
    assert_eq!(r["ok"], true);
    assert_eq!(r["size"], 0);
    let r = call_json(serde_json::json!({"op":"get","key":long}));
    assert_eq!(r["data_base64"], "");
    let too_long = "k".repeat(MAX_KEY_BYTES + 1);
    let r = call_json(serde_json::json!({"op":"put","key":too_long,"data_base64":""}));
    assert_eq!(r["error"], "bad_key");
    assert_eq!(r["message"], "key is 201 bytes; the maximum is 200");
    // 200 bytes of multi-byte UTF-8 is fine, 201 is not.
    let r = call_json(serde_json::json!({"op":"put","key":"é".repeat(100),"data_base64":"AA=="}));
    assert_eq!(r["ok"], true);
    let r = call_json(serde_json::json!({"op":"list","prefix":too_long}));
    assert_eq!(r["error"], "bad_key");

    let max = BASE64.encode(vec![1u8; MAX_VALUE_BYTES]);
    let r = call_json(serde_json::json!({"op":"put","key":"big","data_base64":max}));
    assert_eq!(r["size"], MAX_VALUE_BYTES);
    let over = BASE64.encode(vec![1u8; MAX_VALUE_BYTES + 1]);
    let r = call_json(serde_json::json!({"op":"put","key":"big2","data_base64":over}));
    assert_eq!(r["error"], "value_too_large");
    assert_eq!(r["key"], "big2");
    let r = call_json(serde_json::json!({"op":"stats"}));
    assert_eq!(r["count"], 3);
    assert_eq!(r["total_bytes"], MAX_VALUE_BYTES + 1);
}

#[test]
fn list_pages_in_bytewise_order() {
    mock::reset();
    let keys = ["b", "a", "a/1", "a/2", "A", "Z", "é", "z", "a0", "a/10"];
    for k in keys {
        call_json(serde_json::json!({"op":"put","key":k,"data_base64":""}));
    }
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    let r = call_json(serde_json::json!({"op":"list"}));
    assert_eq!(r["keys"], serde_json::json!(sorted));
    assert_eq!(r["next"], serde_json::Value::Null);

    // Paging with every limit visits every key exactly once.
    for limit in 1..=11 {
        let mut seen = Vec::new();
        let mut after = serde_json::Value::Null;
        loop {
            let r = call_json(serde_json::json!({"op":"list","after":after,"limit":limit}));
            let page: Vec<String> = serde_json::from_value(r["keys"].clone()).unwrap();
            assert!(page.len() <= limit);
            seen.extend(page);
            if r["next"].is_null() {
                break;
            }
            after = r["next"].clone();
        }
        assert_eq!(seen, sorted, "limit {limit}");
    }

    let r = call_json(serde_json::json!({"op":"list","prefix":"a/"}));
    assert_eq!(r["keys"], serde_json::json!(["a/1", "a/10", "a/2"]));
    let r = call_json(serde_json::json!({"op":"list","prefix":"a/","after":"a/10"}));
    assert_eq!(r["keys"], serde_json::json!(["a/2"]));
    let r = call_json(serde_json::json!({"op":"list","prefix":"q"}));
    assert_eq!(r["keys"], serde_json::json!([]));
}

#[test]
fn list_limit_is_capped() {
    mock::reset();
    for i in 0..1005 {
        call_json(serde_json::json!({"op":"put","key":format!("k{i:04}"),"data_base64":""}));
    }
    let r = call_json(serde_json::json!({"op":"list"}));
    assert_eq!(r["keys"].as_array().unwrap().len(), 100);
    assert_eq!(r["next"], "k0099");
    let r = call_json(serde_json::json!({"op":"list","limit":5000}));
    assert_eq!(r["keys"].as_array().unwrap().len(), 1000);
    assert_eq!(r["next"], "k0999");
    let r = call_json(serde_json::json!({"op":"clear"}));
    assert_eq!(r["deleted"], 1005);
    assert!(mock::state().is_empty());
}

#[test]
fn clear_works_in_batches() {
    mock::reset();
    let n = CLEAR_BATCH + 3;
    for i in 0..n {
        call_json(serde_json::json!({"op":"put","key":format!("k{i:05}"),"data_base64":"AQID"}));
    }
    assert_eq!(
        call(r#"{"op":"clear"}"#),
        r#"{"ok":true,"deleted":5000,"more":true}"#
    );
    assert_eq!(
        call(r#"{"op":"stats"}"#),
        r#"{"ok":true,"count":3,"total_bytes":9}"#
    );
    let r = call_json(serde_json::json!({"op":"list"}));
    assert_eq!(r["keys"], serde_json::json!(["k05000", "k05001", "k05002"]));
    assert_eq!(call(r#"{"op":"clear"}"#), r#"{"ok":true,"deleted":3}"#);
    assert!(mock::state().is_empty());

    // Exactly one batch: no `more`.
    for i in 0..CLEAR_BATCH {
        call_json(serde_json::json!({"op":"put","key":format!("k{i:05}"),"data_base64":""}));
    }
    assert_eq!(call(r#"{"op":"clear"}"#), r#"{"ok":true,"deleted":5000}"#);
    assert!(mock::state().is_empty());
}

#[test]
fn read_only_operations_do_not_write() {
    mock::reset();
    call_json(serde_json::json!({"op":"put","key":"a","data_base64":"AQI="}));
    mock::with(|h| h.read_only = true);
    for req in [
        r#"{"op":"get","key":"a"}"#,
        r#"{"op":"get","key":"b"}"#,
        r#"{"op":"list"}"#,
        r#"{"op":"stats"}"#,
        r#"{"op":"delete","key":"b"}"#,
    ] {
        call(req);
    }
    // Clearing an empty store writes nothing either.
    mock::reset();
    mock::with(|h| h.read_only = true);
    assert_eq!(call(r#"{"op":"clear"}"#), r#"{"ok":true,"deleted":0}"#);
}

#[test]
fn corrupt_counters_are_reported() {
    mock::reset();
    state::put(COUNT_KEY, b"xyz");
    let r = call_json(serde_json::json!({"op":"stats"}));
    assert_eq!(r["error"], "corrupt_state");
    let r = call_json(serde_json::json!({"op":"put","key":"a","data_base64":""}));
    assert_eq!(r["error"], "corrupt_state");
    mock::reset();
    state::put(b"d/a", b"12");
    let r = call_json(serde_json::json!({"op":"delete","key":"a"}));
    assert_eq!(r["error"], "corrupt_state");
    // A partial clear checks the counters before deleting anything.
    for i in 0..=CLEAR_BATCH {
        state::put(format!("d/k{i:05}").as_bytes(), b"");
    }
    state::put(COUNT_KEY, &1u64.to_le_bytes());
    let before = mock::state();
    let r = call_json(serde_json::json!({"op":"clear"}));
    assert_eq!(r["error"], "corrupt_state");
    assert_eq!(mock::state(), before);
}

/// Random operations against a model: responses and the counters always match.
#[test]
fn counters_match_a_model() {
    mock::reset();
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..3000 {
        let key = format!("k{}", rand(40));
        match rand(10) {
            0..=4 => {
                let value = vec![b'v'; rand(50) as usize];
                let r = call_json(
                    serde_json::json!({"op":"put","key":key,"data_base64":BASE64.encode(&value)}),
                );
                assert_eq!(r["created"], !model.contains_key(&key));
                model.insert(key, value);
            }
            5 => {
                let r = call_json(serde_json::json!({"op":"get","key":key}));
                match model.get(&key) {
                    Some(v) => assert_eq!(r["data_base64"], BASE64.encode(v)),
                    None => assert_eq!(r["error"], "not_found"),
                }
            }
            6..=8 => {
                let r = call_json(serde_json::json!({"op":"delete","key":key}));
                assert_eq!(r["deleted"], model.remove(&key).is_some());
            }
            _ => {
                if rand(20) == 0 {
                    let r = call_json(serde_json::json!({"op":"clear"}));
                    assert_eq!(r["deleted"], model.len());
                    model.clear();
                }
            }
        }
        let r = call_json(serde_json::json!({"op":"stats"}));
        assert_eq!(r["count"], model.len());
        let bytes: usize = model.values().map(Vec::len).sum();
        assert_eq!(r["total_bytes"], bytes);
        let entries = mock::state()
            .keys()
            .filter(|k| k.starts_with(DATA_PREFIX))
            .count();
        assert_eq!(entries, model.len());
    }
}
