//! The `ciba-gateway` binary as deployed, with either engine: TLS on the listener
//! (HTTP/1.1 and HTTP/2 by ALPN), an https upstream verified against a CA file (and refused
//! without it), both engines forwarding to it, and graceful shutdown on SIGTERM.

use ciba_test_support as common;

use std::process::Command;
use std::time::Duration;

use common::binary::Running;
use common::pki::Pki;
use common::upstream::{echo_upstream, free_port};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ciba-gateway");

fn run(port: u16, yaml: &str) -> Running {
    Running::start(BIN, port, yaml)
}

fn gateway_yaml(port: u16, public: &str, engine: &str, upstream: &str, extra: &str) -> String {
    format!(
        r#"
listen: "127.0.0.1:{port}"
public_url: "{public}"
engine: {engine}
server: {{ threads: 1, shutdown_grace_secs: 1 }}
upstream: {{ url: "{upstream}", connect_timeout_ms: 2000, read_timeout_ms: 5000 {extra} }}
"#
    )
}

fn tls_yaml(pki: &Pki) -> String {
    format!(
        "tls: {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
        pki.path("cert.pem"),
        pki.path("key.pem")
    )
}

/// A TLS-terminating gateway (`engine`) in front of the echo server: HTTP/1.1 and HTTP/2 by
/// ALPN, and the upstream told the client came over https.
async fn tls_gateway_in_front_of_echo(engine: &str, pki: &Pki, echo: u16) -> Running {
    ciba_gateway::install_crypto_provider();
    let port = free_port();
    let mut yaml = gateway_yaml(
        port,
        &format!("https://localhost:{port}"),
        engine,
        &format!("http://127.0.0.1:{echo}"),
        "",
    );
    yaml.push_str(&tls_yaml(pki));
    let gw = run(port, &yaml);
    let h1 = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(pki.dir.join("ca.pem")).unwrap())
                .unwrap(),
        )
        .http1_only()
        .build()
        .unwrap();
    let r = h1
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_11),
        "{engine}"
    );
    let r = pki
        .https_client(None)
        .get(format!("https://localhost:{port}/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.version(),
        reqwest::Version::HTTP_2,
        "{engine}: h2 negotiated by ALPN"
    );
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{engine}");
    gw
}

fn sigterm_exits_cleanly(mut gw: Running) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &gw.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = gw.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_h1_h2_and_verified_https_upstream_for_both_engines() {
    let pki = Pki::new();
    let echo = echo_upstream().await;

    // A: TLS-terminating gateways in front of the echo server, one per engine.
    let a_tower = tls_gateway_in_front_of_echo("tower", &pki, echo).await;
    let a = tls_gateway_in_front_of_echo("pingora", &pki, echo).await;
    let pa = a.port;

    // B (pingora) and C (tower): https upstream A, verified with the CA file.
    for engine in ["pingora", "tower"] {
        let pb = free_port();
        let b = run(
            pb,
            &gateway_yaml(
                pb,
                &format!("http://127.0.0.1:{pb}"),
                engine,
                &format!("https://localhost:{pa}"),
                &format!(", ca_file: \"{}\"", pki.path("ca.pem")),
            ),
        );
        let r = reqwest::get(format!("http://127.0.0.1:{}/through", b.port))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{engine}: verified https upstream");
        let seen: Value = r.json().await.unwrap();
        assert_eq!(seen["uri"], "/through");
        drop(b);

        // Without the CA the upstream's certificate is not trusted: 502, never a silent pass.
        let pc = free_port();
        let c = run(
            pc,
            &gateway_yaml(
                pc,
                &format!("http://127.0.0.1:{pc}"),
                engine,
                &format!("https://localhost:{pa}"),
                "",
            ),
        );
        let r = reqwest::get(format!("http://127.0.0.1:{}/through", c.port))
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{engine}: untrusted upstream certificate");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "server_error");
    }

    // SIGTERM: graceful shutdown, exit 0.
    sigterm_exits_cleanly(a);
    sigterm_exits_cleanly(a_tower);
}

/// The standalone gateway (no upstream: the tower engine) serving TLS itself: discovery at its
/// https issuer over HTTP/2; a client that never finishes its handshake, and one that speaks
/// plain HTTP to the TLS port, hold up nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_tower_gateway_serves_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let port = free_port();
    let public = format!("https://localhost:{port}");
    let gw = run(
        port,
        &format!(
            "listen: \"127.0.0.1:{port}\"\npublic_url: \"{public}\"\nserver: {{ shutdown_grace_secs: 3600 }}\n{}",
            tls_yaml(&pki)
        ),
    );
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf).await;
    assert!(
        !buf.starts_with(b"HTTP/1.1 200"),
        "no plaintext answer on the TLS port"
    );

    let r = pki
        .https_client(None)
        .get(format!("{public}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["issuer"], public);
    assert_eq!(
        d["backchannel_authentication_endpoint"],
        format!("{public}/bc-authorize")
    );
    // The silent client is still connected, the grace period is an hour: the gateway exits
    // without waiting for that handshake's 10 s timeout.
    let t = std::time::Instant::now();
    sigterm_exits_cleanly(gw);
    drop(_silent);
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(9),
        "shutdown waited for the handshake: {took:?}"
    );
}
