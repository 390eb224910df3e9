use super::*;
use onvm_sdk::{Context, mock};
use serde_json::{Value, json};

const ALICE: [u8; 32] = [0xaa; 32];
const BOB: [u8; 32] = [0xbb; 32];
const ANON: [u8; 32] = [0; 32];
const T0: u64 = 1_795_000_000_000;

/// One call as `caller` at `height` (timestamp `T0 + height` seconds): the output, or
/// `trap guest_abort: <message>` for a refused request (what the node reports).
fn call_as(caller: [u8; 32], height: u64, input: &str) -> String {
    mock::begin_call();
    mock::with(|h| {
        h.caller = caller;
        h.context = Context {
            height,
            timestamp_ms: T0 + height * 1000,
            seed: [0; 32],
        };
    });
    match run(input.as_bytes()) {
        Ok(out) => String::from_utf8(out).expect("responses are UTF-8"),
        Err(e) => format!("trap guest_abort: {e}"),
    }
}

fn json_as(caller: [u8; 32], height: u64, input: Value) -> Value {
    let out = call_as(caller, height, &input.to_string());
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

fn refused(caller: [u8; 32], input: &str) -> Error {
    mock::begin_call();
    mock::with(|h| h.caller = caller);
    let before = mock::state();
    let e = run(input.as_bytes()).expect_err(input);
    assert_eq!(mock::state(), before, "a refused request wrote: {input}");
    e
}

/// The README's example session, in order: (step, caller name, caller, height, file, input,
/// output). Writing calls take the next height, refused ones included (a node records them).
type Step = (
    &'static str,
    [u8; 32],
    u64,
    &'static str,
    &'static str,
    &'static str,
);
const SESSION: &[Step] = &[
    (
        "alice",
        ALICE,
        0,
        "yes.json",
        include_str!("../examples/yes.json"),
        r#"{"ok":true,"answer":{"caller":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","attending":true,"reason":null,"height":0,"timestamp_ms":1795000000000},"replaced":false}"#,
    ),
    (
        "bob",
        BOB,
        1,
        "no.json",
        include_str!("../examples/no.json"),
        r#"{"ok":true,"answer":{"caller":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","attending":false,"reason":"Why tho?","height":1,"timestamp_ms":1795000001000},"replaced":false}"#,
    ),
    (
        "bob",
        BOB,
        2,
        "no_without_reason.json",
        include_str!("../examples/no_without_reason.json"),
        r#"trap guest_abort: reason_required: a "no" needs a reason: send {"op":"rsvp","attending":false,"reason":"…"}"#,
    ),
    (
        "anonymous",
        ANON,
        3,
        "yes.json",
        include_str!("../examples/yes.json"),
        "trap guest_abort: anonymous: an answer needs a signed call: answers are kept under the caller id, and an anonymous call has none (sign the call with a caller key)",
    ),
    (
        "alice",
        ALICE,
        4,
        "no.json",
        include_str!("../examples/no.json"),
        r#"{"ok":true,"answer":{"caller":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","attending":false,"reason":"Why tho?","height":4,"timestamp_ms":1795000004000},"replaced":true}"#,
    ),
    (
        "anonymous",
        ANON,
        5,
        "list.json",
        include_str!("../examples/list.json"),
        r#"{"ok":true,"answers":[{"caller":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","attending":false,"reason":"Why tho?","height":4,"timestamp_ms":1795000004000},{"caller":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","attending":false,"reason":"Why tho?","height":1,"timestamp_ms":1795000001000}],"attending":0,"not_attending":2,"next":null}"#,
    ),
    (
        "bob",
        BOB,
        5,
        "get.json",
        include_str!("../examples/get.json"),
        r#"{"ok":true,"answer":{"caller":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","attending":false,"reason":"Why tho?","height":1,"timestamp_ms":1795000001000}}"#,
    ),
];

#[test]
fn example_session() {
    mock::reset();
    for (i, (name, caller, height, file, input, expected)) in SESSION.iter().enumerate() {
        let out = call_as(*caller, *height, input);
        assert_eq!(out, *expected, "step {} ({name}, {file})", i + 1);
    }
    // The documented state layout: one answer per caller, and the two counters (no "m/yes":
    // a zero counter is absent).
    let keys: Vec<Vec<u8>> = mock::state().into_keys().collect();
    assert_eq!(
        keys,
        vec![answer_key(&ALICE), answer_key(&BOB), NO_KEY.to_vec()]
    );
    assert_eq!(mock::state()[NO_KEY], 2u64.to_le_bytes());
}

#[test]
fn readme_documents_the_session() {
    let readme = include_str!("../README.md");
    for (i, (name, _, height, file, input, expected)) in SESSION.iter().enumerate() {
        let row = format!(
            "| {} | {name} | {height} | `{file}` | `{}` | `{expected}` |",
            i + 1,
            input.trim()
        );
        assert!(readme.contains(&row), "README.md lacks the row\n{row}");
    }
}

#[test]
#[should_panic(expected = "guest_abort: reason_required")]
fn a_refused_request_aborts_the_call() {
    mock::reset();
    mock::with(|h| h.caller = ALICE);
    handle(br#"{"op":"rsvp","attending":false,"reason":"   "}"#);
}

#[test]
fn the_entrypoint_returns_the_response() {
    mock::reset();
    mock::with(|h| h.caller = ALICE);
    let out: Value = serde_json::from_slice(&handle(br#"{"op":"rsvp","attending":true}"#)).unwrap();
    assert_eq!(out["ok"], true);
}

#[test]
fn bad_requests_are_refused_with_a_code_and_write_nothing() {
    mock::reset();
    let cases = [
        ("", "bad_request", "EOF"),
        ("not json", "bad_request", "expected"),
        ("[1,2]", "bad_request", ""),
        (r#"{"attending":true}"#, "bad_request", "missing field `op`"),
        (
            r#"{"op":"RSVP","attending":true}"#,
            "bad_request",
            "unknown variant `RSVP`",
        ),
        (
            r#"{"op":"rsvp"}"#,
            "bad_request",
            "missing field `attending`",
        ),
        (
            r#"{"op":"rsvp","attending":"yes"}"#,
            "bad_request",
            "expected a boolean",
        ),
        (
            r#"{"op":"rsvp","attending":true,"reson":"x"}"#,
            "bad_request",
            "unknown field `reson`",
        ),
        (
            r#"{"op":"rsvp","attending":false,"reason":7}"#,
            "bad_request",
            "expected a string",
        ),
        (
            r#"{"op":"rsvp","attending":false}"#,
            "reason_required",
            "needs a reason",
        ),
        (
            r#"{"op":"rsvp","attending":false,"reason":null}"#,
            "reason_required",
            "",
        ),
        (
            r#"{"op":"rsvp","attending":false,"reason":" \t "}"#,
            "reason_required",
            "",
        ),
        (
            r#"{"op":"rsvp","attending":false,"reason":"a\nb"}"#,
            "bad_reason",
            "one line",
        ),
        (
            r#"{"op":"rsvp","attending":true,"reason":"\u0007"}"#,
            "bad_reason",
            "control",
        ),
        (r#"{"op":"list","limit":0}"#, "bad_request", "at least 1"),
        (
            r#"{"op":"list","after":"zz"}"#,
            "bad_caller",
            "64 hex digits",
        ),
        (
            r#"{"op":"get","caller":"00"}"#,
            "bad_caller",
            "64 hex digits",
        ),
    ];
    for (input, code, words) in cases {
        let e = refused(ALICE, input);
        assert_eq!(e.code, code, "{input}: {e}");
        assert!(e.message.contains(words), "{input}: {e}");
    }
    assert!(mock::state().is_empty());
    // The bad_request message says what a request looks like.
    let e = refused(ALICE, "{}");
    assert!(e.message.contains(r#"{"op":"list"}"#), "{e}");
}

#[test]
fn anonymous_calls_cannot_answer_or_ask_for_their_own() {
    mock::reset();
    assert_eq!(
        refused(ANON, r#"{"op":"rsvp","attending":true}"#).code,
        "anonymous"
    );
    assert_eq!(refused(ANON, r#"{"op":"get"}"#).code, "anonymous");
    // ... but may read everything.
    let list = json_as(ANON, 0, json!({"op":"list"}));
    assert_eq!(list["answers"], json!([]));
    let bob = json_as(ANON, 0, json!({"op":"get","caller":hex(&BOB)}));
    assert_eq!(bob, json!({"ok":true,"answer":null}));
}

#[test]
fn reasons_are_trimmed_and_bounded_in_characters() {
    mock::reset();
    let r = json_as(
        ALICE,
        0,
        json!({"op":"rsvp","attending":false,"reason":"  busy  "}),
    );
    assert_eq!(r["answer"]["reason"], "busy");
    // 280 characters of 2-byte UTF-8 are fine, 281 are not.
    let max = "é".repeat(MAX_REASON_CHARS);
    let r = json_as(
        ALICE,
        1,
        json!({"op":"rsvp","attending":false,"reason":max}),
    );
    assert_eq!(r["answer"]["reason"], max);
    let e = refused(
        ALICE,
        &json!({"op":"rsvp","attending":false,"reason":"é".repeat(MAX_REASON_CHARS + 1)})
            .to_string(),
    );
    assert_eq!(e.code, "bad_reason");
    assert_eq!(
        e.message,
        "the reason is 281 characters; the maximum is 280"
    );
    // A yes may carry a note; a blank one is no note.
    let r = json_as(
        BOB,
        2,
        json!({"op":"rsvp","attending":true,"reason":"Can't wait"}),
    );
    assert_eq!(r["answer"]["reason"], "Can't wait");
    let r = json_as(BOB, 3, json!({"op":"rsvp","attending":true,"reason":""}));
    assert_eq!(r["answer"]["reason"], Value::Null);
}

#[test]
fn re_answering_replaces_and_the_totals_follow() {
    mock::reset();
    let totals = || {
        let l = json_as(ANON, 0, json!({"op":"list"}));
        (
            l["attending"].as_u64().unwrap(),
            l["not_attending"].as_u64().unwrap(),
            l["answers"].as_array().unwrap().len(),
        )
    };
    json_as(ALICE, 0, json!({"op":"rsvp","attending":true}));
    json_as(BOB, 1, json!({"op":"rsvp","attending":true}));
    assert_eq!(totals(), (2, 0, 2));
    let r = json_as(
        ALICE,
        2,
        json!({"op":"rsvp","attending":false,"reason":"sick"}),
    );
    assert_eq!(r["replaced"], true);
    assert_eq!(totals(), (1, 1, 2));
    json_as(
        ALICE,
        3,
        json!({"op":"rsvp","attending":false,"reason":"still sick"}),
    );
    assert_eq!(totals(), (1, 1, 2));
    json_as(
        BOB,
        4,
        json!({"op":"rsvp","attending":false,"reason":"me too"}),
    );
    assert_eq!(totals(), (0, 2, 2));
    assert!(
        !mock::state().contains_key(YES_KEY),
        "a zero counter is deleted"
    );
    let alice = json_as(
        BOB,
        5,
        json!({"op":"get","caller":hex(&ALICE).to_uppercase()}),
    );
    assert_eq!(alice["answer"]["reason"], "still sick");
    assert_eq!(alice["answer"]["height"], 3);
    assert_eq!(alice["answer"]["timestamp_ms"], T0 + 3000);
}

#[test]
fn list_pages_through_every_answer() {
    mock::reset();
    let callers: Vec<[u8; 32]> = (1..=25u8).map(|i| [i; 32]).collect();
    for (h, c) in callers.iter().enumerate() {
        json_as(
            *c,
            h as u64,
            json!({"op":"rsvp","attending":h % 3 != 0,"reason":"r"}),
        );
    }
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = json_as(ANON, 0, json!({"op":"list","after":after,"limit":10}));
        assert_eq!(page["attending"], 16);
        assert_eq!(page["not_attending"], 9);
        for a in page["answers"].as_array().unwrap() {
            seen.push(a["caller"].as_str().unwrap().to_string());
        }
        if page["next"].is_null() {
            break;
        }
        after = page["next"].clone();
    }
    let want: Vec<String> = callers.iter().map(|c| hex(c)).collect();
    assert_eq!(seen, want);
    // A full last page has no cursor; a limit above the maximum is reduced to it.
    let page = json_as(ANON, 0, json!({"op":"list","limit":25}));
    assert_eq!(page["next"], Value::Null);
    let page = json_as(ANON, 0, json!({"op":"list","limit":1_000_000}));
    assert_eq!(page["answers"].as_array().unwrap().len(), 25);
}

#[test]
#[should_panic(expected = "trap read_only")]
fn answering_in_a_read_only_call_traps() {
    mock::reset();
    mock::with(|h| {
        h.caller = ALICE;
        h.read_only = true;
    });
    handle(br#"{"op":"rsvp","attending":true}"#);
}

#[test]
fn corrupt_state_is_reported_not_misread() {
    mock::reset();
    mock::with(|h| {
        h.state.insert(answer_key(&ALICE), b"not json".to_vec());
    });
    assert_eq!(refused(ANON, r#"{"op":"list"}"#).code, "corrupt_state");
    mock::reset();
    json_as(ALICE, 0, json!({"op":"rsvp","attending":true}));
    mock::with(|h| {
        h.state.remove(YES_KEY);
    });
    assert_eq!(
        refused(ALICE, r#"{"op":"rsvp","attending":false,"reason":"x"}"#).code,
        "corrupt_state"
    );
}
