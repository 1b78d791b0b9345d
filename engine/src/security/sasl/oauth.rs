//! SASL/OAUTHBEARER (RFC 7628) with JWTs checked against a static key
//! set, as Kafka's broker-side JWT validator does (KIP-768).
//!
//! ```text
//! client  n,,\x01auth=Bearer <jwt>\x01[key=value\x01]...\x01
//! server  (success) empty        (failure) {"status":"invalid_token"}
//! client  (after a failure) \x01       server  SASL_AUTHENTICATION_FAILED
//! ```
//!
//! The token's signature must verify with the key of its `kid` in the
//! JWKS file (`sasl.oauthbearer.jwks.endpoint.url=file:///...`, read at
//! start-up); `exp` is required; `iss` and `aud` are checked when
//! `sasl.oauthbearer.expected.issuer` / `.expected.audience` are set. The
//! principal is the claim `sasl.oauthbearer.sub.claim.name` (default
//! `sub`). A token's remaining life bounds the session (KIP-368).

use super::{Failure, Step};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};

/// Kafka's default `sasl.oauthbearer.clock.skew.seconds`: how far a
/// token's times may be off the broker's clock.
const CLOCK_SKEW_S: u64 = 30;

/// Longest token accepted (a JWT with many claims is a few KiB).
const TOKEN_BYTES_MAX: usize = 64 * 1024;

/// A listener's OAUTHBEARER settings.
#[derive(Clone, Debug)]
pub struct OAuthSettings {
    pub keys: JwkSet,
    pub audience: Vec<String>,
    pub issuer: Option<String>,
    pub sub_claim: String,
}

impl OAuthSettings {
    /// Reads the key set named by a `file://` URL.
    pub fn load_jwks(url: &str) -> Result<JwkSet, String> {
        let path = url
            .strip_prefix("file://")
            .ok_or("only file:// key sets are supported")?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("{path} is not a JWKS document: {e}"))
    }
}

/// One OAUTHBEARER exchange, server side.
pub struct OAuthServer {
    /// A failure was answered with the RFC 7628 status; the client's
    /// acknowledgement ends the exchange.
    failed: Option<Failure>,
}

impl OAuthServer {
    pub fn new() -> OAuthServer {
        OAuthServer { failed: None }
    }

    /// Takes the client's next message. `now_s` is the wall clock in
    /// seconds since the epoch.
    pub fn step(&mut self, token: &[u8], settings: &OAuthSettings, now_s: u64) -> Step {
        if let Some(failure) = self.failed.take() {
            return Step::Fail(failure);
        }
        let jwt = match bearer_token(token) {
            Ok(t) => t,
            Err(e) => return Step::Fail(Failure::protocol(e)),
        };
        match validate(jwt, settings) {
            Ok((user, exp_s)) => Step::Done {
                user,
                reply: Vec::new(),
                lifetime_ms: Some(
                    i64::try_from(exp_s.saturating_sub(now_s).saturating_mul(1000))
                        .unwrap_or(i64::MAX),
                ),
            },
            Err(reason) => {
                self.failed = Some(Failure {
                    authentication: true,
                    message: "Authentication failed: invalid OAuth bearer token".into(),
                    log: reason,
                    user: None,
                });
                Step::Continue(br#"{"status":"invalid_token"}"#.to_vec())
            }
        }
    }
}

impl Default for OAuthServer {
    fn default() -> Self {
        OAuthServer::new()
    }
}

/// The JWT of a client's initial response.
fn bearer_token(message: &[u8]) -> Result<&str, String> {
    if message.len() > TOKEN_BYTES_MAX {
        return Err("the OAUTHBEARER message is too long".into());
    }
    let text = std::str::from_utf8(message).map_err(|_| "the message is not UTF-8")?;
    let (gs2, rest) = text
        .split_once('\x01')
        .ok_or("the message has no key/value pairs")?;
    if !(gs2.starts_with("n,") || gs2.starts_with("y,")) || !gs2.ends_with(',') {
        return Err("the message has no GS2 header".into());
    }
    let mut auth = None;
    for pair in rest.split('\x01').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or("a key/value pair has no '='")?;
        if k == "auth" {
            auth = Some(v);
        }
    }
    let auth = auth.ok_or("the message has no auth value")?;
    let (scheme, jwt) = auth
        .split_once(' ')
        .ok_or("the auth value is not 'Bearer <token>'")?;
    if !scheme.eq_ignore_ascii_case("bearer") || jwt.trim().is_empty() {
        return Err("the auth value is not 'Bearer <token>'".into());
    }
    Ok(jwt.trim())
}

/// Checks a JWT; gives the principal's name and the expiry (seconds).
fn validate(jwt: &str, s: &OAuthSettings) -> Result<(String, u64), String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("bad token header: {e}"))?;
    let kid = header
        .kid
        .as_deref()
        .ok_or("the token names no key (kid)")?;
    let jwk = s
        .keys
        .find(kid)
        .ok_or_else(|| format!("no key '{kid}' in the key set"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key '{kid}': {e}"))?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = CLOCK_SKEW_S;
    validation.set_required_spec_claims(&["exp"]);
    if s.audience.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&s.audience);
    }
    if let Some(issuer) = &s.issuer {
        validation.set_issuer(&[issuer]);
    }
    let claims =
        jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(jwt, &key, &validation)
            .map_err(|e| format!("token refused: {e}"))?
            .claims;
    let user = claims
        .get(&s.sub_claim)
        .and_then(|v| v.as_str())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| format!("the token has no '{}' claim", s.sub_claim))?;
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .ok_or("the token's exp is not a number")?;
    Ok((user.to_string(), exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_responses() {
        assert_eq!(
            bearer_token(b"n,,\x01auth=Bearer abc.def.ghi\x01\x01").unwrap(),
            "abc.def.ghi"
        );
        assert_eq!(
            bearer_token(b"n,a=alice,\x01host=x\x01auth=Bearer t\x01\x01").unwrap(),
            "t"
        );
        for bad in [
            &b"auth=Bearer t"[..],
            b"n,,\x01auth=Basic t\x01\x01",
            b"n,,\x01host=x\x01\x01",
            b"p,,\x01auth=Bearer t\x01\x01",
        ] {
            assert!(bearer_token(bad).is_err(), "{bad:?}");
        }
    }
}
