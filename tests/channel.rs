//! The Keycloak-compatible HTTP authentication channel, against a real HTTP server playing the
//! authenticator.

use ciba_test_support as common;

use ciba_gateway::config::Outbound;
use common::*;

async fn setup() -> (Gateway, Authenticator) {
    let auth = Authenticator::start().await;
    let gw = start(|c| c.channel = auth.channel_config()).await;
    (gw, auth)
}

#[tokio::test]
async fn keycloak_contract_request_carries_the_documented_fields_and_a_bearer() {
    let (gw, auth) = setup().await;
    let r = gw
        .bc(&[
            ("scope", "openid email"),
            ("login_hint", "alice@example.com"),
            ("binding_message", "1234"),
            ("acr_values", "urn:a urn:b"),
        ])
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let call = auth.next_call().await;
    assert_eq!(call.bearer.split('.').count(), 3, "a signed JWT bearer");
    let b = &call.body;
    assert_eq!(b["login_hint"], "alice@example.com");
    assert_eq!(b["binding_message"], "1234");
    assert_eq!(b["scope"], "openid email");
    assert_eq!(b["is_consent_required"], true);
    assert_eq!(b["acr_values"], "urn:a urn:b");
    assert_eq!(b["client_id"], "post-client");
    assert_eq!(b["subject"], "sub-alice");
    // The auth_req_id is the client's; the authenticator never sees it.
    assert!(
        !b.to_string()
            .contains(r.json["auth_req_id"].as_str().unwrap())
    );
}

#[tokio::test]
async fn callback_cancelled_is_access_denied_for_the_client() {
    let (gw, auth) = setup().await;
    let id = gw.start_request().await;
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "CANCELLED").await.status, 200);
    gw.poll(&id).await.assert_error(400, "access_denied");
}

#[tokio::test]
async fn callback_with_wrong_tampered_reused_or_expired_bearer_is_refused() {
    let (gw, auth) = setup().await;
    let id = gw.start_request().await;
    let call = auth.next_call().await;
    callback(&gw, "not-a-token", "SUCCEED")
        .await
        .assert_error(401, "invalid_token");
    // Flip one character in the middle of the signature.
    let mut tampered: Vec<char> = call.bearer.chars().collect();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    callback(&gw, &tampered, "SUCCEED")
        .await
        .assert_error(401, "invalid_token");
    let no_bearer = gw
        .http
        .post(format!("{}/ciba/callback", gw.url))
        .json(&serde_json::json!({"status": "SUCCEED"}))
        .send()
        .await
        .unwrap();
    let r = reply(no_bearer).await;
    r.assert_error(401, "invalid_token");
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    // A bad status is a bad request, and does not burn the token.
    let bad = gw
        .http
        .post(format!("{}/ciba/callback", gw.url))
        .bearer_auth(&call.bearer)
        .json(&serde_json::json!({"status": "MAYBE"}))
        .send()
        .await
        .unwrap();
    reply(bad).await.assert_error(400, "invalid_request");
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    callback(&gw, &call.bearer, "SUCCEED")
        .await
        .assert_error(401, "invalid_token");
    assert_eq!(gw.poll(&id).await.status, 200);

    // Expired: the token dies with the request.
    let _id2 = gw.start_request().await;
    let call2 = auth.next_call().await;
    gw.clock.advance_secs(121);
    callback(&gw, &call2.bearer, "SUCCEED")
        .await
        .assert_error(401, "invalid_token");
}

#[tokio::test]
async fn unreachable_channel_gives_a_documented_503_and_leaves_nothing_behind() {
    let (gw, auth) = setup().await;
    auth.answer_with(500);
    let r = gw.bc(&[("scope", "openid"), ("login_hint", "alice")]).await;
    r.assert_error(503, "temporarily_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        r.json["error_description"]
            .as_str()
            .unwrap()
            .contains("authentication channel")
    );
    // The request was removed: even the authenticator's token cannot complete it.
    let call = auth.next_call().await;
    callback(&gw, &call.bearer, "SUCCEED")
        .await
        .assert_error(401, "invalid_token");
}

#[tokio::test]
async fn channel_that_refuses_connections_is_503() {
    // A port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = start(|c| {
        c.channel = ciba_gateway::config::ChannelConfig::Http {
            url: format!("http://{closed}/authn").parse().unwrap(),
            bearer_secret: None,
            outbound: Outbound {
                timeout_ms: 2000,
                allow_private_networks: true,
            },
        }
    })
    .await;
    gw.bc(&[("scope", "openid"), ("login_hint", "alice")])
        .await
        .assert_error(503, "temporarily_unavailable");
}

#[tokio::test]
async fn sec_05_channel_on_loopback_is_refused_unless_allowed() {
    let auth = Authenticator::start().await;
    let gw = start(|c| {
        c.channel = ciba_gateway::config::ChannelConfig::Http {
            url: auth.url.parse().unwrap(),
            bearer_secret: None,
            outbound: Outbound::default(),
        }
    })
    .await;
    gw.bc(&[("scope", "openid"), ("login_hint", "alice")])
        .await
        .assert_error(503, "temporarily_unavailable");
    assert!(
        auth.calls.lock().await.try_recv().is_err(),
        "the SSRF guard stopped the call"
    );
}
