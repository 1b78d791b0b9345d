//! The SASL gate of a connection on a `SASL_*` listener: every frame
//! passes it before a handler sees it.
//!
//! It answers SaslHandshake and SaslAuthenticate itself (and raw tokens
//! after a v0 handshake), lets ApiVersions through, and lets anything
//! else through only once the client has authenticated and its session
//! has not expired. What breaks the rules ends the connection: a request
//! before authentication, SaslAuthenticate before SaslHandshake, an
//! unsupported mechanism (after answering UNSUPPORTED_SASL_MECHANISM), a
//! second handshake that is not a re-authentication, a frame above
//! `sasl.server.max.receive.size`, and failed credentials (after
//! SASL_AUTHENTICATION_FAILED, delayed by
//! `connection.failed.authentication.delay.ms`).

use super::handlers::{encode_frame, Client};
use crate::metadata::Snapshot;
use crate::security::sasl::{Admission, Authenticator, Failure, Handshake, Settings, Token};
use crate::security::Principal;
use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice_protocol::api_versions::is_supported;
use sluice_protocol::header::{parse_request_header, RequestHeader};
use sluice_protocol::ErrorCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the connection does with a frame.
#[derive(Debug)]
pub enum Verdict {
    /// Handle it as usual.
    Serve,
    /// Send this frame; the gate handled the request.
    Answer(Vec<u8>),
    /// Close the connection: after `delay`, send `answer` if any.
    Close {
        answer: Option<Vec<u8>>,
        delay: Duration,
        reason: String,
    },
}

/// One connection's gate.
pub struct SaslGate {
    auth: Authenticator,
    peer: String,
}

impl SaslGate {
    pub fn new(settings: Arc<Settings>, peer: String) -> SaslGate {
        SaslGate {
            auth: Authenticator::new(settings),
            peer,
        }
    }

    /// Largest frame to read next.
    pub fn frame_bytes_max(&self, authenticated_max: usize) -> usize {
        self.auth.frame_bytes_max(authenticated_max)
    }

    /// Decides about one frame's payload; `metadata` gives the snapshot
    /// SCRAM credentials are read from.
    pub fn check(
        &mut self,
        payload: &Bytes,
        client: &Client,
        metadata: impl Fn() -> Arc<Snapshot>,
    ) -> Verdict {
        let now = Instant::now();
        if self.auth.expects_raw_token() {
            return self.raw_token(payload, client, &metadata(), now);
        }
        // The common case once authenticated, read from the API key alone
        // (the first two bytes) without decoding the header twice.
        if let Some(key) = payload.get(..2) {
            let key = i16::from_be_bytes([key[0], key[1]]);
            let sasl = [
                ApiKey::SaslHandshake as i16,
                ApiKey::SaslAuthenticate as i16,
            ];
            if self.auth.is_authenticated()
                && !sasl.contains(&key)
                && self.auth.admit(now) == Admission::Serve
            {
                return Verdict::Serve;
            }
        }
        let header = match parse_request_header(payload) {
            Ok(h) => h,
            Err(e) => return close(format!("bad request header: {e}")),
        };
        let Some(api) = sluice_protocol::header::api_key(header.api_key) else {
            return close(format!("unknown API key {}", header.api_key));
        };
        let body = payload.slice(header.body_start..);
        match api {
            ApiKey::ApiVersions => Verdict::Serve,
            ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
                if !is_supported(api, header.api_version) =>
            {
                close(format!(
                    "unsupported version {} of {api:?}",
                    header.api_version
                ))
            }
            ApiKey::SaslHandshake => self.handshake(&header, body),
            ApiKey::SaslAuthenticate => self.authenticate(&header, body, client, &metadata(), now),
            _ => match self.auth.admit(now) {
                Admission::Serve => Verdict::Serve,
                Admission::Refuse(reason) => close(format!("{reason} ({api:?})")),
            },
        }
    }

    fn handshake(&mut self, header: &RequestHeader, mut body: Bytes) -> Verdict {
        let version = header.api_version;
        let req = match SaslHandshakeRequest::decode(&mut body, version) {
            Ok(r) => r,
            Err(e) => return close(format!("malformed SaslHandshake: {e}")),
        };
        let mechanism = req.mechanism.as_str();
        let names = self.auth.settings().mechanism_names();
        let respond = |code: ErrorCode| {
            let resp = SaslHandshakeResponse::default()
                .with_error_code(code.code())
                .with_mechanisms(names.iter().map(|n| StrBytes::from_static_str(n)).collect());
            encode_frame(ApiKey::SaslHandshake, version, header.correlation_id, &resp)
        };
        match self.auth.handshake(version, mechanism) {
            Handshake::Accepted => match respond(ErrorCode::None) {
                Ok(frame) => Verdict::Answer(frame),
                Err(e) => close(e.to_string()),
            },
            Handshake::Unsupported => Verdict::Close {
                answer: respond(ErrorCode::UnsupportedSaslMechanism).ok(),
                delay: Duration::ZERO,
                reason: format!(
                    "unsupported SASL mechanism '{}' (enabled: {})",
                    mechanism.chars().take(64).collect::<String>(),
                    names.join(", ")
                ),
            },
            Handshake::Illegal(reason) => close(reason),
        }
    }

    fn authenticate(
        &mut self,
        header: &RequestHeader,
        mut body: Bytes,
        client: &Client,
        metadata: &Snapshot,
        now: Instant,
    ) -> Verdict {
        let version = header.api_version;
        let req = match SaslAuthenticateRequest::decode(&mut body, version) {
            Ok(r) => r,
            Err(e) => return close(format!("malformed SaslAuthenticate: {e}")),
        };
        let respond = |resp: SaslAuthenticateResponse| {
            encode_frame(
                ApiKey::SaslAuthenticate,
                version,
                header.correlation_id,
                &resp,
            )
        };
        match self.auth.token(&req.auth_bytes, version, metadata, now) {
            Token::Challenge(bytes) => {
                let resp = SaslAuthenticateResponse::default().with_auth_bytes(bytes.into());
                respond(resp).map_or_else(|e| close(e.to_string()), Verdict::Answer)
            }
            Token::Success {
                user,
                reply,
                session_lifetime_ms,
            } => {
                self.succeed(client, user);
                let resp = SaslAuthenticateResponse::default()
                    .with_auth_bytes(reply.into())
                    .with_session_lifetime_ms(session_lifetime_ms);
                respond(resp).map_or_else(|e| close(e.to_string()), Verdict::Answer)
            }
            Token::Failed(f) => {
                let code = match f.authentication {
                    true => ErrorCode::SaslAuthenticationFailed,
                    false => ErrorCode::IllegalSaslState,
                };
                let resp = SaslAuthenticateResponse::default()
                    .with_error_code(code.code())
                    .with_error_message(Some(StrBytes::from_string(f.message.clone())));
                self.fail(f, respond(resp).ok())
            }
        }
    }

    /// A token after a v0 handshake: the answer is a raw frame too, and a
    /// failure closes the connection without one, as Kafka does.
    fn raw_token(
        &mut self,
        token: &Bytes,
        client: &Client,
        metadata: &Snapshot,
        now: Instant,
    ) -> Verdict {
        let bytes = match self.auth.token(token, 0, metadata, now) {
            Token::Challenge(bytes) => bytes,
            Token::Success { user, reply, .. } => {
                self.succeed(client, user);
                reply
            }
            Token::Failed(f) => return self.fail(f, None),
        };
        let mut frame = Vec::with_capacity(4 + bytes.len());
        frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        frame.extend_from_slice(&bytes);
        Verdict::Answer(frame)
    }

    fn succeed(&self, client: &Client, user: String) {
        let principal = Principal::user(user);
        if *client.principal.borrow() != principal {
            tracing::info!(%principal, peer = %self.peer, "SASL authentication succeeded");
        } else {
            tracing::info!(%principal, peer = %self.peer, "SASL re-authentication succeeded");
        }
        *client.principal.borrow_mut() = principal;
    }

    fn fail(&self, f: Failure, answer: Option<Vec<u8>>) -> Verdict {
        let user = f.user.as_deref().unwrap_or("?");
        if f.authentication {
            tracing::warn!(principal = %format_args!("User:{user}"), peer = %self.peer, reason = %f.log, "SASL authentication failed");
            Verdict::Close {
                answer,
                delay: Duration::from_millis(self.auth.settings().failed_delay_ms),
                reason: "SASL authentication failed".into(),
            }
        } else {
            Verdict::Close {
                answer,
                delay: Duration::ZERO,
                reason: format!("SASL exchange broken: {}", f.log),
            }
        }
    }
}

fn close(reason: String) -> Verdict {
    Verdict::Close {
        answer: None,
        delay: Duration::ZERO,
        reason,
    }
}
