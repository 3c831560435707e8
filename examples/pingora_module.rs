//! A team's own pingora proxy — its own `ProxyHttp`, a `LoadBalancer` over two identity-server
//! nodes with a health check — adds CIBA by calling the module from two of its phases.
//!
//! ```text
//! # two nodes of one provider (any OpenID provider; here oidc-provider twice)
//! ISSUER=http://127.0.0.1:8080 PORT=3000 node tests/upstream/provider.mjs &
//! ISSUER=http://127.0.0.1:8080 PORT=3001 node tests/upstream/provider.mjs &
//! CIBA_MY_CLIENT_SECRET=supersecret cargo run --example pingora_module
//! curl -s http://127.0.0.1:8080/.well-known/openid-configuration
//! ```
//!
//! Its test (`cargo test --example pingora_module`) runs it in front of two real
//! django-oauth-toolkit nodes sharing one database, and kills one mid-test.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ciba_gateway::proxy::{CibaCtx, CibaModule};
use ciba_gateway::{Config, Engine};
use pingora::http::RequestHeader;
use pingora::lb::LoadBalancer;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

/// The team's proxy. Everything but the two `ciba` calls is what it had before.
struct IdentityProxy {
    nodes: Arc<LoadBalancer<RoundRobin>>,
    /// The provider's host name: the TLS server name and what its nodes answer for.
    host: String,
    ciba: CibaModule,
}

/// Per request: the module's context, and the team's own (here: which nodes failed).
#[derive(Default)]
struct Ctx {
    ciba: CibaCtx,
    failed: usize,
}

#[async_trait]
impl ProxyHttp for IdentityProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // The team's own rules would go first; then CIBA answers what is its.
        self.ciba.request_filter(session, &mut ctx.ciba).await
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let node = self
            .nodes
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no healthy node"))?;
        Ok(Box::new(HttpPeer::new(node, false, self.host.clone())))
    }

    /// A node that refuses connections is skipped before the health check notices.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.failed += 1;
        if ctx.failed < 2 {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        self.ciba.upstream_request_filter(session, upstream_request)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        self.ciba.fail_to_proxy(session, e).await
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        // A forwarded request's span ends with the status it got.
        self.ciba.logging(session, &mut ctx.ciba);
    }
}

/// The two nodes, health-checked every second (a connection must succeed).
fn nodes(addrs: &[String]) -> std::io::Result<LoadBalancer<RoundRobin>> {
    let mut nodes = LoadBalancer::try_from_iter(addrs)?;
    nodes.set_health_check(TcpHealthCheck::new());
    nodes.health_check_frequency = Some(Duration::from_secs(1));
    Ok(nodes)
}

/// The gateway's configuration: the provider's nodes are given to the engine too, so that its
/// own requests (discovery, JWKS) move to the other node when one is down.
fn engine(config: Config, addrs: &[String]) -> Result<Engine, ciba_gateway::ConfigErrors> {
    let mut config = config;
    if let Some(u) = &mut config.upstream {
        u.nodes = addrs.to_vec();
    }
    Engine::new(config)
}

#[cfg_attr(test, allow(dead_code))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let addrs = ["127.0.0.1:3000".to_owned(), "127.0.0.1:3001".to_owned()];
    let mut config = Config::load(concat!(env!("CARGO_MANIFEST_DIR"), "/config/upstream.yaml"))?;
    if let Some(u) = &mut config.upstream {
        // The provider by the name its nodes answer for.
        u.url = "http://localhost:3000".parse()?;
    }
    let listen = config.listen.to_string();
    let engine = Arc::new(engine(config, &addrs)?);

    // pingora builds its own runtimes: no #[tokio::main] here.
    let mut server = Server::new(None)?;
    server.bootstrap();
    let checks = background_service("provider health", nodes(&addrs)?);
    let proxy = IdentityProxy {
        nodes: checks.task(),
        host: "localhost".into(),
        ciba: CibaModule::new(engine),
    };
    let mut service = http_proxy_service(&server.configuration, proxy);
    service.add_tcp(&listen);
    server.add_service(service);
    server.add_service(checks);
    server.run_forever()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ciba_test_support::providers::{TwoNodes, own_reads, provider_grant};
    use ciba_test_support::{Authenticator, UrlClient, base_config};
    use pingora::services::background::BackgroundService as _;

    /// The proxy above on an ephemeral port, inside this test's runtime (pingora's `Server`
    /// owns the process; its `ServerApp` runs anywhere), with the health checks running.
    async fn serve(proxy: IdentityProxy) -> String {
        let nodes = Arc::clone(&proxy.nodes);
        let (_keep, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _keep = _keep;
            nodes.start(watch.clone()).await
        });
        let conf = Arc::new(pingora::server::configuration::ServerConf::default());
        let app = Arc::new(pingora::proxy::http_proxy(&conf, proxy));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _stop = _stop;
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (app, stopped) = (Arc::clone(&app), stopped.clone());
                tokio::spawn(async move {
                    use pingora::apps::ServerApp as _;
                    let stream = pingora::protocols::l4::stream::Stream::from(tcp);
                    app.process_new(Box::new(stream), &stopped).await;
                });
            }
        });
        url
    }

    // GW-01, TOK-11, BC-ACK-01, TOK-08: a user-owned proxy load-balancing over two real
    // provider nodes (django-oauth-toolkit at its defaults, one database) serves CIBA and
    // passes the provider's own traffic; with one node killed, traffic and the gateway's own
    // discovery and JWKS reads move to the other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_user_owned_proxy_adds_ciba_and_survives_a_node() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gw_addr = listener.local_addr().unwrap();
        drop(listener);
        let origin = format!("http://{gw_addr}");
        let mut nodes = TwoNodes::start(&format!("{origin}/o/approve/callback")).await;

        let auth = Authenticator::start().await;
        let mut config = base_config(gw_addr);
        config.issuer = Some(format!("{origin}/o"));
        // The provider by name, as its nodes know it; the nodes by address.
        let mut up = ciba_gateway::config::UpstreamConfig::new(
            format!("http://localhost:{}", nodes.a).parse().unwrap(),
        );
        // Every discovery and JWKS request is read from the provider afresh.
        up.discovery_cache_secs = 0;
        up.jwks_cache_secs = 0;
        config.upstream = Some(up);
        config.channel = auth.channel_config();
        let engine = Arc::new(engine(config, &nodes.addrs()).unwrap());
        let url = serve(IdentityProxy {
            nodes: Arc::new(self::nodes(&nodes.addrs()).unwrap()),
            host: "localhost".into(),
            ciba: CibaModule::new(engine),
        })
        .await;
        let http = ciba_test_support::http_client();
        let client = UrlClient {
            http: http.clone(),
            origin: url.clone(),
            prefix: "/o".into(),
            token_path: "/o/token/".into(),
            client: ciba_test_support::POST_CLIENT,
        };
        let expected = (
            200,
            serde_json::json!(format!("{origin}/o/token/")),
            200,
            true,
        );

        for _ in 0..4 {
            assert_eq!(provider_grant(&http, &url).await, 200);
        }
        assert_eq!(own_reads(&http, &url).await, expected);
        let d: serde_json::Value = http
            .get(format!("{url}/o/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            d["backchannel_authentication_endpoint"],
            format!("{origin}/o/bc-authorize")
        );
        client.flow("alice", &auth).await;

        nodes.kill_a().await;
        for _ in 0..4 {
            assert_eq!(
                provider_grant(&http, &url).await,
                200,
                "the provider's grant through node b"
            );
        }
        assert_eq!(
            own_reads(&http, &url).await,
            expected,
            "discovery and JWKS read from node b"
        );
        client.flow("alice", &auth).await;
    }
}
