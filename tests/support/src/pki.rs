//! A throwaway CA and a server certificate for localhost / 127.0.0.1, as PEM files and DER.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub struct Pki {
    pub dir: std::path::PathBuf,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    ca: Issuer<'static, KeyPair>,
}

/// A client's certificate and key (mutual TLS, RFC 8705).
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    /// The public key as a JWK with the certificate in `x5c` (for
    /// `self_signed_tls_client_auth`, where the client registers it in its keys).
    pub jwk: serde_json::Value,
}

impl ClientCert {
    fn new(cert: &rcgen::Certificate, key: &KeyPair) -> Self {
        use base64::Engine as _;
        let raw = key.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "use": "sig",
                "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
                "x5c": [base64::engine::general_purpose::STANDARD.encode(cert.der())],
            }),
        }
    }

    /// The certificate as a TLS-terminating load balancer forwards it (nginx's
    /// `$ssl_client_escaped_cert`: the PEM, URL-encoded).
    pub fn header_value(&self) -> String {
        self.cert_pem
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// Its RFC 8705 thumbprint: base64url(SHA-256(DER)).
    pub fn thumbprint(&self) -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&self.der))
    }

    /// Writes the certificate and its key as PEM files into `dir`; returns their paths.
    pub fn write(&self, dir: &std::path::Path, name: &str) -> (String, String) {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert.display().to_string(), key.display().to_string())
    }

    /// A reqwest identity presenting this certificate.
    pub fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.cert_pem, self.key_pem).as_bytes())
            .unwrap()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("ciba-gw-pki-{}", crate::random_token()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "ciba-gateway test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), leaf_cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
        Self {
            dir,
            cert_der: leaf_cert.der().to_vec(),
            key_der: leaf_key.serialize_der(),
            ca: issuer,
        }
    }

    /// An HTTPS client that trusts this CA, presenting `cert` when given (mutual TLS).
    pub fn https_client(&self, cert: Option<&ClientCert>) -> reqwest::Client {
        ciba_gateway::install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.dir.join("ca.pem")).unwrap())
            .unwrap();
        let mut b = reqwest::Client::builder().add_root_certificate(ca);
        if let Some(c) = cert {
            b = b.identity(c.identity());
        }
        b.build().unwrap()
    }

    /// A client certificate issued by this CA with subject `CN=<cn>, O=Example Bank` and the
    /// DNS name `<cn>.clients.example` (for `tls_client_auth`).
    pub fn client_cert(&self, cn: &str) -> ClientCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![format!("{cn}.clients.example")]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example Bank");
        let cert = params.signed_by(&key, &self.ca).unwrap();
        ClientCert::new(&cert, &key)
    }

    /// A self-signed client certificate (for `self_signed_tls_client_auth`).
    pub fn self_signed_client(cn: &str) -> ClientCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        ClientCert::new(&cert, &key)
    }

    pub fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    /// A rustls acceptor presenting the server certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        ciba_gateway::install_crypto_provider();
        let cfg = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .unwrap();
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS listener presenting the test CA's server certificate, for `axum::serve`: the
/// handshake happens in `accept`, and a failed one is skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl Pki {
    /// Serves `app` over HTTPS (this CA's certificate for localhost) on an ephemeral port of
    /// 127.0.0.1; returns the port.
    pub async fn serve_https(&self, app: axum::Router) -> u16 {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let listener = TlsListener {
            tcp,
            acceptor: self.acceptor(),
        };
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }
}
