//! The e-mail notifier: a plain-text and HTML message with the binding message, the client's
//! name and the one-time link, over SMTP (lettre on rustls; STARTTLS, implicit TLS or none).

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::Delivery;
use super::retry::{AttemptError, RetryPolicy};
use crate::clock::Clock;
use crate::config::{EmailConfig, Problems, SmtpTls, required_reference};

/// What the message says.
#[derive(Debug, Clone, Template)]
#[template(path = "email.html")]
pub struct ApprovalEmail {
    /// The requesting client's name.
    pub client_name: String,
    /// The binding message, if any.
    pub binding_message: Option<String>,
    /// The requested scopes.
    pub scopes: Vec<String>,
    /// The one-time approval link.
    pub link: String,
    /// Minutes until the request expires.
    pub minutes: u64,
}

impl ApprovalEmail {
    fn text(&self) -> String {
        let mut t = format!("{} asks you to approve a sign-in.\n\n", self.client_name);
        if let Some(m) = &self.binding_message {
            t.push_str(&format!(
                "Check that this code matches the one it shows: {m}\n\n"
            ));
        }
        t.push_str(&format!(
            "It asks for: {}\n\nOpen this link to approve or deny (it expires in about {} minutes):\n{}\n\n\
             If you did not expect this, deny it or ignore this message.\n",
            self.scopes.join(", "),
            self.minutes,
            self.link
        ));
        t
    }
}

/// A configured SMTP notifier.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Email {
    /// Builds the notifier from configuration, loading its CA file and password; every
    /// problem is recorded under its `channel.email.*` path.
    pub fn new(cfg: &EmailConfig, problems: &mut Problems) -> Option<Self> {
        let mut tls_params = || -> Option<TlsParameters> {
            let mut b = TlsParameters::builder(cfg.host.clone());
            if let Some(ca) = &cfg.ca_file {
                let cert = std::fs::read(ca)
                    .map_err(|e| format!("{}: {e}", ca.display()))
                    .and_then(|pem| Certificate::from_pem(&pem).map_err(|e| e.to_string()));
                b = b.add_root_certificate(problems.take("channel.email.ca_file", cert)?);
            }
            problems.take(
                "channel.email.tls",
                b.build_rustls().map_err(|e| e.to_string()),
            )
        };
        let tls = match cfg.tls {
            SmtpTls::None => Some(Tls::None),
            SmtpTls::Starttls => tls_params().map(Tls::Required),
            SmtpTls::Implicit => tls_params().map(Tls::Wrapper),
        };
        let password = match &cfg.password {
            Some(r) => problems
                .take("channel.email.password", required_reference(r))
                .map(|s| s.expose().to_owned()),
            None => Some(String::new()),
        };
        let from = problems.take(
            "channel.email.from",
            cfg.from
                .parse::<Mailbox>()
                .map_err(|e| format!("is not a valid mailbox: {e}")),
        );
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            .port(cfg.port)
            .tls(tls?)
            .timeout(Some(Duration::from_millis(cfg.timeout_ms)));
        let password = password?;
        if let Some(user) = &cfg.username {
            b = b.credentials(Credentials::new(user.clone(), password));
        }
        Some(Self {
            transport: b.build(),
            from: from?,
            retry: RetryPolicy {
                initial: Duration::from_millis(cfg.retry_initial_ms),
                max_attempts: cfg.max_attempts,
            },
        })
    }

    /// Sends the approval e-mail to `to`, retrying transient failures.
    pub async fn deliver(
        self: Arc<Self>,
        to: String,
        mail: ApprovalEmail,
        expires_at_ms: u64,
        clock: Arc<dyn Clock>,
    ) -> Delivery {
        let Ok(to) = to.parse::<Mailbox>() else {
            return Delivery::Failed {
                attempts: 0,
                reason: "the user's e-mail address is not valid".into(),
            };
        };
        let html = match mail.render() {
            Ok(h) => h,
            Err(e) => {
                return Delivery::Failed {
                    attempts: 0,
                    reason: e.to_string(),
                };
            }
        };
        let subject = format!("Approve the sign-in request from {}", mail.client_name);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(mail.text(), html));
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                return Delivery::Failed {
                    attempts: 0,
                    reason: e.to_string(),
                };
            }
        };
        self.retry
            .run(expires_at_ms, clock.as_ref(), || async {
                self.transport
                    .send(message.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        if e.is_permanent() {
                            AttemptError::Permanent(e.to_string())
                        } else {
                            AttemptError::Transient(e.to_string())
                        }
                    })
            })
            .await
    }
}
