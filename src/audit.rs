//! The audit trail: one structured log line per change of a request's state, under the target
//! [`TARGET`] (`ciba_gateway::audit`), which the log's limit never holds back
//! ([`crate::log_limit`]); filter on it (`RUST_LOG=ciba_gateway::audit=info`, or the `target`
//! field of `log.format: json`) to keep the trail apart. Every line has an `event`:
//!
//! | `event` | fields |
//! |---|---|
//! | `request_accepted` | `request`, `client_id`, `subject`, `scope`, `binding_message`, `expires_in` |
//! | `user_notified` | `request`, `result` (`delivered`, `failed`), `attempts` |
//! | `user_unreachable` | `request`, `client_id`: the channel refused the notification; the request was withdrawn and the client answered `temporarily_unavailable` |
//! | `request_decided` | `request`, `client_id`, `subject` (who approved: the provider's subject after a login there), `decision` (`approved`, `denied`), `via` (`page`, `provider_login`, `channel`) |
//! | `client_notified` | `request`, `client_id`, `mode` (`ping`, `push`), `result`, `attempts` |
//! | `tokens_issued` | `request` (a CIBA grant) or `family` (a refresh), `client_id`, `subject`, `grant` (`ciba`, `refresh_token`), `source` (`gateway`, `upstream`) |
//! | `refresh_family_revoked` | `family`, `client_id`, `reason` (`reuse`) |
//! | `request_expired` | `request`, `client_id` |
//! | `refused_at_limit` | `limit` (`client`, `user`, `registration`), `client_id` (none for `registration`) |
//! | `configuration_reloaded` | `changed` (the sections), `retired_kids` (signing keys taken out, still published until their tokens expired) |
//! | `configuration_refused` | `problems` (each with its field path, as `ciba-gateway check` prints them) |
//!
//! The last two can be repeated at will by a client (a poll of an expired request during its
//! grace period, a flood over a limit), so they are written under [`REPEAT_TARGET`] and held to
//! the log's per-call-site limit; the others happen once per request.
//!
//! A line never carries a secret, a token, an `auth_req_id` or a user code. `request` is a
//! reference: 16 hex digits of the digest the store files the request under
//! (the first bytes of its SHA-256), the same on every replica, from which the `auth_req_id`
//! cannot be recovered; `family` is the same for a refresh-token family's id.
//!
//! The `ciba-gateway` binary can also send the trail to a webhook (`audit.webhook`,
//! `serve::audit_webhook`), signed as the webhook notifier's events are.
//!
//! The functions here also count what the metrics count of the same events, so that each
//! place in the engine says once what happened.

use std::fmt;

use crate::domain::{Delivery, PendingRequest};

/// The log target of the audit trail.
pub const TARGET: &str = "ciba_gateway::audit";
/// The log target of the audit events a client can repeat at will (`refused_at_limit`, and
/// `request_expired` seen by a poll): held to the log's per-call-site limit, where the rest of
/// the trail is not.
pub const REPEAT_TARGET: &str = "ciba_gateway::audit::repeat";

/// A request's (or a refresh family's) reference in the audit trail: the first 8 bytes of
/// the store's digest of its id, in hex.
#[derive(Clone, Copy)]
pub(crate) struct Ref([u8; 8]);

impl Ref {
    /// The reference of the id `id` (an `auth_req_id` or a refresh family id).
    pub(crate) fn of(id: &str) -> Self {
        let d = crate::protocol::digest16(id);
        let mut out = [0u8; 8];
        out.copy_from_slice(&d[..8]);
        Self(out)
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Where the user's decision was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The built-in approval page.
    Page,
    /// The approval page after a login at the upstream provider.
    ProviderLogin,
    /// The HTTP authentication channel's callback.
    Channel,
}

impl Via {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::ProviderLogin => "provider_login",
            Self::Channel => "channel",
        }
    }
}

/// A request was accepted at the backchannel endpoint.
pub(crate) fn accepted(p: &PendingRequest, expires_in: u32) {
    crate::metrics::client_event(&p.client_id, "request_accepted");
    tracing::info!(
        target: TARGET,
        event = "request_accepted",
        request = %Ref::of(p.id.as_str()),
        client_id = %p.client_id,
        subject = %p.subject,
        scope = %p.scope.as_str(),
        binding_message = p.binding_message.as_deref(),
        expires_in,
        "request accepted"
    );
}

/// How a notification ended (`delivered`, `failed`) and the attempts it took; `None` while
/// it is pending.
fn over(d: &Delivery) -> Option<(&'static str, u32)> {
    match d {
        Delivery::Pending => None,
        Delivery::Delivered { attempts } => Some(("delivered", *attempts)),
        Delivery::Failed { attempts, .. } => Some(("failed", *attempts)),
    }
}

/// The user's notification of `request` is over (nothing is written while it is pending).
pub(crate) fn user_notified(request: &str, d: &Delivery) {
    crate::metrics::delivery("user", d);
    let Some((result, attempts)) = over(d) else {
        return;
    };
    tracing::info!(
        target: TARGET,
        event = "user_notified",
        request = %Ref::of(request),
        result,
        attempts,
        "user notified"
    );
}

/// The authentication channel could not reach the user: the request was withdrawn.
pub(crate) fn user_unreachable(request: &str, client_id: &str) {
    crate::metrics::notification("user", false);
    tracing::info!(
        target: TARGET,
        event = "user_unreachable",
        request = %Ref::of(request),
        client_id,
        "user unreachable; request withdrawn"
    );
}

/// The user decided on `p`: approved (as `subject`) or denied.
pub(crate) fn decided(p: &PendingRequest, approved_as: Option<&str>, via: Via) {
    let (decision, subject, event) = match approved_as {
        Some(s) => ("approved", s, "request_approved"),
        None => ("denied", p.subject.as_str(), "request_denied"),
    };
    crate::metrics::client_event(&p.client_id, event);
    tracing::info!(
        target: TARGET,
        event = "request_decided",
        request = %Ref::of(p.id.as_str()),
        client_id = %p.client_id,
        subject,
        decision,
        via = via.as_str(),
        "request decided"
    );
}

/// A ping or push client's notification of `p` is over.
pub(crate) fn client_notified(p: &PendingRequest, mode: &'static str, d: &Delivery) {
    crate::metrics::delivery(mode, d);
    let Some((result, attempts)) = over(d) else {
        return;
    };
    tracing::info!(
        target: TARGET,
        event = "client_notified",
        request = %Ref::of(p.id.as_str()),
        client_id = %p.client_id,
        mode,
        result,
        attempts,
        "client notified"
    );
}

/// What tokens were issued for.
pub(crate) enum Issued<'a> {
    /// A CIBA grant: the request's `auth_req_id`.
    Ciba(&'a str),
    /// A refresh: the family's id.
    Refresh(&'a str),
}

/// Tokens were issued to `client_id` about `subject`; `upstream` when they are the provider's
/// own tokens, handed over.
pub(crate) fn tokens_issued(for_: Issued<'_>, client_id: &str, subject: &str, upstream: bool) {
    let (grant, request, family) = match for_ {
        Issued::Ciba(id) => ("ciba", Some(Ref::of(id)), None),
        Issued::Refresh(f) => ("refresh_token", None, Some(Ref::of(f))),
    };
    crate::metrics::tokens_issued(grant);
    crate::metrics::client_event(client_id, "tokens_issued");
    tracing::info!(
        target: TARGET,
        event = "tokens_issued",
        request = request.map(tracing::field::display),
        family = family.map(tracing::field::display),
        client_id,
        subject,
        grant,
        source = if upstream { "upstream" } else { "gateway" },
        "tokens issued"
    );
}

/// A refresh token was used twice: its family is revoked (RFC 9700 §4.14).
pub(crate) fn family_revoked(family: &str, client_id: &str) {
    tracing::info!(
        target: TARGET,
        event = "refresh_family_revoked",
        family = %Ref::of(family),
        client_id,
        reason = "reuse",
        "refresh token family revoked"
    );
}

/// Request `request` of `client_id` expired undecided (seen by a poll, or told to a push
/// client).
pub(crate) fn expired(request: &str, client_id: &str) {
    crate::metrics::client_event(client_id, "request_expired");
    tracing::info!(
        target: REPEAT_TARGET,
        event = "request_expired",
        request = %Ref::of(request),
        client_id,
        "request expired"
    );
}

/// A reload ([`crate::Engine::reload`]) replaced the running configuration.
pub(crate) fn reloaded(r: &crate::Reloaded) {
    crate::metrics::reload(true);
    tracing::info!(
        target: TARGET,
        event = "configuration_reloaded",
        changed = ?r.changed,
        retired_kids = ?r.retired_kids,
        "configuration reloaded"
    );
}

/// A reload was refused: the running configuration stays.
pub(crate) fn reload_refused(problems: &crate::config::ConfigErrors) {
    crate::metrics::reload(false);
    tracing::error!(
        target: TARGET,
        event = "configuration_refused",
        problems = %problems,
        "configuration reload refused; the running configuration stays"
    );
}

/// A request was refused at a rate limit (`client`, `user`, `registration`).
pub(crate) fn refused(limit: &'static str, client_id: Option<&str>) {
    crate::metrics::rate_limited(limit);
    if let Some(c) = client_id {
        crate::metrics::client_event(c, "refused_at_limit");
    }
    tracing::info!(
        target: REPEAT_TARGET,
        event = "refused_at_limit",
        limit,
        client_id,
        "refused at a rate limit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_is_16_hex_digits_of_the_store_digest_and_not_the_id() {
        let id = crate::protocol::random_token();
        let r = Ref::of(&id).to_string();
        assert_eq!(r.len(), 16);
        assert!(r.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!id.contains(&r));
        assert_eq!(r, Ref::of(&id).to_string());
        assert_ne!(r, Ref::of(&crate::protocol::random_token()).to_string());
    }
}
