//! Dynamic client registration (RFC 7591, REG-*) and client management (RFC 7592, RCM-*) on
//! both runtimes (tower standalone, pingora in front of an upstream that must never see a
//! registration): the write-up's own body, its flow with the issued credentials, the metadata
//! errors, the initial access token, read / update / delete with the registration access
//! token, and the per-address limit. Real sockets; an external authenticator approves. With
//! `CIBA_TEST_REPLICAS` every case runs on three replicas sharing Redis, so a registration
//! through one replica is used through the others.

use ciba_test_support as common;

use ciba_gateway::config::{Rate, RuntimeKind, SecretRef, StoreConfig};
use common::keys::{SigningKey, now_secs};
use common::receiver::Receiver;
use common::tokens::decode_jwt;
use common::*;
use serde_json::{Value, json};

const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";
const IETF_GRANT: &str = "urn:ietf:params:oauth:grant-type:ciba";

both_runtimes!(
    reg_01_the_write_ups_body_registers_a_client_that_completes_the_flow,
    reg_02_03_invalid_metadata_is_refused_with_the_field_named,
    reg_06_an_initial_access_token_guards_registration,
    rcm_01_02_read_update_and_delete_with_the_registration_access_token,
    rcm_01_a_secret_is_rotated_only_on_request,
    rcm_03_pending_requests_keep_the_mode_and_endpoint_they_were_accepted_with,
    reg_registrations_are_limited_per_address,
    reg_05_a_conformance_style_private_key_jwt_client_signs_its_way_through,
);

/// The write-up's registration body, as its smart-home walk-through sends it.
fn write_up_body() -> Value {
    json!({
        "client_id": "smart-home-device",
        "client_secret": "device-secret",
        "redirect_uris": ["https://device.example.com/callback"],
        "grant_types": [IETF_GRANT],
        "response_types": ["token"],
        "scope": "openid profile",
        "backchannel_authentication_endpoint": "https://as.example.com/ciba/auth",
        "token_endpoint": "https://as.example.com/token"
    })
}

/// The gateway with open registration (memory store, clients kept in memory: the file is
/// the binary's, tested in tests/quickstart.rs), the write-up's `/ciba/auth` path and the HTTP
/// authentication channel of `auth`.
async fn gateway_with_registration(
    kind: RuntimeKind,
    auth: &Authenticator,
    edit: impl FnOnce(&mut ciba_gateway::Config),
) -> Gateway {
    let channel = auth.channel_config();
    start_on(kind, |c| {
        c.channel = channel;
        c.registration.enabled = true;
        c.registration.open = true;
        c.endpoints.backchannel_aliases = vec!["/ciba/auth".into()];
        c.store = StoreConfig::Memory {
            capacity: 1000,
            expired_grace_secs: 60,
            clients_file: None,
        };
        edit(c);
    })
    .await
}

async fn post_json(gw: &Gateway, path: &str, body: &Value, bearer: Option<&str>) -> Reply {
    let mut rb = gw.http.post(format!("{}{path}", gw.url)).json(body);
    if let Some(t) = bearer {
        rb = rb.bearer_auth(t);
    }
    reply(rb.send().await.unwrap()).await
}

async fn register(gw: &Gateway, body: &Value) -> Reply {
    post_json(gw, "/register", body, None).await
}

/// A request to the client's configuration endpoint.
async fn manage(
    gw: &Gateway,
    method: reqwest::Method,
    uri: &str,
    token: &str,
    body: Option<&Value>,
) -> Reply {
    let mut rb = gw.http.request(method, uri).bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(b);
    }
    reply(rb.send().await.unwrap()).await
}

/// bc-authorize as a registered client posting its secret, for alice.
/// What a registration issued: the credentials and the management handle (RFC 7592).
struct Issued {
    id: String,
    secret: String,
    uri: String,
    rat: String,
}

impl Issued {
    /// From a registration's answer, which must be `201`.
    fn of(r: &Reply) -> Self {
        assert_eq!(r.status, 201, "{}", r.json);
        let text = |k: &str| r.json[k].as_str().unwrap_or_default().to_owned();
        Self {
            id: text("client_id"),
            secret: text("client_secret"),
            uri: text("registration_client_uri"),
            rat: text("registration_access_token"),
        }
    }
}

async fn bc_as(gw: &Gateway, id: &str, secret: &str) -> Reply {
    gw.post_form(
        "/bc-authorize",
        &[
            ("client_id", id),
            ("client_secret", secret),
            ("scope", "openid profile"),
            ("login_hint", "alice"),
        ],
        None,
    )
    .await
}

async fn reg_01_the_write_ups_body_registers_a_client_that_completes_the_flow(kind: RuntimeKind) {
    let auth = Authenticator::start().await;
    let gw = gateway_with_registration(kind, &auth, |c| {
        // The write-up posts its secret in the form body, and its binding message is longer
        // than the base configuration's 20 characters.
        c.registration.default_auth_method = ciba_gateway::config::AuthMethod::ClientSecretPost;
        c.ciba.binding_message.max_chars = 64;
    })
    .await;
    let d = gw.discovery().await;
    assert_eq!(d["registration_endpoint"], format!("{}/register", gw.url));

    let r = register(&gw, &write_up_body()).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.headers["cache-control"], "no-store");
    let md = &r.json;
    // REG-01: what was issued, not what the body asked for.
    let id = md["client_id"].as_str().unwrap();
    let secret = md["client_secret"].as_str().unwrap();
    assert_ne!(id, "smart-home-device");
    assert_ne!(secret, "device-secret");
    assert!(id.len() >= 22 && secret.len() >= 43, "{md}");
    assert_eq!(md["client_secret_expires_at"], 0);
    assert!(md["client_id_issued_at"].as_u64().unwrap() > 0);
    // MYTH-01: stored as the specified grant; poll substituted; REG-04: unknown members
    // ignored and not shown back.
    assert_eq!(md["grant_types"], json!([CIBA_GRANT]));
    assert_eq!(md["backchannel_token_delivery_mode"], "poll");
    assert_eq!(md["token_endpoint_auth_method"], "client_secret_post");
    assert_eq!(
        md["redirect_uris"],
        json!(["https://device.example.com/callback"])
    );
    assert_eq!(md["scope"], "openid profile");
    for ignored in [
        "response_types",
        "token_endpoint",
        "backchannel_authentication_endpoint",
    ] {
        assert!(md.get(ignored).is_none(), "{ignored}: {md}");
    }
    assert_eq!(
        md["registration_client_uri"],
        format!("{}/register/{id}", gw.url)
    );
    assert!(md["registration_access_token"].as_str().unwrap().len() >= 43);

    // The write-up's /ciba/auth request with the issued credentials and the login_hint the
    // spec requires, its expiry capped (its user_code, verified whenever one is sent, is
    // alice's here; tests/quickstart.rs sends the write-up's own to the quickstart's bob).
    let ack = gw
        .post_form(
            "/ciba/auth",
            &[
                ("client_id", id),
                ("client_secret", secret),
                ("scope", "openid profile"),
                (
                    "binding_message",
                    "Please authenticate your smart home device",
                ),
                ("requested_expiry", "3600"),
                ("user_code", ALICE_CODE),
                ("login_hint", "alice"),
            ],
            None,
        )
        .await;
    assert_eq!(ack.status, 200, "{}", ack.json);
    let auth_req_id = ack.json["auth_req_id"].as_str().unwrap();
    let call = auth.next_call().await;
    assert_eq!(call.body["login_hint"], "alice");
    // A poll with the write-up's grant spelling, before and after the approval.
    gw.poll_with_grant((id, secret), IETF_GRANT, auth_req_id)
        .await
        .assert_error(400, "authorization_pending");
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let tokens = gw
        .poll_with_grant((id, secret), IETF_GRANT, auth_req_id)
        .await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    // Issued to the registered client (its signature is checked against discovery in
    // tests/quickstart.rs and by openid-client in tests/ciba_client.rs).
    let (_, claims) = decode_jwt(tokens.json["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "sub-alice");
    assert_eq!(claims["aud"], id);

    // RCM-01: deleting the client takes its access token with it.
    let userinfo = || async {
        let at = tokens.json["access_token"].as_str().unwrap();
        let resp = gw.http.get(format!("{}/userinfo", gw.url)).bearer_auth(at);
        reply(resp.send().await.unwrap()).await
    };
    assert_eq!(userinfo().await.status, 200);
    let (uri, rat) = (
        md["registration_client_uri"].as_str().unwrap(),
        md["registration_access_token"].as_str().unwrap(),
    );
    assert_eq!(
        manage(&gw, reqwest::Method::DELETE, uri, rat, None)
            .await
            .status,
        204
    );
    userinfo().await.assert_error(401, "invalid_token");
}

async fn reg_02_03_invalid_metadata_is_refused_with_the_field_named(kind: RuntimeKind) {
    let auth = Authenticator::start().await;
    let gw = gateway_with_registration(kind, &auth, |_| {}).await;
    // Each body, the error it gets, and a word its description must contain.
    let metadata = "invalid_client_metadata";
    let cases = [
        (
            json!({"backchannel_token_delivery_mode": "ping"}),
            metadata,
            "backchannel_client_notification_endpoint",
        ),
        (
            json!({
                "backchannel_token_delivery_mode": "ping",
                "backchannel_client_notification_endpoint": "http://client.example/cb"
            }),
            metadata,
            "https",
        ),
        // SEC-05: an endpoint on a private address is refused at registration.
        (
            json!({
                "backchannel_token_delivery_mode": "ping",
                "backchannel_client_notification_endpoint": "https://127.0.0.1:9/cb"
            }),
            metadata,
            "SSRF",
        ),
        (
            json!({"backchannel_authentication_request_signing_alg": "HS256"}),
            metadata,
            "HS256",
        ),
        (
            json!({"token_endpoint_auth_method": "none"}),
            metadata,
            "token_endpoint_auth_method",
        ),
        (json!({"scope": "openid admin"}), metadata, "admin"),
        (
            json!({"redirect_uris": ["/relative"]}),
            "invalid_redirect_uri",
            "/relative",
        ),
    ];
    for (body, code, field) in cases {
        let r = register(&gw, &body).await;
        r.assert_error(400, code);
        let d = r.json["error_description"].as_str().unwrap_or_default();
        assert!(d.contains(field), "{field} not in {d:?}");
    }
    // Not JSON at all.
    let form = gw
        .post_form("/register", &[("client_name", "x")], None)
        .await;
    form.assert_error(400, "invalid_client_metadata");
    // Only POST registers.
    assert_eq!(gw.get("/register").await.status, 405);
}

async fn reg_06_an_initial_access_token_guards_registration(kind: RuntimeKind) {
    let auth = Authenticator::start().await;
    let token = random_token();
    let file = std::env::temp_dir().join(format!("ciba-iat-{}", random_token()));
    std::fs::write(&file, &token).unwrap();
    let gw = gateway_with_registration(kind, &auth, |c| {
        c.registration.open = false;
        c.registration.initial_access_token =
            Some(SecretRef::new(format!("file:{}", file.display())));
    })
    .await;
    let body = json!({"client_name": "guarded"});
    for bearer in [None, Some("wrong"), Some("")] {
        let r = post_json(&gw, "/register", &body, bearer).await;
        r.assert_error(401, "invalid_token");
        assert!(
            r.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
    let r = post_json(&gw, "/register", &body, Some(&token)).await;
    assert_eq!(r.status, 201, "{}", r.json);
    std::fs::remove_file(file).unwrap();
}

async fn rcm_01_02_read_update_and_delete_with_the_registration_access_token(kind: RuntimeKind) {
    let auth = Authenticator::start().await;
    let gw = gateway_with_registration(kind, &auth, |_| {}).await;
    let r = register(
        &gw,
        &json!({"client_name": "Device", "scope": "openid profile"}),
    )
    .await;
    let Issued {
        id,
        secret,
        uri,
        rat,
    } = Issued::of(&r);
    // RFC 7591 default: client_secret_basic.
    assert_eq!(r.json["token_endpoint_auth_method"], "client_secret_basic");

    // Read: the registered metadata, no secret.
    let read = manage(&gw, reqwest::Method::GET, &uri, &rat, None).await;
    assert_eq!(read.status, 200, "{}", read.json);
    assert_eq!(read.json["client_name"], "Device");
    assert_eq!(read.json["client_id"], id.as_str());
    assert!(read.json.get("client_secret").is_none());
    // RCM-02: a wrong token, another client's id, a configured client: the same 401.
    for (u, t) in [
        (uri.as_str(), "wrong"),
        (&format!("{}/register/unknown", gw.url), rat.as_str()),
        (
            &format!("{}/register/{}", gw.url, POST_CLIENT.0),
            rat.as_str(),
        ),
    ] {
        manage(&gw, reqwest::Method::GET, u, t, None)
            .await
            .assert_error(401, "invalid_token");
    }

    // Update: a full replacement; the secret is kept; a secret that is not the current one
    // is refused, and so is another client_id.
    let mut next = read.json.clone();
    for k in [
        "registration_access_token",
        "registration_client_uri",
        "client_id_issued_at",
        "client_secret_expires_at",
    ] {
        next.as_object_mut().unwrap().remove(k);
    }
    next["client_name"] = json!("Renamed device");
    next["token_endpoint_auth_method"] = json!("client_secret_post");
    let up = manage(&gw, reqwest::Method::PUT, &uri, &rat, Some(&next)).await;
    assert_eq!(up.status, 200, "{}", up.json);
    assert_eq!(up.json["client_name"], "Renamed device");
    assert!(up.json.get("client_secret").is_none(), "kept, not reissued");
    let ok = bc_as(&gw, &id, &secret).await;
    assert_eq!(
        ok.status, 200,
        "the updated client authenticates: {}",
        ok.json
    );
    let mut forged = next.clone();
    forged["client_secret"] = json!("chosen-by-the-client");
    manage(&gw, reqwest::Method::PUT, &uri, &rat, Some(&forged))
        .await
        .assert_error(400, "invalid_client_metadata");
    let mut other = next.clone();
    other["client_id"] = json!("someone-else");
    manage(&gw, reqwest::Method::PUT, &uri, &rat, Some(&other))
        .await
        .assert_error(400, "invalid_client_metadata");
    let mut bad = next.clone();
    bad["backchannel_token_delivery_mode"] = json!("ping");
    manage(&gw, reqwest::Method::PUT, &uri, &rat, Some(&bad))
        .await
        .assert_error(400, "invalid_client_metadata");

    // Delete: 204, and the client is refused at once, everywhere.
    let del = manage(&gw, reqwest::Method::DELETE, &uri, &rat, None).await;
    assert_eq!(del.status, 204);
    bc_as(&gw, &id, &secret)
        .await
        .assert_error(401, "invalid_client");
    manage(&gw, reqwest::Method::GET, &uri, &rat, None)
        .await
        .assert_error(401, "invalid_token");
    manage(&gw, reqwest::Method::DELETE, &uri, &rat, None)
        .await
        .assert_error(401, "invalid_token");
}

async fn rcm_01_a_secret_is_rotated_only_on_request(kind: RuntimeKind) {
    let auth = Authenticator::start().await;
    let gw = gateway_with_registration(kind, &auth, |c| {
        c.registration.default_auth_method = ciba_gateway::config::AuthMethod::ClientSecretPost;
    })
    .await;
    let r = register(&gw, &json!({"client_name": "Rotating"})).await;
    let Issued {
        id,
        secret: old,
        uri,
        rat,
    } = Issued::of(&r);
    let body = json!({"client_id": id, "client_name": "Rotating", "client_secret": old});
    let rotated = manage(
        &gw,
        reqwest::Method::PUT,
        &format!("{uri}?rotate_secret=true"),
        &rat,
        Some(&body),
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.json);
    let new = rotated.json["client_secret"].as_str().unwrap();
    assert_ne!(new, old);
    bc_as(&gw, &id, &old)
        .await
        .assert_error(401, "invalid_client");
    assert_eq!(bc_as(&gw, &id, new).await.status, 200);
}

/// RCM-03: a ping client's requests are pinged where the client's registration said when each
/// was accepted, with the token it sent then; a later update (another endpoint, then poll
/// mode) re-routes none of them, and the client redeems both by polling.
async fn rcm_03_pending_requests_keep_the_mode_and_endpoint_they_were_accepted_with(
    kind: RuntimeKind,
) {
    let auth = Authenticator::start().await;
    let receiver = Receiver::start(&[204]).await;
    let ca = receiver.ca_file.clone();
    let gw = gateway_with_registration(kind, &auth, |c| {
        let n = &mut c.ciba.client_notifications;
        n.ca_file = Some(ca.into());
        n.outbound.allow_private_networks = true;
        c.registration.default_auth_method = ciba_gateway::config::AuthMethod::ClientSecretPost;
    })
    .await;
    let mut md = json!({
        "client_name": "Pinged",
        "grant_types": [CIBA_GRANT],
        "backchannel_token_delivery_mode": "ping",
        "backchannel_client_notification_endpoint": format!("{}?v=1", receiver.url),
    });
    let r = register(&gw, &md).await;
    let Issued {
        id,
        secret,
        uri,
        rat,
    } = Issued::of(&r);
    md["client_id"] = json!(id);
    let request = |token: &'static str| {
        let (id, secret, gw) = (id.clone(), secret.clone(), &gw);
        async move {
            let ack = gw
                .post_form(
                    "/bc-authorize",
                    &[
                        ("client_id", id.as_str()),
                        ("client_secret", secret.as_str()),
                        ("scope", "openid"),
                        ("login_hint", "alice"),
                        ("client_notification_token", token),
                    ],
                    None,
                )
                .await;
            assert_eq!(ack.status, 200, "{}", ack.json);
            ack.json["auth_req_id"].as_str().unwrap().to_owned()
        }
    };
    let update = |md: Value| {
        let (uri, rat, gw) = (uri.clone(), rat.clone(), &gw);
        async move {
            let up = manage(gw, reqwest::Method::PUT, &uri, &rat, Some(&md)).await;
            assert_eq!(up.status, 200, "{}", up.json);
        }
    };
    let first = request("token-one").await;
    let first_call = auth.next_call().await;
    md["backchannel_client_notification_endpoint"] = json!(format!("{}?v=2", receiver.url));
    update(md.clone()).await;
    let second = request("token-two").await;
    let second_call = auth.next_call().await;
    md["backchannel_token_delivery_mode"] = json!("poll");
    md.as_object_mut()
        .unwrap()
        .remove("backchannel_client_notification_endpoint");
    update(md).await;

    for (call, req, token, path) in [
        (&first_call, &first, "token-one", "/cb?v=1"),
        (&second_call, &second, "token-two", "/cb?v=2"),
    ] {
        assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
        let ping = receiver.next_call().await;
        assert_eq!(
            (ping.path.as_str(), ping.bearer.as_str(), &ping.body),
            (path, token, &json!({ "auth_req_id": req }))
        );
        let tokens = gw.poll_with_grant((&id, &secret), CIBA_GRANT, req).await;
        assert_eq!(tokens.status, 200, "{}", tokens.json);
    }
}

async fn reg_registrations_are_limited_per_address(kind: RuntimeKind) {
    let auth = Authenticator::start().await;
    let gw = gateway_with_registration(kind, &auth, |c| {
        c.registration.per_address = Some(Rate {
            requests: 2,
            per_secs: 3600,
        });
    })
    .await;
    for _ in 0..2 {
        assert_eq!(register(&gw, &json!({})).await.status, 201);
    }
    let r = register(&gw, &json!({})).await;
    r.assert_error(429, "temporarily_unavailable");
    assert!(r.headers.contains_key("retry-after"));
}

/// A JWT signed by `key` with the standard times around the gateway's clock `now`.
fn signed(key: &SigningKey, now: u64, claims: Value) -> String {
    let mut c = json!({ "iat": now, "nbf": now, "exp": now + 60, "jti": random_token() });
    c.as_object_mut()
        .unwrap()
        .extend(claims.as_object().unwrap().clone());
    key.sign(&c)
}

// Registered as the conformance suite registers its clients — CIBA only
// (`response_types: []`, no redirect_uris), private_key_jwt with an inline JWKS, signed
// requests — the client receives no secret and completes the flow with signed requests and
// assertions alone; an assertion from another key is refused.
async fn reg_05_a_conformance_style_private_key_jwt_client_signs_its_way_through(
    kind: RuntimeKind,
) {
    const ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let auth = Authenticator::start().await;
    let gw = gateway_with_registration(kind, &auth, |_| {}).await;
    let key = SigningKey::es256("device-key");
    let r = register(
        &gw,
        &json!({
            "grant_types": [CIBA_GRANT],
            "response_types": [],
            "backchannel_token_delivery_mode": "poll",
            "backchannel_authentication_request_signing_alg": "ES256",
            "backchannel_user_code_parameter": false,
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": SigningKey::jwks(&[&key]),
        }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert!(
        r.json.get("client_secret").is_none() && r.json.get("client_secret_expires_at").is_none()
    );
    let id = r.json["client_id"].as_str().unwrap().to_owned();
    let now = now_secs(&gw.clock);
    let assertion = |k: &SigningKey| signed(k, now, json!({ "iss": id, "sub": id, "aud": gw.url }));
    let request = signed(
        &key,
        now,
        json!({ "iss": id, "aud": gw.url, "scope": "openid", "login_hint": "alice" }),
    );
    // Unsigned, the client is refused (BC-JWT-09: it registered a signing alg).
    let unsigned = gw
        .post_form(
            "/bc-authorize",
            &[
                ("client_assertion_type", ASSERTION),
                ("client_assertion", &assertion(&key)),
                ("scope", "openid"),
                ("login_hint", "alice"),
            ],
            None,
        )
        .await;
    unsigned.assert_error(400, "invalid_request");
    let stranger = SigningKey::es256("device-key");
    gw.post_form(
        "/bc-authorize",
        &[
            ("client_assertion_type", ASSERTION),
            ("client_assertion", &assertion(&stranger)),
            ("request", &request),
        ],
        None,
    )
    .await
    .assert_error(401, "invalid_client");
    let ack = gw
        .post_form(
            "/bc-authorize",
            &[
                ("client_assertion_type", ASSERTION),
                ("client_assertion", &assertion(&key)),
                ("request", &request),
            ],
            None,
        )
        .await;
    assert_eq!(ack.status, 200, "{}", ack.json);
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let tokens = gw
        .post_form(
            "/token",
            &[
                ("grant_type", CIBA_GRANT),
                ("client_assertion_type", ASSERTION),
                ("client_assertion", &assertion(&key)),
                ("auth_req_id", ack.json["auth_req_id"].as_str().unwrap()),
            ],
            None,
        )
        .await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    let (_, claims) = decode_jwt(tokens.json["id_token"].as_str().unwrap());
    assert_eq!(claims["aud"], id.as_str());
}
