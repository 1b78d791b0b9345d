//! SASL on a `SASL_PLAINTEXT` listener: real clients log in with PLAIN,
//! SCRAM-SHA-256/512 and OAUTHBEARER and produce and consume; SCRAM users
//! added through AlterUserScramCredentials log in and survive a restart;
//! every way to break the exchange ends that connection only; a client
//! failing logins in a loop does not keep another from being served.

mod common;

use base64::Engine;
use common::{call, Broker, Raw};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use rdkafka::Message;
use std::time::{Duration, Instant};

const ALICE_PLAIN: &str = "listener.name.sasl_plaintext.plain.sasl.jaas.config=\
    org.apache.kafka.common.security.plain.PlainLoginModule required \
    username=\"admin\" password=\"admin-secret\" user_alice=\"alice-secret\" user_admin=\"admin-secret\";";

/// A broker with one SASL_PLAINTEXT listener, PLAIN users alice and
/// admin, SCRAM users scram256/scram512 created at start-up, and `extra`.
fn sasl_broker(mechanisms: &str, extra: &[&str]) -> Broker {
    let mechanisms = mechanisms.to_string();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    Broker::start_with(1, move |port| {
        let mut o = vec![
            format!("listeners=SASL_PLAINTEXT://127.0.0.1:{port}"),
            format!("sasl.enabled.mechanisms={mechanisms}"),
            ALICE_PLAIN.to_string(),
            "sluice.scram.users=SCRAM-SHA-256=[name=scram256,password=s256-secret];\
             SCRAM-SHA-512=[name=scram512,password=s512-secret]"
                .to_string(),
        ];
        o.extend(extra);
        o
    })
}

fn client_config(broker: &Broker, mechanism: &str, user: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", broker.bootstrap())
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", mechanism)
        .set("sasl.username", user)
        .set("sasl.password", password);
    c
}

/// Produces `count` messages to `topic` and reads them back, all over SASL.
fn rdkafka_round_trip(broker: &Broker, mechanism: &str, user: &str, password: &str, topic: &str) {
    let count = 100;
    let producer: ThreadedProducer<DefaultProducerContext> =
        client_config(broker, mechanism, user, password)
            .set("message.timeout.ms", "60000")
            .create()
            .expect("producer");
    for i in 0..count {
        let value = format!("{mechanism}-{i}");
        producer
            .send(BaseRecord::<(), _>::to(topic).payload(&value))
            .unwrap_or_else(|(e, _)| panic!("enqueue: {e}"));
    }
    producer
        .flush(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{mechanism} produce: {e}; log:\n{}", broker.log()));
    let consumer: BaseConsumer = client_config(broker, mechanism, user, password)
        .set("group.id", format!("g-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while got.len() < count && Instant::now() < deadline {
        if let Some(m) = common::poll_message(&consumer, || broker.log()) {
            got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    let want: Vec<String> = (0..count).map(|i| format!("{mechanism}-{i}")).collect();
    assert_eq!(got, want, "{mechanism}; log:\n{}", broker.log());
}

#[test]
fn librdkafka_produces_and_consumes_with_scram_and_plain() {
    let broker = sasl_broker("PLAIN,SCRAM-SHA-256,SCRAM-SHA-512", &[]);
    rdkafka_round_trip(&broker, "SCRAM-SHA-512", "scram512", "s512-secret", "t512");
    rdkafka_round_trip(&broker, "SCRAM-SHA-256", "scram256", "s256-secret", "t256");
    rdkafka_round_trip(&broker, "PLAIN", "alice", "alice-secret", "tplain");
    let log = broker.log();
    assert!(log.contains("User:scram512"), "{log}");
    assert!(
        !log.contains("s512-secret") && !log.contains("alice-secret"),
        "a password in the log:\n{log}"
    );
    common::passed("librdkafka", &["security"]);
}

#[test]
fn librdkafka_with_a_wrong_password_is_refused() {
    let broker = sasl_broker("SCRAM-SHA-512", &[]);
    let producer: ThreadedProducer<DefaultProducerContext> =
        client_config(&broker, "SCRAM-SHA-512", "scram512", "wrong")
            .set("message.timeout.ms", "5000")
            .create()
            .expect("producer");
    producer
        .send(BaseRecord::<(), _>::to("nope").payload("x"))
        .unwrap_or_else(|(e, _)| panic!("enqueue: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !broker.log().contains("SASL authentication failed") {
        assert!(
            Instant::now() < deadline,
            "no failure logged:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(producer);
    let log = broker.log();
    assert!(log.contains("User:scram512"), "{log}");
    assert!(!log.contains("wrong"), "the password was logged:\n{log}");
}

// ---- raw exchanges ----

fn handshake(raw: &mut Raw, version: i16, mechanism: &str) -> Option<SaslHandshakeResponse> {
    let req =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.into()));
    call(raw, ApiKey::SaslHandshake, version, &req)
}

fn authenticate(raw: &mut Raw, version: i16, token: &[u8]) -> Option<SaslAuthenticateResponse> {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(token.to_vec().into());
    call(raw, ApiKey::SaslAuthenticate, version, &req)
}

fn plain_login(raw: &mut Raw, user: &str, password: &str) -> SaslAuthenticateResponse {
    let h = handshake(raw, 1, "PLAIN").expect("handshake answer");
    assert_eq!(h.error_code, 0);
    authenticate(raw, 2, format!("\0{user}\0{password}").as_bytes()).expect("authenticate answer")
}

fn metadata(raw: &mut Raw) -> Option<MetadataResponse> {
    call(raw, ApiKey::Metadata, 12, &MetadataRequest::default())
}

fn assert_closed(raw: &mut Raw, what: &str, broker: &Broker) {
    assert!(
        raw.closed_by_broker(),
        "{what}: still open; log:\n{}",
        broker.log()
    );
}

#[test]
fn a_request_before_authentication_closes_the_connection() {
    let broker = sasl_broker("PLAIN", &[]);
    let mut raw = Raw::connect(broker.addr());
    let v: Option<ApiVersionsResponse> = call(
        &mut raw,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    assert!(v.is_some_and(|v| v
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::SaslAuthenticate as i16)));
    assert!(metadata(&mut raw).is_none());
    assert_closed(&mut raw, "metadata before authentication", &broker);
    assert!(broker
        .log()
        .contains("a request before SASL authentication"));
}

#[test]
fn authenticate_before_handshake_closes_the_connection() {
    let broker = sasl_broker("PLAIN", &[]);
    let mut raw = Raw::connect(broker.addr());
    let r = authenticate(&mut raw, 1, b"\0alice\0alice-secret").expect("an answer");
    assert_eq!(r.error_code, 34, "ILLEGAL_SASL_STATE");
    assert_closed(&mut raw, "authenticate before handshake", &broker);
}

#[test]
fn an_unsupported_mechanism_is_answered_with_the_enabled_list_and_closed() {
    let broker = sasl_broker("PLAIN,SCRAM-SHA-512", &[]);
    let mut raw = Raw::connect(broker.addr());
    let r = handshake(&mut raw, 1, "GSSAPI").expect("an answer");
    assert_eq!(r.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");
    let names: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(names, ["PLAIN", "SCRAM-SHA-512"]);
    assert_closed(&mut raw, "unsupported mechanism", &broker);
}

#[test]
fn a_second_handshake_after_success_closes_the_connection() {
    let broker = sasl_broker("PLAIN", &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(plain_login(&mut raw, "alice", "alice-secret").error_code, 0);
    assert!(metadata(&mut raw).is_some(), "served once authenticated");
    assert!(handshake(&mut raw, 1, "PLAIN").is_none());
    assert_closed(&mut raw, "second handshake", &broker);
}

#[test]
fn a_token_above_the_limit_closes_the_connection() {
    let broker = sasl_broker("PLAIN", &["sasl.server.max.receive.size=65536"]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(handshake(&mut raw, 1, "PLAIN").unwrap().error_code, 0);
    // Only the length prefix: the broker refuses it before reading on.
    raw.send_bytes(&(1i32 << 20).to_be_bytes());
    assert_closed(&mut raw, "1 MiB token", &broker);
    // Raw tokens after a v0 handshake have the same limit.
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(handshake(&mut raw, 0, "PLAIN").unwrap().error_code, 0);
    raw.send_bytes(&(65537i32).to_be_bytes());
    assert_closed(&mut raw, "raw token above the limit", &broker);
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_answer_and_close() {
    let broker = sasl_broker("PLAIN,SCRAM-SHA-256", &[]);
    let mut answers = Vec::new();
    for (user, password) in [("alice", "not-it"), ("mallory", "alice-secret")] {
        let mut raw = Raw::connect(broker.addr());
        let r = plain_login(&mut raw, user, password);
        assert_eq!(r.error_code, 58, "SASL_AUTHENTICATION_FAILED");
        answers.push(r.error_message.map(|m| m.to_string()));
        assert_closed(&mut raw, "failed login", &broker);
    }
    assert_eq!(answers[0], answers[1], "the answer tells which was wrong");
    let log = broker.log();
    assert!(
        log.contains("User:mallory") && log.contains("User:alice"),
        "{log}"
    );
    assert!(!log.contains("not-it"), "a password in the log:\n{log}");
}

#[test]
fn handshake_v0_then_raw_plain_token() {
    let broker = sasl_broker("PLAIN", &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(handshake(&mut raw, 0, "PLAIN").unwrap().error_code, 0);
    let token = b"\0alice\0alice-secret";
    let mut frame = (token.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(token);
    raw.send_bytes(&frame);
    assert_eq!(raw.recv().expect("an empty raw answer"), Vec::<u8>::new());
    assert!(metadata(&mut raw).is_some());
    // A wrong password in a raw token: closed without an answer.
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(handshake(&mut raw, 0, "PLAIN").unwrap().error_code, 0);
    let token = b"\0alice\0wrong";
    let mut frame = (token.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(token);
    raw.send_bytes(&frame);
    assert_closed(&mut raw, "raw wrong password", &broker);
}

#[test]
fn reauthentication_extends_the_session_and_an_expired_one_closes() {
    let broker = sasl_broker("PLAIN", &["connections.max.reauth.ms=2000"]);
    let mut raw = Raw::connect(broker.addr());
    let r = plain_login(&mut raw, "alice", "alice-secret");
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 2000));
    assert!(metadata(&mut raw).is_some());
    let r = plain_login(&mut raw, "alice", "alice-secret");
    assert_eq!(
        (r.error_code, r.session_lifetime_ms),
        (0, 2000),
        "re-authentication"
    );
    assert!(metadata(&mut raw).is_some());
    // Another principal on the same connection is refused.
    let r = plain_login(&mut raw, "admin", "admin-secret");
    assert_eq!(r.error_code, 58);
    assert_closed(&mut raw, "re-authentication as another user", &broker);
    // A session left to expire: the next request closes the connection.
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(plain_login(&mut raw, "alice", "alice-secret").error_code, 0);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(metadata(&mut raw).is_none());
    assert_closed(&mut raw, "expired session", &broker);
    assert!(broker.log().contains("expired without re-authentication"));
}

// ---- SCRAM credentials through the admin API ----

fn salted(mechanism: i8, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; if mechanism == 1 { 32 } else { 64 }];
    if mechanism == 1 {
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, iterations, &mut out);
    } else {
        pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), salt, iterations, &mut out);
    }
    out
}

fn upsertion(
    user: &str,
    mechanism: i8,
    password: &str,
    iterations: i32,
) -> alter_user_scram_credentials_request::ScramCredentialUpsertion {
    let salt = b"a-test-salt-0123".to_vec();
    alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
        .with_name(StrBytes::from_string(user.into()))
        .with_mechanism(mechanism)
        .with_iterations(iterations)
        .with_salted_password(salted(mechanism, password, &salt, iterations as u32).into())
        .with_salt(salt.into())
}

fn alter(raw: &mut Raw, req: &AlterUserScramCredentialsRequest) -> Vec<(String, i16)> {
    let r: AlterUserScramCredentialsResponse =
        call(raw, ApiKey::AlterUserScramCredentials, 0, req).expect("alter answer");
    r.results
        .iter()
        .map(|r| (r.user.to_string(), r.error_code))
        .collect()
}

#[test]
fn scram_users_added_by_the_admin_api_log_in_and_survive_a_restart() {
    // Snapshots every few KiB of metadata: the restarts rebuild the
    // credentials from a snapshot, not only from log entries.
    let mut broker = sasl_broker(
        "PLAIN,SCRAM-SHA-512,SCRAM-SHA-256",
        &["metadata.log.max.record.bytes.between.snapshots=512"],
    );
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(plain_login(&mut raw, "admin", "admin-secret").error_code, 0);
    let req = AlterUserScramCredentialsRequest::default()
        .with_upsertions(vec![
            upsertion("carol", 2, "carol-secret", 8192),
            upsertion("weak", 2, "x", 100),
            upsertion("dup", 1, "x", 4096),
            upsertion("dup", 1, "y", 4096),
        ])
        .with_deletions(vec![
            alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                .with_name(StrBytes::from_static_str("ghost"))
                .with_mechanism(1),
        ]);
    let mut got = alter(&mut raw, &req);
    got.sort();
    assert_eq!(
        got,
        [
            ("carol".into(), 0),
            ("dup".into(), 92),
            ("ghost".into(), 91),
            ("weak".into(), 93)
        ]
    );
    let d: DescribeUserScramCredentialsResponse = call(
        &mut raw,
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
            describe_user_scram_credentials_request::UserName::default()
                .with_name(StrBytes::from_static_str("carol")),
            describe_user_scram_credentials_request::UserName::default()
                .with_name(StrBytes::from_static_str("nobody")),
        ])),
    )
    .expect("describe answer");
    assert_eq!(d.results[0].credential_infos.len(), 1);
    assert_eq!(
        (
            d.results[0].credential_infos[0].mechanism,
            d.results[0].credential_infos[0].iterations
        ),
        (2, 8192)
    );
    assert_eq!(d.results[1].error_code, 91);
    rdkafka_round_trip(&broker, "SCRAM-SHA-512", "carol", "carol-secret", "carol1");
    broker.stop();
    broker.restart();
    rdkafka_round_trip(&broker, "SCRAM-SHA-512", "carol", "carol-secret", "carol2");
    // Bootstrap users are not re-created over a changed password.
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(plain_login(&mut raw, "admin", "admin-secret").error_code, 0);
    let req = AlterUserScramCredentialsRequest::default()
        .with_upsertions(vec![upsertion("scram512", 2, "changed", 4096)]);
    assert_eq!(alter(&mut raw, &req), [("scram512".into(), 0)]);
    broker.stop();
    broker.restart();
    rdkafka_round_trip(&broker, "SCRAM-SHA-512", "scram512", "changed", "changed1");
    let snapshot = std::fs::read_dir(&broker.data_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .any(|e| e.path().join("snapshot").is_file());
    assert!(snapshot, "no metadata snapshot was taken");
}

// ---- OAUTHBEARER ----

const JWT_SECRET: &[u8] = b"a test secret of thirty-two bytes!";

fn jwks_file(dir: &std::path::Path) -> String {
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(JWT_SECRET);
    let path = dir.join("jwks.json");
    std::fs::write(
        &path,
        format!(r#"{{"keys":[{{"kty":"oct","kid":"test-key","alg":"HS256","k":"{k}"}}]}}"#),
    )
    .unwrap();
    format!("file://{}", path.display())
}

fn jwt(claims: serde_json::Value, secret: &[u8]) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("test-key".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn oauthbearer_tokens_are_checked_against_the_key_set() {
    let dir = tempfile::tempdir().unwrap();
    let url = jwks_file(dir.path());
    let broker = sasl_broker(
        "OAUTHBEARER,PLAIN",
        &[
            &format!("sasl.oauthbearer.jwks.endpoint.url={url}"),
            "sasl.oauthbearer.expected.audience=sluice",
            "sasl.oauthbearer.expected.issuer=https://issuer.test",
            "sasl.oauthbearer.sub.claim.name=client_id",
            "connections.max.reauth.ms=3600000",
        ],
    );
    let login = |token: &str| {
        let mut raw = Raw::connect(broker.addr());
        assert_eq!(handshake(&mut raw, 1, "OAUTHBEARER").unwrap().error_code, 0);
        let r = authenticate(
            &mut raw,
            2,
            format!("n,,\x01auth=Bearer {token}\x01\x01").as_bytes(),
        )
        .unwrap();
        (raw, r)
    };
    let exp = now_s() + 600;
    let good = serde_json::json!({"client_id": "svc-a", "aud": "sluice", "iss": "https://issuer.test", "exp": exp});
    let (mut raw, r) = login(&jwt(good.clone(), JWT_SECRET));
    assert_eq!(
        r.error_code,
        0,
        "{:?}; log:\n{}",
        r.error_message,
        broker.log()
    );
    let lifetime = r.session_lifetime_ms;
    assert!(
        lifetime > 0 && lifetime <= 600_000,
        "the token's expiry bounds the session: {lifetime}"
    );
    assert!(metadata(&mut raw).is_some());
    assert!(broker.log().contains("User:svc-a"));
    let mut bad_aud = good.clone();
    bad_aud["aud"] = "other".into();
    let mut bad_iss = good.clone();
    bad_iss["iss"] = "https://elsewhere.test".into();
    let mut no_client_id = good.clone();
    no_client_id.as_object_mut().unwrap().remove("client_id");
    let mut expired = good.clone();
    expired["exp"] = (now_s() - 3600).into();
    for (what, token) in [
        (
            "wrong key",
            jwt(good.clone(), b"another secret of thirty-two bytes"),
        ),
        ("wrong audience", jwt(bad_aud, JWT_SECRET)),
        ("wrong issuer", jwt(bad_iss, JWT_SECRET)),
        ("no principal claim", jwt(no_client_id, JWT_SECRET)),
        ("expired", jwt(expired, JWT_SECRET)),
        ("garbage", "a.b.c".to_string()),
    ] {
        let (mut raw, r) = login(&token);
        assert_eq!(r.error_code, 0, "{what}: the RFC 7628 status comes first");
        let status: serde_json::Value = serde_json::from_slice(&r.auth_bytes).unwrap();
        assert_eq!(status["status"], "invalid_token", "{what}");
        let r = authenticate(&mut raw, 2, b"\x01").expect("the failure");
        assert_eq!(r.error_code, 58, "{what}");
        assert_closed(&mut raw, what, &broker);
    }
}

#[test]
fn gssapi_a_malformed_jaas_config_or_bootstrap_user_or_no_key_set_is_refused_at_start_up() {
    for (bad, key) in [
        ("sasl.enabled.mechanisms=GSSAPI", "sasl.enabled.mechanisms"),
        (
            "listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_a=\"x\"",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config",
        ),
        ("sluice.scram.users=SCRAM-SHA-1=[name=a,password=b]", "sluice.scram.users"),
        (
            "sasl.enabled.mechanisms=OAUTHBEARER",
            "sasl.oauthbearer.jwks.endpoint.url",
        ),
    ] {
        let port = common::free_port();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["--data-dir", tempfile::tempdir().unwrap().path().to_str().unwrap()])
            .args(["--override", &format!("listeners=SASL_PLAINTEXT://127.0.0.1:{port}")])
            .args(["--override", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad} was taken");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{bad}: {err}");
    }
}

// ---- a client failing in a loop ----

#[test]
fn a_client_failing_logins_in_a_loop_does_not_starve_another() {
    // A long delay: a broker that slept on the shard instead of in the
    // failing connection's task would serve the producer once a second.
    let broker = sasl_broker(
        "SCRAM-SHA-512,PLAIN",
        &["connection.failed.authentication.delay.ms=1000"],
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, addr) = (stop.clone(), broker.addr());
            std::thread::spawn(move || {
                let mut attempts = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(stream) = std::net::TcpStream::connect(addr) else {
                        continue;
                    };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    let mut raw = Raw { stream };
                    if handshake(&mut raw, 1, "PLAIN").is_some() {
                        let _ = authenticate(&mut raw, 2, b"\0alice\0guess");
                    }
                    attempts += 1;
                }
                attempts
            })
        })
        .collect();
    let producer: ThreadedProducer<DefaultProducerContext> =
        client_config(&broker, "SCRAM-SHA-512", "scram512", "s512-secret")
            .set("linger.ms", "0")
            .set("max.in.flight.requests.per.connection", "1")
            .set("message.timeout.ms", "120000")
            .create()
            .expect("producer");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    for i in 0..200 {
        producer
            .send(BaseRecord::<(), _>::to("busy").payload(&format!("m{i}")))
            .unwrap_or_else(|(e, _)| panic!("enqueue: {e}"));
        // One request at a time: each produce waits its turn with the attacker.
        let left = deadline.saturating_duration_since(Instant::now());
        producer.flush(left).unwrap_or_else(|e| {
            panic!(
                "produce {i} after {:?}: {e}; log:\n{}",
                started.elapsed(),
                broker.log()
            )
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let attempts: u64 = attackers.into_iter().map(|a| a.join().unwrap()).sum();
    assert!(attempts > 0);
}

// ---- other clients (installed by .ci/run) ----

/// Runs `sasl_clients.py CLIENT` against `broker` and checks the broker
/// logged `principal` in.
fn python_client(
    broker: &Broker,
    client: &str,
    mechanism: &str,
    user: &str,
    secret: &str,
    principal: &str,
) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sasl_clients.py");
    let topic = format!("py-{client}-{}", mechanism.to_ascii_lowercase());
    common::run_client(
        client,
        &[
            "150",
            "python3",
            script,
            client,
            &broker.bootstrap(),
            &topic,
            "50",
            mechanism,
            user,
            secret,
        ],
        || broker.log(),
    );
    let log = broker.log();
    assert!(
        log.contains(&format!(
            "SASL authentication succeeded principal={principal}"
        )),
        "{client} did not log in as {principal}:\n{log}"
    );
}

#[test]
fn kafka_python_over_scram_sha_512() {
    let broker = sasl_broker("SCRAM-SHA-512", &[]);
    python_client(
        &broker,
        "kafka-python",
        "SCRAM-SHA-512",
        "scram512",
        "s512-secret",
        "User:scram512",
    );
    common::passed("kafka-python", &["security"]);
}

#[test]
fn confluent_kafka_over_scram_sha_512() {
    let broker = sasl_broker("SCRAM-SHA-512", &[]);
    python_client(
        &broker,
        "confluent-kafka",
        "SCRAM-SHA-512",
        "scram512",
        "s512-secret",
        "User:scram512",
    );
    // confluent-kafka is librdkafka, marked by the rdkafka test above.
}

#[test]
fn aiokafka_over_scram_sha_512() {
    let broker = sasl_broker("SCRAM-SHA-512", &[]);
    python_client(
        &broker,
        "aiokafka",
        "SCRAM-SHA-512",
        "scram512",
        "s512-secret",
        "User:scram512",
    );
    common::passed("aiokafka", &["security"]);
}

#[test]
fn confluent_kafka_over_oauthbearer() {
    let dir = tempfile::tempdir().unwrap();
    let url = jwks_file(dir.path());
    let broker = sasl_broker(
        "OAUTHBEARER",
        &[&format!("sasl.oauthbearer.jwks.endpoint.url={url}")],
    );
    let token = jwt(
        serde_json::json!({"sub": "svc-py", "exp": now_s() + 600}),
        JWT_SECRET,
    );
    python_client(
        &broker,
        "confluent-kafka",
        "OAUTHBEARER",
        "-",
        &token,
        "User:svc-py",
    );
}

#[test]
fn kafkajs_over_scram_sha_512() {
    let broker = sasl_broker("SCRAM-SHA-512", &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/roundtrip.js");
    let out = std::process::Command::new("timeout")
        .args([
            "150",
            "node",
            script,
            &broker.bootstrap(),
            "js-sasl",
            "300",
            "1",
        ])
        .env("KAFKAJS_NO_PARTITIONER_WARNING", "1")
        .env("SASL_MECHANISM", "scram-sha-512")
        .env("SASL_USERNAME", "scram512")
        .env("SASL_PASSWORD", "s512-secret")
        .output()
        .expect("node is installed");
    assert!(
        out.status.success(),
        "KafkaJS failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    assert!(broker
        .log()
        .contains("SASL authentication succeeded principal=User:scram512"));
    common::passed("kafkajs", &["security"]);
}

// ---- a cluster ----

/// Brokers started from a [`LocalClusterSpec`] with a SASL listener each;
/// killed on drop.
struct SaslCluster {
    children: Vec<std::process::Child>,
    logs: Vec<std::path::PathBuf>,
}

impl Drop for SaslCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl SaslCluster {
    fn log(&self) -> String {
        self.logs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

/// A SCRAM user added through one broker of three logs in on another:
/// credentials travel in the metadata log every broker replays.
#[test]
fn scram_credentials_reach_every_broker_of_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::cluster_spec(dir.path(), 3);
    spec.overrides = vec![
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512".into(),
        ALICE_PLAIN.into(),
    ];
    let mut cluster = SaslCluster {
        children: Vec::new(),
        logs: Vec::new(),
    };
    // Clients log in; brokers replicate over a plaintext listener of
    // their own (followers do not speak SASL).
    let internal: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    for node in 1..=3 {
        let log = dir.path().join(format!("broker-{node}.log"));
        let mut cmd = spec.command(node);
        cmd.arg("--override")
            .arg(format!(
                "listeners=SASL_PLAINTEXT://127.0.0.1:{},INTERNAL://127.0.0.1:{}",
                spec.ports[node - 1],
                internal[node - 1]
            ))
            .arg("--override")
            .arg(
                "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,\
                 INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            )
            .arg("--override")
            .arg("inter.broker.listener.name=INTERNAL")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        cluster.children.push(cmd.spawn().expect("start sluice"));
        cluster.logs.push(log);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while cluster.log().matches("broker ready").count() < 3 {
        assert!(
            Instant::now() < deadline,
            "cluster not ready:\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let addr = |node: usize| std::net::SocketAddr::from(([127, 0, 0, 1], spec.ports[node - 1]));
    let mut raw = Raw::connect(addr(1));
    assert_eq!(plain_login(&mut raw, "admin", "admin-secret").error_code, 0);
    let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion(
        "erin",
        2,
        "erin-secret",
        4096,
    )]);
    assert_eq!(alter(&mut raw, &req), [("erin".into(), 0)]);
    for node in [2, 3] {
        let consumer: BaseConsumer = ClientConfig::new()
            .set(
                "bootstrap.servers",
                format!("127.0.0.1:{}", spec.ports[node - 1]),
            )
            .set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", "erin")
            .set("sasl.password", "erin-secret")
            .create()
            .unwrap();
        // The change is committed before the answer; another broker may
        // replay it a moment later, so a first refusal is retried.
        let deadline = Instant::now() + Duration::from_secs(60);
        while consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "erin cannot log in to broker {node}:\n{}",
                cluster.log()
            );
        }
    }
    assert!(cluster
        .log()
        .contains("SASL authentication succeeded principal=User:erin"));
}

/// librdkafka re-authenticates (KIP-368) when its session nears its end:
/// a producer that keeps sending across several session lifetimes is
/// never cut off.
#[test]
fn librdkafka_reauthenticates_before_its_session_ends() {
    let broker = sasl_broker("SCRAM-SHA-512", &["connections.max.reauth.ms=2000"]);
    let producer: ThreadedProducer<DefaultProducerContext> =
        client_config(&broker, "SCRAM-SHA-512", "scram512", "s512-secret")
            .set("message.timeout.ms", "60000")
            .create()
            .expect("producer");
    // Time must pass for sessions to end: keep sending until the broker
    // has seen a re-authentication, then some more.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut sent_after = 0;
    for i in 0.. {
        producer
            .send(BaseRecord::<(), _>::to("reauth").payload(&format!("m{i}")))
            .unwrap_or_else(|(e, _)| panic!("enqueue: {e}"));
        producer
            .flush(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("produce {i}: {e}; log:\n{}", broker.log()));
        if broker.log().contains("SASL re-authentication succeeded") {
            sent_after += 1;
            if sent_after == 5 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no re-authentication seen:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !broker.log().contains("expired without re-authentication"),
        "{}",
        broker.log()
    );
}
