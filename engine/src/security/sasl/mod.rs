//! SASL authentication of a connection, as Kafka's brokers do it.
//!
//! A client of a `SASL_PLAINTEXT` or `SASL_SSL` listener names a mechanism
//! (SaslHandshake) and then exchanges tokens with the broker until it is
//! authenticated, either in SaslAuthenticate requests (handshake v1) or as
//! raw length-prefixed frames without a Kafka header (handshake v0). Until
//! then only ApiVersions, SaslHandshake and SaslAuthenticate are served.
//!
//! [`Authenticator`] is that state machine, one per connection, with no
//! I/O: the connection feeds it requests and writes what it answers
//! (`server::sasl_gate`). Mechanisms: PLAIN ([`plain`]), SCRAM-SHA-256 and
//! SCRAM-SHA-512 ([`scram`], credentials from the metadata log) and
//! OAUTHBEARER ([`oauth`], JWTs). Re-authentication (KIP-368) runs the
//! same exchange again on an authenticated connection.
//!
//! Design notes: `docs/SECURITY.md`, section "SASL".

pub mod config;
pub mod jaas;
pub mod oauth;
pub mod plain;
pub mod scram;

use scram::{CredentialStore, ScramMechanism};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::Settings;

/// A SASL mechanism the broker can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
    OAuthBearer,
}

impl Mechanism {
    pub const ALL: [Mechanism; 4] = [
        Mechanism::Plain,
        Mechanism::Scram(ScramMechanism::Sha256),
        Mechanism::Scram(ScramMechanism::Sha512),
        Mechanism::OAuthBearer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// By Kafka's (upper-case) name.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// What a mechanism makes of one client token.
#[derive(Debug)]
pub enum Step {
    /// Send this challenge; the exchange goes on.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send `reply` (may be empty). A token
    /// with an expiry bounds the session to `lifetime_ms`.
    Done {
        user: String,
        reply: Vec<u8>,
        lifetime_ms: Option<i64>,
    },
    Fail(Failure),
}

/// Why an exchange failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Credentials were refused (SASL_AUTHENTICATION_FAILED, delayed by
    /// `connection.failed.authentication.delay.ms`); otherwise the client
    /// broke the protocol and the connection just closes.
    pub authentication: bool,
    /// What the client is told: never which of user or password was
    /// wrong.
    pub message: String,
    /// What the broker logs.
    pub log: String,
    /// The user the client claimed, for the log.
    pub user: Option<String>,
}

impl Failure {
    /// The client sent something no mechanism allows.
    pub fn protocol(reason: impl Into<String>) -> Failure {
        let reason = reason.into();
        Failure {
            authentication: false,
            message: reason.clone(),
            log: reason,
            user: None,
        }
    }

    /// Unknown user or wrong password: the same answer for both.
    pub fn credentials(user: &str, mechanism: &str) -> Failure {
        Failure {
            authentication: true,
            message: format!(
                "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
            ),
            log: "invalid credentials".into(),
            user: Some(user.to_string()),
        }
    }
}

/// A connection's SASL state.
pub struct Authenticator {
    settings: Arc<Settings>,
    state: State,
    /// The session of the last successful authentication.
    session: Option<Session>,
}

struct Session {
    user: String,
    mechanism: Mechanism,
    /// None: no re-authentication required.
    expires: Option<Instant>,
    /// The client authenticated with SaslAuthenticate v1+, so it knows
    /// about session lifetimes and may re-authenticate.
    reauth_capable: bool,
}

enum State {
    /// No handshake yet, or authenticated and not re-authenticating.
    Idle,
    /// A handshake named `mechanism`; tokens follow.
    Exchange { exchange: Box<Exchange>, raw: bool },
    /// The exchange failed and the connection is closing.
    Closed,
}

enum Exchange {
    Plain,
    Scram(scram::ScramServer),
    OAuth(oauth::OAuthServer),
}

impl Exchange {
    fn mechanism(&self) -> Mechanism {
        match self {
            Exchange::Plain => Mechanism::Plain,
            Exchange::Scram(s) => Mechanism::Scram(s.mechanism()),
            Exchange::OAuth(_) => Mechanism::OAuthBearer,
        }
    }
}

/// Whether a request other than the SASL ones may be served.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Serve,
    Refuse(String),
}

/// The answer to a SaslHandshake.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Accepted; tokens follow.
    Accepted,
    /// UNSUPPORTED_SASL_MECHANISM with the enabled list, then close.
    Unsupported,
    /// Not allowed now: close without an answer.
    Illegal(String),
}

/// The outcome of one token.
#[derive(Debug)]
pub enum Token {
    Challenge(Vec<u8>),
    /// Authenticated; `session_lifetime_ms` is 0 without re-authentication.
    Success {
        user: String,
        reply: Vec<u8>,
        session_lifetime_ms: i64,
    },
    Failed(Failure),
}

impl Authenticator {
    pub fn new(settings: Arc<Settings>) -> Authenticator {
        Authenticator {
            settings,
            state: State::Idle,
            session: None,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether the next frame is a raw token (after a v0 handshake).
    pub fn expects_raw_token(&self) -> bool {
        matches!(self.state, State::Exchange { raw: true, .. })
    }

    /// Whether the client has authenticated (its session may have
    /// expired since).
    pub fn is_authenticated(&self) -> bool {
        self.session.is_some()
    }

    /// Largest frame read next: Kafka's `sasl.server.max.receive.size`
    /// until the client has authenticated, so an anonymous peer cannot
    /// make the broker reserve `socket.request.max.bytes`.
    pub fn frame_bytes_max(&self, authenticated_max: usize) -> usize {
        // A client re-authenticating is still authenticated: its requests
        // in flight keep the full limit.
        match (&self.session, &self.state) {
            (Some(_), State::Idle | State::Exchange { raw: false, .. }) => authenticated_max,
            _ => self.settings.max_receive_bytes,
        }
    }

    /// Whether a request other than ApiVersions and the SASL ones may be
    /// served now.
    pub fn admit(&self, now: Instant) -> Admission {
        match &self.session {
            None => Admission::Refuse("a request before SASL authentication".into()),
            Some(s) if s.expires.is_some_and(|e| now >= e) => Admission::Refuse(format!(
                "the SASL session of User:{} expired without re-authentication",
                s.user
            )),
            Some(_) => Admission::Serve,
        }
    }

    /// Takes a SaslHandshake naming `mechanism`, `version` 0 or 1.
    pub fn handshake(&mut self, version: i16, mechanism: &str) -> Handshake {
        if !matches!(self.state, State::Idle) {
            return Handshake::Illegal("a second SaslHandshake in one exchange".into());
        }
        if let Some(s) = &self.session {
            if !(self.settings.reauth_ms > 0 && s.reauth_capable && version >= 1) {
                return Handshake::Illegal(
                    "SaslHandshake after authentication, and re-authentication is not enabled"
                        .into(),
                );
            }
            if s.mechanism.name() != mechanism {
                return Handshake::Illegal(format!(
                    "re-authentication with {mechanism} after {}",
                    s.mechanism.name()
                ));
            }
        }
        let Some(m) = Mechanism::from_name(mechanism).filter(|m| self.settings.enabled(*m)) else {
            return Handshake::Unsupported;
        };
        let exchange = match m {
            Mechanism::Plain => Exchange::Plain,
            Mechanism::Scram(s) => Exchange::Scram(scram::ScramServer::new(s)),
            Mechanism::OAuthBearer => Exchange::OAuth(oauth::OAuthServer::new()),
        };
        self.state = State::Exchange {
            exchange: Box::new(exchange),
            raw: version == 0,
        };
        Handshake::Accepted
    }

    /// Takes one token (a SaslAuthenticate's bytes or a raw frame).
    /// `version` is the SaslAuthenticate version (0 for raw tokens).
    pub fn token(
        &mut self,
        token: &[u8],
        version: i16,
        store: &dyn CredentialStore,
        now: Instant,
    ) -> Token {
        let State::Exchange { exchange, .. } = &mut self.state else {
            self.state = State::Closed;
            return Token::Failed(Failure::protocol("SaslAuthenticate before SaslHandshake"));
        };
        let mechanism = exchange.mechanism();
        let step = match exchange.as_mut() {
            Exchange::Plain => plain::authenticate(token, &self.settings.plain_users),
            Exchange::Scram(s) => s.step(token, store),
            Exchange::OAuth(o) => match &self.settings.oauth {
                Some(settings) => o.step(token, settings, wall_clock_s()),
                None => Step::Fail(Failure::protocol("OAUTHBEARER is not configured")),
            },
        };
        match step {
            Step::Continue(challenge) => Token::Challenge(challenge),
            Step::Fail(f) => {
                self.state = State::Closed;
                Token::Failed(f)
            }
            Step::Done {
                user,
                reply,
                lifetime_ms,
            } => self.succeed(mechanism, user, reply, lifetime_ms, version, now),
        }
    }

    fn succeed(
        &mut self,
        mechanism: Mechanism,
        user: String,
        reply: Vec<u8>,
        token_lifetime_ms: Option<i64>,
        version: i16,
        now: Instant,
    ) -> Token {
        if let Some(previous) = &self.session {
            if previous.user != user {
                self.state = State::Closed;
                return Token::Failed(Failure {
                    authentication: true,
                    message: "Re-authentication must keep the same principal".into(),
                    log: format!("re-authentication as {user} after {}", previous.user),
                    user: Some(user),
                });
            }
        }
        // A token inside the clock skew but past its expiry still gets a
        // session that ends at once (1 ms), never an endless one (0).
        let lifetime_ms = match self.settings.reauth_ms {
            0 => 0,
            max => token_lifetime_ms.map_or(max, |t| t.clamp(1, max)),
        };
        self.session = Some(Session {
            user: user.clone(),
            mechanism,
            expires: (lifetime_ms > 0).then(|| now + Duration::from_millis(lifetime_ms as u64)),
            reauth_capable: version >= 1,
        });
        self.state = State::Idle;
        Token::Success {
            user,
            reply,
            session_lifetime_ms: lifetime_ms,
        }
    }
}

impl Token {
    /// The session lifetime of a success.
    #[cfg(test)]
    fn lifetime(&self) -> Option<i64> {
        match self {
            Token::Success {
                session_lifetime_ms,
                ..
            } => Some(*session_lifetime_ms),
            _ => None,
        }
    }
}

fn wall_clock_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct NoScram;
    impl CredentialStore for NoScram {
        fn scram_credential(&self, _: &str, _: ScramMechanism) -> Option<scram::ScramCredential> {
            None
        }
    }

    fn settings(reauth_ms: i64) -> Arc<Settings> {
        Arc::new(Settings {
            mechanisms: vec![Mechanism::Plain],
            plain_users: [
                ("alice".to_string(), "a".to_string()),
                ("bob".to_string(), "b".to_string()),
            ]
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
            oauth: None,
            reauth_ms,
            failed_delay_ms: 100,
            max_receive_bytes: 1 << 16,
        })
    }

    #[test]
    fn requests_wait_for_authentication() {
        let now = Instant::now();
        let mut a = Authenticator::new(settings(0));
        assert!(matches!(a.admit(now), Admission::Refuse(_)));
        assert!(
            matches!(a.token(b"\0alice\0a", 1, &NoScram, now), Token::Failed(f) if !f.authentication)
        );
        let mut a = Authenticator::new(settings(0));
        assert_eq!(a.handshake(1, "SCRAM-SHA-256"), Handshake::Unsupported);
        assert_eq!(a.handshake(1, "PLAIN"), Handshake::Accepted);
        assert!(matches!(a.handshake(1, "PLAIN"), Handshake::Illegal(_)));
        let mut a = Authenticator::new(settings(0));
        a.handshake(1, "PLAIN");
        assert_eq!(a.frame_bytes_max(100 << 20), 1 << 16);
        match a.token(b"\0alice\0a", 1, &NoScram, now) {
            Token::Success {
                session_lifetime_ms,
                ..
            } => assert_eq!(session_lifetime_ms, 0),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            a.admit(now + Duration::from_secs(1 << 20)),
            Admission::Serve
        );
        assert_eq!(a.frame_bytes_max(100 << 20), 100 << 20);
        assert!(matches!(a.handshake(1, "PLAIN"), Handshake::Illegal(_)));
    }

    #[test]
    fn reauthentication_keeps_the_principal_and_sessions_expire() {
        let now = Instant::now();
        let mut a = Authenticator::new(settings(1000));
        a.handshake(1, "PLAIN");
        assert!(matches!(
            a.token(b"\0alice\0a", 1, &NoScram, now),
            Token::Success {
                session_lifetime_ms: 1000,
                ..
            }
        ));
        assert_eq!(a.admit(now + Duration::from_millis(999)), Admission::Serve);
        assert!(matches!(
            a.admit(now + Duration::from_millis(1000)),
            Admission::Refuse(_)
        ));
        let later = now + Duration::from_millis(900);
        assert_eq!(a.handshake(1, "PLAIN"), Handshake::Accepted);
        assert!(matches!(
            a.token(b"\0alice\0a", 2, &NoScram, later),
            Token::Success { .. }
        ));
        assert_eq!(a.admit(now + Duration::from_millis(1800)), Admission::Serve);
        assert_eq!(a.handshake(1, "PLAIN"), Handshake::Accepted);
        assert!(matches!(
            a.token(b"\0bob\0b", 2, &NoScram, later),
            Token::Failed(f) if f.authentication
        ));
        // A token past its expiry (inside the clock skew) ends at once.
        let mut a = Authenticator::new(settings(1000));
        assert_eq!(
            a.succeed(
                Mechanism::OAuthBearer,
                "svc".into(),
                Vec::new(),
                Some(0),
                1,
                now
            )
            .lifetime(),
            Some(1)
        );
        assert!(matches!(
            a.admit(now + Duration::from_millis(1)),
            Admission::Refuse(_)
        ));
        // A v0 SaslAuthenticate client knows nothing of lifetimes.
        let mut a = Authenticator::new(settings(1000));
        a.handshake(1, "PLAIN");
        a.token(b"\0alice\0a", 0, &NoScram, now);
        assert!(matches!(a.handshake(1, "PLAIN"), Handshake::Illegal(_)));
    }
}
