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

#[cfg(test)]
mod tests {
    use super::*;

    /// `(namespace_method, [params])` of every `#[method]` and `#[subscription]` in `api.rs`,
    /// read from its source: the table must say exactly what the traits say.
    fn declared() -> Vec<(String, Vec<String>, Kind)> {
        let source = include_str!("api.rs");
        let mut out = Vec::new();
        let mut namespace = String::new();
        let mut pending: Option<(String, Kind, Option<String>)> = None;
        let mut signature = String::new();
        for line in source.lines().map(str::trim) {
            if let Some(rest) = line.split("namespace = \"").nth(1) {
                namespace = rest.split('"').next().unwrap_or_default().to_string();
            }
            let attribute = |kind: Kind| {
                let name = line
                    .split("name = \"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .to_string();
                let unsubscribe = line
                    .split("unsubscribe = \"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .map(str::to_string);
                Some((name, kind, unsubscribe))
            };
            if line.starts_with("#[method(") {
                pending = attribute(Kind::Call);
                signature.clear();
                continue;
            }
            if line.starts_with("#[subscription(") {
                pending = attribute(Kind::Subscribe);
                signature.clear();
                continue;
            }
            if pending.is_some() && !line.starts_with("///") {
                signature.push_str(line);
                if line.ends_with(';')
                    && let Some((name, kind, unsubscribe)) = pending.take()
                {
                    let args = signature
                        .split_once("&self")
                        .map(|(_, rest)| rest)
                        .unwrap_or_default();
                    let args = args.split(") ->").next().unwrap_or_default();
                    let params: Vec<String> = args
                        .split(',')
                        .filter_map(|a| a.split(':').next())
                        .map(|a| a.trim().to_string())
                        .filter(|a| !a.is_empty())
                        .collect();
                    out.push((format!("{namespace}_{name}"), params, kind));
                    if let Some(u) = unsubscribe {
                        out.push((format!("{namespace}_{u}"), vec![], Kind::Unsubscribe));
                    }
                }
            }
        }
        out
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
