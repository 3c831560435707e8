//! A backchannel authentication request's parameters, parsed into one typed value whatever
//! carried them: form fields, or the claims of a signed request object (CIBA §7.1.1). The
//! backchannel flow validates that one value, so the rules are the same for both.

use jsonwebtoken::Validation;
use serde_json::{Map, Value};

use crate::clients::Client;
use crate::protocol::{Form, OAuthError};
use crate::store::KeptStore as _;
use crate::store::Store;

/// The parameters of an authentication request (C§7.1).
#[derive(Debug, Default)]
pub(super) struct AuthRequest {
    pub scope: Option<String>,
    pub client_notification_token: Option<String>,
    pub acr_values: Option<String>,
    pub login_hint_token: Option<String>,
    pub id_token_hint: Option<String>,
    pub login_hint: Option<String>,
    pub binding_message: Option<String>,
    pub user_code: Option<String>,
    pub requested_expiry: Option<String>,
}

/// The parameters, by name, with where each goes.
const PARAMETERS: &[&str] = &[
    "scope",
    "client_notification_token",
    "acr_values",
    "login_hint_token",
    "id_token_hint",
    "login_hint",
    "binding_message",
    "user_code",
    "requested_expiry",
];

impl AuthRequest {
    fn set(&mut self, name: &str, value: String) {
        let slot = match name {
            "scope" => &mut self.scope,
            "client_notification_token" => &mut self.client_notification_token,
            "acr_values" => &mut self.acr_values,
            "login_hint_token" => &mut self.login_hint_token,
            "id_token_hint" => &mut self.id_token_hint,
            "login_hint" => &mut self.login_hint,
            "binding_message" => &mut self.binding_message,
            "user_code" => &mut self.user_code,
            "requested_expiry" => &mut self.requested_expiry,
            _ => return,
        };
        *slot = Some(value);
    }

    /// The parameters of an unsigned request: its form fields.
    pub(super) fn from_form(form: &Form<'_>) -> Self {
        let mut r = Self::default();
        for name in PARAMETERS {
            if let Some(v) = form.get(name) {
                r.set(name, v.to_owned());
            }
        }
        r
    }

    /// The parameters of a signed request (BC-JWT-01…10): a JWS from the authenticated
    /// client's keys, with one of the algorithms it may use, naming it as `iss` and the
    /// issuer in `aud`, not expired, not issued or valid in the future, with a `jti` used
    /// once; every failure is `invalid_request` (BC-JWT-05). Under FAPI-CIBA its `nbf` is at
    /// most 60 minutes old and its lifetime at most 60 minutes (FAPI-04).
    pub(super) async fn from_object(
        jwt: &str,
        form: &Form<'_>,
        check: &ObjectCheck<'_>,
    ) -> Result<Self, OAuthError> {
        let bad = |why: &str| OAuthError::invalid_request(format!("the signed request {why}"));
        // BC-JWT-01: the parameters travel only in the object (client authentication stays
        // outside it; unknown parameters are ignored, BC-REQ-06).
        if let Some(outside) = PARAMETERS.iter().find(|p| form.has(p)) {
            return Err(OAuthError::invalid_request(format!(
                "{outside} must be inside the signed request, not beside it"
            )));
        }
        // BC-JWT-06: JWS only, by value.
        if jwt.split('.').count() != 3 {
            return Err(bad("must be a signed JWT (JWS), not encrypted"));
        }
        let client = check.client;
        let keys = client
            .keys
            .as_ref()
            .ok_or_else(|| bad("cannot be verified: the client has no keys"))?;
        let mut v = Validation::default();
        v.set_audience(&[check.issuer]);
        v.set_issuer(&[&client.id]);
        v.leeway = check.skew_secs;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        let claims: Map<String, Value> = keys
            .verify(jwt, &client.request_algs(), v, check.now_secs)
            .await
            .map_err(|e| bad(&format!("is not valid: {e}")))?;
        let now = check.now_secs;
        let number = |k: &str| claims.get(k).and_then(Value::as_u64);
        let iat = number("iat").ok_or_else(|| bad("has no iat"))?;
        if iat > now + check.skew_secs {
            return Err(bad("was issued in the future"));
        }
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| bad("has no jti"))?;
        if claims.contains_key("request") || claims.contains_key("request_uri") {
            return Err(bad("must not contain request or request_uri"));
        }
        if claims
            .get("client_id")
            .is_some_and(|c| c.as_str() != Some(client.id.as_str()))
        {
            return Err(bad("names another client_id (BC-JWT-08)"));
        }
        let (exp, nbf) = (
            number("exp").unwrap_or_default(),
            number("nbf").unwrap_or_default(),
        );
        if client.fapi {
            const HOUR: u64 = 3600;
            if nbf + HOUR < now {
                return Err(bad("has an nbf more than 60 minutes old (FAPI-04)"));
            }
            if exp.saturating_sub(nbf) > HOUR {
                return Err(bad("lives longer than 60 minutes (FAPI-04)"));
            }
        }
        // BC-JWT-07: single use within its lifetime, on every replica.
        let window_ms = (exp + check.skew_secs).saturating_sub(now).max(1) * 1000;
        let uses = check
            .store
            .count(
                "request-object",
                &crate::clients::single_use_key(&client.id, jti),
                Some(window_ms),
            )
            .await
            .map_err(super::store_unavailable)?;
        if uses > 1 {
            return Err(bad("was used before (its jti)"));
        }
        let mut r = Self::default();
        for name in PARAMETERS {
            match claims.get(*name) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.is_empty() => {}
                Some(Value::String(s)) => r.set(name, s.clone()),
                // BC-REQ-04: a number is as good as a string here.
                Some(Value::Number(n)) if *name == "requested_expiry" => r.set(name, n.to_string()),
                Some(_) => return Err(bad(&format!("has a {name} that is not a string"))),
            }
        }
        Ok(r)
    }

    /// The hints present, in the order `login_hint`, `login_hint_token`, `id_token_hint`.
    pub(super) fn hints(&self) -> [Option<&str>; 3] {
        [
            self.login_hint.as_deref(),
            self.login_hint_token.as_deref(),
            self.id_token_hint.as_deref(),
        ]
    }
}

/// What verifying a request object needs.
pub(super) struct ObjectCheck<'a> {
    pub client: &'a Client,
    pub issuer: &'a str,
    pub now_secs: u64,
    pub skew_secs: u64,
    pub store: &'a Store,
}
