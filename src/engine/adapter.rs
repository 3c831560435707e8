//! The adapter contract: everything an adapter (the tower layer, the pingora module, a runtime)
//! may ask of the engine, and nothing else. An adapter converts types, moves bytes and asks;
//! if a protocol rule appears in an adapter, it belongs here instead.
//!
//! A request's life in an adapter:
//! 1. [`Engine::route`] (method, path, headers): `None` → pass the request through untouched, with
//!    [`Engine::header_edits`] applied (BCP-05);
//! 2. `Some(route)` → buffer the body: at most [`Engine::max_body_bytes`], within
//!    [`Engine::body_read_timeout`]; failures answered with [`Engine::body_too_large`],
//!    [`Engine::body_timed_out`] or [`Engine::body_unreadable`];
//! 3. [`Engine::handle`] → [`Outcome::Respond`] (send it) or [`Outcome::Forward`] (forward the
//!    very bytes the client sent, with the header edits);
//! 4. a forwarded request that fails → [`Engine::upstream_failure`].
//!
//! Without an upstream, an adapter wrapping a service asks that service for its discovery
//! document when [`Engine::discovery_from_wrapped`] says so and lets
//! [`Engine::wrapped_discovery`] decide what to answer; a standalone runtime answers what the
//! gateway does not serve with [`Engine::not_served`]. A runtime calls [`Engine::warm_up`] as it
//! starts listening and [`Engine::shutdown`] as it starts shutting down.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use super::{Engine, Route};
use crate::protocol::{ErrorCode, OAuthError};
use crate::upstream::HeaderEdits;

/// What to do with the wrapped service's answer to a discovery request
/// ([`Engine::wrapped_discovery`]).
#[derive(Debug)]
pub enum WrappedDiscovery {
    /// Send the service's response as it is (neither 200 nor 404).
    PassThrough,
    /// Send this instead (the gateway's own document when the service has none).
    Replace(Response<Bytes>),
    /// Read the service's body (at most [`WrappedDiscovery::MAX_BYTES`]) and hand it to
    /// [`Engine::merged_discovery`].
    Merge,
}

impl WrappedDiscovery {
    /// The largest discovery document the gateway reads to merge.
    pub const MAX_BYTES: usize = 1 << 20;
}

impl Engine {
    /// Which of the gateway's endpoints a request is for, if any; everything else passes
    /// through. A CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) is never the
    /// gateway's: the gateway has no cross-origin policy of its own, so the preflight goes to
    /// whatever answers CORS behind or around it (a tower-http `CorsLayer`, the provider).
    pub fn route(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Route> {
        if method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        self.paths.route(path, self.has_channel_callback())
    }

    /// The largest body an adapter should buffer for the engine.
    pub fn max_body_bytes(&self) -> usize {
        self.cfg.get().limits.max_body_bytes
    }

    /// How long a request body may take to arrive in full (`limits.body_read_timeout_secs`).
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.get().limits.body_read_timeout_secs)
    }

    /// Whether a buffered token-endpoint body carries the CIBA grant (either spelling). Adapters
    /// use it to decide, before anything else, whether the request is theirs at all.
    pub fn is_ciba_grant(body: &[u8]) -> bool {
        form_urlencoded::parse(body).any(|(k, v)| k == "grant_type" && Self::is_ciba_grant_type(&v))
    }

    /// Whether a `grant_type` value is the CIBA grant (either spelling).
    pub(crate) fn is_ciba_grant_type(value: &str) -> bool {
        value == crate::protocol::GRANT_TYPE_CIBA
            || value == crate::protocol::GRANT_TYPE_CIBA_IETF_ALIAS
    }

    /// The changes a request needs before it is forwarded (BCP-05): untrusted inbound
    /// forwarding and client-certificate headers removed; `Host` and fresh forwarding headers
    /// per the upstream configuration; the gateway's `traceparent` ([`crate::trace`]). `peer` is the address the gateway saw, `tls` whether the
    /// client connection was TLS.
    pub fn header_edits(
        &self,
        headers: &HeaderMap,
        peer: Option<std::net::IpAddr>,
        tls: bool,
    ) -> HeaderEdits {
        let mut edits = match &self.upstream {
            Some(u) => u.header_edits(headers, peer, tls),
            None => HeaderEdits {
                remove: crate::upstream::untrusted_present(headers),
                set: Vec::new(),
            },
        };
        // The trace goes on to the provider: in the caller's trace only if it may choose it,
        // and only then with its `tracestate` (crate::trace).
        let (trace, trusted) = self.forwarded_trace(headers, peer);
        edits
            .set
            .push((crate::trace::TRACEPARENT, trace.traceparent()));
        if !trusted && headers.contains_key(crate::trace::TRACESTATE) {
            edits.remove.push(crate::trace::TRACESTATE);
        }
        // The configured client-certificate header (`mtls.header`) is the gateway's to read,
        // whatever its name: it never reaches the wrapped service or the provider.
        if let Some(name) = &self.cfg.get().mtls.header
            && headers.contains_key(name.as_str())
            && let Ok(name) = http::HeaderName::from_bytes(name.as_bytes())
            && !edits.remove.contains(&name)
        {
            edits.remove.push(name);
        }
        edits
    }

    /// Whether a request on `route` is for the wrapped service's discovery document, which
    /// the adapter must fetch (no upstream is configured, and it is a GET or HEAD of the
    /// discovery path). Ask for it as a GET without `Accept-Encoding`: the gateway must read
    /// the JSON, and a HEAD has no body to merge.
    pub fn discovery_from_wrapped(&self, route: Route, method: &Method) -> bool {
        route == Route::Discovery
            && self.upstream.is_none()
            && (method == Method::GET || method == Method::HEAD)
    }

    /// What to answer once the wrapped service has answered a discovery request with `status`:
    /// its document merged (200), the gateway's own (404), or its response as it is.
    pub fn wrapped_discovery(&self, status: StatusCode) -> WrappedDiscovery {
        match status {
            StatusCode::OK => WrappedDiscovery::Merge,
            StatusCode::NOT_FOUND => WrappedDiscovery::Replace(self.discovery.standalone()),
            _ => WrappedDiscovery::PassThrough,
        }
    }

    /// The wrapped service's discovery document with the CIBA fields added (GW-01), sent with
    /// the service's `headers` re-described as plain JSON; the service's token and userinfo
    /// paths are learned from it. `body` is `None` when it could not be read whole; that, or a
    /// body that is not a JSON object, is a 502.
    pub fn merged_discovery(&self, mut headers: HeaderMap, body: Option<&[u8]>) -> Response<Bytes> {
        let doc = body.and_then(|b| serde_json::from_slice(b).ok());
        let Some(doc) = doc else {
            return OAuthError::new(ErrorCode::ServerError, StatusCode::BAD_GATEWAY)
                .describe("the upstream discovery document is not a JSON object")
                .into_response();
        };
        self.paths.learn(&doc);
        let merged = self.discovery.merge(doc, &self.paths.shared(), false);
        for h in [
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::TRANSFER_ENCODING,
        ] {
            headers.remove(h);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let mut resp = Response::new(merged);
        *resp.headers_mut() = headers;
        resp
    }

    /// The engine's first run-time work, done once (a runtime calls it as it starts listening;
    /// an adapter before routing its first request): reads the provider's discovery, so that
    /// the token and userinfo paths it names are known before the first client is routed (a
    /// provider that is down is logged and read again on the next discovery request); with
    /// push clients, starts this replica's sweep for expired push requests (PUSH-ERR-01). Every caller waits for the one run.
    pub async fn warm_up(&self) {
        self.warmed
            .get_or_init(|| async {
                if self.decisions.has_push_clients() {
                    self.decisions.sweep_expired();
                }
                if let Some(Err(e)) = self.upstream_discovery_document().await {
                    tracing::warn!(error = %e, "the provider's discovery could not be read at start-up; the token and userinfo paths are the defaults until it can");
                }
            })
            .await;
    }

    /// Whether [`Engine::warm_up`] has completed. Until then
    /// an adapter awaits `warm_up` before [`Engine::route`]: a token request that reaches a
    /// replica before it has read the provider's discovery must not be forwarded to the
    /// provider because its token path is not known yet.
    pub fn is_warm(&self) -> bool {
        self.warmed.initialized()
    }

    /// Shuts the engine down: every poll held for long polling is answered now (from the
    /// store as it stands: `authorization_pending` unless the user has decided), and so is
    /// every later one; the shared store's expiry sweep and the push-expiry timers end.
    /// Pending requests stay in the store. Call it when the server starts shutting down, so
    /// that held polls do not hold the shutdown up; calling it again does nothing.
    ///
    /// With axum or hyper-util, [`Engine::shutdown_on`] wraps the shutdown signal for you.
    pub fn shutdown(&self) {
        self.shutdown.trigger();
    }

    /// Wraps a server's shutdown signal: the returned future completes when `signal` does,
    /// after [`Engine::shutdown`]. Hand it to the server's graceful shutdown, so that the
    /// connections it waits for are not held polls:
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # async fn run(engine: Arc<ciba_gateway::Engine>, app: axum::Router) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(engine.shutdown_on(async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     }))
    ///     .await
    /// # }
    /// ```
    pub fn shutdown_on<F>(
        self: &std::sync::Arc<Self>,
        signal: F,
    ) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        F: std::future::Future + Send + 'static,
    {
        let engine = std::sync::Arc::clone(self);
        async move {
            signal.await;
            engine.shutdown();
        }
    }

    /// The answer to a request for one of the gateway's endpoints whose body is over
    /// `limits.max_body_bytes`: 413 in JSON (GW-07).
    pub fn body_too_large(&self) -> Response<Bytes> {
        let mut r = OAuthError::invalid_request("the request body is too large or unreadable")
            .into_response();
        *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        r
    }

    /// The answer to a request for one of the gateway's endpoints whose body could not be read
    /// (a malformed chunked encoding, a connection error): 400 in JSON.
    pub fn body_unreadable(&self) -> Response<Bytes> {
        OAuthError::invalid_request("the request body could not be read").into_response()
    }

    /// The answer to a request whose body did not arrive within [`Engine::body_read_timeout`]:
    /// 408 in JSON, and the connection is not worth keeping.
    pub fn body_timed_out(&self) -> Response<Bytes> {
        let mut r =
            OAuthError::invalid_request("the request body did not arrive in time").into_response();
        *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    }

    /// The answer when a forwarded request fails: 504 on a timeout, 502 otherwise, in JSON.
    pub fn upstream_failure(&self, timeout: bool) -> Response<Bytes> {
        crate::metrics::upstream_error();
        let (status, text) = if timeout {
            (
                StatusCode::GATEWAY_TIMEOUT,
                "the upstream provider did not answer in time",
            )
        } else {
            (
                StatusCode::BAD_GATEWAY,
                "the upstream provider could not be reached",
            )
        };
        OAuthError::new(ErrorCode::ServerError, status)
            .describe(text)
            .into_response()
    }

    /// The standalone gateway's answer for what it does not serve: a token request with another
    /// grant type is `unsupported_grant_type`; a userinfo request with a token not its own is
    /// `invalid_token`; a CORS preflight for one of the gateway's endpoints is 405 (it has no
    /// cross-origin policy); anything else is 404.
    pub fn not_served(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Bytes> {
        if method == Method::OPTIONS
            && self
                .paths
                .route(path, self.has_channel_callback())
                .is_some()
        {
            return OAuthError::new(ErrorCode::InvalidRequest, StatusCode::METHOD_NOT_ALLOWED)
                .describe("this gateway answers no CORS preflight")
                .into_response();
        }
        let shared = self.paths.shared();
        if path == shared.token {
            let e = if method != Method::POST {
                OAuthError::method_not_allowed()
            } else if let Err(e) = crate::protocol::form::require_form_content_type(headers) {
                e
            } else {
                OAuthError::bad_request(ErrorCode::UnsupportedGrantType)
                    .describe("this gateway serves only the CIBA grant and its own refresh tokens")
            };
            return e.into_response();
        }
        if path == shared.userinfo {
            // RFC 6750 §3.1: a request with no token at all gets a challenge, no error code.
            let has_token = headers.contains_key(header::AUTHORIZATION) || method == Method::POST;
            if !has_token {
                let mut r = Response::new(Bytes::new());
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
            return OAuthError::invalid_token("the access token was not issued by this gateway")
                .into_response();
        }
        OAuthError::new(ErrorCode::InvalidRequest, StatusCode::NOT_FOUND)
            .describe("no such endpoint")
            .into_response()
    }
}
