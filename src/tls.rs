//! TLS files: the gateway's listener (`tls:`) and CA bundles. The certificate chain and key are read and checked
//! once, when the engine is built (so `ciba-gateway check` refuses exactly what `serve` would),
//! and both runtimes serve that one certified key: the tower runtime through
//! [`ListenerTls::server_config`], pingora through [`ListenerTls::resolver`].

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};

use crate::config::{ConfigErrors, Problems, TlsConfig};

/// The listener's certificate and key, loaded.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    certified: Arc<CertifiedKey>,
}

impl ListenerTls {
    /// Loads `tls.cert_file` and `tls.key_file` (ring keys; the key must match the
    /// certificate); problems are reported under those paths.
    pub fn load(cfg: &TlsConfig) -> Result<Self, ConfigErrors> {
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
            }),
            None => Err(problems.finish(|| ()).expect_err("a problem was recorded")),
        }
    }

    /// The certificate for every handshake (pingora's `TlsSettings::set_cert_resolver`).
    pub fn resolver(&self) -> Arc<SingleCertAndKey> {
        Arc::new(SingleCertAndKey::from(Arc::clone(&self.certified)))
    }

    /// A rustls server configuration (ring, TLS 1.2 and 1.3) offering `h2` and `http/1.1` by
    /// ALPN.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(self.resolver());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
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
