//! The machinery of the gateway's HTML pages (the built-in approval page and the consent step
//! after an upstream login): rendering, the signed double-submit CSRF token, the cookie, and
//! recording a choice made on a page. The page is `no-store`, unframeable, and under a strict
//! CSP.

use askama::Template;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderValue, Response, StatusCode, header};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::EngineRequest;
use super::decide::Decisions;
use crate::audit::Via;
use crate::config::{Config, ConfigErrors, Problems, required_reference};
use crate::protocol::Form;
use crate::store::{Approval, Decision, PendingRequest, ResolveError};

/// The CSRF cookie's name.
pub(super) const COOKIE: &str = "ciba_csrf";

/// The page's only style sheet, inline and allowed by its hash in the CSP.
const STYLE: &str = "body{font-family:system-ui,-apple-system,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}\
main{max-width:28rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:12px;box-shadow:0 1px 4px rgba(0,0,0,.12)}\
h1{font-size:1.3rem;margin-top:0}.msg{font-size:1.6rem;font-weight:600;padding:.8rem;border:2px dashed #4a6cf7;border-radius:8px;text-align:center;word-break:break-word}\
ul{padding-left:1.2rem}.row{display:flex;gap:.8rem;margin-top:1.5rem}\
button{flex:1;font-size:1.1rem;padding:.9rem;border-radius:8px;border:0;cursor:pointer}\
.ok{background:#1f8f4e;color:#fff}a.button{flex:1;font-size:1.1rem;padding:.9rem;border-radius:8px;text-align:center;text-decoration:none}.no{background:#e4e6eb;color:#1d2330}.small{color:#5b6270;font-size:.9rem}";

/// The page's only script: a countdown from the seconds left when the page was served (not the
/// server's clock, so skew does not matter). Allowed by its hash in the CSP.
const SCRIPT: &str = "(function(){var e=document.getElementById('countdown');if(!e)return;\
var end=Date.now()+1000*Number(e.getAttribute('data-seconds'));\
function tick(){var s=Math.max(0,Math.round((end-Date.now())/1000));\
e.textContent=s>0?Math.floor(s/60)+':'+String(s%60).padStart(2,'0'):'no time: the request has expired';\
if(s>0)setTimeout(tick,1000);}tick();})();";

#[derive(Template)]
#[template(path = "approve.html")]
struct ApprovePage<'a> {
    style: &'a str,
    script: &'a str,
    seconds_left: u64,
    form_action: &'a str,
    continue_url: Option<&'a str>,
    signed_in_as: Option<&'a str>,
    client_name: &'a str,
    binding_message: Option<&'a str>,
    scopes: Vec<&'a str>,
    minutes_left: u64,
    csrf: &'a str,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    style: &'a str,
    title: &'a str,
    text: &'a str,
}

/// Keys and headers of the approval pages.
pub struct Pages {
    csrf_key: [u8; 32],
    csp: HeaderValue,
    base: String,
    pub(super) secure_cookie: bool,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Pages {
    /// Page settings for a configuration. The CSRF key is `approval.csrf_key` (loaded here; a
    /// problem is reported under that path), else random per process.
    pub fn new(cfg: &Config, paths: &super::Paths) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::new();
        let csrf_key = match &cfg.approval.csrf_key {
            Some(r) => {
                let key = required_reference(r).and_then(|s| {
                    if s.expose().len() < 32 {
                        Err("must be at least 32 characters".to_owned())
                    } else {
                        Ok(Sha256::digest(s.expose().as_bytes()).into())
                    }
                });
                problems.take("approval.csrf_key", key).unwrap_or_default()
            }
            None => {
                let mut k = [0u8; 32];
                rand::rng().fill_bytes(&mut k);
                k
            }
        };
        let style = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        let script = STANDARD.encode(Sha256::digest(SCRIPT.as_bytes()));
        let csp = format!(
            "default-src 'none'; style-src 'sha256-{style}'; script-src 'sha256-{script}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        );
        problems.finish(|| Self {
            csrf_key,
            csp: HeaderValue::from_str(&csp).expect("an ASCII header"),
            base: cfg.url_for(&paths.approval),
            secure_cookie: cfg.public_url.scheme() == "https",
        })
    }

    /// The one-time link for a request's approval handle.
    pub fn link_for(&self, handle: &str) -> String {
        format!("{}/{}", self.base, handle)
    }

    /// A CSRF token bound to `scope` (a handle, or `consent`) and a cookie value.
    pub(super) fn csrf_token(&self, handle: &str, cookie: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.csrf_key).expect("any key length");
        mac.update(handle.as_bytes());
        mac.update(b".");
        mac.update(cookie.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn html(&self, status: StatusCode, body: String) -> Response<Bytes> {
        let mut r = Response::new(Bytes::from(body));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // The link is a bearer secret: never leak it in a Referer.
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        r
    }

    /// Whether `presented` is the CSRF token for `scope` and `cookie` (constant time).
    pub(super) fn csrf_ok(&self, scope: &str, cookie: &str, presented: &str) -> bool {
        let expected = self.csrf_token(scope, cookie);
        bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// The form of a page's POST: a UTF-8 form body, or `None`.
    pub(super) fn form<'a>(&self, req: &'a EngineRequest) -> Option<Form<'a>> {
        crate::protocol::form::require_form_content_type(&req.headers).ok()?;
        Form::parse(&req.body).ok()
    }

    /// The page for a POST that is not a readable form.
    pub(super) fn unreadable_form(&self) -> Response<Bytes> {
        self.message(
            StatusCode::BAD_REQUEST,
            "This form could not be read",
            "Open the link again and use the buttons.",
        )
    }

    /// The page for a link or session that was used, denied or has expired.
    pub(super) fn gone(&self) -> Response<Bytes> {
        self.message(
            StatusCode::NOT_FOUND,
            "This link is no longer valid",
            "It has been used already or has expired. Nothing was approved.",
        )
    }

    /// The page while the store cannot be reached: nothing was decided; the link still works.
    pub(super) fn unavailable(&self, e: &crate::store::StoreError) -> Response<Bytes> {
        tracing::error!(error = %e, "the store failed behind an approval page");
        let mut page = self.message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Please try again in a moment",
            "The service is briefly unavailable. Nothing was approved; the link still works.",
        );
        page.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("2"),
        );
        page
    }

    pub(super) fn message(&self, status: StatusCode, title: &str, text: &str) -> Response<Bytes> {
        let page = MessagePage {
            style: STYLE,
            title,
            text,
        };
        self.html(status, page.render().unwrap_or_else(|_| title.to_owned()))
    }
}

pub(super) fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What an approval page shows besides the request itself.
pub(super) struct Shown<'a> {
    /// The CSRF token the form carries.
    pub(super) csrf: &'a str,
    /// With a URL: a "Continue" link to sign in first, and only Deny on this page.
    pub(super) continue_url: Option<&'a str>,
    /// Where the form posts (empty: the same URL).
    pub(super) form_action: &'a str,
    /// Who signed in at the provider, if anyone.
    pub(super) signed_in_as: Option<&'a str>,
}

impl Pages {
    /// The approval page for `pending` from client `client_name`, at `now_ms`.
    pub(super) fn approval_page(
        &self,
        pending: &PendingRequest,
        client_name: &str,
        now_ms: u64,
        shown: Shown<'_>,
    ) -> Response<Bytes> {
        let remaining_ms = pending.expires_at_ms.saturating_sub(now_ms);
        let page = ApprovePage {
            style: STYLE,
            script: SCRIPT,
            seconds_left: remaining_ms / 1000,
            form_action: shown.form_action,
            continue_url: shown.continue_url,
            signed_in_as: shown.signed_in_as,
            client_name,
            binding_message: pending.binding_message.as_deref(),
            scopes: pending.scope.iter().collect(),
            minutes_left: remaining_ms.div_ceil(60_000),
            csrf: shown.csrf,
        };
        match page.render() {
            Ok(body) => self.html(StatusCode::OK, body),
            Err(_) => self.message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Please try again.",
            ),
        }
    }
}

/// Records a choice made on a page: `approve` (when `approval` is given) or `deny`, once.
pub(super) async fn record_choice(
    pages: &Pages,
    decisions: &Decisions,
    handle: &str,
    choice: Option<&str>,
    approval: Option<Approval>,
    via: Via,
) -> Response<Bytes> {
    let (decision, title, text) = match (choice, approval) {
        (Some("approve"), Some(a)) => (
            Decision::Approved(a),
            "Approved",
            "You can return to the application that asked.",
        ),
        (Some("deny"), _) => (
            Decision::Denied,
            "Denied",
            "The request was refused. Nothing was shared.",
        ),
        _ => {
            return pages.message(
                StatusCode::BAD_REQUEST,
                "Unknown choice",
                "Please use the buttons.",
            );
        }
    };
    match decisions.decide(handle, decision, via).await {
        Ok(()) => pages.message(StatusCode::OK, title, text),
        Err(ResolveError::NotFound | ResolveError::Expired) => pages.gone(),
        Err(ResolveError::Store(e)) => pages.unavailable(&e),
    }
}
