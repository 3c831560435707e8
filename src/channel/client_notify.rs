//! Calls to a client's registered notification endpoint, with its `client_notification_token`
//! as the bearer, once the user has decided:
//!
//! - ping (CIBA §10.2, PING-01…07): `{"auth_req_id": …}`; the client then redeems at the token
//!   endpoint, and a failed ping never cancels the grant (PING-05);
//! - push (CIBA §10.3, §12, PUSH-01, PUSH-ERR-01): the token response plus `auth_req_id`, or the
//!   error; the tokens go nowhere else.
//!
//! Every call is guarded like every outbound call (SEC-05): HTTPS, the SSRF guard, no
//! redirects, no cookies, a short timeout, the body never read. 5xx answers and connections that
//! could not be made are retried with doubling delays, never past the request's expiry; a 3xx,
//! 401 or 403 is final. A ping is also retried after a timeout or a connection lost mid-call; a
//! push is not (the tokens may have arrived: they are delivered at most once).

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::Delivery;
use super::retry::{AttemptError, RetryPolicy};
use crate::clock::Clock;
use crate::config::{ClientNotifications, ConfigErrors, Problems};
use crate::outbound::OutboundClient;
use crate::protocol::{AuthReqId, NotificationToken};

/// Calls ping and push clients' notification endpoints.
#[derive(Debug, Clone)]
pub struct ClientNotifier {
    client: OutboundClient,
    retry: RetryPolicy,
}

/// Where and how to reach one client about one request.
#[derive(Debug, Clone)]
pub struct Notify {
    /// The client's registered endpoint.
    pub endpoint: Url,
    /// The bearer the client gave with its request.
    pub token: NotificationToken,
    /// The request that was decided.
    pub auth_req_id: AuthReqId,
    /// When the request expires, Unix ms: no retry after that.
    pub expires_at_ms: u64,
}

/// What a push carries (PUSH-01, PUSH-ERR-01). `Debug` shows no token.
pub enum PushBody {
    /// The token response members.
    Tokens(serde_json::Map<String, serde_json::Value>),
    /// `access_denied`, `expired_token` or `transaction_failed`.
    Error(&'static str),
}

impl std::fmt::Debug for PushBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tokens(_) => f.write_str("Tokens(<redacted>)"),
            Self::Error(e) => f.debug_tuple("Error").field(e).finish(),
        }
    }
}

impl ClientNotifier {
    /// The notifier for `ciba.client_notifications` (its CA file loaded here, once).
    pub fn from_config(cfg: &ClientNotifications) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::new();
        let roots = match &cfg.ca_file {
            Some(ca) => problems
                .take(
                    "ciba.client_notifications.ca_file",
                    crate::tls::pem_certificates(ca),
                )
                .unwrap_or_default(),
            None => Vec::new(),
        };
        problems.finish(|| Self {
            client: OutboundClient::with_roots(&cfg.outbound, &roots),
            retry: RetryPolicy {
                initial: Duration::from_millis(cfg.retry_initial_ms),
                max_attempts: cfg.max_attempts,
            },
        })
    }

    /// Pings (PING-01: exactly `{"auth_req_id": …}` with the bearer), retrying as the policy
    /// allows; returns how far it got.
    pub async fn ping(self: Arc<Self>, to: Notify, clock: Arc<dyn Clock>) -> Delivery {
        let body = serde_json::json!({ "auth_req_id": to.auth_req_id.as_str() }).to_string();
        self.send(to, body, true, clock).await
    }

    /// Pushes the tokens or the error, with `auth_req_id` (PUSH-01, PUSH-ERR-01), at most once.
    pub async fn push(
        self: Arc<Self>,
        to: Notify,
        body: PushBody,
        clock: Arc<dyn Clock>,
    ) -> Delivery {
        let mut doc = match body {
            PushBody::Tokens(t) => t,
            PushBody::Error(e) => {
                let mut m = serde_json::Map::new();
                m.insert("error".into(), e.into());
                m
            }
        };
        doc.insert("auth_req_id".into(), to.auth_req_id.as_str().into());
        let body = serde_json::Value::Object(doc).to_string();
        self.send(to, body, false, clock).await
    }

    /// One notification, retried as the policy allows; a call that may have been received (a
    /// timeout, a connection lost after sending) is retried only if `retry_uncertain`.
    async fn send(
        &self,
        to: Notify,
        body: String,
        retry_uncertain: bool,
        clock: Arc<dyn Clock>,
    ) -> Delivery {
        let ping = &to;
        self.retry
            .run(ping.expires_at_ms, clock.as_ref(), || async {
                let req = self
                    .client
                    .post(&ping.endpoint)
                    .map_err(AttemptError::Permanent)?;
                let resp = req
                    .bearer_auth(ping.token.as_str())
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        // A push is retried only when it certainly did not arrive: the
                        // connection could not be made (at most once).
                        if !retry_uncertain && !e.is_connect() {
                            AttemptError::Permanent(e.without_url().to_string())
                        } else {
                            AttemptError::from_http(e)
                        }
                    })?;
                let status = resp.status();
                // The body is never read (PING-03: 200 and 204 alike).
                drop(resp);
                match status.as_u16() {
                    200..=299 => Ok(()),
                    // PING-04: no redirect followed, no resend after 401/403.
                    300..=499 => Err(AttemptError::Permanent(format!(
                        "the notification endpoint answered HTTP {status}"
                    ))),
                    _ => Err(AttemptError::Transient(format!(
                        "the notification endpoint answered HTTP {status}"
                    ))),
                }
            })
            .await
    }
}
