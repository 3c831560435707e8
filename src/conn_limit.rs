//! What both runtimes track about a client connection to enforce `server.idle_timeout_secs`
//! and `server.max_connections`: when it was last active and how many requests it has in
//! flight. A connection that is *quiet* (nothing in flight, nothing moving for a while) is the
//! one to close when idle or when room is needed.

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
