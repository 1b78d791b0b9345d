//! The client side of SCRAM (RFC 5802) with SHA-256 or SHA-512 (RFC 7677),
//! as Kafka's SCRAM-SHA-256 and SCRAM-SHA-512 mechanisms use it: no channel
//! binding (`n,,`), no extensions, passwords as their UTF-8 bytes (Kafka's
//! own client applies no SASLprep either).
//!
//! ```text
//! client-first  n,,n=<user>,r=<client nonce>
//! server-first  r=<client nonce><server nonce>,s=<salt, base64>,i=<iterations>
//! client-final  c=biws,r=<nonce>,p=<proof, base64>
//! server-final  v=<server signature, base64>   (or e=<error>)
//! ```
//!
//! A pure state machine: the caller moves the messages (SaslAuthenticate).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;

/// RFC 7677 asks for at least 4096 iterations; fewer is a server (or a
/// man in the middle) making the salted password cheap to attack.
pub const ITERATIONS_MIN: u32 = 4096;
/// One PBKDF2 per connection: a million SHA-512 rounds is about a second
/// of CPU, the most a server may make each connection spend.
pub const ITERATIONS_MAX: u32 = 1_000_000;
/// Bytes of randomness in the client nonce (base64 makes it 32 characters).
const NONCE_BYTES: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            Hash::Sha256 => hmac::HMAC_SHA256,
            Hash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Hash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Hash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

/// What went wrong in an exchange; the text goes into the harness's
/// authentication error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("the server's first message is malformed: {0}")]
    ServerFirst(&'static str),
    #[error("the server's nonce does not extend the client's")]
    Nonce,
    #[error("the server asks for {0} iterations, outside {ITERATIONS_MIN}..={ITERATIONS_MAX}")]
    Iterations(u32),
    #[error("the server refused the proof: {0}")]
    Refused(String),
    #[error("the server's final message is malformed")]
    ServerFinal,
    #[error("the server's signature is wrong: it does not know the password")]
    ServerSignature,
}

/// One exchange, from the client's first message to checking the server's
/// signature.
pub struct ScramClient {
    hash: Hash,
    password: Vec<u8>,
    client_nonce: String,
    client_first_bare: String,
    /// Set once the client's final message is made.
    server_signature: Option<Vec<u8>>,
}

/// `=` and `,` are escaped in a SCRAM user name (RFC 5802 5.1).
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    /// A client with a fresh random nonce.
    pub fn new(hash: Hash, user: &str, password: &str) -> Result<ScramClient, ScramError> {
        let mut raw = [0u8; NONCE_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| ScramError::Refused("no randomness for the nonce".into()))?;
        Ok(ScramClient::with_nonce(
            hash,
            user,
            password,
            &B64.encode(raw),
        ))
    }

    /// A client with a given nonce (the RFC's test vectors).
    pub fn with_nonce(hash: Hash, user: &str, password: &str, nonce: &str) -> ScramClient {
        ScramClient {
            hash,
            password: password.as_bytes().to_vec(),
            client_nonce: nonce.to_string(),
            client_first_bare: format!("n={},r={nonce}", saslname(user)),
            server_signature: None,
        }
    }

    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Answers the server's first message with the client's proof.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, ScramError> {
        let (nonce, salt, iterations) = parse_server_first(server_first)?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::Nonce);
        }
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let h = self.hash;
        let mut salted = vec![0u8; h.len()];
        let rounds = NonZeroU32::new(iterations).ok_or(ScramError::Iterations(iterations))?;
        pbkdf2::derive(h.pbkdf2(), rounds, &salt, &self.password, &mut salted);
        let salted_key = hmac::Key::new(h.hmac(), &salted);
        let client_key = hmac::sign(&salted_key, b"Client Key");
        let stored_key = digest::digest(h.digest(), client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac::sign(
            &hmac::Key::new(h.hmac(), stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::sign(&salted_key, b"Server Key");
        let server_signature = hmac::sign(
            &hmac::Key::new(h.hmac(), server_key.as_ref()),
            auth_message.as_bytes(),
        );
        self.server_signature = Some(server_signature.as_ref().to_vec());
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server's final message: the server proves it knows the
    /// salted password too.
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), ScramError> {
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(ScramError::Refused(e.to_string()));
        }
        let v = server_final
            .split(',')
            .next()
            .and_then(|a| a.strip_prefix("v="))
            .ok_or(ScramError::ServerFinal)?;
        let got = B64.decode(v).map_err(|_| ScramError::ServerFinal)?;
        let expected = self
            .server_signature
            .as_ref()
            .ok_or(ScramError::ServerFinal)?;
        // Not secret (the server sent it); a plain comparison is fine.
        if &got != expected {
            return Err(ScramError::ServerSignature);
        }
        Ok(())
    }
}

/// `r=...,s=...,i=...` (extensions after them are ignored, as RFC 5802
/// allows; a mandatory extension `m=` is refused).
fn parse_server_first(msg: &str) -> Result<(String, Vec<u8>, u32), ScramError> {
    if msg.starts_with("m=") {
        return Err(ScramError::ServerFirst("it asks for a mandatory extension"));
    }
    let (mut nonce, mut salt, mut iterations) = (None, None, None);
    for attr in msg.split(',') {
        match attr.split_at_checked(2) {
            Some(("r=", v)) => nonce = Some(v.to_string()),
            Some(("s=", v)) => {
                salt = Some(
                    B64.decode(v)
                        .map_err(|_| ScramError::ServerFirst("the salt is not base64"))?,
                )
            }
            Some(("i=", v)) => {
                iterations =
                    Some(v.parse::<u32>().map_err(|_| {
                        ScramError::ServerFirst("the iteration count is not a number")
                    })?)
            }
            _ => {}
        }
    }
    match (nonce, salt, iterations) {
        (Some(n), Some(s), Some(i)) if !s.is_empty() => Ok((n, s, i)),
        _ => Err(ScramError::ServerFirst("r=, s= or i= is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user `user`, password `pencil`.
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    fn rfc_client() -> ScramClient {
        ScramClient::with_nonce(Hash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO")
    }

    #[test]
    fn rfc7677_test_vector() {
        let mut c = rfc_client();
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        assert_eq!(
            c.client_final(SERVER_FIRST).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn a_wrong_server_signature_is_refused() {
        let mut c = rfc_client();
        c.client_final(SERVER_FIRST).unwrap();
        assert_eq!(
            c.verify_server_final("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::ServerSignature)
        );
        assert_eq!(
            c.verify_server_final("e=invalid-proof"),
            Err(ScramError::Refused("invalid-proof".into()))
        );
    }

    #[test]
    fn a_server_nonce_not_extending_ours_is_refused() {
        let mut c = rfc_client();
        let forged = "r=someoneElse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(c.client_final(forged), Err(ScramError::Nonce));
    }

    #[test]
    fn too_few_iterations_are_refused() {
        let mut c = rfc_client();
        let cheap = SERVER_FIRST.replace("i=4096", "i=1");
        assert_eq!(c.client_final(&cheap), Err(ScramError::Iterations(1)));
    }

    #[test]
    fn user_names_are_escaped() {
        let c = ScramClient::with_nonce(Hash::Sha512, "a=b,c", "p", "n");
        assert_eq!(c.client_first(), "n,,n=a=3Db=2Cc,r=n");
    }
}
