//! Wire-level building blocks: the OAuth error type, form parsing and typed identifiers.

pub mod error;
pub mod form;
pub mod types;

pub use error::{ErrorCode, OAuthError};
pub use form::Form;
pub use types::{AuthReqId, GRANT_TYPE_CIBA, GRANT_TYPE_CIBA_IETF_ALIAS, Scope, random_token};
