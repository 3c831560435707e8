//! Discovery (DISC-01…07): the CIBA fields merged into the provider's document, or a complete
//! document of the gateway's own; and the audit of a provider's document that `check --online`
//! and the start-up log report.
//!
//! The merged document tells the truth about the gateway: every endpoint the gateway answers
//! (token, backchannel, JWKS, userinfo) is advertised at the gateway's public URL at the path
//! where it intercepts it, whatever the provider wrote; the ID token algorithms include the
//! ones the gateway signs with; the client authentication methods are those that work at the
//! shared token endpoint for the CIBA grant *and* the provider's grants.

use bytes::Bytes;
use http::Response;
use serde_json::{Map, Value, json};
use url::Url;

use super::paths::{Paths, SharedPaths};
use crate::config::{AuthMethod, Config};
use crate::protocol::GRANT_TYPE_CIBA;
use crate::tokens::KeySet;

/// The delivery modes the gateway serves (DISC-02): push only while it is offered (PUSH-04).
fn delivery_modes(cfg: &Config) -> &'static [&'static str] {
    if cfg.ciba.offer_push {
        &["poll", "ping", "push"]
    } else {
        &["poll", "ping"]
    }
}

/// The client authentication methods the gateway accepts (BC-AUTH-02, DISC-06), from the one
/// list of methods: the certificate methods where certificates can reach the gateway, no
/// shared secrets under FAPI-CIBA (FAPI-05).
fn auth_methods(cfg: &Config) -> Vec<&'static str> {
    let fapi = cfg.profile == Some(crate::config::Profile::FapiCiba);
    AuthMethod::ALL
        .into_iter()
        .filter(|m| cfg.mtls.enabled() || !m.uses_certificate())
        .filter(|m| !(fapi && m.uses_secret()))
        .map(AuthMethod::as_str)
        .collect()
}

/// The algorithms of client assertions and signed requests (DISC-04, DISC-06): asymmetric
/// only, PS256 and ES256 under FAPI-CIBA (FAPI-03).
fn client_signing_algs(cfg: &Config) -> Vec<&'static str> {
    let algs: &[crate::config::SigningAlg] =
        if cfg.profile == Some(crate::config::Profile::FapiCiba) {
            crate::config::FAPI_ALGS
        } else {
            crate::jwks::ASYMMETRIC
        };
    algs.iter().map(|a| a.name()).collect()
}

/// One thing about a provider's discovery document that will not work as configured, in plain
/// words, with the configuration change that fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is wrong.
    pub problem: String,
    /// What to change.
    pub fix: String,
}

pub(super) struct Discovery {
    public_origin: String,
    issuer: String,
    backchannel: String,
    jwks: String,
    user_code_supported: bool,
    delivery_modes: &'static [&'static str],
    signing_algs: Vec<String>,
    auth_methods: Vec<&'static str>,
    client_algs: Vec<&'static str>,
    bound_tokens: bool,
    /// The registration endpoint, when clients may register.
    registration: Option<String>,
    standalone: Bytes,
}

impl Discovery {
    pub(super) fn new(cfg: &Config, issuer: &str, paths: &Paths, keys: &KeySet) -> Self {
        let url = |p: &str| cfg.url_for(p);
        let signing_algs = keys.algorithms();
        let shared = paths.shared();
        let mut doc = json!({
            "issuer": issuer,
            "token_endpoint": url(&shared.token),
            "userinfo_endpoint": url(&shared.userinfo),
            "jwks_uri": url(&paths.jwks),
            "backchannel_authentication_endpoint": url(&paths.backchannel),
            "backchannel_token_delivery_modes_supported": delivery_modes(cfg),
            "backchannel_user_code_parameter_supported": cfg.ciba.user_code.supported,
            "grant_types_supported": [GRANT_TYPE_CIBA, "refresh_token"],
            "token_endpoint_auth_methods_supported": auth_methods(cfg),
            "token_endpoint_auth_signing_alg_values_supported": client_signing_algs(cfg),
            "backchannel_authentication_request_signing_alg_values_supported": client_signing_algs(cfg),
            "scopes_supported": cfg.scopes_supported,
            "response_types_supported": [],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": signing_algs,
            "claims_supported": ["sub", "iss", "aud", "iat", "exp", "auth_time", "acr", "name",
                                  "preferred_username", "email", "phone_number"],
        });
        if !cfg.tokens.acr_values_supported.is_empty() {
            doc["acr_values_supported"] = json!(cfg.tokens.acr_values_supported);
        }
        // RFC 8705 §3.3: where client certificates reach the gateway, tokens can be bound.
        if cfg.mtls.enabled() {
            doc["tls_client_certificate_bound_access_tokens"] = json!(true);
        }
        let registration = (!paths.registration.is_empty()).then(|| url(&paths.registration));
        if let Some(r) = &registration {
            doc["registration_endpoint"] = json!(r);
        }
        Self {
            registration,
            public_origin: cfg.public_url.origin().ascii_serialization(),
            issuer: issuer.to_owned(),
            backchannel: url(&paths.backchannel),
            jwks: url(&paths.jwks),
            user_code_supported: cfg.ciba.user_code.supported,
            delivery_modes: delivery_modes(cfg),
            signing_algs,
            auth_methods: auth_methods(cfg),
            client_algs: client_signing_algs(cfg),
            bound_tokens: cfg.mtls.enabled(),
            standalone: Bytes::from(doc.to_string()),
        }
    }

    pub(super) fn standalone(&self) -> Response<Bytes> {
        super::cached_json(self.standalone.clone())
    }

    /// The provider's document with the CIBA fields. `shared` are the token and userinfo paths
    /// in force; `own_jwks` says whether the gateway serves the JWKS (with an upstream it
    /// serves the merged keys, GW-02; a wrapped service's own `jwks_uri` is kept otherwise).
    pub(super) fn merge(
        &self,
        mut doc: Map<String, Value>,
        shared: &SharedPaths,
        own_jwks: bool,
    ) -> Bytes {
        let at = |p: &str| json!(format!("{}{p}", self.public_origin));
        doc.insert("token_endpoint".into(), at(&shared.token));
        doc.insert("userinfo_endpoint".into(), at(&shared.userinfo));
        if own_jwks {
            doc.insert("jwks_uri".into(), json!(self.jwks));
        }
        doc.insert(
            "backchannel_authentication_endpoint".into(),
            json!(self.backchannel),
        );
        doc.insert(
            "backchannel_token_delivery_modes_supported".into(),
            json!(self.delivery_modes),
        );
        doc.insert(
            "backchannel_user_code_parameter_supported".into(),
            json!(self.user_code_supported),
        );
        // DISC-04: the gateway verifies signed requests, with its algorithms.
        doc.insert(
            "backchannel_authentication_request_signing_alg_values_supported".into(),
            json!(self.client_algs),
        );
        if self.bound_tokens {
            doc.insert(
                "tls_client_certificate_bound_access_tokens".into(),
                json!(true),
            );
        }
        // Clients register here, never at the provider (whose clients know nothing of CIBA).
        if let Some(r) = &self.registration {
            doc.insert("registration_endpoint".into(), json!(r));
        }
        // An absent grant_types_supported means the OIDC default; keep its meaning explicit.
        let grants = doc
            .entry("grant_types_supported")
            .or_insert_with(|| json!(["authorization_code", "implicit"]));
        push_missing(grants, [GRANT_TYPE_CIBA, "refresh_token"]);
        // A client library checks an ID token's alg against this list.
        let algs = doc
            .entry("id_token_signing_alg_values_supported")
            .or_insert_with(|| json!(["RS256"]));
        push_missing(algs, self.signing_algs.iter().map(String::as_str));
        let mut methods = common_auth_methods(&doc, &self.auth_methods);
        if methods.is_empty() {
            // No method in common (reported by the audit): say what the CIBA endpoints take.
            methods = self.auth_methods.clone();
        }
        if methods.iter().any(|m| m.ends_with("_jwt")) {
            doc.insert(
                "token_endpoint_auth_signing_alg_values_supported".into(),
                json!(self.client_algs),
            );
        } else {
            doc.remove("token_endpoint_auth_signing_alg_values_supported");
        }
        doc.insert(
            "token_endpoint_auth_methods_supported".into(),
            json!(methods),
        );
        Bytes::from(Value::Object(doc).to_string())
    }

    /// What in the provider's document will not work with this gateway as configured.
    pub(super) fn audit(&self, doc: &Map<String, Value>, cfg: &Config) -> Vec<Finding> {
        let mut found = Vec::new();
        match doc.get("issuer").and_then(Value::as_str) {
            Some(iss) if iss.trim_end_matches('/') != self.issuer.trim_end_matches('/') => {
                found.push(Finding {
                    problem: format!(
                        "the provider's issuer is {iss}, the gateway's is {}: clients reject ID tokens and discovery when they differ (GW-02)",
                        self.issuer
                    ),
                    fix: format!(
                        "set `issuer: {iss}` (and `public_url` to its origin), or make the provider build its URLs from the Host header the gateway forwards"
                    ),
                });
            }
            Some(_) => {}
            None => found.push(Finding {
                problem: "the provider's discovery document has no issuer".into(),
                fix: "check `upstream.url` and `endpoints.discovery`".into(),
            }),
        }
        for (key, value) in doc {
            let Some(u) = value.as_str().and_then(|s| Url::parse(s).ok()) else {
                continue;
            };
            if !(key.ends_with("_endpoint") || key == "jwks_uri") {
                continue;
            }
            let origin = u.origin().ascii_serialization();
            if origin != self.public_origin {
                let served = matches!(
                    key.as_str(),
                    "token_endpoint" | "userinfo_endpoint" | "jwks_uri"
                );
                found.push(Finding {
                    problem: format!(
                        "the provider advertises {key} on {origin}, not on the gateway's public origin {}{}",
                        self.public_origin,
                        if served {
                            " (the gateway advertises its own URL for it instead)"
                        } else {
                            ": clients would bypass the gateway or reach an internal address"
                        }
                    ),
                    fix: "let the provider build its URLs from the Host header (the gateway sends the public host), or set `upstream.host_header` / the provider's public URL to the gateway's origin".into(),
                });
            }
        }
        if let Some(token) = doc.get("token_endpoint").and_then(Value::as_str)
            && let (Ok(u), Some(configured)) = (Url::parse(token), cfg.endpoints.token.as_deref())
            && u.path() != configured
        {
            found.push(Finding {
                problem: format!(
                    "the provider's token endpoint is at {}, but `endpoints.token` is {configured}: the provider's grants still reach it, CIBA polls sent to the provider's path do not reach the gateway",
                    u.path()
                ),
                fix: "remove `endpoints.token` (the gateway then takes the provider's path)".into(),
            });
        }
        let advertised = doc
            .get("token_endpoint_auth_methods_supported")
            .and_then(Value::as_array);
        if advertised.is_some() && common_auth_methods(doc, &self.auth_methods).is_empty() {
            found.push(Finding {
                problem: format!(
                    "the provider accepts none of the gateway's client authentication methods ({}) at its token endpoint",
                    self.auth_methods.join(", ")
                ),
                fix: "enable one of them at the provider for the clients that use CIBA".into(),
            });
        }
        found
    }
}

impl Discovery {
    /// What will not work whatever the provider says: a client expecting ID tokens in an
    /// algorithm the gateway has no key for.
    pub(super) fn config_findings(&self, cfg: &Config) -> Vec<Finding> {
        let mut found = Vec::new();
        for (i, c) in cfg.clients.iter().enumerate() {
            if let Some(alg) = c.id_token_signed_response_alg
                && !self.signing_algs.iter().any(|a| *a == alg.name())
            {
                found.push(Finding {
                    problem: format!(
                        "clients[{i}] ({}) expects ID tokens signed with {}, and the gateway has no such key",
                        c.client_id,
                        alg.name()
                    ),
                    fix: format!(
                        "add a key with `alg: {}` to `tokens.keys` (`ciba-gateway keygen --alg {}`)",
                        alg.name(),
                        alg.name().to_lowercase()
                    ),
                });
            }
        }
        found
    }
}

/// The methods that work at the shared token endpoint for every grant: the provider's list
/// (OIDC's default `client_secret_basic` when absent) limited to the gateway's.
fn common_auth_methods(doc: &Map<String, Value>, ours: &[&'static str]) -> Vec<&'static str> {
    let provider: Vec<&str> = doc
        .get("token_endpoint_auth_methods_supported")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_else(|| vec!["client_secret_basic"]);
    ours.iter()
        .copied()
        .filter(|m| provider.contains(m))
        .collect()
}

fn push_missing<'a>(list: &mut Value, items: impl IntoIterator<Item = &'a str>) {
    if let Some(list) = list.as_array_mut() {
        for item in items {
            if !list.iter().any(|v| v == item) {
                list.push(json!(item));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyConfig, SecretRef, SigningAlg};

    fn discovery(yaml: &str) -> (Discovery, Paths, Config) {
        let cfg = Config::from_yaml(yaml).unwrap();
        let paths = Paths::new(&cfg);
        let keys = KeySet::from_config(&cfg.tokens).unwrap();
        (
            Discovery::new(&cfg, &cfg.issuer(), &paths, &keys),
            paths,
            cfg,
        )
    }

    fn merged(d: &Discovery, paths: &Paths, upstream: Value) -> Value {
        let doc = upstream.as_object().unwrap().clone();
        serde_json::from_slice(&d.merge(doc, &paths.shared(), true)).unwrap()
    }

    // Issue item 3: an RSA-only provider; the merged list gains the gateway's algorithm, so a
    // client library accepts the gateway's ID tokens.
    #[test]
    fn signing_algorithms_include_the_gateways() {
        let (d, p, _) = discovery("public_url: http://gw\n");
        let m = merged(
            &d,
            &p,
            json!({"id_token_signing_alg_values_supported": ["RS256"]}),
        );
        assert_eq!(
            m["id_token_signing_alg_values_supported"],
            json!(["RS256", "ES256"])
        );
        let m = merged(&d, &p, json!({}));
        assert_eq!(
            m["id_token_signing_alg_values_supported"],
            json!(["RS256", "ES256"]),
            "absent means RS256 (OIDC Discovery)"
        );
    }

    // DISC-06: only methods that work for the CIBA grant and the provider's grants; the
    // signing algorithms of assertions and signed requests are the gateway's (DISC-04).
    #[test]
    fn auth_methods_are_those_both_accept() {
        let (d, p, _) = discovery("public_url: http://gw\n");
        let m = merged(
            &d,
            &p,
            json!({
                "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_post", "tls_client_auth"],
                "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
                "backchannel_authentication_request_signing_alg_values_supported": ["HS256"],
            }),
        );
        // tls_client_auth: no client certificate can reach this gateway (no `mtls`).
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            json!(["client_secret_post", "private_key_jwt"])
        );
        let ours = json!(["PS256", "ES256", "RS256", "EdDSA"]);
        assert_eq!(m["token_endpoint_auth_signing_alg_values_supported"], ours);
        assert_eq!(
            m["backchannel_authentication_request_signing_alg_values_supported"],
            ours
        );
        let m = merged(&d, &p, json!({}));
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            json!(["client_secret_basic"]),
            "absent means client_secret_basic"
        );
        assert!(
            m.get("token_endpoint_auth_signing_alg_values_supported")
                .is_none()
        );
        let m = merged(
            &d,
            &p,
            json!({"token_endpoint_auth_methods_supported": ["client_secret_jwt"]}),
        );
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            json!(auth_methods(
                &Config::from_yaml("public_url: http://gw\n").unwrap()
            ))
        );
    }

    // FAPI-05, DISC-06: under the profile, with certificates reaching the gateway, the
    // standalone document lists the key and certificate methods only, PS256/ES256, and bound
    // tokens; the refresh grant is listed.
    #[test]
    fn the_one_method_list_under_fapi() {
        let cfg = Config::from_yaml(
            "public_url: http://gw\nprofile: fapi-ciba\nmtls: { header: x-client-cert, trusted_proxies: [10.0.0.0/8] }\n",
        )
        .unwrap();
        assert_eq!(
            auth_methods(&cfg),
            [
                "private_key_jwt",
                "tls_client_auth",
                "self_signed_tls_client_auth"
            ]
        );
        assert_eq!(client_signing_algs(&cfg), ["PS256", "ES256"]);
        let (d, _, _) = discovery(
            "public_url: http://gw\nmtls: { header: x-client-cert, trusted_proxies: [10.0.0.0/8] }\n",
        );
        let doc: Value = serde_json::from_slice(d.standalone().body()).unwrap();
        assert_eq!(doc["tls_client_certificate_bound_access_tokens"], true);
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
        assert!(
            doc["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("refresh_token"))
        );
    }

    // Issue item 1: whatever the provider wrote, the endpoints the gateway serves are
    // advertised at the gateway's URL, and other origins are reported.
    #[test]
    fn served_endpoints_are_the_gateways_and_foreign_origins_are_reported() {
        let (d, p, cfg) = discovery("public_url: http://gw.example\nissuer: http://gw.example/o\n");
        let upstream = json!({
            "issuer": "http://gw.example/o",
            "authorization_endpoint": "http://10.0.0.5:8000/o/authorize/",
            "token_endpoint": "http://10.0.0.5:8000/o/token/",
            "userinfo_endpoint": "http://10.0.0.5:8000/o/userinfo/",
            "jwks_uri": "http://10.0.0.5:8000/o/jwks.json",
        });
        p.learn(upstream.as_object().unwrap());
        let m = merged(&d, &p, upstream.clone());
        assert_eq!(m["token_endpoint"], "http://gw.example/o/token/");
        assert_eq!(m["userinfo_endpoint"], "http://gw.example/o/userinfo/");
        assert_eq!(m["jwks_uri"], "http://gw.example/o/jwks");
        assert_eq!(
            m["backchannel_authentication_endpoint"],
            "http://gw.example/o/bc-authorize"
        );
        assert_eq!(m["issuer"], "http://gw.example/o");
        let found = d.audit(upstream.as_object().unwrap(), &cfg);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found.iter().any(|f| {
            f.problem
                .contains("authorization_endpoint on http://10.0.0.5:8000")
                && f.problem.contains("bypass")
        }));
    }

    #[test]
    fn a_client_alg_without_a_key_is_reported() {
        let (d, _, cfg) = discovery(
            "public_url: http://gw\nclients:\n  - { client_id: a, secret: \"${HOME}\", id_token_signed_response_alg: RS256 }\n",
        );
        let f = d.config_findings(&cfg);
        assert_eq!(f.len(), 1);
        assert!(f[0].fix.contains("keygen --alg rs256"), "{f:?}");
        let mut with_key = cfg.clone();
        with_key.tokens.keys = vec![KeyConfig {
            kid: "rsa".into(),
            alg: SigningAlg::RS256,
            private_key: SecretRef::new(crate::tokens::generate_pem(SigningAlg::RS256).unwrap()),
        }];
        let keys = KeySet::from_config(&with_key.tokens).unwrap();
        let d = Discovery::new(&with_key, "http://gw", &Paths::new(&with_key), &keys);
        assert!(d.config_findings(&with_key).is_empty());
    }
}
