//! The built-in approval page (quickstart / `log` channel): a one-time link shows the client's
//! name, the binding message and the scopes with Approve and Deny (`pages.rs` renders it and
//! guards its form); with `approval.mode: upstream`, approving first needs a login at the
//! provider (`upstream_login.rs`).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};

use super::decide::Decisions;
use super::pages::{COOKIE, Pages, Shown, cookie_value, record_choice};
use super::upstream_login::UpstreamLogin;
use super::{EngineRequest, Shared};
use crate::clients::ClientRegistry;
use crate::clock::Clock;
use crate::protocol::random_token;
use crate::store::{Approval, PendingStore, Store};

/// The approval pages' dependencies: the store the link's request is read from, the decisions,
/// and, with `approval.mode: upstream`, the login at the provider that approving needs.
pub(super) struct ApprovalPages {
    clock: Arc<dyn Clock>,
    store: Arc<Store>,
    clients: Arc<ClientRegistry>,
    pages: Arc<Pages>,
    decisions: Arc<Decisions>,
    login: Option<Arc<UpstreamLogin>>,
}

impl ApprovalPages {
    pub(super) fn new(
        shared: &Shared,
        decisions: &Arc<Decisions>,
        login: Option<Arc<UpstreamLogin>>,
    ) -> Self {
        Self {
            clock: Arc::clone(&shared.clock),
            store: Arc::clone(&shared.store),
            clients: Arc::clone(&shared.clients),
            pages: Arc::clone(&shared.pages),
            decisions: Arc::clone(decisions),
            login,
        }
    }

    pub(super) async fn handle(&self, req: &EngineRequest) -> Response<Bytes> {
        let handle = req.uri.path().rsplit('/').next().unwrap_or_default();
        let upstream_mode = self.login.is_some();
        let now = self.clock.now_ms();
        let gone = || self.pages.gone();
        match req.method {
            Method::GET => {
                let pending = match self.store.view(handle, now).await {
                    Ok(Some(p)) => p,
                    Ok(None) => return gone(),
                    Err(e) => return self.pages.unavailable(&e),
                };
                if let Some(login) = &self.login
                    && req.uri.query() == Some("login")
                {
                    return login.start(&pending).await;
                }
                let cookie = random_token();
                let csrf = self.pages.csrf_token(handle, &cookie);
                let continue_url =
                    upstream_mode.then(|| format!("{}?login", self.pages.link_for(handle)));
                let client = self.clients.get(&pending.client_id).await;
                let client_name = client
                    .as_deref()
                    .map_or(pending.client_id.as_str(), |c| &c.name);
                let shown = Shown {
                    csrf: &csrf,
                    continue_url: continue_url.as_deref(),
                    form_action: "",
                    signed_in_as: None,
                };
                let mut resp = self.pages.approval_page(&pending, client_name, now, shown);
                let set = format!(
                    "{COOKIE}={cookie}; Path={}; Max-Age={}; HttpOnly; SameSite=Strict{}",
                    req.uri.path(),
                    pending.expires_at_ms.saturating_sub(now) / 1000 + 1,
                    if self.pages.secure_cookie {
                        "; Secure"
                    } else {
                        ""
                    }
                );
                if let Ok(v) = HeaderValue::from_str(&set) {
                    resp.headers_mut().insert(header::SET_COOKIE, v);
                }
                resp
            }
            Method::POST => {
                let Some(form) = self.pages.form(req) else {
                    return self.pages.unreadable_form();
                };
                let cookie = cookie_value(&req.headers, COOKIE).unwrap_or("");
                if cookie.is_empty()
                    || !self
                        .pages
                        .csrf_ok(handle, cookie, form.get("csrf").unwrap_or(""))
                {
                    return self.pages.message(
                        StatusCode::FORBIDDEN,
                        "This form has expired",
                        "Open the link again to approve or deny the request.",
                    );
                }
                // With upstream approval, approving needs a bound login: only Deny is here.
                let approval = (!upstream_mode).then(|| Approval {
                    auth_time: now / 1000,
                    ..Approval::default()
                });
                record_choice(
                    &self.pages,
                    &self.decisions,
                    handle,
                    form.get("decision"),
                    approval,
                    crate::audit::Via::Page,
                )
                .await
            }
            _ => self.pages.message(
                StatusCode::METHOD_NOT_ALLOWED,
                "Not allowed",
                "Use the link you received.",
            ),
        }
    }
}
