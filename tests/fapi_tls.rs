//! A FAPI-CIBA deployment as a bank runs it: the `ciba-gateway` binary with `profile:
//! fapi-ciba`, its own TLS listener asking clients for certificates (`mtls.request_certificates`),
//! on both runtimes, standalone and in front of a real provider (oidc-provider). Two clients
//! complete the poll flow over mutual TLS with signed requests: `tls_client_auth` (a certificate
//! from the bank's CA) and `private_key_jwt` (PS256) — each gets an access token bound to the
//! certificate it presented (FAPI-06, RFC 8705 §3), which userinfo honours only with that
//! certificate. The same flows again through openid-client (`tests/client/ciba-fapi.mjs`:
//! PrivateKeyJwt with PS256 and ES256, TlsClientAuth). A client without a certificate still
//! reaches the listener.

use ciba_test_support as common;

use common::binary::Running;
use common::keys::SigningKey;
use common::pki::{ClientCert, Pki};
use common::upstream::{Provider, echo_upstream, free_port};
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ciba-gateway");
const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct Deployment {
    _gw: Running,
    url: String,
    pki: Pki,
    ps: SigningKey,
    es: SigningKey,
    auth: Authenticator,
    /// A client that presents no certificate.
    plain: reqwest::Client,
    /// The discovery document.
    disc: Value,
}

async fn deploy(runtime: &str, pki: Pki, upstream: Option<&str>, port: u16) -> Deployment {
    ciba_gateway::install_crypto_provider();
    let ps = SigningKey::rsa("ps-1", Algorithm::PS256, false);
    let es = SigningKey::es256("es-1");
    let auth = Authenticator::start().await;
    let signing_key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(pki.dir.join("signing.pem"), signing_key.serialize_pem()).unwrap();
    let url = format!("https://localhost:{port}");
    let mut cfg = json!({
        "listen": format!("127.0.0.1:{port}"),
        "public_url": url,
        "runtime": runtime,
        "profile": "fapi-ciba",
        "server": { "threads": 1, "shutdown_grace_secs": 1 },
        "tls": { "cert_file": pki.path("cert.pem"), "key_file": pki.path("key.pem") },
        "mtls": { "request_certificates": true, "ca_file": pki.path("ca.pem") },
        "tokens": { "keys": [{ "kid": "bank-1", "alg": "ES256",
                               "private_key": format!("file:{}", pki.path("signing.pem")) }] },
        "ciba": { "offer_push": false, "accept_ietf_grant_type_alias": false, "interval_secs": 1,
                  "binding_message": { "required": true } },
        "channel": { "type": "http", "url": auth.url,
                     "outbound": { "timeout_ms": 3000, "allow_private_networks": true } },
        "users": { "type": "static", "users": [{ "subject": "sub-alice", "username": "alice" }] },
        "clients": [
            { "client_id": "mtls-client", "token_endpoint_auth_method": "tls_client_auth",
              "tls_client_auth_subject_dn": "CN=mtls-client,O=Example Bank",
              "jwks": SigningKey::jwks(&[&es]) },
            { "client_id": "pkj-client", "token_endpoint_auth_method": "private_key_jwt",
              "token_endpoint_auth_signing_alg": "PS256",
              "backchannel_authentication_request_signing_alg": "PS256",
              "jwks": SigningKey::jwks(&[&ps]) },
            { "client_id": "pkj-es-client", "token_endpoint_auth_method": "private_key_jwt",
              "jwks": SigningKey::jwks(&[&es]) },
        ],
    });
    if let Some(u) = upstream {
        cfg["upstream"] = json!({ "url": u });
    }
    // JSON is YAML.
    let gw = Running::start(BIN, port, &cfg.to_string());
    let plain = pki.https_client(None);
    // Discovery needs no certificate.
    let disc: Value = plain
        .get(format!("{url}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Deployment {
        _gw: gw,
        url,
        pki,
        ps,
        es,
        auth,
        plain,
        disc,
    }
}

impl Deployment {
    /// A POST to the endpoint discovery names `endpoint`.
    async fn post(&self, http: &reqwest::Client, endpoint: &str, form: &[(&str, &str)]) -> Reply {
        let r = http
            .post(self.disc[endpoint].as_str().unwrap())
            .form(form)
            .send()
            .await
            .unwrap();
        reply(r).await
    }

    fn claims(&self, client: &str, extra: Value) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut c = json!({
            "iss": client, "aud": self.url, "iat": now, "nbf": now, "exp": now + 300,
            "jti": random_token(),
        });
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    }

    /// openid-client's FAPI-CIBA flow (`tests/client/ciba-fapi.mjs`) as `client`, which
    /// authenticates by `method`, signs with `key` and holds `cert`; approved by the user.
    async fn openid_client(&self, client: &str, method: &str, key: &SigningKey, cert: &ClientCert) {
        let dir = &self.pki.dir;
        let key_file = dir.join(format!("{client}-signing.pem"));
        std::fs::write(&key_file, &key.pem).unwrap();
        let (cert_file, cert_key) = cert.write(dir, client);
        let alg = format!("{:?}", key.alg);
        let child = common::node::client(&[
            "ciba-fapi.mjs",
            &self.url,
            client,
            method,
            &key_file.display().to_string(),
            &alg,
            &key.kid,
            &cert_file,
            &cert_key,
            &self.pki.path("ca.pem"),
            "alice",
            "transfer 4711",
        ]);
        // The user approves once asked; a client that fails first is reported as it is.
        let output = child.wait_with_output();
        tokio::pin!(output);
        let approve = self.approve(&self.plain);
        tokio::pin!(approve);
        let out = tokio::select! {
            out = &mut output => out,
            () = &mut approve => {
                tokio::time::timeout(std::time::Duration::from_secs(60), output)
                    .await
                    .expect("the client finishes")
            }
        }
        .unwrap();
        assert!(
            out.status.success(),
            "{client}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        assert_eq!(result["sub"], "sub-alice", "{result}");
        assert_eq!(result["userinfo"]["sub"], "sub-alice", "{result}");
        assert_eq!(result["cnf"]["x5t#S256"], cert.thumbprint(), "{result}");
    }

    async fn approve(&self, http: &reqwest::Client) {
        let call = self.auth.next_call().await;
        let r = http
            .post(format!("{}/ciba/callback", self.url))
            .bearer_auth(&call.bearer)
            .json(&json!({ "status": "SUCCEED" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// The poll flow of `client` over mutual TLS with `cert`, authenticating with `auth` (form
    /// fields, made fresh for each call); returns the token response.
    async fn flow(
        &self,
        cert: &ClientCert,
        client: &str,
        request_key: &SigningKey,
        auth: impl Fn() -> Vec<(&'static str, String)>,
    ) -> Reply {
        let http = self.pki.https_client(Some(cert));
        let request = request_key.sign(&self.claims(
            client,
            json!({ "scope": "openid", "login_hint": "alice", "binding_message": "transfer 4711" }),
        ));
        let mut form = auth();
        form.push(("request", request));
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = self
            .post(&http, "backchannel_authentication_endpoint", &form)
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
        self.approve(&http).await;
        let mut form = auth();
        form.push(("grant_type", CIBA_GRANT.into()));
        form.push(("auth_req_id", id));
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let tokens = self.post(&http, "token_endpoint", &form).await;
        assert_eq!(tokens.status, 200, "{}", tokens.json);
        // Bound to the certificate of the TLS connection.
        let access = tokens.json["access_token"].as_str().unwrap();
        let (_, claims) = decode_jwt(access);
        assert_eq!(claims["cnf"]["x5t#S256"], cert.thumbprint(), "{claims}");
        let userinfo = |http: reqwest::Client| {
            let url = self.disc["userinfo_endpoint"].as_str().unwrap().to_owned();
            let access = access.to_owned();
            async move {
                http.get(url)
                    .bearer_auth(access)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(userinfo(http.clone()).await, 200);
        assert_eq!(userinfo(self.plain.clone()).await, 401);
        let other = self.pki.client_cert("someone-else");
        assert_eq!(userinfo(self.pki.https_client(Some(&other))).await, 401);
        tokens
    }
}

/// What the gateway fronts.
#[derive(Clone, Copy, PartialEq)]
enum Behind {
    /// Nothing (tower only: the pingora runtime is a proxy and needs an upstream).
    Nothing,
    /// A server that echoes what it is sent.
    Echo,
    /// oidc-provider at its defaults.
    Provider,
}

async fn fapi_ciba_over_mutual_tls(runtime: &str, behind: Behind) {
    let pki = Pki::new();
    let port = free_port();
    let (provider, upstream) = match behind {
        Behind::Nothing => (None, None),
        Behind::Echo => (None, Some(echo_upstream().await)),
        Behind::Provider => {
            let p = Provider::start(&format!("https://localhost:{port}")).await;
            let port = p.port;
            (Some(p), Some(port))
        }
    };
    let upstream = upstream.map(|p| format!("http://127.0.0.1:{p}"));
    let d = deploy(runtime, pki, upstream.as_deref(), port).await;

    // The profile's metadata.
    assert_eq!(d.disc["tls_client_certificate_bound_access_tokens"], true);
    // No shared secrets under the profile. In front of a provider the shared token endpoint
    // advertises the methods both accept (oidc-provider at its defaults has no mTLS).
    let methods = d.disc["token_endpoint_auth_methods_supported"].to_string();
    assert!(
        methods.contains("private_key_jwt") && !methods.contains("client_secret"),
        "{methods}"
    );
    assert_eq!(
        methods.contains("tls_client_auth"),
        provider.is_none(),
        "{methods}"
    );

    // tls_client_auth: the CA-issued certificate is the credential.
    let cert = d.pki.client_cert("mtls-client");
    d.flow(&cert, "mtls-client", &d.es, || {
        vec![("client_id", "mtls-client".into())]
    })
    .await;

    // private_key_jwt (PS256), over TLS with a certificate of its own.
    let cert = d.pki.client_cert("pkj-client");
    let url = d.url.clone();
    let ps = &d.ps;
    d.flow(&cert, "pkj-client", ps, || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let assertion = ps.sign(&json!({
            "iss": "pkj-client", "sub": "pkj-client", "aud": url, "iat": now,
            "exp": now + 60, "jti": random_token(),
        }));
        vec![
            ("client_assertion_type", ASSERTION_TYPE.into()),
            ("client_assertion", assertion),
        ]
    })
    .await;

    // openid-client, as a bank's developer uses it: PrivateKeyJwt with PS256 and ES256, and
    // TlsClientAuth, every call over mutual TLS (its customFetch), a signed request. (Not in
    // front of the echo server, whose "discovery" no client library accepts.)
    if behind != Behind::Echo {
        let cert = d.pki.client_cert("mtls-client");
        d.openid_client("mtls-client", "tls_client_auth", &d.es, &cert)
            .await;
        let cert = d.pki.client_cert("pkj-client");
        d.openid_client("pkj-client", "private_key_jwt", &d.ps, &cert)
            .await;
        d.openid_client("pkj-es-client", "private_key_jwt", &d.es, &cert)
            .await;
    }

    // The same client without a certificate: its tokens cannot be bound (FAPI-06).
    let r = d
        .post(
            &d.plain,
            "backchannel_authentication_endpoint",
            &[("client_id", "mtls-client"), ("request", "x")],
        )
        .await;
    r.assert_error(401, "invalid_client");
    drop(provider);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fapi_ciba_over_mutual_tls_standalone_tower() {
    fapi_ciba_over_mutual_tls("tower", Behind::Nothing).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fapi_ciba_over_mutual_tls_in_front_of_echo_pingora() {
    fapi_ciba_over_mutual_tls("pingora", Behind::Echo).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fapi_ciba_over_mutual_tls_in_front_of_oidc_provider_pingora() {
    fapi_ciba_over_mutual_tls("pingora", Behind::Provider).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fapi_ciba_over_mutual_tls_in_front_of_oidc_provider_tower() {
    fapi_ciba_over_mutual_tls("tower", Behind::Provider).await
}
