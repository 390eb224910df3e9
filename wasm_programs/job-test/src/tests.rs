use super::*;
use onvm_sdk::mock;

fn call(input: &str) -> String {
    String::from_utf8(handle(input.as_bytes())).expect("responses are UTF-8")
}

/// The examples documented in README.md with exact outputs: (file, input, output), run in order
/// from an empty state.
const EXAMPLES: &[(&str, &str, &str)] = &[
    (
        "compute.json",
        include_str!("../examples/compute.json"),
        r#"{"task":"compute","iterations":1000,"result":{"sum_of_squares":333833500,"fibonacci":517691607}}"#,
    ),
    (
        "hash.json",
        include_str!("../examples/hash.json"),
        r#"{"task":"hash","iterations":3,"hex":"7f7b87bbdd45f6ef5bf64a31b0a663c143410fc03a7e5a853a0c6b2108101ea9"}"#,
    ),
    (
        "transform.json",
        include_str!("../examples/transform.json"),
        r#"{"task":"transform","upper":"HELLO, ONVM! ÜNÏCÖDÉ","reversed":"édöcïnü !MVNO ,olleH","length":24,"chars":20}"#,
    ),
    (
        "stress.json",
        include_str!("../examples/stress.json"),
        r#"{"task":"stress","iterations":1000000,"memory_mb":8,"checksum":2252849941745956698}"#,
    ),
    (
        "count.json",
        include_str!("../examples/count.json"),
        r#"{"task":"count","runs":1}"#,
    ),
    (
        "count.json",
        include_str!("../examples/count.json"),
        r#"{"task":"count","runs":2}"#,
    ),
    (
        "unknown.json",
        include_str!("../examples/unknown.json"),
        r#"{"ok":false,"error":"unknown_task","message":"unknown task \"dance\"; expected compute, hash, transform, stress, fail, count, log, context or blob"}"#,
    ),
    (
        "log.json",
        include_str!("../examples/log.json"),
        r#"{"task":"log","lines":3}"#,
    ),
    (
        "blob.json",
        include_str!("../examples/blob.json"),
        r#"{"task":"blob","size":11,"blake3":"d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24"}"#,
    ),
];

#[test]
fn examples() {
    mock::reset();
    let id = *blake3::hash(b"hello world").as_bytes();
    mock::insert_blob(id, b"hello world".to_vec());
    for (i, (file, input, expected)) in EXAMPLES.iter().enumerate() {
        assert_eq!(call(input), *expected, "step {} ({file})", i + 1);
    }
    assert_eq!(mock::take_logs(), ["hello from job-test"; 3]);
    let mut want = std::collections::BTreeMap::new();
    want.insert(b"runs".to_vec(), 2u64.to_le_bytes().to_vec());
    assert_eq!(mock::state(), want);
}

#[test]
fn readme_documents_the_examples() {
    let readme = include_str!("../README.md");
    for (file, input, expected) in EXAMPLES {
        let row = format!("| `{file}` | `{}` | `{expected}`", input.trim());
        assert!(readme.contains(&row), "README.md lacks the row\n{row}");
    }
    for file in ["fail.json", "stress_forever.json", "context.json"] {
        assert!(
            readme.contains(&format!("`{file}`")),
            "README.md lacks {file}"
        );
    }
}

#[test]
#[should_panic(expected = "guest_abort: deliberate failure")]
fn fail_aborts() {
    call(include_str!("../examples/fail.json"));
}

#[test]
fn compute_values() {
    assert_eq!(compute(0), (0, 0));
    assert_eq!(compute(1), (1, 1));
    assert_eq!(compute(2), (5, 1));
    assert_eq!(compute(10), (385, 55));
    assert_eq!(compute(90).1, 2_880_067_194_370_816_120 % FIB_MODULUS);
    // Σ i² for n = 2^22 is about 2^66 / 3: the sum wraps modulo 2^64.
    let n = 1u64 << 22;
    let exact = (n as u128) * (n as u128 + 1) * (2 * n as u128 + 1) / 6;
    assert_eq!(compute(n).0, exact as u64);
    let r = call(r#"{"task":"compute"}"#);
    assert!(r.contains(r#""iterations":1000,"#), "{r}");
}

#[test]
fn hash_chain_definition() {
    let h1 = *blake3::hash(b"x").as_bytes();
    let h2 = *blake3::hash(&h1).as_bytes();
    assert_eq!(hash_chain(b"x", 1), h1);
    assert_eq!(hash_chain(b"x", 2), h2);
    assert_eq!(
        call(r#"{"task":"hash"}"#),
        format!(
            r#"{{"task":"hash","iterations":1,"hex":"{}"}}"#,
            hex(blake3::hash(b"").as_bytes())
        )
    );
    let r: serde_json::Value =
        serde_json::from_str(&call(r#"{"task":"hash","iterations":0}"#)).unwrap();
    assert_eq!(r["error"], "bad_request");
}

#[test]
fn stress_is_deterministic_and_uses_its_inputs() {
    assert_eq!(stress(0, 0), 0);
    assert_eq!(stress(1000, 0), stress(1000, 0));
    assert_ne!(stress(1000, 0), stress(1001, 0));
    assert_ne!(stress(10, 1), stress(10, 0));
    let r = call(r#"{"task":"stress"}"#);
    assert!(
        r.starts_with(r#"{"task":"stress","iterations":100000,"memory_mb":0,"checksum":"#),
        "{r}"
    );
}

#[test]
#[should_panic(expected = "guest_abort: memory_mb is too large")]
fn absurd_memory_aborts() {
    stress(1, u64::MAX);
}

#[test]
fn count_rejects_a_corrupt_counter() {
    mock::reset();
    state::put(RUNS_KEY, b"x");
    let r: serde_json::Value = serde_json::from_str(&call(r#"{"task":"count"}"#)).unwrap();
    assert_eq!(r["error"], "corrupt_state");
}

#[test]
fn context_reports_the_host_values() {
    mock::reset();
    mock::with(|h| {
        h.caller = [0xab; 32];
        h.root = [1; 32];
        h.context = onvm_sdk::Context {
            height: 7,
            timestamp_ms: 1_700_000_000_123,
            seed: [0x0f; 32],
        };
    });
    let r: serde_json::Value = serde_json::from_str(&call(r#"{"task":"context"}"#)).unwrap();
    assert_eq!(r["caller"], "ab".repeat(32));
    assert_eq!(r["height"], 7);
    assert_eq!(r["timestamp_ms"], 1_700_000_000_123u64);
    assert_eq!(r["seed"], "0f".repeat(32));
    assert_eq!(r["state_root"], "01".repeat(32));
}

#[test]
fn blob_errors() {
    mock::reset();
    for (input, code) in [
        (r#"{"task":"blob"}"#, "bad_request"),
        (r#"{"task":"blob","data":"zz"}"#, "bad_request"),
        (
            r#"{"task":"blob","data":"g74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24"}"#,
            "bad_request",
        ),
        (include_str!("../examples/blob.json"), "not_found"),
    ] {
        let r: serde_json::Value = serde_json::from_str(&call(input)).unwrap();
        assert_eq!(r["error"], code, "{input}");
    }
}

#[test]
fn bad_inputs_are_json_errors() {
    for input in [
        "",
        "{",
        "{}",
        r#"{"task":1}"#,
        r#"{"task":"compute","iterations":-1}"#,
        r#"{"task":"compute","iterations":1.5}"#,
        r#"{"task":"transform","data":7}"#,
    ] {
        let r: serde_json::Value = serde_json::from_str(&call(input)).unwrap();
        assert_eq!(r["ok"], false, "{input}");
        assert_eq!(r["error"], "bad_request", "{input}");
    }
}
