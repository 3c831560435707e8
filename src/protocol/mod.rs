//! Wire-level building blocks: the OAuth error type, form parsing, typed identifiers and the
//! characters a message shown to the user may hold.

pub mod error;
pub mod form;
pub mod text;
pub mod types;

pub use error::{ErrorCode, OAuthError};
pub use form::Form;
pub use types::{
    AuthReqId, GRANT_TYPE_CIBA, GRANT_TYPE_CIBA_IETF_ALIAS, NotificationToken, Scope,
    approval_handle, digest16, handle_target, random_token,
};

/// A JSON response that must not be cached (OA-04, TOK-08).
pub fn json_response(status: http::StatusCode, body: bytes::Bytes) -> http::Response<bytes::Bytes> {
    let mut r = http::Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        http::header::PRAGMA,
        http::HeaderValue::from_static("no-cache"),
    );
    r
}
