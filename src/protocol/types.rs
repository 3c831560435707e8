//! Typed identifiers: the engine never passes raw strings where one of these fits.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

/// The CIBA grant type (CIBA Core §10.1). The only spelling the gateway advertises.
pub const GRANT_TYPE_CIBA: &str = "urn:openid:params:grant-type:ciba";

/// The IETF-style spelling that popular tutorials use (MYTH-01). Accepted as an alias when
/// configured, never advertised.
pub const GRANT_TYPE_CIBA_IETF_ALIAS: &str = "urn:ietf:params:oauth:grant-type:ciba";

/// 32 bytes from the thread-local CSPRNG (ChaCha, reseeded from the OS), unpadded base64url:
/// 256 bits of entropy in 43 characters from `A–Z a–z 0–9 - _` (BC-ACK-02).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The first 16 bytes of SHA-256 of `s`: what a store files a request under. Ids and handles
/// are bearer secrets; their digest reveals nothing of them (a preimage of 256 random bits).
pub fn digest16(s: &str) -> [u8; 16] {
    use sha2::{Digest as _, Sha256};
    let d = Sha256::digest(s.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// The one-time approval handle of request `id`: the request's [`digest16`] followed by 16
/// CSPRNG bytes (128 bits of secret), unpadded base64url (43 characters). A store finds the
/// request from the handle itself, without an index, and checks the whole handle against the
/// one it stored; knowing a request's digest does not help forge its handle.
pub fn approval_handle(id: &AuthReqId) -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(&digest16(id.as_str()));
    rand::rng().fill_bytes(&mut bytes[16..]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The request digest an approval handle names, if `handle` has the shape of one.
pub fn handle_target(handle: &str) -> Option<[u8; 16]> {
    let mut bytes = [0u8; 32];
    if handle.len() != 43 || URL_SAFE_NO_PAD.decode_slice(handle, &mut bytes) != Ok(32) {
        return None;
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&bytes[..16]);
    Some(out)
}

/// A ping or push client's `client_notification_token` (BC-REQ-03): the bearer the gateway
/// presents at the client's notification endpoint. `Debug` is redacted (SEC-01).
#[derive(Clone, PartialEq, Eq)]
pub struct NotificationToken(String);

impl NotificationToken {
    /// Checks a received token: RFC 6750 b64token syntax
    /// (`1*(ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/") *"="`), at most 1024 characters.
    pub fn parse(s: &str) -> Option<Self> {
        let body = s.trim_end_matches('=');
        let ok = !body.is_empty()
            && s.len() <= 1024
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
        ok.then(|| Self(s.to_owned()))
    }

    /// The token as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NotificationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NotificationToken(<redacted>)")
    }
}

/// An `auth_req_id`. Its `Debug` is redacted so that it cannot reach a log by accident (SEC-01).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AuthReqId(String);

impl AuthReqId {
    /// A fresh id with 256 bits of entropy.
    pub fn generate() -> Self {
        Self(random_token())
    }

    /// Wraps a value received from a client.
    pub fn from_wire(s: &str) -> Self {
        Self(s.to_owned())
    }

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AuthReqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthReqId(<redacted>)")
    }
}

/// A space-separated scope, kept in the order the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(String);

impl Scope {
    /// Parses a scope string: tokens separated by single or repeated spaces. Returns `None`
    /// when no token is left or a token has characters outside RFC 6749 §3.3's `scope-token`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut out = String::with_capacity(s.len());
        for tok in s.split(' ').filter(|t| !t.is_empty()) {
            if !tok
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
            {
                return None;
            }
            if !out.split(' ').any(|t| t == tok) {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(tok);
            }
        }
        (!out.is_empty()).then_some(Self(out))
    }

    /// Iterates over the scope tokens.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split(' ')
    }

    /// Whether the scope contains `token`.
    pub fn contains(&self, token: &str) -> bool {
        self.iter().any(|t| t == token)
    }

    /// The scope as a space-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bc_ack_02_auth_req_id_is_long_and_url_safe() {
        let id = AuthReqId::generate();
        assert_eq!(id.as_str().len(), 43);
        assert!(
            id.as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(id, AuthReqId::generate());
        assert_eq!(format!("{id:?}"), "AuthReqId(<redacted>)");
    }

    #[test]
    fn scope_order_is_irrelevant_and_duplicates_collapse() {
        let s = Scope::parse("profile  openid profile").unwrap();
        assert!(s.contains("openid"));
        assert_eq!(s.as_str(), "profile openid");
        assert!(Scope::parse("   ").is_none());
        assert!(Scope::parse("open\"id").is_none());
    }
}
