//! Keycloak's "HTTP Authentication Channel" contract:
//!
//! 1. The gateway POSTs JSON (`login_hint`, `binding_message`, `scope`, `is_consent_required`,
//!    `acr_values`, plus `client_id`, `client_name`, `subject`, `expires_in` and the one-time
//!    `approval_url` of the built-in page, for authenticators that forward a link) to the configured
//!    URL with `Authorization: Bearer <token>`, and expects `201 Created`.
//! 2. The authenticator later POSTs `{"status": "SUCCEED" | "UNAUTHORIZED" | "CANCELLED"}` to the
//!    gateway's callback endpoint with the same bearer token.
//!
//! The token is an HS256 JWT bound to one request (its `sub` is the request's approval handle),
//! expiring with the request; it is single-use because the handle dies on resolution.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{ChannelError, Notification};
use crate::config::Outbound;
use crate::outbound::OutboundClient;
use crate::protocol::random_token;
use crate::secret::Secret;

const AUDIENCE: &str = "ciba-gateway:authentication-channel";

/// The status an authenticator reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallbackStatus {
    /// The user authenticated and approved.
    Succeed,
    /// The user could not be authenticated, or refused.
    Unauthorized,
    /// The user cancelled.
    Cancelled,
}

#[derive(Debug, Serialize, Deserialize)]
struct ChannelClaims {
    iss: String,
    aud: String,
    sub: String,
    iat: u64,
    exp: u64,
    jti: String,
}

#[derive(Serialize)]
struct AuthenticationRequest<'a> {
    login_hint: &'a str,
    binding_message: Option<&'a str>,
    scope: &'a str,
    is_consent_required: bool,
    acr_values: Option<&'a str>,
    client_id: &'a str,
    client_name: &'a str,
    subject: &'a str,
    expires_in: u64,
    approval_url: &'a str,
}

/// The HTTP authentication channel.
pub struct HttpChannel {
    url: Url,
    client: OutboundClient,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Whether the key is this process's random one (no `channel.bearer_secret`).
    generated_key: bool,
    /// The keys of earlier configurations (a reload changed the key), each with the moment
    /// (Unix seconds) after which no bearer token it signed can still be valid: the
    /// authenticator's callbacks for the requests notified before the reload keep working.
    retired: Vec<(DecodingKey, u64)>,
    issuer: String,
}

impl std::fmt::Debug for HttpChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpChannel")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl HttpChannel {
    /// A channel posting to `url`; bearer tokens are signed with `secret` or a random key.
    pub fn new(url: Url, secret: Option<Secret>, outbound: &Outbound, issuer: &str) -> Self {
        let generated_key = secret.is_none();
        let key: Vec<u8> = match secret {
            Some(s) => s.expose().as_bytes().to_vec(),
            None => {
                let mut k = vec![0u8; 32];
                rand::rng().fill_bytes(&mut k);
                k
            }
        };
        Self {
            url,
            client: OutboundClient::new(outbound),
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            generated_key,
            retired: Vec::new(),
            issuer: issuer.to_owned(),
        }
    }

    /// A reload: the bearer tokens the authenticator holds for pending requests keep working.
    /// `previous`'s random key is kept when both have one; otherwise its key (whether or not
    /// `channel.bearer_secret` changed) still verifies for `keep_secs` from `now`, the longest
    /// a request it was signed for can live.
    pub(crate) fn adopt_key(&mut self, previous: &HttpChannel, now: u64, keep_secs: u64) {
        let live = previous.live_retired(now);
        if self.generated_key && previous.generated_key {
            self.encoding = previous.encoding.clone();
            self.decoding = previous.decoding.clone();
            self.retired = live.cloned().collect();
        } else {
            let until = now.saturating_add(keep_secs);
            self.retired = live
                .cloned()
                .chain(std::iter::once((previous.decoding.clone(), until)))
                .collect();
        }
    }

    /// The retired keys whose tokens may still be valid at `now`.
    fn live_retired(&self, now: u64) -> impl Iterator<Item = &(DecodingKey, u64)> {
        self.retired.iter().filter(move |(_, until)| *until > now)
    }

    /// The bearer token for a request's handle, valid until `exp` (Unix seconds).
    pub fn bearer_for(&self, handle: &str, now: u64, exp: u64) -> String {
        let claims = ChannelClaims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.into(),
            sub: handle.to_owned(),
            iat: now,
            exp,
            jti: random_token(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// Checks a callback's bearer token and returns the request handle it is bound to.
    /// Expiry is checked against the injected clock, not the system's.
    pub fn verify_bearer(&self, token: &str, now: u64) -> Option<String> {
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.set_audience(&[AUDIENCE]);
        v.set_issuer(&[&self.issuer]);
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        let decode = |key| jsonwebtoken::decode::<ChannelClaims>(token, key, &v).ok();
        let claims = decode(&self.decoding)
            .or_else(|| self.live_retired(now).find_map(|(key, _)| decode(key)))?
            .claims;
        (claims.exp > now).then_some(claims.sub)
    }

    /// Sends the authentication request; anything but `201` is a failure.
    pub async fn notify(&self, n: &Notification<'_>) -> Result<(), ChannelError> {
        let now = n.request.created_at_ms / 1000;
        let exp = n.request.expires_at_ms / 1000;
        let body = AuthenticationRequest {
            login_hint: n.login_hint,
            binding_message: n.request.binding_message.as_deref(),
            scope: n.request.scope.as_str(),
            is_consent_required: true,
            acr_values: n.request.acr_values.as_deref(),
            client_id: &n.client.id,
            client_name: &n.client.name,
            subject: &n.user.subject,
            expires_in: exp.saturating_sub(now),
            approval_url: n.approval_url,
        };
        let resp = self
            .client
            .post(&self.url)
            .map_err(ChannelError)?
            .bearer_auth(self.bearer_for(&n.request.handle, now, exp))
            .json(&body)
            .send()
            .await
            .map_err(|e| ChannelError(e.without_url().to_string()))?;
        if resp.status() == reqwest::StatusCode::CREATED {
            Ok(())
        } else {
            Err(ChannelError(format!(
                "authenticator answered HTTP {} (expected 201)",
                resp.status().as_u16()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(secret: &str) -> HttpChannel {
        crate::install_crypto_provider();
        let url = Url::parse("https://authenticator.example/notify").unwrap();
        let secret = Some(Secret::new(secret.repeat(40)));
        HttpChannel::new(url, secret, &Outbound::default(), "https://gw.example")
    }

    /// Each reload that changes the secret keeps the one before verifying, only for as long
    /// as a token it signed can be valid: nothing piles up over many reloads.
    #[test]
    fn a_replaced_key_verifies_until_its_tokens_expired_then_is_dropped() {
        let a = channel("a");
        let token = a.bearer_for("handle", 1_000, 1_300);
        let mut b = channel("b");
        b.adopt_key(&a, 1_000, 600);
        assert_eq!(b.verify_bearer(&token, 1_100).as_deref(), Some("handle"));
        let mut c = channel("c");
        c.adopt_key(&b, 1_200, 600);
        assert_eq!(c.retired.len(), 2);
        assert_eq!(c.verify_bearer(&token, 1_250).as_deref(), Some("handle"));
        // Past the window b gave a's key, the next reload keeps b's and c's, not a's.
        let mut d = channel("d");
        d.adopt_key(&c, 1_700, 600);
        assert_eq!(d.retired.len(), 2);
        assert_eq!(d.verify_bearer(&token, 1_250), None);
    }
}
