//! The authentication channel: how the user is reached once a request is accepted, and how
//! their decision comes back.
//!
//! - `channel.type: log` (development): the one-time link to the built-in approval page is
//!   written to the log (a [`Channel::Notify`] whose only notifier is the log).
//! - [`Channel::Http`]: Keycloak's "HTTP Authentication Channel" contract, so authenticator
//!   services written for Keycloak plug in unchanged.
//! - [`Channel::Notify`]: a one-time link to the approval page, sent by a notifier chosen per
//!   deployment and per user (log, or a signed webhook), delivered in the background.

/// The log target of the `log` channel's approval links: the line is the notification.
pub(crate) const LOG_CHANNEL_TARGET: &str = "ciba_gateway::channel::log";

mod client_notify;
mod email;
mod http;
mod retry;
mod webhook;

use std::sync::Arc;

use bytes::Bytes;

pub use client_notify::{ClientNotifier, Notify, PushBody};
pub use email::{ApprovalEmail, Email};
pub use http::{CallbackStatus, HttpChannel};
pub use webhook::{Webhook, signature as webhook_signature, webhook_key};

use crate::clock::Clock;
use crate::config::NotifierKind;

use crate::clients::Client;
use crate::config::{ChannelConfig, ConfigErrors, Problems, required_reference};
use crate::domain::PendingRequest;
use crate::users::User;

/// What a channel needs to reach the user about one request.
#[derive(Debug)]
pub struct Notification<'a> {
    /// The accepted request.
    pub request: &'a PendingRequest,
    /// The requesting client.
    pub client: &'a Client,
    /// The user to reach.
    pub user: &'a User,
    /// The hint the client sent, as it sent it.
    pub login_hint: &'a str,
    /// The one-time approval link.
    pub approval_url: &'a str,
}

/// Why the user could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("authentication channel failed: {0}")]
pub struct ChannelError(pub String);

pub use crate::domain::Delivery;

/// How a notification went, as far as the channel can tell when it returns.
pub enum Notified {
    /// Settled already (the log, or an authenticator that answered).
    Settled(Delivery),
    /// Under way in the background: resolves to the final state.
    InFlight(std::pin::Pin<Box<dyn std::future::Future<Output = Delivery> + Send>>),
}

impl std::fmt::Debug for Notified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Settled(d) => f.debug_tuple("Settled").field(d).finish(),
            Self::InFlight(_) => f.write_str("InFlight"),
        }
    }
}

/// Notifiers that send the approval link.
pub struct Notifiers {
    default: NotifierKind,
    /// Whether the user's directory entry may choose the notifier.
    per_user: bool,
    webhook: Option<Arc<Webhook>>,
    email: Option<Arc<Email>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifiers")
            .field("default", &self.default)
            .field("webhook", &self.webhook)
            .finish()
    }
}

/// The configured channel.
#[derive(Debug)]
pub enum Channel {
    /// Keycloak-compatible HTTP authentication channel.
    Http(Box<HttpChannel>),
    /// Send the approval link through a notifier.
    Notify(Box<Notifiers>),
}

impl Channel {
    /// Builds the channel from configuration.
    pub fn from_config(
        cfg: &ChannelConfig,
        issuer: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::new();
        let channel = match cfg {
            ChannelConfig::Log => Self::Notify(Box::new(Notifiers::new(
                NotifierKind::Log,
                false,
                None,
                None,
                clock,
            ))),
            ChannelConfig::Notify {
                default,
                webhook,
                email,
            } => {
                let webhook = webhook
                    .as_ref()
                    .and_then(|w| problems.take("channel.webhook.secret", Webhook::new(w)))
                    .map(Arc::new);
                let email = email
                    .as_ref()
                    .and_then(|e| Email::new(e, &mut problems))
                    .map(Arc::new);
                Self::Notify(Box::new(Notifiers::new(
                    *default, true, webhook, email, clock,
                )))
            }
            ChannelConfig::Http {
                url,
                bearer_secret,
                outbound,
            } => {
                let secret = bearer_secret.as_ref().and_then(|r| {
                    problems.take(
                        "channel.bearer_secret",
                        required_reference(r).and_then(|s| {
                            if s.expose().len() < 32 {
                                Err("must be at least 32 characters".to_owned())
                            } else {
                                Ok(s)
                            }
                        }),
                    )
                });
                Self::Http(Box::new(HttpChannel::new(
                    url.clone(),
                    secret,
                    outbound,
                    issuer,
                )))
            }
        };
        problems.finish(|| channel)
    }

    /// Carries over what `previous` (the channel before a reload) holds for pending requests:
    /// the HTTP channel's key for its callbacks' bearer tokens (kept signing if both were
    /// random, else kept verifying for `keep_secs` from `now`, Unix seconds).
    pub(crate) fn adopt(&mut self, previous: &Channel, now: u64, keep_secs: u64) {
        if let (Self::Http(next), Self::Http(before)) = (self, previous) {
            next.adopt_key(before, now, keep_secs);
        }
    }

    /// Reaches the user. An error means the user could not be reached at all (the request is
    /// then refused); a notifier's later failure is reported through [`Notified::InFlight`].
    pub async fn notify(&self, n: &Notification<'_>) -> Result<Notified, ChannelError> {
        match self {
            Self::Notify(notifiers) => Ok(notifiers.send(n)),
            Self::Http(h) => h
                .notify(n)
                .await
                .map(|()| Notified::Settled(Delivery::Delivered { attempts: 1 })),
        }
    }
}

impl Notifiers {
    fn new(
        default: NotifierKind,
        per_user: bool,
        webhook: Option<Arc<Webhook>>,
        email: Option<Arc<Email>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            default,
            per_user,
            webhook,
            email,
            clock,
        }
    }

    /// Starts the notification of one request; never waits for the notifier.
    fn send(&self, n: &Notification<'_>) -> Notified {
        let kind = if self.per_user {
            n.user.notify.unwrap_or(self.default)
        } else {
            self.default
        };
        let failed = |reason: &str| {
            tracing::warn!(subject = %n.user.subject, reason, "approval notification not sent");
            Notified::Settled(Delivery::Failed {
                attempts: 0,
                reason: reason.into(),
            })
        };
        let (clock, expires) = (Arc::clone(&self.clock), n.request.expires_at_ms);
        match kind {
            NotifierKind::Log => {
                // Development: the link is meant to be read from the log. The auth_req_id is
                // never part of it. The line is the delivery, so the log's limit never holds it
                // back (it is one line per accepted request, like the audit trail's).
                tracing::info!(target: LOG_CHANNEL_TARGET, client_id = %n.client.id, subject = %n.user.subject, "approval requested; open {}", n.approval_url);
                Notified::Settled(Delivery::Delivered { attempts: 1 })
            }
            NotifierKind::Email => {
                let Some(email) = self.email.clone() else {
                    return failed("no e-mail notifier is configured");
                };
                let Some(to) = n.user.email.clone() else {
                    return failed("the user has no e-mail address");
                };
                let mail = ApprovalEmail {
                    client_name: n.client.name.clone(),
                    binding_message: n.request.binding_message.clone(),
                    scopes: n.request.scope.iter().map(str::to_owned).collect(),
                    link: n.approval_url.to_owned(),
                    minutes: n
                        .request
                        .expires_at_ms
                        .saturating_sub(n.request.created_at_ms)
                        .div_ceil(60_000),
                };
                Notified::InFlight(Box::pin(email.deliver(to, mail, expires, clock)))
            }
            NotifierKind::Webhook => {
                let Some(webhook) = self.webhook.clone() else {
                    return failed("no webhook is configured");
                };
                let event = serde_json::json!({
                    "type": "ciba.approval_requested",
                    "data": {
                        "approval_url": n.approval_url,
                        "binding_message": n.request.binding_message,
                        "client_id": n.client.id,
                        "client_name": n.client.name,
                        "scope": n.request.scope.as_str(),
                        "subject": n.user.subject,
                        "name": n.user.name,
                        "email": n.user.email,
                        "phone": n.user.phone,
                        "expires_at": n.request.expires_at_ms / 1000,
                    }
                });
                let msg_id = format!("msg_{}", crate::protocol::random_token());
                Notified::InFlight(Box::pin(webhook.deliver(
                    msg_id,
                    Bytes::from(event.to_string()),
                    expires,
                    clock,
                )))
            }
        }
    }
}
