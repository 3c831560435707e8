//! One OAuth error type: the spec code, the HTTP status and an optional description. It renders
//! the JSON body (RFC 6749 §5.2 / CIBA §13) and the headers that go with it.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// The error codes this gateway emits, named exactly after the specifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `invalid_request`
    InvalidRequest,
    /// `invalid_scope`
    InvalidScope,
    /// `expired_login_hint_token`
    ExpiredLoginHintToken,
    /// `unknown_user_id`
    UnknownUserId,
    /// `unauthorized_client`
    UnauthorizedClient,
    /// `missing_user_code`
    MissingUserCode,
    /// `invalid_user_code`
    InvalidUserCode,
    /// `invalid_binding_message`
    InvalidBindingMessage,
    /// `invalid_client`
    InvalidClient,
    /// `access_denied`
    AccessDenied,
    /// `authorization_pending`
    AuthorizationPending,
    /// `slow_down`
    SlowDown,
    /// `expired_token`
    ExpiredToken,
    /// `invalid_grant`
    InvalidGrant,
    /// `unsupported_grant_type`
    UnsupportedGrantType,
    /// `invalid_token` (RFC 6750, for bearer-protected callbacks)
    InvalidToken,
    /// The token lacks the scope the request needs (RFC 6750 §3.1).
    InsufficientScope,
    /// `temporarily_unavailable` (a dependency such as the authentication channel is down)
    TemporarilyUnavailable,
    /// `server_error`
    ServerError,
    /// `invalid_client_metadata` (RFC 7591 §3.2.2)
    InvalidClientMetadata,
    /// `invalid_redirect_uri` (RFC 7591 §3.2.2)
    InvalidRedirectUri,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [Self; 21] = [
        Self::InvalidRequest,
        Self::InvalidScope,
        Self::ExpiredLoginHintToken,
        Self::UnknownUserId,
        Self::UnauthorizedClient,
        Self::MissingUserCode,
        Self::InvalidUserCode,
        Self::InvalidBindingMessage,
        Self::InvalidClient,
        Self::AccessDenied,
        Self::AuthorizationPending,
        Self::SlowDown,
        Self::ExpiredToken,
        Self::InvalidGrant,
        Self::UnsupportedGrantType,
        Self::InvalidToken,
        Self::InsufficientScope,
        Self::TemporarilyUnavailable,
        Self::ServerError,
        Self::InvalidClientMetadata,
        Self::InvalidRedirectUri,
    ];

    /// The code of an error body as the gateway writes it (`{"error":"…"`, the member
    /// first): how the metrics name an answer's outcome without parsing JSON.
    pub fn of_body(body: &[u8]) -> Option<Self> {
        let rest = body.strip_prefix(br#"{"error":""#)?;
        let code = &rest[..rest.iter().position(|b| *b == b'"')?];
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().as_bytes() == code)
    }

    /// The code as it appears in the `error` member.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidScope => "invalid_scope",
            Self::ExpiredLoginHintToken => "expired_login_hint_token",
            Self::UnknownUserId => "unknown_user_id",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::MissingUserCode => "missing_user_code",
            Self::InvalidUserCode => "invalid_user_code",
            Self::InvalidBindingMessage => "invalid_binding_message",
            Self::InvalidClient => "invalid_client",
            Self::AccessDenied => "access_denied",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::InvalidGrant => "invalid_grant",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::ServerError => "server_error",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
        }
    }

    /// The body for this code without a description, pre-rendered: the poll path answers
    /// `authorization_pending` most of all and should not allocate for it.
    const fn static_body(self) -> &'static [u8] {
        match self {
            Self::InvalidRequest => br#"{"error":"invalid_request"}"#,
            Self::InvalidScope => br#"{"error":"invalid_scope"}"#,
            Self::ExpiredLoginHintToken => br#"{"error":"expired_login_hint_token"}"#,
            Self::UnknownUserId => br#"{"error":"unknown_user_id"}"#,
            Self::UnauthorizedClient => br#"{"error":"unauthorized_client"}"#,
            Self::MissingUserCode => br#"{"error":"missing_user_code"}"#,
            Self::InvalidUserCode => br#"{"error":"invalid_user_code"}"#,
            Self::InvalidBindingMessage => br#"{"error":"invalid_binding_message"}"#,
            Self::InvalidClient => br#"{"error":"invalid_client"}"#,
            Self::AccessDenied => br#"{"error":"access_denied"}"#,
            Self::AuthorizationPending => br#"{"error":"authorization_pending"}"#,
            Self::SlowDown => br#"{"error":"slow_down"}"#,
            Self::ExpiredToken => br#"{"error":"expired_token"}"#,
            Self::InvalidGrant => br#"{"error":"invalid_grant"}"#,
            Self::UnsupportedGrantType => br#"{"error":"unsupported_grant_type"}"#,
            Self::InvalidToken => br#"{"error":"invalid_token"}"#,
            Self::InsufficientScope => br#"{"error":"insufficient_scope"}"#,
            Self::TemporarilyUnavailable => br#"{"error":"temporarily_unavailable"}"#,
            Self::ServerError => br#"{"error":"server_error"}"#,
            Self::InvalidClientMetadata => br#"{"error":"invalid_client_metadata"}"#,
            Self::InvalidRedirectUri => br#"{"error":"invalid_redirect_uri"}"#,
        }
    }
}

/// Which authentication challenge a 401 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    None,
    Basic,
    Bearer,
}

/// An OAuth 2.0 error response: code, HTTP status, optional description and headers.
#[derive(Debug, Clone)]
pub struct OAuthError {
    code: ErrorCode,
    status: StatusCode,
    description: Option<Cow<'static, str>>,
    challenge: Challenge,
    retry_after: Option<u32>,
    allow_post: bool,
}

impl OAuthError {
    /// An error with the given code and status.
    pub fn new(code: ErrorCode, status: StatusCode) -> Self {
        Self {
            code,
            status,
            description: None,
            challenge: Challenge::None,
            retry_after: None,
            allow_post: false,
        }
    }

    /// A 400 error with the given code (the status of almost every CIBA error).
    pub fn bad_request(code: ErrorCode) -> Self {
        Self::new(code, StatusCode::BAD_REQUEST)
    }

    /// `invalid_request` (400) with a description.
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::bad_request(ErrorCode::InvalidRequest).describe(description)
    }

    /// `invalid_client` (401) with a `WWW-Authenticate: Basic` challenge (BC-ERR-02, OA-02).
    pub fn invalid_client(description: impl Into<Cow<'static, str>>) -> Self {
        let mut e =
            Self::new(ErrorCode::InvalidClient, StatusCode::UNAUTHORIZED).describe(description);
        e.challenge = Challenge::Basic;
        e
    }

    /// `invalid_token` (401) with a `WWW-Authenticate: Bearer` challenge (RFC 6750 §3).
    pub fn invalid_token(description: impl Into<Cow<'static, str>>) -> Self {
        let mut e =
            Self::new(ErrorCode::InvalidToken, StatusCode::UNAUTHORIZED).describe(description);
        e.challenge = Challenge::Bearer;
        e
    }

    /// `temporarily_unavailable` (503) with `Retry-After`.
    pub fn unavailable(description: impl Into<Cow<'static, str>>, retry_after: u32) -> Self {
        let mut e = Self::new(
            ErrorCode::TemporarilyUnavailable,
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .describe(description);
        e.retry_after = Some(retry_after);
        e
    }

    /// 405 for a method other than POST, with `Allow: POST` (BC-AUTH-01).
    pub fn method_not_allowed() -> Self {
        let mut e = Self::new(ErrorCode::InvalidRequest, StatusCode::METHOD_NOT_ALLOWED)
            .describe("this endpoint accepts only POST");
        e.allow_post = true;
        e
    }

    /// `server_error` (500).
    pub fn server_error(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::ServerError, StatusCode::INTERNAL_SERVER_ERROR).describe(description)
    }

    /// Adds a human-readable `error_description`.
    pub fn describe(mut self, description: impl Into<Cow<'static, str>>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Adds a `Retry-After` header (seconds).
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The JSON body: only `error` and `error_description` (the conformance suite rejects
    /// other members). Descriptions are restricted to the RFC 6749 character set.
    pub fn body(&self) -> Bytes {
        match &self.description {
            None => Bytes::from_static(self.code.static_body()),
            Some(d) => {
                let clean: String = d
                    .chars()
                    .map(|c| match c {
                        '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e' => c,
                        _ => '\'',
                    })
                    .collect();
                let body =
                    serde_json::json!({"error": self.code.as_str(), "error_description": clean});
                Bytes::from(body.to_string())
            }
        }
    }

    /// Renders the full HTTP response.
    pub fn into_response(self) -> Response<Bytes> {
        let mut resp = super::json_response(self.status, self.body());
        let h = resp.headers_mut();
        match self.challenge {
            Challenge::None => {}
            Challenge::Basic => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Basic realm="ciba-gateway", charset="UTF-8""#),
                );
            }
            Challenge::Bearer => {
                let v = format!(r#"Bearer error="{}""#, self.code.as_str());
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
            }
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.allow_post {
            h.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        resp
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.description {
            Some(d) => write!(f, "{}: {}", self.code.as_str(), d),
            None => f.write_str(self.code.as_str()),
        }
    }
}

impl std::error::Error for OAuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_bodies_match_rendered_codes() {
        for code in ErrorCode::ALL {
            let v: serde_json::Value = serde_json::from_slice(code.static_body()).unwrap();
            assert_eq!(v["error"], code.as_str());
        }
    }

    /// The metrics' outcome label: every code is read back from both kinds of body.
    #[test]
    fn the_code_of_a_body_is_read_back() {
        for code in ErrorCode::ALL {
            let plain = OAuthError::new(code, StatusCode::BAD_REQUEST);
            assert_eq!(ErrorCode::of_body(&plain.body()), Some(code));
            assert_eq!(
                ErrorCode::of_body(&plain.describe("why \"not\"").body()),
                Some(code)
            );
        }
        for other in [
            &b""[..],
            b"{}",
            br#"{"error":"made_up"}"#,
            br#"{"error":"slow_down"#,
        ] {
            assert_eq!(ErrorCode::of_body(other), None);
        }
    }

    #[test]
    fn oa_01_description_is_restricted_to_the_allowed_characters() {
        let e = OAuthError::invalid_request("bad \"quote\" \\ and é");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        let d = v["error_description"].as_str().unwrap();
        assert!(
            d.chars()
                .all(|c| matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
        );
        assert_eq!(v.as_object().unwrap().len(), 2);
    }
}
