//! Ping mode (CIBA §10.2): once the user has decided, the client is told at its registered
//! notification endpoint, with its `client_notification_token` as the bearer, that the request
//! `auth_req_id` is ready to redeem (PING-01…07). The call is guarded like every outbound call
//! (SEC-05): HTTPS, the SSRF guard, no redirects, no cookies, a short timeout, the body never
//! read. 5xx and network errors are retried with doubling delays, never past the request's
//! expiry; a 3xx, 401 or 403 is final. A failed ping never cancels the grant: the client can
//! still redeem by polling (PING-05).

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::Delivery;
use super::retry::{AttemptError, RetryPolicy};
use crate::clock::Clock;
use crate::config::{ClientNotifications, ConfigErrors, Problems};
use crate::outbound::OutboundClient;
use crate::protocol::{AuthReqId, NotificationToken};

/// Calls ping clients' notification endpoints.
#[derive(Debug, Clone)]
pub struct Pinger {
    client: OutboundClient,
    retry: RetryPolicy,
}

/// One ping to send.
#[derive(Debug, Clone)]
pub struct Ping {
    /// The client's registered endpoint.
    pub endpoint: Url,
    /// The bearer the client gave with its request.
    pub token: NotificationToken,
    /// The request that was decided.
    pub auth_req_id: AuthReqId,
    /// When the request expires, Unix ms: no retry after that.
    pub expires_at_ms: u64,
}

impl Pinger {
    /// The notifier for `ciba.client_notifications` (its CA file loaded here, once).
    pub fn from_config(cfg: &ClientNotifications) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::new();
        let roots = match &cfg.ca_file {
            Some(ca) => problems
                .take(
                    "ciba.client_notifications.ca_file",
                    crate::tls::load_ca_file(ca),
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

    /// Sends `ping` (PING-01: `{"auth_req_id": …}` with the bearer), retrying as the policy
    /// allows; returns how far it got.
    pub async fn send(self: Arc<Self>, ping: Ping, clock: Arc<dyn Clock>) -> Delivery {
        let body = serde_json::json!({ "auth_req_id": ping.auth_req_id.as_str() }).to_string();
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
                    .map_err(AttemptError::from_http)?;
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
