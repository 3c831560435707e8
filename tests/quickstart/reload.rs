//! Live reload of the running binary (issue 21 §5): SIGHUP and the admin listener's
//! `POST /reload` read the file again; a client is added and the signing key rotated without
//! a restart or a lost pending request; a file that does not pass `check`, or that changes
//! what only a restart can, is refused with `check`'s messages and the running one stays.

use super::*;

/// The quickstart file on `port` with the admin listener on `admin`, the signing keys `kids`
/// (PEM files in `dir`, the first active) and `extra_clients` (YAML list items).
fn config_text(port: u16, admin: u16, dir: &std::path::Path, kids: &[&str], extra: &str) -> String {
    let base = std::fs::read_to_string(&quickstart_on(port).0).unwrap();
    let keys: String = kids
        .iter()
        .map(|k| {
            format!(
                "    - {{ kid: {k}, alg: ES256, private_key: \"file:{}\" }}\n",
                dir.join(format!("{k}.pem")).display()
            )
        })
        .collect();
    format!("{base}{extra}\nadmin: {{ listen: \"127.0.0.1:{admin}\" }}\ntokens:\n  keys:\n{keys}")
}

/// A client the first file does not have (its secret is `supersecret`, as the quickstart's).
const NEW_CLIENT: &str = r#"
  - client_id: new-client
    name: New Client
    secret: "$argon2id$v=19$m=19456,t=2,p=1$iC3gOvlNGMU+N/1tiaagug$i4yO1+B2mKlzGXZ7nUouZ5l9cAYEn8mUlnLVHuuFDQo"
    token_endpoint_auth_method: client_secret_post
    grant_types: [urn:openid:params:grant-type:ciba]
    backchannel_token_delivery_mode: poll
    scopes: [openid]
"#;

fn keygen(dir: &std::path::Path, kid: &str) {
    let out = dir.join(format!("{kid}.pem"));
    assert!(
        Command::new(BIN)
            .args(["keygen", "--alg", "es256", "--out"])
            .arg(&out)
            .status()
            .unwrap()
            .success()
    );
}

/// The `kid` an ID token was signed with, after checking its signature against the gateway's
/// JWKS as a client would.
async fn verified_kid(http: &reqwest::Client, base: &str, id_token: &str) -> String {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.validate_aud = false;
    let jwks = format!("{base}/jwks");
    common::tokens::verify_with_jwks(http, &jwks, id_token, v)
        .await
        .0
}

async fn kids(http: &reqwest::Client, base: &str) -> Vec<String> {
    common::tokens::jwks_kids(http, &format!("{base}/jwks")).await
}

/// bc-authorize as `my-client` for alice; returns the `auth_req_id` and the approval link the
/// log channel wrote.
async fn start_request(
    http: &reqwest::Client,
    base: &str,
    rx: &mpsc::Receiver<String>,
) -> (String, String) {
    let id = bc_for_alice(http, base).await;
    let link = next_link(rx);
    (id, link)
}

/// Approves at `link` and redeems `id` as `my-client`: the ID token.
async fn approve_and_redeem(http: &reqwest::Client, base: &str, link: &str, id: &str) -> String {
    let (status, _) = approve_at(http, link).await;
    assert_eq!(status, 200);
    let r = redeem(http, base, id).await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["id_token"].as_str().unwrap().to_owned()
}

fn signal_hup(child: &std::process::Child) {
    assert!(
        Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// The operator's story from the issue's "done when": a client is added and the key rotated
/// without a restart — by SIGHUP — while a request is pending; the pending request is
/// approved and redeemed afterwards, signed by the new key; a token signed by the old key
/// before the reload still verifies against the JWKS, which keeps the retired key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_client_and_rotates_the_key_without_losing_a_pending_request() {
    let (port, admin) = (free_port(), free_port());
    let cfg = tempfile_path::write("");
    let dir = cfg.dir().to_owned();
    keygen(&dir, "k1");
    keygen(&dir, "k2");
    std::fs::write(&cfg.0, config_text(port, admin, &dir, &["k1"], "")).unwrap();
    let (child, rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = http_client();

    // Before: a token signed by k1, a request left pending, and no new-client.
    let (done, done_link) = start_request(&http, &base, &rx).await;
    let old_token = approve_and_redeem(&http, &base, &done_link, &done).await;
    assert_eq!(verified_kid(&http, &base, &old_token).await, "k1");
    let (pending, pending_link) = start_request(&http, &base, &rx).await;
    authenticates(&http, &base, "new-client", "supersecret")
        .await
        .assert_error(401, "invalid_client");

    std::fs::write(&cfg.0, config_text(port, admin, &dir, &["k2"], NEW_CLIENT)).unwrap();
    signal_hup(&child.0);
    let line = wait_line(&rx, |l| {
        l.contains("configuration reloaded") || l.contains("configuration reload refused")
    });
    assert!(line.contains("configuration reloaded"), "{line}");
    assert!(line.contains("k1"), "the retired key is named: {line}");

    // After: the new client authenticates; both keys are published.
    authenticates(&http, &base, "new-client", "supersecret")
        .await
        .assert_error(400, "invalid_grant");
    let published = kids(&http, &base).await;
    assert!(published.contains(&"k1".to_owned()) && published.contains(&"k2".to_owned()));
    assert_eq!(verified_kid(&http, &base, &old_token).await, "k1");
    // The request pending across the reload is decided and redeemed, signed by k2.
    let new_token = approve_and_redeem(&http, &base, &pending_link, &pending).await;
    assert_eq!(verified_kid(&http, &base, &new_token).await, "k2");

    let log = stop(child, reader);
    assert!(
        log.iter()
            .all(|l| !l.contains(&pending) && !l.contains("supersecret")),
        "no auth_req_id or secret in the log"
    );
}

/// A file that fails `check`, or that changes what only a restart can, is refused through
/// the admin listener with `check`'s messages (422) and through SIGHUP (an audit line); the
/// running configuration stays, and the process keeps serving. `POST /reload` is refused to a
/// browser and to GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_keeps_the_running_configuration() {
    let (port, admin) = (free_port(), free_port());
    let cfg = tempfile_path::write("");
    let dir = cfg.dir().to_owned();
    keygen(&dir, "k1");
    std::fs::write(&cfg.0, config_text(port, admin, &dir, &["k1"], NEW_CLIENT)).unwrap();
    let (child, rx, reader) = serve(&cfg);
    let child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let reload = format!("http://127.0.0.1:{admin}/reload");
    let http = http_client();

    // The same file: accepted, nothing changed.
    let r = reply(http.post(&reload).send().await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["changed"], serde_json::json!([]));

    // A key file that does not exist, without new-client: refused whole.
    let missing = config_text(port, admin, &dir, &["k9"], "");
    std::fs::write(&cfg.0, &missing).unwrap();
    let r = reply(http.post(&reload).send().await.unwrap()).await;
    assert_eq!(r.status, 422, "{}", r.json);
    assert_eq!(r.json["error"], "configuration_refused");
    let problems = r.json["problems"].to_string();
    assert!(
        problems.contains("tokens.keys[0].private_key"),
        "{problems}"
    );
    // `check` says the same of the same file.
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg.0)
        .output()
        .unwrap();
    let check = String::from_utf8_lossy(&check.stderr);
    assert!(check.contains("tokens.keys[0].private_key"), "{check}");

    // A change only a restart can make: refused, naming the field.
    let moved =
        config_text(port, admin, &dir, &["k1"], "").replace("interval_secs: 5", "interval_secs: 7");
    std::fs::write(&cfg.0, &moved).unwrap();
    let r = reply(http.post(&reload).send().await.unwrap()).await;
    assert_eq!(r.status, 422, "{}", r.json);
    assert!(
        r.json["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("ciba: only a restart")
    );

    // Not YAML, by SIGHUP: refused in the audit trail; the process goes on.
    std::fs::write(&cfg.0, "clients: [").unwrap();
    signal_hup(&child.0);
    wait_line(&rx, |l| l.contains("configuration reload refused"));

    // Through all of it the first file's clients and key stayed.
    authenticates(&http, &base, "new-client", "supersecret")
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(kids(&http, &base).await, ["k1"]);

    // Not for browsers, not by GET.
    let r = http
        .post(&reload)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(http.get(&reload).send().await.unwrap().status(), 405);

    let page = get(&http, &format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .1;
    assert_eq!(
        sample(&page, "ciba_config_reloads_total{result=\"applied\"}"),
        1.0
    );
    assert_eq!(
        sample(&page, "ciba_config_reloads_total{result=\"refused\"}"),
        3.0
    );
    stop(child, reader);
}
