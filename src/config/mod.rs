//! Configuration: one YAML file becomes a typed [`Config`]. Every problem is reported with the
//! path of the field it is about (`clients[0].secret: …`), all at once.
//!
//! One file per section, each checking its own fields (`Config::validate` runs them all):
//! `file.rs` (the top-level keys), `listener.rs` (`listen`, `tls`, `server`, `runtime`,
//! `endpoints`), `limits.rs`, `ciba.rs`, `store.rs`, `approval.rs`, `upstream.rs`,
//! `channel.rs`, `users.rs`, `clients.rs`, `registration.rs`, `tokens.rs`. Those checks are about shape only: keys
//! and secrets are loaded once, by the component that owns them, when [`crate::Engine::new`]
//! builds it, and reported with the same path convention. Building the
//! engine is therefore the one validation: `ciba-gateway check` and `serve` refuse exactly the
//! same files.
//!
//! The full reference, with every key and default, is in the README.

mod approval;
mod builder;
mod channel;
mod ciba;
mod clients;
mod file;
mod limits;
mod listener;
mod operations;
mod registration;
mod secret_ref;
mod security;
mod store;
mod tokens;
mod upstream;
mod users;

use std::fmt;
use std::path::Path;

pub use approval::*;
pub use builder::ConfigBuilder;
pub use channel::*;
pub use ciba::*;
pub use clients::*;
pub use file::*;
pub use limits::*;
pub use listener::*;
pub use operations::*;
pub use registration::*;
pub use secret_ref::SecretRef;
pub(crate) use secret_ref::{required_reference, resolve_secret, resolve_verifier};
pub use security::*;
pub use store::*;
pub use tokens::*;
pub use upstream::*;
pub use users::*;

/// One configuration problem, named by its field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `clients[0].secret`, `tokens.keys[1].private_key`, …
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All the problems found in a configuration.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

/// Problems found while a component loads its part of the configuration (keys, secrets, CA
/// files), collected so that every one is reported, not just the first.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<ConfigError>);

impl Problems {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }

    /// `r`'s value, or `None` with its error recorded at `path`.
    pub fn take<T>(&mut self, path: impl Into<String>, r: Result<T, String>) -> Option<T> {
        r.map_err(|m| self.push(path, m)).ok()
    }

    /// `value` if nothing was recorded, every problem otherwise.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(ConfigErrors(self.0))
        }
    }
}

/// The one rule for every URL the gateway calls or builds links from: http or https.
pub(crate) fn check_http_url(errs: &mut Vec<ConfigError>, path: &str, url: &url::Url) {
    if !matches!(url.scheme(), "http" | "https") {
        errs.push(ConfigError::new(path, "must be an http or https URL"));
    }
}

impl Config {
    /// Reads and parses a YAML file (validated when the engine is built from it).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigErrors> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        // The parser's excerpt names its source `<input>`; this one has a name, which editors
        // and terminals can follow to the line (`--> config.yaml:3:3`).
        Self::from_yaml(&text).map_err(|mut errs| {
            let named = format!("--> {}:", path.display());
            for e in &mut errs.0 {
                e.message = e.message.replace("--> <input>:", &named);
            }
            errs
        })
    }

    /// Parses YAML text into the typed model: unknown keys and wrong types are refused here;
    /// the rules between values are [`Config::validate`]'s, run by [`crate::Engine::new`].
    pub fn from_yaml(text: &str) -> Result<Self, ConfigErrors> {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::new("", e.to_string()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A problem in a file is shown at the file's own name and line, as `check` prints it.
    #[test]
    fn a_files_problem_names_the_file() {
        let dir =
            std::env::temp_dir().join(format!("ciba-config-{}", crate::protocol::random_token()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gateway.yaml");
        std::fs::write(&file, "listen: 127.0.0.1:8080\nciba:\n  long_pol_secs: 5\n").unwrap();
        let shown = Config::load(&file).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(shown.contains("unknown field `long_pol_secs`"), "{shown}");
        assert!(
            shown.contains(&format!("--> {}:3:3", file.display())),
            "{shown}"
        );
        assert!(!shown.contains("<input>"), "{shown}");
    }

    // GW-07 / SEC-04: the limits are on unless switched off with null.
    #[test]
    fn backchannel_rate_limits_default_on_and_null_disables() {
        let c = Config::from_yaml("public_url: http://gw.example\n").unwrap();
        let rate = |requests, per_secs| Some(Rate { requests, per_secs });
        assert_eq!(c.limits.bc_per_user, rate(5, 60));
        assert_eq!(c.limits.bc_per_client, rate(600, 60));
        let c = Config::from_yaml(
            "public_url: http://gw.example\nlimits: { bc_per_user: null, bc_per_client: { requests: 9, per_secs: 3 } }\n",
        )
        .unwrap();
        assert_eq!(c.limits.bc_per_user, None);
        assert_eq!(c.limits.bc_per_client, rate(9, 3));
        assert_eq!(c.limits.max_body_bytes, 64 * 1024);
    }

    // FAPI-CIBA (issue 19, item 6): `check` names what a configuration lacks for the profile,
    // field by field; a complete one has no findings.
    #[test]
    fn fapi_05_06_profile_findings_name_every_field() {
        let bad = Config::from_yaml(
            "public_url: https://gw\nprofile: fapi-ciba\nclients:\n  - { client_id: a, secret: \"${HOME}\", token_endpoint_auth_method: client_secret_post, backchannel_token_delivery_mode: push, backchannel_client_notification_endpoint: \"https://c.example/cb\", backchannel_authentication_request_signing_alg: RS256 }\n",
        )
        .unwrap()
        .validate();
        let paths: Vec<&str> = bad.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "ciba.offer_push",
            "ciba.binding_message.required",
            "ciba.accept_ietf_grant_type_alias",
            "tls",
            "tokens.keys",
            "mtls",
            "clients[0].token_endpoint_auth_method",
            "clients[0].backchannel_token_delivery_mode",
            "clients[0].backchannel_authentication_request_signing_alg",
            "clients[0].jwks",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        let good = Config::from_yaml(
            "public_url: https://gw\nprofile: fapi-ciba\ntls: { cert_file: /c.pem, key_file: /k.pem }\nmtls: { request_certificates: true }\ntokens: { keys: [ { kid: k, alg: PS256, private_key: \"${HOME}\" } ] }\nciba: { offer_push: false, accept_ietf_grant_type_alias: false, binding_message: { required: true } }\nclients:\n  - { client_id: a, token_endpoint_auth_method: private_key_jwt, jwks: { keys: [] } }\n",
        )
        .unwrap()
        .validate();
        assert!(good.is_empty(), "{good:?}");
    }

    // Issue (providers as they are), item 5: only clients that can start CIBA requests need
    // credentials at the upstream for its login.
    #[test]
    fn upstream_credentials_only_for_ciba_clients() {
        let yaml = |grants: &str| {
            format!(
                "public_url: http://gw\nupstream: {{ url: \"http://127.0.0.1:1\" }}\napproval: {{ mode: upstream }}\nclients:\n  - {{ client_id: a, secret: \"${{HOME}}\", grant_types: [{grants}] }}\n"
            )
        };
        let problems = |grants| Config::from_yaml(&yaml(grants)).unwrap().validate();
        assert!(problems("authorization_code").is_empty());
        let e = problems("\"urn:openid:params:grant-type:ciba\"");
        assert_eq!(e[0].path, "clients[0].upstream");
    }

    // A push client starts requests without the CIBA grant (CM-03): with upstream approval it
    // needs credentials at the provider like any client that starts requests, and it cannot
    // take the provider's tokens (a push carries tokens the gateway mints).
    #[test]
    fn push_clients_and_upstream_approval() {
        let yaml = |client: &str| {
            format!(
                "public_url: http://gw\nupstream: {{ url: \"http://127.0.0.1:1\" }}\napproval: {{ mode: upstream }}\nclients:\n  - {{ client_id: p, secret: \"${{HOME}}\", grant_types: [], backchannel_token_delivery_mode: push, backchannel_client_notification_endpoint: \"https://c.example/cb\"{client} }}\n"
            )
        };
        let paths = |client| {
            Config::from_yaml(&yaml(client))
                .unwrap()
                .validate()
                .into_iter()
                .map(|e| e.path)
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(""), ["clients[0].upstream"]);
        let creds = ", upstream: { client_secret: \"${HOME}\" }";
        assert!(paths(creds).is_empty());
        assert_eq!(
            paths(&format!("{creds}, tokens: upstream")),
            ["clients[0].tokens"]
        );
    }

    // `runtime:` names the proxy runtime; `engine:`, its old name, keeps existing files working.
    #[test]
    fn runtime_key_and_its_old_name() {
        for key in ["runtime", "engine"] {
            let c = Config::from_yaml(&format!("public_url: http://gw\n{key}: tower\n")).unwrap();
            assert_eq!(c.runtime(), RuntimeKind::Tower);
        }
        let c = Config::from_yaml("public_url: http://gw\nruntime: pingora\n").unwrap();
        assert_eq!(c.validate()[0].path, "runtime");
    }

    // CM-01/CM-02/CM-03, SEC-05, PUSH-04: ping and push need an HTTPS endpoint (plain http only
    // with the development flag), ping the CIBA grant; push can be switched off (FAPI).
    #[test]
    fn cm_02_ping_clients_need_an_https_endpoint() {
        let problems = |client: &str, extra: &str| {
            Config::from_yaml(&format!(
                "public_url: http://gw\n{extra}clients:\n  - {{ client_id: a, secret: \"${{HOME}}\", {client} }}\n"
            ))
            .unwrap()
            .validate()
            .into_iter()
            .map(|e| e.path)
            .collect::<Vec<_>>()
        };
        let endpoint = "clients[0].backchannel_client_notification_endpoint";
        assert_eq!(
            problems("backchannel_token_delivery_mode: ping", ""),
            [endpoint]
        );
        let http = "backchannel_token_delivery_mode: ping, backchannel_client_notification_endpoint: \"http://c.example/cb\"";
        assert_eq!(problems(http, ""), [endpoint]);
        let dev = "ciba: { client_notifications: { allow_plain_http: true } }\n";
        assert!(problems(http, dev).is_empty());
        let https = "backchannel_token_delivery_mode: ping, backchannel_client_notification_endpoint: \"https://c.example/cb\"";
        assert!(problems(https, "").is_empty());
        assert_eq!(
            problems(&format!("{https}, grant_types: [authorization_code]"), ""),
            ["clients[0].grant_types"]
        );
        assert_eq!(
            problems("backchannel_token_delivery_mode: push", ""),
            [endpoint]
        );
        let push = "backchannel_token_delivery_mode: push, backchannel_client_notification_endpoint: \"https://c.example/cb\", grant_types: []";
        assert!(problems(push, "").is_empty());
        assert_eq!(
            problems(push, "ciba: { offer_push: false }\n"),
            ["clients[0].backchannel_token_delivery_mode"]
        );
        assert_eq!(
            problems("", "ciba: { long_poll_secs: 121 }\n"),
            ["ciba.long_poll_secs"]
        );
        // Issue 21 §6: held polls can never take every connection.
        assert!(problems("", "server: { max_connections: 100 }\n").is_empty());
        assert_eq!(
            problems(
                "",
                "server: { max_connections: 100 }\nciba: { max_held_polls: 100 }\n"
            ),
            ["ciba.max_held_polls"]
        );
        assert_eq!(
            problems("", "ciba: { max_held_polls_per_client: 0 }\n"),
            ["ciba.max_held_polls_per_client"]
        );
    }
}
