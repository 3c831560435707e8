//! Where pending requests (and refresh-token families, and the shared rate limits) live.

use serde::Deserialize;
use url::Url;

use super::{ConfigError, SecretRef};

/// Pending-request storage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum StoreConfig {
    /// In-process (moka). One instance only, or sticky routing (GW-04).
    Memory {
        /// Most requests held at once; beyond it new requests are refused. Default 100000.
        #[serde(default = "default_capacity")]
        capacity: u64,
        /// How long an expired request is remembered so that polls get `expired_token`
        /// rather than `invalid_grant`, seconds. Default 600.
        #[serde(default = "default_tombstone")]
        expired_grace_secs: u64,
        /// Where registered clients are kept (a redb database file, created with its
        /// directory when `registration.enabled`). Default `data/clients.redb`, relative to the
        /// working directory; `null`: in memory only, lost with the process.
        #[serde(default = "default_clients_file")]
        clients_file: Option<std::path::PathBuf>,
    },
    /// Redis or Valkey, shared by every replica (single node, Sentinel or Cluster). Give exactly
    /// one of `url`, `sentinel`, `cluster`. The server must run with
    /// `maxmemory-policy noeviction` (checked at start-up where the server allows it).
    Redis(Box<RedisConfig>),
}

/// `store: {type: redis, ...}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// One server: `redis://host:port[/db]`, or `rediss://` for TLS. No password in the URL:
    /// it goes in `password`.
    #[serde(default)]
    pub url: Option<Url>,
    /// Sentinel: the master named `master`, as the Sentinels at `urls` report it.
    #[serde(default)]
    pub sentinel: Option<SentinelConfig>,
    /// Cluster: some of its nodes (`redis://` or `rediss://`); the rest are discovered.
    #[serde(default)]
    pub cluster: Vec<Url>,
    /// ACL user, if not `default`.
    #[serde(default)]
    pub username: Option<String>,
    /// The password (`${ENV}` or `file:/path`).
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// A PEM file of CA certificates for `rediss://` servers with a private CA.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Prefix of every key (and of the wake-up channel): gateways sharing a server with
    /// different prefixes do not see each other. Default `ciba`.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Most requests held at once, across all replicas; beyond it new requests are refused.
    /// Default 100000.
    #[serde(default = "default_capacity")]
    pub capacity: u64,
    /// As for the memory store, seconds. Default 600.
    #[serde(default = "default_tombstone")]
    pub expired_grace_secs: u64,
    /// Deadline of one store operation (connecting included), ms: past it the CIBA endpoints
    /// answer `503` with `Retry-After`. Default 1000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// `store.sentinel`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The Sentinels (`redis://host:26379`).
    pub urls: Vec<Url>,
    /// The monitored master's name.
    pub master: String,
    /// The Sentinels' own password, if they have one.
    #[serde(default)]
    pub password: Option<SecretRef>,
}

fn default_prefix() -> String {
    "ciba".into()
}

fn default_timeout_ms() -> u64 {
    1000
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::Memory {
            capacity: default_capacity(),
            expired_grace_secs: default_tombstone(),
            clients_file: default_clients_file(),
        }
    }
}

fn default_clients_file() -> Option<std::path::PathBuf> {
    Some("data/clients.redb".into())
}

fn default_capacity() -> u64 {
    100_000
}

fn default_tombstone() -> u64 {
    600
}

impl StoreConfig {
    /// Whether the state is shared between replicas.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    pub(super) fn check(&self, errs: &mut Vec<ConfigError>) {
        let mut err = |path: &str, msg: &str| errs.push(ConfigError::new(path, msg));
        match self {
            StoreConfig::Memory { capacity, .. } => {
                if *capacity == 0 {
                    err("store.capacity", "must be positive");
                }
            }
            StoreConfig::Redis(r) => {
                if r.capacity == 0 {
                    err("store.capacity", "must be positive");
                }
                if !(10..=60_000).contains(&r.timeout_ms) {
                    err("store.timeout_ms", "must be between 10 and 60000");
                }
                if r.key_prefix.is_empty()
                    || !r
                        .key_prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
                {
                    err(
                        "store.key_prefix",
                        "must be letters, digits and - _ . : only",
                    );
                }
                let given = usize::from(r.url.is_some())
                    + usize::from(r.sentinel.is_some())
                    + usize::from(!r.cluster.is_empty());
                if given != 1 {
                    err(
                        "store",
                        "give exactly one of url (one server), sentinel or cluster",
                    );
                }
                let urls = r
                    .url
                    .iter()
                    .map(|u| ("store.url".to_owned(), u))
                    .chain(
                        r.cluster
                            .iter()
                            .enumerate()
                            .map(|(i, u)| (format!("store.cluster[{i}]"), u)),
                    )
                    .chain(r.sentinel.iter().flat_map(|s| {
                        s.urls
                            .iter()
                            .enumerate()
                            .map(|(i, u)| (format!("store.sentinel.urls[{i}]"), u))
                    }));
                for (path, u) in urls {
                    if !matches!(u.scheme(), "redis" | "rediss") || u.host_str().is_none() {
                        err(&path, "must be a redis:// or rediss:// URL with a host");
                    }
                    if u.password().is_some() {
                        err(
                            &path,
                            "must not hold a password: give it as store.password (${ENV} or file:)",
                        );
                    }
                }
                if let Some(s) = &r.sentinel {
                    if s.urls.is_empty() {
                        err("store.sentinel.urls", "must name at least one Sentinel");
                    }
                    if s.master.is_empty() {
                        err("store.sentinel.master", "must name the monitored master");
                    }
                }
            }
        }
    }
}
