//! The audit trail to a webhook (`audit.webhook`): a layer of the binary's log subscriber takes
//! each audit event ([`crate::audit`]) as a JSON object and queues it; one task POSTs them in
//! batches, signed as the webhook notifier signs (Standard Webhooks: `webhook-id`,
//! `webhook-timestamp`, `webhook-signature`), retrying with backoff. The request path never
//! waits for the webhook: a full queue (the webhook down for long) drops events, and counts
//! them (`ciba_audit_webhook_dropped_total`) and says so in the log. At shutdown the binary
//! waits for what is queued ([`AuditFlush::wait`], within `server.shutdown_grace_secs`).
//!
//! A batch is `{"type":"ciba.audit","events":[{"event":"request_accepted","time":…,…},…]}`.
//! The events a client can repeat at will (`refused_at_limit`, `request_expired`) are held to
//! the same per-call-site limit as in the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use crate::channel::Webhook;
use crate::clock::{Clock, SystemClock};
use crate::config::WebhookConfig;
use crate::store::Delivery;

/// Events queued at most (about 1 KB each): beyond, the newest are dropped and counted.
const QUEUE: usize = 10_000;
/// Events per POST at most.
const BATCH: usize = 100;

/// The layer that queues audit events (add it to the subscriber).
pub struct AuditLayer {
    queue: mpsc::Sender<Value>,
    outstanding: Arc<AtomicUsize>,
}

/// The task that sends the queued events ([`AuditSender::run`] on a runtime).
pub struct AuditSender {
    queue: mpsc::Receiver<Value>,
    webhook: Arc<Webhook>,
    outstanding: Arc<AtomicUsize>,
}

/// Waits for the queued events to be sent (or given up), at shutdown.
pub struct AuditFlush(Arc<AtomicUsize>);

impl AuditFlush {
    /// Blocks until every event queued so far is delivered or given up, or `max` has passed;
    /// returns how many were still waiting.
    pub fn wait(&self, max: Duration) -> usize {
        let deadline = std::time::Instant::now() + max;
        loop {
            let left = self.0.load(Ordering::Acquire);
            if left == 0 || std::time::Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The layer, its sender and its flush for `cfg` (its secret already checked by
/// [`crate::Engine::new`]).
pub fn audit_webhook(cfg: &WebhookConfig) -> Result<(AuditLayer, AuditSender, AuditFlush), String> {
    let webhook = Arc::new(Webhook::new(cfg)?);
    let (tx, rx) = mpsc::channel(QUEUE);
    let outstanding = Arc::new(AtomicUsize::new(0));
    Ok((
        AuditLayer {
            queue: tx,
            outstanding: Arc::clone(&outstanding),
        },
        AuditSender {
            queue: rx,
            webhook,
            outstanding: Arc::clone(&outstanding),
        },
        AuditFlush(outstanding),
    ))
}

/// An event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AuditLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let target = event.metadata().target();
        if target != crate::audit::TARGET && target != crate::audit::REPEAT_TARGET {
            return;
        }
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        fields
            .0
            .insert("time".into(), SystemClock.now_secs().into());
        // The trace the change happened in (the flow's, for a decision and what follows it).
        if let Some(t) = crate::trace::TraceContext::current() {
            fields
                .0
                .insert("trace_id".into(), t.trace_id().to_string().into());
        }
        // Counted before it is queued, so that the sender never counts it down first.
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        if self.queue.try_send(Value::Object(fields.0)).is_err() {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            dropped(1);
        }
    }
}

fn dropped(n: usize) {
    metrics::counter!("ciba_audit_webhook_dropped_total").increment(n as u64);
}

impl AuditSender {
    /// Sends until the layer is gone: each batch until it is delivered or its attempts run out
    /// (then it is dropped, counted and logged — without its events, which the log has).
    pub async fn run(mut self) {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut events = Vec::with_capacity(BATCH);
        while self.queue.recv_many(&mut events, BATCH).await > 0 {
            let n = events.len();
            let body = serde_json::json!({ "type": "ciba.audit", "events": events.split_off(0) });
            let body = Bytes::from(body.to_string());
            // A batch is given an hour at most, whatever its attempts and backoff say.
            let until = clock.now_ms() + Duration::from_secs(3600).as_millis() as u64;
            let id = format!("msg_{}", crate::protocol::random_token());
            match Arc::clone(&self.webhook)
                .deliver(id, body, until, Arc::clone(&clock))
                .await
            {
                Delivery::Delivered { .. } => {
                    metrics::counter!("ciba_audit_webhook_events_total").increment(n as u64)
                }
                Delivery::Failed { attempts, reason } => {
                    dropped(n);
                    tracing::error!(
                        attempts,
                        reason,
                        events = n,
                        "audit events could not be sent to the webhook; dropped"
                    );
                }
                other => {
                    tracing::error!(state = ?other, events = n, "audit webhook delivery ended unexpectedly")
                }
            }
            self.outstanding.fetch_sub(n, Ordering::AcqRel);
        }
    }
}
