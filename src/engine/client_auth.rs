//! Client authentication as both CIBA endpoints do it (TOK-01): the credentials in the request,
//! the client certificate of its connection (or of a trusted load balancer's header,
//! `mtls.header`), and the `aud` values a client assertion may name (BC-AUTH-04).

use std::sync::Arc;

use super::{EngineRequest, Shared};
use crate::clients::{Client, ClientRegistry, Credentials};
use crate::clock::Clock;
use crate::config::MtlsConfig;
use crate::protocol::{Form, OAuthError};
use crate::store::Store;
use crate::tls::ClientCertificate;

/// What authenticating a client at the CIBA endpoints needs.
pub(super) struct ClientAuth {
    clients: Arc<ClientRegistry>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    paths: Arc<super::Paths>,
    issuer: String,
    origin: String,
    mtls: MtlsConfig,
}

impl ClientAuth {
    pub(super) fn new(shared: &Shared) -> Self {
        Self {
            clients: Arc::clone(&shared.clients),
            store: Arc::clone(&shared.store),
            clock: Arc::clone(&shared.clock),
            paths: Arc::clone(&shared.paths),
            issuer: shared.issuer.clone(),
            origin: shared.cfg.public_url.origin().ascii_serialization(),
            mtls: shared.cfg.mtls.clone(),
        }
    }

    /// The client certificate of the request: its TLS connection's, or the one a trusted load
    /// balancer forwarded in `mtls.header` (from `mtls.trusted_proxies` only; a header from
    /// anyone else is ignored here and removed before anything is forwarded, BCP-05/GW-06).
    pub(super) fn certificate(&self, req: &EngineRequest) -> Option<ClientCertificate> {
        client_certificate(req, &self.mtls)
    }

    /// The gateway's client the request's credentials claim to be, before they are checked
    /// (`None`: none of the gateway's, or no readable credentials).
    pub(super) async fn claims_gateway_client(
        &self,
        req: &EngineRequest,
        form: &Form<'_>,
    ) -> Option<Arc<Client>> {
        let certificate = self.certificate(req);
        self.clients
            .claimed(&Credentials {
                headers: &req.headers,
                form,
                certificate: certificate.as_ref(),
            })
            .await
    }

    /// Authenticates the request's client with its registered method.
    pub(super) async fn authenticate(
        &self,
        req: &EngineRequest,
        form: &Form<'_>,
        certificate: Option<&ClientCertificate>,
    ) -> Result<Arc<Client>, OAuthError> {
        let creds = Credentials {
            headers: &req.headers,
            form,
            certificate,
        };
        // Only an assertion needs these; they are cheap beside verifying one.
        let audiences = if form.has("client_assertion") {
            let shared = self.paths.shared();
            vec![
                self.issuer.clone(),
                format!("{}{}", self.origin, shared.token),
                format!("{}{}", self.origin, self.paths.backchannel),
            ]
        } else {
            Vec::new()
        };
        self.clients
            .authenticate(&creds, self.clock.now_secs(), &audiences, &self.store)
            .await
    }
}

/// The client certificate of `req` under `mtls` (see [`ClientAuth::certificate`]): the one
/// rule, for client authentication, token binding and userinfo's binding check alike.
pub(super) fn client_certificate(
    req: &EngineRequest,
    mtls: &MtlsConfig,
) -> Option<ClientCertificate> {
    if let Some(c) = &req.connection.client_certificate {
        return Some(c.clone());
    }
    let name = mtls.header.as_deref()?;
    let peer = req.connection.peer?.ip();
    if !mtls.trusted_proxies.iter().any(|n| n.contains(&peer)) {
        return None;
    }
    let value = req.headers.get(name)?.to_str().ok()?;
    ClientCertificate::from_header(value)
}
