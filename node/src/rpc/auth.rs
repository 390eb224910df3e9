//! The front door of the JSON-RPC server: who is asking (the node's cookie, an API token, or
//! nobody), from which web origin and under which `Host`, and whether the method they call is
//! within the scopes they were granted.
//!
//! Every HTTP request (a WebSocket handshake is one) passes [`FrontDoor::admit`] before
//! jsonrpsee sees it; the [`Grant`] it yields rides in the request's extensions, which jsonrpsee
//! hands to every call on that connection, where [`ScopeLayer`] checks the method's scope
//! (`onvm_rpc_api::auth::scope_of`). Tokens are looked up in memory; revoking one takes effect
//! on the next call, also on connections already open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use jsonrpsee::MethodResponse;
use jsonrpsee::core::middleware::{Batch, BatchEntry, BatchEntryErr, Notification, RpcServiceT};
use jsonrpsee::server::{HttpBody, HttpResponse};
use jsonrpsee::types::{ErrorObjectOwned, Id, Request};
use onvm_rpc_api::Hash32;
use onvm_rpc_api::auth::{
    CreatedToken, Scope, Scopes, TOKEN_PREFIX, TokenInfo, TokenRequest, scope_of,
};
use onvm_rpc_api::error::{self as codes, rpc_error};
use serde_json::json;

use super::limits::{Bucket, ClientBuckets, Rate};
use crate::store::{Store, StoreError, TokenRecord};
use crate::util::now_ms;

/// Bytes of randomness in a token secret and in the cookie.
const SECRET_BYTES: usize = 32;
/// Bytes of a token's public id.
const ID_BYTES: usize = 8;
/// Most live tokens a node keeps: each is checked in memory on every call.
pub const MAX_TOKENS: usize = 1024;
/// Most origins one token may be bound to (each is compared on every admission).
const MAX_ORIGINS: usize = 16;
/// Longest token label and origin accepted.
const MAX_LABEL: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    BadRequest(String),
    #[error("this node already holds {MAX_TOKENS} tokens; revoke some with `onvm token revoke`")]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The API tokens of this node: persisted in the store, served from memory.
pub struct Tokens {
    store: Store,
    live: RwLock<HashMap<String, TokenRecord>>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), buf.as_mut_slice());
    hex::encode(buf)
}

impl Tokens {
    pub fn load(store: Store) -> Result<Self, StoreError> {
        let live = store
            .tokens()?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        Ok(Self {
            store,
            live: RwLock::new(live),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, TokenRecord>> {
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, TokenRecord>> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn create(&self, request: TokenRequest, now: u64) -> Result<CreatedToken, AuthError> {
        if request.scopes.is_empty() {
            return Err(AuthError::BadRequest(
                "a token needs at least one scope (read, execute, deploy, upload, peers, admin)"
                    .into(),
            ));
        }
        if request.label.as_ref().is_some_and(|l| l.len() > MAX_LABEL) {
            return Err(AuthError::BadRequest(format!(
                "label is longer than {MAX_LABEL} bytes"
            )));
        }
        if request.origins.len() > MAX_ORIGINS {
            return Err(AuthError::BadRequest(format!(
                "a token may name at most {MAX_ORIGINS} origins, got {}",
                request.origins.len()
            )));
        }
        for origin in &request.origins {
            check_origin_syntax(origin).map_err(AuthError::BadRequest)?;
        }
        let expires_at_ms = match request.expires_in_secs {
            Some(0) => {
                return Err(AuthError::BadRequest(
                    "expires_in_secs must be at least 1 second (omit it for no expiry)".into(),
                ));
            }
            Some(secs) => Some(now.saturating_add(secs.saturating_mul(1000))),
            None => None,
        };
        if self.read().len() >= MAX_TOKENS {
            return Err(AuthError::TooMany);
        }
        let mut scopes = request.scopes;
        scopes.sort();
        scopes.dedup();
        let id = random_hex(ID_BYTES);
        let secret = random_hex(SECRET_BYTES);
        let record = TokenRecord {
            id: id.clone(),
            secret_hash: Hash32::of(secret.as_bytes()),
            scopes,
            origins: request.origins,
            label: request.label,
            created_at_ms: now,
            expires_at_ms,
        };
        self.store.insert_token(&record)?;
        let info = info_of(&record);
        self.write().insert(id.clone(), record);
        Ok(CreatedToken {
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
            info,
        })
    }

    pub fn list(&self, now: u64) -> Vec<TokenInfo> {
        let mut out: Vec<TokenInfo> = self
            .read()
            .values()
            .filter(|t| t.expires_at_ms.is_none_or(|e| e > now))
            .map(info_of)
            .collect();
        out.sort_by_key(|t| t.created_at_ms);
        out
    }

    pub fn revoke(&self, id: &str) -> Result<bool, AuthError> {
        let id = id.strip_prefix(TOKEN_PREFIX).unwrap_or(id);
        let id = id.split('_').next().unwrap_or(id);
        let existed = self.store.remove_token(id)?;
        Ok(self.write().remove(id).is_some() || existed)
    }

    /// The record of a presented token string, if it is one of ours and still valid.
    fn check(&self, presented: &str, now: u64) -> Result<TokenRecord, String> {
        let rest = presented
            .strip_prefix(TOKEN_PREFIX)
            .ok_or("not an ONVM token (they start with `onvm_`)")?;
        let (id, secret) = rest
            .split_once('_')
            .ok_or("malformed token (expected onvm_<id>_<secret>)")?;
        let live = self.read();
        let record = live
            .get(id)
            .ok_or("unknown or revoked token (see `onvm token list`)")?;
        if record.secret_hash != Hash32::of(secret.as_bytes()) {
            return Err("unknown or revoked token (see `onvm token list`)".into());
        }
        if record.expires_at_ms.is_some_and(|e| e <= now) {
            return Err("this token has expired; create a new one with `onvm token create`".into());
        }
        Ok(record.clone())
    }

    fn is_live(&self, id: &str, now: u64) -> bool {
        self.read()
            .get(id)
            .is_some_and(|t| t.expires_at_ms.is_none_or(|e| e > now))
    }
}

fn info_of(t: &TokenRecord) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        scopes: t.scopes.clone(),
        origins: t.origins.clone(),
        label: t.label.clone(),
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms,
    }
}

/// `scheme://host[:port]`, as browsers send it in `Origin`.
pub(crate) fn check_origin_syntax(origin: &str) -> Result<(), String> {
    let ok = origin.len() <= MAX_LABEL
        && (origin.starts_with("http://") || origin.starts_with("https://"))
        && !origin.ends_with('/')
        && origin
            .split("://")
            .nth(1)
            .is_some_and(|h| !h.is_empty() && !h.contains('/') && !h.contains(char::is_whitespace));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{origin}` is not an origin: use scheme://host[:port] with no path, e.g. https://app.example or http://localhost:5173"
        ))
    }
}

/// What the front door lets through, from `[rpc]`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// false (`run-node --no-auth`, `onvm dev`): every method is open to everyone.
    pub auth: bool,
    /// Scopes of a request that presents no token.
    pub anonymous: Scopes,
    /// Browser origins admitted besides the node's own (`*`: any, including `null`).
    pub origins: Vec<String>,
    /// Host names admitted in `Host` besides `localhost` and IP literals.
    pub hosts: Vec<String>,
    /// Most concurrent requests and WebSocket connections from one IP address.
    pub max_per_ip: usize,
}

/// The access a request was admitted with; carried in the request extensions to every call.
#[derive(Debug, Clone)]
pub struct Grant {
    pub scopes: Scopes,
    /// The token it came from (re-checked on every call, so revocation is immediate).
    pub token: Option<String>,
    /// Whether a token (or the cookie) was presented at all: shapes the refusal message.
    pub presented: bool,
    /// Whose rate limit the calls count against (`token:<id>` or `ip:<address>`); None for
    /// the operator's cookie, which is never limited.
    pub client: Option<String>,
}

/// Who a grant's holder is, as recorded for what it creates (jobs, uploads): its API token
/// (`token:<id>`), or its IP address when it presented none (`ip:<address>`); the operator's
/// cookie is `operator`.
pub fn owner(grant: &Grant) -> String {
    grant.client.clone().unwrap_or_else(|| "operator".into())
}

/// Whether `grant` may cancel or touch something `owner` created: its owner, or the operator
/// (the cookie, or any `admin` token). Something with no owner recorded on this node (created
/// through another node) is the operator's business only.
pub fn may_touch(grant: &Grant, owner: Option<&str>) -> bool {
    let operator = grant.client.is_none() || grant.scopes.allows(Scope::Admin);
    operator || owner.is_some_and(|o| grant.client.as_deref() == Some(o))
}

/// Why a request was turned away before reaching JSON-RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

impl Refusal {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    pub fn into_response(self) -> HttpResponse {
        let mut response = HttpResponse::new(HttpBody::from(format!("{}\n", self.reason)));
        *response.status_mut() =
            http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::FORBIDDEN);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// The outcome of admitting one HTTP request.
#[derive(Debug)]
pub enum Admission {
    /// Pass it to JSON-RPC with this grant; `cors` is the origin to echo in
    /// `Access-Control-Allow-Origin` (an admitted browser request).
    Pass { grant: Grant, cors: Option<String> },
    /// A CORS preflight from an admitted origin: answer it here.
    Preflight { origin: String },
}

/// Counts what each IP address holds open; a permit is released when its last clone drops
/// (a WebSocket's permit lives as long as the connection).
#[derive(Debug, Default)]
pub struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

#[derive(Debug)]
pub struct IpPermit {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl PerIp {
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Arc<IpPermit>> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Arc::new(IpPermit {
            owner: self.clone(),
            ip,
        }))
    }
}

pub struct FrontDoor {
    pub policy: Policy,
    pub tokens: Arc<Tokens>,
    /// The secret in this node's cookie file: the operator's CLI, with every scope.
    pub cookie: Option<String>,
    pub per_ip: Arc<PerIp>,
}

impl FrontDoor {
    /// Checks `Host`, `Origin` and the presented credential of one HTTP request. Reads the
    /// token from `Authorization: Bearer` or the `token` URL parameter (browsers cannot set
    /// WebSocket headers) and removes the parameter, so no later log line carries it.
    pub fn admit<B>(
        &self,
        request: &mut http::Request<B>,
        remote: IpAddr,
        now: u64,
    ) -> Result<Admission, Refusal> {
        let headers = request.headers();
        // HTTP/2 (cleartext h2 included) names the host in `:authority`, which arrives as the
        // URI's authority with no Host header: it is checked the same way.
        let host = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| request.uri().authority().map(|a| a.to_string()));
        if let Some(host) = &host
            && !host_allowed(host, &self.policy.hosts)
        {
            return Err(Refusal::new(
                403,
                format!(
                    "Host `{host}` is not served here: use an IP address or localhost, or add the name to rpc.allowed_hosts"
                ),
            ));
        }
        let origin = headers
            .get(http::header::ORIGIN)
            .map(|o| o.to_str().unwrap_or("(not text)").to_string());
        if let Some(origin) = &origin
            && !self.origin_allowed(origin, host.as_deref())
        {
            return Err(Refusal::new(
                403,
                format!(
                    "web origin `{origin}` may not use this node: its operator can add it to rpc.allowed_origins"
                ),
            ));
        }
        if request.method() == http::Method::OPTIONS
            && let Some(origin) = origin.clone()
        {
            return Ok(Admission::Preflight { origin });
        }
        let presented = take_token(request);
        let by_address = Some(format!("ip:{remote}"));
        let grant = match presented {
            // Without auth every method is open: a presented credential (perhaps a stale
            // cookie of an earlier node on this port) changes nothing and is not checked.
            _ if !self.policy.auth => Grant {
                scopes: Scopes::all(),
                token: None,
                presented: false,
                client: by_address,
            },
            Some(token) => self.grant_for(&token, origin.as_deref(), now)?,
            None => Grant {
                scopes: self.policy.anonymous,
                token: None,
                presented: false,
                client: by_address,
            },
        };
        Ok(Admission::Pass {
            grant,
            cors: origin,
        })
    }

    fn grant_for(&self, token: &str, origin: Option<&str>, now: u64) -> Result<Grant, Refusal> {
        if let Some(cookie) = &self.cookie
            && constant_time_eq(token.as_bytes(), cookie.as_bytes())
        {
            return Ok(Grant {
                scopes: Scopes::all(),
                token: None,
                presented: true,
                client: None,
            });
        }
        let record = self.tokens.check(token, now).map_err(|why| {
            Refusal::new(401, format!("the presented API token was refused: {why}"))
        })?;
        // A token bound to web origins is a page's credential: it works only from those
        // pages, never from a client that names no origin (a copied token must not become a
        // key for any script or tool).
        if !record.origins.is_empty() {
            match origin {
                Some(origin) if record.origins.iter().any(|o| o == origin) => {}
                Some(origin) => {
                    return Err(Refusal::new(
                        403,
                        format!("this token is bound to other web origins than `{origin}`"),
                    ));
                }
                None => {
                    return Err(Refusal::new(
                        403,
                        format!(
                            "this token is bound to the web origins {:?} and this request names none: use it from those pages, or create a token without origins for other clients",
                            record.origins
                        ),
                    ));
                }
            }
        }
        Ok(Grant {
            scopes: record.scopes.iter().copied().collect(),
            client: Some(format!("token:{}", record.id)),
            token: Some(record.id),
            presented: true,
        })
    }

    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        if self.policy.origins.iter().any(|o| o == "*" || o == origin) {
            return true;
        }
        // The node's own pages (same origin as the URL the browser dialed).
        host.is_some_and(|host| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host)
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `localhost`, an IP literal, or a configured name (DNS rebinding only works with names).
fn host_allowed(host: &str, extra: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok()
        || extra.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Takes the token out of `Authorization: Bearer …` or the `token=` URL parameter.
fn take_token<B>(request: &mut http::Request<B>) -> Option<String> {
    let bearer = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    let query = request.uri().query().map(str::to_string);
    let mut from_query = None;
    if let Some(query) = query {
        let (tokens, rest): (Vec<&str>, Vec<&str>) =
            query.split('&').partition(|p| p.starts_with("token="));
        if let Some(t) = tokens.first() {
            from_query = Some(t.trim_start_matches("token=").to_string());
            let mut parts = request.uri().clone().into_parts();
            let path = request.uri().path();
            let rebuilt = if rest.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", rest.join("&"))
            };
            if let Ok(pq) = rebuilt.parse() {
                parts.path_and_query = Some(pq);
                if let Ok(uri) = http::Uri::from_parts(parts) {
                    *request.uri_mut() = uri;
                }
            }
        }
    }
    request.headers_mut().remove(http::header::AUTHORIZATION);
    bearer.or(from_query)
}

/// Adds the CORS headers an admitted browser origin needs to read the response.
pub fn decorate(response: &mut HttpResponse, origin: &str) {
    if let Ok(value) = http::HeaderValue::from_str(origin) {
        let headers = response.headers_mut();
        headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(http::header::VARY, http::HeaderValue::from_static("Origin"));
    }
}

/// The answer to an admitted CORS preflight.
pub fn preflight(origin: &str) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::empty());
    *response.status_mut() = http::StatusCode::NO_CONTENT;
    decorate(&mut response, origin);
    let headers = response.headers_mut();
    headers.insert(
        http::header::ACCESS_CONTROL_ALLOW_METHODS,
        http::HeaderValue::from_static("POST, GET, OPTIONS"),
    );
    headers.insert(
        http::header::ACCESS_CONTROL_ALLOW_HEADERS,
        http::HeaderValue::from_static("content-type, authorization"),
    );
    headers.insert(
        http::header::ACCESS_CONTROL_MAX_AGE,
        http::HeaderValue::from_static("600"),
    );
    response
}

/// The refusal of parameters `method` does not take (`onvm_rpc_api::methods::check_params`),
/// or None.
fn unknown_params(method: &str, params: Option<&str>) -> Option<ErrorObjectOwned> {
    let spec = onvm_rpc_api::methods::method(method)?;
    let why = onvm_rpc_api::methods::check_params(spec, params).err()?;
    Some(rpc_error(
        codes::INVALID_PARAMS,
        "unknown_params",
        why,
        json!({"params": spec.params}),
    ))
}

/// Why `grant` may not call `method`, or None if it may.
fn refuse_call(
    grant: Option<&Grant>,
    tokens: &Tokens,
    method: &str,
    now: u64,
) -> Option<ErrorObjectOwned> {
    let Some(Some(scope)) = scope_of(method) else {
        return None;
    };
    let Some(grant) = grant else {
        return Some(forbidden(
            method,
            scope,
            "the request was not admitted".into(),
        ));
    };
    if let Some(id) = &grant.token
        && !tokens.is_live(id, now)
    {
        return Some(forbidden(
            method,
            scope,
            "the token of this connection was revoked or has expired".into(),
        ));
    }
    if grant.scopes.allows(scope) {
        return None;
    }
    let why = if grant.presented {
        format!("this token has only: {}", scope_names(grant.scopes))
    } else {
        format!(
            "calls without a token may only use: {}. Send a token as `Authorization: Bearer onvm_…` or as `?token=` in the URL; the operator creates one with `onvm token create --scope {scope}` (the node's own CLI uses its cookie file)",
            scope_names(grant.scopes)
        )
    };
    Some(forbidden(method, scope, why))
}

fn scope_names(scopes: Scopes) -> String {
    scopes
        .list()
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn forbidden(method: &str, scope: Scope, why: String) -> ErrorObjectOwned {
    rpc_error(
        codes::FORBIDDEN,
        "scope_required",
        format!("`{method}` needs scope `{scope}`: {why}"),
        json!({"method": method, "scope": scope}),
    )
}

fn no_notifications() -> ErrorObjectOwned {
    rpc_error(
        codes::INVALID_REQUEST,
        "invalid_request",
        "every request needs an `id` that is a number or a string (this node serves no notifications)",
        json!(null),
    )
}

/// Call rates of clients other than the operator.
#[derive(Clone)]
pub struct Rates {
    /// Per WebSocket connection (an HTTP request is its own connection).
    pub connection: Rate,
    /// Per API token, or per IP address of clients without one, across their connections.
    pub client: Rate,
    pub clients: Arc<ClientBuckets>,
}

/// jsonrpsee RPC middleware: checks every call (also inside batches) against its grant and
/// its client's rate limits.
#[derive(Clone)]
pub struct ScopeLayer {
    pub tokens: Arc<Tokens>,
    pub rates: Rates,
    /// `rpc.max_calls_per_connection`: the connection's share of the VM.
    pub vm_share: usize,
    /// Where each answered call's latency is recorded (`GET /metrics`).
    pub counters: Arc<crate::metrics::Counters>,
    /// Places for subscriber connections (`rpc.max_subscriber_connections`).
    pub subscribers: Arc<tokio::sync::Semaphore>,
    /// `rpc.max_subscriber_connections`, for the refusal's message.
    pub max_subscribers: usize,
}

/// The method that runs the VM on the caller's behalf (jobs run in the background, bounded by
/// the job queue instead).
const VM_METHOD: &str = "program_execute";

impl<S> tower::Layer<S> for ScopeLayer {
    type Service = ScopeCheck<S>;
    /// Called once per connection: the connection's bucket lives here.
    fn layer(&self, inner: S) -> Self::Service {
        ScopeCheck {
            inner,
            tokens: self.tokens.clone(),
            rates: self.rates.clone(),
            connection: Arc::new(Mutex::new(Bucket::full(self.rates.connection, now_ms()))),
            vm_share: Arc::new(tokio::sync::Semaphore::new(self.vm_share)),
            counters: self.counters.clone(),
            subscribers: self.subscribers.clone(),
            max_subscribers: self.max_subscribers,
        }
    }
}

#[derive(Clone)]
pub struct ScopeCheck<S> {
    inner: S,
    tokens: Arc<Tokens>,
    rates: Rates,
    connection: Arc<Mutex<Bucket>>,
    /// Turns in the VM this connection may hold at once.
    vm_share: Arc<tokio::sync::Semaphore>,
    counters: Arc<crate::metrics::Counters>,
    subscribers: Arc<tokio::sync::Semaphore>,
    max_subscribers: usize,
}

impl<S> ScopeCheck<S> {
    /// The refusal of one call: outside the grant's scopes, or over a rate limit.
    fn refuse(&self, grant: Option<&Grant>, method: &str, now: u64) -> Option<ErrorObjectOwned> {
        if let Some(refusal) = refuse_call(grant, &self.tokens, method, now) {
            return Some(refusal);
        }
        let client = grant.and_then(|g| g.client.as_deref())?;
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(self.rates.connection, now);
        let (wait, key) = match connection {
            Err(wait) => (wait, "rpc.calls_per_sec"),
            Ok(()) => match self.rates.clients.take(client, self.rates.client, now) {
                Err(wait) => (wait, "rpc.client_calls_per_sec"),
                Ok(()) => return None,
            },
        };
        Some(rpc_error(
            codes::BUSY,
            "rate_limited",
            format!("too many calls: retry in {wait} ms ({key})"),
            json!({"retry_after_ms": wait, "config_key": key}),
        ))
    }
}

impl<S> RpcServiceT for ScopeCheck<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(
        &self,
        request: Request<'a>,
    ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let refusal = self
            .refuse(
                request.extensions().get::<Grant>(),
                request.method_name(),
                now_ms(),
            )
            .or_else(|| unknown_params(request.method_name(), request.params().as_str()));
        let inner = self.inner.clone();
        let share = (request.method_name() == VM_METHOD).then(|| self.vm_share.clone());
        let counters = self.counters.clone();
        let activity = request
            .extensions()
            .get::<Arc<super::conn::Activity>>()
            .cloned();
        // Looked up once per call: its kind here, its latency slot after the answer.
        let method = onvm_rpc_api::methods::METHODS
            .iter()
            .position(|m| m.name == request.method_name());
        let subscribes = method.is_some_and(|i| {
            onvm_rpc_api::methods::METHODS[i].kind == onvm_rpc_api::methods::Kind::Subscribe
        });
        let refusal = refusal.or_else(|| {
            let full = subscribes
                && activity
                    .as_ref()
                    .is_some_and(|a| !a.become_subscriber(&self.subscribers));
            full.then(|| {
                rpc_error(
                    codes::LIMIT_EXCEEDED,
                    "too_many_subscribers",
                    format!(
                        "the node serves as many subscriber connections as it may (rpc.max_subscriber_connections = {}): subscribe on a connection that already has a subscription, or retry later",
                        self.max_subscribers
                    ),
                    json!({"config_key": "rpc.max_subscriber_connections"}),
                )
            })
        });
        async move {
            // The connection is busy while this runs (`rpc.idle_connection_ms`).
            let _active = activity.map(|a| a.call(now_ms(), subscribes && refusal.is_none()));
            let started = std::time::Instant::now();
            if let Some(error) = refusal {
                return MethodResponse::error(request.id, error);
            }
            // Held until the answer: a connection pipelining calls waits for its own turns
            // and leaves the other VM slots to other clients.
            let _turn = match share {
                Some(share) => share.acquire_owned().await.ok(),
                None => None,
            };
            let id = request.id.clone().into_owned();
            let response = inner.call(request).await;
            counters
                .timings
                .rpc_call(method, started.elapsed(), response.is_error());
            // jsonrpsee answers a subscription over the per-connection cap with its own code
            // -32006, which is ONVM's FORBIDDEN: answer with the limit error instead. ONVM's
            // own -32006 errors always carry an object `data` with a `kind`; jsonrpsee's `data`
            // is a string.
            if response.as_error_code()
                == Some(jsonrpsee::types::error::TOO_MANY_SUBSCRIPTIONS_CODE)
                && !onvm_error_data(response.as_json().get())
            {
                return MethodResponse::error(
                    id,
                    rpc_error(
                        codes::LIMIT_EXCEEDED,
                        "too_many_subscriptions",
                        "this connection holds as many subscriptions as it may (rpc.max_subscriptions_per_connection): unsubscribe from one or open another connection",
                        json!({"config_key": "rpc.max_subscriptions_per_connection"}),
                    ),
                );
            }
            response
        }
    }

    fn batch<'a>(
        &self,
        mut batch: Batch<'a>,
    ) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        let batch_grant = batch.extensions().get::<Grant>().cloned();
        let now = now_ms();
        for entry in batch.iter_mut() {
            match entry {
                Ok(BatchEntry::Call(call)) => {
                    // Each call carries its connection's extensions; the batch's may not.
                    let grant = call
                        .extensions()
                        .get::<Grant>()
                        .cloned()
                        .or_else(|| batch_grant.clone());
                    let method = call.method_name();
                    if method.ends_with("_subscribe") || method.ends_with("_subscribe_all") {
                        // Its answer and notifications would interleave with the batch's.
                        *entry = Err(BatchEntryErr::new(
                            call.id(),
                            rpc_error(
                                codes::INVALID_REQUEST,
                                "subscribe_in_batch",
                                format!(
                                    "`{method}` opens a subscription: send it on its own, not inside a batch"
                                ),
                                json!(null),
                            ),
                        ));
                    } else if let Some(error) = self.refuse(grant.as_ref(), method, now) {
                        *entry = Err(BatchEntryErr::new(call.id(), error));
                    }
                }
                Ok(BatchEntry::Notification(_)) => {
                    *entry = Err(BatchEntryErr::new(Id::Null, no_notifications()));
                }
                Err(_) => {}
            }
        }
        let runs_vm = batch
            .iter()
            .any(|e| matches!(e, Ok(BatchEntry::Call(c)) if c.method_name() == VM_METHOD));
        let share = runs_vm.then(|| self.vm_share.clone());
        let inner = self.inner.clone();
        let activity = batch
            .extensions()
            .get::<Arc<super::conn::Activity>>()
            .cloned();
        async move {
            let _active = activity.map(|a| a.call(now_ms(), false));
            // jsonrpsee runs a batch's calls one after another: one turn covers them all.
            let _turn = match share {
                Some(share) => share.acquire_owned().await.ok(),
                None => None,
            };
            inner.batch(batch).await
        }
    }

    /// Every ONVM method answers, so a message without an id is a mistake, most often a
    /// request whose `id` is an object or an array (which JSON-RPC does not allow and which
    /// would otherwise parse as a notification and never be answered): say so.
    fn notification<'a>(
        &self,
        _n: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        std::future::ready(MethodResponse::error(Id::Null, no_notifications()))
    }
}

/// Whether a JSON-RPC error response carries ONVM's structured `data` (an object with `kind`).
fn onvm_error_data(response: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(response)
        .ok()
        .and_then(|v| {
            v.get("error")?
                .get("data")?
                .get("kind")
                .map(serde_json::Value::is_string)
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn admit_at<B>(
        door: &FrontDoor,
        request: &mut http::Request<B>,
        now: u64,
    ) -> Result<Admission, Refusal> {
        door.admit(request, LOCAL, now)
    }

    fn front_door(auth: bool, origins: &[&str]) -> (FrontDoor, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        (
            FrontDoor {
                policy: Policy {
                    auth,
                    anonymous: [Scope::Read].into_iter().collect(),
                    origins: origins.iter().map(|s| s.to_string()).collect(),
                    hosts: vec!["node.example".into()],
                    max_per_ip: 4,
                },
                tokens: Arc::new(Tokens::load(store).unwrap()),
                cookie: Some("onvm_cookie_secret".into()),
                per_ip: Arc::default(),
            },
            dir,
        )
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn grant(a: Result<Admission, Refusal>) -> Grant {
        match a {
            Ok(Admission::Pass { grant, .. }) => grant,
            other => panic!("not admitted: {other:?}"),
        }
    }

    #[test]
    fn hosts_must_be_ip_literals_localhost_or_configured() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "10.0.0.7",
            "node.example:443",
        ] {
            assert!(host_allowed(ok, &["node.example".into()]), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
        ] {
            assert!(!host_allowed(bad, &["node.example".into()]), "{bad}");
        }
        let (door, _d) = front_door(true, &[]);
        let refused = admit_at(
            &door,
            &mut request("/", &[("host", "rebind.evil.example:8080")]),
            0,
        )
        .unwrap_err();
        assert_eq!(refused.status, 403);
        assert!(refused.reason.contains("rpc.allowed_hosts"));
        // HTTP/2: the authority pseudo-header, with no Host header at all.
        let refused = admit_at(
            &door,
            &mut request("http://rebind.evil.example:8080/", &[]),
            0,
        )
        .unwrap_err();
        assert_eq!(refused.status, 403, "{refused:?}");
        assert!(admit_at(&door, &mut request("http://127.0.0.1:8080/", &[]), 0).is_ok());
        // An h2 page's origin is checked against its authority too.
        assert!(
            admit_at(
                &door,
                &mut request(
                    "http://127.0.0.1:8080/",
                    &[("origin", "http://127.0.0.1:8080")]
                ),
                0
            )
            .is_ok()
        );
    }

    #[test]
    fn foreign_origins_are_refused_and_clients_without_one_pass() {
        let (door, _d) = front_door(true, &["https://app.example"]);
        let evil = admit_at(
            &door,
            &mut request(
                "/",
                &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://evil.example"),
                ],
            ),
            0,
        )
        .unwrap_err();
        assert_eq!(evil.status, 403);
        let cli = grant(admit_at(
            &door,
            &mut request("/", &[("host", "127.0.0.1:8080")]),
            0,
        ));
        assert!(cli.scopes.allows(Scope::Read) && !cli.scopes.allows(Scope::Deploy));
        let app = admit_at(
            &door,
            &mut request(
                "/",
                &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "https://app.example"),
                ],
            ),
            0,
        );
        assert!(matches!(app, Ok(Admission::Pass { cors: Some(_), .. })));
        // Same origin as the URL dialed: the node's own pages.
        let own = admit_at(
            &door,
            &mut request(
                "/",
                &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://127.0.0.1:8080"),
                ],
            ),
            0,
        );
        assert!(own.is_ok());
        let mut preflight = request(
            "/",
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "https://app.example"),
            ],
        );
        *preflight.method_mut() = http::Method::OPTIONS;
        assert!(matches!(
            admit_at(&door, &mut preflight, 0),
            Ok(Admission::Preflight { .. })
        ));
    }

    #[test]
    fn tokens_grant_their_scopes_until_revoked_or_expired_and_leave_no_trace_in_the_uri() {
        let (door, _d) = front_door(true, &["*"]);
        let created = door
            .tokens
            .create(
                TokenRequest {
                    scopes: vec![Scope::Execute, Scope::Read],
                    expires_in_secs: Some(60),
                    origins: vec!["https://app.example".into()],
                    label: Some("dapp".into()),
                },
                1_000,
            )
            .unwrap();
        let mut req = request(
            &format!("/?a=1&token={}&b=2", created.token),
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "https://app.example"),
            ],
        );
        let g = grant(admit_at(&door, &mut req, 2_000));
        // The scheme name of `Authorization` is case-insensitive.
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let g = grant(admit_at(
                &door,
                &mut request(
                    "/",
                    &[
                        ("host", "127.0.0.1:8080"),
                        ("origin", "https://app.example"),
                        ("authorization", &format!("{scheme} {}", created.token)),
                    ],
                ),
                2_000,
            ));
            assert!(g.presented, "{scheme}");
        }
        // Bound to web origins: a client that names none (a script, a copied token) is refused.
        let no_origin = admit_at(
            &door,
            &mut request(
                "/",
                &[
                    ("host", "127.0.0.1:8080"),
                    ("authorization", &format!("Bearer {}", created.token)),
                ],
            ),
            2_000,
        )
        .unwrap_err();
        assert_eq!(no_origin.status, 403);
        assert!(
            no_origin.reason.contains("names none"),
            "{}",
            no_origin.reason
        );
        assert!(g.scopes.allows(Scope::Execute) && !g.scopes.allows(Scope::Deploy));
        assert_eq!(req.uri().to_string(), "/?a=1&b=2");
        assert!(refuse_call(Some(&g), &door.tokens, "program_execute", 2_000).is_none());
        let denied = refuse_call(Some(&g), &door.tokens, "program_deploy", 2_000).unwrap();
        assert_eq!(denied.code(), codes::FORBIDDEN);
        assert!(
            denied.message().contains("scope `deploy`"),
            "{}",
            denied.message()
        );
        // Bound to its origin.
        let other_site = admit_at(
            &door,
            &mut request(
                "/",
                &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "https://other.example"),
                    ("authorization", &format!("Bearer {}", created.token)),
                ],
            ),
            2_000,
        );
        assert_eq!(other_site.unwrap_err().status, 403);
        // Expired.
        let late = admit_at(
            &door,
            &mut request(
                &format!("/?token={}", created.token),
                &[("host", "127.0.0.1:8080")],
            ),
            61_000 + 1_000,
        );
        assert_eq!(late.unwrap_err().status, 401);
        // A forged secret.
        let forged = format!("{}x", &created.token[..created.token.len() - 1]);
        let bad = admit_at(
            &door,
            &mut request(
                "/",
                &[
                    ("host", "127.0.0.1:8080"),
                    ("authorization", &format!("Bearer {forged}")),
                ],
            ),
            2_000,
        );
        assert_eq!(bad.unwrap_err().status, 401);
        // Revoked: also refused on a connection admitted before.
        assert!(door.tokens.revoke(&created.info.id).unwrap());
        assert!(refuse_call(Some(&g), &door.tokens, "program_execute", 2_000).is_some());
        assert!(door.tokens.list(2_000).is_empty());
    }

    #[test]
    fn the_cookie_grants_everything_and_no_auth_opens_everything() {
        let (door, _d) = front_door(true, &[]);
        let g = grant(admit_at(
            &door,
            &mut request(
                "/",
                &[
                    ("host", "127.0.0.1:8080"),
                    ("authorization", "Bearer onvm_cookie_secret"),
                ],
            ),
            0,
        ));
        assert_eq!(g.scopes, Scopes::all());
        let anonymous = grant(admit_at(
            &door,
            &mut request("/", &[("host", "127.0.0.1:1")]),
            0,
        ));
        let denied = refuse_call(Some(&anonymous), &door.tokens, "token_create", 0).unwrap();
        assert!(denied.message().contains("onvm token create --scope admin"));
        let (open, _d2) = front_door(false, &["*"]);
        let g = grant(admit_at(
            &open,
            &mut request("/", &[("host", "127.0.0.1:1")]),
            0,
        ));
        assert_eq!(g.scopes, Scopes::all());
        // Even with a credential it cannot check (a stale cookie of an earlier node).
        let g = grant(admit_at(
            &open,
            &mut request(
                "/",
                &[
                    ("host", "127.0.0.1:1"),
                    ("authorization", "Bearer onvm_cookie_stale"),
                ],
            ),
            0,
        ));
        assert_eq!(g.scopes, Scopes::all());
    }

    #[test]
    fn an_ip_gets_at_most_its_share_and_gets_it_back_when_permits_drop() {
        let per_ip = Arc::new(PerIp::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| per_ip.acquire(ip, 3).unwrap()).collect();
        assert!(per_ip.acquire(ip, 3).is_none());
        assert!(per_ip.acquire("10.0.0.2".parse().unwrap(), 3).is_some());
        drop(held);
        assert!(per_ip.acquire(ip, 3).is_some());
    }

    #[test]
    fn token_requests_are_checked() {
        let (door, _d) = front_door(true, &[]);
        let mut req = TokenRequest {
            scopes: vec![],
            expires_in_secs: None,
            origins: vec![],
            label: None,
        };
        assert!(door.tokens.create(req.clone(), 0).is_err());
        req.scopes = vec![Scope::Read];
        req.origins = vec!["https://app.example/path".into()];
        assert!(door.tokens.create(req.clone(), 0).is_err());
        req.origins = vec!["https://app.example".into(); MAX_ORIGINS + 1];
        assert!(door.tokens.create(req.clone(), 0).is_err());
        req.origins = vec![];
        req.expires_in_secs = Some(0);
        assert!(door.tokens.create(req, 0).is_err());
    }
}
