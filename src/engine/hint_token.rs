//! `login_hint_token` (CIBA §7.1, SEC-02): a JWT signed by one of the issuers in
//! `ciba.login_hint_token.issuers`, naming the user in its `sub` (or the issuer's
//! `subject_claim`), which is then resolved like a `login_hint`.

use jsonwebtoken::Validation;
use serde_json::{Map, Value};

use crate::config::{Config, ConfigErrors, Problems};
use crate::jwks::{ASYMMETRIC, PublicKeys, Refused};
use crate::outbound::OutboundClient;
use crate::protocol::{ErrorCode, OAuthError};

struct Issuer {
    issuer: String,
    keys: PublicKeys,
    subject_claim: String,
}

/// The trusted issuers of `login_hint_token`s.
pub(super) struct HintIssuers {
    issuers: Vec<Issuer>,
    skew_secs: u64,
}

impl HintIssuers {
    /// Loads every issuer's keys (a file or inline set now; a `jwks_uri` when first needed).
    pub(super) fn from_config(cfg: &Config) -> Result<Self, ConfigErrors> {
        let policy = &cfg.ciba.login_hint_token;
        let client = OutboundClient::new(&policy.outbound);
        let mut problems = Problems::new();
        let mut issuers = Vec::new();
        for (i, h) in policy.issuers.iter().enumerate() {
            let keys = problems
                .take(
                    format!("ciba.login_hint_token.issuers[{i}]"),
                    PublicKeys::from_config(&h.keys(), &client),
                )
                .flatten();
            if let Some(keys) = keys {
                issuers.push(Issuer {
                    issuer: h.issuer.clone(),
                    keys,
                    subject_claim: h.subject_claim.clone().unwrap_or_else(|| "sub".into()),
                });
            }
        }
        problems.finish(|| Self {
            issuers,
            skew_secs: cfg.ciba.clock_skew_secs,
        })
    }

    /// The user a `login_hint_token` names (its value of the issuer's subject claim): from a
    /// trusted issuer, signed by one of its keys, not expired (`expired_login_hint_token`,
    /// BC-REQ-08); anything else is `invalid_request`.
    pub(super) async fn subject(&self, token: &str, now_secs: u64) -> Result<String, OAuthError> {
        let bad = |why: &str| OAuthError::invalid_request(format!("login_hint_token {why}"));
        let iss = unverified_issuer(token).ok_or_else(|| bad("is not a JWT with an iss"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| bad("is not from a trusted issuer"))?;
        let mut v = Validation::default();
        v.set_issuer(&[&issuer.issuer]);
        v.validate_aud = false;
        v.validate_exp = false;
        v.validate_nbf = true;
        v.leeway = self.skew_secs;
        v.set_required_spec_claims(&["exp", "iss"]);
        let claims: Map<String, Value> = issuer
            .keys
            .verify(token, ASYMMETRIC, v, now_secs)
            .await
            .map_err(|e| match e {
            Refused::Invalid(why) => bad(&format!("is not valid: {why}")),
            Refused::Unavailable(_) => {
                OAuthError::unavailable("the login_hint_token issuer's keys are unavailable", 5)
            }
        })?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        if exp + self.skew_secs < now_secs {
            return Err(OAuthError::bad_request(ErrorCode::ExpiredLoginHintToken)
                .describe("the login_hint_token has expired"));
        }
        claims
            .get(&issuer.subject_claim)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad("names no user"))
    }
}

/// The `iss` of a JWT, unverified: to find whose keys verify it.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}
