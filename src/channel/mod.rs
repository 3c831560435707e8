//! The authentication channel: how the user is reached once a request is accepted, and how
//! their decision comes back.
//!
//! - `channel.type: log` (development): the one-time link to the built-in approval page is
//!   written to the log (a [`Channel::Notify`] whose only notifier is the log).
//! - [`Channel::Http`]: Keycloak's "HTTP Authentication Channel" contract, so authenticator
//!   services written for Keycloak plug in unchanged.
//! - [`Channel::Notify`]: a one-time link to the approval page, sent by a notifier chosen per
//!   deployment and per user (log, or a signed webhook), delivered in the background.

mod email;
mod http;
mod retry;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use email::{ApprovalEmail, Email};
pub use http::{CallbackStatus, HttpChannel};
pub use retry::{AttemptError, RetryPolicy};
pub use webhook::{Webhook, signature as webhook_signature, webhook_key};

use crate::clock::Clock;
use crate::config::NotifierKind;

use crate::clients::Client;
use crate::config::{ChannelConfig, ConfigError, resolve_secret};
use crate::store::PendingRequest;
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

/// How far the notification of one request got (visible through
/// [`crate::Engine::delivery`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Being delivered (or retried).
    Pending,
    /// Accepted by the notifier's target.
    Delivered {
        /// Attempts it took.
        attempts: u32,
    },
    /// Given up: the reason is also logged.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
}

/// Notifiers that send the approval link, with the delivery state of recent requests.
pub struct Notifiers {
    default: NotifierKind,
    /// Whether the user's directory entry may choose the notifier.
    per_user: bool,
    webhook: Option<Arc<Webhook>>,
    email: Option<Arc<Email>>,
    clock: Arc<dyn Clock>,
    deliveries: moka::sync::Cache<String, Delivery>,
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
    ) -> Result<Self, ConfigError> {
        Ok(match cfg {
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
                let webhook = match webhook {
                    Some(w) => Some(Arc::new(
                        Webhook::new(w).map_err(|m| ConfigError::new("channel.webhook", m))?,
                    )),
                    None => None,
                };
                let email = match email {
                    Some(e) => Some(Arc::new(
                        Email::new(e).map_err(|m| ConfigError::new("channel.email", m))?,
                    )),
                    None => None,
                };
                Self::Notify(Box::new(Notifiers::new(
                    *default, true, webhook, email, clock,
                )))
            }
            ChannelConfig::Http {
                url,
                bearer_secret,
                outbound,
            } => {
                let secret = match bearer_secret {
                    Some(r) => resolve_secret(r)
                        .map_err(|m| ConfigError::new("channel.bearer_secret", m))?,
                    None => None,
                };
                Self::Http(Box::new(HttpChannel::new(
                    url.clone(),
                    secret,
                    outbound,
                    issuer,
                )))
            }
        })
    }

    /// The delivery state of a request's notification (notify channel only).
    pub fn delivery(&self, auth_req_id: &str) -> Option<Delivery> {
        match self {
            Self::Notify(n) => n.deliveries.get(auth_req_id),
            _ => None,
        }
    }

    /// Reaches the user.
    pub async fn notify(&self, n: &Notification<'_>) -> Result<(), ChannelError> {
        match self {
            Self::Notify(notifiers) => {
                notifiers.send(n);
                Ok(())
            }
            Self::Http(h) => h.notify(n).await,
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
        let deliveries = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(Duration::from_secs(24 * 3600))
            .build();
        Self {
            default,
            per_user,
            webhook,
            email,
            clock,
            deliveries,
        }
    }

    /// Starts the notification of one request; never waits for the notifier.
    fn send(&self, n: &Notification<'_>) {
        let kind = if self.per_user {
            n.user.notify.unwrap_or(self.default)
        } else {
            self.default
        };
        match kind {
            NotifierKind::Email => {
                let key = n.request.id.as_str().to_owned();
                let (Some(email), Some(to)) = (self.email.clone(), n.user.email.clone()) else {
                    let reason = if self.email.is_none() {
                        "no e-mail notifier is configured"
                    } else {
                        "the user has no e-mail address"
                    };
                    tracing::warn!(subject = %n.user.subject, reason, "approval e-mail not sent");
                    self.deliveries.insert(
                        key,
                        Delivery::Failed {
                            attempts: 0,
                            reason: reason.into(),
                        },
                    );
                    return;
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
                self.deliveries.insert(key.clone(), Delivery::Pending);
                let (deliveries, clock, expires) = (
                    self.deliveries.clone(),
                    Arc::clone(&self.clock),
                    n.request.expires_at_ms,
                );
                tokio::spawn(async move {
                    let state = email.deliver(to, mail, expires, clock).await;
                    deliveries.insert(key, state);
                });
            }
            NotifierKind::Log => {
                // Development: the link is meant to be read from the log. The auth_req_id is
                // never part of it.
                tracing::info!(client_id = %n.client.id, subject = %n.user.subject, "approval requested; open {}", n.approval_url);
                self.deliveries.insert(
                    n.request.id.as_str().to_owned(),
                    Delivery::Delivered { attempts: 1 },
                );
            }
            NotifierKind::Webhook => {
                let Some(webhook) = self.webhook.clone() else {
                    // Config validation requires a webhook when any user may need one.
                    self.deliveries.insert(
                        n.request.id.as_str().to_owned(),
                        Delivery::Failed {
                            attempts: 0,
                            reason: "no webhook is configured".into(),
                        },
                    );
                    return;
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
                let body = Bytes::from(event.to_string());
                let msg_id = format!("msg_{}", crate::protocol::random_token());
                let key = n.request.id.as_str().to_owned();
                self.deliveries.insert(key.clone(), Delivery::Pending);
                let (deliveries, clock, expires) = (
                    self.deliveries.clone(),
                    Arc::clone(&self.clock),
                    n.request.expires_at_ms,
                );
                tokio::spawn(async move {
                    let state = webhook.deliver(msg_id, body, expires, clock).await;
                    deliveries.insert(key, state);
                });
            }
        }
    }
}
