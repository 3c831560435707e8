//! The CIBA grant at the shared token endpoint (CIBA §10.1–§11): TOK-01…06, TOK-08,
//! TOK-ERR-01/02. Any other grant is handed back to the adapter to forward unchanged (TOK-11).
//!
//! Long polling (`ciba.long_poll_secs`): a poll that finds its request pending is held until
//! the user decides, the request expires, the time runs out or the runtime shuts down,
//! whichever is first, then answered from the store again. Holding costs a future waiting on
//! the store's wake-up ([`PendingStore::decided`]): no thread, no timer loop, no lookup.

use bytes::Bytes;
use http::{Method, StatusCode};

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::issue::{Family, TokenIssuance};
use super::{Engine, EngineRequest, Outcome, Shared, json_response};
use crate::audit::Issued;
use crate::clients::Client;
use crate::clock::Clock;
use crate::live::Live;
use crate::protocol::form::require_form_content_type;
use crate::protocol::{ErrorCode, Form, GRANT_TYPE_CIBA, OAuthError, Scope};
use crate::store::{Pacing, PendingStore, PollOutcome, RefreshStore, Rotation, Store};
use crate::tls::ClientCertificate;
use crate::tokens::{Grant, Minter, Recipient, RefreshIssue, RefreshTokenClaims};

/// The polls held now, in all and per client, within their budgets
/// (`ciba.max_held_polls`, `ciba.max_held_polls_per_client`).
pub(super) struct HeldPolls {
    /// Polls held now.
    pub(super) all: AtomicUsize,
    /// The budgets (a reload may change them; polls held beyond a lowered one finish).
    max: AtomicUsize,
    /// Polls held now per client (a client appears while it has one).
    by_client: Mutex<HashMap<String, usize>>,
    max_per_client: AtomicUsize,
    /// Wakes every held poll to answer now (the runtime needs their connections).
    reclaim: tokio::sync::Notify,
}

/// A poll counted as held for as long as it is (also when its connection goes away).
struct Held<'a> {
    polls: &'a HeldPolls,
    client: &'a str,
}

impl HeldPolls {
    fn new(max: usize, max_per_client: usize) -> Self {
        Self {
            all: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            by_client: Mutex::new(HashMap::new()),
            max_per_client: AtomicUsize::new(max_per_client),
            reclaim: tokio::sync::Notify::new(),
        }
    }

    /// Answers every poll held now, as if its hold had run out; how many there were.
    pub(super) fn reclaim(&self) -> usize {
        let held = self.all.load(Ordering::Acquire);
        if held > 0 {
            self.reclaim.notify_waiters();
        }
        held
    }

    /// Sets both budgets (a reload).
    pub(super) fn set_budgets(&self, max: usize, max_per_client: usize) {
        self.max.store(max, Ordering::Relaxed);
        self.max_per_client.store(max_per_client, Ordering::Relaxed);
    }

    /// A place for one more held poll of `client`, if both budgets have one.
    fn admit<'a>(&'a self, client: &'a str) -> Option<Held<'a>> {
        self.all
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max.load(Ordering::Relaxed)).then_some(n + 1)
            })
            .ok()?;
        let mut by_client = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
        match by_client.get_mut(client) {
            Some(n) if *n >= self.max_per_client.load(Ordering::Relaxed) => {
                drop(by_client);
                self.all.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            Some(n) => *n += 1,
            // The client's id is copied only when it starts holding.
            None => {
                by_client.insert(client.to_owned(), 1);
            }
        }
        Some(Held {
            polls: self,
            client,
        })
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut by_client = self
            .polls
            .by_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_client.get_mut(self.client) {
            *n -= 1;
            if *n == 0 {
                by_client.remove(self.client);
            }
        }
        drop(by_client);
        self.polls.all.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The CIBA grant's dependencies: client authentication, the store it redeems from (and waits
/// on, when long polling), and what it mints tokens with.
pub(super) struct TokenEndpoint {
    accept_ietf_alias: bool,
    long_poll: Duration,
    shutdown: Arc<super::shutdown::Shutdown>,
    /// Polls being held now, within their budgets.
    pub(super) held: HeldPolls,
    clock: Arc<dyn Clock>,
    auth: super::client_auth::ClientAuth,
    store: Arc<Store>,
    minter: Arc<Live<Minter>>,
    issuance: Arc<TokenIssuance>,
    /// The provider, for its clients' refreshes.
    upstream: Option<Arc<crate::upstream::Upstream>>,
    /// Where the provider's discovery is (its token endpoint).
    discovery_path: String,
}

impl TokenEndpoint {
    pub(super) fn new(shared: &Shared, issuance: &Arc<TokenIssuance>) -> Self {
        Self {
            accept_ietf_alias: shared.cfg.ciba.accept_ietf_grant_type_alias,
            long_poll: Duration::from_secs(shared.cfg.ciba.long_poll_secs.into()),
            shutdown: Arc::clone(&shared.shutdown),
            held: HeldPolls::new(
                shared.cfg.ciba.held_polls_cap(&shared.cfg.server),
                shared.cfg.ciba.max_held_polls_per_client,
            ),
            clock: Arc::clone(&shared.clock),
            auth: super::client_auth::ClientAuth::new(shared),
            store: Arc::clone(&shared.store),
            minter: Arc::clone(&shared.minter),
            issuance: Arc::clone(issuance),
            upstream: shared.upstream.clone(),
            discovery_path: shared.paths.discovery.clone(),
        }
    }

    pub(super) async fn handle(&self, req: EngineRequest) -> Outcome {
        if req.method != Method::POST || require_form_content_type(&req.headers).is_err() {
            return Outcome::Forward(req);
        }
        // Parsed once: its grant type says whether the request is the gateway's, and the
        // CIBA grant reads the rest from it. A form that does not parse (a repeated
        // parameter, bad UTF-8) is the CIBA grant's error if it says it is one.
        let form = Form::parse(&req.body);
        let ciba = match &form {
            Ok(f) => f.get("grant_type").is_some_and(Engine::is_ciba_grant_type),
            Err(_) => Engine::is_ciba_grant(&req.body),
        };
        let answer = if ciba {
            match form {
                Ok(form) => self.ciba_grant(&req, &form).await,
                Err(e) => Err(e),
            }
        } else if let Some(claims) = self.own_refresh_token(&req.body) {
            Box::pin(self.refresh(&req, claims)).await
        } else if is_refresh_grant(&req.body) {
            match Box::pin(self.foreign_refresh(&req)).await {
                Some(answer) => answer,
                None => return Outcome::Forward(req),
            }
        } else if self.upstream.is_none()
            && matches!(&form, Ok(f) if f.get("grant_type").is_none_or(str::is_empty))
        {
            // Standalone, no grant at all is a request missing its required parameter
            // (RFC 6749 §5.2), as providers answer it; in front of one, the provider's to say.
            Err(OAuthError::invalid_request("grant_type is required"))
        } else {
            // Another grant: forwarded byte for byte.
            return Outcome::Forward(req);
        };
        Outcome::Respond(answer.unwrap_or_else(|e| e.into_response()))
    }

    /// Authenticates the client of `req` (TOK-01: as at the backchannel endpoint) and tells
    /// what its tokens are bound to ([`binding`]).
    async fn authenticate(
        &self,
        req: &EngineRequest,
        form: &Form<'_>,
    ) -> Result<(Arc<Client>, Option<String>), OAuthError> {
        let certificate = self.auth.certificate(req);
        let client = self
            .auth
            .authenticate(req, form, certificate.as_ref())
            .await?;
        let bound = binding(&client, certificate.as_ref())?;
        Ok((client, bound))
    }

    /// A `refresh_token` grant whose token the gateway did not sign. Standalone, nothing else
    /// could have issued it: `invalid_grant` for the authenticated client (RFC 6749 §5.2). In
    /// front of a provider, a client of the gateway that holds the provider's tokens
    /// (credentials at the provider, `upstream`) is authenticated here, and the refresh is
    /// sent to the provider with its credentials there, whatever its gateway credentials are;
    /// any other client's refresh is forwarded byte for byte (`None`).
    async fn foreign_refresh(
        &self,
        req: &EngineRequest,
    ) -> Option<Result<http::Response<Bytes>, OAuthError>> {
        let Ok(form) = Form::parse(&req.body) else {
            return self
                .upstream
                .is_none()
                .then(|| Err(OAuthError::invalid_request("malformed form")));
        };
        let ours = self.auth.claims_gateway_client(req, &form).await;
        let upstream = match (&self.upstream, ours) {
            (None, _) => None,
            (Some(u), Some(c)) if c.upstream.is_some() => Some(u),
            // The provider's own client: its refresh is the provider's business.
            (Some(_), _) => return None,
        };
        Some(
            async {
                let certificate = self.auth.certificate(req);
                let client = self
                    .auth
                    .authenticate(req, &form, certificate.as_ref())
                    .await?;
                let (Some(upstream), Some(creds)) = (upstream, &client.upstream) else {
                    return Err(OAuthError::bad_request(ErrorCode::InvalidGrant)
                        .describe("the refresh token is not valid"));
                };
                let token = form
                    .get("refresh_token")
                    .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
                // Boxed: a rare path whose HTTP future would widen every token request's.
                let (status, body) =
                    Box::pin(upstream.refresh(&self.discovery_path, creds, token, form.get("scope")))
                        .await
                    .map_err(|e| {
                        tracing::warn!(client_id = %client.id, error = %e, "a refresh at the provider failed");
                        OAuthError::unavailable("the upstream provider is unavailable", 5)
                    })?;
                tracing::info!(client_id = %client.id, status = status.as_u16(), "refresh sent to the provider with the client's credentials there");
                Ok(json_response(status, body))
            }
            .await,
        )
    }

    /// Holds a poll until the user decides, the request expires, the hold ends or the runtime
    /// shuts down — if the budgets of held polls have room for it (`false` if not: it is
    /// answered at once, as without long polling).
    async fn hold(&self, id: &str, client: &str, now_ms: u64) -> bool {
        let Some(_held) = self.held.admit(client) else {
            crate::metrics::rate_limited("held_polls");
            return false;
        };
        tracing::debug!("poll held until the user decides");
        tokio::select! {
            () = self.store.decided(id, now_ms) => {}
            () = tokio::time::sleep(self.long_poll) => {}
            () = self.shutdown.wait() => {}
            () = self.held.reclaim.notified() => {}
        }
        true
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
            .get()
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
        let (client, bound_to) = self.authenticate(req, &form).await?;
        let client = &client;
        if !client.refresh_allowed {
            return Err(OAuthError::bad_request(ErrorCode::UnauthorizedClient)
                .describe("this client is not allowed the refresh_token grant"));
        }
        if client.id != claims.client_id {
            return Err(OAuthError::bad_request(ErrorCode::InvalidGrant)
                .describe("the refresh token was issued to another client"));
        }
        let granted = Scope::parse(&claims.scope)
            .ok_or_else(|| OAuthError::server_error("a refresh token with no scope"))?;
        // RFC 6749 §6: a refresh may ask for less than was granted (for this access token;
        // the family keeps what it was granted), never for more.
        let scope = match form.get("scope") {
            None => granted,
            Some(asked) => Scope::parse(asked)
                .filter(|a| a.iter().all(|v| granted.contains(v)))
                .ok_or_else(|| {
                    OAuthError::bad_request(ErrorCode::InvalidScope)
                        .describe("a refresh may not ask for scope that was not granted")
                })?,
        };
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
                crate::audit::family_revoked(&claims.fid, &client.id);
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
            bound_to,
        };
        let family = Family::Continue(RefreshIssue {
            family: claims.fid,
            jti: next,
            expires_at: claims.exp,
            scope: claims.scope,
        });
        let tokens = self
            .issuance
            .issue(client, &grant, now_ms, Recipient::TokenEndpoint, family)
            .await?;
        let body = serde_json::to_vec(&tokens).expect("a token response serialises");
        Ok(json_response(StatusCode::OK, Bytes::from(body)))
    }

    async fn ciba_grant(
        &self,
        req: &EngineRequest,
        form: &Form<'_>,
    ) -> Result<http::Response<Bytes>, OAuthError> {
        if form.get("grant_type") != Some(GRANT_TYPE_CIBA) && !self.accept_ietf_alias {
            // MYTH-01: the alias is off; say what the right value is.
            return Err(OAuthError::bad_request(ErrorCode::UnsupportedGrantType)
                .describe(format!("the CIBA grant type is {GRANT_TYPE_CIBA}")));
        }
        // TOK-01: the client authenticates exactly as at the backchannel endpoint.
        let (client, bound_to) = self.authenticate(req, form).await?;
        let client = &client;
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
        // Boxed: the hold's futures stay out of every other poll's state machine.
        if outcome == PollOutcome::Pending
            && !self.long_poll.is_zero()
            && Box::pin(self.hold(id, &client.id, now_ms)).await
        {
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
                    crate::audit::tokens_issued(
                        Issued::Ciba(pending.id.as_str()),
                        &client.id,
                        &pending.subject,
                        true,
                    );
                    let body = serde_json::to_vec(t).expect("a token response serialises");
                    return Ok(json_response(StatusCode::OK, Bytes::from(body)));
                }
                let mut grant = self.minter.get().grant_for(&pending, &approval);
                grant.bound_to = bound_to;
                // Boxed: issued once per request, its futures stay out of held polls.
                let tokens = Box::pin(self.issuance.issue(
                    client,
                    &grant,
                    now_ms,
                    Recipient::TokenEndpoint,
                    Family::New,
                ))
                .await?;
                let body = serde_json::to_vec(&tokens).expect("a token response serialises");
                return Ok(json_response(StatusCode::OK, Bytes::from(body)));
            }
            PollOutcome::Pending => ErrorCode::AuthorizationPending,
            PollOutcome::SlowDown { .. } => ErrorCode::SlowDown,
            PollOutcome::Expired => {
                crate::audit::expired(id, &client.id);
                ErrorCode::ExpiredToken
            }
            PollOutcome::Denied => ErrorCode::AccessDenied,
            PollOutcome::Unknown => ErrorCode::InvalidGrant,
        };
        // TOK-ERR-01/02: all of these are 400, never 428/429/202.
        Err(OAuthError::bad_request(code))
    }
}

/// Whether a form body is a `refresh_token` grant.
fn is_refresh_grant(body: &[u8]) -> bool {
    form_urlencoded::parse(body).any(|(k, v)| k == "grant_type" && v == "refresh_token")
}

/// The thumbprint the access token is bound to (RFC 8705 §3): the certificate the client
/// presented, if any. A client whose tokens must be bound (FAPI-06) and presented none is
/// refused.
fn binding(
    client: &Client,
    certificate: Option<&ClientCertificate>,
) -> Result<Option<String>, OAuthError> {
    match certificate {
        Some(c) => Ok(Some(c.thumbprint())),
        None if client.bound_tokens => Err(OAuthError::invalid_request(
            "this client's tokens are bound to its TLS certificate: present it (mutual TLS)",
        )),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_hold_frees_its_room() {
        let polls = HeldPolls::new(3, 2);
        let a1 = polls.admit("a").unwrap();
        let a2 = polls.admit("a").unwrap();
        // The client's budget is spent; another client still has room in all.
        assert!(polls.admit("a").is_none());
        let b1 = polls.admit("b").unwrap();
        // The overall budget is spent too.
        assert!(polls.admit("c").is_none());
        assert_eq!(polls.all.load(Ordering::Relaxed), 3);
        drop(a1);
        let a3 = polls.admit("a").unwrap();
        drop((a2, a3, b1));
        assert_eq!(polls.all.load(Ordering::Relaxed), 0);
        // A client with nothing held is forgotten.
        assert!(polls.by_client.lock().unwrap().is_empty());
    }
}
