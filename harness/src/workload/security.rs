//! `security.protocol`, `ssl.*` and `sasl.*` in a workload's client
//! properties, resolved into the client's [`Security`].
//!
//! Both librdkafka's names (`ssl.ca.location`, `sasl.username`, ...) and
//! the Java client's (`ssl.truststore.location` with PEM,
//! `sasl.jaas.config`, ...) are read, so existing client configs work
//! unchanged. Keys the harness cannot honour are refused, never accepted
//! and ignored: see docs/SECURITY.md ("The harness"). `ssl.*` keys matter
//! only under SSL and SASL_SSL, `sasl.*` only under SASL_*, as in Kafka's
//! clients, so one file can sweep `security.protocol`.

use super::error::FieldError;
use crate::client::security::tls::{self, Pem, TlsBuildError, TlsSources};
use crate::client::security::{local, Mechanism, SaslSettings, Security, SecurityProtocol};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The security keys the harness honours, with [`OAUTH_KEYS`].
const HONOURED: &[&str] = &[
    "security.protocol",
    "ssl.ca.location",
    "ssl.ca.pem",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.truststore.certificates",
    "ssl.certificate.location",
    "ssl.certificate.pem",
    "ssl.key.location",
    "ssl.key.pem",
    "ssl.key.password",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.endpoint.identification.algorithm",
    "ssl.enabled.protocols",
    "ssl.cipher.suites",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "sasl.jaas.config",
];

/// Keys that serve OAUTHBEARER alone (honoured too).
const OAUTH_KEYS: &[&str] = &[
    "sasl.oauthbearer.token.endpoint.url",
    "sasl.oauthbearer.method",
    "sasl.oauthbearer.client.id",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.scope",
    "sasl.login.callback.handler.class",
];

/// The Java client's login callback handler that fetches tokens from
/// `sasl.oauthbearer.token.endpoint.url` (`...oauthbearer.secured.` before
/// Kafka 3.4).
const JAVA_LOGIN_HANDLERS: &[&str] = &[
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler",
    "org.apache.kafka.common.security.oauthbearer.secured.OAuthBearerLoginCallbackHandler",
];

/// Which broker a workload's security is resolved for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum SecurityFor {
    /// A broker given with `--bootstrap` or a driver file: trust and
    /// credentials as the workload gives them.
    #[default]
    Given,
    /// The embedded broker: it listens on every protocol with a CA and a
    /// user the harness makes ([`local`]), so the workload names neither.
    Embedded,
}

/// Keys naming trust or credentials, which the embedded broker's clients
/// take from the harness instead.
const EMBEDDED_SUPPLIED: &[&str] = &[
    "ssl.ca.location",
    "ssl.ca.pem",
    "ssl.truststore.location",
    "ssl.truststore.certificates",
    "ssl.certificate.location",
    "ssl.certificate.pem",
    "ssl.key.location",
    "ssl.key.pem",
    "ssl.key.password",
    "ssl.keystore.location",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "sasl.username",
    "sasl.password",
    "sasl.jaas.config",
];

/// The mechanism the embedded broker's clients use when the workload
/// names none: the one `sluice cluster --secure` sets up.
pub const EMBEDDED_MECHANISM_DEFAULT: Mechanism = Mechanism::ScramSha512;

/// Keys refused with a reason of their own.
const REFUSED: &[(&str, &str)] = &[
    (
        "ssl.keystore.password",
        "only PEM key stores are read, and they have no store password",
    ),
    (
        "ssl.truststore.password",
        "only PEM trust stores are read, and they have no store password",
    ),
];

/// Whether `key` is a security key (honoured or not): such keys are
/// resolved here, never accepted silently.
pub fn is_security_key(key: &str) -> bool {
    key == "security.protocol" || key.starts_with("ssl.") || key.starts_with("sasl.")
}

/// The security keys of one client as given: key → (field path, value),
/// later ones replacing earlier ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecurityProps {
    given: BTreeMap<String, (String, String)>,
}

impl SecurityProps {
    /// Records `key` (given at `path`), refusing keys the harness does not
    /// honour.
    pub fn set(&mut self, key: &str, path: &str, value: &str) -> Result<(), FieldError> {
        debug_assert!(is_security_key(key));
        if let Some((_, why)) = REFUSED.iter().find(|(k, _)| *k == key) {
            return Err(FieldError::new(path, *why));
        }
        if !HONOURED.contains(&key) && !OAUTH_KEYS.contains(&key) {
            let honoured: Vec<&str> = HONOURED.iter().chain(OAUTH_KEYS).copied().collect();
            return Err(FieldError::new(
                path,
                format!(
                    "not supported by the harness client (it honours {}; see docs/SECURITY.md)",
                    honoured.join(", ")
                ),
            ));
        }
        self.given
            .insert(key.to_string(), (path.to_string(), value.to_string()));
        Ok(())
    }

    fn get(&self, key: &str) -> Option<(&str, &str)> {
        self.given.get(key).map(|(p, v)| (p.as_str(), v.as_str()))
    }

    /// The path a missing key would have had: beside `security.protocol`.
    fn missing(&self, block: &str, key: &str) -> String {
        match self.get("security.protocol") {
            Some((path, _)) => {
                let head = path.strip_suffix("security.protocol").unwrap_or(block);
                format!("{head}{key}")
            }
            None => format!("{block}.{key}"),
        }
    }

    /// The first of `keys` given, refusing a second (two ways of saying one
    /// thing would leave the reader guessing which wins).
    fn one_of(
        &self,
        keys: &[&'static str],
    ) -> Result<Option<(&'static str, &str, &str)>, FieldError> {
        let mut found: Option<(&'static str, &str, &str)> = None;
        for k in keys {
            if let Some((path, v)) = self.get(k) {
                if let Some((first, _, _)) = found {
                    return Err(FieldError::new(
                        path,
                        format!("give one of {}, not both {first} and {k}", keys.join(", ")),
                    ));
                }
                found = Some((k, path, v));
            }
        }
        Ok(found)
    }

    /// Builds the client's security; `block` names the client (`producer`,
    /// `consumer`) for keys that are missing.
    pub fn resolve(&self, block: &str) -> Result<Security, FieldError> {
        let protocol = match self.get("security.protocol") {
            None => SecurityProtocol::Plaintext,
            Some((path, v)) => SecurityProtocol::parse(v).ok_or_else(|| {
                FieldError::new(
                    path,
                    format!("`{v}` is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
                )
            })?,
        };
        let checked = self.check_values()?;
        let tls = if protocol.tls() {
            Some(self.tls(block, &checked)?)
        } else {
            None
        };
        let sasl = if protocol.sasl() {
            Some(self.sasl(block)?)
        } else {
            None
        };
        let s = Security {
            protocol,
            tls,
            sasl,
        };
        assert!(s.is_consistent());
        Ok(s)
    }

    /// Builds the client's security against the embedded broker: the
    /// protocol and `sasl.mechanism` (default [`EMBEDDED_MECHANISM_DEFAULT`])
    /// and `ssl.endpoint.identification.algorithm` as given; the CA and the
    /// user from [`local::credentials`]. A key naming trust or credentials
    /// cannot be honoured there and is refused.
    pub fn resolve_embedded(&self) -> Result<Security, FieldError> {
        if let Some((k, (path, _))) = self.given.iter().find(|(k, _)| {
            EMBEDDED_SUPPLIED.contains(&k.as_str()) || OAUTH_KEYS.contains(&k.as_str())
        }) {
            return Err(FieldError::new(
                path,
                format!(
                    "the embedded broker's CA and SASL user are made for each run and given \
                     to its clients by the harness, so {k} cannot be honoured; remove it, or \
                     run against a broker given with --bootstrap"
                ),
            ));
        }
        let protocol = match self.get("security.protocol") {
            None => SecurityProtocol::Plaintext,
            Some((path, v)) => SecurityProtocol::parse(v).ok_or_else(|| {
                FieldError::new(
                    path,
                    format!("`{v}` is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
                )
            })?,
        };
        let checked = self.check_values()?;
        let mechanism = match self.one_of(&["sasl.mechanism", "sasl.mechanisms"])? {
            None => EMBEDDED_MECHANISM_DEFAULT,
            Some((_, path, v)) => Mechanism::parse(v)
                .filter(|m| *m != Mechanism::OAuthBearer)
                .ok_or_else(|| {
                    FieldError::new(
                        path,
                        format!(
                            "`{}` is not enabled on the embedded broker: PLAIN, SCRAM-SHA-256 \
                             or SCRAM-SHA-512 (OAUTHBEARER needs a broker given with \
                             --bootstrap and its token issuer)",
                            v.trim()
                        ),
                    )
                })?,
        };
        if protocol == SecurityProtocol::Plaintext {
            return Ok(Security::plaintext());
        }
        let at = || {
            self.get("security.protocol")
                .map_or("security.protocol", |(p, _)| p)
                .to_string()
        };
        let creds = local::credentials().map_err(|m| FieldError::new(at(), m))?;
        let tls = if protocol.tls() {
            let src = TlsSources {
                ca: Some(Pem::Inline(creds.ca_pem.clone())),
                identity: None,
                key_password: None,
                verify_hostname: checked.verify_hostname,
                protocols: checked.protocols.clone(),
                suites: checked.suites.clone(),
            };
            let mut t = tls::build(&src).map_err(|e| match e {
                TlsBuildError::Protocols(m) => FieldError::new(self.protocols_path(), m),
                TlsBuildError::Ca(m) | TlsBuildError::Certificate(m) | TlsBuildError::Key(m) => {
                    FieldError::new(at(), format!("the embedded broker's CA: {m}"))
                }
            })?;
            t.ca = "the embedded broker's CA (made for this run)".to_string();
            Some(t)
        } else {
            None
        };
        let sasl = protocol.sasl().then(|| SaslSettings {
            mechanism,
            username: creds.user.to_string(),
            password: creds.password.clone(),
            token: None,
        });
        let s = Security {
            protocol,
            tls,
            sasl,
        };
        assert!(s.is_consistent());
        Ok(s)
    }

    /// Resolves for the broker `target` names.
    pub fn resolve_for(&self, block: &str, target: SecurityFor) -> Result<Security, FieldError> {
        match target {
            SecurityFor::Given => self.resolve(block),
            SecurityFor::Embedded => self.resolve_embedded(),
        }
    }

    /// Values checked whatever the protocol: they need no files.
    fn check_values(&self) -> Result<Checked, FieldError> {
        let protocols = match self.get("ssl.enabled.protocols") {
            None => None,
            Some((path, v)) => Some(
                sluice_engine::security::tls::parse_protocols(v)
                    .map_err(|e| FieldError::new(path, e))?,
            ),
        };
        let suites = match self.get("ssl.cipher.suites") {
            None => None,
            Some((path, v)) => Some(
                sluice_engine::security::tls::parse_cipher_suites(v)
                    .map_err(|e| FieldError::new(path, e))?,
            ),
        };
        Ok(Checked {
            verify_hostname: self.verify_hostname()?,
            protocols,
            suites,
        })
    }

    /// Checks the store types; answers whether host names are checked.
    fn verify_hostname(&self) -> Result<bool, FieldError> {
        for k in ["ssl.truststore.type", "ssl.keystore.type"] {
            if let Some((path, v)) = self.get(k) {
                if !v.trim().eq_ignore_ascii_case("PEM") {
                    return Err(FieldError::new(
                        path,
                        format!("`{v}`: only PEM is read (convert JKS or PKCS12 stores to PEM)"),
                    ));
                }
            }
        }
        match self.get("ssl.endpoint.identification.algorithm") {
            None => Ok(true),
            Some((path, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "https" => Ok(true),
                "" | "none" => Ok(false),
                _ => Err(FieldError::new(
                    path,
                    format!("`{v}` is not https (check the host name) or empty/none (do not)"),
                )),
            },
        }
    }

    /// Where a protocol and suite combination rustls cannot build is
    /// reported: the suites, else the protocols.
    fn protocols_path(&self) -> String {
        self.get("ssl.cipher.suites")
            .or_else(|| self.get("ssl.enabled.protocols"))
            .map_or("ssl.cipher.suites", |(p, _)| p)
            .to_string()
    }

    fn tls(
        &self,
        block: &str,
        checked: &Checked,
    ) -> Result<crate::client::security::TlsSettings, FieldError> {
        let ca = self
            .one_of(&[
                "ssl.ca.location",
                "ssl.ca.pem",
                "ssl.truststore.location",
                "ssl.truststore.certificates",
            ])?
            .map(|(k, path, v)| (path.to_string(), pem_of(k, v)));
        let chain = self.one_of(&[
            "ssl.certificate.location",
            "ssl.certificate.pem",
            "ssl.keystore.certificate.chain",
            "ssl.keystore.location",
        ])?;
        // ssl.keystore.location is one PEM file holding both the key and
        // the chain, so it answers both.
        let key = self.one_of(&[
            "ssl.key.location",
            "ssl.key.pem",
            "ssl.keystore.key",
            "ssl.keystore.location",
        ])?;
        let identity = match (chain, key) {
            (None, None) => None,
            (Some((ck, cpath, cv)), Some((kk, kpath, kv))) => Some((
                (cpath.to_string(), pem_of(ck, cv)),
                (kpath.to_string(), pem_of(kk, kv)),
            )),
            (Some((_, path, _)), None) => {
                return Err(FieldError::new(
                    path,
                    "a client certificate needs its key (ssl.key.location)",
                ))
            }
            (None, Some((_, path, _))) => {
                return Err(FieldError::new(
                    path,
                    "a client key needs its certificate (ssl.certificate.location)",
                ))
            }
        };
        let key_password = self.get("ssl.key.password");
        if let (Some((path, _)), None) = (key_password, &identity) {
            return Err(FieldError::new(
                path,
                "ssl.key.password is the client key's, and no client key is given",
            ));
        }
        let src = TlsSources {
            key_password: key_password.map(|(_, v)| v.to_string()),
            ca: ca.as_ref().map(|(_, p)| p.clone()),
            identity: identity
                .as_ref()
                .map(|((_, c), (_, k))| (c.clone(), k.clone())),
            verify_hostname: checked.verify_hostname,
            protocols: checked.protocols.clone(),
            suites: checked.suites.clone(),
        };
        tls::build(&src).map_err(|e| match e {
            TlsBuildError::Protocols(m) => FieldError::new(self.protocols_path(), m),
            TlsBuildError::Ca(m) => FieldError::new(
                ca.as_ref().map_or_else(
                    || self.missing(block, "ssl.ca.location"),
                    |(p, _)| p.clone(),
                ),
                m,
            ),
            TlsBuildError::Certificate(m) => {
                FieldError::new(identity.as_ref().map_or("", |((p, _), _)| p), m)
            }
            TlsBuildError::Key(m) => {
                FieldError::new(identity.as_ref().map_or("", |(_, (p, _))| p), m)
            }
        })
    }

    fn sasl(&self, block: &str) -> Result<SaslSettings, FieldError> {
        let (mpath, mname) = match self.one_of(&["sasl.mechanism", "sasl.mechanisms"])? {
            Some((_, path, v)) => (path.to_string(), v.trim().to_string()),
            None => {
                return Err(FieldError::new(
                    self.missing(block, "sasl.mechanism"),
                    "SASL needs sasl.mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or \
                     OAUTHBEARER (Kafka's default, GSSAPI, is not supported)",
                ))
            }
        };
        let mechanism = Mechanism::parse(&mname).ok_or_else(|| {
            FieldError::new(
                &mpath,
                format!(
                    "`{mname}` is not supported: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or \
                     OAUTHBEARER (GSSAPI is not)"
                ),
            )
        })?;
        if mechanism == Mechanism::OAuthBearer {
            return self.oauth(block);
        }
        if let Some((k, (path, _))) = self
            .given
            .iter()
            .find(|(k, _)| OAUTH_KEYS.contains(&k.as_str()))
        {
            return Err(FieldError::new(
                path,
                format!("{k} serves OAUTHBEARER only, not {}", mechanism.name()),
            ));
        }
        let jaas = self.get("sasl.jaas.config");
        let user = self.get("sasl.username");
        let password = self.get("sasl.password");
        let (username, password) = match (jaas, user, password) {
            (Some((path, _)), Some(_), _) | (Some((path, _)), _, Some(_)) => {
                return Err(FieldError::new(
                    path,
                    "give either sasl.jaas.config or sasl.username and sasl.password, not both",
                ))
            }
            (Some((path, text)), None, None) => {
                let j = parse_jaas(text).map_err(|m| FieldError::new(path, m))?;
                let wanted = match mechanism {
                    Mechanism::Plain => "PlainLoginModule",
                    Mechanism::ScramSha256 | Mechanism::ScramSha512 => "ScramLoginModule",
                    Mechanism::OAuthBearer => "OAuthBearerLoginModule",
                };
                if !j.module.ends_with(wanted) {
                    return Err(FieldError::new(
                        path,
                        format!(
                            "the login module {} does not serve {}; it takes {wanted}",
                            j.module,
                            mechanism.name()
                        ),
                    ));
                }
                let take = |k: &str| {
                    j.options.get(k).cloned().ok_or_else(|| {
                        FieldError::new(path, format!("the login module has no {k}=\"...\""))
                    })
                };
                (take("username")?, take("password")?)
            }
            (None, Some((_, u)), Some((_, p))) => (u.to_string(), p.to_string()),
            (None, None, _) => {
                return Err(FieldError::new(
                    self.missing(block, "sasl.username"),
                    "SASL needs sasl.username and sasl.password (or sasl.jaas.config)",
                ))
            }
            (None, Some((path, _)), None) => {
                return Err(FieldError::new(path, "sasl.username needs sasl.password"))
            }
        };
        if username.is_empty() {
            return Err(FieldError::new(mpath, "the SASL user name is empty"));
        }
        Ok(SaslSettings {
            mechanism,
            username,
            password,
            token: None,
        })
    }

    /// OAUTHBEARER: the token's source from
    /// `sasl.oauthbearer.token.endpoint.url`, with client credentials from
    /// the Java client's JAAS entry (`OAuthBearerLoginModule`, options
    /// `clientId`, `clientSecret`, `scope`) or librdkafka's keys
    /// (`sasl.oauthbearer.method=oidc`, `.client.id`, `.client.secret`,
    /// `.scope`). A token file is checked readable here.
    fn oauth(&self, block: &str) -> Result<SaslSettings, FieldError> {
        use crate::client::security::oauth::{self, ClientCredentials, OAuthToken, TokenSource};
        for k in ["sasl.username", "sasl.password"] {
            if let Some((path, _)) = self.get(k) {
                return Err(FieldError::new(
                    path,
                    "OAUTHBEARER takes a token, not a user name and password; give \
                     sasl.oauthbearer.token.endpoint.url",
                ));
            }
        }
        if let Some((path, v)) = self.get("sasl.oauthbearer.method") {
            if !v.trim().eq_ignore_ascii_case("oidc") {
                return Err(FieldError::new(
                    path,
                    format!(
                        "`{v}`: only oidc (a token from sasl.oauthbearer.token.endpoint.url) \
                         is supported; librdkafka's default method makes unsecured tokens"
                    ),
                ));
            }
        }
        if let Some((path, v)) = self.get("sasl.login.callback.handler.class") {
            if !JAVA_LOGIN_HANDLERS.contains(&v.trim()) {
                return Err(FieldError::new(
                    path,
                    format!(
                        "`{v}` cannot run here; the harness does what {} does",
                        JAVA_LOGIN_HANDLERS[0]
                    ),
                ));
            }
        }
        let Some((url_path, url)) = self.get(oauth::ENDPOINT_KEY) else {
            return Err(FieldError::new(
                self.missing(block, oauth::ENDPOINT_KEY),
                "OAUTHBEARER needs sasl.oauthbearer.token.endpoint.url: file:///path of a \
                 token, or the http(s) URL of an OAuth token endpoint",
            ));
        };
        let rdkafka = [
            "sasl.oauthbearer.client.id",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.scope",
        ]
        .map(|k| self.get(k));
        let credentials = match (self.get("sasl.jaas.config"), rdkafka) {
            (Some((path, _)), [id, secret, scope]) if id.or(secret).or(scope).is_some() => {
                return Err(FieldError::new(
                    path,
                    "give the client credentials either in sasl.jaas.config or in \
                     sasl.oauthbearer.client.id/.client.secret/.scope, not both",
                ))
            }
            (Some((path, text)), _) => {
                let j = parse_jaas(text).map_err(|m| FieldError::new(path, m))?;
                if !j.module.ends_with("OAuthBearerLoginModule") {
                    return Err(FieldError::new(
                        path,
                        format!(
                            "the login module {} does not serve OAUTHBEARER; it takes \
                             OAuthBearerLoginModule",
                            j.module
                        ),
                    ));
                }
                if let Some(k) = j
                    .options
                    .keys()
                    .find(|k| !matches!(k.as_str(), "clientId" | "clientSecret" | "scope"))
                {
                    return Err(FieldError::new(
                        path,
                        format!(
                            "the option {k} is not supported (the harness takes clientId, \
                             clientSecret and scope)"
                        ),
                    ));
                }
                match (j.options.get("clientId"), j.options.get("clientSecret")) {
                    (None, None) if !j.options.contains_key("scope") => None,
                    (Some(id), Some(secret)) => Some(ClientCredentials {
                        client_id: id.clone(),
                        client_secret: secret.clone(),
                        scope: j.options.get("scope").cloned(),
                    }),
                    _ => {
                        return Err(FieldError::new(
                            path,
                            "the login module needs both clientId=\"...\" and \
                             clientSecret=\"...\"",
                        ))
                    }
                }
            }
            (None, [None, None, None]) => None,
            (None, [Some((_, id)), Some((_, secret)), scope]) => Some(ClientCredentials {
                client_id: id.to_string(),
                client_secret: secret.to_string(),
                scope: scope.map(|(_, s)| s.to_string()),
            }),
            (None, [id, secret, scope]) => {
                let path = id.or(secret).or(scope).map_or("", |(p, _)| p);
                return Err(FieldError::new(
                    path,
                    "a token endpoint needs both sasl.oauthbearer.client.id and \
                     sasl.oauthbearer.client.secret",
                ));
            }
        };
        let username = credentials
            .as_ref()
            .map_or_else(String::new, |c| c.client_id.clone());
        let source =
            TokenSource::new(url, credentials).map_err(|m| FieldError::new(url_path, m))?;
        let token = OAuthToken::new(source);
        if matches!(token.source, TokenSource::File(_)) {
            token.token().map_err(|m| FieldError::new(url_path, m))?;
        }
        Ok(SaslSettings {
            mechanism: Mechanism::OAuthBearer,
            username,
            password: String::new(),
            token: Some(token),
        })
    }
}

/// What [`SecurityProps::check_values`] read: values that need no file.
struct Checked {
    verify_hostname: bool,
    /// `ssl.enabled.protocols`; `None`: TLS 1.2 and 1.3.
    protocols: Option<Vec<&'static rustls::SupportedProtocolVersion>>,
    /// `ssl.cipher.suites`; `None`: rustls's defaults.
    suites: Option<Vec<rustls::SupportedCipherSuite>>,
}

fn pem_of(key: &str, value: &str) -> Pem {
    let inline = matches!(
        key,
        "ssl.ca.pem"
            | "ssl.truststore.certificates"
            | "ssl.certificate.pem"
            | "ssl.key.pem"
            | "ssl.keystore.certificate.chain"
            | "ssl.keystore.key"
    );
    if inline {
        Pem::Inline(value.to_string())
    } else {
        Pem::File(PathBuf::from(value.trim()))
    }
}

/// One JAAS login module entry: `Class required key="value" ...;`.
#[derive(Debug, PartialEq)]
pub struct Jaas {
    pub module: String,
    pub options: BTreeMap<String, String>,
}

/// Parses `sasl.jaas.config` as Kafka's clients write it: one login
/// module, the flag `required`, `key="value"` options (backslash escapes
/// inside quotes), a closing `;`.
pub fn parse_jaas(text: &str) -> Result<Jaas, String> {
    let mut rest = text.trim();
    let body = rest
        .strip_suffix(';')
        .ok_or("a JAAS entry ends with `;`")?
        .trim();
    rest = body;
    let (module, after) = rest
        .split_once(char::is_whitespace)
        .ok_or("expected `LoginModuleClass required key=\"value\" ...;`")?;
    let after = after.trim_start();
    let (flag, mut opts) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
    if !matches!(flag, "required" | "requisite" | "sufficient" | "optional") {
        return Err(format!("`{flag}` is not a JAAS control flag (required)"));
    }
    let mut options = BTreeMap::new();
    loop {
        opts = opts.trim_start();
        if opts.is_empty() {
            break;
        }
        let (key, after_eq) = opts
            .split_once('=')
            .ok_or_else(|| format!("option `{opts}` is not key=\"value\""))?;
        let key = key.trim();
        let after_eq = after_eq.trim_start();
        let (value, next) = if let Some(q) = after_eq.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => value.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("the value of {key} has no closing quote"))?;
            (value, &q[end..])
        } else {
            let end = after_eq.find(char::is_whitespace).unwrap_or(after_eq.len());
            (after_eq[..end].to_string(), &after_eq[end..])
        };
        options.insert(key.to_string(), value);
        opts = next;
    }
    Ok(Jaas {
        module: module.to_string(),
        options,
    })
}
