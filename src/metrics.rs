//! What the gateway counts and times, through the [`metrics`] facade: nothing is recorded
//! until a recorder is installed (the `ciba-gateway` binary installs a Prometheus one and
//! serves it on the admin listener, `admin.listen`; a library user installs their own, or
//! none). Labels are fixed words — an endpoint, an error code, a notifier — and never carry a
//! secret, a token, an `auth_req_id`, a user code or a user's identifier; a client id only in
//! `ciba_client_events_total`, which is counted only when the operator enables it
//! (`admin.client_id_labels`, [`label_client_ids`]).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `ciba_requests_total` | counter | `endpoint`, `outcome` (`ok`, an OAuth error code such as `authorization_pending` or `slow_down`, or the status class) |
//! | `ciba_request_duration_seconds` | histogram | `endpoint` |
//! | `ciba_passthrough_total` | counter | `status` (`2xx` … `5xx`): requests forwarded to the provider |
//! | `ciba_notifications_total` | counter | `kind` (`user`, `ping`, `push`), `result` (`delivered`, `failed`) |
//! | `ciba_store_errors_total` | counter | — |
//! | `ciba_store_duration_seconds` | histogram | `backend` (`redis`): each operation on the shared store, as the gateway waited for it |
//! | `ciba_upstream_errors_total` | counter | — |
//! | `ciba_upstream_duration_seconds` | histogram | — (the gateway's own calls to the provider: discovery, JWKS, code exchange, refresh; not pass-through) |
//! | `ciba_rate_limited_total` | counter | `limit` (`client`, `user`, `registration`; `held_polls`: a poll answered at once, the held-poll budgets being full) |
//! | `ciba_tokens_issued_total` | counter | `grant` (`ciba`, `refresh_token`) |
//! | `ciba_held_polls` | gauge | — (set at each scrape) |
//! | `ciba_pending_requests` | gauge | — (memory store; set at each scrape) |
//! | `ciba_log_lines_held_back_total` | counter | — |
//! | `ciba_client_events_total` | counter | `client_id`, `event` (`request_accepted`, `request_approved`, `request_denied`, `tokens_issued`, `request_expired`, `refused_at_limit`); only with `admin.client_id_labels` |
//! | `ciba_config_reloads_total` | counter | `result` (`applied`, `refused`) |
//! | `ciba_connections_open` | gauge | — (client connections, either runtime) |
//! | `ciba_connections_closed_total` | counter | `reason` (`idle`; `room`: quiet while `server.max_connections` were open) |
//! | `ciba_held_polls_reclaimed_total` | counter | — (held polls answered early to make room for connections) |
//! | `ciba_audit_webhook_events_total`, `ciba_audit_webhook_dropped_total` | counter | — (the binary's `audit.webhook`: events delivered, and given up) |

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether `ciba_client_events_total` is counted (one series per client and event).
static CLIENT_LABELS: AtomicBool = AtomicBool::new(false);

/// Counts `ciba_client_events_total{client_id, event}` from now on (`true`) or not: the
/// `ciba-gateway` binary sets it from `admin.client_id_labels`. Every client adds series, and
/// with open registration anyone can add clients: leave it off there. Process-wide, as the
/// metrics recorder is.
pub fn label_client_ids(on: bool) {
    CLIENT_LABELS.store(on, Ordering::Relaxed);
}

/// Counts an audit event (`request_accepted`, `request_approved`, `request_denied`,
/// `tokens_issued`, `request_expired`, `refused_at_limit`) for `client_id`, when enabled.
pub(crate) fn client_event(client_id: &str, event: &'static str) {
    if CLIENT_LABELS.load(Ordering::Relaxed) {
        metrics::counter!(
            "ciba_client_events_total",
            "client_id" => client_id.to_owned(),
            "event" => event
        )
        .increment(1);
    }
}

use crate::protocol::ErrorCode;

/// The outcome label of an answer the engine gave: `ok` for a success, the OAuth error code of
/// an error in the OAuth JSON format, else the status class.
pub(crate) fn outcome(status: http::StatusCode, body: &[u8]) -> &'static str {
    if status.is_success() || status.is_redirection() {
        return "ok";
    }
    if let Some(code) = ErrorCode::of_body(body) {
        return code.as_str();
    }
    if status.is_client_error() {
        "4xx"
    } else {
        "5xx"
    }
}

/// Counts and times one answered request at `endpoint` ([`crate::engine::Route::metric_label`]).
pub(crate) fn request(endpoint: &'static str, outcome: &'static str, took: Duration) {
    metrics::counter!("ciba_requests_total", "endpoint" => endpoint, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("ciba_request_duration_seconds", "endpoint" => endpoint)
        .record(took.as_secs_f64());
}

/// Counts a request forwarded to the provider, by the class of the provider's answer.
pub fn passthrough(status: u16) {
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("ciba_passthrough_total", "status" => class).increment(1);
}

/// Counts a notification that is over: the user's (`user`), or a client's (`ping`, `push`).
pub(crate) fn delivery(kind: &'static str, d: &crate::domain::Delivery) {
    match d {
        crate::domain::Delivery::Pending => {}
        crate::domain::Delivery::Delivered { .. } => notification(kind, true),
        crate::domain::Delivery::Failed { .. } => notification(kind, false),
    }
}

/// Counts a notification: the user's (`user`), or a client's (`ping`, `push`).
pub(crate) fn notification(kind: &'static str, delivered: bool) {
    let result = if delivered { "delivered" } else { "failed" };
    metrics::counter!("ciba_notifications_total", "kind" => kind, "result" => result).increment(1);
}

/// Counts a failed store call.
pub(crate) fn store_error() {
    metrics::counter!("ciba_store_errors_total").increment(1);
}

/// Counts a failed call to the upstream provider.
pub(crate) fn upstream_error() {
    metrics::counter!("ciba_upstream_errors_total").increment(1);
}

/// Counts tokens issued for a grant: `ciba` (a new grant, at the token endpoint or in a push)
/// or `refresh_token`.
pub(crate) fn tokens_issued(grant: &'static str) {
    metrics::counter!("ciba_tokens_issued_total", "grant" => grant).increment(1);
}

/// Counts a request refused at a rate limit (`client`, `user`, `registration`), or a poll
/// answered at once because the held-poll budgets were full (`held_polls`).
pub(crate) fn rate_limited(limit: &'static str) {
    metrics::counter!("ciba_rate_limited_total", "limit" => limit).increment(1);
}

/// A configuration reload, applied or refused.
pub(crate) fn reload(applied: bool) {
    let result = if applied { "applied" } else { "refused" };
    metrics::counter!("ciba_config_reloads_total", "result" => result).increment(1);
}

/// `n` held polls answered early to make room for connections.
pub(crate) fn held_polls_reclaimed(n: usize) {
    if n > 0 {
        metrics::counter!("ciba_held_polls_reclaimed_total").increment(n as u64);
    }
}

/// One operation on a shared store (`backend`: `redis`), failed or not, and how long it took
/// as the gateway waited for it (connecting included).
#[cfg(feature = "redis")]
pub(crate) fn store_op(backend: &'static str, took: Duration) {
    metrics::histogram!("ciba_store_duration_seconds", "backend" => backend)
        .record(took.as_secs_f64());
}

/// One of the gateway's own calls to the provider (discovery, JWKS, code exchange, a refresh
/// with the client's provider credentials), to its answer's headers or its failure.
pub(crate) fn upstream_call(took: Duration) {
    metrics::histogram!("ciba_upstream_duration_seconds").record(took.as_secs_f64());
}

/// A client connection opened (`true`) or closed (`false`), on either runtime.
#[cfg(any(feature = "server", feature = "pingora"))]
pub(crate) fn connection(opened: bool) {
    let g = metrics::gauge!("ciba_connections_open");
    if opened {
        g.increment(1.0)
    } else {
        g.decrement(1.0)
    }
}

/// A client connection the runtime closed: `idle` (`server.idle_timeout_secs`) or `room`
/// (quiet while `server.max_connections` were open).
#[cfg(any(feature = "server", feature = "pingora"))]
pub(crate) fn connection_closed(reason: &'static str) {
    metrics::counter!("ciba_connections_closed_total", "reason" => reason).increment(1);
}
