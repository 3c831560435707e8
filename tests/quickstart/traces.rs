//! Issue 21 §2–3: traces from outside the process — the trace id on the log lines of a
//! request and of what it leaves behind, and (feature `otel`) one CIBA flow as one trace at
//! an OTLP/HTTP receiver, exported by the binary as the standard `OTEL_*` variables say.

use super::*;

/// The W3C specification's example caller.
const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
#[cfg(feature = "otel")]
const CALLER_SPAN: &str = "b7ad6b7169203331";

/// The quickstart file, loopback callers' traces continued.
fn trusting_loopback(port: u16) -> tempfile_path::Path {
    let text = std::fs::read_to_string(&quickstart_on(port).0).unwrap();
    tempfile_path::write(&format!(
        "{text}\ntrace:\n  accept_traceparent_from: [\"127.0.0.1/32\"]\n"
    ))
}

/// bc-authorize as `my-client` for alice, in `traceparent`'s trace if given.
async fn bc_in(http: &reqwest::Client, base: &str, traceparent: Option<&str>) -> String {
    let mut req = http.post(format!("{base}/bc-authorize")).form(&[
        ("client_id", "my-client"),
        ("client_secret", "supersecret"),
        ("scope", "openid"),
        ("login_hint", "alice"),
        ("user_code", "abc123"),
    ]);
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let r = reply(req.send().await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["auth_req_id"].as_str().unwrap().to_owned()
}

/// The `trace_id=` a text log line names (the innermost span's).
fn trace_id_of(line: &str) -> &str {
    let at = line
        .rfind("trace_id=")
        .unwrap_or_else(|| panic!("no trace id: {line}"));
    &line[at + "trace_id=".len()..][..32]
}

/// Every line of a request, and of the work it leaves behind, names the request's trace: the
/// caller's when it may choose it. The user's decision on the page (a browser, whose trace is
/// never continued) is logged in the flow's trace, and so is the poll's redemption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_carry_the_trace_id_of_their_flow() {
    let port = free_port();
    let cfg = trusting_loopback(port);
    let (child, rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let (base, http) = (format!("http://127.0.0.1:{port}"), http_client());
    let id = bc_in(&http, &base, Some(CALLER)).await;
    let accepted = wait_line(&rx, |l| l.contains("request_accepted"));
    assert_eq!(trace_id_of(&accepted), CALLER_TRACE, "{accepted}");
    approve_next_link(&http, &rx).await;
    let decided = wait_line(&rx, |l| l.contains("request_decided"));
    assert_eq!(trace_id_of(&decided), CALLER_TRACE, "{decided}");
    assert_eq!(redeem(&http, &base, &id).await.status, 200);
    // A caller without a traceparent: a trace of its own.
    bc_in(&http, &base, None).await;
    let other = wait_line(&rx, |l| l.contains("request_accepted"));
    let other_trace = trace_id_of(&other).to_owned();
    assert_ne!(other_trace, CALLER_TRACE);
    assert!(
        other_trace.bytes().all(|b| b.is_ascii_hexdigit()),
        "{other}"
    );
    let lines = stop(child, reader);
    for l in &lines {
        assert!(!l.contains(&id), "an auth_req_id in the log: {l}");
    }
}

/// Feature `otel`: the binary, given `OTEL_EXPORTER_OTLP_ENDPOINT` (everything else at the
/// SDK's defaults: OTLP/HTTP protobuf, batches), exports the flow's spans; the backchannel
/// request is the caller's span's child, the decision and the ping are in the same trace under
/// it, and nothing exported carries the `auth_req_id` or a secret. The rest waits in the batch
/// until SIGTERM flushes it.
#[cfg(feature = "otel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flow_is_one_exported_trace() {
    let collector = common::otlp::Receiver::start().await;
    let (port, ping) = (free_port(), free_port());
    let receiver = Receiver::start_on(
        tokio::net::TcpListener::bind(("127.0.0.1", ping))
            .await
            .unwrap(),
        &[204],
        false,
    )
    .await;
    let text =
        std::fs::read_to_string(&quickstart_with_endpoints(port, ping, free_port()).0).unwrap();
    let cfg = tempfile_path::write(&format!(
        "{text}\ntrace:\n  accept_traceparent_from: [\"127.0.0.1/32\"]\n"
    ));
    let (child, rx, reader) = serve_with_env(
        &cfg,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)],
    );
    let child = KillOnDrop(child);
    let (base, http) = (format!("http://127.0.0.1:{port}"), http_client());
    let form = [
        ("client_id", "ping-client"),
        ("client_secret", "supersecret"),
        ("scope", "openid"),
        ("login_hint", "alice"),
        ("user_code", "abc123"),
        (
            "client_notification_token",
            "8d67dc78-7faa-4d41-aabd-67707b374255",
        ),
    ];
    let r = reply(
        http.post(format!("{base}/bc-authorize"))
            .header("traceparent", CALLER)
            .form(&form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    approve_next_link(&http, &rx).await;
    let pinged = receiver.next_call().await;
    let ping_trace = pinged.traceparent.expect("the ping names its trace");
    assert_eq!(ping_trace.split('-').nth(1), Some(CALLER_TRACE));
    stop(child, reader);

    let spans = collector.spans();
    let flow: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == CALLER_TRACE)
        .collect();
    let bc = flow
        .iter()
        .find(|s| {
            s.name == "ciba.request" && s.attributes.contains(&"ciba.route=backchannel".into())
        })
        .unwrap_or_else(|| panic!("the backchannel request's span in {spans:#?}"));
    assert_eq!(
        bc.parent_span_id, CALLER_SPAN,
        "a child of the caller's span"
    );
    assert_eq!(bc.kind, 2, "a server span");
    assert!(
        bc.attributes
            .contains(&"http.response.status_code=200".into())
    );
    assert_eq!(bc.service, "ciba-gateway");
    let decided = flow
        .iter()
        .find(|s| s.name == "decided")
        .unwrap_or_else(|| panic!("the decision's span in {spans:#?}"));
    assert_eq!(
        decided.parent_span_id, bc.span_id,
        "under the request that asked"
    );
    let notify = flow
        .iter()
        .find(|s| s.name == "notify_client")
        .unwrap_or_else(|| panic!("the ping's span in {spans:#?}"));
    assert_eq!(notify.parent_span_id, bc.span_id);
    // The ping named the span that sent it: the one exported.
    assert_eq!(ping_trace.split('-').nth(2), Some(notify.span_id.as_str()));
    for body in collector.bodies.lock().unwrap().iter() {
        let body = String::from_utf8_lossy(body);
        for secret in [id.as_str(), "supersecret", "abc123", "8d67dc78-7faa"] {
            assert!(!body.contains(secret), "{secret} exported");
        }
    }
}

/// `log.format: json`: each line of a request starts with its trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_trace_id_too() {
    let port = free_port();
    let text = std::fs::read_to_string(&trusting_loopback(port).0).unwrap();
    let cfg = tempfile_path::write(&format!("{text}\nlog:\n  format: json\n"));
    let (child, rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let (base, http) = (format!("http://127.0.0.1:{port}"), http_client());
    bc_in(&http, &base, Some(CALLER)).await;
    let accepted = wait_line(&rx, |l| l.contains("request_accepted"));
    let line: serde_json::Value = serde_json::from_str(&accepted).unwrap();
    assert_eq!(line["trace_id"], CALLER_TRACE, "{accepted}");
    assert_eq!(line["fields"]["event"], "request_accepted", "{accepted}");
    stop(child, reader);
}

/// Feature `otel`, the pingora runtime in front of a provider: a request it forwards is a
/// server span in its caller's trace, and the `traceparent` the provider receives names that
/// very span.
#[cfg(feature = "otel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_is_one_exported_span_on_pingora() {
    let collector = common::otlp::Receiver::start().await;
    let echo = common::upstream::echo_upstream().await;
    let port = free_port();
    let text = std::fs::read_to_string(&quickstart_on(port).0).unwrap();
    let cfg = tempfile_path::write(&format!(
        "{text}\ntrace:\n  accept_traceparent_from: [\"127.0.0.1/32\"]\nruntime: pingora\nupstream:\n  url: \"http://127.0.0.1:{echo}\"\n"
    ));
    let (child, _rx, reader) = serve_with_env(
        &cfg,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)],
    );
    let child = KillOnDrop(child);
    let http = http_client();
    // pingora says it listens before it does: wait for an answer.
    let url = format!("http://127.0.0.1:{port}/some/provider/page");
    let r = common::eventually_some("the gateway answers", || async {
        let resp = http
            .get(&url)
            .header("traceparent", CALLER)
            .send()
            .await
            .ok()?;
        Some(reply(resp).await)
    })
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let sent = r.json["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[1], CALLER_TRACE, "{sent}");
    stop(child, reader);

    let spans = collector.spans();
    let fwd = spans
        .iter()
        .find(|s| s.span_id == parts[2])
        .unwrap_or_else(|| panic!("the span {sent} names, in {spans:#?}"));
    assert_eq!(fwd.name, "ciba.request");
    assert_eq!(fwd.trace_id, CALLER_TRACE);
    assert_eq!(fwd.parent_span_id, CALLER_SPAN);
    assert!(
        fwd.attributes.contains(&"ciba.route=forwarded".into()),
        "{fwd:?}"
    );
    assert!(
        fwd.attributes
            .contains(&"http.response.status_code=200".into()),
        "{fwd:?}"
    );
}
