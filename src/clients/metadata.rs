//! Client metadata as RFC 7591 (with CIBA §4 and RFC 8705) names it, read into the gateway's
//! own client model, [`ClientConfig`]: a registered client is checked by the very rules a
//! configured one is (`ClientConfig::check_registered`), so the two can never disagree.

use serde_json::{Map, Value};

use crate::config::{ClientConfig, Config, ConfigError};
use crate::protocol::{GRANT_TYPE_CIBA, GRANT_TYPE_CIBA_IETF_ALIAS};

/// The metadata the gateway registers, under their RFC names; anything else in a request is
/// ignored (REG-04) and not shown back.
const KNOWN: &[&str] = &[
    "client_name",
    "redirect_uris",
    "grant_types",
    "scope",
    "token_endpoint_auth_method",
    "token_endpoint_auth_signing_alg",
    "jwks",
    "jwks_uri",
    "tls_client_auth_subject_dn",
    "tls_client_auth_san_dns",
    "tls_client_auth_san_uri",
    "tls_client_auth_san_ip",
    "tls_client_auth_san_email",
    "tls_client_certificate_bound_access_tokens",
    "backchannel_token_delivery_mode",
    "backchannel_client_notification_endpoint",
    "backchannel_authentication_request_signing_alg",
    "backchannel_user_code_parameter",
    "id_token_signed_response_alg",
];

/// The grant types a registered client can use at the gateway.
const SERVED_GRANTS: &[&str] = &[GRANT_TYPE_CIBA, "refresh_token"];

/// Why metadata was refused: `invalid_redirect_uri` or `invalid_client_metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `invalid_redirect_uri`.
    RedirectUri(String),
    /// `invalid_client_metadata`.
    Metadata(String),
}

/// The metadata of a registration request, normalised: unknown members dropped, the defaults
/// the gateway substitutes filled in (REG-01 shows them to the client), the IETF spelling of
/// the CIBA grant stored as the specified one (MYTH-01, where the alias is accepted). Checked
/// against the same rules as a configured client.
pub(crate) fn normalise(
    request: &Value,
    client_id: &str,
    cfg: &Config,
) -> Result<(Map<String, Value>, ClientConfig), Refusal> {
    let bad = |m: &str| Refusal::Metadata(m.to_owned());
    let Some(request) = request.as_object() else {
        return Err(bad("the request body must be a JSON object"));
    };
    let mut md: Map<String, Value> = KNOWN
        .iter()
        .filter_map(|k| request.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .filter(|(_, v)| !v.is_null())
        .collect();
    if let Some(uris) = md.get("redirect_uris") {
        check_redirect_uris(uris)?;
    }
    // Grant types: the ones the gateway serves, the CIBA grant by default.
    let grants = match md.get("grant_types") {
        None => vec![GRANT_TYPE_CIBA.to_owned()],
        Some(Value::Array(a)) => {
            let mut out: Vec<String> = Vec::new();
            for g in a {
                let Some(g) = g.as_str() else {
                    return Err(bad("grant_types must be an array of strings"));
                };
                let g = if g == GRANT_TYPE_CIBA_IETF_ALIAS {
                    if !cfg.ciba.accept_ietf_grant_type_alias {
                        return Err(Refusal::Metadata(format!(
                            "'{g}' is not the CIBA grant type; use '{GRANT_TYPE_CIBA}'"
                        )));
                    }
                    GRANT_TYPE_CIBA
                } else {
                    g
                };
                if SERVED_GRANTS.contains(&g) && !out.iter().any(|o| o == g) {
                    out.push(g.to_owned());
                }
            }
            out
        }
        Some(_) => return Err(bad("grant_types must be an array of strings")),
    };
    md.insert("grant_types".into(), grants.into());
    md.entry("backchannel_token_delivery_mode")
        .or_insert_with(|| "poll".into());
    md.entry("token_endpoint_auth_method")
        .or_insert_with(|| cfg.registration.default_auth_method.as_str().into());
    if md.get("token_endpoint_auth_method").and_then(Value::as_str) == Some("none") {
        return Err(bad(
            "token_endpoint_auth_method none: a client that does not authenticate cannot use CIBA (BC-AUTH-02)",
        ));
    }
    if md.contains_key("jwks") && md.contains_key("jwks_uri") {
        return Err(bad("give jwks or jwks_uri, not both (REG-03)"));
    }
    let c = client_config(client_id, &md).map_err(Refusal::Metadata)?;
    let ciba = c.grant_types.iter().any(|g| g == GRANT_TYPE_CIBA);
    if !ciba && c.backchannel_token_delivery_mode != crate::config::DeliveryMode::Push {
        return Err(Refusal::Metadata(format!(
            "grant_types must include {GRANT_TYPE_CIBA}: the gateway registers CIBA clients (CM-03)"
        )));
    }
    let mut errs = Vec::new();
    c.check_registered(cfg, &mut errs);
    if !errs.is_empty() {
        return Err(Refusal::Metadata(describe(&errs)));
    }
    Ok((md, c))
}

/// The client model of registered metadata (what [`normalise`] returned, or a stored record's).
pub(crate) fn client_config(
    client_id: &str,
    md: &Map<String, Value>,
) -> Result<ClientConfig, String> {
    let mut c = Map::new();
    c.insert("client_id".into(), client_id.into());
    for (k, v) in md {
        match k.as_str() {
            "client_name" => {
                c.insert("name".into(), v.clone());
            }
            "scope" => {
                let Some(s) = v.as_str() else {
                    return Err("scope must be a string of space-separated values".into());
                };
                c.insert(
                    "scopes".into(),
                    s.split(' ')
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .into(),
                );
            }
            "redirect_uris" => {}
            _ => {
                c.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(Value::Object(c)).map_err(|e| e.to_string())
}

/// RFC 7591 §2: absolute URLs without a fragment. The gateway redirects nowhere, but a client
/// that registers them is told at once when one is not a URL.
fn check_redirect_uris(uris: &Value) -> Result<(), Refusal> {
    let refuse = |m: String| Err(Refusal::RedirectUri(m));
    let Some(uris) = uris.as_array() else {
        return refuse("redirect_uris must be an array of URLs".into());
    };
    for u in uris {
        let Some(s) = u.as_str() else {
            return refuse("redirect_uris must be an array of URLs".into());
        };
        match url::Url::parse(s) {
            Ok(url) if url.fragment().is_none() && url.has_host() => {}
            _ => return refuse(format!("'{s}' is not an absolute URL without a fragment")),
        }
    }
    Ok(())
}

/// The configuration rules' findings as one description, in the metadata's names.
fn describe(errs: &[ConfigError]) -> String {
    errs.iter()
        .map(|e| {
            let field = e.path.strip_prefix("client.").unwrap_or(&e.path);
            let field = match field {
                "scopes" => "scope",
                "name" => "client_name",
                f => f,
            };
            format!("{field}: {}", e.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::from_yaml("public_url: https://gw.example\n").unwrap()
    }

    // The write-up's body (seed §"Register the Client"): its id and secret are not honoured,
    // its IETF grant spelling becomes the specified one, its response_types and endpoint
    // members (discovery metadata, MYTH-03) are ignored, poll is substituted.
    #[test]
    fn myth_01_03_the_write_ups_body_registers_a_poll_client() {
        let body = serde_json::json!({
            "client_id": "smart-home-device",
            "client_secret": "device-secret",
            "redirect_uris": ["https://device.example.com/callback"],
            "grant_types": ["urn:ietf:params:oauth:grant-type:ciba"],
            "response_types": ["token"],
            "scope": "openid profile",
            "backchannel_authentication_endpoint": "https://as.example.com/ciba/auth",
            "token_endpoint": "https://as.example.com/token"
        });
        let (md, c) = normalise(&body, "issued", &cfg()).unwrap();
        assert_eq!(md["grant_types"], serde_json::json!([GRANT_TYPE_CIBA]));
        assert_eq!(md["backchannel_token_delivery_mode"], "poll");
        assert_eq!(md["token_endpoint_auth_method"], "client_secret_basic");
        for ignored in [
            "client_id",
            "client_secret",
            "response_types",
            "token_endpoint",
        ] {
            assert!(!md.contains_key(ignored), "{ignored}");
        }
        assert_eq!(
            c.scopes.as_deref(),
            Some(&["openid".into(), "profile".into()][..])
        );
    }

    // REG-02/REG-03: each CIBA problem is invalid_client_metadata naming the field; only
    // redirect_uris problems are invalid_redirect_uri.
    #[test]
    fn reg_03_invalid_metadata_names_the_field() {
        let refused = |body: Value| normalise(&body, "x", &cfg()).unwrap_err();
        let metadata = |body: Value| match refused(body) {
            Refusal::Metadata(m) => m,
            r => panic!("{r:?}"),
        };
        assert!(
            metadata(serde_json::json!({"backchannel_token_delivery_mode": "ping"}))
                .contains("backchannel_client_notification_endpoint")
        );
        assert!(
            metadata(serde_json::json!({
                "backchannel_token_delivery_mode": "ping",
                "backchannel_client_notification_endpoint": "http://client.example/cb"
            }))
            .contains("https")
        );
        assert!(
            metadata(serde_json::json!({"backchannel_token_delivery_mode": "carrier-pigeon"}))
                .contains("carrier-pigeon")
        );
        assert!(
            metadata(serde_json::json!({"token_endpoint_auth_method": "none"}))
                .contains("BC-AUTH-02")
        );
        assert!(
            metadata(
                serde_json::json!({"backchannel_authentication_request_signing_alg": "HS256"})
            )
            .contains("HS256")
        );
        assert!(
            metadata(
                serde_json::json!({"backchannel_authentication_request_signing_alg": "PS256"})
            )
            .contains("jwks")
        );
        assert!(
            metadata(
                serde_json::json!({"jwks": {"keys": []}, "jwks_uri": "https://c.example/jwks"})
            )
            .contains("not both")
        );
        assert!(metadata(serde_json::json!({"scope": "openid admin"})).contains("scope"));
        assert!(
            metadata(serde_json::json!({"grant_types": ["authorization_code"]})).contains("CM-03")
        );
        assert!(metadata(serde_json::json!([1, 2])).contains("JSON object"));
        assert!(matches!(
            refused(serde_json::json!({"redirect_uris": ["not a url"]})),
            Refusal::RedirectUri(_)
        ));
    }
}
