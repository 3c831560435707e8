//! Where `login_hint`s are resolved to users (`users`).

use serde::Deserialize;
use url::Url;

use super::{ConfigError, NotifierKind, Outbound, SecretRef, check_http_url};

/// Where users come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum UsersConfig {
    /// Users listed in the file.
    Static {
        /// The users.
        #[serde(default)]
        users: Vec<UserConfig>,
    },
    /// Ask an HTTP service: `POST url` with `{"login_hint": "…"}`; 200 with a user, 404 if none.
    Http {
        /// The lookup URL.
        url: Url,
        /// Optional bearer token sent to the lookup service.
        #[serde(default)]
        bearer_token: Option<SecretRef>,
        /// How long a found user is cached, seconds. Default 60.
        #[serde(default = "default_user_cache")]
        cache_secs: u64,
        /// Outbound call settings.
        #[serde(default)]
        outbound: Outbound,
    },
}

impl Default for UsersConfig {
    fn default() -> Self {
        Self::Static { users: Vec::new() }
    }
}

fn default_user_cache() -> u64 {
    60
}

/// A user in the static directory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The stable subject identifier (`sub`).
    pub subject: String,
    /// Username the user can be hinted by.
    #[serde(default)]
    pub username: Option<String>,
    /// E-mail address (hint and contact).
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number (hint and contact).
    #[serde(default)]
    pub phone: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The user's `user_code`, as an argon2id hash or a reference.
    #[serde(default)]
    pub user_code: Option<SecretRef>,
    /// How this user is reached (`channel.type: notify`). Default: the channel's default.
    #[serde(default)]
    pub notify: Option<NotifierKind>,
}

impl UserConfig {
    /// The values a `login_hint` may name this user by: subject, username, e-mail, phone
    /// (matched case-insensitively).
    pub fn hints(&self) -> impl Iterator<Item = &str> {
        [
            Some(&self.subject),
            self.username.as_ref(),
            self.email.as_ref(),
            self.phone.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
    }
}

impl UsersConfig {
    /// Shape only: user codes and the directory's bearer token are loaded by
    /// [`crate::users::UserDirectory::from_config`].
    pub(super) fn check(&self, errs: &mut Vec<ConfigError>) {
        match self {
            UsersConfig::Static { users } => {
                let mut seen = std::collections::HashMap::new();
                for (i, u) in users.iter().enumerate() {
                    let p = format!("users.users[{i}]");
                    if u.subject.trim().is_empty() {
                        errs.push(ConfigError::new(
                            format!("{p}.subject"),
                            "must not be empty",
                        ));
                    }
                    for name in u.hints() {
                        if let Some(j) = seen.insert(name.to_lowercase(), i)
                            && j != i
                        {
                            errs.push(ConfigError::new(
                                p.clone(),
                                format!("hint '{name}' is also used by users[{j}]"),
                            ));
                        }
                    }
                }
            }
            UsersConfig::Http { url, .. } => {
                check_http_url(errs, "users.url", url);
            }
        }
    }
}
