//! The two runtimes that serve the gateway as a process, side by side with the same entry
//! points:
//!
//! - `serve(listener, engine, shutdown)`: serve on a bound tokio listener inside the current
//!   runtime until `shutdown` completes (tests and applications that embed the gateway);
//! - `run(engine)`: the whole process as the `ciba-gateway` binary runs it (its own threads,
//!   signals, TLS from `tls:`, the listener from `listen:`), returning when it shuts down.
//!
//! [`tower`] is hyper with the tower layer ([`crate::layer::CibaLayer`]) over a forwarding
//! service; [`pingora`] is pingora's server with the pingora module
//! ([`crate::proxy::CibaProxy`]). Both hold connections to the `server.*` limits with the
//! bookkeeping. `runtime:` in the configuration chooses one.

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod audit_webhook;
#[cfg(feature = "pingora")]
pub mod pingora;
#[cfg(feature = "server")]
pub mod tower;

/// Why a runtime stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The set-up failed before serving (a TLS file, the upstream's address): a configuration
    /// problem.
    #[error("{0}")]
    Setup(String),
    /// Listening or serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Raises the process's soft limit on open files to its hard limit (a gateway holds one per
/// connection, and the usual soft limit of 1024 is reached by a single client's flood).
/// Returns (before, after, hard).
#[cfg(feature = "server")]
pub fn raise_file_limit() -> std::io::Result<(u64, u64, u64)> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft < hard {
        rlimit::Resource::NOFILE.set(hard, hard)?;
    }
    let (after, _) = rlimit::Resource::NOFILE.get()?;
    Ok((soft, after, hard))
}
