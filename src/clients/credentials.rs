//! What a request presents to authenticate its client, read before anything is looked up:
//! exactly one method's credentials (BC-AUTH-05), and the client id they claim.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

use crate::config::AuthMethod;
use crate::protocol::{Form, OAuthError};
use crate::tls::ClientCertificate;

/// RFC 7523's `client_assertion_type` for a JWT.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The credentials of one request.
#[derive(Debug)]
pub(crate) enum Presented<'a> {
    /// A shared secret, in a Basic header or the form.
    Secret {
        id: String,
        secret: String,
        method: AuthMethod,
    },
    /// A signed JWT (`client_assertion`).
    Assertion { id: String, jwt: &'a str },
    /// A TLS client certificate with the `client_id` in the form and nothing else.
    Certificate {
        id: &'a str,
        certificate: &'a ClientCertificate,
    },
}

impl Presented<'_> {
    /// The client id the credentials claim.
    pub(crate) fn client_id(&self) -> &str {
        match self {
            Self::Secret { id, .. } | Self::Assertion { id, .. } => id,
            Self::Certificate { id, .. } => id,
        }
    }

    /// Whether these credentials can be of a client registered with `method`.
    pub(crate) fn fits(&self, method: AuthMethod) -> bool {
        match self {
            Self::Secret { method: m, .. } => *m == method,
            Self::Assertion { .. } => method == AuthMethod::PrivateKeyJwt,
            Self::Certificate { .. } => method.uses_certificate(),
        }
    }
}

/// Reads the credentials. More than one method is `invalid_request`; none, or credentials
/// that cannot be read, `invalid_client`. A certificate is the client's credential only when
/// nothing else is presented (with a secret or an assertion it is a fact about the connection,
/// used to bind tokens).
pub(crate) fn presented<'a>(
    headers: &HeaderMap,
    form: &'a Form<'a>,
    certificate: Option<&'a ClientCertificate>,
) -> Result<Presented<'a>, OAuthError> {
    let basic = basic_credentials(headers)?;
    let post = form.get("client_secret");
    let assertion = form.get("client_assertion");
    let assertion_type = form.get("client_assertion_type");
    let methods = usize::from(basic.is_some())
        + usize::from(post.is_some())
        + usize::from(assertion.is_some() || assertion_type.is_some());
    if methods > 1 {
        return Err(OAuthError::invalid_request(
            "more than one client authentication method",
        ));
    }
    let form_id = form.get("client_id");
    let id_matches = |id: &str| {
        if form_id.is_some_and(|f| f != id) {
            Err(OAuthError::invalid_client(
                "client_id does not match the authenticated client",
            ))
        } else {
            Ok(())
        }
    };
    if let Some((id, secret)) = basic {
        id_matches(&id)?;
        return Ok(Presented::Secret {
            id,
            secret,
            method: AuthMethod::ClientSecretBasic,
        });
    }
    if let Some(secret) = post {
        let id = form_id.ok_or_else(|| OAuthError::invalid_client("client_id is missing"))?;
        return Ok(Presented::Secret {
            id: id.to_owned(),
            secret: secret.to_owned(),
            method: AuthMethod::ClientSecretPost,
        });
    }
    if assertion.is_some() || assertion_type.is_some() {
        let (Some(jwt), Some(JWT_BEARER)) = (assertion, assertion_type) else {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion_type must be {JWT_BEARER}, with a client_assertion"
            )));
        };
        // The client it claims to be (`sub`, RFC 7523 §3), read before it is verified: only
        // to find whose keys verify it.
        let id = unverified_subject(jwt)
            .ok_or_else(|| OAuthError::invalid_client("the client assertion is malformed"))?;
        id_matches(&id)?;
        return Ok(Presented::Assertion { id, jwt });
    }
    match (form_id, certificate) {
        (Some(id), Some(certificate)) => Ok(Presented::Certificate { id, certificate }),
        _ => Err(OAuthError::invalid_client(
            "client authentication is required",
        )),
    }
}

/// The `sub` of a JWT, unverified.
fn unverified_subject(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("sub")?.as_str().map(str::to_owned)
}

/// Credentials in a Basic `Authorization` header, form-urldecoded (OA-03).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(v) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    let v = v
        .to_str()
        .map_err(|_| OAuthError::invalid_client("malformed Authorization header"))?;
    let Some((scheme, rest)) = v.split_once(' ') else {
        return Err(OAuthError::invalid_client("malformed Authorization header"));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "unsupported authentication scheme",
        ));
    }
    let raw = STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    let (id, secret) = raw
        .split_once(':')
        .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
    let decode = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((decode(id), decode(secret))))
}
