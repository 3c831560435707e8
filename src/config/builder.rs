//! Configuration in code: [`Config::builder`] and small constructors for the sections an
//! application sets most ([`ClientConfig::new`], [`UserConfig::new`]). Every default is the
//! YAML file's: a builder starts from exactly what an empty file gives.

use std::net::SocketAddr;

use super::{
    AuthMethod, ChannelConfig, ClientConfig, Config, ConfigError, ConfigErrors, DeliveryMode,
    SecretRef, StoreConfig, UpstreamConfig, UserConfig, UsersConfig,
};

impl Config {
    /// A builder for a configuration in code, starting from the defaults a YAML file with only
    /// `public_url` gets (standalone, memory store, an ephemeral signing key, the `log`
    /// channel, no clients, no users).
    ///
    /// ```
    /// use ciba_gateway::config::{AuthMethod, ClientConfig, Config, SecretRef};
    ///
    /// let config = Config::builder("https://login.example.com")
    ///     .listen("127.0.0.1:8080".parse().unwrap())
    ///     .user("alice", "248289761001")
    ///     .client("call-centre", "a-secret-from-your-vault")
    ///     .add_client(
    ///         ClientConfig::new("back-office", SecretRef::new("${BACK_OFFICE_SECRET}"))
    ///             .auth_method(AuthMethod::ClientSecretPost),
    ///     )
    ///     .edit(|c| c.ciba.long_poll_secs = 25)
    ///     .build()
    ///     .expect("a valid configuration");
    /// assert_eq!(config.clients.len(), 2);
    /// assert_eq!(config.issuer(), "https://login.example.com");
    ///
    /// // Mistakes are reported with the field they are about, all at once.
    /// let e = Config::builder("not a url").client("", "x").build().unwrap_err();
    /// assert_eq!(e.0[0].path, "public_url");
    /// ```
    pub fn builder(public_url: &str) -> ConfigBuilder {
        ConfigBuilder::new(public_url)
    }
}

/// Builds a [`Config`] in code (see [`Config::builder`]). Anything the methods do not cover is
/// one [`ConfigBuilder::edit`] away: every field of [`Config`] is public.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    cfg: Config,
    problems: Vec<ConfigError>,
}

impl ConfigBuilder {
    fn new(public_url: &str) -> Self {
        let mut problems = Vec::new();
        let url = url::Url::parse(public_url).unwrap_or_else(|e| {
            problems.push(ConfigError::new("public_url", e.to_string()));
            url::Url::parse("http://invalid.invalid").expect("a valid URL")
        });
        // The file's defaults, taken from the one place they are written: the serde model.
        let cfg: Config = serde_json::from_value(serde_json::json!({ "public_url": url }))
            .expect("public_url alone is a complete configuration");
        Self { cfg, problems }
    }

    /// The address the binary's runtimes listen on (default `127.0.0.1:8080`).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.cfg.listen = addr;
        self
    }

    /// Puts the gateway in front of the OpenID provider at `url` (its origin), with the default
    /// upstream settings.
    pub fn upstream(mut self, url: &str) -> Self {
        match url::Url::parse(url) {
            Ok(url) => self.cfg.upstream = Some(UpstreamConfig::new(url)),
            Err(e) => self
                .problems
                .push(ConfigError::new("upstream.url", e.to_string())),
        }
        self
    }

    /// Adds a poll-mode CIBA client authenticating with `client_secret_basic`; `secret` is the
    /// secret itself (an argon2id hash works too).
    pub fn client(self, client_id: &str, secret: &str) -> Self {
        self.add_client(ClientConfig::new(client_id, SecretRef::value(secret)))
    }

    /// Adds a client.
    pub fn add_client(mut self, client: ClientConfig) -> Self {
        self.cfg.clients.push(client);
        self
    }

    /// Adds a user to the static directory, hinted by `username` or `subject`.
    pub fn user(self, username: &str, subject: &str) -> Self {
        let mut user = UserConfig::new(subject);
        user.username = Some(username.to_owned());
        self.add_user(user)
    }

    /// Adds a user to the static directory (replacing a directory of another kind).
    pub fn add_user(mut self, user: UserConfig) -> Self {
        match &mut self.cfg.users {
            UsersConfig::Static { users } => users.push(user),
            other => {
                *other = UsersConfig::Static { users: vec![user] };
            }
        }
        self
    }

    /// How users are reached (default: `log`, the approval link written to the log).
    pub fn channel(mut self, channel: ChannelConfig) -> Self {
        self.cfg.channel = channel;
        self
    }

    /// Where pending requests live (default: in memory).
    pub fn store(mut self, store: StoreConfig) -> Self {
        self.cfg.store = store;
        self
    }

    /// Changes anything else.
    pub fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.cfg);
        self
    }

    /// The configuration, if its shape is valid ([`Config::validate`]); keys and secrets are
    /// loaded, and checked, when [`crate::Engine::new`] builds the engine from it.
    pub fn build(self) -> Result<Config, ConfigErrors> {
        let mut problems = self.problems;
        if problems.is_empty() {
            problems = self.cfg.validate();
        }
        if problems.is_empty() {
            Ok(self.cfg)
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

impl ClientConfig {
    /// A poll-mode CIBA client with the file's defaults: `client_secret_basic`, the CIBA grant,
    /// every supported scope, tokens minted by the gateway.
    pub fn new(client_id: &str, secret: SecretRef) -> Self {
        Self {
            client_id: client_id.to_owned(),
            name: None,
            secret: Some(secret),
            token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
            jwks: None,
            jwks_file: None,
            jwks_uri: None,
            token_endpoint_auth_signing_alg: None,
            tls_client_auth_subject_dn: None,
            tls_client_auth_san_dns: None,
            tls_client_auth_san_uri: None,
            tls_client_auth_san_ip: None,
            tls_client_auth_san_email: None,
            backchannel_authentication_request_signing_alg: None,
            tls_client_certificate_bound_access_tokens: false,
            allowed_hint_types: None,
            profile: None,
            grant_types: vec![crate::protocol::GRANT_TYPE_CIBA.to_owned()],
            backchannel_token_delivery_mode: DeliveryMode::Poll,
            backchannel_client_notification_endpoint: None,
            backchannel_user_code_parameter: false,
            scopes: None,
            tokens: Default::default(),
            upstream: None,
            id_token_signed_response_alg: None,
        }
    }

    /// How the client authenticates.
    pub fn auth_method(mut self, method: AuthMethod) -> Self {
        self.token_endpoint_auth_method = method;
        self
    }

    /// The name shown to the user.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Ping or push delivery to `endpoint` (https; CM-02).
    pub fn notified_at(mut self, mode: DeliveryMode, endpoint: url::Url) -> Self {
        self.backchannel_token_delivery_mode = mode;
        self.backchannel_client_notification_endpoint = Some(endpoint);
        self
    }
}

impl UpstreamConfig {
    /// The provider at `url` (its origin), with the file's defaults for everything else.
    pub fn new(url: url::Url) -> Self {
        serde_json::from_value(serde_json::json!({ "url": url }))
            .expect("url alone is a complete upstream")
    }
}

impl UserConfig {
    /// A user known by `subject` alone (add `username`, `email`, … as needed).
    pub fn new(subject: &str) -> Self {
        Self {
            subject: subject.to_owned(),
            username: None,
            email: None,
            phone: None,
            name: None,
            user_code: None,
            notify: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One place for defaults: a built configuration equals what the same YAML gives.
    #[test]
    fn the_builder_starts_from_the_files_defaults() {
        let built = Config::builder("http://gw.example").build().unwrap();
        let yaml = Config::from_yaml("public_url: http://gw.example\n").unwrap();
        assert_eq!(format!("{built:?}"), format!("{yaml:?}"));
        let client = ClientConfig::new("c", SecretRef::new("${X}"));
        let from_yaml: Config = Config::from_yaml(
            "public_url: http://gw\nclients: [{client_id: c, secret: \"${X}\"}]\n",
        )
        .unwrap();
        assert_eq!(format!("{client:?}"), format!("{:?}", from_yaml.clients[0]));
    }

    #[test]
    fn problems_name_their_field() {
        let e = Config::builder("http://gw")
            .upstream("::")
            .build()
            .unwrap_err();
        assert_eq!(e.0[0].path, "upstream.url");
        let e = Config::builder("http://gw")
            .client("a", "x")
            .client("a", "y")
            .build()
            .unwrap_err();
        assert_eq!(e.0[0].path, "clients[1].client_id");
    }
}
