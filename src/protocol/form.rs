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
    /// Parses a body. Never panics, whatever the bytes. A name or value that is not UTF-8 once
    /// decoded is `invalid_request`: it is never replaced with U+FFFD and accepted.
    pub fn parse(body: &'a [u8]) -> Result<Self, OAuthError> {
        let mut pairs: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::with_capacity(8);
        for segment in body.split(|b| *b == b'&').filter(|s| !s.is_empty()) {
            let (k, v) = match segment.iter().position(|b| *b == b'=') {
                Some(i) => (&segment[..i], &segment[i + 1..]),
                None => (segment, &segment[segment.len()..]),
            };
            let v = decode(v)?;
            if v.is_empty() {
                continue;
            }
            let k = decode(k)?;
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

/// One form-urlencoded name or value: `+` is a space, `%XX` a byte, and the bytes must be
/// UTF-8. Borrows when there is nothing to decode (the usual case on the poll path).
fn decode(raw: &[u8]) -> Result<Cow<'_, str>, OAuthError> {
    let bad = || OAuthError::invalid_request("the form is not valid UTF-8");
    if raw.contains(&b'+') {
        let spaced: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let decoded: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
        return String::from_utf8(decoded)
            .map(Cow::Owned)
            .map_err(|_| bad());
    }
    percent_encoding::percent_decode(raw)
        .decode_utf8()
        .map_err(|_| bad())
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

    // Hostile traffic, item 3: invalid UTF-8 is refused, never replaced and accepted.
    #[test]
    fn invalid_utf8_is_invalid_request() {
        for body in [
            &b"binding_message=%FF%FE"[..],
            b"a=%C3",
            b"a=\xff",
            b"%FF=1",
        ] {
            let e = Form::parse(body).unwrap_err();
            assert_eq!(
                e.code(),
                crate::protocol::ErrorCode::InvalidRequest,
                "{body:?}"
            );
        }
        let f = Form::parse("m=%C3%A9t%C3%A9+%E2%9C%93&n=a+b%2Bc".as_bytes()).unwrap();
        assert_eq!(f.get("m"), Some("été ✓"));
        assert_eq!(f.get("n"), Some("a b+c"));
        assert!(matches!(
            Form::parse(b"k=plain").unwrap().pairs[0].1,
            Cow::Borrowed(_)
        ));
    }

    proptest! {
        // The parser agrees with the url crate's wherever the text is valid UTF-8.
        #[test]
        fn form_parser_agrees_with_form_urlencoded(pairs in proptest::collection::vec(("[a-z]{1,6}", "\\PC{0,12}"), 0..8)) {
            let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
            let mut seen = std::collections::HashSet::new();
            let unique = pairs.iter().filter(|(_, v)| !v.is_empty()).all(|(k, _)| seen.insert(k.clone()));
            match Form::parse(body.as_bytes()) {
                Ok(f) => {
                    prop_assert!(unique);
                    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
                        prop_assert_eq!(f.get(k), Some(v.as_str()));
                    }
                }
                Err(_) => prop_assert!(!unique),
            }
        }

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
