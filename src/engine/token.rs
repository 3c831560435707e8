//! The CIBA grant at the shared token endpoint (CIBA §10.1–§11): TOK-01…06, TOK-08,
//! TOK-ERR-01/02. Any other grant is handed back to the adapter to forward unchanged (TOK-11).
//!
//! Long polling (`ciba.long_poll_secs`): a poll that finds its request pending is held until
//! the user decides, the request expires, the time runs out or the runtime shuts down,
//! whichever is first, then answered from the store again. Holding costs a future waiting on
//! the store's wake-up ([`PendingStore::decided`]): no thread, no timer loop, no lookup.

use bytes::Bytes;
use http::{Method, StatusCode};

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::issue::{Family, TokenIssuance};
use super::{Engine, EngineRequest, Outcome, Shared, json_response};
use crate::clients::ClientRegistry;
use crate::clock::Clock;
use crate::protocol::form::require_form_content_type;
use crate::protocol::{ErrorCode, Form, GRANT_TYPE_CIBA, OAuthError, Scope};
use crate::store::{Pacing, PendingStore, PollOutcome, RefreshStore, Rotation, Store};
use crate::tokens::{Grant, Minter, Recipient, RefreshIssue, RefreshTokenClaims};

/// Counts a held poll for as long as it is held (also when its connection goes away).
struct Held<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Held<'a> {
    fn count(n: &'a std::sync::atomic::AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The CIBA grant's dependencies: client authentication, the store it redeems from (and waits
/// on, when long polling), and what it mints tokens with.
pub(super) struct TokenEndpoint {
    accept_ietf_alias: bool,
    long_poll: Duration,
    shutdown: Arc<super::shutdown::Shutdown>,
    /// Polls being held now.
    pub(super) held: std::sync::atomic::AtomicUsize,
    clock: Arc<dyn Clock>,
    clients: Arc<ClientRegistry>,
    store: Arc<Store>,
    minter: Arc<Minter>,
    issuance: Arc<TokenIssuance>,
}

impl TokenEndpoint {
    pub(super) fn new(shared: &Shared, issuance: &Arc<TokenIssuance>) -> Self {
        Self {
            accept_ietf_alias: shared.cfg.ciba.accept_ietf_grant_type_alias,
            long_poll: Duration::from_secs(shared.cfg.ciba.long_poll_secs.into()),
            shutdown: Arc::clone(&shared.shutdown),
            held: std::sync::atomic::AtomicUsize::new(0),
            clock: Arc::clone(&shared.clock),
            clients: Arc::clone(&shared.clients),
            store: Arc::clone(&shared.store),
            minter: Arc::clone(&shared.minter),
            issuance: Arc::clone(issuance),
        }
    }

    pub(super) async fn handle(&self, req: EngineRequest) -> Outcome {
        if req.method != Method::POST || require_form_content_type(&req.headers).is_err() {
            return Outcome::Forward(req);
        }
        let answer = if Engine::is_ciba_grant(&req.body) {
            self.ciba_grant(&req).await
        } else if let Some(claims) = self.own_refresh_token(&req.body) {
            Box::pin(self.refresh(&req, claims)).await
        } else {
            // Another grant, or a refresh token that is not the gateway's (the provider's
            // own): forwarded byte for byte.
            return Outcome::Forward(req);
        };
        Outcome::Respond(answer.unwrap_or_else(|e| e.into_response()))
    }

    /// Holds a poll until the user decides, the request expires, the hold ends or the runtime
    /// shuts down.
    async fn hold(&self, id: &str, now_ms: u64) {
        let _held = Held::count(&self.held);
        tracing::debug!("poll held until the user decides");
        tokio::select! {
            () = self.store.decided(id, now_ms) => {}
            () = tokio::time::sleep(self.long_poll) => {}
            () = self.shutdown.wait() => {}
        }
    }

    /// The claims of a `refresh_token` grant's token when the gateway signed it.
    fn own_refresh_token(&self, body: &[u8]) -> Option<RefreshTokenClaims> {
        let mut grant = None;
        let mut token = None;
        for (k, v) in form_urlencoded::parse(body) {
            match &*k {
                "grant_type" => grant = Some(v),
                "refresh_token" => token = Some(v),
                _ => {}
            }
        }
        if grant.as_deref() != Some("refresh_token") {
            return None;
        }
        self.minter
            .own_refresh_token(&token?, self.clock.now_ms() / 1000)
    }

    /// The `refresh_token` grant for one of the gateway's refresh tokens: rotation, and reuse
    /// detection that revokes the family (RFC 9700 §4.14).
    async fn refresh(
        &self,
        req: &EngineRequest,
        claims: RefreshTokenClaims,
    ) -> Result<http::Response<Bytes>, OAuthError> {
        let form = Form::parse(&req.body)?;
        let client = self.clients.authenticate(&req.headers, &form).await?;
        if !client.refresh_allowed {
            return Err(OAuthError::bad_request(ErrorCode::UnauthorizedClient)
                .describe("this client is not allowed the refresh_token grant"));
        }
        if client.id != claims.client_id {
            return Err(OAuthError::bad_request(ErrorCode::InvalidGrant)
                .describe("the refresh token was issued to another client"));
        }
        let scope = Scope::parse(&claims.scope)
            .ok_or_else(|| OAuthError::server_error("a refresh token with no scope"))?;
        if let Some(asked) = form.get("scope")
            && Scope::parse(asked).is_none_or(|a| {
                a.iter().count() != scope.iter().count() || !a.iter().all(|v| scope.contains(v))
            })
        {
            return Err(OAuthError::bad_request(ErrorCode::InvalidScope)
                .describe("a refresh keeps the granted scope (narrowing is not supported)"));
        }
        let now_ms = self.clock.now_ms();
        let next = crate::protocol::random_token();
        match self
            .store
            .rotate(&claims.fid, &claims.jti, &next, now_ms)
            .await
            .map_err(super::store_unavailable)?
        {
            Rotation::Rotated => {}
            Rotation::Reused => {
                tracing::warn!(client_id = %client.id, "a refresh token was used twice: its family is revoked");
                return Err(OAuthError::bad_request(ErrorCode::InvalidGrant)
                    .describe("the refresh token was already used"));
            }
            Rotation::Gone => {
                return Err(OAuthError::bad_request(ErrorCode::InvalidGrant)
                    .describe("the refresh token is no longer valid"));
            }
        }
        let grant = Grant {
            subject: claims.sub,
            scope,
            auth_time: claims.auth_time,
            acr: claims.acr,
            amr: claims.amr,
            auth_req_id: None,
        };
        let family = Family::Continue(RefreshIssue {
            family: claims.fid,
            jti: next,
            expires_at: claims.exp,
        });
        let tokens = self
            .issuance
            .issue(client, &grant, now_ms, Recipient::TokenEndpoint, family)
            .await?;
        tracing::info!(client_id = %client.id, "tokens refreshed");
        let body = serde_json::to_vec(&tokens).expect("a token response serialises");
        Ok(json_response(StatusCode::OK, Bytes::from(body)))
    }

    async fn ciba_grant(&self, req: &EngineRequest) -> Result<http::Response<Bytes>, OAuthError> {
        let form = Form::parse(&req.body)?;
        if form.get("grant_type") != Some(GRANT_TYPE_CIBA) && !self.accept_ietf_alias {
            // MYTH-01: the alias is off; say what the right value is.
            return Err(OAuthError::bad_request(ErrorCode::UnsupportedGrantType)
                .describe(format!("the CIBA grant type is {GRANT_TYPE_CIBA}")));
        }
        // TOK-01: the client authenticates exactly as at the backchannel endpoint.
        let client = self.clients.authenticate(&req.headers, &form).await?;
        if !client.ciba_allowed {
            return Err(OAuthError::bad_request(ErrorCode::UnauthorizedClient)
                .describe("this client is not allowed the CIBA grant"));
        }
        // PUSH-01: a push client's tokens go to its notification endpoint and nowhere else.
        if client.delivery == crate::config::DeliveryMode::Push {
            return Err(OAuthError::bad_request(ErrorCode::UnauthorizedClient)
                .describe("a push client receives its tokens at its notification endpoint"));
        }
        let id = form
            .get("auth_req_id")
            .ok_or_else(|| OAuthError::invalid_request("auth_req_id is required"))?;
        let mut now_ms = self.clock.now_ms();
        let mut outcome = self
            .store
            .poll(id, &client.id, now_ms, Pacing::Checked)
            .await
            .map_err(super::store_unavailable)?;
        if outcome == PollOutcome::Pending && !self.long_poll.is_zero() {
            // Boxed: the hold's futures stay out of every other poll's state machine.
            Box::pin(self.hold(id, now_ms)).await;
            now_ms = self.clock.now_ms();
            outcome = self
                .store
                .poll(id, &client.id, now_ms, Pacing::Held)
                .await
                .map_err(super::store_unavailable)?;
        }
        let code = match outcome {
            PollOutcome::Approved(pending, approval) => {
                // The upstream's own tokens, for clients that asked for them (issue: forwarding).
                if client.tokens == crate::config::TokenSource::Upstream
                    && let Some(t) = &approval.upstream_tokens
                {
                    tracing::info!(client_id = %client.id, "upstream tokens handed over for an approved CIBA request");
                    let body = serde_json::to_vec(t).expect("a token response serialises");
                    return Ok(json_response(StatusCode::OK, Bytes::from(body)));
                }
                let grant = self.minter.grant_for(&pending, &approval);
                let tokens = self
                    .issuance
                    .issue(
                        client,
                        &grant,
                        now_ms,
                        Recipient::TokenEndpoint,
                        Family::New,
                    )
                    .await?;
                tracing::info!(client_id = %client.id, subject = %pending.subject, "tokens issued for an approved CIBA request");
                let body = serde_json::to_vec(&tokens).expect("a token response serialises");
                return Ok(json_response(StatusCode::OK, Bytes::from(body)));
            }
            PollOutcome::Pending => ErrorCode::AuthorizationPending,
            PollOutcome::SlowDown { .. } => ErrorCode::SlowDown,
            PollOutcome::Expired => ErrorCode::ExpiredToken,
            PollOutcome::Denied => ErrorCode::AccessDenied,
            PollOutcome::Unknown => ErrorCode::InvalidGrant,
        };
        // TOK-ERR-01/02: all of these are 400, never 428/429/202.
        Err(OAuthError::bad_request(code))
    }
}
