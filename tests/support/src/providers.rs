//! Real upstream OpenID providers at their defaults, behind the gateway: panva's oidc-provider
//! (node; `proxy` off as shipped, or on) and django-oauth-toolkit (a plain Django project under
//! `tests/django`, started with Django's development server; URLs built from `Host`, issuer
//! under `/o`, RS256 ID tokens). One shared suite runs against each (tests/providers.rs).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use ciba_gateway::Config;
use ciba_gateway::config::RuntimeKind;
use tokio::net::TcpListener;

use crate::gateway::{Gateway, base_config, http_client, serve_replicas};
use crate::upstream::{Provider, spawn_engine, upstream_config};

/// Which real provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// oidc-provider as shipped: `proxy` off, URLs built from `Host`.
    OidcProvider,
    /// oidc-provider told to trust `X-Forwarded-*` (`proxy = true`).
    OidcProviderProxy,
    /// django-oauth-toolkit.
    Django,
}

/// Runs `async fn case(provider: Kind, runtime: RuntimeKind)` for every provider on both
/// runtimes, as `case::<provider>_<runtime>`.
#[macro_export]
macro_rules! every_provider {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use $crate::providers::Kind;
            use ciba_gateway::config::RuntimeKind;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn oidc_provider_pingora() { super::$case(Kind::OidcProvider, RuntimeKind::Pingora).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn oidc_provider_tower() { super::$case(Kind::OidcProvider, RuntimeKind::Tower).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn oidc_provider_proxy_on_pingora() { super::$case(Kind::OidcProviderProxy, RuntimeKind::Pingora).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn django_pingora() { super::$case(Kind::Django, RuntimeKind::Pingora).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn django_tower() { super::$case(Kind::Django, RuntimeKind::Tower).await }
        }
    )*};
}

/// A confidential client registered at the provider.
#[derive(Debug, Clone, Copy)]
pub struct ProviderClient {
    pub id: &'static str,
    pub secret: &'static str,
    pub redirect_uri: &'static str,
}

/// A running provider.
pub struct RealProvider {
    pub kind: Kind,
    pub port: u16,
    _oidc: Option<Provider>,
    _django: Option<Django>,
}

impl RealProvider {
    /// The issuer's path at the provider (`""` at the root).
    pub fn issuer_path(&self) -> &'static str {
        match self.kind {
            Kind::Django => "/o",
            _ => "",
        }
    }

    /// A client allowed `client_credentials`.
    pub fn service_client(&self) -> ProviderClient {
        ProviderClient {
            id: "app-client",
            secret: "app-secret",
            redirect_uri: "",
        }
    }

    /// A client allowed the authorization code grant (with PKCE), redirecting to
    /// `http://127.0.0.1:9/cb`.
    pub fn web_client(&self) -> ProviderClient {
        match self.kind {
            Kind::Django => ProviderClient {
                id: "web-client",
                secret: "web-secret",
                redirect_uri: "http://127.0.0.1:9/cb",
            },
            _ => ProviderClient {
                id: "app-client",
                secret: "app-secret",
                redirect_uri: "http://127.0.0.1:9/cb",
            },
        }
    }

    /// `basic-client`'s credentials at the provider (`approval.mode: upstream`), Basic auth.
    pub fn upstream_credentials(&self) -> (&'static str, &'static str) {
        ("basic-client", "basic-client-upstream-secret")
    }

    /// The login and password a user types at the provider, and the e-mail it releases.
    pub fn user(&self) -> (&'static str, &'static str, &'static str) {
        match self.kind {
            Kind::Django => ("alice", "alice-password", "alice@example.com"),
            _ => ("alice", "pw", "alice@example.com"),
        }
    }
}

/// Starts `kind` for a gateway listening on `listener`, and the gateway (runtime `runtime`) in
/// front of it with only `upstream.url`, `public_url` and `issuer` set on top of the base
/// configuration, then `edit`.
pub async fn gateway_before(
    kind: Kind,
    runtime: RuntimeKind,
    edit: impl FnOnce(&mut Config),
) -> (Gateway, RealProvider) {
    let clock = ciba_gateway::clock::ManualClock::new();
    gateway_before_on(kind, runtime, edit, clock.clone(), Arc::new(clock)).await
}

/// [`gateway_before`] on the system clock, for an external client polling in real time.
pub async fn gateway_before_real_time(
    kind: Kind,
    runtime: RuntimeKind,
    edit: impl FnOnce(&mut Config),
) -> (Gateway, RealProvider) {
    let clock = ciba_gateway::clock::ManualClock::new();
    gateway_before_on(
        kind,
        runtime,
        edit,
        clock,
        Arc::new(ciba_gateway::clock::SystemClock),
    )
    .await
}

async fn gateway_before_on(
    kind: Kind,
    runtime: RuntimeKind,
    edit: impl FnOnce(&mut Config),
    clock: ciba_gateway::clock::ManualClock,
    engine_clock: Arc<dyn ciba_gateway::clock::Clock>,
) -> (Gateway, RealProvider) {
    ciba_gateway::install_crypto_provider();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = format!("http://{addr}");
    let provider = match kind {
        Kind::OidcProvider | Kind::OidcProviderProxy => {
            let oidc = Provider::start_with(&origin, kind == Kind::OidcProviderProxy).await;
            RealProvider {
                kind,
                port: oidc.port,
                _oidc: Some(oidc),
                _django: None,
            }
        }
        Kind::Django => {
            let django = Django::start(&format!("{origin}/o/approve/callback")).await;
            RealProvider {
                kind,
                port: django.port,
                _oidc: None,
                _django: Some(django),
            }
        }
    };
    let mut cfg = base_config(addr);
    cfg.issuer = Some(format!("{origin}{}", provider.issuer_path()));
    let mut up = upstream_config(provider.port);
    // The provider's defaults, not the harness's: discovery cached as shipped.
    up.discovery_cache_secs = 60;
    cfg.upstream = Some(up);
    cfg.runtime = Some(runtime);
    edit(&mut cfg);
    let (engines, tx) = serve_replicas(cfg, engine_clock, listener, |l, e| {
        spawn_engine(runtime, l, e)
    })
    .await;
    (
        Gateway::serving(origin, engines, clock, http_client(), tx),
        provider,
    )
}

/// django-oauth-toolkit under Django's development server, with a fresh database, on a port
/// the server binds itself (`runserver 127.0.0.1:0`; it prints the port it got): a port picked
/// here and bound later could be taken in between.
pub struct Django {
    /// The port it listens on.
    pub port: u16,
    child: tokio::process::Child,
    _dir: Option<TempDir>,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Django {
    /// Starts the provider; `callback` is the gateway's login callback, registered for
    /// `basic-client`.
    pub async fn start(callback: &str) -> Django {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "ciba-django-{}-{}",
            std::process::id(),
            crate::random_token()
        )));
        let mut node = Self::start_in(callback, &dir.0).await;
        node._dir = Some(dir);
        node
    }

    /// Starts a node of the provider with its database and signing key in `dir`: nodes started
    /// in one directory (one after the other) are one provider, sharing its clients, tokens and
    /// keys, as the nodes of a real deployment share a database.
    pub async fn start_in(callback: &str, dir: &std::path::Path) -> Django {
        let root = crate::repo_root().join("tests/django");
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "django-oauth-toolkit is not installed: run scripts/test (it creates tests/django/.venv)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let mut child = tokio::process::Command::new(python)
            .current_dir(&root)
            .args(["-u", "serve.py"])
            .env("PORT", "0")
            .env("WORKDIR", dir)
            .env("GATEWAY_CALLBACK", callback)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python runs");
        // It migrates its database first, then binds and says where:
        // "Starting development server at http://127.0.0.1:<port>/".
        let (port, mut lines) = crate::upstream::announced_port(
            &mut child,
            "the Django provider",
            "Starting development server at http://127.0.0.1:",
        )
        .await
        .unwrap_or_else(|why| panic!("the Django provider exited before listening:\n{why}"));
        // Drained, so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Django {
            port,
            child,
            _dir: None,
        }
    }
}

impl Drop for Django {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// One provider on two nodes: two django-oauth-toolkit processes sharing one database and
/// signing key, as a deployment's nodes share them; `a` can be killed mid-test.
pub struct TwoNodes {
    pub a: u16,
    pub b: u16,
    node_a: Option<Django>,
    _node_b: Django,
    dir: PathBuf,
}

impl TwoNodes {
    /// Starts both nodes; `callback` is the gateway's login callback.
    pub async fn start(callback: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ciba-nodes-{}", crate::random_token()));
        let node_a = Django::start_in(callback, &dir).await;
        let node_b = Django::start_in(callback, &dir).await;
        Self {
            a: node_a.port,
            b: node_b.port,
            node_a: Some(node_a),
            _node_b: node_b,
            dir,
        }
    }

    /// Both nodes' addresses, as `upstream.nodes` lists them.
    pub fn addrs(&self) -> Vec<String> {
        vec![
            format!("127.0.0.1:{}", self.a),
            format!("127.0.0.1:{}", self.b),
        ]
    }

    /// Kills node `a` and waits until it refuses connections.
    pub async fn kill_a(&mut self) {
        drop(self.node_a.take());
        let a = self.a;
        crate::eventually("node a refuses connections", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", a))
                .await
                .is_err()
        })
        .await;
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a client sees of the two-node provider through the gateway at `url` (issuer path
/// `/o`): the status of the provider's own `client_credentials` grant, passed through.
pub async fn provider_grant(http: &reqwest::Client, url: &str) -> u16 {
    http.post(format!("{url}/o/token/"))
        .basic_auth("app-client", Some("app-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The gateway's own reads of the provider, as a client sees them: discovery's status and
/// token endpoint, the JWKS's status and whether it carries the provider's RSA key.
pub async fn own_reads(http: &reqwest::Client, url: &str) -> (u16, serde_json::Value, u16, bool) {
    let get = |path: &'static str| async move {
        let r = http.get(format!("{url}{path}")).send().await.unwrap();
        let status = r.status().as_u16();
        (
            status,
            r.json::<serde_json::Value>().await.unwrap_or_default(),
        )
    };
    let (ds, d) = get("/o/.well-known/openid-configuration").await;
    let (js, j) = get("/o/jwks").await;
    let rsa = j["keys"]
        .as_array()
        .is_some_and(|k| k.iter().any(|k| k["kty"] == "RSA"));
    (ds, d["token_endpoint"].clone(), js, rsa)
}
