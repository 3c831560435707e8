//! Both runtimes in front of a provider that runs on two nodes (`upstream.nodes`): two real
//! django-oauth-toolkit processes sharing one database and signing key, as a deployment's
//! nodes share them. One is killed mid-test: forwarded traffic and the gateway's own reads of
//! the provider (discovery, JWKS) move to the other.

use ciba_test_support as common;

use common::providers::{TwoNodes, own_reads, provider_grant};
use common::upstream::gateway_in_front;
use common::*;

both_runtimes!(traffic_and_own_reads_move_to_the_node_that_is_up);

async fn traffic_and_own_reads_move_to_the_node_that_is_up(
    kind: ciba_gateway::config::RuntimeKind,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let mut nodes = TwoNodes::start(&format!("{origin}/o/approve/callback")).await;
    let gw = gateway_in_front(kind, listener, nodes.a, |c| {
        c.issuer = Some(format!("{origin}/o"));
        let u = c.upstream.as_mut().unwrap();
        // The provider by name, its nodes by address.
        u.url = format!("http://localhost:{}", nodes.a).parse().unwrap();
        u.nodes = nodes.addrs();
        // Every discovery and JWKS request is read from the provider afresh.
        u.discovery_cache_secs = 0;
        u.jwks_cache_secs = 0;
    })
    .await;
    let expected = (
        200,
        serde_json::json!(format!("{origin}/o/token/")),
        200,
        true,
    );
    for _ in 0..4 {
        assert_eq!(provider_grant(&gw.http, &gw.url).await, 200);
    }
    assert_eq!(own_reads(&gw.http, &gw.url).await, expected);

    nodes.kill_a().await;
    for i in 0..4 {
        assert_eq!(
            provider_grant(&gw.http, &gw.url).await,
            200,
            "grant {i} after node a died"
        );
    }
    assert_eq!(
        own_reads(&gw.http, &gw.url).await,
        expected,
        "read from node b"
    );
}
