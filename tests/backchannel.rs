//! The backchannel authentication endpoint over a real socket: requirements §1.3–§1.9.

use ciba_test_support as common;

use ciba_gateway::config::RuntimeKind;
use common::*;

both_runtimes!(
    bc_ack_01_02_03_04_success_acknowledgement,
    bc_auth_01_only_post_with_a_form,
    bc_auth_02_client_authentication_failures_are_401_invalid_client,
    bc_auth_02_registered_method_is_enforced,
    oa_03_bc_err_02_basic_auth_is_urldecoded_and_failures_challenge_basic,
    bc_auth_05_two_methods_or_a_mismatched_client_id,
    bc_auth_06_client_without_the_ciba_grant_is_unauthorized_client,
    bc_val_01_failed_client_auth_never_reveals_the_user,
    bc_req_01_scope_rules,
    bc_req_02_exactly_one_hint_counted_before_validation,
    bc_req_04_05_requested_expiry,
    bc_req_06_unknown_ignored_empty_absent_repeated_rejected,
    bc_req_09_unknown_user_and_hint_forms,
    bc_req_07_sec_03_id_token_hint,
    bc_jwt_06_request_objects_are_not_accepted,
    bc_uc_01_02_user_code,
    bc_uc_01_a_user_code_that_is_sent_is_always_verified,
    bc_uc_02_sec_04_wrong_user_codes_are_rate_limited_per_user,
    bc_uc_03_04_binding_message_policy,
    bc_ack_05_store_full_refuses_new_requests_with_a_clear_error,
    gw_07_oversized_body_is_413,
    sec_04_gw_07_per_user_limit_spans_clients_and_refills,
    gw_07_per_client_limit_counts_authenticated_requests_only,
    sec_04_per_user_limit_is_on_by_default,
);

const OK_PARAMS: &[(&str, &str)] = &[("scope", "openid"), ("login_hint", "alice")];

async fn bc_ack_01_02_03_04_success_acknowledgement(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let r = gw
        .bc(&[
            ("scope", "openid profile"),
            ("login_hint", "alice"),
            ("binding_message", "1234"),
        ])
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["cache-control"], "no-store");
    let id = r.json["auth_req_id"].as_str().unwrap();
    assert!(id.len() >= 27, "at least 160 bits of base64url");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    );
    assert_eq!(r.json["expires_in"], 120);
    assert_eq!(r.json["interval"], 5);
    // Two requests never share an id.
    assert_ne!(gw.start_request().await, id);
}

async fn bc_auth_01_only_post_with_a_form(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let get = gw
        .http
        .get(format!("{}/bc-authorize", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    let json = gw
        .http
        .post(format!("{}/bc-authorize", gw.url))
        .json(&serde_json::json!({"client_id": "post-client", "client_secret": "post-secret", "scope": "openid", "login_hint": "alice"}))
        .send()
        .await
        .unwrap();
    reply(json).await.assert_error(400, "invalid_request");
}

async fn bc_auth_02_client_authentication_failures_are_401_invalid_client(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    // Wrong secret, unknown client, no secret at all.
    for params in [
        vec![("client_id", "post-client"), ("client_secret", "nope")],
        vec![("client_id", "who"), ("client_secret", "x")],
        vec![("client_id", "post-client")],
    ] {
        let mut p = params.clone();
        p.extend_from_slice(OK_PARAMS);
        let r = gw.post_form("/bc-authorize", &p, None).await;
        r.assert_error(401, "invalid_client");
        assert!(r.headers.contains_key("www-authenticate"));
    }
}

async fn bc_auth_02_registered_method_is_enforced(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    // basic-client registered client_secret_basic: its secret in the body is refused.
    let mut p = vec![
        ("client_id", BASIC_CLIENT.0),
        ("client_secret", BASIC_CLIENT.1),
    ];
    p.extend_from_slice(OK_PARAMS);
    gw.post_form("/bc-authorize", &p, None)
        .await
        .assert_error(401, "invalid_client");
    // And post-client may not use Basic.
    gw.post_form("/bc-authorize", OK_PARAMS, Some(POST_CLIENT))
        .await
        .assert_error(401, "invalid_client");
}

async fn oa_03_bc_err_02_basic_auth_is_urldecoded_and_failures_challenge_basic(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let r = gw
        .post_form("/bc-authorize", OK_PARAMS, Some(BASIC_CLIENT))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = gw
        .post_form("/bc-authorize", OK_PARAMS, Some((BASIC_CLIENT.0, "wrong")))
        .await;
    r.assert_error(401, "invalid_client");
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
}

async fn bc_auth_05_two_methods_or_a_mismatched_client_id(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let mut p = vec![("client_secret", BASIC_CLIENT.1)];
    p.extend_from_slice(OK_PARAMS);
    gw.post_form("/bc-authorize", &p, Some(BASIC_CLIENT))
        .await
        .assert_error(400, "invalid_request");
    let mut p = vec![("client_id", "post-client")];
    p.extend_from_slice(OK_PARAMS);
    gw.post_form("/bc-authorize", &p, Some(BASIC_CLIENT))
        .await
        .assert_error(401, "invalid_client");
}

async fn bc_auth_06_client_without_the_ciba_grant_is_unauthorized_client(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let mut p = vec![
        ("client_id", NO_CIBA_CLIENT.0),
        ("client_secret", NO_CIBA_CLIENT.1),
    ];
    p.extend_from_slice(OK_PARAMS);
    gw.post_form("/bc-authorize", &p, None)
        .await
        .assert_error(400, "unauthorized_client");
}

async fn bc_val_01_failed_client_auth_never_reveals_the_user(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let r = gw
        .post_form(
            "/bc-authorize",
            &[
                ("client_id", "post-client"),
                ("client_secret", "bad"),
                ("scope", "openid"),
                ("login_hint", "nobody"),
            ],
            None,
        )
        .await;
    r.assert_error(401, "invalid_client");
}

async fn bc_req_01_scope_rules(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    gw.bc(&[("login_hint", "alice")])
        .await
        .assert_error(400, "invalid_request");
    gw.bc(&[("scope", "profile"), ("login_hint", "alice")])
        .await
        .assert_error(400, "invalid_scope");
    gw.bc(&[("scope", "openid payments"), ("login_hint", "alice")])
        .await
        .assert_error(400, "invalid_scope");
    // Order is irrelevant (CS ensure-other-scope-order-succeeds).
    assert_eq!(
        gw.bc(&[("scope", "email openid"), ("login_hint", "alice")])
            .await
            .status,
        200
    );
    // A scope the client is not allowed.
    let r = gw
        .post_form(
            "/bc-authorize",
            &[
                ("client_id", NARROW_CLIENT.0),
                ("client_secret", NARROW_CLIENT.1),
                ("scope", "openid email"),
                ("login_hint", "alice"),
            ],
            None,
        )
        .await;
    r.assert_error(400, "invalid_scope");
}

async fn bc_req_02_exactly_one_hint_counted_before_validation(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    gw.bc(&[("scope", "openid")])
        .await
        .assert_error(400, "invalid_request");
    // A valid login_hint plus a junk login_hint_token: invalid_request, not unknown_user_id.
    gw.bc(&[
        ("scope", "openid"),
        ("login_hint", "alice"),
        ("login_hint_token", "junk"),
    ])
    .await
    .assert_error(400, "invalid_request");
    gw.bc(&[
        ("scope", "openid"),
        ("login_hint", "nobody"),
        ("id_token_hint", "junk"),
    ])
    .await
    .assert_error(400, "invalid_request");
}

async fn bc_req_04_05_requested_expiry(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    for bad in ["0", "-5", "1.5", "ten", "99999999999999999999"] {
        gw.bc(&[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("requested_expiry", bad),
        ])
        .await
        .assert_error(400, "invalid_request");
    }
    let short = gw
        .bc(&[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("requested_expiry", "10"),
        ])
        .await;
    assert_eq!(short.json["expires_in"], 10, "short values are honoured");
    let capped = gw
        .bc(&[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("requested_expiry", "3600"),
        ])
        .await;
    assert_eq!(capped.json["expires_in"], 300, "capped at max_expiry_secs");
}

async fn bc_req_06_unknown_ignored_empty_absent_repeated_rejected(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    assert_eq!(
        gw.bc(&[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("frobnicate", "1")
        ])
        .await
        .status,
        200
    );
    // An empty login_hint_token is absent, so there is still exactly one hint.
    assert_eq!(
        gw.bc(&[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("login_hint_token", "")
        ])
        .await
        .status,
        200
    );
    gw.bc(&[
        ("scope", "openid"),
        ("login_hint", "alice"),
        ("scope", "openid"),
    ])
    .await
    .assert_error(400, "invalid_request");
}

async fn bc_req_09_unknown_user_and_hint_forms(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    gw.bc(&[("scope", "openid"), ("login_hint", "mallory")])
        .await
        .assert_error(400, "unknown_user_id");
    // Users can be hinted by username, e-mail (any case), phone and subject.
    for hint in ["alice", "alice@example.com", "+15550100001", "sub-alice"] {
        assert_eq!(
            gw.bc(&[("scope", "openid"), ("login_hint", hint)])
                .await
                .status,
            200,
            "{hint}"
        );
    }
}

async fn bc_req_07_sec_03_id_token_hint(kind: RuntimeKind) {
    let auth = Authenticator::start().await;
    let gw = start_on(kind, |c| c.channel = auth.channel_config()).await;
    gw.bc(&[("scope", "openid"), ("id_token_hint", "not.a.jwt")])
        .await
        .assert_error(400, "invalid_request");
    // An ID token the gateway issued to this client identifies the user.
    let id = gw.start_request().await;
    let call = auth.next_call().await;
    assert_eq!(callback(&gw, &call.bearer, "SUCCEED").await.status, 200);
    let tokens = gw.poll(&id).await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    let id_token = tokens.json["id_token"].as_str().unwrap();
    let r = gw
        .bc(&[("scope", "openid"), ("id_token_hint", id_token)])
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(auth.next_call().await.body["subject"], "sub-alice");
    // Another client cannot use it (its aud is post-client).
    let r = gw
        .post_form(
            "/bc-authorize",
            &[("scope", "openid"), ("id_token_hint", id_token)],
            Some(BASIC_CLIENT),
        )
        .await;
    r.assert_error(400, "invalid_request");
    // Accepted for a while after exp, not forever.
    gw.clock.advance_secs(2 * 24 * 3600);
    gw.bc(&[("scope", "openid"), ("id_token_hint", id_token)])
        .await
        .assert_error(400, "invalid_request");
}

async fn bc_jwt_06_request_objects_are_not_accepted(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    gw.bc(&[
        ("scope", "openid"),
        ("login_hint", "alice"),
        ("request", "e30.e30."),
    ])
    .await
    .assert_error(400, "invalid_request");
    gw.bc(&[
        ("scope", "openid"),
        ("login_hint", "alice"),
        ("request_uri", "urn:x"),
    ])
    .await
    .assert_error(400, "invalid_request");
}

async fn bc_uc_01_02_user_code(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let code = |uc: Option<&'static str>| {
        let mut p = vec![
            ("client_id", CODE_CLIENT.0),
            ("client_secret", CODE_CLIENT.1),
            ("scope", "openid"),
            ("login_hint", "alice"),
        ];
        if let Some(uc) = uc {
            p.push(("user_code", uc));
        }
        p
    };
    gw.post_form("/bc-authorize", &code(None), None)
        .await
        .assert_error(400, "missing_user_code");
    gw.post_form("/bc-authorize", &code(Some("0000")), None)
        .await
        .assert_error(400, "invalid_user_code");
    assert_eq!(
        gw.post_form("/bc-authorize", &code(Some(ALICE_CODE)), None)
            .await
            .status,
        200
    );
    // A user without a code cannot satisfy a client that requires one.
    let p = [
        ("client_id", CODE_CLIENT.0),
        ("client_secret", CODE_CLIENT.1),
        ("scope", "openid"),
        ("login_hint", "bob"),
        ("user_code", "1"),
    ];
    gw.post_form("/bc-authorize", &p, None)
        .await
        .assert_error(400, "invalid_user_code");
}

// BC-UC-01/02: discovery says user codes are supported, so a user_code sent by a client that
// is not registered to require one is verified all the same: a wrong one reaches nobody.
async fn bc_uc_01_a_user_code_that_is_sent_is_always_verified(kind: RuntimeKind) {
    let auth = Authenticator::start().await;
    let gw = start_on(kind, |c| c.channel = auth.channel_config()).await;
    let bc = |uc: &'static str, m: &'static str| {
        [
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("user_code", uc),
            ("binding_message", m),
        ]
    };
    gw.bc(&bc("0000", "one"))
        .await
        .assert_error(400, "invalid_user_code");
    assert_eq!(gw.bc(&bc(ALICE_CODE, "two")).await.status, 200);
    assert_eq!(auth.next_call().await.body["binding_message"], "two");
    assert!(
        auth.calls.lock().await.try_recv().is_err(),
        "the wrong code notified nobody"
    );
}

async fn bc_uc_02_sec_04_wrong_user_codes_are_rate_limited_per_user(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let p = |uc: &'static str| {
        [
            ("client_id", CODE_CLIENT.0),
            ("client_secret", CODE_CLIENT.1),
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("user_code", uc),
        ]
    };
    for _ in 0..5 {
        gw.post_form("/bc-authorize", &p("0000"), None)
            .await
            .assert_error(400, "invalid_user_code");
    }
    // Locked out: even the right code is refused now.
    gw.post_form("/bc-authorize", &p(ALICE_CODE), None)
        .await
        .assert_error(403, "access_denied");
}

async fn bc_uc_03_04_binding_message_policy(kind: RuntimeKind) {
    let gw = start_on(kind, |c| c.ciba.binding_message.required = true).await;
    // Missing but required: invalid_request.
    gw.bc(&[("scope", "openid"), ("login_hint", "alice")])
        .await
        .assert_error(400, "invalid_request");
    // The CS's ordinary message works; so does the seed's kind of sentence within the limit.
    assert_eq!(
        gw.bc(&[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("binding_message", "1234")
        ])
        .await
        .status,
        200
    );
    assert_eq!(
        gw.bc(&[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("binding_message", "Grüße 名前 ✓")
        ])
        .await
        .status,
        200
    );
    for bad in [
        "this message is far too long to show",
        "bad\u{202E}bidi",
        "line\nbreak",
    ] {
        gw.bc(&[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("binding_message", bad),
        ])
        .await
        .assert_error(400, "invalid_binding_message");
    }
}

async fn bc_ack_05_store_full_refuses_new_requests_with_a_clear_error(kind: RuntimeKind) {
    let gw = start_on(kind, |c| {
        c.store = ciba_gateway::config::StoreConfig::Memory {
            capacity: 2,
            expired_grace_secs: 60,
            clients_file: None,
        }
    })
    .await;
    let a = gw.start_request().await;
    let _b = gw.start_request().await;
    let r = gw.bc(OK_PARAMS).await;
    r.assert_error(503, "temporarily_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    // Nothing live was evicted.
    gw.poll(&a).await.assert_error(400, "authorization_pending");
}

async fn gw_07_oversized_body_is_413(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let big = "x".repeat(70 * 1024);
    let r = gw
        .bc(&[("scope", "openid"), ("login_hint", "alice"), ("pad", &big)])
        .await;
    assert_eq!(r.status, 413);
}

/// A gateway with the given backchannel limits, as (requests, per_secs).
async fn with_limits(
    kind: RuntimeKind,
    per_client: Option<(u32, u32)>,
    per_user: Option<(u32, u32)>,
) -> Gateway {
    let rate = |(requests, per_secs)| ciba_gateway::config::Rate { requests, per_secs };
    start_on(kind, |c| {
        c.limits.bc_per_client = per_client.map(rate);
        c.limits.bc_per_user = per_user.map(rate);
    })
    .await
}

/// A bc-authorize as `narrow-client` (scope `openid` only) for `user`.
async fn bc_as_narrow(gw: &Gateway, user: &str) -> Reply {
    gw.post_form(
        "/bc-authorize",
        &[
            ("client_id", NARROW_CLIENT.0),
            ("client_secret", NARROW_CLIENT.1),
            ("scope", "openid"),
            ("login_hint", user),
        ],
        None,
    )
    .await
}

async fn sec_04_gw_07_per_user_limit_spans_clients_and_refills(kind: RuntimeKind) {
    let gw = with_limits(kind, None, Some((2, 60))).await;
    assert_eq!(gw.bc(OK_PARAMS).await.status, 200);
    assert_eq!(bc_as_narrow(&gw, "alice").await.status, 200);
    // A third prompt for alice, from either client, is refused before anyone is notified.
    for r in [gw.bc(OK_PARAMS).await, bc_as_narrow(&gw, "alice").await] {
        r.assert_error(403, "access_denied");
        assert_eq!(r.headers["retry-after"], "30");
        assert_eq!(
            r.json.as_object().unwrap().len(),
            2,
            "error and description only"
        );
    }
    // Addressing her by another hint is the same user.
    let r = gw
        .bc(&[("scope", "openid"), ("login_hint", "Alice@Example.com")])
        .await;
    r.assert_error(403, "access_denied");
    // Other users are unaffected; unknown users are still told so.
    assert_eq!(
        gw.bc(&[("scope", "openid"), ("login_hint", "bob")])
            .await
            .status,
        200
    );
    gw.bc(&[("scope", "openid"), ("login_hint", "nobody")])
        .await
        .assert_error(400, "unknown_user_id");
    // Refused requests cost nothing: 30 s later one more is allowed, then 30 s more.
    gw.clock.advance_secs(29);
    gw.bc(OK_PARAMS).await.assert_error(403, "access_denied");
    gw.clock.advance_secs(1);
    assert_eq!(gw.bc(OK_PARAMS).await.status, 200);
    let r = gw.bc(OK_PARAMS).await;
    r.assert_error(403, "access_denied");
    assert_eq!(r.headers["retry-after"], "30");
}

async fn gw_07_per_client_limit_counts_authenticated_requests_only(kind: RuntimeKind) {
    let gw = with_limits(kind, Some((3, 60)), None).await;
    // Failed authentication does not spend the client's budget.
    for _ in 0..5 {
        gw.post_form(
            "/bc-authorize",
            &[
                ("client_id", POST_CLIENT.0),
                ("client_secret", "wrong"),
                ("scope", "openid"),
                ("login_hint", "alice"),
            ],
            None,
        )
        .await
        .assert_error(401, "invalid_client");
    }
    // Authenticated requests do, whether or not they are valid.
    assert_eq!(gw.bc(OK_PARAMS).await.status, 200);
    gw.bc(&[("scope", "openid"), ("login_hint", "nobody")])
        .await
        .assert_error(400, "unknown_user_id");
    assert_eq!(
        gw.bc(&[("scope", "openid"), ("login_hint", "bob")])
            .await
            .status,
        200
    );
    let r = gw.bc(OK_PARAMS).await;
    r.assert_error(403, "access_denied");
    assert_eq!(r.headers["retry-after"], "20");
    // Another client has its own budget.
    assert_eq!(bc_as_narrow(&gw, "alice").await.status, 200);
    gw.clock.advance_secs(20);
    assert_eq!(gw.bc(OK_PARAMS).await.status, 200);
}

async fn sec_04_per_user_limit_is_on_by_default(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    for _ in 0..5 {
        assert_eq!(gw.bc(OK_PARAMS).await.status, 200);
    }
    let r = gw.bc(OK_PARAMS).await;
    r.assert_error(403, "access_denied");
    assert_eq!(r.headers["retry-after"], "12");
}
