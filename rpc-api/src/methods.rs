//! The one table of the JSON-RPC methods a node serves: each method's name, its parameters in
//! order (the names a by-name call uses), the scope a token needs ([`crate::auth::scope_of`]
//! reads it from here) and its kind. The server refuses parameters a method does not take
//! ([`check_params`]): a typo such as `{"option": …}` for `options` must fail loudly, not run
//! the call with defaults. A test holds the table against the traits in `api.rs`.

use crate::auth::Scope;

/// What kind of method it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A plain call with one answer.
    Call,
    /// Opens a subscription (WebSocket only).
    Subscribe,
    /// Ends a subscription of the same connection: needs no scope.
    Unsubscribe,
}

/// One method of the node's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSpec {
    pub name: &'static str,
    /// Parameter names in positional order.
    pub params: &'static [&'static str],
    /// None only for unsubscribe methods.
    pub scope: Option<Scope>,
    pub kind: Kind,
}

const fn call(name: &'static str, params: &'static [&'static str], scope: Scope) -> MethodSpec {
    MethodSpec {
        name,
        params,
        scope: Some(scope),
        kind: Kind::Call,
    }
}

const fn subscribe(
    name: &'static str,
    params: &'static [&'static str],
    scope: Scope,
) -> MethodSpec {
    MethodSpec {
        name,
        params,
        scope: Some(scope),
        kind: Kind::Subscribe,
    }
}

const fn unsubscribe(name: &'static str) -> MethodSpec {
    MethodSpec {
        name,
        params: &["subscription"],
        scope: None,
        kind: Kind::Unsubscribe,
    }
}

use Scope::{Admin, Deploy, Execute, Peers, Read, Upload};

/// Every method, grouped by namespace as in `api.rs`.
pub const METHODS: &[MethodSpec] = &[
    call("node_info", &[], Read),
    call("node_health", &[], Read),
    call("node_metrics", &[], Read),
    call("blob_put", &["data_base64", "mime"], Upload),
    call("blob_upload_begin", &["size", "mime"], Upload),
    call(
        "blob_upload_append",
        &["upload_id", "offset", "data_base64"],
        Upload,
    ),
    call("blob_upload_status", &["upload_id"], Upload),
    call("blob_upload_finish", &["upload_id", "expected_id"], Upload),
    call("blob_upload_abort", &["upload_id"], Upload),
    call("blob_get", &["id", "offset", "length"], Read),
    call("blob_stat", &["id"], Read),
    call("blob_list", &["cursor", "limit"], Read),
    call("program_deploy", &["request"], Deploy),
    call("program_info", &["program_id"], Read),
    call("program_list", &["cursor", "limit"], Read),
    call(
        "program_execute",
        &["program_id", "input_base64", "options"],
        Execute,
    ),
    call("program_committee", &["program_id"], Read),
    call("state_get", &["program_id", "key_base64"], Read),
    call("state_root", &["program_id"], Read),
    call("state_proof", &["program_id", "key_base64"], Read),
    call("receipt_get", &["receipt_id"], Read),
    call(
        "receipt_list",
        &["program_id", "before_height", "limit"],
        Read,
    ),
    call("receipt_verify", &["receipt"], Read),
    subscribe("receipt_subscribe", &["program_id", "from_seq"], Read),
    unsubscribe("receipt_unsubscribe"),
    call("receipt_input", &["receipt_id"], Read),
    call("receipt_evidence", &["program_id"], Read),
    call("job_submit", &["request"], Execute),
    call("job_status", &["job_id"], Read),
    call("job_output", &["job_id"], Read),
    call("job_cancel", &["job_id"], Execute),
    call("job_list", &["filter", "cursor", "limit"], Read),
    call("job_logs", &["job_id"], Read),
    subscribe("job_subscribe", &["job_id", "from_seq"], Read),
    unsubscribe("job_unsubscribe"),
    subscribe("job_subscribe_all", &["filter", "from_seq"], Read),
    unsubscribe("job_unsubscribe_all"),
    call("peer_connect", &["ticket"], Peers),
    call("peer_list", &[], Read),
    call("dag_heads", &[], Read),
    call("dag_get", &["id"], Read),
    subscribe("dag_subscribe", &["from_seq"], Read),
    unsubscribe("dag_unsubscribe"),
    call("token_create", &["request"], Admin),
    call("token_list", &[], Admin),
    call("token_revoke", &["id"], Admin),
    call("rpc.discover", &[], Read),
];

/// The method called `name`, if the node serves one.
pub fn method(name: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|m| m.name == name)
}

/// Checks the raw JSON `params` of a call to `spec`: named parameters it does not take, or
/// more positional ones than it has, are refused with a message naming them. Which values
/// are valid is the method's own business. Unsubscribe methods are left to the server.
pub fn check_params(spec: &MethodSpec, params: Option<&str>) -> Result<(), String> {
    if spec.kind == Kind::Unsubscribe {
        return Ok(());
    }
    use serde::de::IgnoredAny;
    let Some(raw) = params.map(str::trim_start) else {
        return Ok(());
    };
    // Every call passes here: read the names or the count only, skipping the values without
    // building them (a large input is not copied into a JSON tree to be thrown away).
    // Malformed params are the server's parse error to report.
    if raw.starts_with('{') {
        let Ok(map) = serde_json::from_str::<
            std::collections::BTreeMap<std::borrow::Cow<'_, str>, IgnoredAny>,
        >(raw) else {
            return Ok(());
        };
        let unknown: Vec<&str> = map
            .keys()
            .map(|k| k.as_ref())
            .filter(|k| !spec.params.contains(k))
            .collect();
        return if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} takes no parameter named {}: its parameters are {}",
                spec.name,
                quote_all(&unknown),
                describe(spec.params)
            ))
        };
    }
    let Ok(items) = serde_json::from_str::<Vec<IgnoredAny>>(raw) else {
        return Ok(());
    };
    if items.len() > spec.params.len() {
        return Err(format!(
            "{} takes at most {} positional parameters ({}), got {}",
            spec.name,
            spec.params.len(),
            describe(spec.params),
            items.len()
        ));
    }
    Ok(())
}

fn quote_all(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(params: &[&str]) -> String {
    if params.is_empty() {
        "none".into()
    } else {
        quote_all(params)
    }
}

/// One method as `api.rs` declares it: its documentation and typed parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    pub kind: Kind,
    /// The `///` lines above it, joined.
    pub doc: String,
    /// `(name, Rust type)` in order.
    pub params: Vec<(String, String)>,
}

/// Every `#[method]` and `#[subscription]` of `api.rs`, read from its source (compiled in):
/// the documentation `rpc.discover` serves is the traits' own, and a test holds [`METHODS`]
/// to exactly what the traits declare.
pub fn declared_in_api() -> Vec<Declared> {
    let source = include_str!("api.rs");
    let mut out = Vec::new();
    let mut namespace = String::new();
    let mut separator = "_".to_string();
    let mut doc: Vec<&str> = Vec::new();
    let mut pending: Option<(String, Kind, Option<String>, String)> = None;
    let mut signature = String::new();
    for line in source.lines().map(str::trim) {
        let quoted = |key: &str| {
            line.split(&format!("{key} = \""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        };
        if let Some(ns) = quoted("namespace") {
            namespace = ns;
            separator = quoted("namespace_separator").unwrap_or_else(|| "_".into());
        }
        if pending.is_none()
            && let Some(text) = line.strip_prefix("///")
        {
            doc.push(text.trim());
            continue;
        }
        let kind = if line.starts_with("#[method(") {
            Some(Kind::Call)
        } else if line.starts_with("#[subscription(") {
            Some(Kind::Subscribe)
        } else {
            None
        };
        if let Some(kind) = kind {
            if let Some(name) = quoted("name") {
                pending = Some((name, kind, quoted("unsubscribe"), doc.join(" ")));
            }
            doc.clear();
            signature.clear();
            continue;
        }
        if pending.is_none() {
            if !line.starts_with('#') {
                doc.clear();
            }
            continue;
        }
        signature.push_str(line);
        if line.ends_with(';')
            && let Some((name, kind, unsubscribe, doc)) = pending.take()
        {
            let args = signature
                .split_once("&self")
                .map(|(_, rest)| rest)
                .unwrap_or_default();
            let args = args.rsplit_once(") ->").map(|(a, _)| a).unwrap_or(args);
            let params = split_top_level(args)
                .into_iter()
                .filter_map(|a| {
                    let (name, ty) = a.split_once(':')?;
                    Some((name.trim().to_string(), ty.trim().to_string()))
                })
                .filter(|(name, _)| !name.is_empty())
                .collect();
            out.push(Declared {
                name: format!("{namespace}{separator}{name}"),
                kind,
                doc,
                params,
            });
            if let Some(u) = unsubscribe {
                out.push(Declared {
                    name: format!("{namespace}{separator}{u}"),
                    kind: Kind::Unsubscribe,
                    doc: "Ends a subscription opened on this connection.".into(),
                    params: vec![("subscription".into(), "SubscriptionId".into())],
                });
            }
        }
    }
    out
}

/// Splits `a: A, b: Option<B<C, D>>` at the commas outside angle brackets.
fn split_top_level(args: &str) -> Vec<&str> {
    let (mut depth, mut start, mut parts) = (0i32, 0, Vec::new());
    for (i, c) in args.char_indices() {
        match c {
            '<' | '(' => depth += 1,
            '>' | ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&args[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&args[start..]);
    parts
}

/// A JSON Schema for a parameter of Rust type `ty`, as precise as a name allows; the
/// exact shape of structured types is in docs/RPC.md (named in `x-rust-type`).
fn schema_of(ty: &str) -> serde_json::Value {
    let inner = ty
        .strip_prefix("Option<")
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(ty);
    let base = inner.rsplit("::").next().unwrap_or(inner);
    let json_type = match base {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => Some("integer"),
        "bool" => Some("boolean"),
        "String" | "BlobId" | "ProgramId" | "ReceiptId" | "JobId" | "UploadId" | "Hash32"
        | "Base64Bytes" => Some("string"),
        _ => None,
    };
    let mut schema = serde_json::json!({ "x-rust-type": inner });
    if let Some(t) = json_type {
        schema["type"] = t.into();
    }
    schema
}

/// The OpenRPC 1.2 document `rpc.discover` answers: every method of [`METHODS`] with the
/// documentation and parameter types `api.rs` declares, and its scope and kind.
pub fn openrpc(version: &str) -> serde_json::Value {
    use serde_json::json;
    let declared = declared_in_api();
    let methods: Vec<serde_json::Value> = METHODS
        .iter()
        .map(|spec| {
            let found = declared.iter().find(|d| d.name == spec.name);
            let doc = found.map(|d| d.doc.clone()).unwrap_or_default();
            let summary = doc
                .split_once(". ")
                .map(|(first, _)| format!("{first}."))
                .unwrap_or_else(|| doc.clone());
            let params: Vec<serde_json::Value> = spec
                .params
                .iter()
                .map(|name| {
                    let ty = found
                        .and_then(|d| d.params.iter().find(|(n, _)| n == name))
                        .map(|(_, t)| t.as_str())
                        .unwrap_or("");
                    json!({
                        "name": name,
                        "required": !ty.starts_with("Option<"),
                        "schema": schema_of(ty),
                    })
                })
                .collect();
            let kind = match spec.kind {
                Kind::Call => "call",
                Kind::Subscribe => "subscription",
                Kind::Unsubscribe => "unsubscribe",
            };
            json!({
                "name": spec.name,
                "summary": summary,
                "description": doc,
                "paramStructure": "either",
                "params": params,
                "result": { "name": "result", "schema": {} },
                "x-onvm-scope": spec.scope.map(|s| s.to_string()),
                "x-onvm-kind": kind,
            })
        })
        .collect();
    json!({
        "openrpc": "1.2.6",
        "info": {
            "title": "ONVM node JSON-RPC",
            "version": version,
            "description": "JSON-RPC 2.0 over WebSocket (subscriptions) or HTTP POST. Scopes: a token (`?token=` or `Authorization: Bearer`) must carry `x-onvm-scope`; see docs/RPC.md.",
        },
        "methods": methods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<(String, Vec<String>, Kind)> {
        declared_in_api()
            .into_iter()
            .map(|d| {
                (
                    d.name,
                    d.params.into_iter().map(|(n, _)| n).collect(),
                    d.kind,
                )
            })
            .collect()
    }

    #[test]
    fn the_table_is_exactly_the_traits() {
        let declared = declared();
        assert_eq!(declared.len(), METHODS.len(), "{declared:?}");
        for (name, params, kind) in &declared {
            let spec = method(name).unwrap_or_else(|| panic!("{name} is not in METHODS"));
            assert_eq!(spec.kind, *kind, "{name}");
            if *kind != Kind::Unsubscribe {
                assert_eq!(spec.params, params.as_slice(), "{name}");
            }
        }
        let mut names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), METHODS.len(), "a method is listed twice");
    }

    #[test]
    fn unknown_named_and_extra_positional_params_are_refused() {
        let execute = method("program_execute").unwrap();
        assert!(check_params(execute, None).is_ok());
        assert!(check_params(execute, Some(r#"{"program_id":"p","input_base64":""}"#)).is_ok());
        assert!(check_params(execute, Some(r#"["p","",null]"#)).is_ok());
        let typo = check_params(execute, Some(r#"{"program_id":"p","option":{}}"#)).unwrap_err();
        assert!(
            typo.contains("`option`") && typo.contains("`options`"),
            "{typo}"
        );
        let extra = check_params(execute, Some(r#"["p","",null,1]"#)).unwrap_err();
        assert!(extra.contains("at most 3"), "{extra}");
        let info = method("node_info").unwrap();
        assert!(check_params(info, Some("[]")).is_ok());
        assert!(check_params(info, Some("[1]")).is_err());
        assert!(check_params(method("job_unsubscribe").unwrap(), Some("[1,2]")).is_ok());
    }
}

#[cfg(test)]
mod discover_tests {
    use super::*;

    #[test]
    fn the_openrpc_document_lists_every_method_with_its_scope_and_docs() {
        let doc = openrpc("9.9.9");
        assert_eq!(doc["openrpc"], "1.2.6");
        let methods = doc["methods"].as_array().unwrap();
        assert_eq!(methods.len(), METHODS.len());
        for (m, spec) in methods.iter().zip(METHODS) {
            assert_eq!(m["name"], spec.name);
            assert_eq!(m["params"].as_array().unwrap().len(), spec.params.len());
            if spec.kind != Kind::Unsubscribe {
                assert!(
                    m["description"].as_str().is_some_and(|d| d.len() > 10),
                    "{} has no documentation in api.rs",
                    spec.name
                );
                assert_eq!(m["x-onvm-scope"], spec.scope.unwrap().to_string());
            }
        }
        let execute = methods
            .iter()
            .find(|m| m["name"] == "program_execute")
            .unwrap();
        assert_eq!(execute["params"][0]["required"], true);
        assert_eq!(execute["params"][0]["schema"]["type"], "string");
        assert_eq!(
            execute["params"][2]["required"], false,
            "options is an Option"
        );
        let blob_get = methods.iter().find(|m| m["name"] == "blob_get").unwrap();
        assert_eq!(blob_get["params"][1]["schema"]["type"], "integer");
        let subscribe = methods
            .iter()
            .find(|m| m["name"] == "receipt_subscribe")
            .unwrap();
        assert_eq!(subscribe["x-onvm-kind"], "subscription");
    }
}
