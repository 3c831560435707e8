//! A standard CIBA client library — openid-client from npm, configured only from the gateway's
//! discovery document — completes the poll flow while an external authenticator approves through
//! the Keycloak-style HTTP channel. Requires `npm ci --prefix tests/client` (the README's test
//! command runs it).

use ciba_test_support as common;

use tokio::io::{AsyncBufReadExt, BufReader};

use ciba_gateway::config::RuntimeKind;
use common::providers::{Kind, gateway_before_real_time};
use common::upstream::{Browser, Stop};
use common::*;

#[tokio::test]
async fn openid_client_completes_the_poll_flow_with_an_external_authenticator() {
    let auth = Authenticator::start().await;
    let gw = start_real_time(|c| {
        c.channel = auth.channel_config();
        c.ciba.interval_secs = 1;
    })
    .await;
    let result = run_client(&gw.url, &auth, |call| {
        let gw = &gw;
        async move {
            assert_eq!(callback(gw, &call.bearer, "SUCCEED").await.status, 200);
        }
    })
    .await;
    assert_eq!(result["sub"], "sub-alice");
    assert_eq!(result["iss"], gw.url);
    assert_eq!(result["email"], "Alice@Example.com");
    assert_eq!(result["userinfo"]["email"], "Alice@Example.com");
}

// Issue (providers as they are): the certified client library, configured only from discovery,
// completes the flow and calls userinfo in front of each real provider at its defaults
// (oidc-provider as shipped, django-oauth-toolkit with its issuer under /o and RS256 only),
// on both runtimes.
/// The certified library refreshes with the gateway's refresh token (rotated on use).
#[tokio::test]
async fn openid_client_refreshes_with_the_gateways_refresh_token() {
    let auth = Authenticator::start().await;
    let gw = start_real_time(|c| {
        c.channel = auth.channel_config();
        c.ciba.interval_secs = 1;
        c.scopes_supported.push("offline_access".into());
        for cl in &mut c.clients {
            cl.grant_types.push("refresh_token".into());
        }
    })
    .await;
    let result = run_client_with(&gw.url, &auth, Some("refresh"), |call| {
        let gw = &gw;
        async move {
            assert_eq!(callback(gw, &call.bearer, "SUCCEED").await.status, 200);
        }
    })
    .await;
    assert_eq!(result["refreshed"]["sub"], "sub-alice");
    assert_eq!(result["refreshed"]["rotated"], true);
    assert_eq!(result["refreshed"]["new_access_token"], true);
}

/// Ping mode with the certified library: it receives the ping on its own HTTPS listener
/// (certificate from a test CA the gateway is told to trust), then redeems (PING-01, CM-02).
#[tokio::test]
async fn openid_client_completes_the_ping_flow_on_its_own_https_listener() {
    use ciba_gateway::config::DeliveryMode;
    let auth = Authenticator::start().await;
    let pki = common::pki::Pki::new();
    let port = common::upstream::free_port();
    let gw = start_real_time(|c| {
        c.channel = auth.channel_config();
        let n = &mut c.ciba.client_notifications;
        n.ca_file = Some(pki.path("ca.pem").into());
        n.outbound.allow_private_networks = true;
        let basic = c
            .clients
            .iter_mut()
            .find(|cl| cl.client_id == BASIC_CLIENT.0)
            .unwrap();
        basic.backchannel_token_delivery_mode = DeliveryMode::Ping;
        basic.backchannel_client_notification_endpoint =
            Some(format!("https://localhost:{port}/cb").parse().unwrap());
    })
    .await;
    let child = common::node::client(&[
        "ciba-ping.mjs",
        &gw.url,
        BASIC_CLIENT.0,
        BASIC_CLIENT.1,
        "alice@example.com",
        &port.to_string(),
        &pki.path("cert.pem"),
        &pki.path("key.pem"),
    ]);
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let result = finished(child).await;
    assert_eq!(result["sub"], "sub-alice");
    assert_eq!(result["iss"], gw.url);
    assert_eq!(result["aud"], BASIC_CLIENT.0);
    assert_eq!(result["ping_content_type"], "application/json");
    assert_eq!(result["has_access_token"], true);
}

// Issue 20: openid-client registers itself (`client.dynamicClientRegistration`, RFC 7591)
// from discovery alone, then completes its CIBA poll flow with the client it registered.
#[tokio::test]
async fn openid_client_registers_dynamically_then_completes_the_flow() {
    let auth = Authenticator::start().await;
    let gw = start_real_time(|c| {
        c.channel = auth.channel_config();
        c.ciba.interval_secs = 1;
        c.registration.enabled = true;
        c.registration.open = true;
        c.store = ciba_gateway::config::StoreConfig::Memory {
            capacity: 1000,
            expired_grace_secs: 60,
            clients_file: None,
        };
    })
    .await;
    let child = common::node::client(&["ciba-register.mjs", &gw.url, "alice@example.com", "1234"]);
    let call = auth.next_call().await;
    assert_eq!(call.body["binding_message"], "1234");
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let result = finished(child).await;
    let id = result["client_id"].as_str().unwrap();
    assert_eq!(result["aud"], id);
    assert_eq!(result["sub"], "sub-alice");
    assert_eq!(result["iss"], gw.url);
    assert_eq!(result["token_endpoint_auth_method"], "client_secret_post");
    assert_eq!(result["has_registration_access_token"], true);
    assert_eq!(
        result["registration_client_uri"],
        format!("{}/register/{id}", gw.url)
    );
}

every_provider!(
    openid_client_in_front_of_a_real_provider,
    openid_client_gets_the_providers_tokens_after_a_login_there,
);

async fn openid_client_in_front_of_a_real_provider(kind: Kind, rt: RuntimeKind) {
    let auth = Authenticator::start().await;
    let (gw, p) = gateway_before_real_time(kind, rt, |c| {
        c.channel = auth.channel_config();
        c.ciba.interval_secs = 1;
    })
    .await;
    let issuer = format!("{}{}", gw.url, p.issuer_path());
    let result = run_client(&issuer, &auth, |call| {
        let gw = &gw;
        async move {
            assert_eq!(callback(gw, &call.bearer, "SUCCEED").await.status, 200);
        }
    })
    .await;
    assert_eq!(result["sub"], "sub-alice");
    assert_eq!(result["iss"], issuer);
    assert_eq!(result["userinfo"]["sub"], "sub-alice");
    assert_eq!(result["userinfo"]["email"], "Alice@Example.com");
}

// The other token mode: `approval.mode: upstream` + `tokens: upstream`. The user logs in at the
// provider (its own pages, through the gateway), consents, and the certified client library
// receives the provider's own tokens, validates its ID token from the gateway's discovery and
// calls userinfo with its access token (passed through to the provider).
async fn openid_client_gets_the_providers_tokens_after_a_login_there(kind: Kind, rt: RuntimeKind) {
    use ciba_gateway::config::{
        ApprovalMode, AuthMethod, IdentityClaim, SecretRef, TokenSource, UpstreamClient,
    };
    let auth = Authenticator::start().await;
    let secret =
        std::env::temp_dir().join(format!("ciba-up-{}", ciba_test_support::random_token()));
    let (gw, p) = gateway_before_real_time(kind, rt, |c| {
        c.channel = auth.channel_config();
        c.ciba.interval_secs = 1;
        c.approval.mode = ApprovalMode::Upstream;
        c.approval.identity_claim = IdentityClaim::Email;
        c.clients.retain(|cl| cl.client_id == BASIC_CLIENT.0);
        std::fs::write(&secret, "basic-client-upstream-secret").unwrap();
        c.clients[0].tokens = TokenSource::Upstream;
        c.clients[0].upstream = Some(UpstreamClient {
            client_id: None,
            client_secret: SecretRef::new(format!("file:{}", secret.display())),
            auth_method: AuthMethod::ClientSecretBasic,
        });
    })
    .await;
    let _ = std::fs::remove_file(&secret);
    let issuer = format!("{}{}", gw.url, p.issuer_path());
    let (login, password, email) = p.user();
    let result = run_client(&issuer, &auth, |call| {
        let gw = &gw;
        async move {
            let link: reqwest::Url = call.body["approval_url"].as_str().unwrap().parse().unwrap();
            let browser = Browser::with_password(password);
            let Stop::Page { html, .. } = browser.browse(link.clone(), &gw.url, login).await else {
                panic!("the device page")
            };
            let cont = link
                .join(&first_attr(&html, "href").replace("&amp;", "&"))
                .unwrap();
            let Stop::Page { status, html, url } = browser.browse(cont, &gw.url, login).await
            else {
                panic!("back at the gateway")
            };
            assert_eq!(status, 200, "{url}: {html}");
            let r = browser
                .http
                .post(first_attr(&html, "action"))
                .form(&[
                    ("csrf", first_attr(&html, "value")),
                    ("decision", "approve"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    })
    .await;
    assert_eq!(result["iss"], issuer);
    assert_eq!(result["email"], email, "the provider's ID token");
    assert_eq!(result["userinfo"]["sub"], result["sub"]);
    assert_eq!(
        result["userinfo"]["email"], email,
        "the provider's userinfo"
    );
}

/// Runs the openid-client CIBA client against `issuer` as basic-client for alice; once the
/// client has been told to wait, `approve` approves the request the authenticator was sent.
/// Returns what the client printed.
async fn run_client<F: std::future::Future<Output = ()>>(
    issuer: &str,
    auth: &Authenticator,
    approve: impl FnOnce(ChannelCall) -> F,
) -> serde_json::Value {
    run_client_with(issuer, auth, None, approve).await
}

async fn run_client_with<F: std::future::Future<Output = ()>>(
    issuer: &str,
    auth: &Authenticator,
    mode: Option<&str>,
    approve: impl FnOnce(ChannelCall) -> F,
) -> serde_json::Value {
    let mut args = vec![
        "ciba-poll.mjs",
        issuer,
        BASIC_CLIENT.0,
        BASIC_CLIENT.1,
        "alice@example.com",
        "1234",
    ];
    args.extend(mode);
    let mut child = common::node::client(&args);

    // The user is reached through the authenticator...
    let call = auth.next_call().await;
    assert_eq!(call.body["login_hint"], "alice@example.com");
    assert_eq!(call.body["binding_message"], "1234");
    // ...the client polls and is told to wait...
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), stderr.next_line())
            .await
            .expect("the client polls")
            .unwrap()
            .unwrap_or_else(|| panic!("the client exited early: {seen:?}"));
        let pending = line.contains("authorization_pending");
        seen.push(line);
        if pending {
            break;
        }
    }
    // ...and the user approves on their device.
    approve(call).await;
    // Whatever else the client reports goes on being collected, for the failure message.
    let rest = tokio::spawn(async move {
        while let Ok(Some(l)) = stderr.next_line().await {
            seen.push(l);
        }
        seen
    });
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the client finishes")
        .unwrap();
    let seen = rest.await.unwrap();
    assert!(out.status.success(), "client failed: {seen:?}");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(result["aud"], BASIC_CLIENT.0);
    assert_eq!(
        result["token_type"]
            .as_str()
            .map(str::to_lowercase)
            .as_deref(),
        Some("bearer")
    );
    assert_eq!(result["has_access_token"], true);
    result
}

/// What a node client printed (one JSON line) once it exited successfully.
async fn finished(child: tokio::process::Child) -> serde_json::Value {
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the client finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}
