//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), as Kafka speaks
//! them.
//!
//! ```text
//! client-first  n,,n=alice,r=<client nonce>[,tokenauth=true]
//! server-first  r=<client nonce><server nonce>,s=<base64 salt>,i=<iterations>
//! client-final  c=biws,r=<both nonces>,p=<base64 client proof>
//! server-final  v=<base64 server signature>
//! ```
//!
//! The broker keeps, per user and mechanism, only the salt, the
//! iteration count, `StoredKey = H(HMAC(SaltedPassword, "Client Key"))`
//! and `ServerKey = HMAC(SaltedPassword, "Server Key")`: enough to check a
//! proof and sign the answer, not enough to log in as the user.
//!
//! An unknown user gets a server-first message like a known one (a salt
//! derived from the name and a per-process secret, Kafka's minimum
//! iterations) and fails at the proof, with the same message as a wrong
//! password: the exchange does not tell which was wrong.

use super::{Failure, Step};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Kafka's bounds on SCRAM iterations (`ScramMechanism`): RFC 7677's
/// minimum, and a cap so an admin request cannot make logins cost
/// seconds of CPU.
pub const ITERATIONS_MIN: i32 = 4096;
pub const ITERATIONS_MAX: i32 = 16384;

/// Longest user name accepted in a credential or a login.
pub const USER_BYTES_MAX: usize = 1024;

/// Salt bytes made for new credentials.
const SALT_BYTES: usize = 32;

/// A SCRAM mechanism, numbered as Kafka's admin API numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Kafka's `ScramMechanism` type byte (AlterUserScramCredentials).
    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.code() == code)
    }

    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    /// RFC 5802's `Hi()`: PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// What the broker stores for one user and mechanism.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    pub iterations: i32,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// The credential for a salted password (what Kafka's admin clients
    /// send in AlterUserScramCredentials).
    pub fn from_salted(
        mechanism: ScramMechanism,
        salt: Vec<u8>,
        iterations: i32,
        salted_password: &[u8],
    ) -> ScramCredential {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt,
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
        }
    }

    /// A credential for `password` with a fresh random salt.
    pub fn from_password(
        mechanism: ScramMechanism,
        password: &str,
        iterations: i32,
    ) -> ScramCredential {
        let salt: [u8; SALT_BYTES] = rand::random();
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations as u32);
        ScramCredential::from_salted(mechanism, salt.to_vec(), iterations, &salted)
    }

    /// Whether the fields are in range and the keys have the
    /// mechanism's length.
    pub fn is_valid_for(&self, mechanism: ScramMechanism) -> bool {
        let len = match mechanism {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        };
        (ITERATIONS_MIN..=ITERATIONS_MAX).contains(&self.iterations)
            && !self.salt.is_empty()
            && self.stored_key.len() == len
            && self.server_key.len() == len
    }
}

mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Where a SCRAM exchange finds a user's credential.
pub trait CredentialStore {
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential>;
}

/// A per-process secret for the salts of unknown users, so the same
/// unknown name always gets the same salt (a changing salt would tell a
/// prober the name is unknown).
fn unknown_user_secret() -> &'static [u8; 32] {
    static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    SECRET.get_or_init(rand::random)
}

/// One SCRAM exchange, server side.
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: State,
}

enum State {
    First,
    Final {
        user: String,
        /// None for an unknown user: the proof check fails.
        credential: Option<ScramCredential>,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

impl ScramServer {
    pub fn new(mechanism: ScramMechanism) -> ScramServer {
        ScramServer {
            mechanism,
            state: State::First,
        }
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Takes the client's next message.
    pub fn step(&mut self, token: &[u8], store: &dyn CredentialStore) -> Step {
        let state = std::mem::replace(&mut self.state, State::Done);
        match state {
            State::First => self.first(token, store),
            State::Final {
                user,
                credential,
                gs2_header,
                client_first_bare,
                server_first,
                nonce,
            } => {
                let exchange = Exchange {
                    gs2_header: &gs2_header,
                    client_first_bare: &client_first_bare,
                    server_first: &server_first,
                    nonce: &nonce,
                };
                self.last(token, &user, credential.as_ref(), &exchange)
            }
            State::Done => Step::Fail(Failure::protocol("SCRAM exchange already finished")),
        }
    }

    fn first(&mut self, token: &[u8], store: &dyn CredentialStore) -> Step {
        let first = match parse_client_first(token) {
            Ok(f) => f,
            Err(e) => return Step::Fail(Failure::protocol(e)),
        };
        let credential = store.scram_credential(&first.user, self.mechanism);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (
                self.mechanism
                    .hmac(unknown_user_secret(), first.user.as_bytes()),
                ITERATIONS_MIN,
            ),
        };
        // Letters and digits only, as Kafka's own server nonces.
        let server_nonce = rand::distributions::DistString::sample_string(
            &rand::distributions::Alphanumeric,
            &mut rand::thread_rng(),
            32,
        );
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        let reply = server_first.clone().into_bytes();
        self.state = State::Final {
            user: first.user,
            credential,
            gs2_header: first.gs2_header,
            client_first_bare: first.bare,
            server_first,
            nonce,
        };
        Step::Continue(reply)
    }

    fn last(
        &mut self,
        token: &[u8],
        user: &str,
        credential: Option<&ScramCredential>,
        ex: &Exchange<'_>,
    ) -> Step {
        let Ok(text) = std::str::from_utf8(token) else {
            return Step::Fail(Failure::protocol("client-final is not UTF-8"));
        };
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
            return Step::Fail(Failure::protocol("client-final has no proof"));
        };
        let mut fields = without_proof.split(',');
        let binding = fields.next().and_then(|f| f.strip_prefix("c="));
        let nonce = fields.next().and_then(|f| f.strip_prefix("r="));
        if binding != Some(&B64.encode(ex.gs2_header)) {
            return Step::Fail(Failure::protocol("channel binding does not match"));
        }
        if nonce != Some(ex.nonce) {
            tracing::debug!(expected = ex.nonce, got = ?nonce, "SCRAM client-final nonce");
            return Step::Fail(Failure::protocol("nonce does not match"));
        }
        let auth_message = format!(
            "{},{},{}",
            ex.client_first_bare, ex.server_first, without_proof
        );
        let proof = B64.decode(proof).unwrap_or_default();
        let Some(credential) =
            credential.filter(|_| self.proof_holds(credential, &proof, &auth_message))
        else {
            return Step::Fail(Failure::credentials(user, self.mechanism.name()));
        };
        let signature = self
            .mechanism
            .hmac(&credential.server_key, auth_message.as_bytes());
        Step::Done {
            user: user.to_string(),
            reply: format!("v={}", B64.encode(signature)).into_bytes(),
            lifetime_ms: None,
        }
    }

    /// `H(ClientProof XOR HMAC(StoredKey, AuthMessage)) == StoredKey`,
    /// compared in constant time.
    fn proof_holds(
        &self,
        credential: Option<&ScramCredential>,
        proof: &[u8],
        auth_message: &str,
    ) -> bool {
        let Some(c) = credential else { return false };
        let signature = self.mechanism.hmac(&c.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return false;
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        bool::from(self.mechanism.hash(&client_key).ct_eq(&c.stored_key))
    }
}

struct Exchange<'a> {
    gs2_header: &'a str,
    client_first_bare: &'a str,
    server_first: &'a str,
    nonce: &'a str,
}

struct ClientFirst {
    gs2_header: String,
    bare: String,
    user: String,
    nonce: String,
}

fn parse_client_first(token: &[u8]) -> Result<ClientFirst, String> {
    let text = std::str::from_utf8(token).map_err(|_| "client-first is not UTF-8")?;
    let (cb, rest) = text
        .split_once(',')
        .ok_or("client-first has no GS2 header")?;
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or("client-first has no GS2 header")?;
    match cb {
        "n" | "y" => {}
        _ => return Err("channel binding is not supported".into()),
    }
    let gs2_header = format!("{cb},{authzid},");
    let mut fields = bare.split(',');
    let user = fields
        .next()
        .and_then(|f| f.strip_prefix("n="))
        .ok_or("client-first has no user name")?;
    let user = decode_saslname(user)?;
    let nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic() && c != ','))
        .ok_or("client-first has no nonce")?;
    for extension in fields {
        // Delegation tokens are not supported: `tokenauth` is refused
        // rather than checked against SCRAM credentials as if it were a
        // user's.
        if extension.starts_with("tokenauth=") {
            return Err("delegation tokens (tokenauth) are not supported".into());
        }
    }
    if let Some(authzid) = authzid.strip_prefix("a=") {
        if decode_saslname(authzid)? != user {
            return Err("the authorization id differs from the user name".into());
        }
    } else if !authzid.is_empty() {
        return Err("malformed GS2 header".into());
    }
    Ok(ClientFirst {
        gs2_header,
        bare: bare.to_string(),
        user,
        nonce: nonce.to_string(),
    })
}

/// RFC 5802's saslname: `=2C` is ',' and `=3D` is '='.
fn decode_saslname(name: &str) -> Result<String, String> {
    if name.is_empty() || name.len() > USER_BYTES_MAX {
        return Err("the user name is empty or too long".into());
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("the user name has a bad '=' escape".into()),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One user to create at start-up when absent: Kafka's
/// `kafka-storage format --add-scram` form,
/// `SCRAM-SHA-512=[name=alice,password=alice-secret]` (optionally with
/// `iterations=8192`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapUser {
    pub mechanism: ScramMechanism,
    pub user: String,
    pub password: String,
    pub iterations: i32,
}

/// Parses a list of [`BootstrapUser`]s separated by `;` or `,` between
/// entries.
pub fn parse_bootstrap_users(text: &str) -> Result<Vec<BootstrapUser>, String> {
    let mut users = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (mech, after) = rest
            .split_once("=[")
            .ok_or("expected MECHANISM=[name=...,password=...]")?;
        let mechanism = ScramMechanism::from_name(mech.trim())
            .ok_or_else(|| format!("'{}' is not SCRAM-SHA-256 or SCRAM-SHA-512", mech.trim()))?;
        let (body, after) = after.split_once(']').ok_or("a '[' is not closed")?;
        let mut user = None;
        let mut password = None;
        let mut iterations = ITERATIONS_MIN;
        for field in body.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| format!("'{field}' is not key=value"))?;
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "name" => user = Some(v),
                "password" => password = Some(v),
                "iterations" => {
                    iterations = v
                        .parse()
                        .ok()
                        .filter(|i| (ITERATIONS_MIN..=ITERATIONS_MAX).contains(i))
                        .ok_or_else(|| {
                            format!("iterations must be {ITERATIONS_MIN} to {ITERATIONS_MAX}")
                        })?
                }
                other => return Err(format!("unknown field '{other}'")),
            }
        }
        let user = user
            .filter(|u| !u.is_empty())
            .ok_or("an entry has no name")?;
        let password = password
            .filter(|p| !p.is_empty())
            .ok_or("an entry has no password")?;
        users.push(BootstrapUser {
            mechanism,
            user,
            password,
            iterations,
        });
        rest = after.trim_start_matches([',', ';', ' ', '\n', '\t']);
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Store(BTreeMap<(String, ScramMechanism), ScramCredential>);

    impl CredentialStore for Store {
        fn scram_credential(&self, user: &str, m: ScramMechanism) -> Option<ScramCredential> {
            self.0.get(&(user.to_string(), m)).cloned()
        }
    }

    /// A client side of the exchange, straight from RFC 5802.
    fn client_final(
        m: ScramMechanism,
        password: &str,
        first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let fields: BTreeMap<&str, &str> = server_first
            .split(',')
            .map(|f| f.split_at(2))
            .map(|(k, v)| (&k[..1], v))
            .collect();
        let salt = B64.decode(fields["s"]).unwrap();
        let iterations: u32 = fields["i"].parse().unwrap();
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let without_proof = format!("c=biws,r={}", fields["r"]);
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let signature = m.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        let expected = m.hmac(&server_key, auth.as_bytes());
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            format!("v={}", B64.encode(expected)).into_bytes(),
        )
    }

    fn run(m: ScramMechanism, store: &Store, user: &str, password: &str) -> Step {
        let mut server = ScramServer::new(m);
        let bare = format!("n={user},r=fyko+d2lbbFgONRv9qkxdawL");
        let Step::Continue(server_first) = server.step(format!("n,,{bare}").as_bytes(), store)
        else {
            panic!("no server-first")
        };
        let server_first = String::from_utf8(server_first).unwrap();
        assert!(server_first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
        let (last, expected) = client_final(m, password, &bare, &server_first);
        let step = server.step(last.as_bytes(), store);
        if let Step::Done { reply, .. } = &step {
            assert_eq!(reply, &expected, "server signature");
        }
        step
    }

    #[test]
    fn both_mechanisms_log_in_and_refuse_alike() {
        for m in ScramMechanism::ALL {
            let mut creds = BTreeMap::new();
            let c = ScramCredential::from_password(m, "pencil", 4096);
            assert!(c.is_valid_for(m));
            creds.insert(("user".to_string(), m), c);
            let store = Store(creds);
            match run(m, &store, "user", "pencil") {
                Step::Done { user, .. } => assert_eq!(user, "user"),
                _ => panic!("{m:?}: the right password failed"),
            }
            let wrong = run(m, &store, "user", "pen");
            let unknown = run(m, &store, "nobody", "pencil");
            let (Step::Fail(a), Step::Fail(b)) = (wrong, unknown) else {
                panic!("{m:?}: a wrong password or unknown user logged in")
            };
            assert_eq!(a.message, b.message, "the answer tells which was wrong");
            assert!(a.authentication);
        }
    }

    #[test]
    fn bad_client_first_messages() {
        let store = Store(BTreeMap::new());
        for bad in [
            "n,,n=u,r=abc,tokenauth=true",
            "p=tls-unique,,n=u,r=abc",
            "n,,r=abc",
            "n,,n=u",
            "n,a=other,n=u,r=abc",
            "n,,n=a=2,r=abc",
        ] {
            let mut s = ScramServer::new(ScramMechanism::Sha256);
            match s.step(bad.as_bytes(), &store) {
                Step::Fail(f) => assert!(!f.authentication, "{bad}"),
                _ => panic!("{bad} was taken"),
            }
        }
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
    }

    #[test]
    fn bootstrap_users() {
        let users = parse_bootstrap_users(
            "SCRAM-SHA-512=[name=alice,password=alice-secret];SCRAM-SHA-256=[name=bob,password=\"b\",iterations=8192]",
        )
        .unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].mechanism, ScramMechanism::Sha512);
        assert_eq!(users[1].iterations, 8192);
        assert_eq!(users[1].password, "b");
        for bad in [
            "SCRAM-SHA-1=[name=a,password=b]",
            "SCRAM-SHA-256=[name=a]",
            "SCRAM-SHA-256=[name=a,password=b,iterations=10]",
            "SCRAM-SHA-256=[name=a,password=b",
        ] {
            assert!(parse_bootstrap_users(bad).is_err(), "{bad}");
        }
    }
}
