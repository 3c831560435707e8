//! The `ciba-gateway` binary as a user meets it: the quickstart configuration, the README's
//! walk-through (bc-authorize → link in the log → approve → poll → tokens), graceful shutdown on
//! SIGTERM, and the `check`, `keygen` and `hash-secret` commands.

use ciba_test_support as common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::receiver::Receiver;
use common::*;

/// Operating the binary: metrics, health, the log's limit and format.
#[path = "quickstart/operability.rs"]
mod operability;

/// Live reload: SIGHUP and the admin listener's `POST /reload`.
#[path = "quickstart/reload.rs"]
mod reload;

/// Traces: the trace id on the log lines, spans exported over OTLP (feature `otel`).
#[path = "quickstart/traces.rs"]
mod traces;

const BIN: &str = env!("CARGO_BIN_EXE_ciba-gateway");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shipped quickstart file, moved to a free port.
fn quickstart_on(port: u16) -> tempfile_path::Path {
    quickstart_with_endpoints(port, 9090, 9091)
}

/// The shipped quickstart file on a free port, its ping and push clients' endpoints moved too.
fn quickstart_with_endpoints(port: u16, ping: u16, push: u16) -> tempfile_path::Path {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/quickstart.yaml"
    ))
    .unwrap();
    let text = text
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{ping}"))
        .replace("127.0.0.1:9091", &format!("127.0.0.1:{push}"));
    tempfile_path::write(&text)
}

/// The next approval link the gateway logs.
fn next_link(rx: &mpsc::Receiver<String>) -> String {
    let line = wait_line(rx, |l| l.contains("/approve/"));
    // A text line, or a JSON one (where the link ends at a quote).
    line.split(|c: char| c.is_whitespace() || c == '"')
        .find(|w| w.starts_with("http://") && w.contains("/approve/"))
        .unwrap()
        .to_owned()
}

/// Approves on the page behind the next approval link the gateway logs; returns the page.
async fn approve_next_link(http: &reqwest::Client, rx: &mpsc::Receiver<String>) -> String {
    let link = next_link(rx);
    let (status, html) = approve_at(http, &link).await;
    assert_eq!(status, 200);
    html
}

mod tempfile_path {
    /// A configuration file, alone in a fresh directory (the gateway's working directory).
    pub struct Path(pub std::path::PathBuf);
    impl Path {
        pub fn dir(&self) -> &std::path::Path {
            self.0.parent().unwrap()
        }
    }
    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.dir());
        }
    }
    pub fn write(text: &str) -> Path {
        let dir = std::env::temp_dir().join(format!(
            "ciba-gw-{}-{}",
            std::process::id(),
            ciba_test_support::random_token()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("gateway.yaml");
        std::fs::write(&p, text).unwrap();
        Path(p)
    }
}

/// Runs `ciba-gateway serve` on `cfg` until it listens: the process, its log lines as they come,
/// and all of them once it exits.
fn serve(
    cfg: &tempfile_path::Path,
) -> (
    std::process::Child,
    mpsc::Receiver<String>,
    std::thread::JoinHandle<Vec<String>>,
) {
    serve_with_env(cfg, &[])
}

/// [`serve`] with these environment variables set.
fn serve_with_env(
    cfg: &tempfile_path::Path,
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    mpsc::Receiver<String>,
    std::thread::JoinHandle<Vec<String>>,
) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg.0)
        .envs(env.iter().copied())
        // As a user runs it, in a directory of its own: the registered clients' file
        // (`data/clients.redb`) is created there.
        .current_dir(cfg.dir())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            lines.push(line);
        }
        lines
    });
    wait_line(&rx, |l| l.contains("listening"));
    (child, rx, reader)
}

/// Waits for a log line matching `pred` (the binary logs to stdout).
fn wait_line(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> String {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the expected log line");
        if pred(&line) {
            return line;
        }
    }
}

#[tokio::test]
async fn readme_walkthrough_against_the_quickstart_binary() {
    let port = free_port();
    let ping_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = quickstart_with_endpoints(
        port,
        ping_listener.local_addr().unwrap().port(),
        push_listener.local_addr().unwrap().port(),
    );
    let (mut child, rx, _log) = serve(&cfg);
    let base = format!("http://127.0.0.1:{port}");
    let http = http_client();

    // The seed write-up's request at its path, with a wrong user_code: verified, refused,
    // nobody notified.
    let r = http
        .post(format!("{base}/ciba/auth"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("client_id=my-client&client_secret=supersecret&scope=openid%20profile&requested_expiry=3600&user_code=xyz789&login_hint=alice")
        .send()
        .await
        .unwrap();
    reply(r).await.assert_error(400, "invalid_user_code");

    // The seed write-up's request, with the login_hint the specification requires.
    let r = http
        .post(format!("{base}/ciba/auth"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("client_id=my-client&client_secret=supersecret&scope=openid%20profile&binding_message=Please%20authenticate%20for%20my-client&requested_expiry=3600&user_code=abc123&login_hint=alice")
        .send()
        .await
        .unwrap();
    let r = reply(r).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.json["expires_in"], 600,
        "3600 is capped by the quickstart's max_expiry_secs"
    );

    // The seed's poll, with its IETF spelling of the grant type. The quickstart long-polls: the
    // poll waits for the user instead of answering authorization_pending at once.
    let poll = {
        let (http, base, id) = (http.clone(), base.clone(), id.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("grant_type=urn:ietf:params:oauth:grant-type:ciba&client_id=my-client&client_secret=supersecret&auth_req_id={id}"))
                .send()
                .await
                .unwrap()
        })
    };

    // The link is in the log; the auth_req_id never is. The user approves, and the waiting
    // poll is answered with the tokens.
    let html = approve_next_link(&http, &rx).await;
    assert!(html.contains("My Client") && html.contains("Please authenticate for my-client"));
    let tokens = reply(poll.await.unwrap()).await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    assert!(tokens.json["id_token"].is_string() && tokens.json["access_token"].is_string());

    // Ping: the quickstart's ping client is told at its endpoint, then redeems.
    let ping_rx = Receiver::start_on(ping_listener, &[204], false).await;
    let r = post_form(
        &http,
        &format!("{base}/bc-authorize"),
        &[
            ("client_id", "ping-client"),
            ("client_secret", "supersecret"),
            ("scope", "openid email"),
            ("login_hint", "alice"),
            ("user_code", "abc123"),
            ("client_notification_token", "ping-bearer-1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let ping_id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    approve_next_link(&http, &rx).await;
    let ping = ping_rx.next_call().await;
    assert_eq!(ping.bearer, "ping-bearer-1");
    assert_eq!(ping.body, serde_json::json!({ "auth_req_id": ping_id }));
    let r = post_form(
        &http,
        &format!("{base}/token"),
        &[
            ("grant_type", "urn:openid:params:grant-type:ciba"),
            ("client_id", "ping-client"),
            ("client_secret", "supersecret"),
            ("auth_req_id", ping_id.as_str()),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);

    // Push: the quickstart's push client receives its tokens at its endpoint.
    let push_rx = Receiver::start_on(push_listener, &[204], false).await;
    let r = post_form(
        &http,
        &format!("{base}/bc-authorize"),
        &[
            ("client_id", "push-client"),
            ("client_secret", "supersecret"),
            ("scope", "openid"),
            ("login_hint", "bob"),
            ("client_notification_token", "push-bearer-1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let push_id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    approve_next_link(&http, &rx).await;
    let push = push_rx.next_call().await;
    assert_eq!(push.bearer, "push-bearer-1");
    assert_eq!(push.body["auth_req_id"], push_id.as_str());
    assert!(push.body["access_token"].is_string() && push.body["id_token"].is_string());

    // SIGTERM: graceful shutdown, exit 0.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    // Nothing secret reached the log.
    while let Ok(l) = rx.try_recv() {
        assert!(
            !l.contains(&id)
                && !l.contains("supersecret")
                && !l.contains(tokens.json["access_token"].as_str().unwrap())
                && !l.contains("ping-bearer-1")
                && !l.contains(&ping_id)
                && !l.contains(&push_id)
        );
    }
}

/// Stops the process with SIGTERM and returns every line it wrote.
fn stop(mut child: KillOnDrop, reader: std::thread::JoinHandle<Vec<String>>) -> Vec<String> {
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    child.0.wait().unwrap();
    reader.join().unwrap()
}

/// The value of the sample `name{labels}` in a Prometheus text page (0 when absent).
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The gateway process, killed if the test fails before it stops it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A form POST to `url`, and its answer.
async fn post_form(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> Reply {
    reply(http.post(url).form(form).send().await.unwrap()).await
}

/// A GET of `url`: its status and body.
async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let r = http.get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// bc-authorize as the quickstart's `my-client` for alice (scope `openid`); the `auth_req_id`.
async fn bc_for_alice(http: &reqwest::Client, base: &str) -> String {
    let form = [
        ("client_id", "my-client"),
        ("client_secret", "supersecret"),
        ("scope", "openid"),
        ("login_hint", "alice"),
        ("user_code", "abc123"),
    ];
    let r = post_form(http, &format!("{base}/bc-authorize"), &form).await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["auth_req_id"].as_str().unwrap().to_owned()
}

/// A CIBA token request for `id` as `my-client`, and its answer.
async fn redeem(http: &reqwest::Client, base: &str, id: &str) -> Reply {
    let form = [
        ("grant_type", "urn:openid:params:grant-type:ciba"),
        ("client_id", "my-client"),
        ("client_secret", "supersecret"),
        ("auth_req_id", id),
    ];
    post_form(http, &format!("{base}/token"), &form).await
}

/// A token request whose `auth_req_id` is unknown: `invalid_grant` once the client has
/// authenticated, `invalid_client` if it could not.
async fn authenticates(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> Reply {
    let r = http
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "urn:openid:params:grant-type:ciba"),
            ("client_id", id),
            ("client_secret", secret),
            ("auth_req_id", "no-such-request"),
        ])
        .send()
        .await
        .unwrap();
    reply(r).await
}

// Issue 20: the write-up's smart-home walk-through against the quickstart as shipped — its
// POST /register body byte for byte, then its /ciba/auth request with the issued credentials
// (plus the login_hint the spec requires; its user code is the quickstart's bob's), its poll
// with the IETF grant spelling, the approval, the tokens. Then the registered client survives
// a restart, including a kill -9 while registrations are being written: every registration
// that was answered 201 works afterwards, and the file opens.
#[tokio::test]
async fn the_write_ups_register_step_works_and_survives_kill_9() {
    let port = free_port();
    let cfg = quickstart_on(port);
    let (child, rx, _log) = serve(&cfg);
    let mut child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = http_client();

    let d: serde_json::Value = http
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["registration_endpoint"], format!("{base}/register"));

    let write_up = r#"{
"client_id": "smart-home-device",
"client_secret": "device-secret",
"redirect_uris": ["https://device.example.com/callback"],
"grant_types": ["urn:ietf:params:oauth:grant-type:ciba"],
"response_types": ["token"],
"scope": "openid profile",
"backchannel_authentication_endpoint": "https://as.example.com/ciba/auth",
"token_endpoint": "https://as.example.com/token"
}"#;
    let r = http
        .post(format!("{base}/register"))
        .header("content-type", "application/json")
        .body(write_up)
        .send()
        .await
        .unwrap();
    let r = reply(r).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["client_id"].as_str().unwrap().to_owned();
    let secret = r.json["client_secret"].as_str().unwrap().to_owned();
    let rat = r.json["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        r.json["grant_types"],
        serde_json::json!(["urn:openid:params:grant-type:ciba"])
    );
    assert_eq!(r.json["token_endpoint_auth_method"], "client_secret_post");

    let r = http
        .post(format!("{base}/ciba/auth"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("client_id={id}&client_secret={secret}&scope=openid%20profile&binding_message=Please%20authenticate%20your%20smart%20home%20device&requested_expiry=3600&user_code=xyz789&login_hint=bob"))
        .send()
        .await
        .unwrap();
    let r = reply(r).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let auth_req_id = r.json["auth_req_id"].as_str().unwrap().to_owned();
    let poll = {
        let (http, base, body) = (
            http.clone(),
            base.clone(),
            format!(
                "grant_type=urn:ietf:params:oauth:grant-type:ciba&client_id={id}&client_secret={secret}&auth_req_id={auth_req_id}"
            ),
        );
        tokio::spawn(async move {
            http.post(format!("{base}/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
        })
    };
    let html = approve_next_link(&http, &rx).await;
    assert!(html.contains("Please authenticate your smart home device"));
    let tokens = reply(poll.await.unwrap()).await;
    assert_eq!(tokens.status, 200, "{}", tokens.json);
    let (_, claims) =
        ciba_test_support::tokens::decode_jwt(tokens.json["id_token"].as_str().unwrap());
    assert_eq!(
        (claims["aud"].as_str(), claims["sub"].as_str()),
        (Some(id.as_str()), Some("248289761002"))
    );

    // kill -9 while registrations are being written: four clients register one after another
    // until the process is gone; it is killed once ten have been answered.
    let (tx, mut answered_rx) = tokio::sync::mpsc::unbounded_channel();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (http, base, tx) = (http.clone(), base.clone(), tx.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let Ok(r) = http
                        .post(format!("{base}/register"))
                        .json(&serde_json::json!({ "client_name": format!("device {w}-{i}") }))
                        .send()
                        .await
                    else {
                        return;
                    };
                    let r = reply(r).await;
                    if r.status != 201 {
                        return;
                    }
                    let creds = (
                        r.json["client_id"].as_str().unwrap().to_owned(),
                        r.json["client_secret"].as_str().unwrap().to_owned(),
                    );
                    if tx.send(creds).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let mut answered = Vec::new();
    while answered.len() < 10 {
        answered.push(
            answered_rx
                .recv()
                .await
                .expect("registrations are answered"),
        );
    }
    let pid = child.0.id().to_string();
    let killed = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    assert!(killed.success());
    child.0.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    while let Some(creds) = answered_rx.recv().await {
        answered.push(creds);
    }
    // Nothing secret reached the log.
    while let Ok(l) = rx.try_recv() {
        assert!(
            !l.contains(&secret) && !l.contains(&rat) && !l.contains(&auth_req_id),
            "{l}"
        );
    }

    // Restarted on the same directory: every client answered 201 is there.
    let (child, _rx, _log) = serve(&cfg);
    let mut child = KillOnDrop(child);
    assert_eq!(
        authenticates(&http, &base, &id, &secret).await.error(),
        "invalid_grant",
        "the write-up's client survived the restart"
    );
    for (id, secret) in &answered {
        assert_eq!(
            authenticates(&http, &base, id, secret).await.error(),
            "invalid_grant"
        );
    }
    assert_eq!(
        authenticates(&http, &base, &id, "device-secret")
            .await
            .error(),
        "invalid_client"
    );
    eprintln!(
        "{} registrations answered before the kill -9",
        answered.len()
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    child.0.wait().unwrap();
}

#[test]
fn check_reports_every_problem_with_its_field_path() {
    let bad = tempfile_path::write(
        r#"
public_url: "ftp://x"
endpoints: { token: "no-slash" }
ciba: { interval_secs: 0 }
limits: { bc_per_user: { requests: 0, per_secs: 60 } }
clients:
  - { client_id: a, secret: "plain-text-secret", upstream: { client_secret: "inline" } }
  - { client_id: a, secret: "${CIBA_GW_TEST_UNSET_VAR}", backchannel_token_delivery_mode: push }
tokens:
  keys: [{ kid: k1, alg: ES256, private_key: "file:/nonexistent/ciba-gw-key.pem" }]
  active_kid: k2
tls: { cert_file: /nonexistent/ciba-gw-cert.pem, key_file: /nonexistent/ciba-gw-key.pem }
approval: { csrf_key: "inline-is-refused" }
audit: { webhook: { url: "ftp://hook", secret: "${CIBA_GW_TEST_UNSET_VAR}", max_attempts: 0 } }
"#,
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for path in [
        "public_url:",
        "endpoints.token:",
        "ciba.interval_secs:",
        "limits.bc_per_user:",
        "clients[0].secret: plaintext secrets are not accepted",
        "clients[1].client_id:",
        "clients[1].secret: environment variable CIBA_GW_TEST_UNSET_VAR is not set",
        "clients[1].backchannel_client_notification_endpoint: is required",
        // Loaded by the components that own them, reported in the same list, same paths.
        "clients[0].upstream.client_secret: must be a reference",
        "tokens.keys[0].private_key:",
        "tokens.active_kid:",
        "tls.cert_file:",
        "tls.key_file:",
        "approval.csrf_key: must be a reference",
        "audit.webhook.url:",
        "audit.webhook.max_attempts:",
        "audit.webhook.secret: environment variable CIBA_GW_TEST_UNSET_VAR is not set",
    ] {
        assert!(err.contains(path), "missing {path:?} in:\n{err}");
    }
    let unknown = tempfile_path::write("public_url: http://x\nlisten_port: 3\n");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&unknown.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_port"));
    let ok = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/quickstart.yaml"),
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn keygen_writes_keys_the_gateway_loads_and_hash_secret_hashes() {
    for alg in ["es256", "eddsa", "rs256"] {
        let out = Command::new(BIN)
            .args(["keygen", "--alg", alg])
            .output()
            .unwrap();
        assert!(out.status.success());
        let pem = String::from_utf8(out.stdout).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let key = tempfile_path::write(&pem);
        let cfg = tempfile_path::write(&format!(
            "public_url: http://127.0.0.1:1\ntokens:\n  keys:\n    - {{ kid: k1, alg: {}, private_key: \"file:{}\" }}\n",
            match alg {
                "es256" => "ES256",
                "eddsa" => "EdDSA",
                _ => "RS256",
            },
            key.0.display()
        ));
        let check = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&cfg.0)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{alg}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let mut child = Command::new(BIN)
        .arg("hash-secret")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"supersecret\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let phc = String::from_utf8(out.stdout).unwrap();
    assert!(phc.starts_with("$argon2id$"));
    // Checked by the argon2 crate itself, not by the gateway's verifier.
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(phc.trim()).unwrap();
    assert!(
        argon2::Argon2::default()
            .verify_password(b"supersecret", &parsed)
            .is_ok()
    );
}
