//! Wire-level building blocks: the OAuth error type, form parsing, typed identifiers and the
//! characters a message shown to the user may hold.

pub mod error;
pub mod form;
pub mod text;
pub mod types;

pub use error::{ErrorCode, OAuthError};
pub use form::Form;
pub use types::{AuthReqId, GRANT_TYPE_CIBA, GRANT_TYPE_CIBA_IETF_ALIAS, Scope, random_token};
