//! Bounded retries with exponential backoff for notifier deliveries: until success, the last
//! attempt, a permanent failure, or the request's expiry (no one can approve after that).

use std::future::Future;
use std::time::Duration;

use super::Delivery;
use crate::clock::Clock;

/// Why one attempt failed.
#[derive(Debug)]
pub enum AttemptError {
    /// Worth another try (network error, 5xx, SMTP 4xx).
    Transient(String),
    /// Will fail the same way every time (SSRF refusal, no address, rejected recipient).
    Permanent(String),
}

impl AttemptError {
    /// A failed HTTP call: the SSRF guard refusing the target would refuse it every time;
    /// anything else (a refused connection, a timeout) may pass on another try. The URL is
    /// left out of the reason (it may carry a secret path).
    pub fn from_http(e: reqwest::Error) -> Self {
        let e = e.without_url().to_string();
        if e.contains("SSRF") {
            Self::Permanent(e)
        } else {
            Self::Transient(e)
        }
    }
}

/// The retry policy of one notifier.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay before the second attempt; doubled after each failure.
    pub initial: Duration,
    /// Most attempts.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// Runs `attempt` until it succeeds or the policy gives up; returns the final state.
    pub async fn run<F, Fut>(
        &self,
        expires_at_ms: u64,
        clock: &dyn Clock,
        mut attempt: F,
    ) -> Delivery
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), AttemptError>>,
    {
        let mut delay = self.initial;
        for n in 1..=self.max_attempts {
            let reason = match attempt().await {
                Ok(()) => return Delivery::Delivered { attempts: n },
                Err(AttemptError::Permanent(reason)) => {
                    return Delivery::Failed {
                        attempts: n,
                        reason,
                    };
                }
                Err(AttemptError::Transient(reason)) => reason,
            };
            tracing::warn!(attempt = n, reason = %reason, "notification delivery failed");
            if n == self.max_attempts || clock.now_ms() + delay.as_millis() as u64 >= expires_at_ms
            {
                return Delivery::Failed {
                    attempts: n,
                    reason,
                };
            }
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
        unreachable!("the loop returns on its last attempt")
    }
}
