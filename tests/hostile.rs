//! Hostile traffic on real sockets: idle and silent connections, slow headers, slow bodies and a
//! flood of connections above the cap. In every case a fresh client still gets `/healthz` and a
//! real CIBA request served. Both runtimes close idle and silent connections, refuse slow
//! bodies and make room above the cap; slow headers are cut by hyper on tower and by the idle
//! watchdog on pingora (whose own reads are timed one by one). Against replicas
//! (`CIBA_TEST_REPLICAS`), the connection cap is each replica's.

use ciba_test_support as common;

use std::time::Duration;

use ciba_gateway::Config;
use ciba_gateway::config::RuntimeKind;
use common::upstream::{echo_upstream, gateway_in_front};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Short limits, so that the tests see them act.
fn tight(c: &mut Config) {
    c.server.header_read_timeout_secs = 1;
    c.server.idle_timeout_secs = 1;
    c.limits.body_read_timeout_secs = 1;
}

fn addr(gw: &Gateway) -> String {
    gw.url.trim_start_matches("http://").to_owned()
}

/// Whether the server closes `s` within `within` (EOF or reset), reading whatever it sends.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Result<Vec<u8>, &'static str> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .map(|()| got)
    .map_err(|_| "still open")
}

/// A fresh client is served: the health check and a real backchannel request.
async fn still_served(gw: &Gateway) {
    let fresh = http_client();
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        fresh.get(format!("{}/healthz", gw.url)).send(),
    )
    .await
    .expect("/healthz answered")
    .unwrap();
    assert_eq!(health.status(), 200);
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        fresh
            .post(format!("{}/bc-authorize", gw.url))
            .form(&[
                ("client_id", POST_CLIENT.0),
                ("client_secret", POST_CLIENT.1),
                ("scope", "openid"),
                ("login_hint", "bob"),
            ])
            .send(),
    )
    .await
    .expect("bc-authorize answered")
    .unwrap();
    assert_eq!(r.status(), 200);
}

both_runtimes!(
    idle_keep_alive_connections_are_closed,
    slow_bodies_get_408,
    silent_connections_are_closed,
    a_flood_of_silent_connections_above_the_cap_leaves_room_for_others,
    slow_headers_are_cut_off,
    slow_pass_through_bodies_are_cut_off,
    trickled_pass_through_bodies_are_cut_off,
);

async fn idle_keep_alive_connections_are_closed(kind: RuntimeKind) {
    let gw = start_on(kind, tight).await;
    let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("the idle keep-alive connection is closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    still_served(&gw).await;
}

async fn slow_bodies_get_408(kind: RuntimeKind) {
    let gw = start_on(kind, tight).await;
    let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(
        b"POST /bc-authorize HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nscope=openid",
    )
    .await
    .unwrap();
    still_served(&gw).await;
    let got = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("the slow body's connection ends");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("\"error\":\"invalid_request\""), "{got}");
}

async fn silent_connections_are_closed(kind: RuntimeKind) {
    let gw = start_on(kind, tight).await;
    let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
    closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("a connection that never sends a request is closed");
}

async fn slow_headers_are_cut_off(kind: RuntimeKind) {
    let gw = start_on(kind, tight).await;
    let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One header byte every 100 ms: bytes keep moving, the headers never finish.
    let trickle = async {
        for _ in 0..200 {
            if s.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let (cut, ()) = tokio::join!(trickle, still_served(&gw));
    assert!(cut, "the server never closed the slow-header connection");
}

/// A pass-through body trickled in chunks, each in time for the per-read timeout, is still cut
/// off by the total body deadline.
async fn trickled_pass_through_bodies_are_cut_off(kind: RuntimeKind) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = gateway_in_front(kind, listener, echo_upstream().await, tight).await;
    let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(b"POST /anything HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..40 {
        if s.write_all(b"1\r\na\r\n").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("the trickled body is cut off");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
}

async fn slow_pass_through_bodies_are_cut_off(kind: RuntimeKind) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = gateway_in_front(kind, listener, echo_upstream().await, tight).await;
    let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(b"POST /anything HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .await
        .unwrap();
    let got = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("the slow pass-through body is cut off");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
}

async fn a_flood_of_silent_connections_above_the_cap_leaves_room_for_others(kind: RuntimeKind) {
    // A long idle timeout: only making room under pressure can serve the fresh client in time.
    let gw = start_on(kind, |c| {
        c.server.max_connections = 20;
        c.server.idle_timeout_secs = 300;
    })
    .await;
    // A hundred silent connections per replica (the cap is each replica's, when the gateway is
    // several behind a round-robin front), so that the bound below means the same for any
    // number of replicas.
    let replicas = gw.engines.len();
    let sent = 100 * replicas;
    let mut flood = Vec::new();
    for _ in 0..sent {
        flood.push(TcpStream::connect(addr(&gw)).await.unwrap());
    }
    still_served(&gw).await;
    // Silent connections were closed to make room: all but about the caps' worth.
    let kept = 20 * replicas;
    let checks = flood
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_secs(10)));
    let closed = futures_util::future::join_all(checks)
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
    assert!(
        closed + kept + 10 >= sent,
        "only {closed} of {sent} silent connections were closed ({kept} may be kept)"
    );
}

/// Sends raw bytes on a fresh connection and returns the whole answer (the server closes or
/// the answer is complete within 10 s).
async fn raw(gw: &Gateway, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr(gw)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some((head, body)) = text.split_once("\r\n\r\n")
                        && let Some(len) = head.lines().find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        && body.len() >= len
                    {
                        return;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

both_runtimes!(a_malformed_chunked_body_is_400_json);

async fn a_malformed_chunked_body_is_400_json(kind: RuntimeKind) {
    let gw = start_on(kind, |_| {}).await;
    let got = raw(
        &gw,
        b"POST /bc-authorize HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nscope=openid\r\n0\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("\"error\":\"invalid_request\""), "{got}");
}

#[tokio::test]
async fn the_token_endpoint_answers_other_methods_and_bodies_in_oauth_terms() {
    let gw = gateway().await;
    let r = gw.get("/token").await;
    r.assert_error(405, "invalid_request");
    assert_eq!(r.headers["allow"], "POST");
    let r = gw
        .http
        .post(format!("{}/token", gw.url))
        .json(&serde_json::json!({"grant_type": "urn:openid:params:grant-type:ciba"}))
        .send()
        .await
        .unwrap();
    reply(r).await.assert_error(400, "invalid_request");
    // A form with another grant is still the unsupported grant it is.
    gw.post_form("/token", &[("grant_type", "password")], None)
        .await
        .assert_error(400, "unsupported_grant_type");
    // A form with none is missing a required parameter (RFC 6749 §5.2), empty or absent.
    for form in [&[("client_id", "my-client")][..], &[("grant_type", "")][..]] {
        let r = gw.post_form("/token", form, None).await;
        r.assert_error(400, "invalid_request");
        assert_eq!(r.json["error_description"], "grant_type is required");
    }
}

// Hostile traffic, item 3, at the endpoint: a bidi control in the message is refused as a
// message that cannot be shown; bytes that are not UTF-8 are a malformed request.
#[tokio::test]
async fn bc_uc_03_hidden_characters_and_invalid_utf8() {
    let gw = gateway().await;
    gw.bc(&[
        ("scope", "openid"),
        ("login_hint", "alice"),
        ("binding_message", "Pay 10\u{61C}0 EUR"),
    ])
    .await
    .assert_error(400, "invalid_binding_message");
    let r = gw
        .http
        .post(format!("{}/bc-authorize", gw.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "client_id={}&client_secret={}&scope=openid&login_hint=alice&binding_message=caf%E9",
            POST_CLIENT.0, POST_CLIENT.1
        ))
        .send()
        .await
        .unwrap();
    reply(r).await.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn the_approval_form_must_be_a_form() {
    let gw = gateway().await;
    let r = gw
        .http
        .post(format!("{}/approve/some-handle", gw.url))
        .header("content-type", "application/json")
        .body(r#"{"decision":"approve"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("could not be read"));
}
