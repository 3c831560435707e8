//! A client registered through the registration endpoint (RFC 7591), as every store backend
//! keeps it: one record, one codec.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A registered client. It holds no secret: the client secret and the registration access
/// token are kept as SHA-256 digests (both are 256 random bits issued by the gateway, so a
/// digest is as strong as a password hash would be, and costs microseconds to check).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredClient {
    /// The issued `client_id`.
    pub client_id: String,
    /// The registered metadata as the registration response shows it (what the server
    /// substituted included; never a secret or a token).
    pub metadata: Map<String, Value>,
    /// SHA-256 of the client secret, for the secret methods.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex32_opt")]
    pub secret_sha256: Option<[u8; 32]>,
    /// SHA-256 of the registration access token (RFC 7592).
    #[serde(with = "hex32")]
    pub access_token_sha256: [u8; 32],
    /// `client_id_issued_at`, Unix seconds.
    pub issued_at: u64,
    /// Changes with every write: a cache of the parsed client is valid while it is unchanged.
    pub version: u64,
}

impl RegisteredClient {
    /// The record's encoding in every backend.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a registered client serialises")
    }

    /// Reads a record written by [`RegisteredClient::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable registered client: {e}"))
    }

    /// Whether `presented` is the registration access token, in constant time.
    pub fn access_token_is(&self, presented: &str) -> bool {
        bool::from(sha256(presented).ct_eq(&self.access_token_sha256))
    }
}

/// SHA-256 of a value the gateway issued.
pub fn sha256(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(64);
        for b in v {
            out.push_str(&format!("{b:02x}"));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = <&str>::deserialize(d)?;
        parse(s).ok_or_else(|| D::Error::custom("expected 64 hex digits"))
    }

    pub fn parse(s: &str) -> Option<[u8; 32]> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(out)
    }
}

mod hex32_opt {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::hex32::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        Option::<&str>::deserialize(d)?
            .map(|s| {
                super::hex32::parse(s).ok_or_else(|| D::Error::custom("expected 64 hex digits"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_holds_no_secret() {
        let mut metadata = Map::new();
        metadata.insert("client_name".into(), "Smart home".into());
        let r = RegisteredClient {
            client_id: "c1".into(),
            metadata,
            secret_sha256: Some(sha256("device-secret")),
            access_token_sha256: sha256("rat"),
            issued_at: 1_700_000_000,
            version: 7,
        };
        let bytes = r.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("device-secret") && !text.contains("\"rat\""));
        assert_eq!(RegisteredClient::decode(&bytes).unwrap(), r);
        assert!(r.access_token_is("rat"));
        assert!(!r.access_token_is("rat "));
        assert!(RegisteredClient::decode(b"{").is_err());
    }
}
