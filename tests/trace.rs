//! Traces (issue 21 §2, W3C Trace Context): one CIBA flow is one trace, from the client's
//! backchannel request through the authenticator's call and the client's ping, and a request
//! the gateway forwards goes on in its caller's trace at the provider — but only a caller in
//! `trace.accept_traceparent_from` chooses the trace. On both runtimes, in front of a real
//! HTTP upstream that echoes what it received, with a real authenticator and a real HTTPS ping
//! endpoint (and, in the replicas pass, three gateways sharing a real Redis: the ping may be
//! sent by another replica than the one that accepted the request).

use ciba_test_support as common;

use ciba_gateway::config::{Config, DeliveryMode, RuntimeKind};
use common::receiver::Receiver;
use common::*;
use tokio::net::TcpListener;

both_runtimes!(
    a_trusted_callers_trace_reaches_the_authenticator_the_ping_and_the_provider,
    an_untrusted_callers_trace_is_not_continued_but_the_flow_is_still_one_trace,
);

/// The W3C specification's example caller.
const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";
const NOTIFICATION_TOKEN: &str = "8d67dc78-7faa-4d41-aabd-67707b374255";

/// The trace id and span id a `traceparent` names (after checking its shape).
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    assert_eq!(parts[1].len(), 32, "{traceparent}");
    assert_eq!(parts[2].len(), 16, "{traceparent}");
    assert!(
        traceparent
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{traceparent}"
    );
    (parts[1].to_owned(), parts[2].to_owned())
}

struct Setup {
    gw: Gateway,
    auth: Authenticator,
    ping: Receiver,
}

/// `post-client` as a ping client, the HTTP channel, an echoing upstream; `trusted`: the
/// loopback callers' traces are continued.
async fn setup(kind: RuntimeKind, trusted: bool) -> Setup {
    let ping = Receiver::start(&[204]).await;
    let auth = Authenticator::start().await;
    let (endpoint, ca) = (ping.url.parse().unwrap(), ping.ca_file.clone());
    let channel = auth.channel_config();
    let edit = move |c: &mut Config| {
        c.channel = channel;
        let n = &mut c.ciba.client_notifications;
        n.ca_file = Some(ca.into());
        n.outbound.allow_private_networks = true;
        let client = &mut c.clients[0];
        client.backchannel_token_delivery_mode = DeliveryMode::Ping;
        client.backchannel_client_notification_endpoint = Some(endpoint);
        if trusted {
            c.trace.accept_traceparent_from = vec!["127.0.0.0/8".parse().unwrap()];
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo = upstream::echo_upstream().await;
    let gw = upstream::gateway_in_front(kind, listener, echo, edit).await;
    Setup { gw, auth, ping }
}

/// The backchannel request, sent with the caller's trace context.
async fn bc_in_callers_trace(gw: &Gateway) -> Reply {
    let resp = gw
        .http
        .post(format!("{}/bc-authorize", gw.url))
        .header("traceparent", CALLER)
        .header("tracestate", "caller=1")
        .form(&[
            ("client_id", POST_CLIENT.0),
            ("client_secret", POST_CLIENT.1),
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("client_notification_token", NOTIFICATION_TOKEN),
        ])
        .send()
        .await
        .unwrap();
    reply(resp).await
}

/// What the upstream received for a request forwarded in the caller's trace context:
/// its `traceparent` and `tracestate`.
async fn forwarded_in_callers_trace(gw: &Gateway) -> (String, Option<String>) {
    let resp = gw
        .http
        .get(format!("{}/some/provider/page", gw.url))
        .header("traceparent", CALLER)
        .header("tracestate", "caller=1")
        .send()
        .await
        .unwrap();
    let r = reply(resp).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let h = &r.json["headers"];
    (
        h["traceparent"].as_str().expect("a traceparent").to_owned(),
        h["tracestate"].as_str().map(str::to_owned),
    )
}

/// The flow: accepted, the authenticator called, approved by it, the client pinged. Returns
/// the `traceparent` of the authenticator's call and of the ping.
async fn flow(s: &Setup) -> (String, String) {
    let r = bc_in_callers_trace(&s.gw).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let call = s.auth.next_call().await;
    assert_eq!(callback(&s.gw, &call.bearer, "SUCCEED").await.status, 200);
    let ping = s.ping.next_call().await;
    assert_eq!(ping.bearer, NOTIFICATION_TOKEN);
    (
        call.traceparent
            .expect("the authenticator's call names its trace"),
        ping.traceparent.expect("the ping names its trace"),
    )
}

async fn a_trusted_callers_trace_reaches_the_authenticator_the_ping_and_the_provider(
    kind: RuntimeKind,
) {
    let s = setup(kind, true).await;
    let (authn, ping) = flow(&s).await;
    let (authn_trace, authn_span) = ids(&authn);
    let (ping_trace, ping_span) = ids(&ping);
    assert_eq!(
        authn_trace, CALLER_TRACE,
        "the authenticator is in the caller's trace"
    );
    assert_eq!(
        ping_trace, CALLER_TRACE,
        "so is the ping, after the approval"
    );
    // Each call names the gateway's own span, not the caller's.
    assert_ne!(authn_span, CALLER_SPAN);
    assert_ne!(ping_span, CALLER_SPAN);
    assert_ne!(ping_span, authn_span);
    // A forwarded request: in the caller's trace at the provider, its tracestate with it.
    let (tp, state) = forwarded_in_callers_trace(&s.gw).await;
    let (fwd_trace, fwd_span) = ids(&tp);
    assert_eq!(fwd_trace, CALLER_TRACE);
    assert_ne!(fwd_span, CALLER_SPAN);
    assert_eq!(state.as_deref(), Some("caller=1"));
}

async fn an_untrusted_callers_trace_is_not_continued_but_the_flow_is_still_one_trace(
    kind: RuntimeKind,
) {
    let s = setup(kind, false).await;
    let (authn, ping) = flow(&s).await;
    let (authn_trace, _) = ids(&authn);
    let (ping_trace, _) = ids(&ping);
    // A trace of the gateway's own: the caller cannot choose it...
    assert_ne!(authn_trace, CALLER_TRACE);
    // ...and the work the request left behind stays in it.
    assert_eq!(ping_trace, authn_trace);
    // Forwarded: a new trace at the provider, without the caller's tracestate.
    let (tp, state) = forwarded_in_callers_trace(&s.gw).await;
    let (fwd_trace, _) = ids(&tp);
    assert_ne!(fwd_trace, CALLER_TRACE);
    assert_ne!(fwd_trace, authn_trace);
    assert_eq!(state, None);
}
