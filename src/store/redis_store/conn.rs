//! Reaching Redis: one multiplexed connection per node (commands from every task pipelined on
//! it), made lazily and made again after a failure; a deadline on every operation; and a short
//! back-off after a failed connect so that an unreachable server costs a request microseconds,
//! not a connect timeout each.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

use crate::store::StoreError;

/// How long a failed connect keeps the next ones from being tried.
const BACKOFF: Duration = Duration::from_millis(250);

/// Where the server is.
pub(super) enum Target {
    /// One server (or a proxy in front of several).
    Node(redis::Client),
    /// The master a set of Sentinels names; asked again after every failure (failover).
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
    /// A Redis Cluster, reached through its seed nodes; `pubsub` are those nodes as plain
    /// clients (a published message reaches every node of a cluster).
    Cluster {
        /// The cluster client.
        client: redis::cluster::ClusterClient,
        /// A client per seed node, for the subscription.
        seeds: Vec<redis::Client>,
    },
}

/// A connection as the scripts use it.
#[derive(Clone)]
pub(super) enum Conn {
    /// To one node.
    Node(MultiplexedConnection),
    /// To a cluster (routes each command to the slot's master, follows MOVED/ASK).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection shared by every operation of one store.
pub(super) struct Link {
    target: Target,
    timeout: Duration,
    current: Mutex<Option<Conn>>,
    connecting: tokio::sync::Mutex<()>,
    epoch: Instant,
    /// No connect is tried before this many ms after `epoch`.
    retry_at_ms: AtomicU64,
}

impl Link {
    pub(super) fn new(target: Target, timeout: Duration) -> Self {
        Self {
            target,
            timeout,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            epoch: Instant::now(),
            retry_at_ms: AtomicU64::new(0),
        }
    }

    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    fn cached(&self) -> Option<Conn> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn forget(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn since_epoch_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn connect(&self) -> Result<Conn, RedisError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        match &self.target {
            Target::Node(c) => c
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map(Conn::Node),
            Target::Sentinel(s) => s
                .lock()
                .await
                .get_async_connection_with_config(&cfg)
                .await
                .map(Conn::Node),
            Target::Cluster { client, .. } => {
                client.get_async_connection().await.map(Conn::Cluster)
            }
        }
    }

    /// The live connection, or a new one.
    async fn conn(&self) -> Result<Conn, StoreError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        if self.since_epoch_ms() < self.retry_at_ms.load(Ordering::Relaxed) {
            return Err(StoreError::Backend("Redis is unreachable".into()));
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        match self.connect().await {
            Ok(c) => {
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                self.retry_at_ms.store(
                    self.since_epoch_ms() + BACKOFF.as_millis() as u64,
                    Ordering::Relaxed,
                );
                Err(StoreError::Backend(format!("cannot connect to Redis: {e}")))
            }
        }
    }

    /// Runs `op` on the connection within the deadline. A failure that says the connection (or
    /// the server behind it) is no longer good drops it, so the next operation reconnects —
    /// through Sentinel, to whichever server is master by then.
    pub(super) async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let started = std::time::Instant::now();
        let work = async {
            let conn = self.conn().await?;
            op(conn).await.map_err(|e| self.failed(&e))
        };
        let done = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                self.forget();
                Err(StoreError::Backend("Redis did not answer in time".into()))
            }
        };
        crate::metrics::store_op("redis", started.elapsed());
        done
    }

    /// Runs `op` on a connection of its own, closed afterwards: for a check made outside the
    /// runtime that will serve (its connection would die with the check's runtime).
    pub(super) async fn once<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let work = async {
            let conn = self
                .connect()
                .await
                .map_err(|e| StoreError::Backend(format!("cannot connect to Redis: {e}")))?;
            op(conn)
                .await
                .map_err(|e| StoreError::Backend(format!("Redis: {e}")))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(StoreError::Backend("Redis did not answer in time".into())))
    }

    fn failed(&self, e: &RedisError) -> StoreError {
        use redis::ServerErrorKind as S;
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.is_unrecoverable_error()
            || matches!(e.kind(), ErrorKind::Server(S::ReadOnly | S::MasterDown))
        {
            self.forget();
        }
        // `maxmemory` reached under `noeviction`: the server refuses rather than evicting.
        if e.code() == Some("OOM") {
            return StoreError::Full;
        }
        StoreError::Backend(format!("Redis: {e}"))
    }
}
