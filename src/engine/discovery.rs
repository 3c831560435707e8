//! Discovery (DISC-01…05): the CIBA fields, merged into an upstream document or served in a
//! complete document of the gateway's own.

use bytes::Bytes;
use http::Response;
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::protocol::GRANT_TYPE_CIBA;
use crate::tokens::Minter;

pub(super) struct Discovery {
    ciba_fields: Map<String, Value>,
    standalone: Bytes,
}

impl Discovery {
    pub(super) fn new(cfg: &Config, issuer: &str, minter: &Minter) -> Self {
        let mut ciba_fields = Map::new();
        ciba_fields.insert(
            "backchannel_authentication_endpoint".into(),
            json!(cfg.url_for(&cfg.endpoints.backchannel)),
        );
        ciba_fields.insert(
            "backchannel_token_delivery_modes_supported".into(),
            json!(["poll"]),
        );
        ciba_fields.insert(
            "backchannel_user_code_parameter_supported".into(),
            json!(cfg.ciba.user_code.supported),
        );
        // DISC-04: no signing algorithms are published, so signed requests are not offered.
        let alg = format!("{:?}", minter.keys().active_alg());
        let mut doc = json!({
            "issuer": issuer,
            "token_endpoint": cfg.url_for(&cfg.endpoints.token),
            "jwks_uri": cfg.url_for(&cfg.endpoints.jwks),
            "grant_types_supported": [GRANT_TYPE_CIBA],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": cfg.scopes_supported,
            "response_types_supported": [],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [alg],
            "claims_supported": ["sub", "iss", "aud", "iat", "exp", "auth_time", "acr", "name",
                                  "preferred_username", "email", "phone_number"],
        });
        if !cfg.tokens.acr_values_supported.is_empty() {
            doc["acr_values_supported"] = json!(cfg.tokens.acr_values_supported);
        }
        let obj = doc.as_object_mut().expect("an object");
        obj.extend(ciba_fields.clone());
        Self {
            ciba_fields,
            standalone: Bytes::from(doc.to_string()),
        }
    }

    pub(super) fn standalone(&self) -> Response<Bytes> {
        super::cached_json(self.standalone.clone())
    }

    /// Adds the CIBA fields and the CIBA grant; every other upstream field stays as it was,
    /// except `jwks_uri` when `jwks_uri` is given (GW-02: the gateway then serves the merged keys).
    pub(super) fn merge(&self, mut doc: Map<String, Value>, jwks_uri: Option<&str>) -> Bytes {
        if let Some(uri) = jwks_uri {
            doc.insert("jwks_uri".into(), json!(uri));
        }
        for (k, v) in &self.ciba_fields {
            doc.insert(k.clone(), v.clone());
        }
        // An absent grant_types_supported means the OIDC default; keep its meaning explicit.
        let grants = doc
            .entry("grant_types_supported")
            .or_insert_with(|| json!(["authorization_code", "implicit"]));
        if let Some(list) = grants.as_array_mut()
            && !list.iter().any(|g| g == GRANT_TYPE_CIBA)
        {
            list.push(json!(GRANT_TYPE_CIBA));
        }
        Bytes::from(Value::Object(doc).to_string())
    }
}
