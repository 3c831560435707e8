//! `application/x-www-form-urlencoded` bodies, parsed by the rules of CIBA §7.2 and RFC 6749
//! §3.1: empty values count as absent, a repeated parameter is an error, unknown ones are kept
//! but never looked at.

use std::borrow::Cow;

use http::HeaderMap;

use super::OAuthError;

/// The most parameters a request may carry (GW-07).
pub const MAX_PARAMS: usize = 64;

/// A parsed form body. Lookups are linear: CIBA requests carry a handful of parameters and a
/// vector beats a hash map at that size.
#[derive(Debug, Default)]
pub struct Form<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Form<'a> {
    /// Parses a body. Never panics, whatever the bytes.
    pub fn parse(body: &'a [u8]) -> Result<Self, OAuthError> {
        let mut pairs: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::with_capacity(8);
        for (k, v) in form_urlencoded::parse(body) {
            if v.is_empty() {
                continue;
            }
            if pairs.len() == MAX_PARAMS {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            if pairs.iter().any(|(pk, _)| *pk == k) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter '{}' is repeated",
                    printable(&k)
                )));
            }
            pairs.push((k, v));
        }
        Ok(Self { pairs })
    }

    /// The value of a parameter, if present and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Whether a parameter is present (with a non-empty value).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Checks that a request's `Content-Type` is a UTF-8 form (BC-AUTH-01).
pub fn require_form_content_type(headers: &HeaderMap) -> Result<(), OAuthError> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut parts = ct.split(';');
    let mime = parts.next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    for p in parts {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("charset")
            && !v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        {
            return Err(OAuthError::invalid_request("the form must be UTF-8"));
        }
    }
    Ok(())
}

/// A parameter name made safe to echo in an error description.
fn printable(s: &str) -> String {
    s.chars()
        .take(40)
        .filter(|c| c.is_ascii_graphic())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bc_req_06_empty_values_are_absent_and_repeats_rejected() {
        let f = Form::parse(b"a=1&b=&c=x%20y").unwrap();
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), None);
        assert_eq!(f.get("c"), Some("x y"));
        let e = Form::parse(b"a=1&a=2").unwrap_err();
        assert_eq!(e.code(), crate::protocol::ErrorCode::InvalidRequest);
        // An empty repeat is absent, so not a repeat.
        assert!(Form::parse(b"a=1&a=").is_ok());
    }

    #[test]
    fn gw_07_parameter_count_is_capped() {
        let body: String = (0..=MAX_PARAMS).map(|i| format!("p{i}=v&")).collect();
        assert!(Form::parse(body.as_bytes()).is_err());
    }

    #[test]
    fn bc_auth_01_content_type() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8"
                .parse()
                .unwrap(),
        );
        assert!(require_form_content_type(&h).is_ok());
        h.insert("content-type", "application/json".parse().unwrap());
        assert!(require_form_content_type(&h).is_err());
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded;charset=latin1"
                .parse()
                .unwrap(),
        );
        assert!(require_form_content_type(&h).is_err());
    }

    proptest! {
        #[test]
        fn form_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Form::parse(&body);
        }

        #[test]
        fn form_parser_never_panics_on_formlike_text(body in "[a-z_=&%0-9A-F+]{0,256}") {
            if let Ok(f) = Form::parse(body.as_bytes()) {
                let _ = f.get("scope");
            }
        }
    }
}
