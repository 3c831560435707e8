//! Issuing tokens for an approved grant — at the token endpoint, in a push, or on a refresh —
//! in one place: the gateway's own tokens, and a refresh token when the client may use
//! `refresh_token` and the grant includes `offline_access` (a new family for a new grant; the
//! next token of the family on a refresh, RFC 9700 §4.14).

use std::sync::Arc;

use super::Shared;
use crate::audit::Issued;
use crate::clients::Client;
use crate::live::Live;
use crate::protocol::{OAuthError, random_token};
use crate::store::{RefreshStore, Store};
use crate::tokens::{Grant, Minter, Recipient, RefreshIssue, TokenResponse};
use crate::users::UserDirectory;

/// The scope value that asks for a refresh token (OIDC Core §11).
const OFFLINE_ACCESS: &str = "offline_access";

/// Mints tokens and starts or continues refresh-token families.
pub(super) struct TokenIssuance {
    minter: Arc<Live<Minter>>,
    store: Arc<Store>,
    users: Arc<Live<UserDirectory>>,
    refresh_ttl_ms: u64,
    refresh_idle_ms: u64,
}

/// Which refresh token to issue with the tokens.
pub(super) enum Family {
    /// A new grant: a new family, if the client and the scope call for one.
    New,
    /// A refresh: the family's next token.
    Continue(RefreshIssue),
}

impl TokenIssuance {
    pub(super) fn new(shared: &Shared) -> Self {
        Self {
            minter: Arc::clone(&shared.minter),
            store: Arc::clone(&shared.store),
            users: Arc::clone(&shared.users),
            refresh_ttl_ms: shared.cfg.tokens.refresh_token_ttl_secs * 1000,
            refresh_idle_ms: shared.cfg.tokens.refresh_token_idle_secs * 1000,
        }
    }

    /// The tokens for `grant` to `client`, for `to`, at `now_ms`.
    pub(super) async fn issue(
        &self,
        client: &Client,
        grant: &Grant,
        now_ms: u64,
        to: Recipient,
        family: Family,
    ) -> Result<TokenResponse, OAuthError> {
        let family_id = match &family {
            Family::New => None,
            Family::Continue(r) => Some(r.family.clone()),
        };
        let refresh = match family {
            Family::Continue(r) => Some(r),
            Family::New if client.refresh_allowed && grant.scope.contains(OFFLINE_ACCESS) => {
                let r = RefreshIssue {
                    family: random_token(),
                    jti: random_token(),
                    expires_at: (now_ms + self.refresh_ttl_ms) / 1000,
                    scope: grant.scope.as_str().to_owned(),
                };
                self.store
                    .start_family(
                        &r.family,
                        &r.jti,
                        now_ms,
                        r.expires_at * 1000,
                        self.refresh_idle_ms,
                    )
                    .await
                    .map_err(super::store_unavailable)?;
                Some(r)
            }
            Family::New => None,
        };
        let user = self
            .users
            .current()
            .by_subject(&grant.subject)
            .await
            .ok()
            .flatten();
        self.minter
            .get()
            .mint(
                grant,
                client,
                user.as_deref(),
                now_ms / 1000,
                to,
                refresh.as_ref(),
            )
            .map_err(|e| {
                tracing::error!(error = %e, "token signing failed");
                OAuthError::server_error("token signing failed")
            })
            .inspect(|_| {
                let issued = match &family_id {
                    Some(f) => Issued::Refresh(f),
                    None => Issued::Ciba(grant.auth_req_id.as_deref().unwrap_or_default()),
                };
                crate::audit::tokens_issued(issued, &client.id, &grant.subject, false);
            })
    }
}
