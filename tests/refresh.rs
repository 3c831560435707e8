//! Refresh tokens minted by the gateway (`tokens: mint`): issued to a client allowed the
//! `refresh_token` grant that asked for `offline_access`; answered at the shared token endpoint
//! only when the token is the gateway's own, rotated on every use, and a reused token revokes
//! its whole family (RFC 9700 §4.14). A refresh token that is not the gateway's goes to the
//! provider byte for byte (standalone: `invalid_grant`); a narrower scope is granted for one
//! refresh (RFC 6749 §6). On both runtimes, over real sockets, on a manual clock.

use ciba_test_support as common;

use ciba_gateway::config::{Config, DeliveryMode, RuntimeKind};
use common::receiver::Receiver;
use common::*;

both_runtimes!(
    refresh_tokens_rotate_and_a_reused_one_revokes_the_family,
    no_refresh_token_without_offline_access_or_the_grant,
    refresh_token_is_bound_to_its_client_and_its_idle_time,
    a_refresh_token_that_is_not_the_gateways_is_forwarded,
    push_02_a_pushed_refresh_token_is_hashed_in_the_id_token_and_refreshes,
);

/// `post-client` and `basic-client` may refresh; `offline_access` is a supported scope.
fn refreshing(c: &mut Config) {
    c.scopes_supported.push("offline_access".into());
    for cl in &mut c.clients {
        cl.grant_types.push("refresh_token".into());
    }
}

async fn gateway(
    kind: RuntimeKind,
    edit: impl FnOnce(&mut Config) + Send,
) -> (Gateway, Authenticator) {
    start_with_authenticator(kind, |c| {
        refreshing(c);
        edit(c);
    })
    .await
}

/// An approved request's token response, for `scope`.
async fn tokens(gw: &Gateway, auth: &Authenticator, scope: &str) -> Reply {
    let r = gw.bc(&[("scope", scope), ("login_hint", "alice")]).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    let call = auth.next_call().await;
    assert_eq!(callback(gw, &call.bearer, "SUCCEED").await.status, 200);
    let t = gw.poll(&id).await;
    assert_eq!(t.status, 200, "{}", t.json);
    t
}

async fn refresh(gw: &Gateway, client: (&str, &str), token: &str) -> Reply {
    gw.post_form(
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client.0),
            ("client_secret", client.1),
            ("refresh_token", token),
        ],
        None,
    )
    .await
}

fn rt(r: &Reply) -> String {
    r.json["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh token: {}", r.json))
        .to_owned()
}

async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_family(kind: RuntimeKind) {
    let (gw, auth) = gateway(kind, |_| {}).await;
    let first = tokens(&gw, &auth, "openid email offline_access").await;
    let rt1 = rt(&first);
    let second = refresh(&gw, POST_CLIENT, &rt1).await;
    assert_eq!(second.status, 200, "{}", second.json);
    assert_eq!(second.headers["cache-control"], "no-store");
    let rt2 = rt(&second);
    assert_ne!(rt1, rt2, "rotated");
    assert_ne!(second.json["access_token"], first.json["access_token"]);
    let (_, claims) = decode_jwt(second.json["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "sub-alice");
    assert_eq!(claims["email"], "Alice@Example.com");
    assert_eq!(second.json["scope"], "openid email offline_access");
    let third = refresh(&gw, POST_CLIENT, &rt2).await;
    assert_eq!(third.status, 200, "{}", third.json);
    let rt3 = rt(&third);
    // rt1 again: reuse. The family is revoked: rt3, current until now, dies with it.
    refresh(&gw, POST_CLIENT, &rt1)
        .await
        .assert_error(400, "invalid_grant");
    refresh(&gw, POST_CLIENT, &rt3)
        .await
        .assert_error(400, "invalid_grant");
    // A new grant starts a new family.
    let again = tokens(&gw, &auth, "openid offline_access").await;
    assert_eq!(refresh(&gw, POST_CLIENT, &rt(&again)).await.status, 200);
}

async fn no_refresh_token_without_offline_access_or_the_grant(kind: RuntimeKind) {
    let (gw, auth) = gateway(kind, |c| {
        c.clients[0].grant_types.retain(|g| g != "refresh_token");
    })
    .await;
    let t = tokens(&gw, &auth, "openid offline_access").await;
    assert!(t.json.get("refresh_token").is_none(), "{}", t.json);
    let (gw, auth) = gateway(kind, |_| {}).await;
    let t = tokens(&gw, &auth, "openid email").await;
    assert!(t.json.get("refresh_token").is_none(), "{}", t.json);
}

async fn refresh_token_is_bound_to_its_client_and_its_idle_time(kind: RuntimeKind) {
    let (gw, auth) = gateway(kind, |c| c.tokens.refresh_token_idle_secs = 3600).await;
    let rt1 = rt(&tokens(&gw, &auth, "openid offline_access").await);
    // Another client: refused, and nothing rotated.
    let other = gw
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt1.as_str()),
            ],
            Some(BASIC_CLIENT),
        )
        .await;
    other.assert_error(400, "invalid_grant");
    // RFC 6749 §6: a narrower scope is granted for this refresh only; a wider one is
    // `invalid_scope`, and nothing rotates then.
    let with_scope = |token: String, scope: &'static str| {
        let gw = &gw;
        async move {
            gw.post_form(
                "/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", POST_CLIENT.0),
                    ("client_secret", POST_CLIENT.1),
                    ("refresh_token", token.as_str()),
                    ("scope", scope),
                ],
                None,
            )
            .await
        }
    };
    with_scope(rt1.clone(), "openid email offline_access")
        .await
        .assert_error(400, "invalid_scope");
    let narrow = with_scope(rt1.clone(), "openid").await;
    assert_eq!(narrow.status, 200, "{}", narrow.json);
    assert_eq!(narrow.json["scope"], "openid");
    let (_, at) = decode_jwt(narrow.json["access_token"].as_str().unwrap());
    assert_eq!(at["scope"], "openid");
    // The family keeps the scope first granted: the next refresh without `scope` has it all.
    let whole = refresh(&gw, POST_CLIENT, &rt(&narrow)).await;
    assert_eq!(whole.status, 200, "{}", whole.json);
    assert_eq!(whole.json["scope"], "openid offline_access");
    let rt1 = rt(&whole);
    let rt2 = rt(&refresh(&gw, POST_CLIENT, &rt1).await);
    // Idle longer than refresh_token_idle_secs: the family ends.
    gw.clock.advance_secs(3601);
    refresh(&gw, POST_CLIENT, &rt2)
        .await
        .assert_error(400, "invalid_grant");
}

async fn a_refresh_token_that_is_not_the_gateways_is_forwarded(kind: RuntimeKind) {
    let (gw, _auth) = gateway(kind, |_| {}).await;
    let r = refresh(&gw, POST_CLIENT, "the-providers-own-refresh-token").await;
    match kind {
        // In front of the echo provider: it received the very form the client sent.
        RuntimeKind::Pingora => {
            assert_eq!(r.status, 200, "{}", r.json);
            assert_eq!(
                r.json["body"],
                "grant_type=refresh_token&client_id=post-client&client_secret=post-secret&refresh_token=the-providers-own-refresh-token"
            );
        }
        // Standalone, the gateway is the only authorization server: a refresh token it did not
        // issue (foreign, tampered, unsigned) is `invalid_grant` (RFC 6749 §5.2).
        RuntimeKind::Tower => {
            r.assert_error(400, "invalid_grant");
            let (gw, auth) = gateway(kind, |_| {}).await;
            let own = rt(&tokens(&gw, &auth, "openid offline_access").await);
            let (head, rest) = own.split_once('.').unwrap();
            let (payload, _) = rest.split_once('.').unwrap();
            let tampered = format!(
                "{}.{payload}.",
                keys::unsigned(&serde_json::json!({}))
                    .split('.')
                    .next()
                    .unwrap()
            );
            for token in [format!("{head}.{payload}.AAAA"), tampered] {
                refresh(&gw, POST_CLIENT, &token)
                    .await
                    .assert_error(400, "invalid_grant");
            }
        }
    }
}

async fn push_02_a_pushed_refresh_token_is_hashed_in_the_id_token_and_refreshes(kind: RuntimeKind) {
    let receiver = Receiver::start(&[204]).await;
    let (endpoint, ca) = (receiver.url.parse().unwrap(), receiver.ca_file.clone());
    let (gw, auth) = gateway(kind, move |c| {
        let n = &mut c.ciba.client_notifications;
        n.ca_file = Some(ca.into());
        n.outbound.allow_private_networks = true;
        c.clients[0].backchannel_token_delivery_mode = DeliveryMode::Push;
        c.clients[0].backchannel_client_notification_endpoint = Some(endpoint);
    })
    .await;
    let r = gw
        .bc(&[
            ("scope", "openid offline_access"),
            ("login_hint", "alice"),
            ("client_notification_token", "push-bearer"),
        ])
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let pushed = receiver.next_call().await.body;
    let rt1 = pushed["refresh_token"].as_str().unwrap();
    let (header, claims) = decode_jwt(pushed["id_token"].as_str().unwrap());
    let alg: jsonwebtoken::Algorithm = header["alg"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        claims["urn:openid:params:jwt:claim:rt_hash"],
        common::left_half_hash(alg, rt1)
    );
    // The push client refreshes at the token endpoint like any other.
    let r = refresh(&gw, POST_CLIENT, rt1).await;
    assert_eq!(r.status, 200, "{}", r.json);
}
