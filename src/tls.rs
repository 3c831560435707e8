//! TLS files: the gateway's listener (`tls:`) and CA bundles. The certificate chain and key are read and checked
//! once, when the engine is built (so `ciba-gateway check` refuses exactly what `serve` would),
//! and both runtimes serve that one certified key: the tower runtime through
//! [`ListenerTls::server_config`], pingora through [`ListenerTls::resolver`].

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
#[cfg(any(feature = "server", feature = "pingora"))]
use rustls::sign::SingleCertAndKey;

use crate::config::{ConfigErrors, Problems, TlsConfig};

/// The listener's certificate and key, loaded. Without a runtime (the layer alone) nothing
/// serves them, but the engine still loads them, so that a bad `tls:` is refused all the same.
#[derive(Debug, Clone)]
#[cfg_attr(not(any(feature = "server", feature = "pingora")), allow(dead_code))]
pub struct ListenerTls {
    certified: Arc<CertifiedKey>,
    /// Ask clients for a certificate (`mtls.request_certificates`).
    request_certificates: bool,
}

impl ListenerTls {
    /// Loads `tls.cert_file` and `tls.key_file` (ring keys; the key must match the
    /// certificate); problems are reported under those paths.
    pub fn load(cfg: &TlsConfig, request_certificates: bool) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::new();
        let certs = problems.take("tls.cert_file", pem_certificates(&cfg.cert_file));
        let key = problems.take(
            "tls.key_file",
            PrivateKeyDer::from_pem_file(&cfg.key_file)
                .map_err(|e| format!("{}: {e}", cfg.key_file.display())),
        );
        let certified = match (certs, key) {
            (Some(certs), Some(key)) => problems.take(
                "tls.key_file",
                CertifiedKey::from_der(certs, key, &rustls::crypto::ring::default_provider())
                    .map_err(|e| format!("does not fit the certificate: {e}")),
            ),
            _ => None,
        };
        match certified {
            Some(c) => problems.finish(|| Self {
                certified: Arc::new(c),
                request_certificates,
            }),
            None => Err(problems.finish(|| ()).expect_err("a problem was recorded")),
        }
    }

    /// The certificate for every handshake (pingora's `TlsSettings::set_cert_resolver`).
    #[cfg(any(feature = "server", feature = "pingora"))]
    pub fn resolver(&self) -> Arc<SingleCertAndKey> {
        Arc::new(SingleCertAndKey::from(Arc::clone(&self.certified)))
    }

    /// A rustls server configuration (ring, TLS 1.2 and 1.3) offering `h2` and `http/1.1` by
    /// ALPN.
    #[cfg(feature = "server")]
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
        let config = match self.client_verifier() {
            Some(v) => config.with_client_cert_verifier(v),
            None => config.with_no_client_auth(),
        };
        let mut config = config.with_cert_resolver(self.resolver());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

#[cfg(any(feature = "server", feature = "pingora"))]
impl ListenerTls {
    /// The verifier that asks for a client certificate without requiring one, when
    /// `mtls.request_certificates` is set (both runtimes use it).
    pub fn client_verifier(&self) -> Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
        self.request_certificates
            .then(|| Arc::new(AnyClientCertificate::new()) as _)
    }
}

/// Asks for a client certificate, requires none, and accepts any chain whose holder proves
/// it has the key (the handshake signature is verified): which certificate identifies which
/// client is the engine's decision (`tls_client_auth` checks the chain against `mtls.ca_file`
/// and the registered subject; `self_signed_tls_client_auth` the client's keys), so that one
/// listener serves every client and clients without a certificate.
#[cfg(any(feature = "server", feature = "pingora"))]
#[derive(Debug)]
struct AnyClientCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

#[cfg(any(feature = "server", feature = "pingora"))]
impl AnyClientCertificate {
    fn new() -> Self {
        Self {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

#[cfg(any(feature = "server", feature = "pingora"))]
impl rustls::server::danger::ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client's TLS certificate chain (leaf first), as its connection presented it or as a
/// trusted load balancer forwarded it (`mtls.header`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate(Arc<[CertificateDer<'static>]>);

impl ClientCertificate {
    /// A chain, leaf first; `None` when it is empty.
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Option<Self> {
        (!chain.is_empty()).then(|| Self(chain.into()))
    }

    /// The client's own certificate (DER).
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.0[0]
    }

    /// The certificates after the leaf.
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.0[1..]
    }

    /// The SHA-256 thumbprint of the leaf, base64url: `x5t#S256` (RFC 8705 §3.1).
    pub fn thumbprint(&self) -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(self.leaf().as_ref()))
    }

    /// A certificate forwarded in a header: URL-encoded PEM (nginx's
    /// `$ssl_client_escaped_cert`, Envoy's `Cert="…"`), or one base64 DER certificate
    /// (`:…:` in RFC 9440's `Client-Cert`, or bare).
    pub(crate) fn from_header(value: &str) -> Option<Self> {
        use base64::Engine as _;
        let value = value.trim();
        let value = value
            .strip_prefix("Cert=\"")
            .and_then(|v| v.split('"').next())
            .unwrap_or(value);
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()?;
        if decoded.contains("-----BEGIN") {
            let chain = CertificateDer::pem_slice_iter(decoded.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            return Self::new(chain);
        }
        let b64 = decoded.trim_matches(':');
        let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        Self::new(vec![CertificateDer::from(der)])
    }
}

/// The certificates of a PEM file (a certificate chain, `upstream.ca_file`, a notification
/// CA): at least one, or why not.
pub fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}
