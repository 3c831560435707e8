//! Harness for the gateway in front of a real upstream: panva's oidc-provider (node) as a child
//! process, the gateway on either engine, and an echo server for header- and byte-level checks.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;

use ciba_gateway::config::{ForwardingHeaders, RuntimeKind, UpstreamConfig};
use ciba_gateway::{Config, Engine};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::gateway::{Gateway, base_config, http_client};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The oidc-provider process.
pub struct Provider {
    pub port: u16,
    issuer: String,
    proxy: bool,
    child: Option<tokio::process::Child>,
    /// What it printed after it started listening.
    printed: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Provider {
    /// oidc-provider as shipped (`proxy` off: URLs built from `Host`), on a port it binds itself.
    pub async fn start(issuer: &str) -> Provider {
        Self::start_with(issuer, false).await
    }

    /// oidc-provider, trusting `X-Forwarded-*` when `proxy`, on a port it binds itself (the
    /// system's pick: a port picked here and bound later by node could be taken in between).
    pub async fn start_with(issuer: &str, proxy: bool) -> Provider {
        Self::spawn(issuer, 0, proxy)
            .await
            .unwrap_or_else(|why| panic!("oidc-provider exited before listening:\n{why}"))
    }

    /// oidc-provider whose issuer is its own address, `http://127.0.0.1:<port>`. The port must be
    /// known before it starts, so one taken in between is a retry on another.
    pub async fn start_at_own_address() -> Provider {
        let mut why = String::new();
        for _ in 0..5 {
            let port = free_port();
            match Self::spawn(&format!("http://127.0.0.1:{port}"), port, false).await {
                Ok(p) => return p,
                Err(w) if w.contains("EADDRINUSE") => why = w,
                Err(w) => panic!("oidc-provider on port {port} exited before listening:\n{w}"),
            }
        }
        panic!("oidc-provider found no free port in five tries:\n{why}")
    }

    /// Starts node on `port` (0: the system picks) and waits until it listens; what it wrote to
    /// stderr when it exits first.
    async fn spawn(issuer: &str, port: u16, proxy: bool) -> Result<Provider, String> {
        let dir = crate::repo_root().join("tests/upstream");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run `npm ci --prefix tests/upstream` (scripts/test does)"
        );
        let mut child = tokio::process::Command::new("node")
            .current_dir(&dir)
            .arg("provider.mjs")
            .env("ISSUER", issuer)
            .env("PORT", port.to_string())
            .env("PROXY", if proxy { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        // "oidc-provider listening on <port> for <issuer>"
        let (port, mut lines) =
            announced_port(&mut child, "oidc-provider", "oidc-provider listening on ").await?;
        let printed: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let keep = Arc::clone(&printed);
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                keep.lock().unwrap().push(l);
            }
        });
        Ok(Provider {
            port,
            issuer: issuer.to_owned(),
            proxy,
            child: Some(child),
            printed,
        })
    }

    /// The `traceparent` of each token request it received (`-` for none), in order.
    pub fn token_request_traceparents(&self) -> Vec<String> {
        self.printed
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("token request traceparent="))
            .map(str::to_owned)
            .collect()
    }

    /// Kills the provider and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.kill().await;
        let (issuer, port) = (self.issuer.clone(), self.port);
        *self = Provider::spawn(&issuer, port, self.proxy)
            .await
            .unwrap_or_else(|why| panic!("oidc-provider on port {port} did not restart:\n{why}"));
    }
}

/// What a child server prints after it said where it listens.
pub type Printed = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// Waits until `child` (stdout and stderr piped) prints a line starting with `prefix` followed
/// by the port it bound, and returns the port and the rest of its standard output; its standard
/// error is drained from then on, so that it never blocks on a full pipe. If it exits first:
/// what it wrote to standard error. The one way the harness learns a server's own port.
pub async fn announced_port(
    child: &mut tokio::process::Child,
    what: &str,
    prefix: &str,
) -> Result<(u16, Printed), String> {
    use tokio::io::AsyncReadExt as _;

    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let mut stderr = child.stderr.take().expect("stderr piped");
    let announced = tokio::time::timeout(crate::PATIENCE, async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(rest) = l.strip_prefix(prefix) {
                let digits = rest.split(|c: char| !c.is_ascii_digit()).next();
                let port = digits.and_then(|d| d.parse().ok());
                return Ok(port.unwrap_or_else(|| panic!("{what} prints its port: {l}")));
            }
        }
        let mut why = String::new();
        let _ = stderr.read_to_string(&mut why).await;
        Err(why)
    })
    .await
    .unwrap_or_else(|_| panic!("{what} listens within {:?}", crate::PATIENCE))?;
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
    });
    Ok((announced, lines))
}

/// Serves an engine on `listener` with the chosen adapter, until the returned sender fires.
pub fn spawn_engine(
    kind: RuntimeKind,
    listener: TcpListener,
    engine: Arc<Engine>,
) -> oneshot::Sender<()> {
    let (tx, rx) = oneshot::channel::<()>();
    let stop = async {
        let _ = rx.await;
    };
    match kind {
        RuntimeKind::Tower => {
            tokio::spawn(ciba_gateway::serve::tower::serve(listener, engine, stop));
        }
        RuntimeKind::Pingora => {
            tokio::spawn(ciba_gateway::serve::pingora::serve(listener, engine, stop));
        }
    }
    tx
}

pub fn upstream_config(port: u16) -> UpstreamConfig {
    let mut u = UpstreamConfig::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    u.connect_timeout_ms = 2000;
    u.read_timeout_ms = 10_000;
    u.forwarding_headers = ForwardingHeaders::XForwarded;
    u.discovery_cache_secs = 0;
    u
}

/// The gateway (engine `kind`) in front of an upstream on `upstream_port`.
pub async fn gateway_in_front(
    kind: RuntimeKind,
    listener: TcpListener,
    upstream_port: u16,
    edit: impl FnOnce(&mut Config),
) -> Gateway {
    ciba_gateway::install_crypto_provider();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut cfg = base_config(addr);
    cfg.upstream = Some(upstream_config(upstream_port));
    cfg.runtime = Some(kind);
    edit(&mut cfg);
    let clock = ciba_gateway::clock::ManualClock::new();
    let (engines, tx) =
        crate::gateway::serve_replicas(cfg, Arc::new(clock.clone()), listener, |l, e| {
            spawn_engine(kind, l, e)
        })
        .await;
    Gateway::serving(format!("http://{addr}"), engines, clock, http_client(), tx)
}

/// oidc-provider behind the gateway (engine `kind`); the provider's issuer is the gateway's URL.
pub async fn provider_behind(
    kind: RuntimeKind,
    edit: impl FnOnce(&mut Config),
) -> (Gateway, Provider) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let provider = Provider::start(&issuer).await;
    let gw = gateway_in_front(kind, listener, provider.port, edit).await;
    (gw, provider)
}

/// An upstream that answers every request with what it received: method, path, headers, body.
pub async fn echo_upstream() -> u16 {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, Uri};
    let app = axum::Router::new().fallback(
        |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| async move {
            let h: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        serde_json::Value::from(v.to_str().unwrap_or("<bin>")),
                    )
                })
                .collect();
            axum::Json(serde_json::json!({
                "method": method.as_str(),
                "uri": uri.to_string(),
                "headers": h,
                "body": String::from_utf8_lossy(&body),
            }))
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// A browser without JavaScript: follows redirects with a cookie jar and fills in a provider's
/// login and consent forms (oidc-provider's development forms, Django's login and
/// django-oauth-toolkit's consent): the login's user field gets `login`, its password field
/// `password`. Stops at the first page that is not such a form, or at a redirect leaving
/// `stay_on`.
pub struct Browser {
    pub http: reqwest::Client,
    /// The password typed at a login form.
    pub password: String,
}

/// Where browsing stopped.
#[derive(Debug)]
pub enum Stop {
    /// A page (not the provider's forms).
    Page {
        url: reqwest::Url,
        status: u16,
        html: String,
    },
    /// A redirect off `stay_on`.
    Redirect(reqwest::Url),
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(unescape(tag[at..].split('"').next()?))
}

/// The first form of a page that is a provider's login or consent form: its action and fields.
fn provider_form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let form = &html[html.find("<form")?..];
    let form = &form[..form.find("</form>")?];
    let action = attr(&form[..form.find('>')?], "action").unwrap_or_default();
    let mut fields = Vec::new();
    let mut is_provider = false;
    for tag in form.split('<').filter(|t| t.starts_with("input")) {
        let Some(name) = attr(tag, "name") else {
            continue;
        };
        let ty = attr(tag, "type").unwrap_or_default();
        is_provider |= ty == "password" || name == "prompt" || name == "allow";
        fields.push((name, attr(tag, "value").unwrap_or_default(), ty));
    }
    is_provider.then(|| (action, fields.into_iter().map(|(n, v, _)| (n, v)).collect()))
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_provider(jar)
                .build()
                .unwrap(),
            password: "pw".into(),
        }
    }

    /// A browser that types `password` at login forms.
    pub fn with_password(password: &str) -> Self {
        Self {
            password: password.into(),
            ..Self::new()
        }
    }

    pub async fn browse(&self, start: reqwest::Url, stay_on: &str, login: &str) -> Stop {
        let mut next = (reqwest::Method::GET, start, Vec::<(String, String)>::new());
        for _ in 0..25 {
            let (method, url, form) = next.clone();
            if !url.as_str().starts_with(stay_on) {
                return Stop::Redirect(url);
            }
            let req = self.http.request(method, url.clone());
            let resp = if form.is_empty() {
                req.send().await.unwrap()
            } else {
                req.form(&form).send().await.unwrap()
            };
            let status = resp.status().as_u16();
            if (300..400).contains(&status) {
                let loc = url
                    .join(resp.headers()["location"].to_str().unwrap())
                    .unwrap();
                next = (reqwest::Method::GET, loc, vec![]);
                continue;
            }
            let html = resp.text().await.unwrap();
            let Some((action, mut fields)) = provider_form(&html) else {
                return Stop::Page { url, status, html };
            };
            for (name, value) in &mut fields {
                match name.as_str() {
                    "login" | "username" => *value = login.into(),
                    "password" => value.clone_from(&self.password),
                    _ => {}
                }
            }
            let action = if action.is_empty() {
                url.clone()
            } else {
                url.join(&action).unwrap()
            };
            next = (reqwest::Method::POST, action, fields);
        }
        panic!("too many steps");
    }
}
