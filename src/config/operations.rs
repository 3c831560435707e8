//! What the people who run the gateway see: its log (`log`), its admin listener (`admin`),
//! where the audit trail goes besides the log (`audit`) and whose traces it continues
//! (`trace`).

use std::net::SocketAddr;

use serde::Deserialize;

use super::{ConfigError, WebhookConfig};

/// `log`: how the `ciba-gateway` binary writes its log (a library user's own subscriber decides
/// for theirs; [`crate::log_limit::LogLimit`] is the limit to add to it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (colour only when standard output is a terminal) or `json` (one object per
    /// line). Default `text`; `serve --json-logs` forces `json`.
    pub format: LogFormat,
    /// Most lines per second in all, whatever happens (the audit trail aside); a warning or an
    /// error that repeats is also limited per call site (10 at once, then 1 per second). What is
    /// held back is counted and reported every 10 s. Default 200.
    pub max_lines_per_sec: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            max_lines_per_sec: 200,
        }
    }
}

/// The log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `admin`: the admin listener of the `ciba-gateway` binary — Prometheus metrics at `/metrics`
/// ([`crate::metrics`] lists them), readiness at `/healthz` (and `/readyz`), liveness at
/// `/livez`. Plain HTTP: bind it to loopback or a private interface.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where it listens; never the public `listen`. Default: off.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Also count the audit events per client (`ciba_client_events_total{client_id,event}`).
    /// Every client adds series: leave it off with open registration. Default `false`.
    #[serde(default)]
    pub client_id_labels: bool,
}

impl LogConfig {
    pub(super) fn check(&self, errs: &mut Vec<ConfigError>) {
        if self.max_lines_per_sec == 0 {
            errs.push(ConfigError::new(
                "log.max_lines_per_sec",
                "must be at least 1",
            ));
        }
    }
}

impl AdminConfig {
    pub(super) fn check(&self, public: SocketAddr, errs: &mut Vec<ConfigError>) {
        if self.listen.is_some_and(|a| {
            a == public
                || (a.port() == public.port()
                    && (a.ip().is_unspecified() || public.ip().is_unspecified()))
        }) {
            errs.push(ConfigError::new(
                "admin.listen",
                "must not be the public `listen` address: metrics are for the operator only",
            ));
        }
    }
}

/// `audit`: where the `ciba-gateway` binary sends the audit trail ([`crate::audit`]) besides its
/// log.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// POST the trail's events, in batches, to this webhook, signed as the webhook notifier's
    /// events are (Standard Webhooks). Default: none.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
}

impl AuditConfig {
    pub(super) fn check(&self, errs: &mut Vec<ConfigError>) {
        if let Some(w) = &self.webhook {
            super::check_http_url(errs, "audit.webhook.url", &w.url);
            if w.max_attempts == 0 {
                errs.push(ConfigError::new(
                    "audit.webhook.max_attempts",
                    "must be positive",
                ));
            }
        }
    }
}

/// `trace`: the W3C trace context ([`crate::trace`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// The callers (CIDR blocks) whose `traceparent` the gateway continues: your own clients,
    /// load balancer or service mesh. Everyone else's request starts a new trace (and its
    /// `traceparent` and `tracestate` are not passed on), so that no outsider picks the
    /// gateway's trace ids or its sampling. Behind a load balancer, that is the balancer's
    /// address. Default: none.
    #[serde(default)]
    pub accept_traceparent_from: Vec<ipnet::IpNet>,
}
