//! Approval → token latency, measured from the moment the user's decision is sent (the HTTP
//! authentication channel's callback) to the moment the client holds its tokens, over real
//! sockets on 127.0.0.1, on the tower runtime:
//!
//! - poll: a client polling at the announced interval (1 s here; the wait scales with it);
//! - long poll: a poll held by the gateway (`ciba.long_poll_secs`);
//! - ping: the ping arriving at the client's HTTPS endpoint, then its token request.
//!
//! Goal: long poll and ping p99 under 5 ms. `cargo bench --bench delivery` (prints p50/p99).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ciba_gateway::config::DeliveryMode;
use ciba_test_support as common;
use common::receiver::Receiver;
use common::*;

const SAMPLES: usize = 200;
const POLL_SAMPLES: usize = 30;

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50).as_secs_f64() * 1e3, at(0.99).as_secs_f64() * 1e3)
}

async fn until_held(gw: &Gateway, n: usize) {
    while gw.engine.held_polls() != n {
        tokio::task::yield_now().await;
    }
}

async fn long_poll(gw: &Arc<Gateway>, auth: &Authenticator) -> Duration {
    let id = gw.start_request().await;
    let call = auth.next_call().await;
    let poll = tokio::spawn({
        let (gw, id) = (Arc::clone(gw), id.clone());
        async move { gw.poll(&id).await }
    });
    until_held(gw, 1).await;
    let t0 = Instant::now();
    assert_eq!(callback(gw, &call.bearer, "SUCCEED").await.status, 200);
    let r = poll.await.unwrap();
    let t = t0.elapsed();
    assert_eq!(r.status, 200);
    t
}

async fn poll_at_interval(gw: &Gateway, auth: &Authenticator) -> Duration {
    let id = gw.start_request().await;
    let call = auth.next_call().await;
    // The client's schedule: a poll every interval from the acknowledgement; the user decides
    // at some point in between.
    let ack = Instant::now();
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
    let offset = Duration::from_millis(rand_ms(1000));
    tokio::time::sleep_until((ack + offset).into()).await;
    let t0 = Instant::now();
    assert_eq!(callback(gw, &call.bearer, "SUCCEED").await.status, 200);
    let mut next = ack + Duration::from_secs(1);
    loop {
        tokio::time::sleep_until(next.into()).await;
        let r = gw.poll(&id).await;
        if r.status == 200 {
            return t0.elapsed();
        }
        next += Duration::from_secs(1);
    }
}

fn rand_ms(max: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    t % max
}

async fn ping(gw: &Gateway, auth: &Authenticator, rx: &Receiver) -> Duration {
    let r = gw
        .bc(&[
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("client_notification_token", "bench-token"),
        ])
        .await;
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    let call = auth.next_call().await;
    let t0 = Instant::now();
    assert_eq!(callback(gw, &call.bearer, "SUCCEED").await.status, 200);
    rx.next_call().await;
    let r = gw.poll(&id).await;
    let t = t0.elapsed();
    assert_eq!(r.status, 200);
    t
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let auth = Authenticator::start().await;
        let unlimited = |c: &mut ciba_gateway::Config| {
            c.limits.bc_per_user = None;
            c.limits.bc_per_client = None;
        };

        let gw = Arc::new(
            start_real_time(|c| {
                c.channel = auth.channel_config();
                c.ciba.long_poll_secs = 60;
                unlimited(c);
            })
            .await,
        );
        let mut v = Vec::new();
        for _ in 0..SAMPLES {
            v.push(long_poll(&gw, &auth).await);
        }
        let (p50, p99) = percentiles(v);
        println!("long poll: p50 {p50:.2} ms, p99 {p99:.2} ms ({SAMPLES} samples)");

        let receiver = Receiver::start(&[204]).await;
        let (endpoint, ca) = (receiver.url.parse().unwrap(), receiver.ca_file.clone());
        let gw = start_real_time(|c| {
            c.channel = auth.channel_config();
            unlimited(c);
            let n = &mut c.ciba.client_notifications;
            n.ca_file = Some(ca.into());
            n.outbound.allow_private_networks = true;
            c.clients[0].backchannel_token_delivery_mode = DeliveryMode::Ping;
            c.clients[0].backchannel_client_notification_endpoint = Some(endpoint);
        })
        .await;
        let mut v = Vec::new();
        for _ in 0..SAMPLES {
            v.push(ping(&gw, &auth, &receiver).await);
        }
        let (p50, p99) = percentiles(v);
        println!("ping (+ token request): p50 {p50:.2} ms, p99 {p99:.2} ms ({SAMPLES} samples)");

        let gw = start_real_time(|c| {
            c.channel = auth.channel_config();
            c.ciba.interval_secs = 1;
            unlimited(c);
        })
        .await;
        let mut v = Vec::new();
        for _ in 0..POLL_SAMPLES {
            v.push(poll_at_interval(&gw, &auth).await);
        }
        let (p50, p99) = percentiles(v);
        println!(
            "poll every 1 s: p50 {p50:.2} ms, p99 {p99:.2} ms ({POLL_SAMPLES} samples; scales with the interval)"
        );
    });
}
