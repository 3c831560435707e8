//! Approval through the upstream provider (`approval.mode: upstream`), end to end against panva's
//! oidc-provider, on both engines: the link opens the device page, "Continue" leads to the
//! provider's login (code + PKCE, state, nonce, login_hint, prompt=login), the provider sends the
//! browser back, the gateway checks who logged in (identity binding), the user consents, and
//! the waiting client receives the provider's tokens — or gateway-minted ones carrying the
//! provider-authenticated subject; the provider's refresh token refreshed with the client's
//! gateway credentials (the gateway presents its provider credentials). Also: deny, the wrong person logging in, links used twice.

use ciba_test_support as common;

use ciba_gateway::config::{
    ApprovalMode, AuthMethod, RuntimeKind, SecretRef, TokenSource, UpstreamClient,
};
use common::upstream::*;
use common::*;
use serde_json::Value;

both_runtimes!(
    upstream_tokens_are_forwarded_after_login_and_consent,
    minted_tokens_carry_the_upstream_authenticated_subject,
    wrong_person_logging_in_approves_nothing,
    deny_after_login_is_access_denied,
    provider_error_is_a_clear_page_and_approves_nothing,
    identity_bound_by_email,
    offline_access_brings_the_providers_refresh_token,
    the_code_exchange_is_in_the_trace_of_the_request_approved,
);

fn secret_file(value: &str) -> SecretRef {
    let p = std::env::temp_dir().join(format!(
        "ciba-up-secret-{}",
        ciba_test_support::random_token()
    ));
    std::fs::write(&p, value).unwrap();
    SecretRef::new(format!("file:{}", p.display()))
}

/// The gateway in front of oidc-provider, approving through it; post-client gets the
/// provider's tokens (client_secret_post at the provider), basic-client minted ones (Basic).
async fn setup(kind: RuntimeKind) -> (Gateway, Provider, Authenticator) {
    setup_with(kind, |_| {}).await
}

async fn setup_with(
    kind: RuntimeKind,
    edit: impl FnOnce(&mut ciba_gateway::Config),
) -> (Gateway, Provider, Authenticator) {
    let auth = Authenticator::start().await;
    let (gw, p) = provider_behind(kind, |c| {
        c.channel = auth.channel_config();
        c.approval.mode = ApprovalMode::Upstream;
        c.clients
            .retain(|cl| cl.client_id == "post-client" || cl.client_id == "basic-client");
        for cl in &mut c.clients {
            let (secret, method, tokens) = if cl.client_id == "post-client" {
                (
                    "post-client-upstream-secret",
                    AuthMethod::ClientSecretPost,
                    TokenSource::Upstream,
                )
            } else {
                (
                    "basic-client-upstream-secret",
                    AuthMethod::ClientSecretBasic,
                    TokenSource::Mint,
                )
            };
            cl.tokens = tokens;
            cl.upstream = Some(UpstreamClient {
                client_id: None,
                client_secret: secret_file(secret),
                auth_method: method,
            });
        }
        edit(c);
    })
    .await;
    (gw, p, auth)
}

/// bc-authorize for alice as `client`; returns the auth_req_id and the approval link.
async fn request(
    gw: &Gateway,
    auth: &Authenticator,
    client: (&str, &str),
) -> (String, reqwest::Url) {
    request_scope(gw, auth, client, "openid email").await
}

async fn request_scope(
    gw: &Gateway,
    auth: &Authenticator,
    client: (&str, &str),
    scope: &str,
) -> (String, reqwest::Url) {
    let params = [
        ("scope", scope),
        ("login_hint", "alice"),
        ("binding_message", "4711"),
    ];
    let r = if client == BASIC_CLIENT {
        gw.post_form("/bc-authorize", &params, Some(client)).await
    } else {
        let mut p = vec![("client_id", client.0), ("client_secret", client.1)];
        p.extend_from_slice(&params);
        gw.post_form("/bc-authorize", &p, None).await
    };
    assert_eq!(r.status, 200, "{}", r.json);
    let link = approval_link(auth).await;
    (r.json["auth_req_id"].as_str().unwrap().to_owned(), link)
}

/// The approval link of the authenticator's next call.
async fn approval_link(auth: &Authenticator) -> reqwest::Url {
    let call = auth.next_call().await;
    call.body["approval_url"].as_str().unwrap().parse().unwrap()
}

/// Opens the link, checks the device page, continues to the provider and logs in as `login`.
/// Returns where the browser ends up after the provider sends it back.
async fn login_via_link(
    gw: &Gateway,
    browser: &Browser,
    link: reqwest::Url,
    login: &str,
) -> (u16, String) {
    let Stop::Page { status, html, .. } = browser.browse(link.clone(), &gw.url, login).await else {
        panic!("device page")
    };
    assert_eq!(status, 200);
    assert!(html.contains("4711") && html.contains("Post Client") || html.contains("Basic Client"));
    assert!(
        !html.contains("value=\"approve\""),
        "no approval before the login"
    );
    let cont = link
        .join(&first_attr(&html, "href").replace("&amp;", "&"))
        .unwrap();
    // The authorization request the provider receives.
    let first = browser.http.get(cont.clone()).send().await.unwrap();
    assert_eq!(first.status(), 303);
    let auth_url = reqwest::Url::parse(first.headers()["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = auth_url.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["login_hint"], "alice");
    assert_eq!(q["prompt"].split(' ').next(), Some("login"));
    assert!(q.contains_key("state") && q.contains_key("nonce"));
    assert_eq!(q["redirect_uri"], format!("{}/approve/callback", gw.url));
    match browser.browse(auth_url, &gw.url, login).await {
        Stop::Page { url, status, html } => {
            assert!(
                url.path().starts_with("/approve/callback"),
                "back at the gateway: {url}"
            );
            (status, html)
        }
        Stop::Redirect(u) => panic!("left the gateway: {u}"),
    }
}

async fn consent(gw: &Gateway, browser: &Browser, html: &str, decision: &str) -> u16 {
    let csrf = first_attr(html, "value");
    let action = first_attr(html, "action");
    assert!(action.ends_with("/approve/consent"));
    let _ = gw;
    browser
        .http
        .post(action)
        .form(&[("csrf", csrf), ("decision", decision)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn upstream_tokens_are_forwarded_after_login_and_consent(kind: RuntimeKind) {
    let (gw, _p, auth) = setup(kind).await;
    let (id, link) = request(&gw, &auth, POST_CLIENT).await;
    let browser = Browser::new();
    let (status, html) = login_via_link(&gw, &browser, link.clone(), "sub-alice").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Signed in as"));
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
    assert_eq!(consent(&gw, &browser, &html, "approve").await, 200);
    gw.clock.advance_secs(5);
    let t = gw.poll(&id).await;
    assert_eq!(t.status, 200, "{}", t.json);
    // The provider's own tokens: its ID token is issued to the client itself...
    let (_, claims) = decode_jwt(t.json["id_token"].as_str().unwrap());
    assert_eq!(claims["aud"], "post-client");
    assert_eq!(claims["sub"], "sub-alice");
    assert_ne!(
        decode_jwt(t.json["id_token"].as_str().unwrap()).0["kid"],
        "ephemeral-es256",
        "signed by the provider"
    );
    // ...and its access token works at its userinfo endpoint, through the gateway.
    let d: Value = gw.discovery().await;
    let ui = gw
        .http
        .get(d["userinfo_endpoint"].as_str().unwrap())
        .bearer_auth(t.json["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 200);
    assert_eq!(ui.json::<Value>().await.unwrap()["sub"], "sub-alice");
    // The link died with the decision.
    assert!(matches!(
        browser.browse(link, &gw.url, "x").await,
        Stop::Page { status: 404, .. }
    ));
}

async fn minted_tokens_carry_the_upstream_authenticated_subject(kind: RuntimeKind) {
    let (gw, _p, auth) = setup(kind).await;
    let (id, link) = request(&gw, &auth, BASIC_CLIENT).await;
    let browser = Browser::new();
    let (status, html) = login_via_link(&gw, &browser, link, "sub-alice").await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(consent(&gw, &browser, &html, "approve").await, 200);
    let t = gw
        .post_form(
            "/token",
            &[
                ("grant_type", "urn:openid:params:grant-type:ciba"),
                ("auth_req_id", &id),
            ],
            Some(BASIC_CLIENT),
        )
        .await;
    assert_eq!(t.status, 200, "{}", t.json);
    let (h, claims) = decode_jwt(t.json["id_token"].as_str().unwrap());
    assert_eq!(h["kid"], gw.own_kid().as_str(), "signed by the gateway");
    assert_eq!(claims["sub"], "sub-alice");
    assert_eq!(claims["aud"], "basic-client");
    assert!(claims["auth_time"].is_u64());
}

async fn wrong_person_logging_in_approves_nothing(kind: RuntimeKind) {
    let (gw, _p, auth) = setup(kind).await;
    let (id, link) = request(&gw, &auth, POST_CLIENT).await;
    let mallory = Browser::new();
    let (status, html) = login_via_link(&gw, &mallory, link.clone(), "sub-bob").await;
    assert_eq!(status, 403);
    assert!(html.contains("someone else"));
    assert!(!html.contains("value=\"approve\""));
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
    // Alice can still approve with her own link.
    let alice = Browser::new();
    let (status, html) = login_via_link(&gw, &alice, link, "sub-alice").await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(consent(&gw, &alice, &html, "approve").await, 200);
    gw.clock.advance_secs(5);
    assert_eq!(gw.poll(&id).await.status, 200);
}

async fn deny_after_login_is_access_denied(kind: RuntimeKind) {
    let (gw, _p, auth) = setup(kind).await;
    let (id, link) = request(&gw, &auth, POST_CLIENT).await;
    let browser = Browser::new();
    let (_, html) = login_via_link(&gw, &browser, link, "sub-alice").await;
    assert_eq!(consent(&gw, &browser, &html, "deny").await, 200);
    gw.poll(&id).await.assert_error(400, "access_denied");
    // The consent session is single-use.
    assert_eq!(consent(&gw, &browser, &html, "approve").await, 404);
}

async fn provider_error_is_a_clear_page_and_approves_nothing(kind: RuntimeKind) {
    let (gw, _p, auth) = setup(kind).await;
    let (id, link) = request(&gw, &auth, POST_CLIENT).await;
    let browser = Browser::new();
    // Start the login, then come back as the provider does when the user cancels there.
    let start = browser
        .http
        .get(format!("{link}?login"))
        .send()
        .await
        .unwrap();
    let auth_url = reqwest::Url::parse(start.headers()["location"].to_str().unwrap()).unwrap();
    let state = auth_url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let back = format!(
        "{}/approve/callback?error=access_denied&error_description=%7B%22raw%22%3A1%7D&state={state}",
        gw.url
    );
    let r = browser.http.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("did not sign you in") && html.contains("access_denied"));
    assert!(
        !html.contains("raw"),
        "the provider's raw output is not shown"
    );
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
    // The state is single-use.
    assert_eq!(browser.http.get(&back).send().await.unwrap().status(), 400);
}

async fn identity_bound_by_email(kind: RuntimeKind) {
    let (gw, _p, auth) = setup_with(kind, |c| {
        c.approval.identity_claim = ciba_gateway::config::IdentityClaim::Email
    })
    .await;
    // alice's e-mail here is Alice@Example.com; the provider's account "alice" has alice@example.com.
    let (id, link) = request(&gw, &auth, POST_CLIENT).await;
    let (status, html) = login_via_link(&gw, &Browser::new(), link.clone(), "bob").await;
    assert_eq!(status, 403, "bob@example.com is not alice");
    assert!(html.contains("someone else"));
    let browser = Browser::new();
    let (status, html) = login_via_link(&gw, &browser, link, "alice").await;
    assert_eq!(status, 200, "{html}");
    // A consent POST with a wrong CSRF token is refused and resolves nothing.
    let action = first_attr(&html, "action");
    let bad = browser
        .http
        .post(action)
        .form(&[("csrf", "forged"), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
    assert_eq!(consent(&gw, &browser, &html, "approve").await, 200);
    gw.clock.advance_secs(5);
    assert_eq!(gw.poll(&id).await.status, 200);
}

// Issue (providers as they are), item 5: a provider like oidc-provider issues a refresh token
// for offline_access only after a consent prompt; the gateway asks for one, and the client gets
// the provider's refresh token, which then works through the gateway (pass-through).
async fn offline_access_brings_the_providers_refresh_token(kind: RuntimeKind) {
    let (gw, _p, auth) =
        setup_with(kind, |c| c.scopes_supported.push("offline_access".into())).await;
    let (id, link) = request_scope(&gw, &auth, POST_CLIENT, "openid email offline_access").await;
    let browser = Browser::new();
    let (status, html) = login_via_link(&gw, &browser, link, "sub-alice").await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(consent(&gw, &browser, &html, "approve").await, 200);
    gw.clock.advance_secs(5);
    let t = gw.poll(&id).await;
    assert_eq!(t.status, 200, "{}", t.json);
    let rt = t.json["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh token: {}", t.json));
    // Issue 19: the client refreshes with the credentials it has — its gateway secret, which
    // differs from its secret at the provider. The gateway authenticates it and presents the
    // client's provider credentials (`clients[].upstream`) to the provider.
    let refresh = |secret: &'static str, token: String| {
        let gw = &gw;
        async move {
            gw.post_form(
                "/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token.as_str()),
                    ("client_id", POST_CLIENT.0),
                    ("client_secret", secret),
                ],
                None,
            )
            .await
        }
    };
    assert_ne!(POST_CLIENT.1, "post-client-upstream-secret");
    refresh("wrong", rt.to_owned())
        .await
        .assert_error(401, "invalid_client");
    let r = refresh(POST_CLIENT.1, rt.to_owned()).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(r.json["access_token"].is_string());
    // The provider rotated it (oidc-provider's default): the new one works the same way.
    let next = r.json["refresh_token"].as_str().unwrap_or(rt).to_owned();
    let r = refresh(POST_CLIENT.1, next).await;
    assert_eq!(r.status, 200, "{}", r.json);
}

/// Issue 21 §2: one flow, one trace, the provider included — the code exchange the user's login
/// leads to reaches the provider in the trace of the backchannel request (sent by a trusted
/// caller), though the login itself came from the user's browser.
async fn the_code_exchange_is_in_the_trace_of_the_request_approved(kind: RuntimeKind) {
    const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (gw, p, auth) = setup_with(kind, |c| {
        c.trace.accept_traceparent_from = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let r = reply(
        gw.http
            .post(format!("{}/bc-authorize", gw.url))
            .header("traceparent", CALLER)
            .form(&[
                ("client_id", POST_CLIENT.0),
                ("client_secret", POST_CLIENT.1),
                ("scope", "openid email"),
                ("login_hint", "alice"),
                ("binding_message", "4711"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let link = approval_link(&auth).await;
    let browser = Browser::new();
    let (status, html) = login_via_link(&gw, &browser, link, "sub-alice").await;
    assert_eq!(status, 200, "{html}");
    let seen = p.token_request_traceparents();
    assert_eq!(seen.len(), 1, "one code exchange: {seen:?}");
    assert_eq!(
        seen[0].split('-').nth(1),
        Some("0af7651916cd43dd8448eb211c80319c"),
        "{seen:?}"
    );
}
