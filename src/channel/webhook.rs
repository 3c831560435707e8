//! The webhook notifier: the approval link as a JSON event, signed in the Standard Webhooks
//! scheme (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`, key from the `whsec_…` secret). Delivered in the background with
//! exponential backoff until it succeeds, the attempts run out, or the request expires; the
//! client's polling never waits for it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::Url;

use super::Delivery;
use crate::clock::Clock;
use crate::config::{SecretRef, WebhookConfig, resolve_secret};
use crate::outbound::OutboundClient;

/// The signing key of a `whsec_<base64>` secret reference.
pub fn webhook_key(r: &SecretRef) -> Result<Vec<u8>, String> {
    let secret = resolve_secret(r)?.ok_or("must be a reference: `${ENV_VAR}` or `file:/path`")?;
    let b64 = secret
        .expose()
        .strip_prefix("whsec_")
        .ok_or("must start with whsec_")?;
    let key = STANDARD
        .decode(b64)
        .map_err(|_| "the part after whsec_ must be base64".to_owned())?;
    if key.len() < 24 {
        return Err("the key must be at least 24 bytes".into());
    }
    Ok(key)
}

/// The Standard Webhooks signature header value for a message.
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A configured webhook notifier.
pub struct Webhook {
    url: Url,
    key: Vec<u8>,
    client: OutboundClient,
    retry_initial: Duration,
    max_attempts: u32,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Builds the notifier; the secret must resolve (checked by config validation).
    pub fn new(cfg: &WebhookConfig) -> Result<Self, String> {
        Ok(Self {
            url: cfg.url.clone(),
            key: webhook_key(&cfg.secret)?,
            client: OutboundClient::new(&cfg.outbound),
            retry_initial: Duration::from_millis(cfg.retry_initial_ms),
            max_attempts: cfg.max_attempts,
        })
    }

    /// Delivers one event, retrying with backoff; returns the final state.
    pub async fn deliver(
        self: Arc<Self>,
        msg_id: String,
        body: Bytes,
        expires_at_ms: u64,
        clock: Arc<dyn Clock>,
    ) -> Delivery {
        let mut delay = self.retry_initial;
        let mut reason = String::new();
        for attempt in 1..=self.max_attempts {
            let now = clock.now_secs();
            let sent = match self.client.post(&self.url) {
                Err(e) => Err(e),
                Ok(req) => req
                    .header("content-type", "application/json")
                    .header("webhook-id", &msg_id)
                    .header("webhook-timestamp", now.to_string())
                    .header(
                        "webhook-signature",
                        signature(&self.key, &msg_id, now, &body),
                    )
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| e.without_url().to_string()),
            };
            match sent {
                Ok(r) if r.status().is_success() => {
                    return Delivery::Delivered { attempts: attempt };
                }
                Ok(r) => reason = format!("the webhook answered HTTP {}", r.status().as_u16()),
                // The SSRF guard refusing the target will refuse it every time.
                Err(e) if e.contains("SSRF") => {
                    return Delivery::Failed {
                        attempts: attempt,
                        reason: e,
                    };
                }
                Err(e) => reason = e,
            }
            tracing::warn!(attempt, reason = %reason, "webhook delivery failed");
            if attempt == self.max_attempts
                || clock.now_ms() + delay.as_millis() as u64 >= expires_at_ms
            {
                return Delivery::Failed {
                    attempts: attempt,
                    reason,
                };
            }
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
        Delivery::Failed {
            attempts: self.max_attempts,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_signature_matches_the_reference_vector() {
        // The example from the Standard Webhooks specification.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
