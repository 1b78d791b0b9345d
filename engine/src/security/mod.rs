//! Who is on the other end of a connection, and what its listener asks of
//! it before any request is served.
//!
//! Every connection carries a [`Principal`]: `User:ANONYMOUS` until TLS
//! client authentication or SASL names someone else. Authorization checks
//! the principal, never the address alone.

pub mod acl;
pub mod link;
pub mod listeners;
pub mod local_pki;
pub mod sasl;
pub mod ssl_principal;
pub mod tls;

use std::fmt;

/// A listener's security protocol, as Kafka names them in `listeners` and
/// `listener.security.protocol.map`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    /// Parses Kafka's name for a protocol (case-insensitive).
    pub fn parse(name: &str) -> Option<SecurityProtocol> {
        SecurityProtocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether the connection is encrypted with TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the client must authenticate with SASL before anything but
    /// ApiVersions, SaslHandshake and SaslAuthenticate is served.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Kafka principal, `Type:name`: `User:alice`, `User:CN=broker1,O=Acme`,
/// `User:ANONYMOUS`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    pub kind: String,
    pub name: String,
}

impl Principal {
    /// A user principal.
    pub fn user(name: impl Into<String>) -> Principal {
        Principal {
            kind: "User".into(),
            name: name.into(),
        }
    }

    /// The principal of a connection nobody has authenticated.
    pub fn anonymous() -> Principal {
        Principal::user("ANONYMOUS")
    }

    /// Parses `Type:name` (the name may itself hold colons).
    pub fn parse(text: &str) -> Option<Principal> {
        let (kind, name) = text.split_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Principal {
            kind: kind.into(),
            name: name.into(),
        })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_by_kafka_name() {
        for p in SecurityProtocol::ALL {
            assert_eq!(SecurityProtocol::parse(p.name()), Some(p));
        }
        assert_eq!(
            SecurityProtocol::parse("sasl_ssl"),
            Some(SecurityProtocol::SaslSsl)
        );
        assert_eq!(SecurityProtocol::parse("TLS"), None);
    }

    #[test]
    fn principals_parse_and_print() {
        let p = Principal::parse("User:CN=a,O=b:c").unwrap();
        assert_eq!(p.kind, "User");
        assert_eq!(p.name, "CN=a,O=b:c");
        assert_eq!(p.to_string(), "User:CN=a,O=b:c");
        assert_eq!(Principal::anonymous().to_string(), "User:ANONYMOUS");
        assert_eq!(Principal::parse("alice"), None);
        assert_eq!(Principal::parse("User:"), None);
    }
}
