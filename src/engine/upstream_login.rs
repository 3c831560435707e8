//! Approval through the upstream provider (`approval.mode: upstream`): the one-time link opens a
//! device page; "Continue" sends the browser to the provider's authorization endpoint (code +
//! PKCE); the provider redirects back to the gateway's callback, which exchanges the code,
//! validates the provider's ID token and checks that the person who logged in is the person
//! the request is for (identity binding); then a consent page collects Approve / Deny.
//!
//! A login attempt lives in a short-lived session bound to the browser by a `SameSite=Lax`
//! cookie (the provider's redirect back is a cross-site navigation); `state` and the session are
//! single-use. A mismatch or a provider error leaves the request pending: the requested user can
//! still approve through their own link.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value};

use super::decide::Decisions;
use super::pages::{Pages, Shown, cookie_value, record_choice};
use super::{EngineRequest, Shared};
use crate::clients::ClientRegistry;
use crate::clock::Clock;
use crate::config::IdentityClaim;
use crate::live::Live;
use crate::protocol::random_token;
use crate::store::KeptStore as _;
use crate::store::{Approval, PendingRequest, PendingStore, Store, StoreError};
use crate::upstream::{LoginRequest, LoginSecrets, Upstream};
use crate::users::UserDirectory;

pub(super) const LOGIN_COOKIE: &str = "ciba_login";

/// One login attempt at the upstream, keyed by its `state`.
#[derive(serde::Serialize, serde::Deserialize)]
struct LoginAttempt {
    sid: String,
    handle: String,
    secrets: LoginSecrets,
}

/// A successful login waiting for the user's decision, keyed by the session id.
#[derive(serde::Serialize, serde::Deserialize)]
struct PendingConsent {
    handle: String,
    approval: Approval,
}

/// The short-lived state of the upstream login flow, in the store (with a shared store any
/// replica may receive the browser back from the provider). Each entry is taken once.
struct LoginSessions {
    store: Arc<Store>,
}

/// How long a login attempt or a consent waits.
const SESSION_TTL: Duration = Duration::from_secs(15 * 60);

impl LoginSessions {
    async fn put<T: serde::Serialize>(
        &self,
        kind: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(value).map_err(|e| StoreError::Backend(e.to_string()))?;
        let ttl_ms = u64::try_from(SESSION_TTL.as_millis()).unwrap_or(u64::MAX);
        self.store.put_value(kind, key, text, ttl_ms).await
    }

    async fn take<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let text = self.store.take_value(kind, key).await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}

fn claim<'a>(c: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    c.get(k).and_then(Value::as_str)
}

/// Whether the person who logged in at the provider (the ID token's `claims`) is the person a
/// request is for: its `subject` in the gateway's directory, and that `user`'s record. `sub`
/// must equal the subject; `email` (case-insensitive) and `preferred_username` (exact) must
/// equal the user's. Anything missing binds nobody.
fn identity_bound(
    rule: IdentityClaim,
    claims: &Map<String, Value>,
    subject: &str,
    user: Option<&crate::users::User>,
) -> bool {
    match (rule, user) {
        (IdentityClaim::Sub, _) => claim(claims, "sub") == Some(subject),
        (IdentityClaim::Email, Some(u)) => {
            matches!((claim(claims, "email"), u.email.as_deref()), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
        }
        (IdentityClaim::PreferredUsername, Some(u)) => {
            matches!((claim(claims, "preferred_username"), u.username.as_deref()), (Some(a), Some(b)) if a == b)
        }
        (_, None) => false,
    }
}

/// The approval a bound login stands for: when and how the user authenticated at the provider
/// (its `auth_time`, or `now`; `acr`, `amr`), as whom (`sub`), and the provider's tokens.
fn approval_from_claims(
    claims: &Map<String, Value>,
    tokens: crate::store::IssuedTokens,
    now_ms: u64,
) -> Approval {
    Approval {
        auth_time: claims
            .get("auth_time")
            .and_then(Value::as_u64)
            .unwrap_or(now_ms / 1000),
        acr: claim(claims, "acr").map(str::to_owned),
        amr: claims
            .get("amr")
            .and_then(|v| serde_json::from_value(v.clone()).ok()),
        subject: claim(claims, "sub").map(str::to_owned),
        upstream_tokens: Some(Box::new(tokens)),
    }
}

/// The upstream login's dependencies: the provider, the short-lived login sessions, the
/// request's client and user (for the identity binding), the pages and the decisions.
pub(super) struct UpstreamLogin {
    upstream: Arc<Upstream>,
    sessions: LoginSessions,
    clock: Arc<dyn Clock>,
    store: Arc<Store>,
    clients: Arc<ClientRegistry>,
    users: Arc<Live<UserDirectory>>,
    pages: Arc<Pages>,
    decisions: Arc<Decisions>,
    /// The provider's discovery path (what its endpoints are read from).
    discovery_path: String,
    /// The path the login cookie is scoped to (the approval pages').
    approval_path: String,
    redirect_uri: String,
    consent_url: String,
    prompt_login: bool,
    identity_claim: IdentityClaim,
}

impl UpstreamLogin {
    pub(super) fn new(
        shared: &Shared,
        upstream: &Arc<Upstream>,
        decisions: &Arc<Decisions>,
    ) -> Self {
        let approval = &shared.paths.approval;
        Self {
            upstream: Arc::clone(upstream),
            sessions: LoginSessions {
                store: Arc::clone(&shared.store),
            },
            clock: Arc::clone(&shared.clock),
            store: Arc::clone(&shared.store),
            clients: Arc::clone(&shared.clients),
            users: Arc::clone(&shared.users),
            pages: Arc::clone(&shared.pages),
            decisions: Arc::clone(decisions),
            discovery_path: shared.paths.discovery.clone(),
            approval_path: approval.clone(),
            redirect_uri: shared.cfg.url_for(&format!("{approval}/callback")),
            consent_url: shared.cfg.url_for(&format!("{approval}/consent")),
            prompt_login: shared.cfg.approval.prompt_login,
            identity_claim: shared.cfg.approval.identity_claim,
        }
    }

    /// GET `{approval}/{handle}?login`: start the login at the upstream.
    pub(super) async fn start(&self, pending: &PendingRequest) -> Response<Bytes> {
        let upstream = &self.upstream;
        let Some(client) = self.clients.get(&pending.client_id).await else {
            return self.pages.message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in is not available",
                "Please try again later.",
            );
        };
        let Some(creds) = client.upstream.as_ref() else {
            return self.pages.message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in is not available",
                "This application cannot sign you in.",
            );
        };
        let req = LoginRequest {
            client_id: &creds.client_id,
            redirect_uri: &self.redirect_uri,
            scope: pending.scope.as_str(),
            login_hint: pending.login_hint.as_deref(),
            acr_values: pending.acr_values.as_deref(),
            prompt_login: self.prompt_login,
        };
        let (url, secrets) = match upstream.authorization_url(&self.discovery_path, &req).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the upstream login");
                return self.pages.message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Your provider is not reachable",
                    "Please try again in a moment.",
                );
            }
        };
        let sid = random_token();
        let attempt = LoginAttempt {
            sid: sid.clone(),
            handle: pending.handle.clone(),
            secrets,
        };
        let stored = self
            .sessions
            .put("login", &attempt.secrets.state, &attempt)
            .await;
        if let Err(e) = stored {
            return self.pages.unavailable(&e);
        }
        let mut resp = Response::new(Bytes::new());
        *resp.status_mut() = StatusCode::SEE_OTHER;
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(url.as_str()) {
            h.insert(header::LOCATION, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        let cookie = format!(
            "{LOGIN_COOKIE}={sid}; Path={}; Max-Age={}; HttpOnly; SameSite=Lax{}",
            self.approval_path,
            pending.expires_at_ms.saturating_sub(self.clock.now_ms()) / 1000 + 1,
            if self.pages.secure_cookie {
                "; Secure"
            } else {
                ""
            }
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.insert(header::SET_COOKIE, v);
        }
        resp
    }

    /// GET `{approval}/callback`: the provider sends the browser back.
    pub(super) async fn callback(&self, req: &EngineRequest) -> Response<Bytes> {
        let q: Vec<(String, String)> =
            form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let pages = &self.pages;
        // State and session are single-use.
        let attempt = match get("state") {
            Some(s) => match self.sessions.take::<LoginAttempt>("login", s).await {
                Ok(a) => a,
                Err(e) => return pages.unavailable(&e),
            },
            None => None,
        };
        let Some(attempt) = attempt else {
            return pages.message(
                StatusCode::BAD_REQUEST,
                "This sign-in has expired",
                "Open the link you received again.",
            );
        };
        if cookie_value(&req.headers, LOGIN_COOKIE) != Some(attempt.sid.as_str()) {
            return pages.message(
                StatusCode::FORBIDDEN,
                "This sign-in was started elsewhere",
                "Open the link you received again, in this browser.",
            );
        }
        if let Some(err) = get("error") {
            // Never the provider's raw output: its error code, and only if it is plain.
            let code: String = err
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(40)
                .collect();
            return pages.message(StatusCode::BAD_REQUEST, "Your provider did not sign you in", &format!("The provider answered: {code}. Nothing was approved; you can open the link again."));
        }
        let now = self.clock.now_ms();
        let pending = match self.store.view(&attempt.handle, now).await {
            Ok(Some(p)) => p,
            Ok(None) => return pages.gone(),
            Err(e) => return pages.unavailable(&e),
        };
        let upstream = &self.upstream;
        let (Some(client), Some(code)) = (self.clients.get(&pending.client_id).await, get("code"))
        else {
            return pages.message(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The provider's answer was incomplete. Open the link again.",
            );
        };
        let Some(creds) = client.upstream.as_ref() else {
            return pages.message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in is not available",
                "This application cannot sign you in.",
            );
        };
        let disc = &self.discovery_path;
        // The provider sees the code exchange in the trace of the request being approved
        // (crate::trace), not in the browser's.
        let exchange = upstream.exchange_code(
            disc,
            creds,
            code,
            &attempt.secrets.verifier,
            &self.redirect_uri,
        );
        let tokens = match crate::trace::background(pending.trace, "code_exchange", exchange).await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "upstream code exchange failed");
                return pages.message(
                    StatusCode::BAD_GATEWAY,
                    "Your provider did not complete the sign-in",
                    "Nothing was approved; you can open the link again.",
                );
            }
        };
        let Some(id_token) = tokens.id_token.as_deref() else {
            return pages.message(
                StatusCode::BAD_GATEWAY,
                "Your provider did not complete the sign-in",
                "It returned no ID token. Nothing was approved.",
            );
        };
        let claims = match upstream
            .validate_id_token(disc, id_token, &creds.client_id, &attempt.secrets.nonce)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "upstream ID token rejected");
                return pages.message(
                    StatusCode::BAD_GATEWAY,
                    "The sign-in could not be verified",
                    "Nothing was approved; you can open the link again.",
                );
            }
        };
        // Identity binding (security-critical): the person who logged in must be the person the
        // request's hint resolved to.
        let user = self
            .users
            .current()
            .by_subject(&pending.subject)
            .await
            .ok()
            .flatten();
        let bound = identity_bound(
            self.identity_claim,
            &claims,
            &pending.subject,
            user.as_deref(),
        );
        if !bound {
            tracing::warn!(client_id = %pending.client_id, expected = %pending.subject, "upstream login by a different user; not approved");
            return pages.message(
                StatusCode::FORBIDDEN,
                "You signed in as someone else",
                "This request is for a different person, so nothing was approved. The person it is for can still approve it with their own link.",
            );
        }
        let approval = approval_from_claims(&claims, tokens, now);
        let stored = self
            .sessions
            .put(
                "consent",
                &attempt.sid,
                &PendingConsent {
                    handle: attempt.handle,
                    approval,
                },
            )
            .await;
        if let Err(e) = stored {
            return pages.unavailable(&e);
        }
        let csrf = pages.csrf_token("consent", &attempt.sid);
        let shown = Shown {
            csrf: &csrf,
            continue_url: None,
            form_action: &self.consent_url,
            signed_in_as: claim(&claims, "email").or(claim(&claims, "sub")),
        };
        pages.approval_page(&pending, &client.name, now, shown)
    }

    /// POST `{approval}/consent`: the user's decision after the login.
    pub(super) async fn consent(&self, req: &EngineRequest) -> Response<Bytes> {
        let pages = &self.pages;
        let Some(form) = pages.form(req) else {
            return pages.unreadable_form();
        };
        let sid = cookie_value(&req.headers, LOGIN_COOKIE).unwrap_or("");
        if sid.is_empty() || !pages.csrf_ok("consent", sid, form.get("csrf").unwrap_or("")) {
            return pages.message(
                StatusCode::FORBIDDEN,
                "This form has expired",
                "Open the link you received again.",
            );
        }
        let consent = match self.sessions.take::<PendingConsent>("consent", sid).await {
            Ok(c) => c,
            Err(e) => return pages.unavailable(&e),
        };
        let Some(consent) = consent else {
            return pages.gone();
        };
        record_choice(
            pages,
            &self.decisions,
            &consent.handle,
            form.get("decision"),
            Some(consent.approval),
            crate::audit::Via::ProviderLogin,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::User;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn alice() -> User {
        User {
            subject: "sub-alice".into(),
            username: Some("alice".into()),
            email: Some("Alice@Example.com".into()),
            phone: None,
            name: None,
            user_code: None,
            notify: None,
        }
    }

    // The security-critical decision of approval through the provider, rule by rule.
    #[test]
    fn identity_binding() {
        use IdentityClaim::*;
        let u = alice();
        let c = claims(
            serde_json::json!({"sub": "sub-alice", "email": "alice@example.COM", "preferred_username": "alice"}),
        );
        assert!(identity_bound(Sub, &c, "sub-alice", Some(&u)));
        assert!(
            identity_bound(Sub, &c, "sub-alice", None),
            "sub needs no record"
        );
        assert!(!identity_bound(Sub, &c, "sub-bob", Some(&u)));
        assert!(
            identity_bound(Email, &c, "sub-alice", Some(&u)),
            "e-mail is case-insensitive"
        );
        assert!(
            !identity_bound(Email, &c, "sub-alice", None),
            "no record binds nobody"
        );
        assert!(identity_bound(PreferredUsername, &c, "sub-alice", Some(&u)));
        let other = claims(
            serde_json::json!({"sub": "sub-bob", "email": "bob@example.com", "preferred_username": "Alice"}),
        );
        assert!(!identity_bound(Email, &other, "sub-alice", Some(&u)));
        assert!(
            !identity_bound(PreferredUsername, &other, "sub-alice", Some(&u)),
            "usernames are exact"
        );
        let odd = claims(serde_json::json!({"sub": 1, "email": ["Alice@Example.com"]}));
        assert!(
            !identity_bound(Sub, &odd, "1", Some(&u)),
            "a non-string claim binds nobody"
        );
        assert!(!identity_bound(Email, &odd, "sub-alice", Some(&u)));
        assert!(!identity_bound(
            Email,
            &claims(serde_json::json!({})),
            "sub-alice",
            Some(&u)
        ));
    }

    #[test]
    fn approval_from_the_providers_claims() {
        let tokens: crate::store::IssuedTokens = serde_json::from_value(
            serde_json::json!({"access_token": "a", "token_type": "Bearer"}),
        )
        .unwrap();
        let a = approval_from_claims(
            &claims(
                serde_json::json!({"sub": "s", "auth_time": 100, "acr": "urn:x", "amr": ["pwd", "otp"]}),
            ),
            tokens.clone(),
            999_000,
        );
        assert_eq!(
            (a.auth_time, a.acr.as_deref(), a.subject.as_deref()),
            (100, Some("urn:x"), Some("s"))
        );
        assert_eq!(a.amr, Some(vec!["pwd".to_owned(), "otp".to_owned()]));
        let a = approval_from_claims(&claims(serde_json::json!({"sub": "s"})), tokens, 999_000);
        assert_eq!(a.auth_time, 999, "now, when the provider does not say");
    }
}
