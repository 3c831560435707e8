//! Clients as banks run them, on both runtimes: signed authentication requests (CIBA §7.1.1,
//! BC-JWT-*), `private_key_jwt` (RFC 7523), `tls_client_auth` and `self_signed_tls_client_auth`
//! (RFC 8705) with the certificate forwarded by a TLS-terminating load balancer (`mtls.header`,
//! trusted from 127.0.0.1 only), certificate-bound access tokens (FAPI-06), `login_hint_token`
//! and per-client hint types (BC-REQ-02), and every negative case of the FAPI-CIBA conformance
//! plan (requirements §6) that concerns the authorization server. Real keys (RSA 2048, P-256),
//! a real CA, real sockets; time is the gateway's manual clock. The same flows over the
//! gateway's own mutual-TLS listener are in `tests/fapi_tls.rs`.

use ciba_test_support as common;

use ciba_gateway::config::{ClientConfig, RuntimeKind};
use common::keys::{SigningKey, corrupted, now_secs, unsigned};
use common::pki::{ClientCert, Pki};
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

/// Clients whose keys are at a `jwks_uri` (a crate root's modules sit beside it; this one
/// sits with its suite).
#[path = "fapi/jwks_uri.rs"]
mod jwks_uri;

/// Not one of the headers the gateway always removes (BCP-05): the configured name is.
const CERT_HEADER: &str = "x-bank-client-cert";
const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

both_runtimes!(
    fapi_02_03_private_key_jwt_ps256_signed_request_completes_with_a_bound_token,
    fapi_02_03_private_key_jwt_es256_signed_request_completes_with_a_bound_token,
    fapi_06_tls_client_auth_completes_and_binds_the_token_to_the_certificate,
    fapi_06_self_signed_tls_client_auth_completes_and_binds_the_token,
    fapi_02_unsigned_request_is_refused,
    bc_jwt_02_fapi_03_none_corrupted_and_rs256_request_objects_are_refused,
    bc_jwt_03_request_signed_by_another_client_is_refused,
    bc_jwt_04_05_request_object_missing_a_claim_is_refused,
    bc_jwt_04_request_object_with_bad_aud_or_iss_is_refused,
    bc_jwt_04_10_fapi_04_request_object_lifetimes,
    bc_jwt_07_replayed_request_object_is_refused,
    bc_req_02_request_object_with_two_hints_is_refused,
    fapi_03_05_client_assertion_rs256_replayed_or_missing_is_invalid_client,
    fapi_05_private_key_jwt_client_sending_a_secret_is_invalid_client,
    fapi_06_token_request_without_the_certificate_is_refused,
    bc_auth_tls_client_auth_with_another_certificate_is_invalid_client,
    oa_02_unknown_client_wrong_method_and_wrong_secret_look_the_same,
    bc_req_08_login_hint_token_from_a_trusted_issuer_names_the_user,
    bc_req_02_a_client_may_be_limited_to_some_hint_types,
    bcp_05_the_certificate_header_never_reaches_the_provider,
);

/// The gateway with the bank's clients, an authenticator that approves, and everyone's keys.
struct Bank {
    gw: Gateway,
    auth: Authenticator,
    ps: SigningKey,
    es: SigningKey,
    rs: SigningKey,
    other: SigningKey,
    hint_issuer: SigningKey,
    pki: Pki,
    /// Issued by the test CA to `mtls-client` (DN `CN=mtls-client, O=Example Bank`).
    mtls_cert: ClientCert,
    /// Registered in `self-signed-client`'s keys.
    self_signed: ClientCert,
}

fn client(v: Value) -> ClientConfig {
    serde_saphyr::from_str(&v.to_string()).unwrap()
}

async fn bank(kind: RuntimeKind) -> Bank {
    let ps = SigningKey::rsa("ps-1", Algorithm::PS256, false);
    let rs = SigningKey::rsa("rs-1", Algorithm::RS256, false);
    let es = SigningKey::es256("es-1");
    let other = SigningKey::es256("other-1");
    let hint_issuer = SigningKey::es256("hint-1");
    let pki = Pki::new();
    let mtls_cert = pki.client_cert("mtls-client");
    let self_signed = Pki::self_signed_client("self-signed-client");
    let fapi = |id: &str, method: &str, jwks: Value| {
        json!({
            "client_id": id, "profile": "fapi-ciba", "token_endpoint_auth_method": method,
            "jwks": jwks,
        })
    };
    let mut self_signed_jwks = SigningKey::jwks(&[&es]);
    self_signed_jwks["keys"]
        .as_array_mut()
        .unwrap()
        .push(self_signed.jwk.clone());
    let clients = vec![
        client(fapi(
            "pkj-ps",
            "private_key_jwt",
            SigningKey::jwks(&[&ps, &rs]),
        )),
        client(fapi("pkj-es", "private_key_jwt", SigningKey::jwks(&[&es]))),
        client(json!({
            "client_id": "other-client", "token_endpoint_auth_method": "private_key_jwt",
            "jwks": SigningKey::jwks(&[&other]),
        })),
        client({
            let mut c = fapi("mtls-client", "tls_client_auth", SigningKey::jwks(&[&es]));
            c["tls_client_auth_subject_dn"] = json!("CN=mtls-client,O=Example Bank");
            c
        }),
        client(fapi(
            "self-signed-client",
            "self_signed_tls_client_auth",
            self_signed_jwks,
        )),
        client(json!({
            "client_id": "hint-token-client", "secret": ciba_gateway::hash_secret("hint-secret"),
            "token_endpoint_auth_method": "client_secret_post",
            "allowed_hint_types": ["login_hint_token"],
        })),
    ];
    let ca_file = pki.path("ca.pem");
    let hint_jwks = SigningKey::jwks(&[&hint_issuer]);
    let (gw, auth) = start_with_authenticator(kind, move |c| {
        c.mtls = serde_saphyr::from_str(
            &json!({
                "header": CERT_HEADER,
                "trusted_proxies": ["127.0.0.1/32"],
                "ca_file": ca_file,
            })
            .to_string(),
        )
        .unwrap();
        c.ciba.login_hint_token = serde_saphyr::from_str(
            &json!({ "issuers": [{ "issuer": "https://hints.example", "jwks": hint_jwks }] })
                .to_string(),
        )
        .unwrap();
        c.clients.extend(clients);
    })
    .await;
    Bank {
        gw,
        auth,
        ps,
        es,
        rs,
        other,
        hint_issuer,
        pki,
        mtls_cert,
        self_signed,
    }
}

impl Bank {
    fn now(&self) -> u64 {
        now_secs(&self.gw.clock)
    }

    /// A valid request object's claims for `client`: alice, a binding message, 5 minutes.
    fn request_claims(&self, client: &str) -> Value {
        let now = self.now();
        json!({
            "iss": client, "aud": self.gw.url, "iat": now, "nbf": now, "exp": now + 300,
            "jti": random_token(), "scope": "openid profile", "login_hint": "alice",
            "binding_message": "1234",
        })
    }

    /// A fresh client assertion (RFC 7523) by `client` for the gateway.
    fn assertion(&self, client: &str, key: &SigningKey) -> String {
        let now = self.now();
        key.sign(&json!({
            "iss": client, "sub": client, "aud": self.gw.url, "iat": now, "exp": now + 60,
            "jti": random_token(),
        }))
    }

    /// A form POST to `path`, with `cert` forwarded as the load balancer would.
    async fn post(&self, path: &str, form: &[(&str, &str)], cert: Option<&ClientCert>) -> Reply {
        let mut rb = self
            .gw
            .http
            .post(format!("{}{path}", self.gw.url))
            .form(form);
        if let Some(c) = cert {
            rb = rb.header(CERT_HEADER, c.header_value());
        }
        reply(rb.send().await.unwrap()).await
    }

    /// bc-authorize as a `private_key_jwt` client with the signed `request`.
    async fn bc_pkj(&self, client: &str, key: &SigningKey, request: &str) -> Reply {
        let assertion = self.assertion(client, key);
        self.post(
            "/bc-authorize",
            &[
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
                ("request", request),
            ],
            None,
        )
        .await
    }

    /// bc-authorize as `pkj-ps` with `claims` signed by its PS256 key.
    async fn bc_ps(&self, claims: &Value) -> Reply {
        self.bc_pkj("pkj-ps", &self.ps, &self.ps.sign(claims)).await
    }

    /// Approves the request the authenticator was last asked about.
    async fn approve(&self) {
        let call = self.auth.next_call().await;
        assert_eq!(
            callback(&self.gw, &call.bearer, "SUCCEED").await.status,
            200
        );
    }

    async fn poll_pkj(
        &self,
        client: &str,
        key: &SigningKey,
        id: &str,
        cert: Option<&ClientCert>,
    ) -> Reply {
        let assertion = self.assertion(client, key);
        self.post(
            &self.gw.engine.paths().shared().token,
            &[
                ("grant_type", CIBA_GRANT),
                ("auth_req_id", id),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ],
            cert,
        )
        .await
    }

    async fn userinfo(&self, token: &str, cert: Option<&ClientCert>) -> Reply {
        let mut rb = self
            .gw
            .http
            .get(format!(
                "{}{}",
                self.gw.url,
                self.gw.engine.paths().shared().userinfo
            ))
            .bearer_auth(token);
        if let Some(c) = cert {
            rb = rb.header(CERT_HEADER, c.header_value());
        }
        reply(rb.send().await.unwrap()).await
    }

    /// The access token in `r` is bound to `cert` (its `cnf.x5t#S256`), and userinfo answers
    /// only to that certificate (RFC 8705 §3).
    async fn assert_bound(&self, r: &Reply, cert: &ClientCert) {
        assert_eq!(r.status, 200, "{}", r.json);
        let token = r.json["access_token"].as_str().unwrap();
        let (_, claims) = decode_jwt(token);
        assert_eq!(claims["cnf"]["x5t#S256"], cert.thumbprint(), "{claims}");
        assert_eq!(self.userinfo(token, Some(cert)).await.status, 200);
        let without = self.userinfo(token, None).await;
        assert_eq!(without.status, 401);
        let stranger = self.pki.client_cert("stranger");
        assert_eq!(self.userinfo(token, Some(&stranger)).await.status, 401);
    }
}

async fn signed_flow(bank: &Bank, client: &str, key: &SigningKey) {
    let r = bank
        .bc_pkj(client, key, &key.sign(&bank.request_claims(client)))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    bank.approve().await;
    // The certificate is the client's TLS certificate (any one: it authenticates by key).
    let cert = bank.pki.client_cert(client);
    let tokens = bank.poll_pkj(client, key, &id, Some(&cert)).await;
    bank.assert_bound(&tokens, &cert).await;
    assert!(tokens.json["id_token"].is_string());
}

async fn fapi_02_03_private_key_jwt_ps256_signed_request_completes_with_a_bound_token(
    kind: RuntimeKind,
) {
    let bank = bank(kind).await;
    signed_flow(&bank, "pkj-ps", &bank.ps).await;
}

async fn fapi_02_03_private_key_jwt_es256_signed_request_completes_with_a_bound_token(
    kind: RuntimeKind,
) {
    let bank = bank(kind).await;
    signed_flow(&bank, "pkj-es", &bank.es).await;
}

/// An mTLS client's flow: `client_id` plus its certificate authenticate it at both endpoints.
async fn mtls_flow(bank: &Bank, client: &str, cert: &ClientCert) {
    let request = bank.es.sign(&bank.request_claims(client));
    let r = bank
        .post(
            "/bc-authorize",
            &[("client_id", client), ("request", &request)],
            Some(cert),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    bank.approve().await;
    let token_path = bank.gw.engine.paths().shared().token.clone();
    let form = [
        ("grant_type", CIBA_GRANT),
        ("auth_req_id", id.as_str()),
        ("client_id", client),
    ];
    let tokens = bank.post(&token_path, &form, Some(cert)).await;
    bank.assert_bound(&tokens, cert).await;
}

async fn fapi_06_tls_client_auth_completes_and_binds_the_token_to_the_certificate(
    kind: RuntimeKind,
) {
    let bank = bank(kind).await;
    mtls_flow(&bank, "mtls-client", &bank.mtls_cert).await;
}

async fn fapi_06_self_signed_tls_client_auth_completes_and_binds_the_token(kind: RuntimeKind) {
    let bank = bank(kind).await;
    mtls_flow(&bank, "self-signed-client", &bank.self_signed).await;
}

async fn fapi_02_unsigned_request_is_refused(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let assertion = bank.assertion("pkj-ps", &bank.ps);
    let r = bank
        .post(
            "/bc-authorize",
            &[
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
                ("scope", "openid"),
                ("login_hint", "alice"),
                ("binding_message", "1234"),
            ],
            None,
        )
        .await;
    r.assert_error(400, "invalid_request");
}

async fn bc_jwt_02_fapi_03_none_corrupted_and_rs256_request_objects_are_refused(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let claims = bank.request_claims("pkj-ps");
    for request in [
        unsigned(&claims),
        corrupted(&bank.ps.sign(&claims)),
        // RS256 with a key the client registered for it: not a FAPI algorithm.
        bank.rs.sign(&claims),
    ] {
        let r = bank.bc_pkj("pkj-ps", &bank.ps, &request).await;
        r.assert_error(400, "invalid_request");
    }
}

async fn bc_jwt_03_request_signed_by_another_client_is_refused(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let claims = bank.request_claims("pkj-es");
    let r = bank
        .bc_pkj("pkj-es", &bank.es, &bank.other.sign(&claims))
        .await;
    r.assert_error(400, "invalid_request");
}

async fn bc_jwt_04_05_request_object_missing_a_claim_is_refused(kind: RuntimeKind) {
    let bank = bank(kind).await;
    for claim in ["aud", "iss", "exp", "iat", "nbf", "jti"] {
        let mut claims = bank.request_claims("pkj-ps");
        claims.as_object_mut().unwrap().remove(claim);
        let r = bank.bc_ps(&claims).await;
        assert_eq!(
            (r.status, r.error()),
            (400, "invalid_request"),
            "without {claim}: {}",
            r.json
        );
    }
    // The same claims complete: it was the missing one.
    let r = bank.bc_ps(&bank.request_claims("pkj-ps")).await;
    assert_eq!(r.status, 200, "{}", r.json);
}

async fn bc_jwt_04_request_object_with_bad_aud_or_iss_is_refused(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let mut bad_aud = bank.request_claims("pkj-ps");
    bad_aud["aud"] = json!("https://another-server.example");
    let mut bad_iss = bank.request_claims("pkj-ps");
    bad_iss["iss"] = json!("pkj-es");
    for claims in [bad_aud, bad_iss] {
        bank.bc_ps(&claims)
            .await
            .assert_error(400, "invalid_request");
    }
}

async fn bc_jwt_04_10_fapi_04_request_object_lifetimes(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let now = bank.now();
    let with = |iat: u64, nbf: u64, exp: u64| {
        let mut c = bank.request_claims("pkj-ps");
        c["iat"] = json!(iat);
        c["nbf"] = json!(nbf);
        c["exp"] = json!(exp);
        c
    };
    for (what, claims) in [
        ("expired", with(now - 600, now - 600, now - 300)),
        ("exp 70 minutes ahead", with(now, now, now + 70 * 60)),
        ("nbf 10 minutes ahead", with(now, now + 600, now + 900)),
        (
            "nbf 70 minutes old",
            with(now - 70 * 60, now - 70 * 60, now + 60),
        ),
        ("issued in the future", with(now + 600, now, now + 300)),
    ] {
        let r = bank.bc_ps(&claims).await;
        assert_eq!(
            (r.status, r.error()),
            (400, "invalid_request"),
            "{what}: {}",
            r.json
        );
    }
    // On the gateway's clock: an hour later, a request made then is fine.
    bank.gw.clock.advance_secs(3600);
    let r = bank.bc_ps(&bank.request_claims("pkj-ps")).await;
    assert_eq!(r.status, 200, "{}", r.json);
}

async fn bc_jwt_07_replayed_request_object_is_refused(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let request = bank.ps.sign(&bank.request_claims("pkj-ps"));
    let first = bank.bc_pkj("pkj-ps", &bank.ps, &request).await;
    assert_eq!(first.status, 200, "{}", first.json);
    bank.bc_pkj("pkj-ps", &bank.ps, &request)
        .await
        .assert_error(400, "invalid_request");
}

async fn bc_req_02_request_object_with_two_hints_is_refused(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let mut claims = bank.request_claims("pkj-ps");
    claims["login_hint_token"] = json!("junk");
    bank.bc_ps(&claims)
        .await
        .assert_error(400, "invalid_request");
}

async fn fapi_03_05_client_assertion_rs256_replayed_or_missing_is_invalid_client(
    kind: RuntimeKind,
) {
    let bank = bank(kind).await;
    let request = |b: &Bank| b.ps.sign(&b.request_claims("pkj-ps"));
    // RS256: not a FAPI algorithm, though the client has an RS256 key.
    let rs256 = bank.assertion("pkj-ps", &bank.rs);
    let r = bank
        .post(
            "/bc-authorize",
            &[
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &rs256),
                ("request", &request(&bank)),
            ],
            None,
        )
        .await;
    r.assert_error(401, "invalid_client");
    // Replayed: a second use of the same assertion.
    let once = bank.assertion("pkj-ps", &bank.ps);
    for expect in [200, 401] {
        let r = bank
            .post(
                "/bc-authorize",
                &[
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &once),
                    ("request", &request(&bank)),
                ],
                None,
            )
            .await;
        assert_eq!(r.status, expect, "{}", r.json);
    }
    // Only a client_id.
    let r = bank
        .post(
            "/bc-authorize",
            &[("client_id", "pkj-ps"), ("request", &request(&bank))],
            None,
        )
        .await;
    r.assert_error(401, "invalid_client");
    // And at the token endpoint.
    let r = bank
        .post(
            &bank.gw.engine.paths().shared().token,
            &[
                ("grant_type", CIBA_GRANT),
                ("auth_req_id", "x"),
                ("client_id", "pkj-ps"),
            ],
            None,
        )
        .await;
    r.assert_error(401, "invalid_client");
}

async fn fapi_05_private_key_jwt_client_sending_a_secret_is_invalid_client(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let request = bank.ps.sign(&bank.request_claims("pkj-ps"));
    let r = bank
        .post(
            "/bc-authorize",
            &[
                ("client_id", "pkj-ps"),
                ("client_secret", "anything"),
                ("request", &request),
            ],
            None,
        )
        .await;
    r.assert_error(401, "invalid_client");
}

async fn fapi_06_token_request_without_the_certificate_is_refused(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let r = bank.bc_ps(&bank.request_claims("pkj-ps")).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    bank.approve().await;
    bank.poll_pkj("pkj-ps", &bank.ps, &id, None)
        .await
        .assert_error(400, "invalid_request");
    // With it, the approved request still yields its tokens.
    let cert = bank.pki.client_cert("pkj-ps");
    let r = bank.poll_pkj("pkj-ps", &bank.ps, &id, Some(&cert)).await;
    bank.assert_bound(&r, &cert).await;
}

async fn bc_auth_tls_client_auth_with_another_certificate_is_invalid_client(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let request = bank.es.sign(&bank.request_claims("mtls-client"));
    let form = [("client_id", "mtls-client"), ("request", request.as_str())];
    // Issued by the right CA to another subject; the right subject, self-signed; none.
    let wrong_subject = bank.pki.client_cert("someone-else");
    let wrong_issuer = Pki::self_signed_client("mtls-client");
    for cert in [Some(&wrong_subject), Some(&wrong_issuer), None] {
        let r = bank.post("/bc-authorize", &form, cert).await;
        r.assert_error(401, "invalid_client");
    }
    // The self-signed client's certificate is not `mtls-client`'s either.
    let r = bank
        .post("/bc-authorize", &form, Some(&bank.self_signed))
        .await;
    r.assert_error(401, "invalid_client");
}

/// OA-02 and the enumeration finding: an unknown client, a client that uses another
/// method, and a wrong secret get the same answer.
async fn oa_02_unknown_client_wrong_method_and_wrong_secret_look_the_same(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let mut answers = Vec::new();
    for (id, secret) in [
        ("no-such-client", "x"),
        ("pkj-ps", "x"),
        ("basic-client", "x"),
        (POST_CLIENT.0, "wrong"),
    ] {
        let r = bank
            .post(
                "/bc-authorize",
                &[
                    ("client_id", id),
                    ("client_secret", secret),
                    ("scope", "openid"),
                    ("login_hint", "alice"),
                ],
                None,
            )
            .await;
        answers.push((r.status, r.json.to_string()));
    }
    assert_eq!(answers[0].0, 401, "{answers:?}");
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
}

async fn bc_req_08_login_hint_token_from_a_trusted_issuer_names_the_user(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let now = bank.now();
    let hint = |key: &SigningKey, iss: &str, exp: u64| {
        key.sign(&json!({ "iss": iss, "sub": "sub-alice", "iat": now, "exp": exp }))
    };
    let bc = |token: String| {
        let bank = &bank;
        async move {
            bank.post(
                "/bc-authorize",
                &[
                    ("client_id", "hint-token-client"),
                    ("client_secret", "hint-secret"),
                    ("scope", "openid"),
                    ("login_hint_token", &token),
                ],
                None,
            )
            .await
        }
    };
    let ok = bc(hint(&bank.hint_issuer, "https://hints.example", now + 300)).await;
    assert_eq!(ok.status, 200, "{}", ok.json);
    let call = bank.auth.next_call().await;
    assert!(call.body.to_string().contains("sub-alice"), "{}", call.body);
    bc(hint(&bank.hint_issuer, "https://hints.example", now - 120))
        .await
        .assert_error(400, "expired_login_hint_token");
    // Signed by a key the issuer does not have, or from an issuer nobody trusts.
    bc(hint(&bank.other, "https://hints.example", now + 300))
        .await
        .assert_error(400, "invalid_request");
    bc(hint(&bank.hint_issuer, "https://evil.example", now + 300))
        .await
        .assert_error(400, "invalid_request");
}

async fn bc_req_02_a_client_may_be_limited_to_some_hint_types(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let r = bank
        .post(
            "/bc-authorize",
            &[
                ("client_id", "hint-token-client"),
                ("client_secret", "hint-secret"),
                ("scope", "openid"),
                ("login_hint", "alice"),
            ],
            None,
        )
        .await;
    r.assert_error(400, "invalid_request");
    assert!(
        r.json["error_description"]
            .as_str()
            .unwrap()
            .contains("login_hint")
    );
}

/// BCP-05: the configured certificate header is the gateway's alone, even from a trusted
/// proxy: pass-through requests lose it (pingora here fronts the echo server).
async fn bcp_05_the_certificate_header_never_reaches_the_provider(kind: RuntimeKind) {
    let bank = bank(kind).await;
    let r = bank
        .gw
        .http
        .get(format!("{}/some/provider/page", bank.gw.url))
        .header(CERT_HEADER, bank.mtls_cert.header_value())
        .header("x-kept", "yes")
        .send()
        .await
        .unwrap();
    let r = reply(r).await;
    match kind {
        RuntimeKind::Pingora => {
            assert_eq!(r.status, 200, "{}", r.json);
            assert_eq!(r.json["headers"]["x-kept"], "yes");
            assert!(r.json["headers"].get(CERT_HEADER).is_none(), "{}", r.json);
        }
        // Standalone there is nobody to forward to.
        RuntimeKind::Tower => assert_eq!(r.status, 404),
    }
}
