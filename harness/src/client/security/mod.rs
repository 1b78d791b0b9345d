//! How the harness's connections are secured: Kafka's `security.protocol`
//! (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), TLS through rustls, and the
//! SASL mechanisms PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER.
//!
//! [`Security`] is resolved once from a workload's client properties
//! (`workload::security`), with the TLS configuration built and its files
//! read there, so a bad path or certificate is refused before anything
//! runs. Every connection the client opens takes one
//! ([`super::conn::Connection::open`]). See docs/SECURITY.md, "The harness".

pub mod local;
pub mod oauth;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::sync::Arc;

/// Kafka's `security.protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// A SASL mechanism the harness's client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Mechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
}

impl Mechanism {
    pub fn parse(s: &str) -> Option<Mechanism> {
        Some(match s.trim() {
            "PLAIN" => Mechanism::Plain,
            "SCRAM-SHA-256" => Mechanism::ScramSha256,
            "SCRAM-SHA-512" => Mechanism::ScramSha512,
            "OAUTHBEARER" => Mechanism::OAuthBearer,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// SASL credentials. The password is never printed or serialized.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct SaslSettings {
    pub mechanism: Mechanism,
    /// The user (PLAIN, SCRAM), or the OAuth client id (OAUTHBEARER with a
    /// token endpoint; empty with a token file).
    pub username: String,
    #[serde(skip)]
    pub password: String,
    /// Where OAUTHBEARER's token comes from: present exactly for it.
    #[serde(rename = "token_from", serialize_with = "token_source")]
    pub token: Option<Arc<oauth::OAuthToken>>,
}

fn token_source<S: serde::Serializer>(
    t: &Option<Arc<oauth::OAuthToken>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&t.source.describe()),
        None => s.serialize_none(),
    }
}

impl std::fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSettings")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"(hidden)")
            .field("token", &self.token)
            .finish()
    }
}

/// A built TLS client configuration and what it was built from.
#[derive(Clone)]
pub struct TlsSettings {
    /// Where the trusted CA certificates came from (a path, `inline PEM`
    /// or the system bundle's path).
    pub ca: String,
    /// The client certificate chain for mutual TLS, if any.
    pub client_certificate: Option<String>,
    /// `ssl.endpoint.identification.algorithm=https` (the default): the
    /// broker's certificate must name the host connected to.
    pub verify_hostname: bool,
    /// `ssl.enabled.protocols` as rustls names them; `None`: TLS 1.2 and 1.3.
    pub protocols: Option<String>,
    /// `ssl.cipher.suites` as rustls names them; `None`: rustls's defaults.
    pub cipher_suites: Option<String>,
    pub config: Arc<rustls::ClientConfig>,
}

impl PartialEq for TlsSettings {
    /// Equal when built from the same sources.
    fn eq(&self, o: &TlsSettings) -> bool {
        self.ca == o.ca
            && self.client_certificate == o.client_certificate
            && self.verify_hostname == o.verify_hostname
            && self.protocols == o.protocols
            && self.cipher_suites == o.cipher_suites
    }
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca", &self.ca)
            .field("client_certificate", &self.client_certificate)
            .field("verify_hostname", &self.verify_hostname)
            .field("protocols", &self.protocols)
            .field("cipher_suites", &self.cipher_suites)
            .finish()
    }
}

impl serde::Serialize for TlsSettings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("TlsSettings", 5)?;
        st.serialize_field("ca", &self.ca)?;
        st.serialize_field("client_certificate", &self.client_certificate)?;
        st.serialize_field("verify_hostname", &self.verify_hostname)?;
        st.serialize_field("protocols", &self.protocols)?;
        st.serialize_field("cipher_suites", &self.cipher_suites)?;
        st.end()
    }
}

/// The security of one client's connections: TLS settings exactly when the
/// protocol is SSL or SASL_SSL, SASL credentials exactly when it is
/// SASL_PLAINTEXT or SASL_SSL.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Security {
    pub protocol: SecurityProtocol,
    pub tls: Option<TlsSettings>,
    pub sasl: Option<SaslSettings>,
}

impl Security {
    /// PLAINTEXT: what the harness speaks when a workload sets nothing.
    pub fn plaintext() -> Security {
        Security::default()
    }

    /// Checks the invariant between the protocol and the parts present.
    pub fn is_consistent(&self) -> bool {
        self.protocol.tls() == self.tls.is_some()
            && self.protocol.sasl() == self.sasl.is_some()
            && self
                .sasl
                .iter()
                .all(|s| (s.mechanism == Mechanism::OAuthBearer) == s.token.is_some())
    }

    /// `SASL_SSL (SCRAM-SHA-512 as alice)`, for run descriptions.
    pub fn describe(&self) -> String {
        match &self.sasl {
            Some(SaslSettings {
                token: Some(t),
                mechanism,
                ..
            }) => format!(
                "{} ({} with the token from {})",
                self.protocol.name(),
                mechanism.name(),
                t.source.describe()
            ),
            Some(s) => format!(
                "{} ({} as {})",
                self.protocol.name(),
                s.mechanism.name(),
                s.username
            ),
            None => self.protocol.name().to_string(),
        }
    }
}
