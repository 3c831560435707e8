//! How a client gets its tokens besides plain polling: long polling at the token endpoint
//! (`ciba.long_poll_secs`) and ping mode (PING-01…07, BC-REQ-03, CM-02, SEC-05), on both proxy
//! runtimes, over real sockets; the ping client's notification endpoint is a real HTTPS server
//! with a certificate from a test CA.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ciba_test_support as common;

use ciba_gateway::config::{Config, DeliveryMode, RuntimeKind};
use ciba_gateway::store::Delivery;
use common::receiver::Receiver;
use common::*;

both_runtimes!(
    long_poll_is_answered_when_the_user_decides,
    long_poll_denial_is_answered_when_the_user_decides,
    long_poll_times_out_as_authorization_pending_and_the_next_poll_is_not_slow_down,
    long_poll_is_released_at_shutdown,
    long_poll_is_released_at_expiry_as_expired_token,
    long_polls_beyond_the_client_budget_are_answered_at_once,
    long_polls_beyond_the_overall_budget_are_answered_at_once,
    ping_01_03_approval_is_pinged_then_the_client_redeems,
    ping_01_denial_is_pinged_too,
    ping_04_05_refused_or_redirected_ping_is_not_repeated_and_the_grant_stands,
    ping_07_server_errors_are_retried_until_delivered,
    sec_05_ping_to_a_private_address_is_refused_and_the_grant_stands,
    bc_req_03_ping_clients_must_send_a_notification_token,
    push_01_02_approval_pushes_the_tokens_once_and_nothing_is_redeemable,
    push_err_01_denial_is_pushed_as_access_denied,
    push_a_push_that_never_arrives_is_given_up_and_nothing_is_redeemable,
    tok_03_ping_client_concurrent_polls_after_the_ping_give_one_token_response,
    ping_07_an_endpoint_gone_mid_call_is_pinged_again_a_push_is_not,
    push_err_01_expiry_is_pushed_as_expired_token,
    push_01_concurrent_polls_on_a_push_request_redeem_nothing_and_the_push_arrives_once,
);

/// A gateway whose requests are decided by a real authenticator over HTTP.
async fn gateway_with(
    kind: RuntimeKind,
    edit: impl FnOnce(&mut Config) + Send,
) -> (Gateway, Authenticator) {
    start_with_authenticator(kind, edit).await
}

async fn long_poll(kind: RuntimeKind, secs: u32) -> (Gateway, Authenticator) {
    gateway_with(kind, |c| c.ciba.long_poll_secs = secs).await
}

/// Waits until the gateway holds `n` polls.
async fn until_held(gw: &Gateway, n: usize) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while gw.held_polls() != n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the polls are held");
}

async fn long_poll_is_answered_when_the_user_decides(kind: RuntimeKind) {
    let (gw, auth) = long_poll(kind, 60).await;
    let gw = Arc::new(gw);
    let id = gw.start_request().await;
    let call = auth.next_call().await;
    let started = Instant::now();
    let poll = tokio::spawn({
        let (gw, id) = (Arc::clone(&gw), id.clone());
        async move { gw.poll(&id).await }
    });
    until_held(&gw, 1).await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let r = poll.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(r.json["access_token"].is_string());
    // Woken by the decision, not by the end of the hold.
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(gw.held_polls(), 0);
    // TOK-03: taken once.
    gw.clock.advance_secs(10);
    gw.poll(&id).await.assert_error(400, "invalid_grant");
}

async fn long_poll_denial_is_answered_when_the_user_decides(kind: RuntimeKind) {
    let (gw, auth) = long_poll(kind, 60).await;
    let gw = Arc::new(gw);
    let id = gw.start_request().await;
    let call = auth.next_call().await;
    let poll = tokio::spawn({
        let (gw, id) = (Arc::clone(&gw), id.clone());
        async move { gw.poll(&id).await }
    });
    until_held(&gw, 1).await;
    assert_eq!(
        callback(&gw, &call.bearer, "UNAUTHORIZED").await.status,
        200
    );
    poll.await.unwrap().assert_error(400, "access_denied");
}

async fn long_poll_times_out_as_authorization_pending_and_the_next_poll_is_not_slow_down(
    kind: RuntimeKind,
) {
    let (gw, _auth) = long_poll(kind, 1).await;
    let id = gw.start_request().await;
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
    // The hold paced the client: polling again at once is held again, not slow_down (TOK-05
    // counts from the previous answer).
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
}

async fn long_poll_is_released_at_shutdown(kind: RuntimeKind) {
    let (gw, _auth) = long_poll(kind, 120).await;
    let id = gw.start_request().await;
    let (http, url) = (gw.http.clone(), gw.url.clone());
    let poll = tokio::spawn(async move {
        http.post(format!("{url}/token"))
            .form(&[
                ("grant_type", "urn:openid:params:grant-type:ciba"),
                ("client_id", POST_CLIENT.0),
                ("client_secret", POST_CLIENT.1),
                ("auth_req_id", id.as_str()),
            ])
            .send()
            .await
    });
    until_held(&gw, 1).await;
    let engines = gw.engines.clone();
    drop(gw); // the runtime's shutdown signal
    let r = reply(
        poll.await
            .unwrap()
            .expect("answered before the connection closed"),
    )
    .await;
    r.assert_error(400, "authorization_pending");
    assert_eq!(engines.iter().map(|e| e.held_polls()).sum::<usize>(), 0);
}

/// Issue 21 §6: held polls have budgets (each keeps a connection), per gateway process. With
/// room for one poll on each replica, once each holds one the next poll is answered
/// `authorization_pending` at once — as without long polling — while the held ones stay held and
/// still get their tokens. (That a released poll frees its room is the unit test
/// `engine::token::tests::a_released_hold_frees_its_room`.)
async fn held_poll_budget(kind: RuntimeKind, edit: impl FnOnce(&mut Config) + Send) {
    let (gw, auth) = gateway_with(kind, |c| {
        c.ciba.long_poll_secs = 60;
        edit(c);
    })
    .await;
    let gw = Arc::new(gw);
    let replicas = gw.engines.len();
    let mut ids = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..=replicas {
        ids.push(gw.start_request().await);
        calls.push(auth.next_call().await);
    }
    // One held poll per replica: a connection each, handed to the replicas in turn.
    let mut held = Vec::new();
    for (n, id) in ids[..replicas].iter().enumerate() {
        held.push(tokio::spawn({
            let (gw, id) = (Arc::clone(&gw), id.clone());
            async move { gw.poll(&id).await }
        }));
        until_held(&gw, n + 1).await;
    }
    // Not held: answered while the others are (a held one would wait 60 s, past
    // `eventually`'s patience).
    let beyond = tokio::spawn({
        let (gw, id) = (Arc::clone(&gw), ids[replicas].clone());
        async move { gw.poll(&id).await }
    });
    eventually("the poll beyond the budget is answered", || async {
        beyond.is_finished()
    })
    .await;
    beyond
        .await
        .unwrap()
        .assert_error(400, "authorization_pending");
    assert_eq!(gw.held_polls(), replicas);
    assert_eq!(callback(&gw, &calls[0].bearer, "SUCCEED").await.status, 200);
    let r = held.remove(0).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    for h in held {
        h.abort();
    }
}

async fn long_polls_beyond_the_client_budget_are_answered_at_once(kind: RuntimeKind) {
    held_poll_budget(kind, |c| c.ciba.max_held_polls_per_client = 1).await;
}

async fn long_polls_beyond_the_overall_budget_are_answered_at_once(kind: RuntimeKind) {
    held_poll_budget(kind, |c| c.ciba.max_held_polls = Some(1)).await;
}

async fn long_poll_is_released_at_expiry_as_expired_token(kind: RuntimeKind) {
    let (gw, _auth) = long_poll(kind, 120).await;
    let gw = Arc::new(gw);
    let id = gw.start_request().await;
    // The base configuration's requests live 120 s: one second is left.
    gw.clock.advance_secs(119);
    let started = Instant::now();
    let poll = tokio::spawn({
        let (gw, id) = (Arc::clone(&gw), id.clone());
        async move { gw.poll(&id).await }
    });
    until_held(&gw, 1).await;
    gw.clock.advance_secs(2);
    poll.await.unwrap().assert_error(400, "expired_token");
    // Released at the expiry, not at the end of the 120 s hold.
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A gateway whose `post-client` is a ping client notified at `receiver`.
async fn ping_gateway(kind: RuntimeKind, receiver: &Receiver) -> (Gateway, Authenticator) {
    notified_gateway(kind, receiver, DeliveryMode::Ping).await
}

/// A gateway whose `post-client` is a `mode` client notified at `receiver`.
async fn notified_gateway(
    kind: RuntimeKind,
    receiver: &Receiver,
    mode: DeliveryMode,
) -> (Gateway, Authenticator) {
    let (endpoint, ca) = (receiver.url.parse().unwrap(), receiver.ca_file.clone());
    gateway_with(kind, move |c| {
        let n = &mut c.ciba.client_notifications;
        n.ca_file = Some(ca.into());
        n.outbound.allow_private_networks = true;
        n.retry_initial_ms = 50;
        let client = &mut c.clients[0];
        client.backchannel_token_delivery_mode = mode;
        client.backchannel_client_notification_endpoint = Some(endpoint);
    })
    .await
}

const NOTIFICATION_TOKEN: &str = "8d67dc78-7faa-4d41-aabd-67707b374255";

/// Waits until the ping for `id` is over (delivered or given up) and says how it went.
async fn ping_outcome(gw: &Gateway, id: &str) -> Delivery {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match gw.engine.delivery(id).await {
                Some(d @ (Delivery::Delivered { .. } | Delivery::Failed { .. })) => return d,
                _ => tokio::task::yield_now().await,
            }
        }
    })
    .await
    .expect("the ping is over")
}

/// Starts a request for the ping client, and has the user approve it (or not).
async fn decided_ping_request(gw: &Gateway, auth: &Authenticator, approve: bool) -> String {
    let id = start_ping_request(gw).await;
    let call = auth.next_call().await;
    let status = if approve { "SUCCEED" } else { "UNAUTHORIZED" };
    assert_eq!(callback(gw, &call.bearer, status).await.status, 200);
    id
}

async fn start_ping_request(gw: &Gateway) -> String {
    let r = gw
        .bc(&[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("client_notification_token", NOTIFICATION_TOKEN),
        ])
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["auth_req_id"].as_str().unwrap().to_owned()
}

async fn ping_01_03_approval_is_pinged_then_the_client_redeems(kind: RuntimeKind) {
    let receiver = Receiver::start(&[204]).await;
    let (gw, auth) = ping_gateway(kind, &receiver).await;
    let id = decided_ping_request(&gw, &auth, true).await;
    let ping = receiver.next_call().await;
    assert_eq!(ping.bearer, NOTIFICATION_TOKEN);
    assert_eq!(ping.content_type, "application/json");
    // Exactly the id, nothing else.
    assert_eq!(ping.body, serde_json::json!({ "auth_req_id": id }));
    assert_eq!(
        ping_outcome(&gw, &id).await,
        Delivery::Delivered { attempts: 1 }
    );
    let r = gw.poll(&id).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(r.json["id_token"].is_string());
}

async fn ping_01_denial_is_pinged_too(kind: RuntimeKind) {
    let receiver = Receiver::start(&[200]).await;
    let (gw, auth) = ping_gateway(kind, &receiver).await;
    let id = decided_ping_request(&gw, &auth, false).await;
    assert_eq!(
        receiver.next_call().await.body,
        serde_json::json!({ "auth_req_id": id })
    );
    assert_eq!(
        ping_outcome(&gw, &id).await,
        Delivery::Delivered { attempts: 1 }
    );
    gw.poll(&id).await.assert_error(400, "access_denied");
}

/// PING-04: a 401, a 403 or a redirect ends the ping after one call (the redirect's Location is
/// never called); PING-05: the grant stands.
async fn ping_04_05_refused_or_redirected_ping_is_not_repeated_and_the_grant_stands(
    kind: RuntimeKind,
) {
    for status in [401, 403, 302] {
        let receiver = Receiver::start(&[status, 204]).await;
        let (gw, auth) = ping_gateway(kind, &receiver).await;
        let id = decided_ping_request(&gw, &auth, true).await;
        assert!(
            matches!(
                ping_outcome(&gw, &id).await,
                Delivery::Failed { attempts: 1, .. }
            ),
            "{status}"
        );
        assert_eq!(receiver.calls_so_far(), 1, "{status}");
        let r = gw.poll(&id).await;
        assert_eq!(r.status, 200, "{status}: {}", r.json);
    }
}

async fn ping_07_server_errors_are_retried_until_delivered(kind: RuntimeKind) {
    let receiver = Receiver::start(&[500, 503, 204]).await;
    let (gw, auth) = ping_gateway(kind, &receiver).await;
    let id = decided_ping_request(&gw, &auth, true).await;
    assert_eq!(
        ping_outcome(&gw, &id).await,
        Delivery::Delivered { attempts: 3 }
    );
    assert_eq!(receiver.calls_so_far(), 3);
    let r = gw.poll(&id).await;
    assert_eq!(r.status, 200, "{}", r.json);
}

async fn sec_05_ping_to_a_private_address_is_refused_and_the_grant_stands(kind: RuntimeKind) {
    let receiver = Receiver::start(&[204]).await;
    let endpoint = receiver
        .url
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap();
    let ca = receiver.ca_file.clone();
    // The SSRF guard as shipped: private networks refused.
    let (gw, auth) = gateway_with(kind, move |c| {
        c.ciba.client_notifications.ca_file = Some(ca.into());
        let client = &mut c.clients[0];
        client.backchannel_token_delivery_mode = DeliveryMode::Ping;
        client.backchannel_client_notification_endpoint = Some(endpoint);
    })
    .await;
    let id = decided_ping_request(&gw, &auth, true).await;
    match ping_outcome(&gw, &id).await {
        Delivery::Failed {
            attempts: 1,
            reason,
        } => assert!(reason.contains("SSRF"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(receiver.calls_so_far(), 0);
    let r = gw.poll(&id).await;
    assert_eq!(r.status, 200, "{}", r.json);
}

async fn bc_req_03_ping_clients_must_send_a_notification_token(kind: RuntimeKind) {
    let receiver = Receiver::start(&[204]).await;
    let (gw, _auth) = ping_gateway(kind, &receiver).await;
    let bc = |token: Option<String>| {
        let gw = &gw;
        async move {
            let mut p = vec![
                ("scope", "openid".to_owned()),
                ("login_hint", "alice".into()),
            ];
            if let Some(t) = token {
                p.push(("client_notification_token", t));
            }
            let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
            gw.bc(&p).await
        }
    };
    bc(None).await.assert_error(400, "invalid_request");
    bc(Some("a".repeat(1025)))
        .await
        .assert_error(400, "invalid_request");
    bc(Some("not a token".into()))
        .await
        .assert_error(400, "invalid_request");
    assert_eq!(bc(Some("a".repeat(1024))).await.status, 200);
    assert_eq!(bc(Some("abc+/_-.~==".into())).await.status, 200);
}

async fn push_01_02_approval_pushes_the_tokens_once_and_nothing_is_redeemable(kind: RuntimeKind) {
    let receiver = Receiver::start(&[204]).await;
    let (gw, auth) = notified_gateway(kind, &receiver, DeliveryMode::Push).await;
    let id = decided_ping_request(&gw, &auth, true).await;
    let push = receiver.next_call().await;
    assert_eq!(push.bearer, NOTIFICATION_TOKEN);
    let b = &push.body;
    assert_eq!(b["auth_req_id"], id.as_str());
    assert_eq!(b["token_type"], "Bearer");
    assert!(b["expires_in"].as_u64().unwrap() > 0);
    let (at, it) = (
        b["access_token"].as_str().unwrap(),
        b["id_token"].as_str().unwrap(),
    );
    // PUSH-02: the ID token names the request and hashes the access token it came with (its
    // signature is the token endpoint's, checked in tests/token.rs).
    let (header, claims) = decode_jwt(it);
    assert_eq!(claims["aud"], POST_CLIENT.0);
    assert_eq!(
        claims["urn:openid:params:jwt:claim:auth_req_id"],
        id.as_str()
    );
    let alg: jsonwebtoken::Algorithm = header["alg"].as_str().unwrap().parse().unwrap();
    assert_eq!(claims["at_hash"], common::left_half_hash(alg, at));
    assert_eq!(claims["sub"], "sub-alice");
    assert_eq!(
        ping_outcome(&gw, &id).await,
        Delivery::Delivered { attempts: 1 }
    );
    // The tokens went to the endpoint only: the grant redeems nothing.
    gw.poll(&id).await.assert_error(400, "unauthorized_client");
    assert_eq!(receiver.calls_so_far(), 1);
    // The pushed access token works like any other the gateway mints.
    let r = reply(
        gw.http
            .get(format!("{}/userinfo", gw.url))
            .bearer_auth(at)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (r.status, &r.json["sub"]),
        (200, &serde_json::json!("sub-alice"))
    );
}

async fn push_err_01_denial_is_pushed_as_access_denied(kind: RuntimeKind) {
    let receiver = Receiver::start(&[200]).await;
    let (gw, auth) = notified_gateway(kind, &receiver, DeliveryMode::Push).await;
    let id = decided_ping_request(&gw, &auth, false).await;
    assert_eq!(
        receiver.next_call().await.body,
        serde_json::json!({ "error": "access_denied", "auth_req_id": id })
    );
    assert_eq!(
        ping_outcome(&gw, &id).await,
        Delivery::Delivered { attempts: 1 }
    );
}

async fn push_a_push_that_never_arrives_is_given_up_and_nothing_is_redeemable(kind: RuntimeKind) {
    let receiver = Receiver::start(&[503]).await;
    let (gw, auth) = notified_gateway(kind, &receiver, DeliveryMode::Push).await;
    let id = decided_ping_request(&gw, &auth, true).await;
    // Every attempt the policy allows (5), the same minted tokens each time, then given up.
    assert!(matches!(
        ping_outcome(&gw, &id).await,
        Delivery::Failed { attempts: 5, .. }
    ));
    let first = receiver.next_call().await.body;
    for _ in 1..5 {
        assert_eq!(receiver.next_call().await.body, first, "minted once");
    }
    gw.poll(&id).await.assert_error(400, "unauthorized_client");
}

async fn tok_03_ping_client_concurrent_polls_after_the_ping_give_one_token_response(
    kind: RuntimeKind,
) {
    let receiver = Receiver::start(&[204]).await;
    let (gw, auth) = ping_gateway(kind, &receiver).await;
    let id = decided_ping_request(&gw, &auth, true).await;
    receiver.next_call().await;
    let gw = Arc::new(gw);
    let polls: Vec<_> = (0..20)
        .map(|_| {
            let (gw, id) = (Arc::clone(&gw), id.clone());
            tokio::spawn(async move { gw.poll(&id).await })
        })
        .collect();
    let mut tokens = 0;
    for p in polls {
        let r = p.await.unwrap();
        match r.status {
            200 => tokens += 1,
            _ => r.assert_error(400, "invalid_grant"),
        }
    }
    assert_eq!(tokens, 1);
}

async fn ping_07_an_endpoint_gone_mid_call_is_pinged_again_a_push_is_not(kind: RuntimeKind) {
    // The endpoint reads the call and drops the connection, then is back.
    let receiver = Receiver::start(&[0, 204]).await;
    let (gw, auth) = ping_gateway(kind, &receiver).await;
    let id = decided_ping_request(&gw, &auth, true).await;
    assert_eq!(
        ping_outcome(&gw, &id).await,
        Delivery::Delivered { attempts: 2 }
    );
    // A push that may have arrived is not sent again: at most once.
    let receiver = Receiver::start(&[0, 204]).await;
    let (gw, auth) = notified_gateway(kind, &receiver, DeliveryMode::Push).await;
    let id = decided_ping_request(&gw, &auth, true).await;
    assert!(matches!(
        ping_outcome(&gw, &id).await,
        Delivery::Failed { attempts: 1, .. }
    ));
    assert_eq!(receiver.calls_so_far(), 1);
}

async fn push_err_01_expiry_is_pushed_as_expired_token(kind: RuntimeKind) {
    let receiver = Receiver::start(&[204]).await;
    let (gw, _auth) = notified_gateway(kind, &receiver, DeliveryMode::Push).await;
    // A short-lived request (the manual clock does not move: the timer is real time).
    let r = gw
        .bc(&[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("requested_expiry", "1"),
            ("client_notification_token", NOTIFICATION_TOKEN),
        ])
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    gw.clock.advance_secs(2);
    let call = receiver.next_call().await;
    assert_eq!(
        call.body,
        serde_json::json!({ "error": "expired_token", "auth_req_id": id })
    );
    assert_eq!(
        ping_outcome(&gw, &id).await,
        Delivery::Delivered { attempts: 1 }
    );
}

async fn push_01_concurrent_polls_on_a_push_request_redeem_nothing_and_the_push_arrives_once(
    kind: RuntimeKind,
) {
    let receiver = Receiver::start(&[204]).await;
    let (gw, auth) = notified_gateway(kind, &receiver, DeliveryMode::Push).await;
    let gw = Arc::new(gw);
    let id = start_ping_request(&gw).await;
    let call = auth.next_call().await;
    let polls: Vec<_> = (0..20)
        .map(|_| {
            let (gw, id) = (Arc::clone(&gw), id.clone());
            tokio::spawn(async move { gw.poll(&id).await })
        })
        .collect();
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    for p in polls {
        p.await.unwrap().assert_error(400, "unauthorized_client");
    }
    assert_eq!(
        ping_outcome(&gw, &id).await,
        Delivery::Delivered { attempts: 1 }
    );
    assert_eq!(receiver.next_call().await.body["auth_req_id"], id.as_str());
    assert_eq!(receiver.calls_so_far(), 1);
}
