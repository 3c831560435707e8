//! The whole journey in a real browser (Debian's headless Chromium, driven by playwright-core)
//! against the real upstream provider: a client asks, the user is notified (e-mail through a
//! real SMTP sink, webhook through a real receiver), opens the link, logs in at the provider,
//! and approves or denies; the waiting client gets the provider's tokens. Also: the wrong person
//! logging in, a link used twice, an expired link. Screenshots of the device page and the consent
//! page go to `$CIBA_SCREENSHOTS` (the README's are made so) or a temporary folder.

use ciba_test_support as common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ciba_gateway::config::{
    ApprovalMode, AuthMethod, ChannelConfig, NotifierKind, Outbound, RuntimeKind, SecretRef,
    TokenSource, UpstreamClient, UsersConfig, WebhookConfig,
};
use common::upstream::*;
use common::webhook::{Receiver, receiver};
use common::*;
use serde_json::Value;

struct Journey {
    gw: Gateway,
    _provider: Provider,
    hook: Receiver,
    mails: tokio::sync::mpsc::UnboundedReceiver<common::smtp::Mail>,
}

fn secret(value: &str) -> SecretRef {
    let p = std::env::temp_dir().join(format!(
        "ciba-browser-secret-{}",
        ciba_test_support::random_token()
    ));
    std::fs::write(&p, value).unwrap();
    SecretRef::new(format!("file:{}", p.display()))
}

/// Gateway (pingora) in front of oidc-provider, approving through it; alice is notified by
/// e-mail, everyone else by webhook.
async fn journey() -> Journey {
    let hook = receiver(vec![200]).await;
    let (smtp_port, mails) = common::smtp::start(&[]).await;
    let hook_url = hook.url.clone();
    let (gw, provider) = provider_behind(RuntimeKind::Pingora, |c| {
        c.approval.mode = ApprovalMode::Upstream;
        c.clients.retain(|cl| cl.client_id == "post-client");
        c.clients[0].tokens = TokenSource::Upstream;
        c.clients[0].upstream = Some(UpstreamClient {
            client_id: None,
            client_secret: secret("post-client-upstream-secret"),
            auth_method: AuthMethod::ClientSecretPost,
        });
        let local = Outbound {
            timeout_ms: 3000,
            allow_private_networks: true,
        };
        c.channel = ChannelConfig::Notify {
            default: NotifierKind::Webhook,
            webhook: Some(WebhookConfig {
                url: hook_url.parse().unwrap(),
                secret: secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                retry_initial_ms: 50,
                max_attempts: 3,
                outbound: local,
            }),
            email: Some(common::smtp::email_config(smtp_port, 50, 3)),
        };
        if let UsersConfig::Static { users } = &mut c.users {
            users[0].notify = Some(NotifierKind::Email); // alice
        }
    })
    .await;
    Journey {
        gw,
        _provider: provider,
        hook,
        mails,
    }
}

async fn ask(gw: &Gateway, hint: &str) -> String {
    let r = gw
        .bc(&[
            ("scope", "openid"),
            ("login_hint", hint),
            ("binding_message", "4711"),
        ])
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["auth_req_id"].as_str().unwrap().to_owned()
}

/// The approval link from alice's e-mail (quoted-printable unfolded).
async fn link_from_mail(j: &mut Journey) -> String {
    let mail = tokio::time::timeout(Duration::from_secs(10), j.mails.recv())
        .await
        .unwrap()
        .unwrap();
    let text = mail.data.replace("=\n", "").replace("=3D", "=");
    let start = text
        .find(&format!("{}/approve/", j.gw.url))
        .expect("the link is in the e-mail");
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || ":/._-".contains(*c))
        .collect()
}

/// The approval link from the latest webhook event.
async fn link_from_webhook(j: &Journey) -> String {
    let body = eventually_some("a webhook event arrives", || async {
        j.hook.got.lock().unwrap().last().map(|r| r.body.clone())
    })
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["approval_url"].as_str().unwrap().to_owned()
}

fn screenshots() -> PathBuf {
    std::env::var_os("CIBA_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let d = std::env::temp_dir()
                .join(format!("ciba-shots-{}", ciba_test_support::random_token()));
            std::fs::create_dir_all(&d).unwrap();
            d
        })
}

/// Runs the browser journey; returns its JSON verdict.
async fn browse(link: &str, login: &str, decision: &str, shots: Option<&Path>) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "run `npm ci --prefix tests/browser` (scripts/test does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is not installed (scripts/test installs it)"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(&dir)
        .args(["journey.mjs", link, login, decision]);
    if let Some(s) = shots {
        cmd.arg(s);
    }
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("the browser finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "browser failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("bad output: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_in_a_browser_after_an_email_then_the_link_is_dead() {
    let mut j = journey().await;
    let id = ask(&j.gw, "alice").await;
    let link = link_from_mail(&mut j).await;
    let shots = screenshots();
    let v = browse(&link, "sub-alice", "approve", Some(&shots)).await;
    assert_eq!(v["title"], "Approved", "{v}");
    let countdown = v["countdown"].as_str().unwrap();
    assert!(
        countdown.starts_with("1:5") || countdown == "2:00",
        "a live countdown from 2 minutes: {countdown}"
    );
    for f in ["device-page.png", "consent-page.png"] {
        assert!(
            std::fs::metadata(shots.join(f)).unwrap().len() > 1000,
            "{f} was written"
        );
    }
    j.gw.clock.advance_secs(5);
    let t = j.gw.poll(&id).await;
    assert_eq!(t.status, 200, "{}", t.json);
    let (_, claims) = decode_jwt(t.json["id_token"].as_str().unwrap());
    assert_eq!(
        (claims["sub"].as_str(), claims["aud"].as_str()),
        (Some("sub-alice"), Some("post-client"))
    );
    // The same link again: dead.
    let v = browse(&link, "sub-alice", "approve", None).await;
    assert_eq!(
        (v["stage"].as_str(), v["status"].as_u64()),
        (Some("link"), Some(404)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_in_a_browser_after_a_webhook() {
    let j = journey().await;
    let id = ask(&j.gw, "bob").await;
    let link = link_from_webhook(&j).await;
    let v = browse(&link, "sub-bob", "deny", None).await;
    assert_eq!(v["title"], "Denied", "{v}");
    j.gw.poll(&id).await.assert_error(400, "access_denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_person_logging_in_approves_nothing() {
    let mut j = journey().await;
    let id = ask(&j.gw, "alice").await;
    let link = link_from_mail(&mut j).await;
    let v = browse(&link, "sub-bob", "approve", None).await;
    assert_eq!(
        (v["stage"].as_str(), v["title"].as_str()),
        (Some("callback"), Some("You signed in as someone else")),
        "{v}"
    );
    j.gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_shows_it_is_no_longer_valid() {
    let mut j = journey().await;
    let id = ask(&j.gw, "alice").await;
    let link = link_from_mail(&mut j).await;
    j.gw.clock.advance_secs(121);
    let v = browse(&link, "sub-alice", "approve", None).await;
    assert_eq!(
        (v["stage"].as_str(), v["status"].as_u64()),
        (Some("link"), Some(404)),
        "{v}"
    );
    assert_eq!(v["title"], "This link is no longer valid");
    j.gw.poll(&id).await.assert_error(400, "expired_token");
}
