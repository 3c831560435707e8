//! The HTTP authentication channel's callback (Keycloak contract): the authenticator POSTs
//! `{"status": …}` with the request-bound bearer token. A wrong, expired or reused token is
//! refused with 401 `invalid_token`.

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use serde::Deserialize;

use std::sync::Arc;

use super::decide::Decisions;
use super::{EngineRequest, Shared, json_response};
use crate::audit::Via;
use crate::channel::{CallbackStatus, Channel};
use crate::clock::Clock;
use crate::live::Live;
use crate::protocol::OAuthError;
use crate::store::{Approval, Decision, ResolveError};

#[derive(Deserialize)]
struct CallbackBody {
    status: CallbackStatus,
}

/// The channel callback's dependencies: the channel (which verifies the bearer) and the
/// decisions.
pub(super) struct ChannelCallback {
    channel: Arc<Live<Channel>>,
    clock: Arc<dyn Clock>,
    decisions: Arc<Decisions>,
}

impl ChannelCallback {
    pub(super) fn new(shared: &Shared, decisions: &Arc<Decisions>) -> Self {
        Self {
            channel: Arc::clone(&shared.channel),
            clock: Arc::clone(&shared.clock),
            decisions: Arc::clone(decisions),
        }
    }

    pub(super) async fn handle(&self, req: &EngineRequest) -> Response<Bytes> {
        match self.callback_inner(req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn callback_inner(&self, req: &EngineRequest) -> Result<Response<Bytes>, OAuthError> {
        if req.method != Method::POST {
            return Err(OAuthError::method_not_allowed());
        }
        let current = self.channel.current();
        let Channel::Http(channel) = &*current else {
            return Err(OAuthError::invalid_token(
                "no HTTP authentication channel is configured",
            ));
        };
        let token = req
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| OAuthError::invalid_token("a bearer token is required"))?;
        let now = self.clock.now_ms();
        let handle = channel
            .verify_bearer(token.trim(), now / 1000)
            .ok_or_else(|| OAuthError::invalid_token("the token is invalid or expired"))?;
        let body: CallbackBody = serde_json::from_slice(&req.body).map_err(|_| {
            OAuthError::invalid_request(
                "the body must be JSON with status SUCCEED, UNAUTHORIZED or CANCELLED",
            )
        })?;
        let decision = match body.status {
            CallbackStatus::Succeed => Decision::Approved(Approval {
                auth_time: now / 1000,
                ..Approval::default()
            }),
            CallbackStatus::Unauthorized | CallbackStatus::Cancelled => Decision::Denied,
        };
        match self.decisions.decide(&handle, decision, Via::Channel).await {
            Ok(()) => {
                tracing::info!(status = ?body.status, "authentication channel callback accepted");
                Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}")))
            }
            Err(ResolveError::NotFound) => {
                Err(OAuthError::invalid_token("the token was already used"))
            }
            Err(ResolveError::Expired) => Err(OAuthError::invalid_token("the request has expired")),
            Err(ResolveError::Store(e)) => Err(super::store_unavailable(e)),
        }
    }
}
