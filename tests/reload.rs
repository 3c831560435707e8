//! `Engine::reload` (issue 21 §5) on both runtimes, on a manual clock: users, limits and keys
//! change under a running gateway; a retired key leaves the JWKS once the tokens it signed have
//! expired; a poll held across a reload is answered. (The binary's SIGHUP and
//! `POST /reload`, and refusals, are in `tests/quickstart/reload.rs`.)

use ciba_test_support as common;

use ciba_gateway::Config;
use ciba_gateway::config::{
    ChannelConfig, KeyConfig, Rate, RuntimeKind, SecretRef, SigningAlg, UsersConfig,
};
use common::*;

/// Reloads every replica with `cfg`.
fn reload(gw: &Gateway, cfg: &Config) -> ciba_gateway::Reloaded {
    let mut last = None;
    for e in &gw.engines {
        last = Some(e.reload(cfg.clone()).expect("the reload is accepted"));
    }
    last.unwrap()
}

/// The `kid`s of the JWKS discovery advertises, as a client finds them.
async fn published(gw: &Gateway) -> Vec<String> {
    let d = gw.discovery().await;
    common::tokens::jwks_kids(&gw.http, d["jwks_uri"].as_str().unwrap()).await
}

both_runtimes!(
    a_reload_adds_a_user_and_changes_the_client_limit,
    a_poll_held_across_a_reload_is_answered,
    requests_during_reloads_are_all_answered_as_without_them,
    a_new_bearer_secret_keeps_the_authenticators_callbacks_working,
);

/// Standalone only: the runtimes' test harness puts pingora in front of an echo server, which
/// has no JWKS to merge the gateway's keys into; the JWKS is the engine's on both runtimes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_published_until_its_tokens_expired_standalone() {
    a_rotated_key_is_published_until_its_tokens_expired(RuntimeKind::Tower).await
}

/// Standalone, as above: the JWKS is compared before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_gives_a_kid_to_another_key_is_refused_standalone() {
    a_reload_that_gives_a_kid_to_another_key_is_refused(RuntimeKind::Tower).await
}

/// GW-02 across reloads: a `kid` names one key for good. A reload that gives a current or a
/// retired key's `kid` to new key material is refused (the tokens the old key signed would stop
/// verifying wherever the JWKS is read again), naming the `kid`, and the running keys stay; the
/// same file reloaded again is accepted.
async fn a_reload_that_gives_a_kid_to_another_key_is_refused(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let key = |kid: &str| KeyConfig {
        kid: kid.into(),
        alg: SigningAlg::ES256,
        private_key: SecretRef::value(
            ciba_gateway::generate_signing_key(SigningAlg::ES256).unwrap(),
        ),
    };
    let jwks = || async {
        let d = gw.discovery().await;
        common::get_json(&gw.http, d["jwks_uri"].as_str().unwrap()).await
    };
    let refused = |cfg: &Config| {
        for e in &gw.engines {
            let problems = e.reload(cfg.clone()).expect_err("the reload is refused");
            assert!(problems.to_string().contains("kid 'k1'"), "{problems}");
        }
    };
    let mut cfg = (*gw.engine.config()).clone();
    cfg.tokens.keys = vec![key("k1")];
    cfg.tokens.active_kid = None;
    reload(&gw, &cfg);
    let before = jwks().await;
    // The same file again: nothing to refuse.
    assert!(reload(&gw, &cfg).retired_kids.is_empty());

    let mut other = cfg.clone();
    other.tokens.keys = vec![key("k1")];
    refused(&other);
    assert_eq!(jwks().await, before);

    // Retired, k1 still verifies what it signed: its kid is not free either.
    let mut rotated = cfg.clone();
    rotated.tokens.keys = vec![key("k2")];
    assert_eq!(reload(&gw, &rotated).retired_kids, ["k1"]);
    let mut back = rotated.clone();
    back.tokens.keys.push(key("k1"));
    back.tokens.active_kid = Some("k2".into());
    refused(&back);
}

/// A reload that changes `channel.bearer_secret` (a rotation) leaves the bearer tokens the
/// authenticator already holds valid for as long as their requests live: the user's decision
/// on a request notified before the reload still arrives; requests notified after it carry
/// tokens of the new secret.
async fn a_new_bearer_secret_keeps_the_authenticators_callbacks_working(kind: RuntimeKind) {
    let secret = |c: char| Some(SecretRef::value(c.to_string().repeat(40)));
    let (gw, auth) = start_with_authenticator(kind, |c| {
        if let ChannelConfig::Http { bearer_secret, .. } = &mut c.channel {
            *bearer_secret = secret('a');
        }
    })
    .await;
    let before = gw.start_request().await;
    let old = auth.next_call().await;

    let mut cfg = (*gw.engine.config()).clone();
    let ChannelConfig::Http { bearer_secret, .. } = &mut cfg.channel else {
        panic!("the authenticator's channel is http")
    };
    *bearer_secret = secret('b');
    reload(&gw, &cfg);

    assert_eq!(callback(&gw, &old.bearer, "SUCCEED").await.status, 200);
    let tokens = gw.poll(&before).await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);

    let after = gw.start_request().await;
    let new = auth.next_call().await;
    assert_ne!(new.bearer, old.bearer);
    assert_eq!(callback(&gw, &new.bearer, "SUCCEED").await.status, 200);
    assert_eq!(gw.poll(&after).await.status, 200);
}

/// A user added by a reload can be reached at once; a lowered `limits.bc_per_client` applies
/// to the next request (GW-07), with the budget spent before the reload still counted.
async fn a_reload_adds_a_user_and_changes_the_client_limit(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    gw.bc(&[("scope", "openid"), ("login_hint", "carol")])
        .await
        .assert_error(400, "unknown_user_id");

    let mut cfg = (*gw.engine.config()).clone();
    let UsersConfig::Static { users } = &mut cfg.users else {
        panic!("the base configuration has static users")
    };
    let mut carol = users[1].clone();
    carol.subject = "sub-carol".into();
    carol.username = Some("carol".into());
    carol.email = None;
    users.push(carol);
    cfg.limits.bc_per_client = Some(Rate {
        requests: 1,
        per_secs: 3600,
    });
    cfg.limits.bc_per_user = None;
    // Whatever the client spent so far has drained.
    gw.clock.advance_secs(24 * 3600);
    let r = reload(&gw, &cfg);
    assert!(
        r.changed.contains(&"users") && r.changed.contains(&"limits"),
        "{r:?}"
    );

    let first = gw.bc(&[("scope", "openid"), ("login_hint", "carol")]).await;
    assert_eq!(first.status, 200, "{}", first.json);
    gw.bc(&[("scope", "openid"), ("login_hint", "carol")])
        .await
        .assert_error(403, "access_denied");
}

/// Key rotation by reload: the new key signs from then on; the old one stays in the JWKS
/// (GW-02: tokens it signed still verify) until the longest access / ID token lifetime has
/// passed, then leaves it.
async fn a_rotated_key_is_published_until_its_tokens_expired(kind: RuntimeKind) {
    let (gw, auth) = start_with_authenticator(kind, |_| {}).await;
    let old = gw.own_kid();
    assert_eq!(published(&gw).await, std::slice::from_ref(&old));

    let mut cfg = (*gw.engine.config()).clone();
    cfg.tokens.keys = vec![KeyConfig {
        kid: "rotated".into(),
        alg: SigningAlg::ES256,
        private_key: SecretRef::value(
            ciba_gateway::generate_signing_key(SigningAlg::ES256).unwrap(),
        ),
    }];
    cfg.tokens.active_kid = None;
    let r = reload(&gw, &cfg);
    assert_eq!(r.retired_kids, std::slice::from_ref(&old));

    let id = gw.start_request().await;
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let tokens = gw.poll(&id).await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    let id_token = tokens.json["id_token"].as_str().unwrap();
    let (header, _) = decode_jwt(id_token);
    assert_eq!(header["kid"], "rotated");
    gw.verify_id_token(id_token, POST_CLIENT.0).await;

    assert_eq!(published(&gw).await, ["rotated".to_owned(), old.clone()]);
    let lifetime = {
        let t = &gw.engine.config().tokens;
        t.access_token_ttl_secs.max(t.id_token_ttl_secs)
    };
    gw.clock.advance_secs(lifetime - 1);
    assert_eq!(published(&gw).await.len(), 2);
    gw.clock.advance_secs(1);
    assert_eq!(published(&gw).await, ["rotated".to_owned()]);
}

/// A poll held (long polling) while the reload happens is answered with the tokens once the
/// user approves: the reload keeps pending requests and held polls.
async fn a_poll_held_across_a_reload_is_answered(kind: RuntimeKind) {
    let (gw, auth) = start_with_authenticator(kind, |c| c.ciba.long_poll_secs = 20).await;
    let id = gw.start_request().await;
    let call = auth.next_call().await;
    let held = {
        let (http, url, id) = (gw.http.clone(), gw.url.clone(), id.clone());
        tokio::spawn(async move {
            let r = http
                .post(format!("{url}/token"))
                .form(&[
                    ("grant_type", "urn:openid:params:grant-type:ciba"),
                    ("client_id", POST_CLIENT.0),
                    ("client_secret", POST_CLIENT.1),
                    ("auth_req_id", id.as_str()),
                ])
                .send()
                .await
                .unwrap();
            reply(r).await
        })
    };
    eventually("the poll is held", || async { gw.held_polls() == 1 }).await;
    let mut cfg = (*gw.engine.config()).clone();
    cfg.ciba.max_held_polls_per_client = 7;
    let r = reload(&gw, &cfg);
    assert_eq!(r.changed, ["ciba"]);
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let r = held.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(r.json["access_token"].is_string());
}

/// Nothing is lost while the configuration is reloaded again and again: backchannel requests
/// and polls that run meanwhile are all answered as they would be without the reloads (200,
/// then `authorization_pending`), none refused for a client or a key that was there all along.
async fn requests_during_reloads_are_all_answered_as_without_them(kind: RuntimeKind) {
    let (gw, _auth) = start_with_authenticator(kind, |c| {
        c.limits.bc_per_client = None;
        c.limits.bc_per_user = None;
    })
    .await;
    let gw = std::sync::Arc::new(gw);
    let base = (*gw.engine.config()).clone();
    let mut more = base.clone();
    let mut extra = more.clients[0].clone();
    extra.client_id = "extra-client".into();
    more.clients.push(extra);
    let reloads = tokio::task::spawn_blocking({
        let gw = std::sync::Arc::clone(&gw);
        move || {
            for n in 0..40 {
                reload(&gw, if n % 2 == 0 { &more } else { &base });
            }
        }
    });
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let gw = std::sync::Arc::clone(&gw);
            tokio::spawn(async move {
                for _ in 0..5 {
                    let id = gw.start_request().await;
                    gw.poll(&id)
                        .await
                        .assert_error(400, "authorization_pending");
                }
            })
        })
        .collect();
    for r in requests {
        r.await
            .expect("every request is answered as without reloads");
    }
    reloads.await.unwrap();
}
