//! TLS settings of a listener and the rustls server configuration built
//! from them.
//!
//! Certificates and keys are PEM only (`ssl.keystore.type=PEM`): a file
//! holding the key and its chain, or both inline. CA certificates for
//! client authentication come the same two ways. Every `ssl.*` key may be
//! set per listener as `listener.name.<listener>.ssl.*`.
//!
//! A [`TlsAcceptor`] keeps the configuration current without a restart:
//! before each handshake it compares the files' modification time and
//! length with what it loaded (two `stat` calls, nothing read), and
//! rebuilds when one changed; SIGHUP rebuilds at once. A file that no
//! longer loads is logged and the last good configuration stays in use,
//! so a half-written certificate cannot take a listener down.

use super::ssl_principal::PrincipalMapper;
use crate::config::{BrokerConfig, ConfigError};
use rustls::crypto::ring as provider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Largest PEM file read (a chain of a few certificates is a few KB).
const PEM_BYTES_MAX: u64 = 1 << 20;

/// Where PEM text comes from.
#[derive(Clone)]
enum Pem {
    File(PathBuf),
    Inline(String),
}

/// Inline PEM may hold a private key: never printed.
impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pem::File(path) => write!(f, "File({})", path.display()),
            Pem::Inline(_) => f.write_str("Inline(..)"),
        }
    }
}

impl Pem {
    fn read(&self, key: &str) -> Result<Vec<u8>, ConfigError> {
        match self {
            Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
            Pem::File(path) => {
                let len = std::fs::metadata(path)
                    .map_err(|e| refused(key, format!("{}: {e}", path.display())))?
                    .len();
                if len > PEM_BYTES_MAX {
                    return Err(refused(
                        key,
                        format!("{}: larger than {PEM_BYTES_MAX} bytes", path.display()),
                    ));
                }
                std::fs::read(path).map_err(|e| refused(key, format!("{}: {e}", path.display())))
            }
        }
    }

    /// Modification time and length of the file, if it is one.
    fn stamp(&self) -> Stamp {
        match self {
            Pem::Inline(_) => None,
            Pem::File(path) => Some(
                std::fs::metadata(path)
                    .map(|m| (m.modified().ok(), m.len()))
                    .unwrap_or((None, 0)),
            ),
        }
    }
}

/// `ssl.client.auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// One listener's TLS settings, checked.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub listener: String,
    /// The key and chain, and the key naming them (for messages).
    keystore: (Pem, Option<Pem>, String),
    truststore: Option<(Pem, String)>,
    pub client_auth: ClientAuth,
    versions: Vec<&'static SupportedProtocolVersion>,
    suites: Vec<SupportedCipherSuite>,
    pub mapper: PrincipalMapper,
}

fn refused(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Refused {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Kafka's (IANA) name of a rustls cipher suite.
pub fn suite_name(s: &SupportedCipherSuite) -> String {
    format!("{:?}", s.suite()).replacen("TLS13_", "TLS_", 1)
}

impl TlsSettings {
    /// Reads listener `listener`'s `ssl.*` settings and loads its
    /// certificates once, so that a mistake is refused at start-up.
    pub fn from_config(config: &BrokerConfig, listener: &str) -> Result<TlsSettings, ConfigError> {
        let get = |k: &'static str| config.listener_setting(listener, k);
        // The keystore keys, and the truststore keys, go together: a
        // listener that sets one of a group takes none of it from the
        // broker-wide keys (an inline key for one listener must not meet
        // the broker's keystore file).
        let group = |keys: &'static [&'static str]| {
            let own = keys
                .iter()
                .any(|k| config.has_listener_setting(listener, k));
            move |k: &'static str| match own {
                true if keys.contains(&k) => config.own_listener_setting(listener, k),
                _ => config.listener_setting(listener, k),
            }
        };
        let keystore = keystore(
            listener,
            &group(&[
                "ssl.keystore.location",
                "ssl.keystore.certificate.chain",
                "ssl.keystore.key",
            ]),
        )?;
        let trust = group(&["ssl.truststore.location", "ssl.truststore.certificates"]);
        let truststore =
            match (
                trust("ssl.truststore.location"),
                trust("ssl.truststore.certificates"),
            ) {
                ((l, lk), (c, _)) if !l.is_empty() && !c.is_empty() => return Err(refused(
                    &lk,
                    "set either ssl.truststore.location or ssl.truststore.certificates, not both",
                )),
                ((l, lk), _) if !l.is_empty() => Some((Pem::File(l.into()), lk)),
                (_, (c, ck)) if !c.is_empty() => Some((Pem::Inline(c), ck)),
                _ => None,
            };
        let (auth, auth_key) = get("ssl.client.auth");
        let client_auth = match auth.as_str() {
            "required" => ClientAuth::Required,
            "requested" => ClientAuth::Requested,
            _ => ClientAuth::None,
        };
        if client_auth != ClientAuth::None && truststore.is_none() {
            return Err(refused(
                &auth_key,
                format!(
                    "listener {listener} asks for client certificates but has no CA certificates to check them (ssl.truststore.location or ssl.truststore.certificates)"
                ),
            ));
        }
        let (rules, rules_key) = get("ssl.principal.mapping.rules");
        let mapper = PrincipalMapper::parse(&rules).map_err(|e| refused(&rules_key, e))?;
        let settings = TlsSettings {
            listener: listener.to_string(),
            keystore,
            truststore,
            client_auth,
            versions: versions(&get("ssl.enabled.protocols"))?,
            suites: suites(&get("ssl.cipher.suites"))?,
            mapper,
        };
        settings.build()?;
        Ok(settings)
    }

    fn stamps(&self) -> Vec<Stamp> {
        let mut v = vec![self.keystore.0.stamp()];
        v.extend(self.keystore.1.as_ref().map(Pem::stamp));
        v.extend(self.truststore.as_ref().map(|t| t.0.stamp()));
        v
    }

    /// The key and chain this listener presents.
    fn chain_and_key(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConfigError> {
        let key_name = &self.keystore.2;
        let text = self.keystore.0.read(key_name)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<_, _>>()
            .map_err(|e| refused(key_name, format!("certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(refused(key_name, "no CERTIFICATE in the PEM"));
        }
        let key_text = match &self.keystore.1 {
            Some(k) => k.read(key_name)?,
            None => text,
        };
        let key = PrivateKeyDer::from_pem_slice(&key_text)
            .map_err(|e| refused(key_name, format!("no usable private key in the PEM: {e}")))?;
        Ok((chain, key))
    }

    /// The CA certificates of the truststore, if one is configured.
    fn roots(&self) -> Result<Option<RootCertStore>, ConfigError> {
        let Some((pem, trust_key)) = &self.truststore else {
            return Ok(None);
        };
        let mut roots = RootCertStore::empty();
        let text = pem.read(trust_key)?;
        for cert in CertificateDer::pem_slice_iter(&text) {
            let cert = cert.map_err(|e| refused(trust_key, format!("PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| refused(trust_key, format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(refused(trust_key, "no CERTIFICATE in the PEM"));
        }
        Ok(Some(roots))
    }

    fn provider(&self) -> Arc<rustls::crypto::CryptoProvider> {
        // ring builds here with nothing but a C compiler (aws-lc-rs needs
        // cmake); its provider lacks the post-quantum key exchange, which
        // no Kafka client offers yet.
        #[allow(deprecated)]
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: self.suites.clone(),
            ..provider::default_provider()
        };
        Arc::new(provider)
    }

    /// Builds the rustls configuration from the current files.
    pub fn build(&self) -> Result<Arc<ServerConfig>, ConfigError> {
        let key_name = &self.keystore.2;
        let (chain, key) = self.chain_and_key()?;
        let provider = self.provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&self.versions)
            .map_err(|e| refused("ssl.cipher.suites", format!("{e}")))?;
        let roots = match self.client_auth {
            ClientAuth::None => None,
            _ => self.roots()?,
        };
        let builder = match roots {
            Some(roots) => {
                let trust_key = self.truststore.as_ref().map_or("", |t| t.1.as_str());
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = match self.client_auth {
                    ClientAuth::Requested => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| refused(trust_key, format!("{e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| refused(key_name, format!("certificate and key: {e}")))?;
        Ok(Arc::new(config))
    }

    /// The configuration a follower uses to fetch over this listener
    /// from another broker: the truststore checks the leader's
    /// certificate, the keystore is this broker's client certificate.
    /// `None` without a truststore (nothing to check a leader against).
    pub fn build_client(&self) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
        let Some(roots) = self.roots()? else {
            return Ok(None);
        };
        let key_name = &self.keystore.2;
        let (chain, key) = self.chain_and_key()?;
        let config = rustls::ClientConfig::builder_with_provider(self.provider())
            .with_protocol_versions(&self.versions)
            .map_err(|e| refused("ssl.cipher.suites", format!("{e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| refused(key_name, format!("certificate and key: {e}")))?;
        Ok(Some(Arc::new(config)))
    }
}

fn keystore(
    listener: &str,
    get: &dyn Fn(&'static str) -> (String, String),
) -> Result<(Pem, Option<Pem>, String), ConfigError> {
    let (location, location_key) = get("ssl.keystore.location");
    let (chain, chain_key) = get("ssl.keystore.certificate.chain");
    let (key, key_key) = get("ssl.keystore.key");
    match (location.is_empty(), chain.is_empty(), key.is_empty()) {
        (false, true, true) => Ok((Pem::File(location.into()), None, location_key)),
        (true, false, false) => Ok((Pem::Inline(chain), Some(Pem::Inline(key)), chain_key)),
        (true, true, true) => Err(refused(
            &location_key,
            format!(
                "listener {listener} uses TLS and has no certificate: set ssl.keystore.location, or ssl.keystore.certificate.chain and ssl.keystore.key"
            ),
        )),
        (false, _, _) => Err(refused(
            &location_key,
            "set either ssl.keystore.location or the inline certificate chain and key, not both",
        )),
        (true, false, true) => Err(refused(&key_key, "an inline certificate chain needs its key")),
        (true, true, false) => Err(refused(&chain_key, "an inline key needs its certificate chain")),
    }
}

fn versions(
    (text, key): &(String, String),
) -> Result<Vec<&'static SupportedProtocolVersion>, ConfigError> {
    parse_protocols(text).map_err(|e| refused(key, e))
}

fn suites((text, key): &(String, String)) -> Result<Vec<SupportedCipherSuite>, ConfigError> {
    parse_cipher_suites(text).map_err(|e| refused(key, e))
}

/// Parses `ssl.enabled.protocols` as Kafka writes it (`TLSv1.2,TLSv1.3`,
/// any letter case). Shared by the broker's listeners and the harness's
/// client, so both take the same names.
pub fn parse_protocols(text: &str) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let v = match name.to_ascii_lowercase().as_str() {
            "tlsv1.3" => &rustls::version::TLS13,
            "tlsv1.2" => &rustls::version::TLS12,
            "tlsv1" | "tlsv1.1" | "sslv3" => {
                return Err(format!("{name} is not offered (TLSv1.2 and TLSv1.3 are)"))
            }
            _ => {
                return Err(format!(
                    "unknown protocol '{name}' (known: TLSv1.2, TLSv1.3)"
                ))
            }
        };
        if !out
            .iter()
            .any(|o: &&SupportedProtocolVersion| o.version == v.version)
        {
            out.push(v);
        }
    }
    if out.is_empty() {
        return Err("no protocol enabled".to_string());
    }
    Ok(out)
}

/// OpenSSL's names of the TLS 1.2 suites rustls offers, as librdkafka's
/// `ssl.cipher.suites` takes them (its TLS 1.3 names are the IANA ones).
const OPENSSL_NAMES: &[(&str, &str)] = &[
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// Parses `ssl.cipher.suites`: Kafka's (IANA) names separated by `,`, or
/// OpenSSL's separated by `:` as librdkafka writes them. Empty: rustls's
/// defaults. Shared by the broker's listeners and the harness's client.
pub fn parse_cipher_suites(text: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    let all = provider::ALL_CIPHER_SUITES;
    let names: Vec<&str> = text
        .split([',', ':'])
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(provider::DEFAULT_CIPHER_SUITES.to_vec());
    }
    let mut out = Vec::new();
    for name in names {
        let iana = OPENSSL_NAMES
            .iter()
            .find(|(openssl, _)| *openssl == name)
            .map_or(name, |(_, iana)| iana);
        let found = all.iter().find(|s| suite_name(s) == iana).ok_or_else(|| {
            let known: Vec<String> = all.iter().map(suite_name).collect();
            format!(
                "unknown cipher suite '{name}' (known: {})",
                known.join(", ")
            )
        })?;
        if !out.contains(found) {
            out.push(*found);
        }
    }
    Ok(out)
}

/// A file's modification time and length (`None` for inline PEM).
type Stamp = Option<(Option<SystemTime>, u64)>;

/// The configurations in use and the stamps of the files they came from.
struct Loaded {
    server: Arc<ServerConfig>,
    client: Option<Arc<rustls::ClientConfig>>,
    stamps: Vec<Stamp>,
}

/// A listener's live TLS configuration, rebuilt when its files change.
pub struct TlsAcceptor {
    pub settings: TlsSettings,
    current: Mutex<Loaded>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("listener", &self.settings.listener)
            .finish()
    }
}

impl TlsAcceptor {
    pub fn new(settings: TlsSettings) -> Result<TlsAcceptor, ConfigError> {
        let stamps = settings.stamps();
        let loaded = Loaded {
            server: settings.build()?,
            client: settings.build_client()?,
            stamps,
        };
        Ok(TlsAcceptor {
            settings,
            current: Mutex::new(loaded),
        })
    }

    /// The configuration for the next handshake: rebuilt first if a
    /// certificate file changed since it was loaded.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current().server)
    }

    /// The client configuration for fetching over this listener, current
    /// as [`TlsAcceptor::config`] is.
    pub fn client_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.current().client.clone()
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Loaded> {
        let stamps = self.settings.stamps();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.stamps != stamps {
            self.rebuild(&mut current, stamps);
        }
        current
    }

    /// Rebuilds from the files now (SIGHUP).
    pub fn reload(&self) {
        let stamps = self.settings.stamps();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        self.rebuild(&mut current, stamps);
    }

    fn rebuild(&self, current: &mut Loaded, stamps: Vec<Stamp>) {
        // The stamps are taken before reading, so a write landing during
        // the rebuild is seen as a change next time.
        current.stamps = stamps;
        let built = self
            .settings
            .build()
            .and_then(|s| Ok((s, self.settings.build_client()?)));
        match built {
            Ok((server, client)) => {
                tracing::info!(listener = %self.settings.listener, "TLS certificates loaded");
                current.server = server;
                current.client = client;
            }
            Err(e) => tracing::error!(
                listener = %self.settings.listener, error = %e,
                "TLS certificates do not load; the previous ones stay in use"
            ),
        }
    }
}

/// Whether this kernel offers kTLS: the `tls` upper-layer protocol. On a
/// socket that is not connected, a kernel with the module answers
/// ENOTCONN; one without answers ENOENT.
pub fn ktls_available() -> bool {
    // SAFETY: a fresh socket, closed below; setsockopt reads 3 bytes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return false;
        }
        let rc = libc::setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, b"tls".as_ptr().cast(), 3);
        let err = std::io::Error::last_os_error().raw_os_error();
        libc::close(fd);
        rc == 0 || err == Some(libc::ENOTCONN)
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the peer closed the connection during the handshake")]
    Truncated,
}

/// Ciphertext read from the socket at once during a handshake.
const HANDSHAKE_READ_BYTES: usize = 16 * 1024;

/// Runs a handshake (either side) on `stream` until it is done, sending
/// what the session queues and feeding it what arrives. On a TLS error
/// the alert rustls queued is sent before giving up.
pub async fn drive_handshake<D>(
    stream: &mut glommio::net::TcpStream,
    conn: &mut rustls::ConnectionCommon<D>,
) -> Result<(), HandshakeError> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; HANDSHAKE_READ_BYTES];
    let mut out = Vec::new();
    loop {
        while conn.wants_write() {
            out.clear();
            conn.write_tls(&mut out)?;
            stream.write_all(&out).await?;
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(HandshakeError::Truncated);
        }
        let mut input = &buf[..n];
        while !input.is_empty() {
            conn.read_tls(&mut input)?;
            if let Err(e) = conn.process_new_packets() {
                out.clear();
                if conn.write_tls(&mut out).is_ok() {
                    let _ = stream.write_all(&out).await;
                }
                return Err(e.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_take_kafka_names_in_any_case() {
        let v = parse_protocols("TLSv1.3, tlsv1.2,TLSv1.3").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].version, rustls::ProtocolVersion::TLSv1_3);
        assert_eq!(v[1].version, rustls::ProtocolVersion::TLSv1_2);
        assert!(parse_protocols("TLSv1.1")
            .unwrap_err()
            .contains("not offered"));
        assert!(parse_protocols("TLS1.2")
            .unwrap_err()
            .contains("unknown protocol"));
        assert!(parse_protocols(" ").unwrap_err().contains("no protocol"));
    }

    #[test]
    fn cipher_suites_take_iana_and_openssl_names() {
        let iana =
            parse_cipher_suites("TLS_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384")
                .unwrap();
        let openssl =
            parse_cipher_suites("TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES256-GCM-SHA384").unwrap();
        assert_eq!(iana, openssl);
        assert_eq!(
            iana.iter().map(suite_name).collect::<Vec<_>>(),
            [
                "TLS_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
            ]
        );
        let e = parse_cipher_suites("TLS_RSA_WITH_RC4_128_SHA").unwrap_err();
        assert!(
            e.contains("unknown cipher suite 'TLS_RSA_WITH_RC4_128_SHA'"),
            "{e}"
        );
        assert_eq!(
            parse_cipher_suites("").unwrap(),
            provider::DEFAULT_CIPHER_SUITES.to_vec()
        );
    }
}
