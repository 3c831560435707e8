//! The user directory: resolves a `login_hint` to a user (BC-REQ-09), statically from the file
//! or through an HTTP lookup service, and guards `user_code` guesses (BC-UC-02, SEC-04).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::config::{
    ConfigErrors, Problems, UserCodePolicy, UsersConfig, required_reference, resolve_verifier,
};
use crate::outbound::OutboundClient;
use crate::secret::{Expected, Secret, SecretVerifier};
use crate::store::KeptStore as _;

/// A user the gateway can ask for approval.
#[derive(Debug)]
pub struct User {
    /// The subject identifier (`sub`).
    pub subject: String,
    /// Username.
    pub username: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// The user's `user_code`, if one is set.
    pub user_code: Option<SecretVerifier>,
    /// How the user wants to be reached, if the directory says.
    pub notify: Option<crate::config::NotifierKind>,
}

/// Why a lookup failed (not "no such user", which is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
#[error("user directory unavailable: {0}")]
pub struct DirectoryError(String);

/// The lookup service's answer.
#[derive(Debug, Deserialize)]
struct RemoteUser {
    #[serde(alias = "sub")]
    subject: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// An argon2 hash of the user's code, if the directory keeps one.
    #[serde(default)]
    user_code_hash: Option<String>,
    /// `log` or `webhook`, if the directory chooses the notifier.
    #[serde(default)]
    notify: Option<crate::config::NotifierKind>,
}

/// Where users are looked up.
#[derive(Debug)]
pub enum UserDirectory {
    /// From the configuration file: every name a user can be hinted by maps to them.
    Static {
        /// Lower-cased hint → user.
        by_hint: HashMap<String, Arc<User>>,
        /// Subject → user.
        by_subject: HashMap<String, Arc<User>>,
    },
    /// From an HTTP service, with a short cache.
    Http {
        /// The lookup URL.
        url: Url,
        /// Optional bearer token for the service.
        bearer: Option<Secret>,
        /// The outbound client (SSRF-guarded).
        client: OutboundClient,
        /// Recently found users by hint.
        cache: moka::sync::Cache<String, Arc<User>>,
    },
}

impl UserDirectory {
    /// Builds the directory from configuration, loading user codes and the directory's
    /// bearer token; every problem is reported, each under its path.
    pub fn from_config(cfg: &UsersConfig) -> Result<Self, ConfigErrors> {
        Self::rebuilt(cfg, None)
    }

    /// As [`UserDirectory::from_config`], for a reload: a user whose user code is unchanged
    /// keeps what `previous` verified of it (no argon2 run again).
    pub(crate) fn rebuilt(
        cfg: &UsersConfig,
        previous: Option<&UserDirectory>,
    ) -> Result<Self, ConfigErrors> {
        let before = |subject: &str| match previous {
            Some(Self::Static { by_subject, .. }) => by_subject.get(subject),
            _ => None,
        };
        let mut problems = Problems::new();
        match cfg {
            UsersConfig::Static { users } => {
                let mut by_hint = HashMap::new();
                let mut by_subject = HashMap::new();
                for (i, u) in users.iter().enumerate() {
                    let user_code = match &u.user_code {
                        Some(r) => {
                            let path = format!("users.users[{i}].user_code");
                            match problems.take(path, resolve_verifier(r)) {
                                Some(v) => {
                                    let mut v = SecretVerifier::new(v);
                                    if let Some(code) =
                                        before(&u.subject).and_then(|p| p.user_code.as_ref())
                                    {
                                        v.adopt(code);
                                    }
                                    Some(v)
                                }
                                None => continue,
                            }
                        }
                        None => None,
                    };
                    let user = Arc::new(User {
                        subject: u.subject.clone(),
                        username: u.username.clone(),
                        email: u.email.clone(),
                        phone: u.phone.clone(),
                        name: u.name.clone(),
                        user_code,
                        notify: u.notify,
                    });
                    for name in u.hints() {
                        by_hint.insert(name.to_lowercase(), Arc::clone(&user));
                    }
                    by_subject.insert(u.subject.clone(), user);
                }
                problems.finish(|| Self::Static {
                    by_hint,
                    by_subject,
                })
            }
            UsersConfig::Http {
                url,
                bearer_token,
                cache_secs,
                outbound,
            } => {
                let bearer = bearer_token
                    .as_ref()
                    .and_then(|r| problems.take("users.bearer_token", required_reference(r)));
                problems.finish(|| Self::Http {
                    url: url.clone(),
                    bearer,
                    client: OutboundClient::new(outbound),
                    cache: moka::sync::Cache::builder()
                        .max_capacity(10_000)
                        .time_to_live(Duration::from_secs(*cache_secs))
                        .build(),
                })
            }
        }
    }

    /// Resolves a `login_hint`. `Ok(None)` means no such user.
    pub async fn resolve_hint(&self, hint: &str) -> Result<Option<Arc<User>>, DirectoryError> {
        match self {
            Self::Static { by_hint, .. } => Ok(by_hint.get(&hint.to_lowercase()).cloned()),
            Self::Http {
                url,
                bearer,
                client,
                cache,
            } => {
                if let Some(u) = cache.get(hint) {
                    return Ok(Some(u));
                }
                let mut req = client.post(url).map_err(DirectoryError)?;
                if let Some(b) = bearer {
                    req = req.bearer_auth(b.expose());
                }
                let resp = req
                    .json(&serde_json::json!({ "login_hint": hint }))
                    .send()
                    .await
                    .map_err(|e| DirectoryError(e.without_url().to_string()))?;
                match resp.status().as_u16() {
                    200 => {}
                    404 => return Ok(None),
                    s => return Err(DirectoryError(format!("lookup answered HTTP {s}"))),
                }
                let r: RemoteUser = resp.json().await.map_err(|e| {
                    DirectoryError(format!("bad lookup response: {}", e.without_url()))
                })?;
                let user = Arc::new(User {
                    user_code: r
                        .user_code_hash
                        .as_deref()
                        .and_then(Expected::argon2)
                        .map(SecretVerifier::new),
                    subject: r.subject,
                    username: r.username,
                    email: r.email,
                    phone: r.phone,
                    name: r.name,
                    notify: r.notify,
                });
                cache.insert(hint.to_owned(), Arc::clone(&user));
                Ok(Some(user))
            }
        }
    }

    /// Finds a user by subject (for `id_token_hint`). The HTTP directory is asked with the
    /// subject as the hint.
    pub async fn by_subject(&self, subject: &str) -> Result<Option<Arc<User>>, DirectoryError> {
        match self {
            Self::Static { by_subject, .. } => Ok(by_subject.get(subject).cloned()),
            Self::Http { .. } => Ok(self
                .resolve_hint(subject)
                .await?
                .filter(|u| u.subject == subject)),
        }
    }
}

/// Counts wrong `user_code`s per user in a window (from the first failure) and locks the user
/// out of new requests past the limit (BC-UC-02, SEC-04). The count is kept in the store: one
/// for all replicas when it is shared.
#[derive(Debug)]
pub struct UserCodeGuard {
    max_failures: u32,
    window_ms: u64,
    store: Arc<crate::store::Store>,
}

impl UserCodeGuard {
    /// A guard with the configured policy, counting in `store`.
    pub fn new(policy: &UserCodePolicy, store: Arc<crate::store::Store>) -> Self {
        Self {
            max_failures: policy.max_failures,
            window_ms: policy.lockout_secs * 1000,
            store,
        }
    }

    /// Whether the user has run out of attempts.
    pub async fn locked(&self, subject: &str) -> Result<bool, crate::store::StoreError> {
        let n = self.store.count("uc", subject, None).await?;
        Ok(n >= u64::from(self.max_failures))
    }

    /// Records a wrong code.
    pub async fn record_failure(&self, subject: &str) -> Result<(), crate::store::StoreError> {
        self.store
            .count("uc", subject, Some(self.window_ms))
            .await
            .map(drop)
    }
}
