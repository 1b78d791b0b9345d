//! TLS for the harness's connections: building a rustls client
//! configuration from PEM files, and the non-blocking record I/O the
//! connection's pipeline drives.
//!
//! Reading: rustls pulls at most 4 KiB per `read_tls`, so reading it
//! straight from the socket would cost a system call per 4 KiB of a fetch
//! response. [`ReadAhead`] reads up to [`READ_AHEAD`] bytes per call and
//! hands rustls slices of them: one more copy of each byte, 64 times fewer
//! system calls on a large fetch.

use super::TlsSettings;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedCipherSuite,
    SupportedProtocolVersion,
};
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes read from the socket at once for rustls.
pub const READ_AHEAD: usize = 256 * 1024;
/// rustls's limit on encrypted bytes waiting for the socket: as much as
/// one `writev` of the plaintext path takes, so a Produce request of a few
/// batches is encrypted in one pass.
pub const SEND_BUFFER_LIMIT: usize = 256 * 1024;

/// Where the system keeps its CA bundle, as OpenSSL looks for it on
/// Debian/Ubuntu, Fedora/RHEL, openSUSE and Alpine. `SSL_CERT_FILE`, when
/// set, comes first.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A PEM source: a file, or the PEM text itself (`ssl.ca.pem`,
/// `ssl.truststore.certificates`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

impl Pem {
    fn text(&self) -> Result<String, String> {
        match self {
            Pem::File(p) => {
                std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            }
            Pem::Inline(s) => Ok(s.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Pem::File(p) => p.display().to_string(),
            Pem::Inline(_) => "inline PEM".to_string(),
        }
    }
}

/// The CA bundle the system keeps, if one of the usual places has one.
pub fn system_bundle() -> Option<PathBuf> {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    env.into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Every certificate in a PEM source; an error when there is none.
pub fn certificates(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = pem.text()?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", pem.describe()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no `BEGIN CERTIFICATE` section (JKS and PKCS#12 stores are not read; \
             export the certificates as PEM)",
            pem.describe()
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM source (PKCS#8, PKCS#1 or SEC1), or an
/// encrypted PKCS#8 key (`BEGIN ENCRYPTED PRIVATE KEY`) decrypted with
/// `password` (`ssl.key.password`). A password for a key that is not
/// encrypted is refused rather than ignored.
pub fn private_key(pem: &Pem, password: Option<&str>) -> Result<PrivateKeyDer<'static>, String> {
    const ENCRYPTED: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
    let text = pem.text()?;
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "{}: the key is encrypted the legacy OpenSSL way, which is not read; \
             `openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY -out NEW` re-encrypts it as \
             PKCS#8",
            pem.describe()
        ));
    }
    match (text.find(ENCRYPTED), password) {
        (Some(at), Some(pw)) => return decrypt_pkcs8(&text[at..], pw, pem),
        (Some(_), None) => {
            return Err(format!(
                "{}: the key is encrypted; give its password in ssl.key.password",
                pem.describe()
            ))
        }
        (None, Some(_)) => {
            return Err(format!(
                "{}: ssl.key.password is given but the key is not encrypted",
                pem.describe()
            ))
        }
        (None, None) => {}
    }
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| {
        format!(
            "{}: no PEM private key (PKCS#8, RSA or EC): {e}",
            pem.describe()
        )
    })
}

/// Decrypts the encrypted PKCS#8 key at the start of `text` (PBES2, as
/// `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes it; PBKDF2 or scrypt,
/// AES-CBC). Errors never hold the password.
fn decrypt_pkcs8(text: &str, password: &str, pem: &Pem) -> Result<PrivateKeyDer<'static>, String> {
    use pkcs8::der::Decode;
    const END: &str = "-----END ENCRYPTED PRIVATE KEY-----";
    let end = text
        .find(END)
        .ok_or_else(|| format!("{}: the encrypted key has no END line", pem.describe()))?;
    let (label, der) = pkcs8::der::pem::decode_vec(&text.as_bytes()[..end + END.len()])
        .map_err(|e| format!("{}: the encrypted key is not PEM: {e}", pem.describe()))?;
    debug_assert_eq!(label, "ENCRYPTED PRIVATE KEY");
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(&der)
        .map_err(|e| format!("{}: not an encrypted PKCS#8 key: {e}", pem.describe()))?;
    let plain = info.decrypt(password).map_err(|e| {
        format!(
            "{}: the key does not decrypt with ssl.key.password (wrong password, or an \
             unsupported scheme: {e})",
            pem.describe()
        )
    })?;
    Ok(PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into()))
}

/// What a TLS client configuration is built from.
pub struct TlsSources {
    /// `None`: the system's CA bundle.
    pub ca: Option<Pem>,
    /// Certificate chain and key for mutual TLS.
    pub identity: Option<(Pem, Pem)>,
    /// `ssl.key.password`: the key's, when it is encrypted.
    pub key_password: Option<String>,
    pub verify_hostname: bool,
    /// `ssl.enabled.protocols`; `None`: TLS 1.2 and 1.3.
    pub protocols: Option<Vec<&'static SupportedProtocolVersion>>,
    /// `ssl.cipher.suites`; `None`: rustls's defaults.
    pub suites: Option<Vec<SupportedCipherSuite>>,
}

/// Which of the sources an error is about, so the workload can name the key.
#[derive(Debug)]
pub enum TlsBuildError {
    Ca(String),
    Certificate(String),
    Key(String),
    /// The protocols and cipher suites leave nothing to offer.
    Protocols(String),
}

/// Builds the rustls configuration: ring's cryptography, the protocol
/// versions and cipher suites given (TLS 1.2 and 1.3 and rustls's default
/// suites otherwise), the given CAs, the optional client identity.
pub fn build(src: &TlsSources) -> Result<TlsSettings, TlsBuildError> {
    // ring rather than aws-lc-rs: no cmake or C toolchain for aws-lc to
    // build. Its provider lacks post-quantum key exchange (hence the
    // deprecation), which a benchmark client does not need.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suites) = &src.suites {
        provider.cipher_suites = suites.clone();
    }
    let provider = Arc::new(provider);
    let versions = src.protocols.as_deref().unwrap_or(rustls::DEFAULT_VERSIONS);
    // Checked before any file is read: a combination that offers nothing
    // is wrong whatever the certificates.
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| {
            TlsBuildError::Protocols(format!(
                "no cipher suite given serves the protocols enabled: {e}"
            ))
        })?;
    let (ca_pem, ca) = match &src.ca {
        Some(pem) => (pem.clone(), pem.describe()),
        None => {
            let p = system_bundle().ok_or_else(|| {
                TlsBuildError::Ca(
                    "no CA given and no system CA bundle found (looked at SSL_CERT_FILE and \
                     /etc/ssl/certs/ca-certificates.crt and the like); give ssl.ca.location"
                        .to_string(),
                )
            })?;
            (
                Pem::File(p.clone()),
                format!("system bundle {}", p.display()),
            )
        }
    };
    let mut roots = RootCertStore::empty();
    let (added, _ignored) =
        roots.add_parsable_certificates(certificates(&ca_pem).map_err(TlsBuildError::Ca)?);
    if added == 0 {
        return Err(TlsBuildError::Ca(format!(
            "{ca}: none of its certificates is a usable CA certificate"
        )));
    }
    let roots = Arc::new(roots);
    let builder = if src.verify_hostname {
        builder.with_root_certificates(roots)
    } else {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| TlsBuildError::Ca(e.to_string()))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyHostName { inner }))
    };
    let (config, client_certificate) = match &src.identity {
        None => (builder.with_no_client_auth(), None),
        Some((chain, key)) => {
            let certs = certificates(chain).map_err(TlsBuildError::Certificate)?;
            let key = private_key(key, src.key_password.as_deref()).map_err(TlsBuildError::Key)?;
            let config = builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsBuildError::Key(format!("does not fit the certificate: {e}")))?;
            (config, Some(chain.describe()))
        }
    };
    let names = |v: Vec<String>| v.join(",");
    Ok(TlsSettings {
        ca,
        client_certificate,
        verify_hostname: src.verify_hostname,
        protocols: src.protocols.as_ref().map(|v| {
            names(
                v.iter()
                    .map(|p| format!("{:?}", p.version).replace("TLSv1_", "TLSv1."))
                    .collect(),
            )
        }),
        cipher_suites: src.suites.as_ref().map(|v| {
            names(
                v.iter()
                    .map(sluice_engine::security::tls::suite_name)
                    .collect(),
            )
        }),
        config: Arc::new(config),
    })
}

/// `ssl.endpoint.identification.algorithm=` (empty): the chain must lead
/// to a trusted CA and be valid now, but may name any host, as Kafka's
/// clients do with hostname checking off.
#[derive(Debug)]
struct AnyHostName {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Bytes read from the socket ahead of rustls.
pub struct ReadAhead {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Default for ReadAhead {
    fn default() -> Self {
        ReadAhead {
            buf: vec![0u8; READ_AHEAD].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
}

impl ReadAhead {
    /// A reader for rustls's `read_tls`: buffered bytes first, else one
    /// large read from `stream` (its errors, WouldBlock included, pass
    /// through).
    pub fn over<'a>(&'a mut self, stream: &'a TcpStream) -> impl Read + 'a {
        Ahead {
            ahead: self,
            stream,
        }
    }
}

struct Ahead<'a> {
    ahead: &'a mut ReadAhead,
    stream: &'a TcpStream,
}

impl Read for Ahead<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let a = &mut *self.ahead;
        if a.start == a.end {
            let mut s = self.stream;
            let n = s.read(&mut a.buf)?;
            a.start = 0;
            a.end = n;
            if n == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(a.end - a.start);
        out[..n].copy_from_slice(&a.buf[a.start..a.start + n]);
        a.start += n;
        Ok(n)
    }
}

/// The name a broker's certificate is checked against: the host as given
/// (`--bootstrap`) or advertised (Metadata), a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("`{host}` is not a DNS name or IP address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn encrypted_keys_without_a_password_are_refused_by_name() {
        let pem = Pem::Inline(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"
                .into(),
        );
        let e = private_key(&pem, None).unwrap_err();
        assert!(
            e.contains("encrypted") && e.contains("ssl.key.password"),
            "{e}"
        );
    }

    /// A key encrypted by `openssl pkcs8 -topk8 -v2 aes-256-cbc` decrypts
    /// to the key it was made from; a wrong password, a missing one, and
    /// one given for a plain key are refused.
    #[test]
    fn a_pkcs8_key_encrypted_by_openssl_decrypts_with_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let plain = dir.path().join("plain.pem");
        let encrypted = dir.path().join("encrypted.pem");
        std::fs::write(&plain, key.serialize_pem()).unwrap();
        let status = std::process::Command::new("openssl")
            .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout"])
            .arg("pass:key-pass word")
            .arg("-in")
            .arg(&plain)
            .arg("-out")
            .arg(&encrypted)
            .status()
            .expect("openssl runs");
        assert!(status.success());
        let pem = Pem::File(encrypted);
        let got = private_key(&pem, Some("key-pass word")).unwrap();
        assert_eq!(got.secret_der(), key.serialize_der().as_slice());
        let e = private_key(&pem, Some("not-the-pass")).unwrap_err();
        assert!(e.contains("does not decrypt"), "{e}");
        assert!(!e.contains("not-the-pass"), "{e}");
        assert!(private_key(&pem, None)
            .unwrap_err()
            .contains("ssl.key.password"));
        let e = private_key(&Pem::File(plain), Some("x")).unwrap_err();
        assert!(e.contains("not encrypted"), "{e}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let e = certificates(&Pem::Inline("not a certificate".into())).unwrap_err();
        assert!(e.contains("BEGIN CERTIFICATE"), "{e}");
        let e = certificates(&Pem::File("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(e.contains("cannot read /nonexistent/ca.pem"), "{e}");
    }

    /// rustls asks for a few KiB at a time; the read-ahead hands out what
    /// one large read brought, in order, before reading again.
    #[test]
    fn read_ahead_serves_small_reads_from_one_large_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        writer.write_all(&sent).unwrap();
        drop(writer);
        let mut ahead = ReadAhead::default();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = ahead.over(&reader).read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= chunk.len());
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, sent);
    }
}
