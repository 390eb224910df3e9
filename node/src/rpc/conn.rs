//! What one client connection holds and how long it may hold it. Every TCP connection counts
//! against its source address's cap and the node's (idle HTTP keep-alives and WebSockets alike),
//! the operator has slots of its own beyond both, and a connection that carries no call is
//! closed after `rpc.idle_connection_ms` whether or not it answers pings: sockets that only sit
//! there, or trickle a request body, cannot hold the door shut. While the node is full, a newcomer
//! takes the seat of the connection idle longest (at least `rpc.pressure_idle_ms`), so a flood of
//! idle sockets from many addresses delays a real client by about a second, not a minute.
//! Subscribers are exempt from both (they wait by design) but count against the caps.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::auth::{Grant, IpPermit, PerIp};

/// Activity of one connection, shared by its accept task and every call on it (through the
/// request extensions, like the grant).
#[derive(Debug)]
pub struct Activity {
    /// Unix ms of the last request or answer.
    last_ms: AtomicU64,
    /// Calls running now.
    in_flight: AtomicUsize,
    /// Opened a subscription: exempt from idle closing.
    subscribed: AtomicBool,
    /// Its place among the node's subscriber connections (`rpc.max_subscriber_connections`),
    /// held while the connection lives.
    subscriber: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl Activity {
    pub fn new(now_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            last_ms: AtomicU64::new(now_ms),
            in_flight: AtomicUsize::new(0),
            subscribed: AtomicBool::new(false),
            subscriber: std::sync::Mutex::new(None),
        })
    }

    /// A request arrived (its headers: the body may still be on its way).
    pub fn touch(&self, now_ms: u64) {
        self.last_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// A call starts running; it counts as activity until the returned guard drops.
    pub fn call(self: &Arc<Self>, now_ms: u64, subscribes: bool) -> CallGuard {
        self.touch(now_ms);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if subscribes {
            self.subscribed.store(true, Ordering::Relaxed);
        }
        CallGuard(self.clone())
    }

    /// Makes this a subscriber connection, taking one of `places` the first time; false when
    /// every place is taken (subscribers are never closed for idleness, so they have a cap of
    /// their own and cannot take every slot of the node).
    pub fn become_subscriber(&self, places: &Arc<tokio::sync::Semaphore>) -> bool {
        let mut held = self.subscriber.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_some() {
            return true;
        }
        match places.clone().try_acquire_owned() {
            Ok(place) => {
                *held = Some(place);
                true
            }
            Err(_) => false,
        }
    }

    fn last_ms(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }

    /// Whether the connection has carried no call for `idle_ms` at `now_ms`.
    pub fn is_idle(&self, now_ms: u64, idle_ms: u64) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && !self.subscribed.load(Ordering::Relaxed)
            && now_ms.saturating_sub(self.last_ms.load(Ordering::Relaxed)) >= idle_ms
    }
}

/// Ends a call's activity when dropped.
pub struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch(crate::util::now_ms());
    }
}

/// What one TCP connection holds while it is open.
#[derive(Debug)]
pub struct ConnState {
    /// Replaced by a counted seat when an over-cap connection is given one (`Seats::admit`).
    pub seat: std::sync::Mutex<Seat>,
    /// The reserved slot an over-cap connection of the operator took.
    pub operator: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
    pub activity: Arc<Activity>,
    /// Cancelled to close the connection (it carried no call for too long).
    close: tokio_util::sync::CancellationToken,
}

impl ConnState {
    pub fn new(seat: Seat, now_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            seat: std::sync::Mutex::new(seat),
            operator: std::sync::Mutex::new(None),
            activity: Activity::new(now_ms),
            close: tokio_util::sync::CancellationToken::new(),
        })
    }
}

/// A client's socket. It holds its connection's seat exactly as long as the socket is open (a
/// WebSocket outlives the HTTP exchange that upgraded it, and the server's task for it owns this
/// socket), and once the connection is closed for idleness every read ends (EOF) and every
/// write fails, so whichever task serves it lets go.
pub struct ConnIo {
    inner: tokio::net::TcpStream,
    state: Arc<ConnState>,
    closed: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl ConnIo {
    pub fn new(inner: tokio::net::TcpStream, state: Arc<ConnState>) -> Self {
        let closed = Box::pin(state.close.clone().cancelled_owned());
        Self {
            inner,
            state,
            closed,
        }
    }
}

impl tokio::io::AsyncRead for ConnIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        if self.closed.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ConnIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.state.close.is_cancelled() {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "closed: no call for rpc.idle_connection_ms",
            )));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Closes the connection once it has been idle for `idle_ms` (checked a few times per period);
/// returns when it is closed or gone.
pub async fn close_when_idle(state: std::sync::Weak<ConnState>, idle_ms: u64) {
    let tick = Duration::from_millis((idle_ms / 4).clamp(50, 1_000));
    loop {
        tokio::time::sleep(tick).await;
        let Some(state) = state.upgrade() else {
            return;
        };
        if state.activity.is_idle(crate::util::now_ms(), idle_ms) {
            tracing::debug!("closing an RPC connection that carried no call for {idle_ms} ms");
            state.close.cancel();
            return;
        }
    }
}

/// The place a connection took at accept time.
#[derive(Debug)]
pub enum Seat {
    /// Within its address's cap and the node's.
    Counted(#[allow(dead_code)] Arc<IpPermit>, #[allow(dead_code)] Slot),
    /// Over a cap: the operator (cookie or an `admin` token) uses one of the reserved slots;
    /// anyone else gets 429 on its first request, unless the node-wide cap was the reason and an
    /// idle connection can make room.
    OverCap { why: String, node_wide: bool },
}

/// A place in the node-wide count; released when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts connections per address and node-wide, with reserved slots for the operator.
#[derive(Debug)]
pub struct Seats {
    pub per_ip: Arc<PerIp>,
    pub max_per_ip: usize,
    pub max_total: usize,
    total: Arc<AtomicUsize>,
    /// `rpc.operator_connections`: connections beyond every cap for the operator.
    operator: Arc<tokio::sync::Semaphore>,
    operator_max: usize,
    /// Every open connection, for making room under pressure.
    open: std::sync::Mutex<Vec<std::sync::Weak<ConnState>>>,
    /// `rpc.pressure_idle_ms`: how long a connection must have been idle to give its seat to a
    /// newcomer while the node is full.
    pressure_idle_ms: u64,
}

/// How long a newcomer waits for the seat an idle connection gives up.
const MAKE_ROOM_WAIT: Duration = Duration::from_secs(1);

impl Seats {
    pub fn new(
        per_ip: Arc<PerIp>,
        (max_per_ip, max_total, operator, pressure_idle_ms): (usize, usize, usize, u64),
    ) -> Self {
        Self {
            per_ip,
            max_per_ip,
            max_total,
            total: Arc::default(),
            operator: Arc::new(tokio::sync::Semaphore::new(operator)),
            operator_max: operator,
            open: std::sync::Mutex::default(),
            pressure_idle_ms,
        }
    }

    /// Remembers an open connection (forgotten once it is gone).
    pub fn register(&self, state: &Arc<ConnState>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= 2 * (self.max_total + self.operator_max) {
            open.retain(|w| w.strong_count() > 0);
        }
        open.push(Arc::downgrade(state));
    }

    /// Closes the counted connection idle longest (at least `pressure_idle_ms`, no subscription)
    /// other than `except`; whether there was one.
    fn reap_one(&self, except: &Arc<ConnState>) -> bool {
        let now = crate::util::now_ms();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|w| w.strong_count() > 0);
        let victim = open
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter(|s| !Arc::ptr_eq(s, except) && !s.close.is_cancelled())
            .filter(|s| s.activity.is_idle(now, self.pressure_idle_ms))
            .filter(|s| {
                matches!(
                    *s.seat.lock().unwrap_or_else(|p| p.into_inner()),
                    Seat::Counted(..)
                )
            })
            .min_by_key(|s| s.activity.last_ms());
        match victim {
            Some(victim) => {
                tracing::debug!(
                    "the node is full: closing its longest idle connection for a newcomer"
                );
                victim.close.cancel();
                true
            }
            None => false,
        }
    }

    /// Lets the first request of `state`'s connection from `ip` through, or says why not. A
    /// connection within the caps passes. One over a cap passes if it is the operator's (a
    /// reserved slot), or, when the node-wide cap was the reason, if an idle connection gives
    /// up its seat within `MAKE_ROOM_WAIT`.
    pub async fn admit(
        &self,
        state: &Arc<ConnState>,
        grant: &Grant,
        ip: IpAddr,
    ) -> Result<(), String> {
        let (why, node_wide) = match &*state.seat.lock().unwrap_or_else(|p| p.into_inner()) {
            Seat::Counted(..) => return Ok(()),
            Seat::OverCap { why, node_wide } => (why.clone(), *node_wide),
        };
        {
            let mut held = state.operator.lock().unwrap_or_else(|p| p.into_inner());
            if held.is_some() {
                return Ok(());
            }
            match self.operator_slot(grant) {
                Ok(slot) => {
                    *held = Some(slot);
                    return Ok(());
                }
                Err(operator_full) if !operator_full.is_empty() => return Err(operator_full),
                Err(_) => {}
            }
        }
        if !node_wide || !self.reap_one(state) {
            return Err(why);
        }
        let deadline = tokio::time::Instant::now() + MAKE_ROOM_WAIT;
        loop {
            match self.take(ip) {
                seat @ Seat::Counted(..) => {
                    *state.seat.lock().unwrap_or_else(|p| p.into_inner()) = seat;
                    return Ok(());
                }
                Seat::OverCap {
                    why,
                    node_wide: false,
                } => return Err(why),
                Seat::OverCap { .. } if tokio::time::Instant::now() >= deadline => {
                    return Err(why);
                }
                Seat::OverCap { .. } => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Whether an accepted socket is closed at once: everything, operator slots included, is
    /// taken (no descriptor is spent on a request that could not be served anyway).
    pub fn full(&self) -> bool {
        self.total.load(Ordering::Relaxed) >= self.max_total
            && self.operator.available_permits() == 0
    }

    /// Seats a new connection from `ip`.
    pub fn take(&self, ip: IpAddr) -> Seat {
        let Some(permit) = self.per_ip.acquire(ip, self.max_per_ip) else {
            return Seat::OverCap {
                why: format!(
                    "too many open connections from {ip} (rpc.max_connections_per_ip = {}); close some and retry",
                    self.max_per_ip
                ),
                node_wide: false,
            };
        };
        let taken = self.total.fetch_add(1, Ordering::Relaxed);
        if taken >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Seat::OverCap {
                why: format!(
                    "the node serves as many connections as it may (rpc.max_connections = {}); retry shortly",
                    self.max_total
                ),
                node_wide: true,
            };
        }
        Seat::Counted(permit, Slot(self.total.clone()))
    }

    /// An operator slot for a connection that came in over a cap, if `grant` is the operator's
    /// and one is free. Held as long as the connection.
    pub fn operator_slot(
        &self,
        grant: &Grant,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
        let operator =
            grant.client.is_none() || grant.scopes.allows(onvm_rpc_api::auth::Scope::Admin);
        if !operator || !grant.presented {
            return Err(String::new());
        }
        self.operator.clone().try_acquire_owned().map_err(|_| {
            format!(
                "every operator slot is in use (rpc.operator_connections = {}): close some of the operator's connections",
                self.operator_max
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_only_with_no_call_running_and_no_subscription() {
        let a = Activity::new(1_000);
        assert!(!a.is_idle(1_500, 1_000));
        assert!(a.is_idle(2_000, 1_000));
        a.touch(2_000);
        assert!(!a.is_idle(2_500, 1_000), "a request's headers count");
        let call = a.call(2_500, false);
        assert!(!a.is_idle(60_000, 1_000), "a long call is not idleness");
        drop(call);
        assert!(
            !a.is_idle(crate::util::now_ms(), 1_000),
            "its answer counts"
        );
        let b = Activity::new(0);
        drop(b.call(0, true));
        assert!(!b.is_idle(u64::MAX, 1), "subscribers wait by design");
    }

    #[test]
    fn caps_count_connections_and_the_operator_keeps_slots_beyond_them() {
        let seats = Seats::new(Arc::default(), (2, 3, 1, 1_000));
        let ip = |n| IpAddr::from([127, 0, 0, n]);
        let a1 = seats.take(ip(1));
        let a2 = seats.take(ip(1));
        assert!(
            matches!(seats.take(ip(1)), Seat::OverCap { why, node_wide: false } if why.contains("max_connections_per_ip"))
        );
        let b1 = seats.take(ip(2));
        assert!(
            matches!(seats.take(ip(2)), Seat::OverCap { why, node_wide: true } if why.contains("rpc.max_connections"))
        );
        assert!(!seats.full(), "the operator's slot is still free");
        let stranger = Grant {
            scopes: onvm_rpc_api::auth::Scopes::all(),
            token: Some("t".into()),
            presented: true,
            client: Some("token:t".into()),
        };
        let reader = Grant {
            scopes: [onvm_rpc_api::auth::Scope::Read].into_iter().collect(),
            ..stranger.clone()
        };
        assert!(seats.operator_slot(&reader).is_err());
        let cookie = Grant {
            client: None,
            ..reader.clone()
        };
        let held = seats.operator_slot(&cookie).expect("the operator gets in");
        assert!(seats.full());
        assert!(seats.operator_slot(&stranger).is_err(), "one slot, taken");
        drop(held);
        drop((a1, a2, b1));
        assert!(matches!(seats.take(ip(1)), Seat::Counted(..)));
    }
}
