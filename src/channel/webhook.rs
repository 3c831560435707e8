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
use super::retry::{AttemptError, RetryPolicy};
use crate::clock::Clock;
use crate::config::{SecretRef, WebhookConfig, required_reference};
use crate::outbound::OutboundClient;

/// The signing key of a `whsec_<base64>` secret reference.
pub fn webhook_key(r: &SecretRef) -> Result<Vec<u8>, String> {
    let secret = required_reference(r)?;
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
    retry: RetryPolicy,
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
            retry: RetryPolicy {
                initial: Duration::from_millis(cfg.retry_initial_ms),
                max_attempts: cfg.max_attempts,
            },
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
        self.retry
            .run(expires_at_ms, clock.as_ref(), || async {
                let now = clock.now_secs();
                // The SSRF guard refusing the target would refuse it every time.
                let req = self
                    .client
                    .post(&self.url)
                    .map_err(AttemptError::Permanent)?;
                let resp = req
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
                    .map_err(AttemptError::from_http)?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(AttemptError::Transient(format!(
                        "the webhook answered HTTP {}",
                        resp.status().as_u16()
                    )))
                }
            })
            .await
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
