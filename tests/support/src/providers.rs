//! Real upstream OpenID providers at their defaults, behind the gateway: panva's oidc-provider
//! (node; `proxy` off as shipped, or on) and django-oauth-toolkit (a plain Django project under
//! `tests/django`, started with Django's development server; URLs built from `Host`, issuer
//! under `/o`, RS256 ID tokens). One shared suite runs against each (tests/providers.rs).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use ciba_gateway::Config;
use ciba_gateway::config::RuntimeKind;
use tokio::net::TcpListener;

use crate::gateway::{Gateway, base_config, http_client, serve_replicas};
use crate::upstream::{Provider, free_port, spawn_engine, upstream_config};

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
    let port = free_port();
    let provider = match kind {
        Kind::OidcProvider | Kind::OidcProviderProxy => RealProvider {
            kind,
            port,
            _oidc: Some(Provider::start_with(&origin, port, kind == Kind::OidcProviderProxy).await),
            _django: None,
        },
        Kind::Django => RealProvider {
            kind,
            port,
            _oidc: None,
            _django: Some(Django::start(port, &format!("{origin}/o/approve/callback")).await),
        },
    };
    let mut cfg = base_config(addr);
    cfg.issuer = Some(format!("{origin}{}", provider.issuer_path()));
    let mut up = upstream_config(port);
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

/// django-oauth-toolkit under Django's development server, with a fresh database.
pub struct Django {
    child: tokio::process::Child,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Django {
    /// Starts the provider on `port`; `callback` is the gateway's login callback, registered
    /// for `basic-client`.
    pub async fn start(port: u16, callback: &str) -> Django {
        let root = crate::repo_root().join("tests/django");
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "django-oauth-toolkit is not installed: run scripts/test (it creates tests/django/.venv)"
        );
        let dir = TempDir(
            std::env::temp_dir().join(format!("ciba-django-{}-{port}", std::process::id())),
        );
        std::fs::create_dir_all(&dir.0).unwrap();
        let child = tokio::process::Command::new(python)
            .current_dir(&root)
            .args(["-u", "serve.py"])
            .env("PORT", port.to_string())
            .env("WORKDIR", &dir.0)
            .env("GATEWAY_CALLBACK", callback)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python runs");
        // Ready when it accepts connections (it migrates its database first).
        let ready = async {
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .expect("the Django provider starts");
        Django { child, _dir: dir }
    }
}

impl Drop for Django {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
