//! Who may call what: API token scopes, the token wire types, and the method → scope table
//! (the one place that decides which scope a JSON-RPC method needs; docs/RPC.md shows it).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a token allows. Every RPC method needs exactly one scope ([`scope_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything that only reads: node info, blobs, programs, state, receipts, jobs, DAG.
    Read,
    /// Calls and jobs: `program_execute`, `job_submit`, `job_cancel`.
    Execute,
    /// `program_deploy`.
    Deploy,
    /// Storing blobs: `blob_put` and the chunked upload.
    Upload,
    /// Dialing other nodes: `peer_connect`.
    Peers,
    /// Managing tokens.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Read,
        Scope::Execute,
        Scope::Deploy,
        Scope::Upload,
        Scope::Peers,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Execute => "execute",
            Scope::Deploy => "deploy",
            Scope::Upload => "upload",
            Scope::Peers => "peers",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scope `{s}` (scopes: {})",
                    Scope::ALL.map(Scope::as_str).join(", ")
                )
            })
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);

    pub fn all() -> Self {
        Self::from_iter(Scope::ALL)
    }

    pub fn allows(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn list(self) -> Vec<Scope> {
        Scope::ALL.into_iter().filter(|s| self.allows(*s)).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

/// The scope a JSON-RPC method needs, or None for a method this node does not serve (the
/// server then answers "method not found" as usual). Unsubscribe methods need nothing: they
/// only end what the same connection was allowed to start. Read from the method table
/// ([`crate::methods::METHODS`]).
pub fn scope_of(method: &str) -> Option<Option<Scope>> {
    crate::methods::method(method).map(|m| m.scope)
}

/// Prefix of every API token, so a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "onvm_";

/// What `token_create` asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// At least one scope.
    pub scopes: Vec<Scope>,
    /// Lifetime in seconds from now; None: until revoked.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// Browser origins allowed to use the token (e.g. `https://app.example`); empty: any origin
    /// that `rpc.allowed_origins` admits.
    #[serde(default)]
    pub origins: Vec<String>,
    /// A name to recognise the token by in `token_list`.
    #[serde(default)]
    pub label: Option<String>,
}

/// A token as `token_list` shows it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public id (16 hex), the part of the token before the secret.
    pub id: String,
    pub scopes: Vec<Scope>,
    pub origins: Vec<String>,
    pub label: Option<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
}

/// The answer to `token_create`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// `onvm_<id>_<secret>`: send as `Authorization: Bearer …` or as the `token` URL parameter.
    pub token: String,
    pub info: TokenInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_unknown_names_are_listed() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
        }
        let err = "write".parse::<Scope>().unwrap_err();
        assert!(
            err.contains("read, execute, deploy, upload, peers, admin"),
            "{err}"
        );
        let set: Scopes = [Scope::Read, Scope::Deploy].into_iter().collect();
        assert!(set.allows(Scope::Read) && set.allows(Scope::Deploy));
        assert!(!set.allows(Scope::Admin));
        assert_eq!(set.list(), vec![Scope::Read, Scope::Deploy]);
        assert_eq!(Scopes::all().list().len(), 6);
    }

    #[test]
    fn writes_need_their_own_scope() {
        assert_eq!(scope_of("program_deploy"), Some(Some(Scope::Deploy)));
        assert_eq!(scope_of("program_execute"), Some(Some(Scope::Execute)));
        assert_eq!(scope_of("blob_upload_append"), Some(Some(Scope::Upload)));
        assert_eq!(scope_of("peer_connect"), Some(Some(Scope::Peers)));
        assert_eq!(scope_of("peer_list"), Some(Some(Scope::Read)));
        assert_eq!(scope_of("dag_unsubscribe"), Some(None));
        assert_eq!(scope_of("no_such_method"), None);
    }
}
