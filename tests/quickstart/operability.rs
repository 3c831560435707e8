//! Operating the binary (issue 21): the admin listener's metrics and health, measured from
//! outside the process over real sockets; the log's one limit under floods that a client or a
//! failing dependency can cause; log lines without colour off a terminal, and as JSON.

use super::*;

/// The quickstart file on `port`, with `extra` YAML appended (later keys of the same name are
/// refused by the loader, so `extra` only adds sections the file does not have).
fn quickstart_plus(port: u16, extra: &str) -> tempfile_path::Path {
    let text = std::fs::read_to_string(&quickstart_on(port).0).unwrap();
    tempfile_path::write(&format!("{text}\n{extra}\n"))
}

/// The admin listener serves what an operator scrapes: one CIBA flow shows up per endpoint
/// and outcome, with the held poll while it waits; no label carries the `auth_req_id`, a
/// secret or the user; the public port serves none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_shows_a_flow_and_the_public_port_does_not() {
    let (port, admin) = (free_port(), free_port());
    let cfg = quickstart_plus(port, &format!("admin: {{ listen: \"127.0.0.1:{admin}\" }}"));
    let (child, rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let (base, metrics) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{admin}/metrics"),
    );
    let http = http_client();
    let id = bc_for_alice(&http, &base).await;
    let poll = {
        let (http, base, id) = (http.clone(), base.clone(), id.clone());
        tokio::spawn(async move { redeem(&http, &base, &id).await })
    };
    // The quickstart long-polls: the scrape sees the poll held and the request pending.
    ciba_test_support::eventually("the held poll is in the metrics", || async {
        let page = get(&http, &metrics).await.1;
        sample(&page, "ciba_held_polls") == 1.0 && sample(&page, "ciba_pending_requests") == 1.0
    })
    .await;
    approve_next_link(&http, &rx).await;
    let tokens = poll.await.unwrap();
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    // A wrong secret, for an error outcome.
    let bad = [
        ("client_id", "my-client"),
        ("client_secret", "wrong"),
        ("scope", "openid"),
        ("login_hint", "alice"),
    ];
    let bad = post_form(&http, &format!("{base}/bc-authorize"), &bad).await;
    assert_eq!(bad.status, 401, "{}", bad.json);

    let (status, page) = get(&http, &metrics).await;
    assert_eq!(status, 200);
    for (series, want) in [
        (
            r#"ciba_requests_total{endpoint="backchannel",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"ciba_requests_total{endpoint="backchannel",outcome="invalid_client"}"#,
            1.0,
        ),
        (r#"ciba_requests_total{endpoint="token",outcome="ok"}"#, 1.0),
        (
            r#"ciba_requests_total{endpoint="approval",outcome="ok"}"#,
            2.0,
        ),
        (
            r#"ciba_notifications_total{kind="user",result="delivered"}"#,
            1.0,
        ),
        (
            r#"ciba_request_duration_seconds_count{endpoint="token"}"#,
            1.0,
        ),
        (r#"ciba_tokens_issued_total{grant="ciba"}"#, 1.0),
        ("ciba_held_polls", 0.0),
        // Consumed when the tokens were issued (TOK-02: single use).
        ("ciba_pending_requests", 0.0),
    ] {
        assert_eq!(sample(&page, series), want, "{series} in:\n{page}");
    }
    // Nor the client id: it labels metrics only when `admin.client_id_labels` asks.
    for secret in [id.as_str(), "supersecret", "alice", "abc123", "my-client"] {
        assert!(!page.contains(secret), "{secret} in the metrics");
    }
    // Readiness and liveness on the admin listener; nothing of it on the public port.
    for path in ["healthz", "readyz", "livez"] {
        let (status, _) = get(&http, &format!("http://127.0.0.1:{admin}/{path}")).await;
        assert_eq!(status, 200, "{path}");
    }
    assert_eq!(get(&http, &format!("{base}/metrics")).await.0, 404);

    // Off a terminal, no colour codes (the harness sets no NO_COLOR).
    let lines = stop(child, reader);
    assert!(lines.iter().all(|l| !l.contains('\x1b')), "{lines:?}");
}

/// The audit trail (issue 21 §4): one JSON line per change of state of a request — accepted
/// (client, user, scope, binding message), decided on the page, tokens issued — all under the
/// audit target, joined by one request reference that is not the `auth_req_id`; no line of the
/// whole log carries the `auth_req_id`, the secret, the user code or a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_follows_a_request_without_its_secrets() {
    let port = free_port();
    let cfg = quickstart_plus(port, "log: { format: json }");
    let (child, rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = http_client();
    let form = [
        ("client_id", "my-client"),
        ("client_secret", "supersecret"),
        ("scope", "openid email"),
        ("login_hint", "alice"),
        ("user_code", "abc123"),
        ("binding_message", "W4SCT"),
    ];
    let r = post_form(&http, &format!("{base}/bc-authorize"), &form).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    approve_next_link(&http, &rx).await;
    let tokens = redeem(&http, &base, &id).await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    let access_token = tokens.json["access_token"].as_str().unwrap().to_owned();

    let lines = stop(child, reader);
    for secret in [id.as_str(), "supersecret", "abc123", access_token.as_str()] {
        assert!(
            lines.iter().all(|l| !l.contains(secret)),
            "a secret in the log"
        );
    }
    let audit: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["target"] == "ciba_gateway::audit")
        .map(|v| v["fields"].clone())
        .collect();
    let events: Vec<&str> = audit.iter().filter_map(|f| f["event"].as_str()).collect();
    assert_eq!(
        events,
        [
            "request_accepted",
            "user_notified",
            "request_decided",
            "tokens_issued"
        ],
        "{audit:#?}"
    );
    let request = audit[0]["request"].as_str().unwrap();
    assert_eq!(request.len(), 16);
    assert!(audit.iter().all(|f| f["request"] == request), "{audit:#?}");
    let accepted = &audit[0];
    assert_eq!(accepted["client_id"], "my-client");
    assert_eq!(accepted["subject"], "248289761001");
    assert_eq!(accepted["scope"], "openid email");
    assert_eq!(accepted["binding_message"], "W4SCT");
    assert_eq!(audit[2]["decision"], "approved");
    assert_eq!(audit[2]["via"], "page");
    assert_eq!(audit[2]["subject"], "248289761001");
    assert_eq!(audit[3]["grant"], "ciba");
    assert_eq!(audit[3]["source"], "gateway");
}

/// The `log` channel's approval link is the user's notification: the log's limit never holds
/// it back, however low it is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_channels_links_are_never_held_back() {
    let port = free_port();
    let cfg = quickstart_plus(
        port,
        "log: { max_lines_per_sec: 5 }\nlimits: { bc_per_client: null, bc_per_user: null }",
    );
    let (child, _rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let http = http_client();
    let form = [
        ("client_id", "my-client"),
        ("client_secret", "supersecret"),
        ("scope", "openid"),
        ("login_hint", "bob"),
    ];
    for _ in 0..50 {
        let r = post_form(
            &http,
            &format!("http://127.0.0.1:{port}/bc-authorize"),
            &form,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    let lines = stop(child, reader);
    let links = lines.iter().filter(|l| l.contains("/approve/")).count();
    assert_eq!(links, 50, "{}", lines.join("\n"));
}

/// With Redis gone, every request for an approval page fails at the store: unauthenticated,
/// as many as anyone sends. The log writes a burst, then one line a second for that failure,
/// and then says how many it held back; the metrics count every failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_cannot_flood_the_log() {
    let mut redis = ciba_test_support::redis::RedisServer::start();
    let (port, admin) = (free_port(), free_port());
    let cfg = quickstart_plus(
        port,
        &format!(
            "store: {{ type: redis, url: \"{}\", timeout_ms: 200 }}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\nlog: {{ format: json }}",
            redis.url()
        ),
    );
    let (child, rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let http = http_client();
    // While Redis runs, its operations are timed.
    bc_for_alice(&http, &format!("http://127.0.0.1:{port}")).await;
    let (_, page) = get(&http, &format!("http://127.0.0.1:{admin}/metrics")).await;
    assert!(
        sample(
            &page,
            "ciba_store_duration_seconds_count{backend=\"redis\"}"
        ) >= 1.0,
        "{page}"
    );
    redis.kill();
    let link = format!("http://127.0.0.1:{port}/approve/{}", "A".repeat(43));
    let started = std::time::Instant::now();
    let mut failed = 0;
    for _ in 0..50 {
        let batch: Vec<_> = (0..40).map(|_| http.get(&link).send()).collect();
        for r in futures_util::future::join_all(batch).await {
            if r.unwrap().status() == 503 {
                failed += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs() + 1;
    assert_eq!(failed, 2000);
    let report = wait_line(&rx, |l| l.contains("log lines held back"));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(
        report["fields"]["held_back"].as_u64().unwrap() > 1000,
        "{report}"
    );
    let (_, page) = get(&http, &format!("http://127.0.0.1:{admin}/metrics")).await;
    assert!(
        sample(&page, "ciba_log_lines_held_back_total") > 1000.0,
        "{page}"
    );
    assert_eq!(
        get(&http, &format!("http://127.0.0.1:{admin}/healthz"))
            .await
            .0,
        503
    );

    let lines = stop(child, reader);
    let store = lines
        .iter()
        .filter(|l| l.contains("the store failed"))
        .count() as u64;
    let limit = u64::from(ciba_gateway::log_limit::REPEAT_BURST)
        + secs * u64::from(ciba_gateway::log_limit::REPEAT_PER_SEC);
    assert!(
        (1..=limit).contains(&store),
        "{store} lines for {failed} failures in {secs} s"
    );
    // JSON lines, every one.
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string(), "{l}");
    }
}

/// A credentialed flood of refused requests (hostile traffic): thousands of backchannel
/// requests over the client's rate limit write a burst of lines, then one a second — not one
/// each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_flood_is_held_to_the_log_limit() {
    let port = free_port();
    let cfg = quickstart_plus(
        port,
        "limits: { bc_per_client: { requests: 1, per_secs: 3600 } }",
    );
    let (child, _rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let http = http_client();
    let url = format!("http://127.0.0.1:{port}/bc-authorize");
    let form = [
        ("client_id", "my-client"),
        ("client_secret", "supersecret"),
        ("scope", "openid"),
        ("login_hint", "bob"),
    ];
    let started = std::time::Instant::now();
    let mut refused = 0;
    for _ in 0..100 {
        let batch: Vec<_> = (0..20)
            .map(|_| http.post(&url).form(&form).send())
            .collect();
        for r in futures_util::future::join_all(batch).await {
            if r.unwrap().status() == 403 {
                refused += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs() + 1;
    assert!(refused >= 1990, "{refused} refused");
    let lines = stop(child, reader);
    let rate = lines.iter().filter(|l| l.contains("rate limit")).count() as u64;
    let limit = u64::from(ciba_gateway::log_limit::REPEAT_BURST)
        + secs * u64::from(ciba_gateway::log_limit::REPEAT_PER_SEC);
    assert!(
        (1..=limit).contains(&rate),
        "{rate} rate-limit lines for {refused} refusals in {secs} s:\n{}",
        lines.join("\n")
    );
}

/// Held polls give way when their connections are needed (issue 21 §6): with
/// `server.max_connections: 2`, one held poll and one client keeping its connection busy (a
/// body trickling in) fill the gateway; a third client is still served, because the held poll
/// is answered `authorization_pending` (TOK-ERR-01: what the end of its hold would say) and its
/// connection then closed as a quiet one. The real binary on both runtimes (pingora in front
/// of an echo server: it needs an upstream), measured from outside.
async fn held_polls_give_way_when_their_connections_are_needed(pingora: bool) {
    let (port, admin) = (free_port(), free_port());
    let mut extra = format!(
        "admin: {{ listen: \"127.0.0.1:{admin}\" }}\nserver: {{ max_connections: 2 }}\n\
         limits: {{ body_read_timeout_secs: 600 }}\n"
    );
    if pingora {
        let echo = common::upstream::echo_upstream().await;
        extra += &format!("runtime: pingora\nupstream: {{ url: \"http://127.0.0.1:{echo}\" }}\n");
    }
    let text = std::fs::read_to_string(&quickstart_on(port).0)
        .unwrap()
        .replace(
            "long_poll_secs: 25",
            "long_poll_secs: 120\n  max_held_polls: 1",
        );
    let cfg = tempfile_path::write(&format!("{text}\n{extra}"));
    let (child, _rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let (base, metrics) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{admin}/metrics"),
    );
    let admin_http = http_client();
    // Kept to the end, so that its idle connection has to be closed by the gateway.
    let setup = http_client();
    ciba_test_support::eventually("the gateway answers", || async {
        setup.get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await;
    let id = bc_for_alice(&setup, &base).await;
    // Patience well short of the 120 s hold: without giving way, these fail.
    let patient = || {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    };
    let poller = patient();
    let poll = {
        let (http, base) = (poller.clone(), base.clone());
        tokio::spawn(async move { redeem(&http, &base, &id).await })
    };
    ciba_test_support::eventually("the poll is held", || async {
        sample(&get(&admin_http, &metrics).await.1, "ciba_held_polls") == 1.0
    })
    .await;
    let mut busy = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        busy.write_all(
            b"POST /bc-authorize HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n",
        )
        .await
        .unwrap();
        while busy.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Kept open to the end: on pingora, which serves it at once over the cap, the pressure
    // lasts while it is open (a connection that left at once would need no room).
    let third_client = patient();
    let third = third_client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("a third client is served");
    assert_eq!(third.status(), 200);
    poll.await
        .unwrap()
        .assert_error(400, "authorization_pending");
    let page = get(&admin_http, &metrics).await.1;
    assert!(
        sample(&page, "ciba_held_polls_reclaimed_total") >= 1.0,
        "{page}"
    );
    assert!(
        sample(&page, "ciba_connections_closed_total{reason=\"room\"}") >= 1.0,
        "{page}"
    );
    // The busy connection is open still.
    assert!(sample(&page, "ciba_connections_open") >= 1.0, "{page}");
    if pingora {
        // The provider's discovery, read as the gateway started, was timed.
        assert!(
            sample(&page, "ciba_upstream_duration_seconds_count") >= 1.0,
            "{page}"
        );
    }
    trickle.abort();
    drop((setup, poller, third_client));
    stop(child, reader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_polls_give_way_when_their_connections_are_needed_tower() {
    held_polls_give_way_when_their_connections_are_needed(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_polls_give_way_when_their_connections_are_needed_pingora() {
    held_polls_give_way_when_their_connections_are_needed(true).await
}

/// The quickstart file on `port` with the audit trail also sent to `url`, signed with the
/// base64 key `key`, retried after `retry_ms`.
fn with_audit_webhook(port: u16, url: &str, key: &str, retry_ms: u64) -> tempfile_path::Path {
    let cfg = quickstart_plus(port, "");
    let secret = cfg.dir().join("audit.whsec");
    std::fs::write(&secret, format!("whsec_{key}\n")).unwrap();
    let mut text = std::fs::read_to_string(&cfg.0).unwrap();
    text += &format!(
        "audit: {{ webhook: {{ url: \"{url}\", secret: \"file:{}\", retry_initial_ms: {retry_ms}, \
         outbound: {{ allow_private_networks: true }} }} }}\n",
        secret.display()
    );
    std::fs::write(&cfg.0, text).unwrap();
    cfg
}

/// The event names in the batches `hook` answered with success (it answers 503 first).
fn delivered_events(hook: &common::webhook::Receiver) -> Vec<serde_json::Value> {
    hook.got
        .lock()
        .unwrap()
        .iter()
        .skip(1)
        .flat_map(|r| {
            let batch: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            batch["events"].as_array().unwrap().clone()
        })
        .collect()
}

/// Nothing of the audit trail is lost to a shutdown: stopped with SIGTERM right after a flow,
/// while the webhook's first answer (503) has the sender waiting a second to try again, the
/// gateway sends what it has before it exits (within `server.shutdown_grace_secs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_webhook_is_flushed_at_shutdown() {
    let hook = common::webhook::receiver(vec![503, 204]).await;
    let port = free_port();
    let cfg = with_audit_webhook(
        port,
        &hook.url,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAAAAAAAAAA=",
        1000,
    );
    let (child, rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let (base, http) = (format!("http://127.0.0.1:{port}"), http_client());
    let id = bc_for_alice(&http, &base).await;
    approve_next_link(&http, &rx).await;
    assert_eq!(redeem(&http, &base, &id).await.status, 200);
    drop(http);
    stop(child, reader);
    let names: Vec<String> = delivered_events(&hook)
        .iter()
        .filter_map(|e| e["event"].as_str().map(str::to_owned))
        .collect();
    for event in ["request_accepted", "request_decided", "tokens_issued"] {
        assert!(names.iter().any(|n| n == event), "{event} lost: {names:?}");
    }
}

/// Issue 21 §4: the audit trail also goes to a webhook, in batches signed as the notifier's
/// events are (Standard Webhooks), retried when the webhook fails; every state change of one
/// flow arrives under one request reference, and no body carries the `auth_req_id`, a secret,
/// the user code or a token. A real HTTP receiver that answers 503 first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_reaches_a_signed_webhook_that_failed_at_first() {
    use base64::Engine as _;
    const KEY: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAAAAAAAAAA=";
    let hook = common::webhook::receiver(vec![503, 204]).await;
    let port = free_port();
    let cfg = with_audit_webhook(port, &hook.url, KEY, 20);
    let (child, rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = http_client();
    let id = bc_for_alice(&http, &base).await;
    approve_next_link(&http, &rx).await;
    let tokens = redeem(&http, &base, &id).await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    let access_token = tokens.json["access_token"].as_str().unwrap().to_owned();

    let wanted = [
        "request_accepted",
        "user_notified",
        "request_decided",
        "tokens_issued",
    ];
    let events = ciba_test_support::eventually_some("the flow's events are delivered", || async {
        let events = delivered_events(&hook);
        let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
        wanted.iter().all(|w| names.contains(w)).then_some(events)
    })
    .await;
    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got[0].body, got[1].body, "the failed batch is sent again");
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap();
    for r in &got {
        let header = |h: &str| r.headers[h].to_str().unwrap().to_owned();
        let ts: u64 = header("webhook-timestamp").parse().unwrap();
        assert_eq!(
            header("webhook-signature"),
            ciba_gateway::webhook_signature(&key, &header("webhook-id"), ts, r.body.as_bytes()),
            "the receiver can verify it"
        );
        for secret in [id.as_str(), "supersecret", "abc123", access_token.as_str()] {
            assert!(!r.body.contains(secret), "a secret in {}", r.body);
        }
    }
    let reference = events[0]["request"].as_str().unwrap();
    for e in events
        .iter()
        .filter(|e| wanted.contains(&e["event"].as_str().unwrap()))
    {
        assert_eq!(e["request"], reference, "{e}");
        assert!(e["time"].as_u64().is_some(), "{e}");
    }
    stop(child, reader);
}

/// Issue 21 §1: client ids in the metrics only when the operator asks
/// (`admin.client_id_labels`): then one flow counts its events under its client. (Without it
/// the page has no client id: `the_admin_listener_shows_a_flow_and_the_public_port_does_not`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_label_the_metrics_only_when_enabled() {
    let (port, admin) = (free_port(), free_port());
    let cfg = quickstart_plus(
        port,
        &format!("admin: {{ listen: \"127.0.0.1:{admin}\", client_id_labels: true }}"),
    );
    let (child, rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let (base, http) = (format!("http://127.0.0.1:{port}"), http_client());
    let id = bc_for_alice(&http, &base).await;
    approve_next_link(&http, &rx).await;
    assert_eq!(redeem(&http, &base, &id).await.status, 200);
    let page = get(&http, &format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .1;
    for event in ["request_accepted", "request_approved", "tokens_issued"] {
        let series =
            format!("ciba_client_events_total{{client_id=\"my-client\",event=\"{event}\"}}");
        assert_eq!(sample(&page, &series), 1.0, "{series} in:\n{page}");
    }
    assert!(!page.contains(&id), "no auth_req_id in the page");
    stop(child, reader);
}
