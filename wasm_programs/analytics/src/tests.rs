use super::*;

fn call(input: &str) -> String {
    String::from_utf8(handle(input.as_bytes())).expect("responses are UTF-8")
}

/// The examples documented in README.md: (file, input, exact output).
const EXAMPLES: &[(&str, &str, &str)] = &[
    (
        "text.json",
        include_str!("../examples/text.json"),
        r#"{"text":{"bytes":74,"blake3":"6e16dccd8696ea32c5e8bacf70b3cf9558a11df3d5ba4b7324c5d653b8da9aa8","tokens":15,"unique_tokens":10,"top_tokens":[["the",4],["dog",2],["fox",2]]}}"#,
    ),
    (
        "numbers.json",
        include_str!("../examples/numbers.json"),
        r#"{"numbers":{"count":8,"mean":5.0,"variance":4.571428571428571,"min":2.0,"max":9.0}}"#,
    ),
    (
        "full.json",
        include_str!("../examples/full.json"),
        r#"{"text":{"bytes":60,"blake3":"bc2b372826ea7d5713c22ae27f565b9364303156f429a7cd4700cde0b5796092","tokens":16,"unique_tokens":8,"top_tokens":[["be",4],["to",4]]},"numbers":{"count":3,"mean":3.0833333333333335,"variance":39.395833333333336,"min":-2.25,"max":10.0},"lz4":{"original_size":60,"compressed_size":47,"compressed_base64":"0XRvIGJlIG9yIG5vdCANABIsBwAJFADwBzogdGhhdCBpcyB0aGUgcXVlc3Rpb24="}}"#,
    ),
    (
        "bad.json",
        include_str!("../examples/bad.json"),
        r#"{"ok":false,"error":"bad_request","message":"invalid request: invalid type: string \"twelve\", expected a sequence at line 1 column 19"}"#,
    ),
];

#[test]
fn examples() {
    for (file, input, expected) in EXAMPLES {
        assert_eq!(call(input), *expected, "{file}");
    }
}

#[test]
fn readme_documents_the_examples() {
    let readme = include_str!("../README.md");
    for (file, input, expected) in EXAMPLES {
        let block = format!("`{file}`:\n```json\n{input}```\n→\n```json\n{expected}\n```");
        assert!(readme.contains(&block), "README.md lacks\n{block}");
    }
}

#[test]
fn sections_follow_the_input() {
    assert_eq!(call("{}"), "{}");
    assert_eq!(call(r#"{"compress":true}"#), "{}");
    let v: serde_json::Value =
        serde_json::from_str(&call(r#"{"text":"","compress":true}"#)).unwrap();
    assert_eq!(v["text"]["tokens"], 0);
    assert_eq!(v["text"]["top_tokens"], serde_json::json!([]));
    assert_eq!(
        v["text"]["blake3"],
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    );
    assert_eq!(v["lz4"]["original_size"], 0);
    assert!(v.get("numbers").is_none());
}

#[test]
fn tokenisation() {
    let t: Vec<String> = tokens("Ünïcode_DATA 42x, x42;;ÉTÉ--été\tŒuvre").collect();
    assert_eq!(t, ["ünïcode", "data", "42x", "x42", "été", "été", "œuvre"]);
    let s = text_stats("b a c b a c d", 2);
    assert_eq!(s.top_tokens, [("a".to_string(), 2), ("b".to_string(), 2)]);
    assert_eq!(text_stats("b a", 0).top_tokens, []);
    assert_eq!(text_stats("b a", usize::MAX).top_tokens.len(), 2);
    let huge_top = call(r#"{"text":"x","top":18446744073709551615}"#);
    assert!(huge_top.contains(r#""top_tokens":[["x",1]]"#), "{huge_top}");
}

#[test]
fn number_edge_cases() {
    assert_eq!(
        call(r#"{"numbers":[]}"#),
        r#"{"numbers":{"count":0,"mean":null,"variance":null,"min":null,"max":null}}"#
    );
    assert_eq!(
        call(r#"{"numbers":[42]}"#),
        r#"{"numbers":{"count":1,"mean":42.0,"variance":null,"min":42.0,"max":42.0}}"#
    );
    // The first of equal values wins.
    let s = number_stats(&[0.0, -0.0]);
    assert!(s.min.unwrap().is_sign_positive() && s.max.unwrap().is_sign_positive());
    let s = number_stats(&[-0.0, 0.0]);
    assert!(s.min.unwrap().is_sign_negative() && s.max.unwrap().is_sign_negative());
    // Overflow gives null rather than a non-JSON number.
    let s = number_stats(&[f64::MAX, f64::MAX]);
    assert_eq!((s.mean, s.variance), (None, None));
}

#[test]
fn lz4_roundtrips() {
    let text = "abc".repeat(1000) + "the end";
    let l = lz4(&text);
    let block = BASE64.decode(&l.compressed_base64).unwrap();
    assert_eq!(block.len(), l.compressed_size);
    assert!(l.compressed_size < 100);
    let back = lz4_flex::block::decompress(&block, l.original_size).unwrap();
    assert_eq!(back, text.as_bytes());
    let full: serde_json::Value = serde_json::from_str(EXAMPLES[2].2).unwrap();
    let block = BASE64
        .decode(full["lz4"]["compressed_base64"].as_str().unwrap())
        .unwrap();
    let back = lz4_flex::block::decompress(&block, 60).unwrap();
    assert_eq!(
        back,
        b"to be or not to be, to be or not to be: that is the question"
    );
}

#[test]
fn bad_inputs_are_json_errors() {
    for input in [
        "",
        "nope",
        "[]",
        r#"{"numbers":[1,"2"]}"#,
        r#"{"numbers":[1e999]}"#,
        r#"{"text":5}"#,
        r#"{"top":-1}"#,
        r#"{"compress":"yes"}"#,
    ] {
        let v: serde_json::Value = serde_json::from_str(&call(input)).unwrap();
        assert_eq!(v["ok"], false, "{input}");
        assert_eq!(v["error"], "bad_request", "{input}");
    }
}
