//! The operator's side of the process, on a thread of its own so that it answers whichever
//! runtime serves the public port, and however busy that one is:
//!
//! - the admin listener (`admin.listen`): Prometheus metrics, liveness and readiness, and
//!   `POST /reload`, on an address of its own — never on the public port. HTTP/1.1, plain TCP:
//!   bind it to loopback or a private interface, as anyone who reaches it can read the metrics
//!   and have the configuration file read again;
//! - SIGHUP: the configuration file read again ([`reload_file`]);
//! - the log limit's report of what it held back;
//! - the audit trail's webhook sender (`audit.webhook`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::{Config, ConfigErrors};
use crate::engine::{Engine, Reloaded};
use crate::log_limit::LogLimit;

/// What the admin listener serves.
struct Admin {
    engine: Arc<Engine>,
    metrics: PrometheusHandle,
    log_limit: LogLimit,
    config: PathBuf,
}

/// Reads the configuration file at `path` again and reloads `engine` with it
/// ([`Engine::reload`]): SIGHUP and `POST /reload` both come here. A file that cannot be read
/// or parsed is refused, and recorded, as one that does not pass the checks.
pub fn reload_file(engine: &Engine, path: &Path) -> Result<Reloaded, ConfigErrors> {
    let cfg = Config::load(path).inspect_err(crate::audit::reload_refused)?;
    engine.reload(cfg)
}

/// Starts the operator's side of the process on a thread of its own: the log limit's report
/// every 10 s, reloads of the file at `config` on SIGHUP, the audit webhook's sender and, with `admin` (an address and the
/// recorder's handle), the admin listener — bound now, so that a taken port fails the start,
/// as SIGHUP is handled from now on. Returns the admin listener's address.
pub fn start(
    engine: Arc<Engine>,
    config: PathBuf,
    log_limit: LogLimit,
    admin: Option<(SocketAddr, PrometheusHandle)>,
    audit: Option<super::audit_webhook::AuditSender>,
) -> std::io::Result<Option<SocketAddr>> {
    let listener = match &admin {
        Some((addr, _)) => {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Some(l)
        }
        None => None,
    };
    let bound = listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered before returning: SIGHUP's default action ends the process.
    #[cfg(unix)]
    let mut hangup = {
        let _rt = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?
    };
    std::thread::Builder::new()
        .name("ciba-admin".into())
        .spawn(move || {
            rt.block_on(async move {
                if let Some(audit) = audit {
                    tokio::spawn(audit.run());
                }
                #[cfg(unix)]
                {
                    let (engine, config) = (Arc::clone(&engine), config.clone());
                    tokio::spawn(async move {
                        while hangup.recv().await.is_some() {
                            // The outcome is in the audit trail.
                            let _ = reload_file(&engine, &config);
                        }
                    });
                }
                let report = log_limit.clone().report(Duration::from_secs(10));
                let (Some(listener), Some((_, metrics))) = (listener, admin) else {
                    return report.await;
                };
                tokio::spawn(report);
                let admin = Arc::new(Admin {
                    engine,
                    metrics,
                    log_limit,
                    config,
                });
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "the admin listener cannot run");
                        return;
                    }
                };
                // The exporter's histograms are summarised as they are scraped; upkeep keeps
                // them bounded between scrapes.
                let upkeep = admin.metrics.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tick.tick().await;
                        upkeep.run_upkeep();
                    }
                });
                loop {
                    let tcp = match listener.accept().await {
                        Ok((tcp, _)) => tcp,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning, as the public
                            // listener does.
                            tracing::warn!(error = %e, "admin listener: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let admin = Arc::clone(&admin);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let admin = Arc::clone(&admin);
                            async move { Ok::<_, Infallible>(admin.answer(&req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(10))
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            });
        })?;
    if let Some(a) = bound {
        tracing::info!(listen = %a, "admin listener (metrics, health) listening");
    }
    Ok(bound)
}

impl Admin {
    async fn answer(&self, req: &http::Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() == "/reload" {
            return self.reload(req);
        }
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match req.uri().path() {
            "/metrics" => {
                self.engine.record_gauges();
                metrics::counter!("ciba_log_lines_held_back_total")
                    .absolute(self.log_limit.held_back_total());
                let mut r = text(StatusCode::OK, self.metrics.render());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            // Liveness: the process answers.
            "/livez" => text(StatusCode::OK, "ok\n"),
            // Readiness: as the public /healthz (the store can be reached).
            "/healthz" | "/readyz" => match self.engine.ready().await {
                true => text(StatusCode::OK, "ok\n"),
                false => text(StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n"),
            },
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

impl Admin {
    /// `POST /reload`: 200 with what changed, or 422 with every problem (the running
    /// configuration stays). A browser's request (it has an `Origin`) is refused, so that a
    /// page the operator visits cannot trigger one.
    fn reload(&self, req: &http::Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
        }
        if req.headers().contains_key(header::ORIGIN) {
            return text(StatusCode::FORBIDDEN, "not from a browser\n");
        }
        let (status, body) = match reload_file(&self.engine, &self.config) {
            Ok(r) => (
                StatusCode::OK,
                serde_json::json!({ "changed": r.changed, "retired_kids": r.retired_kids }),
            ),
            Err(problems) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({
                    "error": "configuration_refused",
                    "problems": problems.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }),
            ),
        };
        let mut r = text(status, body.to_string());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
