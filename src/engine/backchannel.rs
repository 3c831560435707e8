//! The backchannel authentication endpoint (CIBA §7), validated in the order of BC-VAL-01:
//! client authentication, signed request, parameter syntax (hint count first), user
//! resolution, user code and binding message; then the request is stored, the user reached,
//! and the client acknowledged.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};

use super::auth_request::{AuthRequest, ObjectCheck};
use super::{EngineRequest, Shared, json_response};
use crate::channel::{Channel, Notification, Notified};
use crate::clients::Client;
use crate::clock::Clock;
use crate::config::{Charset, CibaPolicy, DeliveryMode, HintType};
use crate::domain::{Callback, CallbackMode};
use crate::live::Live;
use crate::protocol::form::require_form_content_type;
use crate::protocol::{AuthReqId, ErrorCode, Form, NotificationToken, OAuthError, Scope};
use crate::ratelimit::RateLimiter;
use crate::store::{Delivery, PendingRequest, PendingStore, Store};
use crate::tokens::Minter;
use crate::users::User;
use crate::users::{UserCodeGuard, UserDirectory};

/// How long after its expiry an `id_token_hint` is still accepted (SEC-03).
const ID_TOKEN_HINT_GRACE_SECS: u64 = 24 * 3600;

#[derive(Deserialize)]
struct HintClaims {
    sub: String,
}

/// The backchannel endpoint's dependencies: client authentication, the user directory and its
/// user codes, the rate limits, the store, the channel that reaches the user, the approval
/// links, and the keys that verify an `id_token_hint`.
pub(super) struct Backchannel {
    policy: CibaPolicy,
    issuer: String,
    clock: Arc<dyn Clock>,
    auth: super::client_auth::ClientAuth,
    hint_issuers: Arc<super::hint_token::HintIssuers>,
    users: Arc<Live<UserDirectory>>,
    user_codes: UserCodeGuard,
    /// The rate limits (`limits.bc_per_client`, `limits.bc_per_user`), replaced by a reload.
    pub(super) limits: Live<Limits>,
    store: Arc<Store>,
    channel: Arc<Live<Channel>>,
    pages: Arc<super::Pages>,
    minter: Arc<Live<Minter>>,
    /// For a push request's expiry (PUSH-ERR-01).
    decisions: Arc<super::decide::Decisions>,
}

/// The backchannel endpoint's rate limits; their cells live in the store, so replacing the
/// limits keeps what each client and user has spent.
pub(super) struct Limits {
    per_client: Option<RateLimiter>,
    per_user: Option<RateLimiter>,
}

impl Limits {
    pub(super) fn from_parts(
        clock: &Arc<dyn Clock>,
        store: &Arc<Store>,
        limits: &crate::config::Limits,
    ) -> Self {
        let limiter = |r: &Option<crate::config::Rate>, name| {
            r.as_ref()
                .map(|r| RateLimiter::new(r, Arc::clone(clock), Arc::clone(store), name))
        };
        Self {
            per_client: limiter(&limits.bc_per_client, "client"),
            per_user: limiter(&limits.bc_per_user, "user"),
        }
    }
}

impl Backchannel {
    pub(super) fn new(shared: &Shared, decisions: &Arc<super::decide::Decisions>) -> Self {
        Self {
            policy: shared.cfg.ciba.clone(),
            issuer: shared.issuer.clone(),
            clock: Arc::clone(&shared.clock),
            auth: super::client_auth::ClientAuth::new(shared),
            hint_issuers: Arc::clone(&shared.hint_issuers),
            users: Arc::clone(&shared.users),
            user_codes: UserCodeGuard::new(&shared.cfg.ciba.user_code, Arc::clone(&shared.store)),
            limits: Live::new(Limits::from_parts(
                &shared.clock,
                &shared.store,
                &shared.cfg.limits,
            )),
            store: Arc::clone(&shared.store),
            channel: Arc::clone(&shared.channel),
            pages: Arc::clone(&shared.pages),
            minter: Arc::clone(&shared.minter),
            decisions: Arc::clone(decisions),
        }
    }

    pub(super) async fn handle(&self, req: &EngineRequest) -> Response<Bytes> {
        match self.backchannel_inner(req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn backchannel_inner(&self, req: &EngineRequest) -> Result<Response<Bytes>, OAuthError> {
        // BC-AUTH-01
        if req.method != Method::POST {
            return Err(OAuthError::method_not_allowed());
        }
        require_form_content_type(&req.headers)?;
        let form = Form::parse(&req.body)?;

        // (1) client authentication, BC-AUTH-02/05/06
        let certificate = self.auth.certificate(req);
        let client = self
            .auth
            .authenticate(req, &form, certificate.as_ref())
            .await?;
        let client = &client;
        if !client.ciba_allowed {
            return Err(OAuthError::bad_request(ErrorCode::UnauthorizedClient)
                .describe("this client is not allowed the CIBA grant"));
        }
        // GW-07: every authenticated request counts against the client's budget.
        let limits = self.limits.current();
        if let Some(l) = &limits.per_client
            && let Err(wait) = l
                .admit(&client.id)
                .await
                .map_err(super::store_unavailable)?
        {
            crate::audit::refused("client", Some(&client.id));
            return Err(rate_limited(
                "too many authentication requests from this client; try again later",
                wait,
            ));
        }

        // (2) the signed request (C§7.1.1), BC-JWT-01…10: parsed, like a form, into one
        // typed request that the rest validates.
        let params = self.parameters(client, &form).await?;

        // (3) syntax and presence; the hint count comes before any hint is looked at (BC-REQ-02)
        let hints = params.hints();
        if hints.iter().flatten().count() != 1 {
            return Err(OAuthError::invalid_request(
                "exactly one of login_hint, login_hint_token and id_token_hint is required",
            ));
        }
        let hint_type = [
            HintType::LoginHint,
            HintType::LoginHintToken,
            HintType::IdTokenHint,
        ][hints.iter().position(Option::is_some).unwrap_or_default()];
        if !client.allowed_hints.contains(&hint_type) {
            return Err(OAuthError::invalid_request(format!(
                "this client may not name users by {}",
                hint_type.parameter()
            )));
        }
        let scope = self.check_scope(client, params.scope.as_deref())?;
        let lifetime = self.check_expiry(params.requested_expiry.as_deref())?;
        let callback = callback(client, params.client_notification_token.as_deref())?;
        let binding_message = params.binding_message.as_deref();
        if binding_message.is_none() && (self.policy.binding_message.required || client.fapi) {
            // BC-UC-04: absent-but-required is invalid_request, not invalid_binding_message
            // (FAPI-07 requires one).
            return Err(OAuthError::invalid_request("binding_message is required"));
        }

        // (4) user resolution, BC-REQ-07/08/09
        let user = match hints {
            [Some(login_hint), None, None] => self.user_by_hint(login_hint).await?,
            [None, Some(token), None] => {
                let subject = self
                    .hint_issuers
                    .subject(token, self.clock.now_secs())
                    .await?;
                self.user_by_hint(&subject).await?
            }
            [None, None, Some(id_token_hint)] => {
                self.user_by_id_token_hint(client, id_token_hint).await?
            }
            _ => unreachable!("exactly one hint was counted above"),
        };
        // The channel is told the hint as the client sent it, or the subject for the tokens.
        let hint_text = params.login_hint.as_deref().unwrap_or(&user.subject);
        self.accept(Checked {
            client,
            user: &user,
            hint_text,
            scope,
            lifetime,
            binding_message,
            callback,
            params: &params,
        })
        .await
    }

    /// The request's parameters: from its signed request object when it sends one (or must:
    /// BC-JWT-09, FAPI-02), else from the form.
    async fn parameters(
        &self,
        client: &Client,
        form: &Form<'_>,
    ) -> Result<AuthRequest, OAuthError> {
        // BC-JWT-06: by value only.
        if form.has("request_uri") {
            return Err(OAuthError::invalid_request(
                "request_uri is not supported: send the signed request by value (request)",
            ));
        }
        match form.get("request") {
            Some(jwt) => {
                let check = ObjectCheck {
                    client,
                    issuer: &self.issuer,
                    now_secs: self.clock.now_secs(),
                    skew_secs: self.policy.clock_skew_secs,
                    store: &self.store,
                };
                AuthRequest::from_object(jwt, form, &check).await
            }
            None if client.must_sign => Err(OAuthError::invalid_request(
                "this client's authentication requests must be signed (request)",
            )),
            None => Ok(AuthRequest::from_form(form)),
        }
    }

    /// Steps (5) and on for a request that passed (1)–(4).
    async fn accept(&self, checked: Checked<'_>) -> Result<Response<Bytes>, OAuthError> {
        let Checked {
            client,
            user,
            hint_text,
            scope,
            lifetime,
            binding_message,
            callback,
            params,
        } = checked;
        // (5) user code (BC-UC-01/02) and binding message (BC-UC-03)
        // A user_code that is sent is always verified: discovery says user codes are supported,
        // so a wrong one must not reach the user just because the client is not registered to
        // require it.
        let user_code = params.user_code.as_deref();
        if self.policy.user_code.supported && (client.user_code_required || user_code.is_some()) {
            self.check_user_code(user, user_code).await?;
        }
        if let Some(m) = binding_message {
            self.check_binding_message(m)?;
        }
        // SEC-04 / GW-07: only requests that would reach the user count against the user's
        // budget, whichever client sends them. The user is not named in the log.
        let limits = self.limits.current();
        if let Some(l) = &limits.per_user
            && let Err(wait) = l
                .admit(&user.subject)
                .await
                .map_err(super::store_unavailable)?
        {
            // The user is not named: the line is about the client's request.
            crate::audit::refused("user", Some(&client.id));
            return Err(rate_limited(
                "too many authentication requests for this user; try again later",
                wait,
            ));
        }

        let now = self.clock.now_ms();
        let id = AuthReqId::generate();
        let pending = PendingRequest {
            handle: crate::protocol::approval_handle(&id),
            id,
            client_id: client.id.clone(),
            subject: user.subject.clone(),
            scope,
            acr_values: params.acr_values.clone(),
            binding_message: binding_message.map(str::to_owned),
            login_hint: params.login_hint.clone(),
            created_at_ms: now,
            expires_at_ms: now + u64::from(lifetime) * 1000,
            interval_secs: self.policy.interval_secs,
            callback,
            trace: crate::trace::TraceContext::current(),
        };
        self.store
            .create(pending.clone())
            .await
            .map_err(super::store_unavailable)?;
        crate::audit::accepted(&pending, lifetime);

        let approval_url = self.pages.link_for(&pending.handle);
        let note = Notification {
            request: &pending,
            client,
            user,
            login_hint: hint_text,
            approval_url: &approval_url,
        };
        match self.channel.current().notify(&note).await {
            Err(e) => {
                // Nothing may be left behind that can never complete.
                if let Err(e) = self.store.cancel(&pending.id).await {
                    tracing::error!(error = %e, "an unreachable user's request could not be removed; it expires unanswered");
                }
                crate::audit::user_unreachable(pending.id.as_str(), &client.id);
                tracing::warn!(client_id = %client.id, error = %e, "the user could not be reached; request refused");
                return Err(OAuthError::unavailable(
                    "the authentication channel could not be reached; the request was not started",
                    10,
                ));
            }
            Ok(Notified::Settled(Delivery::Pending)) => {}
            Ok(Notified::Settled(d)) => {
                crate::audit::user_notified(pending.id.as_str(), &d);
                super::record_delivery(&self.store, &pending.id, d).await;
            }
            // Delivered in the background; the client's polling never waits for it.
            Ok(Notified::InFlight(delivery)) => {
                let (store, id) = (Arc::clone(&self.store), pending.id.clone());
                tokio::spawn(crate::trace::background(
                    pending.trace,
                    "notify_user",
                    async move {
                        let d = delivery.await;
                        crate::audit::user_notified(id.as_str(), &d);
                        super::record_delivery(&store, &id, d).await;
                    },
                ));
            }
        }
        self.decisions.push_expiry(&pending).await;

        // BC-ACK-01..04
        let body = serde_json::to_vec(&Acknowledgement {
            auth_req_id: pending.id.as_str(),
            expires_in: lifetime,
            interval: pending.interval_secs,
        })
        .expect("an acknowledgement serialises");
        Ok(json_response(StatusCode::OK, Bytes::from(body)))
    }

    /// BC-REQ-01: present, contains `openid`, every value allowed for the client.
    fn check_scope(&self, client: &Client, raw: Option<&str>) -> Result<Scope, OAuthError> {
        let raw = raw.ok_or_else(|| OAuthError::invalid_request("scope is required"))?;
        let scope = Scope::parse(raw).ok_or_else(|| {
            OAuthError::bad_request(ErrorCode::InvalidScope).describe("malformed scope")
        })?;
        if !scope.contains("openid") {
            return Err(OAuthError::bad_request(ErrorCode::InvalidScope)
                .describe("scope must include openid"));
        }
        if let Some(bad) = scope.iter().find(|s| !client.scopes.iter().any(|a| a == s)) {
            return Err(OAuthError::bad_request(ErrorCode::InvalidScope)
                .describe(format!("scope '{bad}' is not allowed for this client")));
        }
        Ok(scope)
    }

    /// BC-REQ-04/05: a positive integer, capped at the configured maximum.
    fn check_expiry(&self, raw: Option<&str>) -> Result<u32, OAuthError> {
        let policy = &self.policy;
        let Some(raw) = raw else {
            return Ok(policy.default_expiry_secs);
        };
        if raw.is_empty() || raw.len() > 10 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(OAuthError::invalid_request(
                "requested_expiry must be a positive integer",
            ));
        }
        match raw.parse::<u64>() {
            Ok(0) | Err(_) => Err(OAuthError::invalid_request(
                "requested_expiry must be a positive integer",
            )),
            Ok(n) => Ok(n.min(u64::from(policy.max_expiry_secs)) as u32),
        }
    }

    async fn user_by_hint(&self, hint: &str) -> Result<Arc<User>, OAuthError> {
        match self.users.current().resolve_hint(hint).await {
            Ok(Some(u)) => Ok(u),
            Ok(None) => Err(OAuthError::bad_request(ErrorCode::UnknownUserId)
                .describe("no user matches the hint")),
            Err(e) => {
                tracing::warn!(error = %e, "user directory lookup failed");
                Err(OAuthError::unavailable(
                    "the user directory is unavailable",
                    5,
                ))
            }
        }
    }

    /// SEC-03: an ID token this gateway issued, to this client, accepted for a while after `exp`.
    async fn user_by_id_token_hint(
        &self,
        client: &Client,
        token: &str,
    ) -> Result<Arc<User>, OAuthError> {
        let mut v = Validation::new(self.minter.get().keys().active_alg());
        v.validate_exp = false;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&client.id]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        #[derive(Deserialize)]
        struct WithExp {
            #[serde(flatten)]
            hint: HintClaims,
            exp: u64,
        }
        let claims: WithExp = self.minter.get().keys().verify(token, v).ok_or_else(|| {
            OAuthError::invalid_request(
                "id_token_hint is not a valid ID token issued to this client",
            )
        })?;
        if claims.exp + ID_TOKEN_HINT_GRACE_SECS < self.clock.now_secs() {
            return Err(OAuthError::invalid_request(
                "id_token_hint has expired too long ago",
            ));
        }
        match self.users.current().by_subject(&claims.hint.sub).await {
            Ok(Some(u)) => Ok(u),
            Ok(None) => Err(OAuthError::bad_request(ErrorCode::UnknownUserId)
                .describe("the hinted user no longer exists")),
            Err(_) => Err(OAuthError::unavailable(
                "the user directory is unavailable",
                5,
            )),
        }
    }

    async fn check_user_code(
        &self,
        user: &User,
        presented: Option<&str>,
    ) -> Result<(), OAuthError> {
        let presented = presented.ok_or_else(|| {
            OAuthError::bad_request(ErrorCode::MissingUserCode)
                .describe("this client must send a user_code")
        })?;
        if self
            .user_codes
            .locked(&user.subject)
            .await
            .map_err(super::store_unavailable)?
        {
            return Err(
                OAuthError::new(ErrorCode::AccessDenied, StatusCode::FORBIDDEN)
                    .describe("too many wrong user codes for this user; try again later"),
            );
        }
        let ok = match &user.user_code {
            Some(v) => v.verify(presented).await,
            None => false,
        };
        if !ok {
            self.user_codes
                .record_failure(&user.subject)
                .await
                .map_err(super::store_unavailable)?;
            return Err(OAuthError::bad_request(ErrorCode::InvalidUserCode)
                .describe("the user code is wrong"));
        }
        Ok(())
    }

    /// BC-UC-03: shown correctly or rejected; never cut or mangled.
    fn check_binding_message(&self, m: &str) -> Result<(), OAuthError> {
        let p = &self.policy.binding_message;
        let bad = |why: &'static str| {
            OAuthError::bad_request(ErrorCode::InvalidBindingMessage).describe(why)
        };
        if m.chars().count() > p.max_chars {
            return Err(bad("binding_message is too long"));
        }
        let ok = match p.charset {
            Charset::Ascii => m.chars().all(|c| c == ' ' || c.is_ascii_graphic()),
            Charset::Text => m.chars().all(crate::protocol::text::shows_as_itself),
        };
        if ok {
            Ok(())
        } else {
            Err(bad("binding_message has characters that cannot be shown"))
        }
    }
}

/// A backchannel request that passed client authentication, the syntax checks and user
/// resolution (steps 1–4 of C§7.2): what the rest of the flow needs.
struct Checked<'a> {
    client: &'a Arc<Client>,
    user: &'a Arc<User>,
    /// The hint as the client sent it (the subject for an `id_token_hint`).
    hint_text: &'a str,
    scope: Scope,
    /// Seconds.
    lifetime: u32,
    binding_message: Option<&'a str>,
    callback: Option<Callback>,
    params: &'a AuthRequest,
}

/// BC-REQ-03: a ping (or push) client must send a `client_notification_token` in the RFC 6750
/// b64token syntax, at most 1024 characters; a poll client's is ignored. The request keeps the
/// client's mode and endpoint as they are now (RCM-03).
fn callback(client: &Client, raw: Option<&str>) -> Result<Option<Callback>, OAuthError> {
    let mode = match client.delivery {
        DeliveryMode::Poll => return Ok(None),
        DeliveryMode::Ping => CallbackMode::Ping,
        DeliveryMode::Push => CallbackMode::Push,
    };
    let raw = raw.ok_or_else(|| {
        OAuthError::invalid_request("client_notification_token is required for this client")
    })?;
    let token = NotificationToken::parse(raw).ok_or_else(|| {
        OAuthError::invalid_request(
            "client_notification_token must be a bearer token (RFC 6750 b64token) of at most 1024 characters",
        )
    })?;
    // A ping or push client has an endpoint (the configuration's and the metadata's rule).
    Ok(client
        .notification_endpoint
        .clone()
        .map(|endpoint| Callback {
            mode,
            endpoint,
            token,
        }))
}

/// Over a rate limit: 403 `access_denied`, the backchannel endpoint's code for a request the
/// OP's policy refuses before any user interaction (BC-ERR-01 keeps to the codes of C§13, so
/// no 429), with `Retry-After`.
fn rate_limited(description: &'static str, wait_secs: u64) -> OAuthError {
    OAuthError::new(ErrorCode::AccessDenied, StatusCode::FORBIDDEN)
        .describe(description)
        .retry_after(u32::try_from(wait_secs).unwrap_or(u32::MAX))
}

/// The backchannel endpoint's answer (BC-ACK-01..04), written straight to bytes.
#[derive(Serialize)]
struct Acknowledgement<'a> {
    auth_req_id: &'a str,
    expires_in: u32,
    interval: u32,
}
