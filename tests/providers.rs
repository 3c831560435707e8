//! The gateway in front of real providers left at their defaults — oidc-provider as shipped
//! (`proxy` off: it builds its URLs from `Host`), oidc-provider trusting forwarding headers, and
//! django-oauth-toolkit (issuer with a path, `/o/token/` with a trailing slash, URLs from
//! `Host`, RS256 only) — one suite, on both runtimes. Only `upstream.url`, `public_url` /
//! `issuer`, the clients and the user directory are configured: every endpoint path comes from
//! the issuer and the provider's discovery (issue: providers as they really are).
//! Everything a client does starts from discovery, as a certified client library would.

use ciba_test_support as common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciba_gateway::config::RuntimeKind;
use common::providers::{Kind, RealProvider, gateway_before};
use common::upstream::{Browser, Stop};
use common::*;
use serde_json::{Value, json};
use sha2::Digest;

every_provider!(
    disc_07_discovery_at_the_issuer_path_advertises_the_gateway,
    delivery_long_poll_ping_and_push_in_front_of_the_provider,
    gw_01_code_pkce_login_and_provider_userinfo_pass_through,
    tok_11_client_credentials_passes_through,
    gw_02_ciba_poll_flow_minted_tokens_and_userinfo,
    check_online_finds_nothing_at_the_defaults,
);

/// The discovery document at `{issuer}/.well-known/openid-configuration`, as clients fetch it.
async fn discovery(gw: &Gateway, p: &RealProvider) -> Value {
    let r = gw
        .get(&format!(
            "{}/.well-known/openid-configuration",
            p.issuer_path()
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json
}

fn s<'a>(d: &'a Value, k: &str) -> &'a str {
    d[k].as_str()
        .unwrap_or_else(|| panic!("{k} missing from {d}"))
}

async fn post(
    gw: &Gateway,
    url: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Reply {
    let mut rb = gw.http.post(url).form(form);
    if let Some((id, secret)) = basic {
        rb = rb.basic_auth(form_encode(id), Some(form_encode(secret)));
    }
    reply(rb.send().await.unwrap()).await
}

async fn get_bearer(gw: &Gateway, url: &str, token: impl std::fmt::Display) -> Reply {
    reply(gw.http.get(url).bearer_auth(token).send().await.unwrap()).await
}

async fn disc_07_discovery_at_the_issuer_path_advertises_the_gateway(kind: Kind, rt: RuntimeKind) {
    let (gw, p) = gateway_before(kind, rt, |_| {}).await;
    let d = discovery(&gw, &p).await;
    let issuer = format!("{}{}", gw.url, p.issuer_path());
    // DISC-07 / GW-02: the provider's issuer, which is the gateway's.
    assert_eq!(s(&d, "issuer"), issuer);
    // Every endpoint is on the gateway's public origin, the provider's internal address nowhere
    // (a provider building URLs from Host was asked with the public host).
    for (k, v) in d.as_object().unwrap() {
        if let Some(url) = v
            .as_str()
            .filter(|_| k.ends_with("_endpoint") || k == "jwks_uri")
        {
            assert!(url.starts_with(&gw.url), "{k} = {url} is not on {}", gw.url);
        }
    }
    // The endpoints the gateway intercepts, at the paths where it intercepts them.
    let token_path = match kind {
        Kind::Django => "/o/token/",
        _ => "/token",
    };
    assert_eq!(s(&d, "token_endpoint"), format!("{}{token_path}", gw.url));
    assert_eq!(gw.engine.paths().shared().token, token_path);
    assert_eq!(
        s(&d, "backchannel_authentication_endpoint"),
        format!("{issuer}/bc-authorize")
    );
    assert_eq!(s(&d, "jwks_uri"), format!("{issuer}/jwks"));
    assert_eq!(
        d["backchannel_token_delivery_modes_supported"],
        json!(["poll", "ping", "push"])
    );
    // Issue item 3: a client library checks the ID token's alg against this list; the
    // gateway's ES256 is there next to the provider's own.
    let algs = d["id_token_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(algs.contains(&json!("ES256")), "{algs:?}");
    assert!(algs.contains(&json!("RS256")), "{algs:?}");
    // DISC-06: only methods that work at the shared token endpoint for every grant.
    let methods = d["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(!methods.is_empty());
    for m in methods {
        assert!(
            m == "client_secret_basic" || m == "client_secret_post" || m == "private_key_jwt",
            "{m} is not accepted by the gateway (no mutual TLS is configured here)"
        );
    }
    assert!(
        d["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:openid:params:grant-type:ciba"))
    );
}

async fn gw_01_code_pkce_login_and_provider_userinfo_pass_through(kind: Kind, rt: RuntimeKind) {
    let (gw, p) = gateway_before(kind, rt, |_| {}).await;
    let d = discovery(&gw, &p).await;
    let client = p.web_client();
    let (login, password, email) = p.user();
    let verifier = ciba_test_support::random_token();
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let mut url = reqwest::Url::parse(s(&d, "authorization_endpoint")).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", client.id)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email")
        .append_pair("redirect_uri", client.redirect_uri)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "st4te")
        .append_pair("nonce", "n0nce");
    // The provider's own pages, through the gateway, until it sends the browser back.
    let stop = Browser::with_password(password)
        .browse(url, &gw.url, login)
        .await;
    let Stop::Redirect(back) = stop else {
        panic!("the provider did not redirect back to the client: {stop:?}")
    };
    assert!(back.as_str().starts_with(client.redirect_uri), "{back}");
    let q: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st4te");
    let t = post(
        &gw,
        s(&d, "token_endpoint"),
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", client.redirect_uri),
            ("code_verifier", &verifier),
        ],
        Some((client.id, client.secret)),
    )
    .await;
    assert_eq!(t.status, 200, "{}", t.json);
    let (_, id) = decode_jwt(t.json["id_token"].as_str().unwrap());
    assert_eq!(
        id["iss"],
        s(&d, "issuer"),
        "the provider's tokens name the public issuer"
    );
    // The provider's own access token at the advertised userinfo endpoint: passed through.
    let at = t.json["access_token"].as_str().unwrap();
    let r = get_bearer(&gw, s(&d, "userinfo_endpoint"), at).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["sub"], id["sub"]);
    assert_eq!(r.json["email"], email);
}

async fn tok_11_client_credentials_passes_through(kind: Kind, rt: RuntimeKind) {
    let (gw, p) = gateway_before(kind, rt, |_| {}).await;
    let d = discovery(&gw, &p).await;
    let c = p.service_client();
    let form = [("grant_type", "client_credentials")];
    let r = post(&gw, s(&d, "token_endpoint"), &form, Some((c.id, c.secret))).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(r.json["access_token"].is_string());
    // A wrong secret is the provider's to refuse, in its own words.
    let r = post(&gw, s(&d, "token_endpoint"), &form, Some((c.id, "nope"))).await;
    r.assert_error(401, "invalid_client");
}

async fn gw_02_ciba_poll_flow_minted_tokens_and_userinfo(kind: Kind, rt: RuntimeKind) {
    let auth = Authenticator::start().await;
    let (gw, p) = gateway_before(kind, rt, |c| c.channel = auth.channel_config()).await;
    let d = discovery(&gw, &p).await;
    let client = (POST_CLIENT.0, POST_CLIENT.1);
    let creds = [("client_id", client.0), ("client_secret", client.1)];
    let mut form = creds.to_vec();
    form.extend([
        ("scope", "openid profile email"),
        ("login_hint", "alice@example.com"),
        ("binding_message", "1234"),
    ]);
    let ack = post(
        &gw,
        s(&d, "backchannel_authentication_endpoint"),
        &form,
        None,
    )
    .await;
    assert_eq!(ack.status, 200, "{}", ack.json);
    let id = ack.json["auth_req_id"].as_str().unwrap().to_owned();
    let mut poll = creds.to_vec();
    poll.extend([
        ("grant_type", "urn:openid:params:grant-type:ciba"),
        ("auth_req_id", &id),
    ]);
    post(&gw, s(&d, "token_endpoint"), &poll, None)
        .await
        .assert_error(400, "authorization_pending");
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    gw.clock.advance_secs(5);
    let t = post(&gw, s(&d, "token_endpoint"), &poll, None).await;
    assert_eq!(t.status, 200, "{}", t.json);

    // The ID token verifies from discovery's issuer and jwks_uri alone (GW-02).
    let id_token = t.json["id_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert!(
        d["id_token_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("{:?}", header.alg))),
        "the ID token's alg is advertised"
    );
    let claims = gw.verify_id_token_from(&d, id_token, client.0).await;
    assert_eq!(claims["sub"], "sub-alice");

    // Userinfo with the gateway's access token: answered by the gateway with the ID token's
    // claims, GET with a Bearer header and POST with a form body.
    let at = t.json["access_token"].as_str().unwrap();
    let r = get_bearer(&gw, s(&d, "userinfo_endpoint"), at).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["sub"], "sub-alice");
    assert_eq!(r.json["email"], claims["email"]);
    assert_eq!(r.json["name"], "Alice Adams");
    let r = post(
        &gw,
        s(&d, "userinfo_endpoint"),
        &[("access_token", at)],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["sub"], "sub-alice");
    // A token with a broken signature is not the gateway's: the provider refuses it.
    let forged = format!("{}x", &at[..at.len() - 1]);
    let r = get_bearer(&gw, s(&d, "userinfo_endpoint"), forged).await;
    assert_eq!(r.status, 401, "{}", r.json);
    // Expired: the gateway's to refuse (RFC 6750 invalid_token).
    gw.clock.advance_secs(3600);
    let r = get_bearer(&gw, s(&d, "userinfo_endpoint"), at).await;
    r.assert_error(401, "invalid_token");
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
}

/// The three ways a client gets its tokens, at the endpoints the provider's discovery (as the
/// gateway serves it) names: a long poll answered on approval, a ping then a poll, a push.
async fn delivery_long_poll_ping_and_push_in_front_of_the_provider(kind: Kind, rt: RuntimeKind) {
    use ciba_gateway::config::DeliveryMode;
    use common::receiver::Receiver;
    let auth = Authenticator::start().await;
    let (ping_rx, push_rx) = (Receiver::start(&[204]).await, Receiver::start(&[204]).await);
    let (ping_url, push_url, ca) = (
        ping_rx.url.parse().unwrap(),
        push_rx.url.parse().unwrap(),
        ping_rx.ca_file.clone(),
    );
    // Both receivers' CAs in one bundle (loaded when the gateway starts).
    let bundle = std::env::temp_dir().join(format!(
        "ciba-gw-cas-{}.pem",
        ciba_test_support::random_token()
    ));
    let pem =
        std::fs::read_to_string(&ca).unwrap() + &std::fs::read_to_string(&push_rx.ca_file).unwrap();
    std::fs::write(&bundle, pem).unwrap();
    let (gw, p) = gateway_before(kind, rt, |c| {
        c.channel = auth.channel_config();
        c.ciba.long_poll_secs = 60;
        let n = &mut c.ciba.client_notifications;
        n.ca_file = Some(bundle.clone());
        n.outbound.allow_private_networks = true;
        // narrow-client pings; no-ciba-client, without the CIBA grant, is a push client (it
        // never redeems, CM-03).
        c.clients[4].backchannel_token_delivery_mode = DeliveryMode::Ping;
        c.clients[4].backchannel_client_notification_endpoint = Some(ping_url);
        c.clients[3].backchannel_token_delivery_mode = DeliveryMode::Push;
        c.clients[3].backchannel_client_notification_endpoint = Some(push_url);
    })
    .await;
    let _ = std::fs::remove_file(&bundle);
    let d = discovery(&gw, &p).await;
    assert_eq!(
        d["backchannel_token_delivery_modes_supported"],
        json!(["poll", "ping", "push"])
    );
    let (bc, token) = (
        s(&d, "backchannel_authentication_endpoint").to_owned(),
        s(&d, "token_endpoint").to_owned(),
    );
    let start = |client: (&'static str, &'static str), extra: Option<&'static str>| {
        let (gw, bc) = (&gw, bc.clone());
        async move {
            let mut form = vec![
                ("client_id", client.0),
                ("client_secret", client.1),
                ("scope", "openid"),
                ("login_hint", "alice@example.com"),
            ];
            if let Some(t) = extra {
                form.push(("client_notification_token", t));
            }
            let ack = post(gw, &bc, &form, None).await;
            assert_eq!(ack.status, 200, "{}", ack.json);
            ack.json["auth_req_id"].as_str().unwrap().to_owned()
        }
    };
    let redeem = |client: (&'static str, &'static str), id: String| {
        let (http, token) = (gw.http.clone(), token.clone());
        async move {
            let r = http
                .post(&token)
                .form(&[
                    ("grant_type", "urn:openid:params:grant-type:ciba"),
                    ("client_id", client.0),
                    ("client_secret", client.1),
                    ("auth_req_id", id.as_str()),
                ])
                .send()
                .await
                .unwrap();
            reply(r).await
        }
    };

    // Long poll: held until the user approves.
    let id = start(POST_CLIENT, None).await;
    let held = tokio::spawn(redeem(POST_CLIENT, id));
    let call = auth.next_call().await;
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while gw.held_polls() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the poll is held");
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let t = held.await.unwrap();
    assert_eq!(t.status, 200, "{}", t.json);

    // Ping, then the client redeems.
    let id = start(NARROW_CLIENT, Some("ping-token")).await;
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let ping = ping_rx.next_call().await;
    assert_eq!(ping.bearer, "ping-token");
    assert_eq!(ping.body, json!({ "auth_req_id": id }));
    let t = redeem(NARROW_CLIENT, id).await;
    assert_eq!(t.status, 200, "{}", t.json);

    // Push: the tokens arrive at the endpoint, verifiable from discovery alone.
    let id = start(NO_CIBA_CLIENT, Some("push-token")).await;
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let push = push_rx.next_call().await;
    assert_eq!(push.body["auth_req_id"], id.as_str());
    let claims = gw
        .verify_id_token_from(
            &d,
            push.body["id_token"].as_str().unwrap(),
            NO_CIBA_CLIENT.0,
        )
        .await;
    assert_eq!(
        claims["urn:openid:params:jwt:claim:auth_req_id"],
        id.as_str()
    );
}

async fn check_online_finds_nothing_at_the_defaults(kind: Kind, rt: RuntimeKind) {
    let (gw, _p) = gateway_before(kind, rt, |_| {}).await;
    let found = gw.engine.check_upstream().await;
    assert!(found.is_empty(), "{found:#?}");
}

/// `ciba-gateway check --online` in front of django-oauth-toolkit: at the defaults it is
/// content; with the settings a newcomer tries first it says what is wrong and what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_explains_what_will_not_work() {
    let django = common::providers::Django::start("http://127.0.0.1:9/cb").await;
    let port = django.port;
    let check = |extra: &str| {
        let yaml = format!(
            "public_url: http://127.0.0.1:8080\nupstream: {{ url: \"http://127.0.0.1:{port}\" }}\n{extra}"
        );
        let file = std::env::temp_dir().join(format!(
            "ciba-check-{}.yaml",
            ciba_test_support::random_token()
        ));
        std::fs::write(&file, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ciba-gateway"))
            .args(["check", "--online", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&file);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The issuer with its path: nothing to report, and the paths it will serve.
    let (code, out, err) = check("issuer: http://127.0.0.1:8080/o\n");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("token:       /o/token/"), "{out}");
    assert!(
        out.contains("discovery:   /o/.well-known/openid-configuration"),
        "{out}"
    );
    // No issuer: discovery is looked for at the root, where the provider has none.
    let (code, _, err) = check("");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("discovery") && err.contains("fix:"), "{err}");
    // A token path that is not the provider's, and an issuer that is not the provider's.
    let (code, _, err) = check(
        "issuer: http://127.0.0.1:8080/o\nendpoints: { token: /token, discovery: /o/.well-known/openid-configuration }\n",
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("token endpoint is at /o/token/"), "{err}");
    assert!(err.contains("remove `endpoints.token`"), "{err}");
    let (code, _, err) = check(
        "issuer: http://127.0.0.1:8080/other\nendpoints: { discovery: /o/.well-known/openid-configuration }\n",
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the provider's issuer is http://127.0.0.1:8080/o"),
        "{err}"
    );
    assert!(
        err.contains("set `issuer: http://127.0.0.1:8080/o`"),
        "{err}"
    );
}

/// The provider's token path is known before any client asks for discovery: both runtimes read
/// it as they start (`Engine::warm_up`), so a client configured by hand polls the right path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_paths_are_learned_at_start_up() {
    for rt in [RuntimeKind::Pingora, RuntimeKind::Tower] {
        let (gw, _p) = gateway_before(Kind::Django, rt, |_| {}).await;
        eventually(&format!("{rt:?}: the token path is learned"), || async {
            gw.engine.paths().shared().token == "/o/token/"
        })
        .await;
        assert_eq!(gw.engine.paths().shared().userinfo, "/o/userinfo/");
    }
}
