//! Where pending requests live.

use serde::Deserialize;

use super::ConfigError;

/// Pending-request storage.
#[derive(Debug, Clone, Deserialize)]
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
    },
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::Memory {
            capacity: default_capacity(),
            expired_grace_secs: default_tombstone(),
        }
    }
}

fn default_capacity() -> u64 {
    100_000
}

fn default_tombstone() -> u64 {
    600
}

impl StoreConfig {
    pub(super) fn check(&self, errs: &mut Vec<ConfigError>) {
        if let StoreConfig::Memory { capacity: 0, .. } = self {
            errs.push(ConfigError::new("store.capacity", "must be positive"));
        }
    }
}
