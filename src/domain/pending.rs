//! A CIBA request as the gateway keeps it while it is pending, and what is decided about it.

use crate::protocol::{AuthReqId, NotificationToken, Scope};

/// What the gateway remembers about an accepted request (BC-ACK-05).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    /// The id handed to the client.
    pub id: AuthReqId,
    /// The one-time approval handle (link / channel bearer subject); never the `auth_req_id`.
    pub handle: String,
    /// The client that asked.
    pub client_id: String,
    /// The user who must approve.
    pub subject: String,
    /// The granted scope.
    pub scope: Scope,
    /// Requested `acr_values`, space-separated, in order of preference.
    pub acr_values: Option<String>,
    /// The binding message, if any.
    pub binding_message: Option<String>,
    /// The `login_hint` the client sent, passed on to the upstream login.
    pub login_hint: Option<String>,
    /// When the request was accepted, Unix ms.
    pub created_at_ms: u64,
    /// When it expires, Unix ms.
    pub expires_at_ms: u64,
    /// The polling interval announced, seconds.
    pub interval_secs: u32,
    /// Where and how a ping or push client is told about this request, fixed when the request
    /// was accepted (RCM-03): a later change of the client's mode or endpoint does not re-route
    /// it. `None` for a poll client.
    pub callback: Option<Callback>,
    /// The trace context of the request that asked ([`crate::trace`]): the work it leaves
    /// behind (notifications, expiry) goes on in its trace, whichever replica does it.
    pub trace: Option<crate::trace::TraceContext>,
}

/// A ping or push client's notification of one request, as it stood when the request was
/// accepted. `Debug` shows no token (the token's own `Debug` hides it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    /// Ping (the client then polls) or push (the tokens go to the endpoint).
    pub mode: CallbackMode,
    /// The client's `backchannel_client_notification_endpoint` at the time.
    pub endpoint: url::Url,
    /// The bearer the client sent with its request (`client_notification_token`).
    pub token: NotificationToken,
}

/// How a request's client is told of its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackMode {
    /// A ping: the client then redeems by polling.
    Ping,
    /// A push: the tokens (or the error) go to the endpoint.
    Push,
}

impl CallbackMode {
    /// The mode's name as the metadata and the stores spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Push => "push",
        }
    }

    /// The mode named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ping" => Some(Self::Ping),
            "push" => Some(Self::Push),
            _ => None,
        }
    }
}

/// The user's positive decision, with what the ID token needs to say about it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Approval {
    /// When the user authenticated, Unix seconds.
    pub auth_time: u64,
    /// The authentication context class achieved, if any.
    pub acr: Option<String>,
    /// Authentication methods used, if known.
    pub amr: Option<Vec<String>>,
    /// The subject the upstream authenticated, when it differs from the request's.
    pub subject: Option<String>,
    /// The tokens the upstream issued for the user's login, for clients that get those.
    pub upstream_tokens: Option<Box<IssuedTokens>>,
}

/// A token response from the upstream provider. `Debug` shows no token.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct IssuedTokens {
    /// The access token.
    pub access_token: String,
    /// Its type (`Bearer`, `DPoP`).
    pub token_type: String,
    /// Its lifetime, seconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_in: Option<u64>,
    /// A refresh token, if the upstream issued one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refresh_token: Option<String>,
    /// The upstream's ID token.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id_token: Option<String>,
    /// The granted scope.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedTokens(<redacted>)")
    }
}

/// How far the notification of one request got (visible through
/// `Engine::delivery`): the user's, and once the user has decided, a ping client's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Delivery {
    /// Being delivered (or retried).
    Pending,
    /// Accepted by the notifier's target.
    Delivered {
        /// Attempts it took.
        attempts: u32,
    },
    /// Given up: the reason is also logged.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
}

/// How a request was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The user approved.
    Approved(Approval),
    /// The user refused (or cancelled).
    Denied,
}
