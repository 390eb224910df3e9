//! The JSON-RPC server: implements the `rpc-api` traits on top of the node's services, one
//! file per namespace (`node`, `blob`, `program`, `state`, `receipt`, `job`, `peer`, `dag`,
//! `token`). Handlers call services and never the store; `errors` is the one place module
//! errors get their JSON-RPC codes; `streams` serves every subscription; `routing` sends calls
//! to a program's sequencer and `peer_calls` answers other nodes. `auth` and `limits` are the
//! front door every request passes first.

use std::net::SocketAddr;
use std::sync::Arc;

use jsonrpsee::RpcModule;
use jsonrpsee::server::{BatchRequestConfig, Server, ServerConfig, ServerHandle};
use onvm_rpc_api::api::{
    BlobApiServer, DagApiServer, DiscoverApiServer, JobApiServer, NodeApiServer, PeerApiServer,
    ProgramApiServer, ReceiptApiServer, StateApiServer, TokenApiServer,
};

use crate::config::RpcConfig;
use crate::node::NodeContext;
use peer_calls::ForwardedCalls;

pub mod auth;
mod blob;
mod conn;
pub mod cookie;
mod dag;
mod errors;
mod job;
pub mod limits;
mod node;
mod peer;
mod peer_calls;
mod program;
mod receipt;
mod routing;
mod state;
mod streams;
mod token;
mod web;

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot serve RPC on {addr}: {cause}{}", bind_hint(cause))]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("registering RPC methods: {0}")]
    Register(String),
}

fn bind_hint(cause: &std::io::Error) -> &'static str {
    match cause.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process, perhaps another onvm node, holds this port: `ss -ltnp` shows which; choose another with --rpc :PORT, and give a second node its own --data-dir)"
        }
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
        _ => "",
    }
}

/// The RPC method implementations; cheap to clone.
#[derive(Clone)]
struct Handlers {
    ctx: Arc<NodeContext>,
    tokens: Arc<auth::Tokens>,
}

impl Handlers {
    /// How long a subscriber may fall behind before its subscription ends (`rpc.subscriber_lag_ms`).
    fn lag(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ctx.config.rpc.subscriber_lag_ms)
    }
}

/// The running JSON-RPC server.
pub struct RpcServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    /// The operator's cookie file, removed when this is dropped.
    pub cookie: Option<cookie::Cookie>,
}

/// How the server treats clients: set by `run-node` (tokens required for writes), `run-node
/// --no-auth` and `onvm dev` (open) through `rpc.auth`.
fn policy_of(config: &RpcConfig) -> Result<auth::Policy, RpcError> {
    let anonymous = config
        .anonymous_scopes
        .iter()
        .map(|s| s.parse::<onvm_rpc_api::auth::Scope>())
        .collect::<Result<_, _>>()
        .map_err(|e| RpcError::Register(format!("rpc.anonymous_scopes: {e}")))?;
    Ok(auth::Policy {
        auth: config.auth,
        anonymous,
        origins: config.allowed_origins.clone(),
        hosts: config.allowed_hosts.clone(),
        max_per_ip: config.max_connections_per_ip as usize,
    })
}

pub async fn start(config: &RpcConfig, ctx: Arc<NodeContext>) -> Result<RpcServer, RpcError> {
    ctx.net
        .peers()
        .set_call_handler(Arc::new(ForwardedCalls(Arc::downgrade(&ctx))));
    let mut server_config = ServerConfig::builder()
        .max_request_body_size(config.max_request_bytes)
        .max_response_body_size(config.max_response_bytes)
        // The caps are ours (`conn::Seats`, per TCP connection); jsonrpsee's counts requests
        // and must not refuse what the operator's reserved slots admitted.
        .max_connections(config.max_connections + config.operator_connections)
        .max_subscriptions_per_connection(config.max_subscriptions_per_connection)
        .set_message_buffer_capacity(config.message_buffer)
        .set_batch_request_config(BatchRequestConfig::Limit(config.max_batch));
    if config.ping_interval_ms > 0 {
        // A connection that answers no ping (nor sends anything) for idle_timeout_ms is closed,
        // so idle sockets cannot hold the connection slots.
        server_config = server_config.enable_ws_ping(
            jsonrpsee::server::PingConfig::new()
                .ping_interval(std::time::Duration::from_millis(config.ping_interval_ms))
                .inactive_limit(std::time::Duration::from_millis(config.idle_timeout_ms))
                .max_failures(1),
        );
    }
    let addr = config.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| RpcError::Bind { addr, cause })?;
    let local = listener
        .local_addr()
        .map_err(|cause| RpcError::Bind { addr, cause })?;
    let tokens = Arc::new(
        auth::Tokens::load(ctx.store.clone())
            .map_err(|e| RpcError::Register(format!("loading API tokens: {e}")))?,
    );
    let cookie = if config.auth {
        match cookie::Cookie::create(local.port()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(
                    "could not write the RPC cookie file ({e}): local CLI writes will need a token"
                );
                None
            }
        }
    } else {
        None
    };
    let door = Arc::new(auth::FrontDoor {
        policy: policy_of(config)?,
        tokens: tokens.clone(),
        cookie: cookie.as_ref().map(|c| c.secret.clone()),
        per_ip: Arc::default(),
    });
    let handlers = Handlers {
        ctx: ctx.clone(),
        tokens: tokens.clone(),
    };
    let h = handlers;
    let mut module = RpcModule::new(());
    let namespaces: [jsonrpsee::Methods; 10] = [
        DiscoverApiServer::into_rpc(h.clone()).into(),
        NodeApiServer::into_rpc(h.clone()).into(),
        BlobApiServer::into_rpc(h.clone()).into(),
        ProgramApiServer::into_rpc(h.clone()).into(),
        StateApiServer::into_rpc(h.clone()).into(),
        ReceiptApiServer::into_rpc(h.clone()).into(),
        DagApiServer::into_rpc(h.clone()).into(),
        PeerApiServer::into_rpc(h.clone()).into(),
        TokenApiServer::into_rpc(h.clone()).into(),
        JobApiServer::into_rpc(h).into(),
    ];
    for methods in namespaces {
        module
            .merge(methods)
            .map_err(|e| RpcError::Register(e.to_string()))?;
    }
    // Every method is in the scope table, so none is open by omission.
    if let Some(unmapped) = module
        .method_names()
        .find(|m| onvm_rpc_api::auth::scope_of(m).is_none())
    {
        return Err(RpcError::Register(format!(
            "method `{unmapped}` has no scope in onvm_rpc_api::auth::scope_of"
        )));
    }
    let methods: jsonrpsee::Methods = module.into();
    let services = Server::builder()
        .set_config(server_config.build())
        .set_rpc_middleware(
            jsonrpsee::server::middleware::rpc::RpcServiceBuilder::new().layer(auth::ScopeLayer {
                tokens,
                counters: ctx.counters.clone(),
                subscribers: Arc::new(tokio::sync::Semaphore::new(
                    config.max_subscriber_connections as usize,
                )),
                max_subscribers: config.max_subscriber_connections as usize,
                vm_share: config.max_calls_per_connection as usize,
                rates: auth::Rates {
                    connection: limits::Rate {
                        per_sec: config.calls_per_sec,
                        burst: config.calls_burst,
                    },
                    client: limits::Rate {
                        per_sec: config.client_calls_per_sec,
                        burst: config.client_calls_burst,
                    },
                    clients: Arc::default(),
                },
            }),
        )
        .to_service_builder();
    let (stop, handle) = jsonrpsee::server::stop_channel();
    let seats = Arc::new(conn::Seats::new(
        door.per_ip.clone(),
        (
            config.max_connections_per_ip as usize,
            config.max_connections as usize,
            config.operator_connections as usize,
            config.pressure_idle_ms,
        ),
    ));
    let idle_ms = config.idle_connection_ms;
    tokio::spawn(accept_loop(
        listener,
        services,
        methods,
        stop,
        door,
        ctx,
        (seats, idle_ms),
    ));
    Ok(RpcServer {
        addr: local,
        handle,
        cookie,
    })
}

/// Accepts TCP connections until the server is stopped. Each connection takes a seat
/// (`conn::Seats`: its address's cap, the node's, or an operator slot) for as long as it is open,
/// and is closed once it carries no call for `rpc.idle_connection_ms`. Each HTTP request (a
/// WebSocket handshake is one) passes the front door first.
/// The jsonrpsee service with the scope check in front of every call.
type Services = jsonrpsee::server::TowerServiceBuilder<
    tower::layer::util::Stack<auth::ScopeLayer, tower::layer::util::Identity>,
    tower::layer::util::Identity,
>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn accept_loop(
    listener: tokio::net::TcpListener,
    services: Services,
    methods: jsonrpsee::Methods,
    stop: jsonrpsee::server::StopHandle,
    door: Arc<auth::FrontDoor>,
    ctx: Arc<NodeContext>,
    (seats, idle_ms): (Arc<conn::Seats>, u64),
) {
    loop {
        let (socket, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!("accepting an RPC connection: {e}");
                    // Out of file descriptors: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.clone().shutdown() => break,
        };
        if seats.full() {
            // Every slot, the operator's too: the descriptor goes back at once.
            drop(socket);
            continue;
        }
        let state = conn::ConnState::new(seats.take(remote.ip()), crate::util::now_ms());
        seats.register(&state);
        let activity = state.activity.clone();
        let (services, methods, stop_conn, door, ctx, seats_conn, activity_conn) = (
            services.clone(),
            methods.clone(),
            stop.clone(),
            door.clone(),
            ctx.clone(),
            seats.clone(),
            activity.clone(),
        );
        let seat_conn = state.clone();
        let service = tower::service_fn(
            move |mut request: jsonrpsee::server::HttpRequest<hyper::body::Incoming>| {
                activity_conn.touch(crate::util::now_ms());
                let admission = door.admit(&mut request, remote.ip(), crate::util::now_ms());
                let mut inner = services.clone().build(methods.clone(), stop_conn.clone());
                let page = web::route(&request);
                let head_only = request.method() == http::Method::HEAD;
                let ctx = ctx.clone();
                let (seat, seats, activity) =
                    (seat_conn.clone(), seats_conn.clone(), activity_conn.clone());
                let reply: std::pin::Pin<
                    Box<
                        dyn std::future::Future<
                                Output = Result<jsonrpsee::server::HttpResponse, BoxError>,
                            > + Send,
                    >,
                > = Box::pin(async move {
                    use tower::Service;
                    let (grant, cors) = match admission {
                        Err(refusal) => return Ok(refusal.into_response()),
                        Ok(auth::Admission::Preflight { origin }) => {
                            return Ok(auth::preflight(&origin));
                        }
                        Ok(auth::Admission::Pass { grant, cors }) => (grant, cors),
                    };
                    if let Err(reason) = seats.admit(&seat, &grant, remote.ip()).await {
                        let mut refused = auth::Refusal {
                            status: 429,
                            reason,
                        }
                        .into_response();
                        refused.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                        return Ok(refused);
                    }
                    let mut response: jsonrpsee::server::HttpResponse = if let Some(page) = page {
                        web::serve(page, head_only, &grant, &ctx).await
                    } else {
                        request.extensions_mut().insert(grant);
                        request.extensions_mut().insert(activity);
                        match inner.call(request).await {
                            Ok(response) => response,
                            Err(e) => return Err(e),
                        }
                    };
                    if let Some(origin) = cors {
                        auth::decorate(&mut response, &origin);
                    }
                    Ok(response)
                });
                reply
            },
        );
        if idle_ms > 0 {
            tokio::spawn(conn::close_when_idle(Arc::downgrade(&state), idle_ms));
        }
        let stopped = stop.clone().shutdown();
        // Connection errors (a client vanishing mid-request) are logged by jsonrpsee at debug.
        tokio::spawn(jsonrpsee::server::serve_with_graceful_shutdown(
            conn::ConnIo::new(socket, state),
            service,
            stopped,
        ));
    }
}
