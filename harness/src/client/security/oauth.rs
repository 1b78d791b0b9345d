//! The OAUTHBEARER client (RFC 7628): where the token comes from, when a
//! new one is fetched, and the client's first message.
//!
//! ```text
//! client  n,,\x01auth=Bearer <token>\x01\x01
//! server  (success) empty     (failure) {"status":"invalid_token",...}
//! client  (after a failure) \x01      server  SASL_AUTHENTICATION_FAILED
//! ```
//!
//! A token comes from `sasl.oauthbearer.token.endpoint.url`, as Kafka's
//! clients take it:
//! - `file:///path`: the JWT in that file, read again at every
//!   authentication (so a token rotated on disk is picked up when the
//!   connection re-authenticates, KIP-368);
//! - `http(s)://...`: the OAuth 2 client credentials grant (RFC 6749 4.4),
//!   the client id and secret in HTTP Basic authentication and `scope` in
//!   the form, as Kafka's Java client and librdkafka send it. The token is
//!   kept and shared by every connection of the client; it is fetched
//!   again at an authentication once [`REFRESH_WINDOW_FACTOR`] of its life
//!   has passed. The request is blocking and runs on the connecting
//!   thread, at connect or re-authentication only, never per request.
//!
//! Errors name the key and the endpoint, never the secret.

use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The key both clients name the token's source with.
pub const ENDPOINT_KEY: &str = "sasl.oauthbearer.token.endpoint.url";

/// Kafka's default `sasl.login.refresh.window.factor`: a token is
/// replaced once 80% of its life has passed.
pub const REFRESH_WINDOW_FACTOR: f64 = 0.8;

/// Longest token file or endpoint answer read (a JWT with many claims is
/// a few KiB; the broker refuses tokens above 64 KiB).
const TOKEN_BYTES_MAX: u64 = 64 * 1024;

/// Kafka's `sasl.login.connect.timeout.ms` and `read.timeout.ms` are
/// unset by default (the JVM's, effectively unbounded); 10 s each is
/// librdkafka's order and keeps a dead endpoint from hanging a run.
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// OAuth client credentials for a token endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: String,
    pub scope: Option<String>,
}

/// Where the token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Endpoint {
        url: String,
        credentials: ClientCredentials,
    },
}

impl std::fmt::Debug for TokenSource {
    /// The secret is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::File(p) => write!(f, "File({})", p.display()),
            TokenSource::Endpoint { url, credentials } => f
                .debug_struct("Endpoint")
                .field("url", url)
                .field("client_id", &credentials.client_id)
                .field("scope", &credentials.scope)
                .finish(),
        }
    }
}

impl TokenSource {
    /// Reads `sasl.oauthbearer.token.endpoint.url`: `file://` or
    /// `http(s)://`; `credentials` are required for the latter and refused
    /// for the former.
    pub fn new(url: &str, credentials: Option<ClientCredentials>) -> Result<TokenSource, String> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("file://") {
            if credentials.is_some() {
                return Err(format!(
                    "{url}: a token file needs no client id, secret or scope; remove them"
                ));
            }
            if !path.starts_with('/') {
                return Err(format!(
                    "`{url}` is not file:///absolute/path (a file URL's path is absolute)"
                ));
            }
            return Ok(TokenSource::File(PathBuf::from(path)));
        }
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(format!("`{url}` is not a file://, http:// or https:// URL"));
        }
        let credentials = credentials.ok_or_else(|| {
            format!(
                "{url}: a token endpoint needs the client id and secret (clientId and \
                 clientSecret in the OAuthBearerLoginModule entry of sasl.jaas.config, or \
                 sasl.oauthbearer.client.id and sasl.oauthbearer.client.secret)"
            )
        })?;
        if credentials.client_id.is_empty() || credentials.client_secret.is_empty() {
            return Err(format!("{url}: the client id or secret is empty"));
        }
        Ok(TokenSource::Endpoint {
            url: url.to_string(),
            credentials,
        })
    }

    /// `file:///path` or the endpoint's URL, for messages.
    pub fn describe(&self) -> String {
        match self {
            TokenSource::File(p) => format!("file://{}", p.display()),
            TokenSource::Endpoint { url, .. } => url.clone(),
        }
    }
}

/// A token and when to replace it.
struct Held {
    token: String,
    /// Past this, an authentication fetches a new token first.
    refresh_at: SystemTime,
}

/// One client's token, shared by all its connections.
pub struct OAuthToken {
    pub source: TokenSource,
    held: Mutex<Option<Held>>,
}

impl std::fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl Eq for OAuthToken {}

impl PartialEq for OAuthToken {
    /// Equal when drawn from the same source.
    fn eq(&self, o: &OAuthToken) -> bool {
        self.source == o.source
    }
}

impl OAuthToken {
    pub fn new(source: TokenSource) -> Arc<OAuthToken> {
        Arc::new(OAuthToken {
            source,
            held: Mutex::new(None),
        })
    }

    /// The token to authenticate with now: a file's content as it is now;
    /// an endpoint's token as held, or a new one when none is held or its
    /// refresh time has passed.
    pub fn token(&self) -> Result<String, String> {
        self.token_at(SystemTime::now())
    }

    fn token_at(&self, now: SystemTime) -> Result<String, String> {
        let at = || format!("{ENDPOINT_KEY} {}", self.source.describe());
        match &self.source {
            TokenSource::File(path) => read_token_file(path).map_err(|e| format!("{}: {e}", at())),
            TokenSource::Endpoint { url, credentials } => {
                // Held while fetching: one request per client, not one per
                // connection opening at once.
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(h) = held.as_ref().filter(|h| now < h.refresh_at) {
                    return Ok(h.token.clone());
                }
                let (token, expires_in) =
                    fetch(url, credentials).map_err(|e| format!("{}: {e}", at()))?;
                let life = lifetime(&token, expires_in, now).ok_or_else(|| {
                    format!(
                        "{}: the token has no `exp` claim and the answer no expires_in, so \
                         when to replace it is unknown",
                        at()
                    )
                })?;
                *held = Some(Held {
                    token: token.clone(),
                    refresh_at: now + life.mul_f64(REFRESH_WINDOW_FACTOR),
                });
                Ok(token)
            }
        }
    }
}

/// The client's first (and only) message: RFC 7628's GS2 header without
/// an authorization id, then `auth=Bearer <token>`, as Kafka's client
/// sends it (no SASL extensions).
pub fn client_first(token: &str) -> Vec<u8> {
    format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
}

fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read the token: {e}"))?;
    let mut text = String::new();
    f.take(TOKEN_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the token: {e}"))?;
    if text.len() as u64 > TOKEN_BYTES_MAX {
        return Err(format!("the token is longer than {TOKEN_BYTES_MAX} bytes"));
    }
    let token = text.trim();
    check_token(token)?;
    Ok(token.to_string())
}

/// A token travels inside the SASL message between `Bearer ` and `\x01`:
/// RFC 6750's b64token characters only (a JWT's base64url and dots).
fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the token is empty".to_string());
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    if let Some(c) = token.chars().find(|c| !ok(*c)) {
        return Err(format!(
            "the token holds {c:?}, which a bearer token cannot (RFC 6750 b64token)"
        ));
    }
    Ok(())
}

/// How long a token lives from `now`: its JWT `exp` claim when it has
/// one (what the broker checks), else the endpoint's `expires_in`.
fn lifetime(token: &str, expires_in_s: Option<u64>, now: SystemTime) -> Option<Duration> {
    match jwt_exp_s(token) {
        Some(exp) => {
            let exp = UNIX_EPOCH + Duration::from_secs(exp);
            Some(exp.duration_since(now).unwrap_or(Duration::ZERO))
        }
        None => expires_in_s.map(Duration::from_secs),
    }
}

/// The `exp` claim of a JWT (not verified: the broker does that; the
/// client only schedules its refresh by it).
pub fn jwt_exp_s(token: &str) -> Option<u64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

/// RFC 6749 2.3.1: the client id and secret are form-encoded before they
/// are joined for HTTP Basic authentication.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The rustls configuration for `https://` endpoints: the system's CA
/// bundle, as for brokers without `ssl.ca.location`; `None` (ureq's
/// built-in Mozilla roots) when the system has none.
fn https_config() -> Option<Arc<rustls::ClientConfig>> {
    let bundle = super::tls::system_bundle()?;
    let certs = super::tls::certificates(&super::tls::Pem::File(bundle)).ok()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(Arc::new(config))
}

/// The client credentials grant: the token and the answer's
/// `expires_in`.
fn fetch(url: &str, c: &ClientCredentials) -> Result<(String, Option<u64>), String> {
    use base64::Engine;
    let mut agent = ureq::AgentBuilder::new()
        .timeout_connect(HTTP_CONNECT_TIMEOUT)
        .timeout(HTTP_TIMEOUT);
    if let Some(config) = https_config() {
        agent = agent.tls_config(config);
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        form_encode(&c.client_id),
        form_encode(&c.client_secret)
    ));
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(scope) = &c.scope {
        form.push(("scope", scope.as_str()));
    }
    let answer = agent
        .build()
        .post(url)
        .set("Authorization", &format!("Basic {basic}"))
        .set("Accept", "application/json")
        .send_form(&form);
    let body = |r: ureq::Response| -> Result<String, String> {
        let mut text = String::new();
        r.into_reader()
            .take(TOKEN_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("reading the answer: {e}"))?;
        if text.len() as u64 > TOKEN_BYTES_MAX {
            return Err(format!("the answer is longer than {TOKEN_BYTES_MAX} bytes"));
        }
        Ok(text)
    };
    let text = match answer {
        Ok(r) => body(r)?,
        Err(ureq::Error::Status(code, r)) => {
            let text = body(r).unwrap_or_default();
            let shown: String = text.chars().take(200).collect();
            return Err(format!(
                "the endpoint answered HTTP {code} to client `{}`: {shown}",
                c.client_id
            ));
        }
        Err(ureq::Error::Transport(t)) => return Err(format!("no answer: {t}")),
    };
    parse_answer(&text)
}

/// RFC 6749 5.1: `access_token` (required), `token_type` bearer,
/// `expires_in` seconds (optional).
fn parse_answer(text: &str) -> Result<(String, Option<u64>), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .ok_or("the answer has no access_token")?;
    if let Some(kind) = v.get("token_type").and_then(|t| t.as_str()) {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(format!("the token_type is `{kind}`, not bearer"));
        }
    }
    check_token(token)?;
    Ok((
        token.to_string(),
        v.get("expires_in").and_then(|e| e.as_u64()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_message_is_rfc_7628s_as_kafka_sends_it() {
        assert_eq!(
            client_first("a.b.c"),
            b"n,,\x01auth=Bearer a.b.c\x01\x01".to_vec()
        );
    }

    #[test]
    fn sources_are_read_from_the_url() {
        assert_eq!(
            TokenSource::new("file:///run/token.jwt", None).unwrap(),
            TokenSource::File("/run/token.jwt".into())
        );
        let creds = ClientCredentials {
            client_id: "bench".into(),
            client_secret: "s3cret".into(),
            scope: None,
        };
        let e = TokenSource::new("file:///t", Some(creds.clone())).unwrap_err();
        assert!(e.contains("needs no client id"), "{e}");
        assert!(TokenSource::new("file://relative/t", None).is_err());
        let e = TokenSource::new("https://idp/token", None).unwrap_err();
        assert!(e.contains("clientId"), "{e}");
        let e = TokenSource::new("ftp://idp/token", Some(creds.clone())).unwrap_err();
        assert!(e.contains("not a file://"), "{e}");
        let s = TokenSource::new("https://idp/token", Some(creds)).unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn the_answer_and_the_tokens_life_are_read() {
        let (t, e) = parse_answer(
            r#"{"access_token":"x.eyJleHAiOjIwMDAwMDAwMDB9.y","token_type":"Bearer","expires_in":60}"#,
        )
        .unwrap();
        // The payload is {"exp":2000000000}: the claim wins over expires_in.
        assert_eq!(jwt_exp_s(&t), Some(2_000_000_000));
        assert_eq!(e, Some(60));
        let now = UNIX_EPOCH + Duration::from_secs(1_999_999_900);
        assert_eq!(lifetime(&t, e, now), Some(Duration::from_secs(100)));
        assert_eq!(
            lifetime("opaque", Some(60), now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(lifetime("opaque", None, now), None);
        assert!(parse_answer(r#"{"token_type":"bearer"}"#)
            .unwrap_err()
            .contains("access_token"));
        assert!(parse_answer(r#"{"access_token":"a","token_type":"mac"}"#)
            .unwrap_err()
            .contains("not bearer"));
        assert!(parse_answer(r#"{"access_token":"a\u0001b"}"#)
            .unwrap_err()
            .contains("b64token"));
    }

    /// A token endpoint answering every request with a new opaque token
    /// (`token-1`, `token-2`, ...) that `expires_in` 100 s.
    fn endpoint() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for (n, s) in listener.incoming().enumerate() {
                let mut s = s.unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                // The form is short: the request ends with it.
                while !String::from_utf8_lossy(&req).contains("grant_type=client_credentials") {
                    let got = s.read(&mut buf).unwrap();
                    assert!(got > 0, "the request ended early");
                    req.extend_from_slice(&buf[..got]);
                }
                let json = format!(
                    r#"{{"access_token":"token-{}","token_type":"bearer","expires_in":100}}"#,
                    n + 1
                );
                let _ = std::io::Write::write_all(
                    &mut s,
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                        json.len()
                    )
                    .as_bytes(),
                );
            }
        });
        url
    }

    #[test]
    fn an_endpoints_token_is_kept_until_80_percent_of_its_life() {
        let source = TokenSource::new(
            &endpoint(),
            Some(ClientCredentials {
                client_id: "bench".into(),
                client_secret: "s".into(),
                scope: None,
            }),
        )
        .unwrap();
        let t = OAuthToken::new(source);
        let start = SystemTime::now();
        let at = |s: u64| t.token_at(start + Duration::from_secs(s)).unwrap();
        assert_eq!(at(0), "token-1");
        assert_eq!(at(79), "token-1");
        // 80 s of its 100 have passed: a new one, kept 80 s from then.
        assert_eq!(at(80), "token-2");
        assert_eq!(at(159), "token-2");
        assert_eq!(at(160), "token-3");
    }

    #[test]
    fn basic_credentials_are_form_encoded() {
        assert_eq!(form_encode("a b:c%é"), "a+b%3Ac%25%C3%A9");
        assert_eq!(form_encode("Az09-._*"), "Az09-._*");
    }

    #[test]
    fn a_token_file_is_read_again_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jwt");
        std::fs::write(&path, "first.token.a\n").unwrap();
        let t = OAuthToken::new(TokenSource::File(path.clone()));
        assert_eq!(t.token().unwrap(), "first.token.a");
        std::fs::write(&path, "second.token.b").unwrap();
        assert_eq!(t.token().unwrap(), "second.token.b");
        std::fs::write(&path, "").unwrap();
        let e = t.token().unwrap_err();
        assert!(e.contains(ENDPOINT_KEY) && e.contains("empty"), "{e}");
    }
}
