//! The embedded broker's trust and credentials: a CA and a broker key
//! store (`sluice_engine::security::local_pki`, as `sluice cluster
//! --secure` makes them) and one SASL user, made once per process the
//! first time a point asks for TLS or SASL against the embedded broker.
//!
//! The clients trust this CA alone and log in as this user; the embedded
//! broker is started with the key store and the user (`target`). A
//! workload therefore names no certificate or password for the embedded
//! broker: `workload::security` refuses them there.

use ring::rand::{SecureRandom, SystemRandom};
use std::sync::OnceLock;

/// The SASL user the embedded broker knows (PLAIN, SCRAM-SHA-256 and
/// SCRAM-SHA-512 alike).
pub const USER: &str = "sluice-bench";

/// Random bytes in the password: 128 bits, as hex.
const PASSWORD_BYTES: usize = 16;

/// What the embedded broker and its clients share.
pub struct LocalCredentials {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The broker's key then certificate, PEM (`ssl.keystore.location`).
    pub keystore_pem: String,
    pub user: &'static str,
    /// Hex, so it needs no quoting in a JAAS line or a SCRAM user list.
    pub password: String,
}

static CREDENTIALS: OnceLock<Result<LocalCredentials, String>> = OnceLock::new();

/// This process's credentials, made on first use (two key pairs: a few
/// milliseconds).
pub fn credentials() -> Result<&'static LocalCredentials, String> {
    CREDENTIALS.get_or_init(make).as_ref().map_err(Clone::clone)
}

fn make() -> Result<LocalCredentials, String> {
    let (ca_pem, keystore_pem) = sluice_engine::security::local_pki::broker_certificates()
        .map_err(|e| format!("making the embedded broker's certificates: {e}"))?;
    let mut bytes = [0u8; PASSWORD_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness for the embedded broker's password".to_string())?;
    let password = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(LocalCredentials {
        ca_pem,
        keystore_pem,
        user: USER,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_per_process() {
        let a = credentials().unwrap();
        let b = credentials().unwrap();
        assert!(std::ptr::eq(a, b));
        assert_eq!(a.password.len(), 2 * PASSWORD_BYTES);
        assert!(a.password.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(a.ca_pem.contains("BEGIN CERTIFICATE"));
        assert!(a.keystore_pem.contains("PRIVATE KEY"));
    }
}
