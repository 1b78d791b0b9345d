//! SASL/PLAIN (RFC 4616): one message, `[authzid] NUL user NUL password`,
//! checked against the users of the listener's JAAS config.
//!
//! Passwords are compared as SHA-256 digests in constant time, and an
//! unknown user is compared against a dummy digest, so neither the
//! answer nor its timing tells an unknown user from a wrong password.

use super::{Failure, Step};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// Checks one PLAIN message against `users` (name → password).
pub fn authenticate(token: &[u8], users: &BTreeMap<String, String>) -> Step {
    let mut parts = token.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Fail(Failure::protocol(
            "a PLAIN message is [authzid] NUL user NUL password",
        ));
    };
    let (Ok(authzid), Ok(user)) = (std::str::from_utf8(authzid), std::str::from_utf8(user)) else {
        return Step::Fail(Failure::protocol("PLAIN user names must be UTF-8"));
    };
    if user.is_empty() || user.len() > super::scram::USER_BYTES_MAX {
        return Step::Fail(Failure::protocol(
            "the PLAIN user name is empty or too long",
        ));
    }
    // As Kafka: a client may not log in as one user on behalf of another.
    if !authzid.is_empty() && authzid != user {
        return Step::Fail(Failure::protocol(
            "the authorization id differs from the user name",
        ));
    }
    let given = Sha256::digest(password);
    let (expected, known) = match users.get(user) {
        Some(p) => (Sha256::digest(p.as_bytes()), true),
        None => (Sha256::digest(b"\0unknown user\0"), false),
    };
    if bool::from(given.ct_eq(&expected)) && known {
        Step::Done {
            user: user.to_string(),
            reply: Vec::new(),
            lifetime_ms: None,
        }
    } else {
        Step::Fail(Failure::credentials(user, "PLAIN"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_passwords_and_malformed_messages() {
        let users: BTreeMap<String, String> =
            [("alice".to_string(), "alice-secret".to_string())].into();
        let ok = |t: &[u8]| matches!(authenticate(t, &users), Step::Done { ref user, .. } if user == "alice");
        assert!(ok(b"\0alice\0alice-secret"));
        assert!(ok(b"alice\0alice\0alice-secret"));
        let fail = |t: &[u8]| match authenticate(t, &users) {
            Step::Fail(f) => f,
            _ => panic!("{t:?} logged in"),
        };
        let wrong = fail(b"\0alice\0nope");
        let unknown = fail(b"\0bob\0alice-secret");
        assert!(wrong.authentication && unknown.authentication);
        assert_eq!(wrong.message, unknown.message);
        assert!(!fail(b"bob\0alice\0alice-secret").authentication);
        assert!(!fail(b"\0alice").authentication);
        assert!(!fail(b"\0alice\0x\0y").authentication);
    }
}
