//! The one place a pending request is decided. Every way a user answers ends here: the built-in
//! approval page, the consent step after an upstream login, the HTTP authentication channel's
//! callback. What must follow a decision (waking a held poll, a ping, a push) therefore has one
//! hook, in [`Decisions::decide`].

use std::sync::Arc;

use super::Shared;
use crate::clock::Clock;
use crate::store::{Decision, PendingStore, ResolveError, Store};

/// Decides pending requests, once each.
pub(super) struct Decisions {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
}

impl Decisions {
    pub(super) fn new(shared: &Shared) -> Self {
        Self {
            store: Arc::clone(&shared.store),
            clock: Arc::clone(&shared.clock),
        }
    }

    /// Records the user's decision on the request with approval handle `handle`: exactly once
    /// (the store refuses a second decision), never after expiry.
    pub(super) async fn decide(
        &self,
        handle: &str,
        decision: Decision,
    ) -> Result<(), ResolveError> {
        self.store
            .resolve(handle, decision, self.clock.now_ms())
            .await
    }
}
