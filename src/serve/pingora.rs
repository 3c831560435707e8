//! The pingora runtime: pingora's `Server` running [`CibaProxy`] behind `Guarded` (the
//! gateway's connection limits, which pingora 0.9 lacks), with the provider's nodes'
//! health checks and `WarmUp` (the provider's discovery read at start, the engine's shutdown)
//! beside it.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;

use super::ServeError;
use crate::conn_limit::{Connections, Counted, PRESSURE_QUIET};
use crate::engine::Engine;
use crate::proxy::CibaProxy;

/// The pingora proxy with the gateway's connection limits around it: pingora 0.9 has no
/// connection cap and times single reads only, so this [`ServerApp`] watches each connection:
/// one with no request in flight for `server.idle_timeout_secs` is closed (a silent socket,
/// slow headers, an idle keep-alive), and while more than `server.max_connections` are open,
/// the ones quiet for [`PRESSURE_QUIET`] are closed to make room. Keep `max_connections` below
/// the open-file limit: pingora's accept loop cannot wait for room the way the tower runtime
/// does. Build it with [`Guarded::service`].
pub(crate) struct Guarded {
    inner: Arc<pingora::proxy::HttpProxy<CibaProxy>>,
    conns: Arc<Connections>,
    engine: Arc<Engine>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").finish_non_exhaustive()
    }
}

impl Guarded {
    /// The proxy for `conf`, guarded.
    pub fn new(conf: &Arc<pingora::server::configuration::ServerConf>, proxy: CibaProxy) -> Self {
        let conns = Arc::clone(&proxy.conns);
        let engine = Arc::clone(proxy.module.engine());
        Self {
            inner: Arc::new(pingora::proxy::http_proxy(conf, proxy)),
            conns,
            engine,
        }
    }

    /// A listening service running the guarded proxy (add listeners, then add it to a `Server`).
    pub fn service(
        conf: &Arc<pingora::server::configuration::ServerConf>,
        proxy: CibaProxy,
    ) -> pingora::services::listening::Service<Self> {
        pingora::services::listening::Service::new("ciba-gateway".into(), Self::new(conf, proxy))
    }
}

#[async_trait]
impl ServerApp for Guarded {
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        shutdown: &pingora::server::ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        let Some(peer) = peer else {
            return self.inner.process_new(stream, shutdown).await;
        };
        let activity = self.conns.open(peer);
        let _open = Counted::open();
        let serve = self.inner.process_new(stream, shutdown);
        tokio::pin!(serve);
        let idle = self.conns.idle();
        let mut pressed = false;
        // Returning drops `serve`, which closes the connection; only quiet ones are dropped.
        let reuse = loop {
            // Level-triggered too: a connection whose task starts after the last notification
            // still sees that there are too many.
            pressed |= self.conns.over_cap();
            tokio::select! {
                r = &mut serve => break r,
                () = tokio::time::sleep_until(activity.next_idle_check(idle)) => {
                    if activity.quiet_for(idle) {
                        crate::metrics::connection_closed("idle");
                        break None;
                    }
                }
                // Over the cap (told by the connection that went over it), every quiet
                // connection goes, checked every PRESSURE_QUIET until there is room again.
                () = self.conns.pressed(), if !pressed => pressed = true,
                () = tokio::time::sleep(PRESSURE_QUIET), if pressed => {
                    if !self.conns.over_cap() {
                        pressed = false;
                    } else if activity.quiet_for(PRESSURE_QUIET) {
                        crate::metrics::connection_closed("room");
                        break None;
                    } else {
                        // Still too many a round later, and this one busy: held polls answer
                        // now, so that their connections become quiet for the next round.
                        self.engine.reclaim_held_polls();
                    }
                }
            }
        };
        self.conns.close(&peer);
        reuse
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Reads the provider's discovery as the pingora server starts ([`Engine::warm_up`]) and shuts
/// the engine down as it stops ([`Engine::shutdown`]: held polls are answered): added to a
/// `Server` with `pingora::services::background::background_service`.
#[derive(Debug)]
pub(crate) struct WarmUp(pub(crate) Arc<Engine>);

#[async_trait]
impl pingora::services::background::BackgroundService for WarmUp {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        self.0.warm_up().await;
        let _ = shutdown.changed().await;
        self.0.shutdown();
    }
}

/// Serves the gateway on `listener` inside the current tokio runtime until `shutdown`
/// completes: for embedding the module in an existing tokio application, and for tests. The
/// `ciba-gateway` binary uses [`run`] (pingora's own `Server`) instead.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    use pingora::protocols::GetSocketDigest;
    use std::os::fd::AsRawFd;

    let proxy = CibaProxy::try_new(Arc::clone(&engine)).map_err(ServeError::Setup)?;
    let conf = Arc::new(pingora::server::configuration::ServerConf::default());
    let nodes = Arc::clone(proxy.nodes());
    let app = Arc::new(Guarded::new(&conf, proxy));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The same background work as `run`'s services: the nodes' health checks (pingora's own
    // loop) and the engine's warm-up and shutdown.
    {
        use pingora::services::background::BackgroundService as _;
        let watch = stop_rx.clone();
        tokio::spawn(async move { nodes.start(watch).await });
        let watch = stop_rx.clone();
        tokio::spawn(async move { WarmUp(engine).start(watch).await });
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let mut stream = pingora::protocols::l4::stream::Stream::from(tcp);
                stream.set_socket_digest(pingora::protocols::SocketDigest::from_raw_fd(stream.as_raw_fd()));
                let (app, stop) = (Arc::clone(&app), stop_rx.clone());
                tokio::spawn(async move {
                    app.process_new(Box::new(stream), &stop).await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    let _ = stop_tx.send(true);
    Ok(())
}

/// Runs the gateway as a process on pingora's own `Server`: its threads (`server.threads`),
/// its signal handling (SIGTERM graceful with `server.shutdown_grace_secs`, SIGINT fast), TLS
/// on the listener from `tls:`, the upstream's CA from `upstream.ca_file`. Returns when the
/// server stops.
pub fn run(engine: Arc<Engine>) -> Result<(), ServeError> {
    use pingora::server::configuration::ServerConf;
    use pingora::server::{RunArgs, Server};

    // Read and let go: a reload frees the configuration it replaces once nobody holds it.
    let (listen, conf) = {
        let cfg = engine.config();
        let conf = ServerConf {
            threads: cfg
                .server
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            grace_period_seconds: Some(cfg.server.shutdown_grace_secs),
            graceful_shutdown_timeout_seconds: Some(1),
            ..ServerConf::default()
        };
        (cfg.listen, conf)
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let proxy = CibaProxy::try_new(Arc::clone(&engine)).map_err(ServeError::Setup)?;
    let nodes = Arc::clone(proxy.nodes());
    let mut service = Guarded::service(&server.configuration, proxy);
    let addr = listen.to_string();
    match engine.listener_tls() {
        Some(t) => {
            // The engine's loaded certificate, not the files again (no paths given).
            // With mutual TLS, the listener asks every client for a certificate (never
            // requires one) and keeps the chain for the engine (`Connection`).
            let mut settings = match t.client_verifier() {
                Some(verifier) => {
                    let mut s = pingora::listeners::tls::TlsSettings::with_callbacks(Box::new(
                        crate::proxy::ClientCertificates,
                    ))
                    .map_err(|e| ServeError::Setup(format!("tls: {e}")))?;
                    s.set_client_cert_verifier(verifier);
                    s
                }
                None => pingora::listeners::tls::TlsSettings::intermediate("", "")
                    .map_err(|e| ServeError::Setup(format!("tls: {e}")))?,
            };
            settings.set_cert_resolver(t.resolver());
            settings.enable_h2();
            service.add_tls_with_settings(&addr, None, settings);
        }
        None => service.add_tcp(&addr),
    }
    server.add_service(service);
    server.add_service(pingora::services::background::background_service(
        "upstream discovery",
        WarmUp(Arc::clone(&engine)),
    ));
    server.add_service(pingora::services::background::GenBackgroundService::new(
        "upstream health checks".into(),
        nodes,
    ));
    tracing::info!(%listen, issuer = engine.issuer(), runtime = "pingora", "ciba-gateway listening");
    server.run(RunArgs::default());
    Ok(())
}
