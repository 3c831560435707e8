//! The records the gateway keeps, as every store backend keeps them. The store depends on
//! these types (so do the flows, the tokens and the channel); they depend only on the
//! protocol's wire types.

mod pending;
mod registered_client;

pub use pending::{
    Approval, Callback, CallbackMode, Decision, Delivery, IssuedTokens, PendingRequest,
};
pub use registered_client::{RegisteredClient, sha256};
