//! The client registry and client authentication (BC-AUTH-02/05, OA-02/03, RFC 7523,
//! RFC 8705). The same rules serve the backchannel and the token endpoint (TOK-01): what a
//! request presents is read once (`credentials.rs`), then the strategy of the client's
//! registered method verifies it (`methods.rs`). An unknown client, a method the client is not
//! registered for and wrong credentials get the same answer after the same work.

mod credentials;
pub(crate) mod metadata;
mod methods;

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;

use crate::config::{
    AuthMethod, ClientConfig, Config, ConfigErrors, HintType, Problems, Profile, SigningAlg,
    required_reference, resolve_verifier,
};
use crate::jwks::PublicKeys;
use crate::live::Live;
use crate::outbound::OutboundClient;
use crate::protocol::{Form, GRANT_TYPE_CIBA, OAuthError};
use crate::secret::SecretVerifier;
use crate::store::Store;
use crate::tls::ClientCertificate;

pub(crate) use methods::single_use_key;
use methods::{Context, Failure, Method};

/// A registered client, ready to authenticate.
#[derive(Debug)]
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// Name shown to the user.
    pub name: String,
    /// The registered authentication method.
    pub auth_method: AuthMethod,
    /// Whether it registered itself (RFC 7591) rather than being configured.
    pub registered: bool,
    /// The secret's verifier (secret methods only).
    secret: Option<SecretVerifier>,
    /// The client's public keys (assertions, signed requests, its self-signed certificate).
    pub(crate) keys: Option<Arc<PublicKeys>>,
    /// `tls_client_auth`: the registered subject DN or SAN entry, `(metadata name, value)`.
    tls_match: Option<(&'static str, String)>,
    /// `private_key_jwt`: the registered assertion algorithm.
    assertion_alg: Option<SigningAlg>,
    /// The algorithm it registered for its signed requests.
    pub request_signing_alg: Option<SigningAlg>,
    /// Whether every request it sends must be signed (BC-JWT-09, FAPI-02).
    pub must_sign: bool,
    /// Whether its access tokens are bound to its certificate (and a token request without
    /// one is refused).
    pub bound_tokens: bool,
    /// The hints it may name users by.
    pub allowed_hints: Vec<HintType>,
    /// Whether it is held to FAPI-CIBA.
    pub fapi: bool,
    /// Whether the client may start CIBA requests (BC-AUTH-06): it has the CIBA grant, or it
    /// is a push client.
    pub ciba_allowed: bool,
    /// Whether the client must send a `user_code` (BC-UC-01).
    pub user_code_required: bool,
    /// Scopes this client may request.
    pub scopes: Vec<String>,
    /// What the client receives for an approved request.
    pub tokens: crate::config::TokenSource,
    /// How the gateway authenticates at the upstream for this client's logins.
    pub upstream: Option<UpstreamCredentials>,
    /// The algorithm the client expects its ID tokens signed with, if registered.
    pub id_token_alg: Option<crate::config::SigningAlg>,
    /// Whether the client may use the `refresh_token` grant (it then gets refresh tokens for
    /// grants with `offline_access`).
    pub refresh_allowed: bool,
    /// How the client gets its tokens (CM-01).
    pub delivery: crate::config::DeliveryMode,
    /// Where a ping client is notified (CM-02).
    pub notification_endpoint: Option<url::Url>,
}

/// A client's credentials at the upstream provider.
#[derive(Debug, Clone)]
pub struct UpstreamCredentials {
    /// The client id at the upstream.
    pub client_id: String,
    /// Its secret.
    pub secret: crate::secret::Secret,
    /// How to present it at the upstream's token endpoint.
    pub auth_method: AuthMethod,
}

impl Client {
    /// Keeps what `previous` (the same client before a reload) verified, if its secret is
    /// the same.
    fn adopt_verified(&mut self, previous: &Client) {
        if let (Some(secret), Some(before)) = (&mut self.secret, &previous.secret) {
            secret.adopt(before);
        }
    }

    /// The client at `clients[i]`; problems with its secrets and keys are recorded under that
    /// path. `outbound` fetches its `jwks_uri`.
    fn from_config(
        i: usize,
        c: &ClientConfig,
        cfg: &Config,
        outbound: &OutboundClient,
        problems: &mut Problems,
    ) -> Option<Self> {
        // Every problem is recorded (the keys' too) before a bad secret drops the client.
        let secret = c.secret.as_ref().map(|s| {
            problems
                .take(format!("clients[{i}].secret"), resolve_verifier(s))
                .map(SecretVerifier::new)
        });
        let bad_secret = matches!(secret, Some(None));
        let client = Self::build(
            &format!("clients[{i}]"),
            c,
            secret.flatten(),
            cfg,
            outbound,
            problems,
        );
        client.filter(|_| !bad_secret)
    }

    /// A client registered through the registration endpoint, from its stored record.
    fn registered(
        r: &crate::store::RegisteredClient,
        cfg: &Config,
        outbound: &OutboundClient,
    ) -> Result<Self, String> {
        let c = metadata::client_config(&r.client_id, &r.metadata)?;
        let secret = r
            .secret_sha256
            .map(|d| SecretVerifier::new(crate::secret::Expected::Issued(d)));
        let mut problems = Problems::new();
        let client = Self::build("client", &c, secret, cfg, outbound, &mut problems);
        problems
            .finish(|| ())
            .map_err(|e| e.to_string())
            .and_then(|()| client.ok_or_else(|| "unusable registration".into()))
            .map(|mut c| {
                c.registered = true;
                c
            })
    }

    /// The client `c` describes, with its secret's verifier; problems with its keys and
    /// credentials at the upstream are recorded under `p`.
    fn build(
        p: &str,
        c: &ClientConfig,
        secret: Option<SecretVerifier>,
        cfg: &Config,
        outbound: &OutboundClient,
        problems: &mut Problems,
    ) -> Option<Self> {
        let keys = problems.take(
            format!("{p}.jwks"),
            PublicKeys::from_config(&c.keys(), outbound),
        );
        let upstream = c.upstream.as_ref().map(|u| {
            problems
                .take(
                    format!("{p}.upstream.client_secret"),
                    required_reference(&u.client_secret),
                )
                .map(|secret| UpstreamCredentials {
                    client_id: u.client_id.clone().unwrap_or_else(|| c.client_id.clone()),
                    secret,
                    auth_method: u.auth_method,
                })
        });
        let fapi = c.profile_in(cfg) == Some(Profile::FapiCiba);
        Some(Self {
            id: c.client_id.clone(),
            name: c.name.clone().unwrap_or_else(|| c.client_id.clone()),
            auth_method: c.token_endpoint_auth_method,
            secret,
            registered: false,
            keys: keys?.map(Arc::new),
            tls_match: c
                .tls_client_auth_match()
                .first()
                .map(|(k, v)| (*k, (*v).to_owned())),
            assertion_alg: c.token_endpoint_auth_signing_alg,
            request_signing_alg: c.backchannel_authentication_request_signing_alg,
            // FAPI-02: under the profile every request is signed.
            must_sign: c.backchannel_authentication_request_signing_alg.is_some() || fapi,
            bound_tokens: c.tls_client_certificate_bound_access_tokens || fapi,
            allowed_hints: c.allowed_hint_types.clone().unwrap_or_else(|| {
                vec![
                    HintType::LoginHint,
                    HintType::LoginHintToken,
                    HintType::IdTokenHint,
                ]
            }),
            fapi,
            // A push client never uses the grant at the token endpoint (CM-03) but does start
            // requests.
            ciba_allowed: c.grant_types.iter().any(|g| g == GRANT_TYPE_CIBA)
                || c.backchannel_token_delivery_mode == crate::config::DeliveryMode::Push,
            user_code_required: c.backchannel_user_code_parameter,
            scopes: c
                .scopes
                .clone()
                .unwrap_or_else(|| cfg.scopes_supported.clone()),
            tokens: c.tokens,
            id_token_alg: c.id_token_signed_response_alg,
            refresh_allowed: c.grant_types.iter().any(|g| g == "refresh_token"),
            delivery: c.backchannel_token_delivery_mode,
            notification_endpoint: c.backchannel_client_notification_endpoint.clone(),
            upstream: match upstream {
                Some(u) => Some(u?),
                None => None,
            },
        })
    }

    /// The algorithms this client's assertions may use.
    fn assertion_algs(&self) -> Vec<SigningAlg> {
        methods::accepted_algs(self.assertion_alg, self.fapi)
    }

    /// The algorithms this client's signed requests may use (BC-JWT-02, FAPI-03).
    pub(crate) fn request_algs(&self) -> Vec<SigningAlg> {
        methods::accepted_algs(self.request_signing_alg, self.fapi)
    }
}

/// The credentials of one request, as the adapter and the form carry them.
pub(crate) struct Credentials<'a> {
    /// The request's headers (a Basic `Authorization`).
    pub headers: &'a HeaderMap,
    /// The form (`client_id`, `client_secret`, `client_assertion`).
    pub form: &'a Form<'a>,
    /// The client's TLS certificate, if its connection presented one.
    pub certificate: Option<&'a ClientCertificate>,
}

/// All clients, by id, and what authenticating them needs: the configured ones, and — with
/// registration — the ones that registered themselves, read from the store.
#[derive(Debug)]
pub struct ClientRegistry {
    /// The configured clients (`clients:`), replaced whole by a reload.
    clients: Live<Configured>,
    registered: Option<Registered>,
    /// Fetches clients' `jwks_uri`s (configured and registered clients alike).
    outbound: OutboundClient,
    /// Verifies `tls_client_auth` chains (`mtls.ca_file`).
    ca: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    skew_secs: u64,
}

/// Registered clients: the store has the records; parsed clients are kept while their
/// record's version is unchanged, so a lookup costs one store read and no parsing.
struct Registered {
    store: Arc<Store>,
    cfg: Arc<Config>,
    parsed: moka::sync::Cache<String, (u64, Arc<Client>)>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("parsed", &self.parsed.entry_count())
            .finish_non_exhaustive()
    }
}

impl Registered {
    /// The registered client `id`, as the store has it now.
    async fn lookup(
        &self,
        id: &str,
        outbound: &OutboundClient,
    ) -> Result<Option<Arc<Client>>, crate::store::StoreError> {
        use crate::store::ClientStore as _;
        let Some(record) = self.store.client(id).await? else {
            self.parsed.invalidate(id);
            return Ok(None);
        };
        if let Some((version, client)) = self.parsed.get(id)
            && version == record.version
        {
            return Ok(Some(client));
        }
        match Client::registered(&record, &self.cfg, outbound) {
            Ok(c) => {
                let c = Arc::new(c);
                self.parsed
                    .insert(id.to_owned(), (record.version, Arc::clone(&c)));
                Ok(Some(c))
            }
            // Registered under rules the configuration no longer allows (a scope removed from
            // `scopes_supported`): refused until it updates its registration.
            Err(why) => {
                tracing::warn!(client_id = %id, %why, "a registered client no longer fits the configuration");
                Ok(None)
            }
        }
    }
}

impl ClientRegistry {
    /// Builds the registry from configuration, loading every client's secrets and keys; every
    /// problem is reported, each under its client's path.
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::new();
        let outbound = client_outbound(cfg, &mut problems);
        let clients = configured(cfg, &outbound, &mut problems);
        let ca = match &cfg.mtls.ca_file {
            Some(path) => problems.take("mtls.ca_file", ca_verifier(path)),
            None => None,
        };
        problems.finish(|| Self {
            clients: Live::new(clients),
            registered: None,
            outbound,
            ca,
            skew_secs: cfg.ciba.clock_skew_secs,
        })
    }

    /// The same registry, also finding the clients registered in `store` (with
    /// `registration.enabled`).
    pub(crate) fn with_registered(mut self, cfg: Arc<Config>, store: Arc<Store>) -> Self {
        self.registered = Some(Registered {
            cfg,
            store,
            parsed: moka::sync::Cache::new(10_000),
        });
        self
    }

    /// The clients of a reloaded file, with this registry's outbound client and CA (the
    /// settings they come from, `ciba.client_notifications` and `mtls`, change only with a
    /// restart); every problem under its client's path.
    pub(crate) fn reconfigured(&self, cfg: &Config) -> Result<Configured, ConfigErrors> {
        let mut problems = Problems::new();
        let clients = configured(cfg, &self.outbound, &mut problems);
        problems.finish(|| clients)
    }

    /// Takes `clients` (from [`ClientRegistry::reconfigured`]) in place of the configured ones;
    /// registered clients are untouched. A client whose secret is unchanged keeps what it
    /// verified, so a reload does not make every client pay an argon2 run again.
    pub(crate) fn replace_configured(&self, mut clients: Configured) {
        {
            let current = self.clients.get();
            for (id, client) in &mut clients {
                if let (Some(previous), Some(client)) = (current.get(id), Arc::get_mut(client)) {
                    client.adopt_verified(previous);
                }
            }
        }
        self.clients.replace(clients);
    }

    /// Whether any configured client satisfies `pred`.
    pub fn any(&self, pred: impl Fn(&Client) -> bool) -> bool {
        self.clients.get().values().any(|c| pred(c))
    }

    /// Whether clients can register (and so be of any kind the configuration allows).
    pub fn takes_registrations(&self) -> bool {
        self.registered.is_some()
    }

    /// Whether `record` makes a usable client under this configuration (its keys parse, its
    /// metadata fits the rules).
    pub(crate) fn admits(&self, record: &crate::store::RegisteredClient) -> Result<(), String> {
        let Some(r) = &self.registered else {
            return Err("registration is off".into());
        };
        Client::registered(record, &r.cfg, &self.outbound).map(|_| ())
    }

    /// Whether `id` is a configured client's (never manageable through registration).
    pub fn is_configured(&self, id: &str) -> bool {
        self.clients.get().contains_key(id)
    }

    /// A client by id: configured, or registered (a store that cannot be read is logged and
    /// finds none).
    pub async fn get(&self, id: &str) -> Option<Arc<Client>> {
        self.find(id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a registered client could not be read");
            None
        })
    }

    async fn find(&self, id: &str) -> Result<Option<Arc<Client>>, crate::store::StoreError> {
        if let Some(c) = self.clients.get().get(id) {
            return Ok(Some(Arc::clone(c)));
        }
        match &self.registered {
            Some(r) => r.lookup(id, &self.outbound).await,
            None => Ok(None),
        }
    }

    /// The client the credentials claim to be, unverified.
    pub(crate) async fn claimed(&self, creds: &Credentials<'_>) -> Option<Arc<Client>> {
        let presented =
            credentials::presented(creds.headers, creds.form, creds.certificate).ok()?;
        self.get(presented.client_id()).await
    }

    /// Authenticates the client of a request with its registered method. Mixing methods is
    /// `invalid_request` (BC-AUTH-05); every other failure is `invalid_client` (401 with a
    /// Basic challenge), the same answer after the same work whether the client is unknown,
    /// registered for another method, or presented wrong credentials. `audiences` are the
    /// `aud` values an assertion may name; `store` counts used assertions.
    pub(crate) async fn authenticate(
        &self,
        creds: &Credentials<'_>,
        now_secs: u64,
        audiences: &[String],
        store: &Store,
    ) -> Result<Arc<Client>, OAuthError> {
        let presented = credentials::presented(creds.headers, creds.form, creds.certificate)?;
        let refused = || OAuthError::invalid_client("client authentication failed");
        let found = match self.find(presented.client_id()).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "a registered client could not be read");
                return Err(OAuthError::unavailable(
                    "client authentication cannot be checked now; retry later",
                    5,
                ));
            }
        };
        let Some(client) = found.filter(|c| presented.fits(c.auth_method)) else {
            methods::equal_work(&presented).await;
            return Err(refused());
        };
        let cx = Context {
            now_secs,
            audiences,
            store,
            skew_secs: self.skew_secs,
            ca: self.ca.as_ref(),
        };
        // The key- and certificate-based methods are boxed: their futures (a JWKS fetch among
        // them) would otherwise widen every caller's state machine — a held long poll keeps its
        // token request's for as long as it waits — while the secret path, the common one,
        // stays without an allocation.
        let c = &*client;
        let verified = match client.auth_method {
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost => {
                methods::SharedSecret::verify(c, &presented, &cx).await
            }
            AuthMethod::PrivateKeyJwt => {
                Box::pin(methods::PrivateKeyJwt::verify(c, &presented, &cx)).await
            }
            AuthMethod::TlsClientAuth => {
                Box::pin(methods::TlsClientAuth::verify(c, &presented, &cx)).await
            }
            AuthMethod::SelfSignedTlsClientAuth => {
                Box::pin(methods::SelfSignedTlsClientAuth::verify(c, &presented, &cx)).await
            }
        };
        match verified {
            Ok(()) => Ok(client),
            Err(Failure::Refused(why)) => {
                tracing::debug!(client_id = %client.id, method = client.auth_method.as_str(), %why, "client authentication refused");
                Err(refused())
            }
            Err(Failure::Unavailable(why)) => {
                tracing::warn!(client_id = %client.id, %why, "client authentication could not be checked");
                Err(OAuthError::unavailable(
                    "client authentication cannot be checked now; retry later",
                    5,
                ))
            }
        }
    }
}

/// The client for clients' own URLs (`jwks_uri`): the notification endpoints' policy
/// (`ciba.client_notifications`: its SSRF guard, timeout and CA).
/// The configured clients, by id.
pub(crate) type Configured = HashMap<String, Arc<Client>>;

/// Builds the clients of `cfg` (`clients:`), each problem under its path.
fn configured(cfg: &Config, outbound: &OutboundClient, problems: &mut Problems) -> Configured {
    let mut clients = HashMap::new();
    for (i, c) in cfg.clients.iter().enumerate() {
        if let Some(client) = Client::from_config(i, c, cfg, outbound, problems) {
            clients.insert(c.client_id.clone(), Arc::new(client));
        }
    }
    clients
}

fn client_outbound(cfg: &Config, problems: &mut Problems) -> OutboundClient {
    let n = &cfg.ciba.client_notifications;
    let roots = match &n.ca_file {
        Some(path) => problems
            .take(
                "ciba.client_notifications.ca_file",
                crate::tls::pem_certificates(path),
            )
            .unwrap_or_default(),
        None => Vec::new(),
    };
    OutboundClient::with_roots(&n.outbound, &roots)
}

/// A verifier of client certificate chains issued by the CAs in `path`.
fn ca_verifier(
    path: &std::path::Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::tls::pem_certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::SeqCst;

    fn registry() -> (ClientRegistry, Store) {
        crate::install_crypto_provider();
        let cfg = Config::from_yaml(&format!(
            "public_url: http://gw\nclients:\n  - {{ client_id: known, secret: \"{}\", token_endpoint_auth_method: client_secret_post }}\n",
            crate::secret::hash_secret("right")
        ))
        .unwrap();
        let store = Store::from_config(&cfg.store, false).unwrap();
        (ClientRegistry::from_config(&cfg).unwrap(), store)
    }

    async fn auth(
        r: &(ClientRegistry, Store),
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<String, OAuthError> {
        let form = Form::parse(body).unwrap();
        let creds = Credentials {
            headers,
            form: &form,
            certificate: None,
        };
        r.0.authenticate(&creds, 0, &[], &r.1)
            .await
            .map(|c| c.id.clone())
    }

    // Hostile traffic, item 4, and issue 19: an unknown client id and a method the client is
    // not registered for cost the same argon2 verification as a wrong secret, and get the same
    // answer, so neither the time taken nor the words tell which ids exist.
    #[tokio::test]
    async fn unknown_clients_and_wrong_methods_look_like_wrong_secrets() {
        let r = registry();
        let none = HeaderMap::new();
        let wrong_secret = auth(&r, &none, b"client_id=known&client_secret=guess")
            .await
            .unwrap_err();
        for (headers, body) in [
            (none.clone(), &b"client_id=nobody&client_secret=guess"[..]),
            (
                {
                    let mut h = HeaderMap::new();
                    // known:x as Basic, for a client_secret_post client.
                    h.insert("authorization", "Basic a25vd246eA==".parse().unwrap());
                    h
                },
                &b""[..],
            ),
        ] {
            let before = crate::secret::HASHED.load(SeqCst);
            let e = auth(&r, &headers, body).await.unwrap_err();
            assert_eq!(e.code(), crate::protocol::ErrorCode::InvalidClient);
            assert_eq!(
                e.into_response().into_body(),
                wrong_secret.clone().into_response().into_body()
            );
            assert!(
                crate::secret::HASHED.load(SeqCst) > before,
                "no argon2 verification ran"
            );
        }
        assert_eq!(
            auth(&r, &none, b"client_id=known&client_secret=right")
                .await
                .unwrap(),
            "known"
        );
    }

    #[tokio::test]
    async fn two_authorization_headers_are_refused() {
        let r = registry();
        let mut h = HeaderMap::new();
        h.append("authorization", "Basic a25vd246cmlnaHQ=".parse().unwrap());
        h.append("authorization", "Basic b3RoZXI6eA==".parse().unwrap());
        let e = auth(&r, &h, b"").await.unwrap_err();
        assert_eq!(e.code(), crate::protocol::ErrorCode::InvalidRequest);
    }
}
