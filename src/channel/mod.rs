//! The authentication channel: how the user is reached once a request is accepted, and how
//! their decision comes back.
//!
//! - [`Channel::Log`] (development): writes a one-time link to the built-in approval page.
//! - [`Channel::Http`]: Keycloak's "HTTP Authentication Channel" contract, so authenticator
//!   services written for Keycloak plug in unchanged.

mod http;

pub use http::{CallbackStatus, HttpChannel};

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

/// The configured channel.
#[derive(Debug)]
pub enum Channel {
    /// Log the approval link (development).
    Log,
    /// Keycloak-compatible HTTP authentication channel.
    Http(Box<HttpChannel>),
}

impl Channel {
    /// Builds the channel from configuration.
    pub fn from_config(cfg: &ChannelConfig, issuer: &str) -> Result<Self, ConfigError> {
        Ok(match cfg {
            ChannelConfig::Log => Self::Log,
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

    /// Reaches the user.
    pub async fn notify(&self, n: &Notification<'_>) -> Result<(), ChannelError> {
        match self {
            Self::Log => {
                // Development channel: the link is meant to be read from the log. The
                // auth_req_id is never part of it.
                tracing::info!(
                    client_id = %n.client.id,
                    subject = %n.user.subject,
                    "approval requested; open {}",
                    n.approval_url
                );
                Ok(())
            }
            Self::Http(h) => h.notify(n).await,
        }
    }
}
