//! The CIBA grant at the token endpoint over a real socket: requirements §1.10–§1.11.
//! Time is a manual clock: nothing here sleeps.

use ciba_test_support as common;

use ciba_gateway::config::RuntimeKind;
use common::*;

both_runtimes!(
    tok_05_pending_then_slow_down_then_raised_interval_enforced,
    tok_err_02_pending_states_are_400_json_not_428_429_202,
    tok_08_approved_request_yields_tokens_once,
    tok_03_fifty_concurrent_polls_on_an_approved_request_give_exactly_one_token_response,
    tok_err_01_user_denial_is_access_denied_400_then_gone,
    bc_req_05_expired_request_gives_expired_token,
    tok_02_unknown_or_foreign_auth_req_id_is_invalid_grant,
    tok_01_client_authenticates_as_at_the_backchannel_endpoint,
    myth_01_ietf_grant_type_alias_accepted_never_advertised,
    myth_01_alias_switched_off_names_the_right_grant_type,
    tok_09_jat_01_02_token_contents,
    bc_req_06_a_ciba_grant_with_a_repeated_parameter_is_invalid_request,
);

/// A gateway whose requests are approved or denied by a real authenticator over HTTP.
async fn with_authenticator(kind: RuntimeKind) -> (Gateway, Authenticator) {
    start_with_authenticator(kind, |_| {}).await
}

async fn tok_05_pending_then_slow_down_then_raised_interval_enforced(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let id = gw.start_request().await;
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
    gw.clock.advance_secs(1);
    gw.poll(&id).await.assert_error(400, "slow_down");
    // 6 s later is enough under the announced interval (5 s), not under the raised one (10 s).
    gw.clock.advance_secs(6);
    gw.poll(&id).await.assert_error(400, "slow_down");
    gw.clock.advance_secs(15);
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
    gw.clock.advance_secs(15);
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
}

async fn tok_err_02_pending_states_are_400_json_not_428_429_202(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let id = gw.start_request().await;
    let r = gw.poll(&id).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["cache-control"], "no-store");
}

async fn tok_08_approved_request_yields_tokens_once(kind: RuntimeKind) {
    let (gw, auth) = with_authenticator(kind).await;
    let id = gw.start_request().await;
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let r = gw.poll(&id).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["pragma"], "no-cache");
    assert_eq!(r.json["token_type"], "Bearer");
    assert!(r.json["access_token"].as_str().unwrap().split('.').count() == 3);
    assert!(r.json["id_token"].is_string());
    assert!(r.json["expires_in"].as_u64().unwrap() > 0);
    assert!(
        r.json.get("refresh_token").is_none(),
        "no refresh tokens yet"
    );
    // TOK-03: single use.
    gw.clock.advance_secs(10);
    gw.poll(&id).await.assert_error(400, "invalid_grant");
}

async fn tok_03_fifty_concurrent_polls_on_an_approved_request_give_exactly_one_token_response(
    kind: RuntimeKind,
) {
    let (gw, auth) = with_authenticator(kind).await;
    let id = gw.start_request().await;
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let gw = std::sync::Arc::new(gw);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (gw, id) = (std::sync::Arc::clone(&gw), id.clone());
        tasks.push(tokio::spawn(async move { gw.poll(&id).await }));
    }
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            _ => r.assert_error(400, "invalid_grant"),
        }
    }
    assert_eq!(ok, 1);
}

async fn tok_err_01_user_denial_is_access_denied_400_then_gone(kind: RuntimeKind) {
    let (gw, auth) = with_authenticator(kind).await;
    let id = gw.start_request().await;
    let call = auth.next_call().await;
    assert_eq!(
        callback(&gw, &call.bearer, "UNAUTHORIZED").await.status,
        200
    );
    gw.poll(&id).await.assert_error(400, "access_denied");
    gw.clock.advance_secs(10);
    gw.poll(&id).await.assert_error(400, "invalid_grant");
}

async fn bc_req_05_expired_request_gives_expired_token(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let r = gw
        .bc(&[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("requested_expiry", "10"),
        ])
        .await;
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
    gw.clock.advance_secs(10);
    gw.poll(&id).await.assert_error(400, "expired_token");
}

async fn tok_02_unknown_or_foreign_auth_req_id_is_invalid_grant(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let id = gw.start_request().await;
    gw.poll("made-up-id")
        .await
        .assert_error(400, "invalid_grant");
    let r = gw
        .post_form(
            "/token",
            &[
                ("grant_type", "urn:openid:params:grant-type:ciba"),
                ("auth_req_id", &id),
            ],
            Some(BASIC_CLIENT),
        )
        .await;
    r.assert_error(400, "invalid_grant");
    // The foreign poll left no trace: the owner is not told to slow down.
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
}

/// BC-REQ-06 at the token endpoint: a form that does not parse is still the CIBA grant's when
/// it names it, and is refused as one (not handed on as another grant, TOK-11).
async fn bc_req_06_a_ciba_grant_with_a_repeated_parameter_is_invalid_request(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let id = gw.start_request().await;
    let r = gw
        .post_form(
            "/token",
            &[
                ("grant_type", "urn:openid:params:grant-type:ciba"),
                ("auth_req_id", &id),
                ("auth_req_id", &id),
            ],
            Some(BASIC_CLIENT),
        )
        .await;
    r.assert_error(400, "invalid_request");
    assert!(
        r.json["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("auth_req_id")),
        "{}",
        r.json
    );
}

async fn tok_01_client_authenticates_as_at_the_backchannel_endpoint(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let id = gw.start_request().await;
    let r = gw.poll_as(("post-client", "wrong"), &id).await;
    r.assert_error(401, "invalid_client");
    assert!(r.headers.contains_key("www-authenticate"));
    let r = gw
        .post_form(
            "/token",
            &[
                ("grant_type", "urn:openid:params:grant-type:ciba"),
                ("client_id", "post-client"),
                ("client_secret", "post-secret"),
            ],
            None,
        )
        .await;
    r.assert_error(400, "invalid_request");
    let r = gw.poll_as(NO_CIBA_CLIENT, &id).await;
    r.assert_error(400, "unauthorized_client");
}

async fn myth_01_ietf_grant_type_alias_accepted_never_advertised(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let id = gw.start_request().await;
    let r = gw
        .poll_with_grant(POST_CLIENT, "urn:ietf:params:oauth:grant-type:ciba", &id)
        .await;
    r.assert_error(400, "authorization_pending");
    let disc: serde_json::Value = gw.discovery().await;
    assert!(
        !disc
            .to_string()
            .contains("urn:ietf:params:oauth:grant-type:ciba")
    );
}

async fn myth_01_alias_switched_off_names_the_right_grant_type(kind: RuntimeKind) {
    let gw = start_on(kind, |c| c.ciba.accept_ietf_grant_type_alias = false).await;
    let id = gw.start_request().await;
    let r = gw
        .poll_with_grant(POST_CLIENT, "urn:ietf:params:oauth:grant-type:ciba", &id)
        .await;
    r.assert_error(400, "unsupported_grant_type");
    assert!(
        r.json["error_description"]
            .as_str()
            .unwrap()
            .contains("urn:openid:params:grant-type:ciba")
    );
}

#[tokio::test]
async fn tok_11_other_grants_are_not_the_standalone_gateways() {
    let gw = gateway().await;
    let r = gw
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "x"),
                ("client_secret", "y"),
            ],
            None,
        )
        .await;
    r.assert_error(400, "unsupported_grant_type");
}

async fn tok_09_jat_01_02_token_contents(kind: RuntimeKind) {
    let auth = Authenticator::start().await;
    let gw = start_on(kind, |c| {
        c.channel = auth.channel_config();
        c.tokens.acr_values_supported = vec!["urn:acr:push".into()];
    })
    .await;
    let r = gw
        .bc(&[
            ("scope", "openid profile email"),
            ("login_hint", "alice"),
            ("acr_values", "urn:acr:unknown urn:acr:push"),
        ])
        .await;
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    let call = auth.next_call().await;
    callback(&gw, &call.bearer, "SUCCEED").await;
    let r = gw.poll(&id).await;
    let claims = decode_jwt;
    let (h, id_t) = claims(r.json["id_token"].as_str().unwrap());
    assert!(h["kid"].is_string());
    assert_eq!(id_t["iss"], gw.url);
    assert_eq!(id_t["aud"], "post-client");
    assert_eq!(id_t["sub"], "sub-alice");
    assert_eq!(id_t["acr"], "urn:acr:push");
    assert_eq!(id_t["email"], "Alice@Example.com");
    assert_eq!(id_t["name"], "Alice Adams");
    assert!(id_t["auth_time"].is_u64());
    let (h, at) = claims(r.json["access_token"].as_str().unwrap());
    assert_eq!(h["typ"], "at+jwt");
    assert!(h["kid"].is_string());
    for c in [
        "iss",
        "exp",
        "aud",
        "sub",
        "client_id",
        "iat",
        "jti",
        "scope",
    ] {
        assert!(!at[c].is_null(), "access token lacks {c}");
    }
    assert_eq!(at["client_id"], "post-client");
    assert_eq!(at["scope"], "openid profile email");
}
