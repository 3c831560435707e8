//! What both runtimes track about a client connection to enforce `server.idle_timeout_secs`
//! and `server.max_connections`: when it was last active and how many requests it has in
//! flight. A connection that is *quiet* (nothing in flight, nothing moving for a while) is the
//! one to close when idle or when room is needed.

#[cfg(feature = "pingora")]
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long a connection must have been quiet to be closed to make room under pressure: long
/// enough for a client that just connected to send its request, short enough that a flood of
/// silent sockets is cleared in a few rounds. Also how often the accept loop asks again while
/// it waits for room.
pub const PRESSURE_QUIET: Duration = Duration::from_millis(250);

/// What one connection is doing, shared by its I/O, its requests and its watchdog.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last byte read or written.
    last_io_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    /// A connection opened now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Records activity now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_io_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection was last active.
    pub fn last_io(&self) -> Instant {
        self.start + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed))
    }

    /// Whether the connection has had nothing in flight and no bytes moving for `quiet`.
    pub fn quiet_for(&self, quiet: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.last_io().elapsed() >= quiet
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    /// When to look at the connection again for `idle`: when it will have been quiet that long,
    /// or, with a request in flight and nothing moving (a held poll, a slow provider), one
    /// period from now instead of at once.
    pub fn next_idle_check(&self, idle: Duration) -> Instant {
        let now = Instant::now();
        Some(self.last_io() + idle)
            .filter(|at| *at > now)
            .unwrap_or(now + idle)
    }
}

/// A client connection, counted in `ciba_connections_open` while this lives ([`crate::metrics`]).
#[derive(Debug)]
pub struct Counted(());

impl Counted {
    /// Counts a connection opened now.
    pub fn open() -> Self {
        crate::metrics::connection(true);
        Self(())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        crate::metrics::connection(false);
    }
}

/// Part of the open connections, by peer address (64 shards keep the lock uncontended).
#[cfg(feature = "pingora")]
type Shard = std::sync::Mutex<std::collections::HashMap<SocketAddr, Arc<Activity>>>;

/// The connections a runtime that cannot cap them itself (pingora) has open, by peer address,
/// with what each is doing: the adapter marks requests in flight on them, the runtime's watchdog
/// closes the quiet ones.
#[cfg(feature = "pingora")]
#[derive(Debug)]
pub struct Connections {
    shards: Box<[Shard]>,
    open: AtomicUsize,
    max: usize,
    idle: Duration,
    /// Notified when a connection opens above the cap.
    pressure: tokio::sync::Notify,
}

#[cfg(feature = "pingora")]
impl Connections {
    /// An empty table for `server.max_connections` and `server.idle_timeout_secs`.
    pub fn new(cfg: &crate::config::ServerConfig) -> Self {
        Self {
            shards: (0..64).map(|_| Default::default()).collect(),
            open: AtomicUsize::new(0),
            max: cfg.max_connections,
            idle: Duration::from_secs(cfg.idle_timeout_secs),
            pressure: tokio::sync::Notify::new(),
        }
    }

    fn shard(&self, peer: &SocketAddr) -> &Shard {
        &self.shards[usize::from(peer.port()) % self.shards.len()]
    }

    /// The open connection from `peer`, if any.
    pub fn get(&self, peer: &SocketAddr) -> Option<Arc<Activity>> {
        let shard = self.shard(peer).lock().unwrap_or_else(|e| e.into_inner());
        shard.get(peer).cloned()
    }

    /// Records a connection from `peer`; wakes [`Connections::pressed`] if it is one too many.
    pub fn open(&self, peer: SocketAddr) -> Arc<Activity> {
        let a = Activity::new();
        self.shard(&peer)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, Arc::clone(&a));
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.pressure.notify_waiters();
        }
        a
    }

    /// Whether more than `server.max_connections` are open.
    pub fn over_cap(&self) -> bool {
        self.open.load(Ordering::Acquire) > self.max
    }

    /// Completes when a connection opens above the cap.
    pub async fn pressed(&self) {
        self.pressure.notified().await
    }

    /// How long a connection may have nothing in flight (`server.idle_timeout_secs`).
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Forgets the connection from `peer`.
    pub fn close(&self, peer: &SocketAddr) {
        self.shard(peer)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer);
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}
