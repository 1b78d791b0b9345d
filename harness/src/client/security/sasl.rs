//! SASL authentication of a new connection: SaslHandshake v1 names the
//! mechanism, then SaslAuthenticate (v0–v2) carries its tokens inside
//! Kafka frames (KIP-152), one round for PLAIN and OAUTHBEARER, two for
//! SCRAM.

use super::oauth;
use super::scram::{Hash, ScramClient};
use super::{Mechanism, SaslSettings};
use crate::client::conn::Connection;
use crate::client::error::{code_name, ClientError};
use bytes::Bytes;
use sluice_protocol::messages::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use sluice_protocol::messages::protocol::StrBytes;

/// The version of SaslHandshake the harness sends: v1 frames the tokens
/// that follow as SaslAuthenticate requests (v0 sent them raw).
const HANDSHAKE_VERSION: i16 = 1;

/// Authenticates `c` with `s`. Returns the session lifetime the broker
/// granted (KIP-368), 0 when sessions do not expire.
pub fn authenticate(c: &mut Connection, s: &SaslSettings) -> Result<i64, ClientError> {
    let addr = c.addr();
    let mechanism = s.mechanism.name();
    let fail = |reason: String| ClientError::Auth {
        addr,
        mechanism,
        reason,
    };
    let req = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    let resp: SaslHandshakeResponse =
        c.roundtrip_at(ApiKey::SaslHandshake, HANDSHAKE_VERSION, &req)?;
    if resp.error_code != 0 {
        let enabled: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(fail(format!(
            "SaslHandshake answered {}; the listener enables {}",
            code_name(resp.error_code),
            if enabled.is_empty() {
                "no mechanism".to_string()
            } else {
                enabled.join(", ")
            }
        )));
    }
    let who = match &s.token {
        Some(t) => format!("with the token from {}", t.source.describe()),
        None => format!("as user `{}`", s.username),
    };
    let version = c.version(ApiKey::SaslAuthenticate)?;
    let mut step = |token: Vec<u8>| -> Result<SaslAuthenticateResponse, ClientError> {
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let resp: SaslAuthenticateResponse =
            c.roundtrip_at(ApiKey::SaslAuthenticate, version, &req)?;
        if resp.error_code != 0 {
            let message = resp
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            return Err(fail(format!(
                "the broker answered {} {who}{}{}",
                code_name(resp.error_code),
                if message.is_empty() { "" } else { ": " },
                message
            )));
        }
        Ok(resp)
    };
    let last = match s.mechanism {
        Mechanism::Plain => {
            // RFC 4616: authzid NUL authcid NUL password, authzid empty.
            let mut token = Vec::with_capacity(s.username.len() + s.password.len() + 2);
            token.push(0);
            token.extend_from_slice(s.username.as_bytes());
            token.push(0);
            token.extend_from_slice(s.password.as_bytes());
            step(token)?
        }
        Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
            let hash = if s.mechanism == Mechanism::ScramSha256 {
                Hash::Sha256
            } else {
                Hash::Sha512
            };
            let mut scram = ScramClient::new(hash, &s.username, &s.password)
                .map_err(|e| fail(e.to_string()))?;
            let first = step(scram.client_first().into_bytes())?;
            let server_first = std::str::from_utf8(&first.auth_bytes)
                .map_err(|_| fail("the server's first message is not UTF-8".into()))?;
            let client_final = scram
                .client_final(server_first)
                .map_err(|e| fail(e.to_string()))?;
            let last = step(client_final.into_bytes())?;
            let server_final = std::str::from_utf8(&last.auth_bytes)
                .map_err(|_| fail("the server's final message is not UTF-8".into()))?;
            scram
                .verify_server_final(server_final)
                .map_err(|e| fail(e.to_string()))?;
            last
        }
        Mechanism::OAuthBearer => {
            let source = s
                .token
                .as_ref()
                .ok_or_else(|| fail("no token source for OAUTHBEARER".to_string()))?;
            let token = source.token().map_err(&fail)?;
            let resp = step(oauth::client_first(&token))?;
            if !resp.auth_bytes.is_empty() {
                // RFC 7628 3.2.2: a refusal comes as a JSON status the
                // client acknowledges with \x01; the broker then answers
                // SASL_AUTHENTICATION_FAILED with its reason.
                let status = String::from_utf8_lossy(&resp.auth_bytes).into_owned();
                let detail = match step(vec![0x01]) {
                    Err(ClientError::Auth { reason, .. }) => reason,
                    Err(e) => e.to_string(),
                    Ok(_) => "and then answered the acknowledgement with success".to_string(),
                };
                return Err(fail(format!(
                    "the broker refused the token ({status}): {detail}"
                )));
            }
            resp
        }
    };
    Ok(last.session_lifetime_ms)
}
