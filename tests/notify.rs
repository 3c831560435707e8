//! The notify channel with the webhook notifier, against a real webhook receiver: Standard
//! Webhooks signatures, retries with backoff, failures visible in the request's delivery state
//! while polling keeps working, the notifier chosen per user, and the SSRF guard.

use ciba_test_support as common;

use std::time::Duration;

use base64::Engine as _;
use ciba_gateway::config::{
    ChannelConfig, NotifierKind, Outbound, SecretRef, SmtpTls, UsersConfig, WebhookConfig,
};
use ciba_gateway::store::Delivery;
use ciba_gateway::webhook_signature;
use common::webhook::receiver;
use common::*;
use serde_json::Value;

const KEY_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAAAAAAAAAA=";

fn secret_file() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("ciba-whsec-{}", ciba_test_support::random_token()));
    std::fs::write(&p, format!("whsec_{KEY_B64}\n")).unwrap();
    p
}

fn channel(
    url: &str,
    secret: &std::path::Path,
    allow_private: bool,
    max_attempts: u32,
) -> ChannelConfig {
    ChannelConfig::Notify {
        default: NotifierKind::Webhook,
        webhook: Some(WebhookConfig {
            url: url.parse().unwrap(),
            secret: SecretRef::new(format!("file:{}", secret.display())),
            retry_initial_ms: 20,
            max_attempts,
            outbound: Outbound {
                timeout_ms: 2000,
                allow_private_networks: allow_private,
            },
        }),
        email: None,
    }
}

/// Waits until the request's delivery is no longer pending.
async fn settled(gw: &Gateway, id: &str) -> Delivery {
    eventually_some("the delivery settles", || async {
        gw.engine
            .delivery(id)
            .await
            .filter(|d| *d != Delivery::Pending)
    })
    .await
}

#[tokio::test]
async fn webhook_is_signed_with_standard_webhooks_and_carries_a_working_link() {
    let rx = receiver(vec![204]).await;
    let secret = secret_file();
    let gw = start(|c| c.channel = channel(&rx.url, &secret, true, 3)).await;
    let id = gw.start_request().await;
    assert_eq!(settled(&gw, &id).await, Delivery::Delivered { attempts: 1 });
    let got = rx.got.lock().unwrap()[0].clone();
    let (msg_id, ts, sig) = (
        got.headers["webhook-id"].to_str().unwrap(),
        got.headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        got.headers["webhook-signature"].to_str().unwrap(),
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY_B64)
        .unwrap();
    assert_eq!(
        sig,
        webhook_signature(&key, msg_id, ts, got.body.as_bytes()),
        "the receiver can verify it"
    );
    let event: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(event["type"], "ciba.approval_requested");
    assert_eq!(event["data"]["binding_message"], "1234");
    assert_eq!(event["data"]["client_name"], "Post Client");
    assert!(
        !got.body.contains(&id),
        "the auth_req_id is never sent to the user"
    );
    // The link opens the approval page.
    let link = event["data"]["approval_url"].as_str().unwrap();
    assert_eq!(gw.http.get(link).send().await.unwrap().status(), 200);
    let _ = std::fs::remove_file(secret);
}

#[tokio::test]
async fn webhook_retries_with_backoff_and_keeps_its_id() {
    let rx = receiver(vec![500, 503, 200]).await;
    let secret = secret_file();
    let gw = start(|c| c.channel = channel(&rx.url, &secret, true, 5)).await;
    let id = gw.start_request().await;
    assert_eq!(settled(&gw, &id).await, Delivery::Delivered { attempts: 3 });
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert!(
        got.iter()
            .all(|r| r.headers["webhook-id"] == got[0].headers["webhook-id"])
    );
    let _ = std::fs::remove_file(secret);
}

#[tokio::test]
async fn failed_delivery_is_visible_and_polling_keeps_working() {
    let rx = receiver(vec![500]).await;
    let secret = secret_file();
    let gw = start(|c| c.channel = channel(&rx.url, &secret, true, 2)).await;
    let id = gw.start_request().await;
    match settled(&gw, &id).await {
        Delivery::Failed { attempts, reason } => {
            assert_eq!(attempts, 2);
            assert!(reason.contains("500"), "{reason}");
        }
        d => panic!("expected a failure, got {d:?}"),
    }
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
    let _ = std::fs::remove_file(secret);
}

#[tokio::test]
async fn the_directory_chooses_the_notifier_per_user() {
    let rx = receiver(vec![200]).await;
    let secret = secret_file();
    let gw = start(|c| {
        c.channel = channel(&rx.url, &secret, true, 2);
        if let UsersConfig::Static { users } = &mut c.users {
            users[1].notify = Some(NotifierKind::Log); // bob
        }
    })
    .await;
    let r = gw.bc(&[("scope", "openid"), ("login_hint", "bob")]).await;
    let id = r.json["auth_req_id"].as_str().unwrap();
    assert_eq!(settled(&gw, id).await, Delivery::Delivered { attempts: 1 });
    assert!(
        rx.got.lock().unwrap().is_empty(),
        "bob is notified through the log, not the webhook"
    );
    let _ = std::fs::remove_file(secret);
}

#[tokio::test]
async fn sec_05_webhook_to_loopback_is_refused_unless_allowed() {
    let rx = receiver(vec![200]).await;
    let secret = secret_file();
    let gw = start(|c| c.channel = channel(&rx.url, &secret, false, 5)).await;
    let id = gw.start_request().await;
    match settled(&gw, &id).await {
        Delivery::Failed {
            attempts: 1,
            reason,
        } => assert!(reason.contains("SSRF"), "{reason}"),
        d => panic!("expected an SSRF refusal, got {d:?}"),
    }
    assert!(rx.got.lock().unwrap().is_empty());
    let _ = std::fs::remove_file(secret);
}

fn email_channel(port: u16) -> ChannelConfig {
    ChannelConfig::Notify {
        default: NotifierKind::Email,
        webhook: None,
        email: Some(common::smtp::email_config(port, 20, 2)),
    }
}

#[tokio::test]
async fn email_carries_the_binding_message_client_and_a_working_link() {
    let (port, mut mails) = common::smtp::start(&[]).await;
    let gw = start(|c| c.channel = email_channel(port)).await;
    let id = gw.start_request().await;
    let mail = tokio::time::timeout(Duration::from_secs(10), mails.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(settled(&gw, &id).await, Delivery::Delivered { attempts: 1 });
    assert_eq!(mail.to, vec!["Alice@Example.com".to_owned()]);
    assert!(mail.from.contains("noreply@gateway.example"));
    assert!(
        mail.data.contains("multipart/alternative"),
        "plain text and HTML"
    );
    assert!(mail.data.contains("text/html"));
    assert!(mail.data.contains("Post Client"));
    assert!(mail.data.contains("1234"));
    assert!(!mail.data.contains(&id), "the auth_req_id is never mailed");
    // The link in the message opens the approval page (quoted-printable may wrap it: unfold).
    let unfolded = mail.data.replace("=\n", "").replace("=3D", "=");
    let start = unfolded
        .find(&format!("{}/approve/", gw.url))
        .expect("the link is in the message");
    let link: String = unfolded[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || ":/._-".contains(*c))
        .collect();
    assert_eq!(gw.http.get(&link).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn email_to_a_rejected_recipient_fails_visibly_without_retrying() {
    let (port, _mails) = common::smtp::start(&["Alice@Example.com"]).await;
    let gw = start(|c| c.channel = email_channel(port)).await;
    let id = gw.start_request().await;
    match settled(&gw, &id).await {
        Delivery::Failed {
            attempts: 1,
            reason,
        } => assert!(
            reason.contains("550") || reason.to_lowercase().contains("permanent"),
            "{reason}"
        ),
        d => panic!("expected a permanent failure, got {d:?}"),
    }
    gw.poll(&id)
        .await
        .assert_error(400, "authorization_pending");
}

#[tokio::test]
async fn email_to_a_user_without_an_address_fails_visibly() {
    let (port, _mails) = common::smtp::start(&[]).await;
    let gw = start(|c| {
        c.channel = email_channel(port);
        if let UsersConfig::Static { users } = &mut c.users {
            users[1].email = None; // bob
        }
    })
    .await;
    let r = gw.bc(&[("scope", "openid"), ("login_hint", "bob")]).await;
    let id = r.json["auth_req_id"].as_str().unwrap();
    assert!(matches!(
        settled(&gw, id).await,
        Delivery::Failed { attempts: 0, .. }
    ));
}

async fn email_over_tls(mode: SmtpTls) {
    use common::smtp::SinkTls;
    let pki = common::pki::Pki::new();
    let sink_tls = match mode {
        SmtpTls::Implicit => SinkTls::Implicit(pki.acceptor()),
        _ => SinkTls::StartTls(pki.acceptor()),
    };
    let (port, mut mails) = common::smtp::start_with(&[], Some(sink_tls)).await;
    let tls_channel = |ca: Option<&str>| {
        let mut c = email_channel(port);
        if let ChannelConfig::Notify { email: Some(e), .. } = &mut c {
            e.host = "localhost".into();
            e.tls = mode;
            e.ca_file = ca.map(Into::into);
        }
        c
    };
    // Trusting the test CA: delivered over TLS.
    let ca = pki.path("ca.pem");
    let gw = start(|c| c.channel = tls_channel(Some(&ca))).await;
    let id = gw.start_request().await;
    assert_eq!(settled(&gw, &id).await, Delivery::Delivered { attempts: 1 });
    let mail = tokio::time::timeout(Duration::from_secs(10), mails.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(mail.data.contains("Post Client"));
    // Without it the server's certificate is not trusted: nothing is sent, in the clear or not.
    let gw = start(|c| c.channel = tls_channel(None)).await;
    let id = gw.start_request().await;
    assert!(matches!(settled(&gw, &id).await, Delivery::Failed { .. }));
    assert!(mails.try_recv().is_err());
}

#[tokio::test]
async fn email_over_implicit_tls_verifies_the_smtp_server() {
    email_over_tls(SmtpTls::Implicit).await;
}

#[tokio::test]
async fn email_over_starttls_verifies_the_smtp_server() {
    email_over_tls(SmtpTls::Starttls).await;
}
