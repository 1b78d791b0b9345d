//! The harness's client against a Sluice broker started here: TLS limited
//! by `ssl.enabled.protocols` and `ssl.cipher.suites` on either side, and
//! OAUTHBEARER with tokens from a file and from an OAuth token endpoint
//! served by the test, and mutual TLS with a client key encrypted by
//! `openssl pkcs8 -topk8 -v2 aes-256-cbc` (`ssl.key.password`). The broker checks tokens against a JWKS file the
//! test writes (an HS256 key), as its own OAUTHBEARER tests do.

use sluice_engine::config::BrokerConfig;
use sluice_engine::embedded::EmbeddedBroker;
mod secured;
use secured::{make_pki, run_secured};
use sluice_harness::client::admin;
use sluice_harness::client::conn::Connection;
use sluice_harness::client::endpoint::Endpoint;
use sluice_harness::client::error::ClientError;
use sluice_harness::client::security::Security;
use sluice_harness::workload::security::SecurityProps;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const JWT_SECRET: &[u8] = b"a test secret of thirty-two bytes!";
const CLIENT_ID: &str = "bench";
const CLIENT_SECRET: &str = "s3cret-of-the-client";
const T: Duration = Duration::from_secs(10);

use sluice_engine::cluster::local::free_port;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT for `sub`, valid `life_s` from now, signed with `secret`.
fn jwt(sub: &str, life_s: u64, secret: &[u8]) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("test-key".into());
    let claims = serde_json::json!({"sub": sub, "exp": now_s() + life_s, "iat": now_s()});
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// A broker listening on PLAINTEXT, SSL (its certificate from
/// `local_pki`, `ssl` settings added) and SASL_PLAINTEXT with OAUTHBEARER,
/// with `extra` settings. Returns the broker, the SSL and SASL ports and
/// the CA's PEM.
fn broker(dir: &Path, extra: &[String]) -> (EmbeddedBroker, u16, u16, String) {
    let (ca, keystore) = sluice_engine::security::local_pki::broker_certificates().unwrap();
    std::fs::write(dir.join("broker.pem"), keystore).unwrap();
    let k = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        JWT_SECRET,
    );
    std::fs::write(
        dir.join("jwks.json"),
        format!(r#"{{"keys":[{{"kty":"oct","kid":"test-key","alg":"HS256","k":"{k}"}}]}}"#),
    )
    .unwrap();
    let (plain, ssl, sasl) = (free_port(), free_port(), free_port());
    let mut cfg = BrokerConfig::default();
    cfg.set_listen(&format!("127.0.0.1:{plain}")).unwrap();
    cfg.data_dir = dir.join("data");
    cfg.cores = 1;
    let mut settings = vec![
        format!(
            "listeners=PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl},\
             SASL_PLAINTEXT://127.0.0.1:{sasl}"
        ),
        format!("ssl.keystore.location={}", dir.join("broker.pem").display()),
        "sasl.enabled.mechanisms=OAUTHBEARER".to_string(),
        format!(
            "sasl.oauthbearer.jwks.endpoint.url=file://{}",
            dir.join("jwks.json").display()
        ),
    ];
    settings.extend(extra.iter().cloned());
    for s in &settings {
        let (k, v) = s.split_once('=').unwrap();
        cfg.set(k, v).unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    (EmbeddedBroker::start(cfg).unwrap(), ssl, sasl, ca)
}

/// Properties resolved as a workload's client properties are.
fn security(props: &[(&str, String)]) -> Result<Security, String> {
    let mut s = SecurityProps::default();
    for (k, v) in props {
        s.set(k, &format!("test.{k}"), v)
            .map_err(|e| format!("{e:?}"))?;
    }
    s.resolve("test").map_err(|e| format!("{e:?}"))
}

/// Opens a connection and reads Metadata on it.
fn metadata(ep: &Endpoint, s: &Security) -> Result<(), ClientError> {
    let mut c = Connection::open(ep, s, T)?;
    admin::metadata(&mut c, Some(&[])).map(|_| ())
}

#[test]
fn tls_protocols_and_cipher_suites_must_meet_the_listeners() {
    let dir = tempfile::tempdir().unwrap();
    // The listener speaks TLS 1.2 with one ECDSA suite (local_pki's keys
    // are P-256).
    let (b, ssl, _, ca) = broker(
        dir.path(),
        &[
            "ssl.enabled.protocols=TLSv1.2".to_string(),
            "ssl.cipher.suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".to_string(),
        ],
    );
    let ep = Endpoint::parse(&format!("127.0.0.1:{ssl}")).unwrap();
    let with = |extra: &[(&str, &str)]| {
        let mut p = vec![
            ("security.protocol", "SSL".to_string()),
            ("ssl.ca.pem", ca.clone()),
        ];
        p.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        security(&p).unwrap()
    };
    // The defaults offer both: they meet.
    metadata(&ep, &with(&[])).unwrap();
    // The listener's suite, by its OpenSSL name, over TLS 1.2.
    metadata(
        &ep,
        &with(&[
            ("ssl.enabled.protocols", "TLSv1.2"),
            ("ssl.cipher.suites", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ]),
    )
    .unwrap();
    // TLS 1.3 only: no protocol in common.
    let e = metadata(&ep, &with(&[("ssl.enabled.protocols", "TLSv1.3")])).unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
    // Another TLS 1.2 suite only: no suite in common.
    let e = metadata(
        &ep,
        &with(&[(
            "ssl.cipher.suites",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        )]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
    b.stop();
}

#[test]
fn oauthbearer_with_a_token_file() {
    let dir = tempfile::tempdir().unwrap();
    // Sessions of 2 s: connections re-authenticate, reading the file again.
    let (b, _, sasl, _) = broker(dir.path(), &["connections.max.reauth.ms=2000".to_string()]);
    let token = dir.path().join("token.jwt");
    std::fs::write(&token, jwt("bench-user", 600, JWT_SECRET)).unwrap();
    let props = format!(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n\
         sasl.oauthbearer.token.endpoint.url=file://{}\n",
        token.display()
    );
    let bootstrap = format!("127.0.0.1:{sasl}");
    run_secured("oauth-file", &bootstrap, &props, 4);

    // A token signed with another key is refused, with the reason.
    let ep = Endpoint::parse(&bootstrap).unwrap();
    let url = format!("file://{}", token.display());
    let s = security(&[
        ("security.protocol", "SASL_PLAINTEXT".into()),
        ("sasl.mechanism", "OAUTHBEARER".into()),
        ("sasl.oauthbearer.token.endpoint.url", url.clone()),
    ])
    .unwrap();
    let mut c = Connection::open(&ep, &s, T).unwrap();
    std::fs::write(
        &token,
        jwt("bench-user", 600, b"another secret of thirty-two bytes"),
    )
    .unwrap();
    let e = metadata(&ep, &s).unwrap_err().to_string();
    assert!(
        e.contains("refused the token") && e.contains("SaslAuthenticationFailed"),
        "{e}"
    );
    assert!(e.contains(&url), "{e}");
    // The connection opened before re-reads the file when its session
    // ends, and is refused then.
    let deadline = Instant::now() + Duration::from_secs(60);
    let e = loop {
        match admin::metadata(&mut c, Some(&[])) {
            Ok(_) => assert!(Instant::now() < deadline, "never re-authenticated"),
            Err(e) => break e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(e.contains("refused the token"), "{e}");
    b.stop();
}

/// An OAuth token endpoint on 127.0.0.1 answering the client credentials
/// grant of `CLIENT_ID`/`CLIENT_SECRET` with scope `kafka` by a token of
/// `life_s` seconds, and anything else with 401. Counts the tokens given.
fn token_endpoint(life_s: u64) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/oauth2/token", listener.local_addr().unwrap());
    let given = Arc::new(AtomicUsize::new(0));
    let count = given.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            answer(s, life_s, &count);
        }
    });
    (url, given)
}

fn answer(mut s: TcpStream, life_s: u64, given: &AtomicUsize) {
    s.set_read_timeout(Some(T)).unwrap();
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            return;
        }
        req.extend_from_slice(&buf[..n]);
        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&req[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while req.len() < head_end + length {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            return;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&req[head_end..]).to_string();
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{CLIENT_ID}:{CLIENT_SECRET}"),
    );
    let ok = head.starts_with("post /oauth2/token ")
        && head.contains(&format!(
            "authorization: basic {}",
            basic.to_ascii_lowercase()
        ))
        && body
            .split('&')
            .any(|p| p == "grant_type=client_credentials")
        && body.split('&').any(|p| p == "scope=kafka");
    let (status, json) = if ok {
        given.fetch_add(1, Ordering::SeqCst);
        let t = jwt("bench-client", life_s, JWT_SECRET);
        (
            "200 OK",
            format!(r#"{{"access_token":"{t}","token_type":"bearer","expires_in":{life_s}}}"#),
        )
    } else {
        (
            "401 Unauthorized",
            r#"{"error":"invalid_client"}"#.to_string(),
        )
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{json}",
        json.len()
    );
}

#[test]
fn oauthbearer_with_client_credentials_from_a_token_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _, sasl, _) = broker(dir.path(), &[]);
    // Tokens of 6 s: the broker ends each session with its token, so a
    // 10 s run re-authenticates every connection, fetching new tokens on
    // the way (when to fetch is checked in the oauth module's tests).
    let (url, given) = token_endpoint(6);
    let bootstrap = format!("127.0.0.1:{sasl}");
    let rdkafka = format!(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n\
         sasl.oauthbearer.method=oidc\nsasl.oauthbearer.token.endpoint.url={url}\n\
         sasl.oauthbearer.client.id={CLIENT_ID}\nsasl.oauthbearer.client.secret={CLIENT_SECRET}\n\
         sasl.oauthbearer.scope=kafka\n"
    );
    run_secured("oauth-oidc", &bootstrap, &rdkafka, 10);
    let fetched = given.load(Ordering::SeqCst);
    assert!(fetched >= 2, "{fetched} tokens fetched in a 10 s run");

    // The Java client's keys.
    let ep = Endpoint::parse(&bootstrap).unwrap();
    let java = |secret: &str| {
        security(&[
            ("security.protocol", "SASL_PLAINTEXT".into()),
            ("sasl.mechanism", "OAUTHBEARER".into()),
            (
                "sasl.login.callback.handler.class",
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler"
                    .into(),
            ),
            ("sasl.oauthbearer.token.endpoint.url", url.clone()),
            (
                "sasl.jaas.config",
                format!(
                    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule \
                     required clientId=\"{CLIENT_ID}\" clientSecret=\"{secret}\" scope=\"kafka\";"
                ),
            ),
        ])
        .unwrap()
    };
    metadata(&ep, &java(CLIENT_SECRET)).unwrap();

    // A wrong secret: the endpoint's refusal, naming the key and the
    // endpoint, never the secret.
    let e = metadata(&ep, &java("not-the-secret"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sasl.oauthbearer.token.endpoint.url") && e.contains(&url),
        "{e}"
    );
    assert!(
        e.contains("HTTP 401") && e.contains("invalid_client"),
        "{e}"
    );
    assert!(!e.contains("not-the-secret"), "{e}");
    b.stop();
}

/// [`make_pki`]'s certificates, the client's key encrypted by OpenSSL
/// under `password`: (CA, broker key store, client certificate, encrypted
/// client key).
fn mtls_pki(dir: &Path, password: &str) -> [std::path::PathBuf; 4] {
    let pki = make_pki(dir, "mtls test CA");
    let encrypted = dir.join("client-encrypted.key");
    let status = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout"])
        .arg(format!("pass:{password}"))
        .arg("-in")
        .arg(&pki.client_key)
        .arg("-out")
        .arg(&encrypted)
        .status()
        .expect("openssl runs");
    assert!(status.success());
    [pki.ca, pki.server, pki.client_cert, encrypted]
}

#[test]
fn an_encrypted_client_key_authenticates_with_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let password = "client key pass";
    let [ca, server, cert, key] = mtls_pki(dir.path(), password);
    // The listener requires a client certificate from the test's CA.
    let (b, ssl, _, _) = broker(
        dir.path(),
        &[
            format!("ssl.keystore.location={}", server.display()),
            format!("ssl.truststore.location={}", ca.display()),
            "ssl.client.auth=required".to_string(),
        ],
    );
    let ep = Endpoint::parse(&format!("localhost:{ssl}")).unwrap();
    let base = vec![
        ("security.protocol", "SSL".to_string()),
        ("ssl.ca.location", ca.display().to_string()),
    ];
    let with = |extra: &[(&'static str, String)]| {
        let mut p = base.clone();
        p.extend(extra.iter().cloned());
        security(&p)
    };
    // librdkafka's keys.
    let rdkafka = with(&[
        ("ssl.certificate.location", cert.display().to_string()),
        ("ssl.key.location", key.display().to_string()),
        ("ssl.key.password", password.to_string()),
    ])
    .unwrap();
    metadata(&ep, &rdkafka).unwrap();
    // The Java client's: one PEM key store holding both.
    let keystore = dir.path().join("client-keystore.pem");
    std::fs::write(
        &keystore,
        std::fs::read_to_string(&key).unwrap() + &std::fs::read_to_string(&cert).unwrap(),
    )
    .unwrap();
    let java = with(&[
        ("ssl.keystore.type", "PEM".to_string()),
        ("ssl.keystore.location", keystore.display().to_string()),
        ("ssl.key.password", password.to_string()),
    ])
    .unwrap();
    metadata(&ep, &java).unwrap();
    // Without a certificate the listener refuses the client.
    assert!(metadata(&ep, &with(&[]).unwrap()).is_err());
    // A wrong password is a workload error naming the key.
    let e = with(&[
        ("ssl.certificate.location", cert.display().to_string()),
        ("ssl.key.location", key.display().to_string()),
        ("ssl.key.password", "not the password".to_string()),
    ])
    .unwrap_err();
    assert!(
        e.contains("ssl.key.location") && e.contains("does not decrypt"),
        "{e}"
    );
    b.stop();
}
