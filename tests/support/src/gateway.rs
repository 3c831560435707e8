//! The gateway on a real socket (127.0.0.1, ephemeral port) with a manual clock, the base
//! configuration every suite starts from, and a real HTTP client.
//!
//! With `CIBA_TEST_REPLICAS` set to a Redis URL (as `scripts/test` does for a second run of the
//! protocol suites), every gateway [`start`] makes is **three engines sharing that Redis** (a
//! fresh key prefix per gateway; one signing key and CSRF key for the three), each on its own
//! socket, behind one address that hands each connection to the next replica in turn; the test
//! client opens a connection per request, so consecutive requests land on different replicas.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use ciba_gateway::clock::ManualClock;
use ciba_gateway::{Config, Engine};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const POST_CLIENT: (&str, &str) = ("post-client", "post-secret");
/// A secret with characters that Basic auth must form-urlencode (OA-03).
pub const BASIC_CLIENT: (&str, &str) = ("basic-client", "b@sic:secret/with%&=");
pub const CODE_CLIENT: (&str, &str) = ("code-client", "code-secret");
pub const NO_CIBA_CLIENT: (&str, &str) = ("no-ciba-client", "no-ciba-secret");
pub const NARROW_CLIENT: (&str, &str) = ("narrow-client", "narrow-secret");
pub const ALICE_CODE: &str = "4321";

struct Hashes {
    post: String,
    basic: String,
    code: String,
    no_ciba: String,
    narrow: String,
    alice_code: String,
}

fn hashes() -> &'static Hashes {
    static H: OnceLock<Hashes> = OnceLock::new();
    H.get_or_init(|| {
        use ciba_gateway::hash_secret as h;
        Hashes {
            post: h(POST_CLIENT.1),
            basic: h(BASIC_CLIENT.1),
            code: h(CODE_CLIENT.1),
            no_ciba: h(NO_CIBA_CLIENT.1),
            narrow: h(NARROW_CLIENT.1),
            alice_code: h(ALICE_CODE),
        }
    })
}

/// The configuration every test starts from; `public_url` is filled in with the real port.
pub fn base_config(addr: SocketAddr) -> Config {
    let h = hashes();
    let yaml = format!(
        r#"
listen: "{addr}"
public_url: "http://{addr}"
ciba:
  interval_secs: 5
  default_expiry_secs: 120
  max_expiry_secs: 300
  binding_message: {{ max_chars: 20 }}
channel: {{ type: log }}
users:
  type: static
  users:
    - {{ subject: "sub-alice", username: alice, email: Alice@Example.com, phone: "+15550100001", name: Alice Adams, user_code: "{alice_code}" }}
    - {{ subject: "sub-bob", username: bob, email: bob@example.com, name: Bob Brown }}
clients:
  - {{ client_id: post-client, name: Post Client, secret: "{post}", token_endpoint_auth_method: client_secret_post }}
  - {{ client_id: basic-client, name: Basic Client, secret: "{basic}", token_endpoint_auth_method: client_secret_basic }}
  - {{ client_id: code-client, secret: "{code}", token_endpoint_auth_method: client_secret_post, backchannel_user_code_parameter: true }}
  - {{ client_id: no-ciba-client, secret: "{no_ciba}", token_endpoint_auth_method: client_secret_post, grant_types: [authorization_code] }}
  - {{ client_id: narrow-client, secret: "{narrow}", token_endpoint_auth_method: client_secret_post, scopes: [openid] }}
"#,
        alice_code = h.alice_code,
        post = h.post,
        basic = h.basic,
        code = h.code,
        no_ciba = h.no_ciba,
        narrow = h.narrow,
    );
    Config::from_yaml(&yaml).expect("the base test configuration is valid")
}

/// A running gateway.
pub struct Gateway {
    pub url: String,
    /// The engine (the first replica's, with `CIBA_TEST_REPLICAS`).
    pub engine: Arc<Engine>,
    /// Every replica's engine (one without `CIBA_TEST_REPLICAS`).
    pub engines: Vec<Arc<Engine>>,
    pub clock: ManualClock,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Gateway {
    /// A gateway served by `engines` (one, or the replicas of [`serve_replicas`]).
    pub fn serving(
        url: String,
        engines: Vec<Arc<Engine>>,
        clock: ManualClock,
        http: reqwest::Client,
        shutdown: oneshot::Sender<()>,
    ) -> Self {
        Self {
            url,
            engine: Arc::clone(&engines[0]),
            engines,
            clock,
            http,
            shutdown: Some(shutdown),
        }
    }

    /// The `kid` the gateway signs with: its first configured key's, or the ephemeral key's
    /// when none is configured.
    pub fn own_kid(&self) -> String {
        self.engine
            .config()
            .tokens
            .keys
            .first()
            .map_or_else(|| "ephemeral-es256".to_owned(), |k| k.kid.clone())
    }

    /// How many token requests the replicas hold now (long polling).
    pub fn held_polls(&self) -> usize {
        self.engines.iter().map(|e| e.held_polls()).sum()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn http_client() -> reqwest::Client {
    ciba_gateway::install_crypto_provider();
    let mut b = reqwest::Client::builder();
    if replicas().is_some() {
        // A connection per request: the round-robin front spreads requests, not clients.
        b = b.pool_max_idle_per_host(0);
    }
    b.redirect(reqwest::redirect::Policy::none())
        // The wire as it is: no Accept-Encoding added, nothing decoded behind the test's back.
        .no_gzip()
        .no_deflate()
        .build()
        .unwrap()
}

/// Starts the standalone gateway with the base configuration changed by `edit`, on a manual
/// clock.
pub async fn start(edit: impl FnOnce(&mut Config)) -> Gateway {
    let clock = ManualClock::new();
    start_with_clock(edit, clock.clone(), Arc::new(clock)).await
}

/// Starts the gateway on the system clock, for tests that drive an external client polling in
/// real time.
pub async fn start_real_time(edit: impl FnOnce(&mut Config)) -> Gateway {
    start_with_clock(
        edit,
        ManualClock::new(),
        Arc::new(ciba_gateway::clock::SystemClock),
    )
    .await
}

async fn start_with_clock(
    edit: impl FnOnce(&mut Config),
    clock: ManualClock,
    engine_clock: Arc<dyn ciba_gateway::clock::Clock>,
) -> Gateway {
    ciba_gateway::install_crypto_provider();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = base_config(addr);
    edit(&mut cfg);
    let (engines, tx) = serve_replicas(cfg, engine_clock, listener, |l, engine| {
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(ciba_gateway::serve::tower::serve(l, engine, async {
            let _ = rx.await;
        }));
        tx
    })
    .await;
    Gateway::serving(format!("http://{addr}"), engines, clock, http_client(), tx)
}

/// Serves `cfg` on `listener`: one engine, or — with `CIBA_TEST_REPLICAS` — three sharing Redis
/// behind a round-robin front. `spawn` serves one engine on one listener (either runtime) and
/// returns its shutdown; the returned sender shuts them all down.
pub async fn serve_replicas(
    mut cfg: Config,
    engine_clock: Arc<dyn ciba_gateway::clock::Clock>,
    listener: TcpListener,
    spawn: impl Fn(TcpListener, Arc<Engine>) -> oneshot::Sender<()>,
) -> (Vec<Arc<Engine>>, oneshot::Sender<()>) {
    let Some(url) = replicas() else {
        let engine = Arc::new(Engine::with_clock(cfg, engine_clock).expect("valid test config"));
        let tx = spawn(listener, Arc::clone(&engine));
        return (vec![engine], tx);
    };
    share_store(&mut cfg, &url);
    let (mut engines, mut backends, mut stops) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let engine = Arc::new(
            Engine::with_clock(cfg.clone(), Arc::clone(&engine_clock)).expect("valid test config"),
        );
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        backends.push(l.local_addr().unwrap());
        stops.push(spawn(l, Arc::clone(&engine)));
        engines.push(engine);
    }
    let (tx, rx) = oneshot::channel::<()>();
    let (stop_tx, stop) = tokio::sync::watch::channel(());
    tokio::spawn(async move {
        let _ = rx.await;
        for s in stops {
            let _ = s.send(());
        }
        drop(stop_tx);
    });
    tokio::spawn(round_robin(listener, backends, stop));
    (engines, tx)
}

/// The Redis URL of a replicated run, if this is one.
fn replicas() -> Option<String> {
    std::env::var("CIBA_TEST_REPLICAS")
        .ok()
        .filter(|v| !v.is_empty())
}

/// Moves a test's configuration onto the shared Redis (keeping its capacity and grace), with
/// the settings replicas must share.
fn share_store(cfg: &mut Config, url: &str) {
    use ciba_gateway::config::{KeyConfig, SecretRef, SigningAlg, StoreConfig};
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static PEM: OnceLock<String> = OnceLock::new();
    let pem = PEM.get_or_init(|| ciba_gateway::generate_signing_key(SigningAlg::ES256).unwrap());
    let (capacity, grace) = match &cfg.store {
        StoreConfig::Memory {
            capacity,
            expired_grace_secs,
            ..
        } => (*capacity, *expired_grace_secs),
        StoreConfig::Redis(r) => (r.capacity, r.expired_grace_secs),
    };
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // This gateway's replicas share a key; another gateway of the same test has its own.
    let csrf = std::env::temp_dir().join(format!("ciba-replicas-key-{}-{n}", std::process::id()));
    std::fs::write(&csrf, crate::random_token()).unwrap();
    let yaml = format!(
        "type: redis\nurl: {url}\nkey_prefix: rr{}-{n}\ncapacity: {capacity}\nexpired_grace_secs: {grace}\n",
        std::process::id()
    );
    cfg.store = serde_saphyr::from_str(&yaml).expect("a redis store section");
    if cfg.tokens.keys.is_empty() {
        cfg.tokens.keys.push(KeyConfig {
            kid: "replicas".into(),
            alg: SigningAlg::ES256,
            private_key: SecretRef::new(pem.clone()),
        });
    }
    let key_file = || SecretRef::new(format!("file:{}", csrf.display()));
    if cfg.approval.csrf_key.is_none() {
        cfg.approval.csrf_key = Some(key_file());
    }
    if let ciba_gateway::config::ChannelConfig::Http { bearer_secret, .. } = &mut cfg.channel
        && bearer_secret.is_none()
    {
        *bearer_secret = Some(key_file());
    }
}

/// Hands each connection accepted on `front` to the next of `backends`.
async fn round_robin(
    front: TcpListener,
    backends: Vec<SocketAddr>,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = front.accept() => a,
        };
        let Ok((mut inbound, _)) = accepted else {
            continue;
        };
        let to = backends[next % backends.len()];
        next += 1;
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// An engine in process (no socket) on the base configuration changed by `edit`, a manual
/// clock, and a current-thread runtime to drive it: for protocol tests below HTTP.
pub fn in_process(edit: impl FnOnce(&mut Config)) -> (Engine, tokio::runtime::Runtime) {
    ciba_gateway::install_crypto_provider();
    let mut cfg = base_config("127.0.0.1:9".parse().unwrap());
    edit(&mut cfg);
    let clock = ManualClock::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (Engine::with_clock(cfg, Arc::new(clock)).unwrap(), rt)
}

/// A default gateway.
pub async fn gateway() -> Gateway {
    start(|_| {}).await
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Reply {
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("<none>")
    }
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.error()),
            (status, code),
            "body: {}",
            self.json
        );
    }
}

impl Gateway {
    pub async fn post_form(
        &self,
        path: &str,
        params: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Reply {
        let mut rb = self.http.post(format!("{}{path}", self.url)).form(params);
        if let Some((id, secret)) = basic {
            let enc = |s: &str| form_encode(s);
            rb = rb.basic_auth(enc(id), Some(enc(secret)));
        }
        reply(rb.send().await.unwrap()).await
    }

    /// A GET of one of the gateway's paths.
    pub async fn get(&self, path: &str) -> Reply {
        reply(
            self.http
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The discovery document the gateway serves.
    pub async fn discovery(&self) -> serde_json::Value {
        let url = format!("{}/.well-known/openid-configuration", self.url);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Validates an ID token as a client would, from discovery's `issuer` and `jwks_uri` alone,
    /// for audience `aud`; returns its claims.
    pub async fn verify_id_token(&self, id_token: &str, aud: &str) -> serde_json::Value {
        self.verify_id_token_from(&self.discovery().await, id_token, aud)
            .await
    }

    /// Validates an ID token from the `issuer` and `jwks_uri` of discovery document `d`.
    pub async fn verify_id_token_from(
        &self,
        d: &serde_json::Value,
        id_token: &str,
        aud: &str,
    ) -> serde_json::Value {
        let header = jsonwebtoken::decode_header(id_token).unwrap();
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_audience(&[aud]);
        v.set_issuer(&[d["issuer"].as_str().unwrap()]);
        let jwks = d["jwks_uri"].as_str().unwrap();
        crate::tokens::verify_with_jwks(&self.http, jwks, id_token, v)
            .await
            .1
    }

    /// bc-authorize as `post-client` with the given extra parameters.
    pub async fn bc(&self, params: &[(&str, &str)]) -> Reply {
        let mut p = vec![
            ("client_id", POST_CLIENT.0),
            ("client_secret", POST_CLIENT.1),
        ];
        p.extend_from_slice(params);
        self.post_form("/bc-authorize", &p, None).await
    }

    /// A successful bc-authorize for alice; returns the auth_req_id.
    pub async fn start_request(&self) -> String {
        let r = self
            .bc(&[
                ("scope", "openid profile email"),
                ("login_hint", "alice"),
                ("binding_message", "1234"),
            ])
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        r.json["auth_req_id"].as_str().unwrap().to_owned()
    }

    /// A CIBA poll as `post-client`.
    pub async fn poll(&self, auth_req_id: &str) -> Reply {
        self.poll_as(POST_CLIENT, auth_req_id).await
    }

    pub async fn poll_as(&self, client: (&str, &str), auth_req_id: &str) -> Reply {
        self.poll_with_grant(client, "urn:openid:params:grant-type:ciba", auth_req_id)
            .await
    }

    /// A token request for `auth_req_id` as `client`, spelling the grant type `grant_type`.
    pub async fn poll_with_grant(
        &self,
        client: (&str, &str),
        grant_type: &str,
        auth_req_id: &str,
    ) -> Reply {
        self.post_form(
            "/token",
            &[
                ("grant_type", grant_type),
                ("client_id", client.0),
                ("client_secret", client.1),
                ("auth_req_id", auth_req_id),
            ],
            None,
        )
        .await
    }
}

pub fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        json,
    }
}
