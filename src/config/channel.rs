//! How the user is reached and the decision collected (`channel`), and the settings of outbound
//! calls.

use serde::Deserialize;
use url::Url;

use super::{Config, ConfigError, SecretRef, UsersConfig, check_http_url};

/// Outbound HTTP settings shared by every call the gateway makes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outbound {
    /// Total timeout of a call, milliseconds. Default 5000.
    pub timeout_ms: u64,
    /// Allow loopback, private and link-local targets (SSRF guard, SEC-05). Default false.
    pub allow_private_networks: bool,
}

impl Default for Outbound {
    fn default() -> Self {
        Self {
            timeout_ms: 5000,
            allow_private_networks: false,
        }
    }
}

/// The authentication channel.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum ChannelConfig {
    /// Development: log a one-time link to the built-in approval page.
    #[default]
    Log,
    /// Keycloak-compatible "HTTP Authentication Channel".
    Http {
        /// Where the authentication requests are POSTed.
        url: Url,
        /// Key for the request-bound bearer tokens (HS256). Default: random per process, so
        /// tokens die with a restart. Set it when several instances share a store.
        #[serde(default)]
        bearer_secret: Option<SecretRef>,
        /// Outbound call settings.
        #[serde(default)]
        outbound: Outbound,
    },
    /// Send the user a one-time link to the gateway's approval page through a notifier.
    Notify {
        /// The notifier used unless the user's directory entry names another. Default `log`.
        #[serde(default)]
        default: NotifierKind,
        /// Webhook settings (required when any user may be notified by webhook).
        #[serde(default)]
        webhook: Option<WebhookConfig>,
        /// E-mail settings (required when any user may be notified by e-mail).
        #[serde(default)]
        email: Option<EmailConfig>,
    },
}

/// How a user is reached with their approval link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifierKind {
    /// Write the link to the gateway's log (development).
    #[default]
    Log,
    /// POST a signed JSON event (Standard Webhooks) to a URL.
    Webhook,
    /// Send an e-mail over SMTP to the user's address.
    Email,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// STARTTLS, required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// Plain text: only for a relay on the same host or in tests.
    None,
}

/// An e-mail notifier: a plain-text and HTML message with the binding message, the client's
/// name and the approval link, sent over SMTP (lettre, rustls).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server host.
    pub host: String,
    /// SMTP port. Default 587.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// Connection security. Default `starttls`.
    #[serde(default = "default_smtp_tls")]
    pub tls: SmtpTls,
    /// PEM CA bundle for a private CA (TLS modes). Default: the webpki roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// SMTP user name, if the server wants authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP password: a `${ENV}` or `file:` reference.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// The sender, e.g. `Sign-in <noreply@example.com>`.
    pub from: String,
    /// Timeout of one delivery, milliseconds. Default 10000.
    #[serde(default = "default_smtp_timeout")]
    pub timeout_ms: u64,
    /// First retry delay, milliseconds; doubled after each failure. Default 1000.
    #[serde(default = "default_retry_ms")]
    pub retry_initial_ms: u64,
    /// Most delivery attempts. Default 5.
    #[serde(default = "default_smtp_attempts")]
    pub max_attempts: u32,
}

fn default_smtp_port() -> u16 {
    587
}

fn default_smtp_tls() -> SmtpTls {
    SmtpTls::Starttls
}

fn default_smtp_timeout() -> u64 {
    10_000
}

fn default_smtp_attempts() -> u32 {
    5
}

/// A webhook notifier: JSON POST signed with HMAC-SHA256 in the Standard Webhooks scheme
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed.
    pub url: Url,
    /// The signing secret, `whsec_<base64>`: a `${ENV}` or `file:` reference.
    pub secret: SecretRef,
    /// First retry delay, milliseconds; doubled after each failure, until the request expires.
    /// Default 1000.
    #[serde(default = "default_retry_ms")]
    pub retry_initial_ms: u64,
    /// Most delivery attempts. Default 8.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Outbound call settings (timeout, SSRF guard).
    #[serde(default)]
    pub outbound: Outbound,
}

fn default_retry_ms() -> u64 {
    1000
}

fn default_attempts() -> u32 {
    8
}

impl ChannelConfig {
    /// Shape only: secrets (the webhook key, the SMTP password, the bearer secret) are loaded
    /// and judged by [`crate::channel::Channel::from_config`].
    pub(super) fn check(&self, cfg: &Config, errs: &mut Vec<ConfigError>) {
        match self {
            ChannelConfig::Log => {}
            ChannelConfig::Notify {
                default,
                webhook,
                email,
            } => {
                let user_wants = |k: NotifierKind| {
                    *default == k
                        || matches!(&cfg.users, UsersConfig::Static { users } if users.iter().any(|u| u.notify == Some(k)))
                };
                match email {
                    None if user_wants(NotifierKind::Email) => errs.push(ConfigError::new(
                        "channel.email",
                        "is required for the e-mail notifier",
                    )),
                    Some(e) if e.max_attempts == 0 => errs.push(ConfigError::new(
                        "channel.email.max_attempts",
                        "must be positive",
                    )),
                    _ => {}
                }
                match webhook {
                    None if user_wants(NotifierKind::Webhook) => errs.push(ConfigError::new(
                        "channel.webhook",
                        "is required for the webhook notifier",
                    )),
                    None => {}
                    Some(w) => {
                        check_http_url(errs, "channel.webhook.url", &w.url);
                        if w.max_attempts == 0 {
                            errs.push(ConfigError::new(
                                "channel.webhook.max_attempts",
                                "must be positive",
                            ));
                        }
                    }
                }
            }
            ChannelConfig::Http { url, .. } => {
                check_http_url(errs, "channel.url", url);
            }
        }
    }
}
