//! The gateway on a real socket (127.0.0.1, ephemeral port) with a manual clock, the base
//! configuration every suite starts from, and a real HTTP client.

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
        use ciba_gateway::secret::hash_secret as h;
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
    pub engine: Arc<Engine>,
    pub clock: ManualClock,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Gateway {
    pub fn new(
        url: String,
        engine: Arc<Engine>,
        clock: ManualClock,
        http: reqwest::Client,
        shutdown: oneshot::Sender<()>,
    ) -> Self {
        Self {
            url,
            engine,
            clock,
            http,
            shutdown: Some(shutdown),
        }
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
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
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
    let engine = Arc::new(Engine::with_clock(cfg, engine_clock).expect("valid test config"));
    let (tx, rx) = oneshot::channel();
    tokio::spawn(ciba_gateway::serve::tower::serve(
        listener,
        Arc::clone(&engine),
        async {
            let _ = rx.await;
        },
    ));
    Gateway {
        url: format!("http://{addr}"),
        engine,
        clock,
        http: http_client(),
        shutdown: Some(tx),
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
        let jwks: jsonwebtoken::jwk::JwkSet = self
            .http
            .get(d["jwks_uri"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let header = jsonwebtoken::decode_header(id_token).unwrap();
        let jwk = jwks
            .find(header.kid.as_deref().unwrap())
            .expect("the signing key is in the advertised JWKS");
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_audience(&[aud]);
        v.set_issuer(&[d["issuer"].as_str().unwrap()]);
        jsonwebtoken::decode::<serde_json::Value>(
            id_token,
            &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
            &v,
        )
        .unwrap()
        .claims
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
