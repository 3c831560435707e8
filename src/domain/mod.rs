//! The records the gateway keeps, as every store backend keeps them: each with its one
//! encoding. The store depends on these types; they depend on nothing of the gateway's.

mod registered_client;

pub use registered_client::{RegisteredClient, sha256};
