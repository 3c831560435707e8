//! Userinfo (OIDC Core §5.3) for the access tokens the gateway mints. The endpoint is shared
//! with the provider: a request whose bearer token was signed by one of the gateway's keys for
//! its issuer is answered here, with the claims the gateway's ID token carries for the granted
//! scopes; every other request (the provider's own tokens, no token at all) is handed back to be
//! forwarded untouched. Recognition needs no lookup: the token's `kid`, `typ` and signature.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use jsonwebtoken::Validation;
use serde_json::{Map, Value};

use std::sync::Arc;

use super::{EngineRequest, Outcome, Shared, json_response};
use crate::clock::Clock;
use crate::live::Live;
use crate::protocol::form::require_form_content_type;
use crate::protocol::{Form, OAuthError, Scope};
use crate::tokens::Minter;
use crate::tokens::{AccessTokenClaims, scoped_claims};
use crate::users::UserDirectory;

/// Where the request carries its access token (RFC 6750 §2.1, §2.2).
pub(super) fn bearer<'a>(headers: &'a HeaderMap, form: Option<&'a Form<'a>>) -> Option<&'a str> {
    let in_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    in_header.or_else(|| form?.get("access_token"))
}

/// Userinfo's dependencies: the keys that recognise the gateway's tokens, and the directory
/// the claims come from.
pub(super) struct Userinfo {
    issuer: String,
    /// The `aud` of the gateway's access tokens.
    audience: String,
    clock: Arc<dyn Clock>,
    minter: Arc<Live<Minter>>,
    users: Arc<Live<UserDirectory>>,
    /// A deleted client's tokens are refused here (RCM-01).
    clients: Arc<crate::clients::ClientRegistry>,
    mtls: crate::config::MtlsConfig,
}

impl Userinfo {
    pub(super) fn new(shared: &Shared) -> Self {
        Self {
            issuer: shared.issuer.clone(),
            audience: shared
                .cfg
                .tokens
                .access_token_audience
                .clone()
                .unwrap_or_else(|| shared.issuer.clone()),
            clock: Arc::clone(&shared.clock),
            minter: Arc::clone(&shared.minter),
            users: Arc::clone(&shared.users),
            clients: Arc::clone(&shared.clients),
            mtls: shared.cfg.mtls.clone(),
        }
    }

    pub(super) async fn handle(&self, req: EngineRequest) -> Outcome {
        let form = (req.method == Method::POST && require_form_content_type(&req.headers).is_ok())
            .then(|| Form::parse(&req.body).ok())
            .flatten();
        let Some(token) = bearer(&req.headers, form.as_ref()) else {
            return Outcome::Forward(req);
        };
        let Some(claims) = self.own_access_token(token) else {
            return Outcome::Forward(req);
        };
        Outcome::Respond(match self.userinfo_for(&req, form.as_ref(), claims).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        })
    }

    /// The claims of an access token this gateway signed (its `kid`, `at+jwt`, a valid
    /// signature); `None` for any other token. Expiry and issuer are checked by the caller, so
    /// that an expired token of ours is refused here rather than sent to the provider.
    fn own_access_token(&self, token: &str) -> Option<AccessTokenClaims> {
        let h = jsonwebtoken::decode_header(token).ok()?;
        if !h
            .kid
            .as_deref()
            .is_some_and(|k| self.minter.get().keys().has_kid(k))
            || !h
                .typ
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
        {
            return None;
        }
        let mut v = Validation::new(h.alg);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        self.minter.get().keys().verify(token, v)
    }

    async fn userinfo_for(
        &self,
        req: &EngineRequest,
        form: Option<&Form<'_>>,
        at: AccessTokenClaims,
    ) -> Result<http::Response<Bytes>, OAuthError> {
        // RFC 6750 §2: one way of sending the token, not two.
        if req.headers.get_all(header::AUTHORIZATION).iter().count() > 1
            || (req.headers.contains_key(header::AUTHORIZATION)
                && form.is_some_and(|f| f.get("access_token").is_some()))
        {
            return Err(OAuthError::invalid_request(
                "the access token must be sent in exactly one way",
            ));
        }
        if at.iss != self.issuer {
            return Err(OAuthError::invalid_token(
                "the access token is for another issuer",
            ));
        }
        let now = self.clock.now_ms() / 1000;
        if at.exp <= now {
            return Err(OAuthError::invalid_token("the access token has expired"));
        }
        if at.nbf.is_some_and(|nbf| nbf > now) {
            return Err(OAuthError::invalid_token(
                "the access token is not valid yet",
            ));
        }
        if at.aud != self.audience {
            return Err(OAuthError::invalid_token(
                "the access token is for another audience",
            ));
        }
        // RCM-01: a client deleted through its registration takes its tokens with it.
        if self.clients.get(&at.client_id).await.is_none() {
            return Err(OAuthError::invalid_token(
                "the client the access token was issued to no longer exists",
            ));
        }
        // RFC 8705 §3: a bound token is used with the certificate it is bound to.
        if let Some(cnf) = &at.cnf {
            let presented = super::client_auth::client_certificate(req, &self.mtls);
            if presented.is_none_or(|c| c.thumbprint() != cnf.x5t_s256) {
                return Err(OAuthError::invalid_token(
                    "the access token is bound to another TLS client certificate",
                ));
            }
        }
        let scope = Scope::parse(&at.scope)
            .filter(|s| s.contains("openid"))
            .ok_or_else(|| {
                OAuthError::new(
                    crate::protocol::ErrorCode::InsufficientScope,
                    StatusCode::FORBIDDEN,
                )
                .describe("the access token was not granted the openid scope")
            })?;
        let user = self
            .users
            .current()
            .by_subject(&at.sub)
            .await
            .map_err(|_| OAuthError::unavailable("the user directory is unavailable", 5))?;
        let mut body = Map::new();
        body.insert("sub".into(), Value::from(at.sub));
        if let Some(u) = user {
            for (k, v) in scoped_claims(&scope, &u) {
                body.insert(k, Value::from(v));
            }
        }
        Ok(json_response(
            StatusCode::OK,
            Bytes::from(Value::Object(body).to_string()),
        ))
    }
}
