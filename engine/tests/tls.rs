//! Named listeners and TLS against a real `sluice` process: listener
//! configurations that must be refused at start-up (each its own test,
//! the message naming the key), librdkafka, kcat and kafka-python over
//! SSL, mutual TLS, Metadata per listener, bad clients that must cost
//! nothing, and a certificate replaced on disk.
//!
//! Certificates are made here with `rcgen` for each test; no key is
//! committed.

mod common;

use common::certs::{Ca, Files};
use common::{free_port, run_client, Broker, Raw};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::util::Timeout;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a client may take for anything here. Generous: shared CI.
const DEADLINE: Duration = Duration::from_secs(60);

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A broker with a PLAINTEXT and an SSL listener (and whatever else
/// `extra` sets); returns it with both ports.
fn tls_broker(keystore: &Path, extra: &[String]) -> (Broker, u16, u16) {
    let (plain, ssl) = (free_port(), free_port());
    let mut overrides = vec![
        format!("listeners=PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl}"),
        format!("ssl.keystore.location={}", path(keystore)),
    ];
    overrides.extend(extra.iter().cloned());
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    (Broker::start(1, &refs), plain, ssl)
}

/// librdkafka settings for an SSL client trusting `ca`.
fn ssl_client(port: u16, ca: &Path) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", path(ca))
        .set("message.timeout.ms", "60000");
    c
}

fn produce(config: &ClientConfig, topic: &str, count: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().unwrap();
    for i in 0..count {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(common::is_transient(&e), "send: {e}");
                    record = r;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Timeout::After(DEADLINE)).unwrap();
    assert_eq!(producer.in_flight_count(), 0, "every message acknowledged");
}

/// Reads `count` messages of partition 0 of `topic` from the start.
fn consume(config: &ClientConfig, topic: &str, count: usize) -> Vec<String> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", format!("g-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < count {
        assert!(
            start.elapsed() < DEADLINE,
            "consumed {} of {count}",
            got.len()
        );
        if let Some(m) = common::poll_message(&consumer, || format!("consuming {topic}")) {
            use rdkafka::Message;
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    got
}

/// Starts `sluice` with `overrides` and returns what it printed on
/// failing; panics if it started.
fn refused(overrides: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--cores")
        .arg("1");
    for o in overrides {
        cmd.arg("--override").arg(o);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(!status.success(), "sluice started: {err}");
            return err;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("sluice neither started nor refused {overrides:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_names(err: &str, key: &str, reason: &str) {
    assert!(
        err.contains(&format!("'{key}'")) && err.contains(reason),
        "expected a refusal naming '{key}' ({reason}), got:\n{err}"
    );
}

#[test]
fn an_unknown_security_protocol_is_refused() {
    let err = refused(&["listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SECURE:TLS".into()]);
    assert_names(
        &err,
        "listener.security.protocol.map",
        "unknown security protocol 'TLS'",
    );
}

#[test]
fn a_listener_without_a_protocol_map_entry_is_refused() {
    let err = refused(&[format!("listeners=CUSTOM://127.0.0.1:{}", free_port())]);
    assert_names(
        &err,
        "listeners",
        "listener CUSTOM has no security protocol",
    );
}

#[test]
fn a_tls_listener_without_a_certificate_is_refused() {
    let err = refused(&[format!("listeners=SSL://127.0.0.1:{}", free_port())]);
    assert_names(
        &err,
        "ssl.keystore.location",
        "uses TLS and has no certificate",
    );
    // SASL_SSL is TLS too.
    let err = refused(&[format!("listeners=SASL_SSL://127.0.0.1:{}", free_port())]);
    assert_names(
        &err,
        "ssl.keystore.location",
        "uses TLS and has no certificate",
    );
}

#[test]
fn two_listeners_on_one_port_are_refused() {
    let port = free_port();
    let err = refused(&[format!(
        "listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{port}"
    )]);
    assert_names(&err, "listeners", &format!("both use port {port}"));
}

#[test]
fn duplicate_listener_names_are_refused() {
    let err = refused(&[format!(
        "listeners=PLAINTEXT://127.0.0.1:{},PLAINTEXT://127.0.0.1:{}",
        free_port(),
        free_port()
    )]);
    assert_names(&err, "listeners", "listener name PLAINTEXT appears twice");
}

#[test]
fn an_advertised_listener_naming_no_listener_is_refused() {
    let err = refused(&["advertised.listeners=SSL://broker.example:9093".into()]);
    assert_names(&err, "advertised.listeners", "SSL names no listener");
}

#[test]
fn an_unknown_inter_broker_listener_is_refused() {
    let err = refused(&["inter.broker.listener.name=REPLICATION".into()]);
    assert_names(
        &err,
        "inter.broker.listener.name",
        "REPLICATION names no broker listener",
    );
}

#[test]
fn unknown_cipher_suites_and_protocols_are_refused() {
    let files = Files::new();
    let ks = files.keystore("broker.pem", &Ca::new("ca"));
    let base = vec![
        format!("listeners=SSL://127.0.0.1:{}", free_port()),
        format!("ssl.keystore.location={}", path(&ks)),
    ];
    let mut suites = base.clone();
    suites.push("ssl.cipher.suites=TLS_RSA_WITH_RC4_128_MD5".into());
    assert_names(
        &refused(&suites),
        "ssl.cipher.suites",
        "unknown cipher suite",
    );
    let mut old = base.clone();
    old.push("ssl.enabled.protocols=TLSv1.1".into());
    assert_names(
        &refused(&old),
        "ssl.enabled.protocols",
        "TLSv1.1 is not offered",
    );
    // A per-listener override is named as such.
    let mut per_listener = base;
    per_listener.push("listener.name.ssl.ssl.client.auth=required".into());
    assert_names(
        &refused(&per_listener),
        "listener.name.ssl.ssl.client.auth",
        "no CA certificates",
    );
}

#[test]
fn a_keystore_that_does_not_load_is_refused() {
    let files = Files::new();
    let bad = files.write("broken.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n");
    let err = refused(&[
        format!("listeners=SSL://127.0.0.1:{}", free_port()),
        format!("ssl.keystore.location={}", path(&bad)),
    ]);
    assert_names(&err, "ssl.keystore.location", "PEM");
}

#[test]
fn rdkafka_produces_and_consumes_over_ssl() {
    let files = Files::new();
    let ca = Ca::new("test-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let ks = files.keystore("broker.pem", &ca);
    let (mut broker, _plain, ssl) = tls_broker(&ks, &[]);
    let config = ssl_client(ssl, &ca_file);
    produce(&config, "over-tls", 2000);
    let got = consume(&config, "over-tls", 2000);
    assert_eq!(got.first().map(String::as_str), Some("v0"));
    assert_eq!(got.last().map(String::as_str), Some("v1999"));
    broker.stop();
    // The fetches went out encrypted, none by sendfile.
    let log = broker.log();
    let stopped = log
        .lines()
        .find(|l| l.contains("broker stopped"))
        .expect("a stop line");
    assert!(stopped.contains("sendfile_bytes=0"), "{stopped}");
    assert!(!stopped.contains("tls_bytes=0"), "{stopped}");
    common::passed("librdkafka", &["security"]);
}

#[test]
fn metadata_answers_the_address_of_the_listener_asked() {
    let files = Files::new();
    let ca = Ca::new("test-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let ks = files.keystore("broker.pem", &ca);
    let (_broker, plain, ssl) = tls_broker(&ks, &[]);
    let ports = |config: ClientConfig| -> Vec<(String, i32)> {
        let consumer: BaseConsumer = config.create().unwrap();
        let md = consumer
            .fetch_metadata(None, Timeout::After(DEADLINE))
            .unwrap();
        md.brokers()
            .iter()
            .map(|b| (b.host().to_string(), b.port()))
            .collect()
    };
    let mut plain_config = ClientConfig::new();
    plain_config.set("bootstrap.servers", format!("127.0.0.1:{plain}"));
    assert_eq!(
        ports(plain_config),
        vec![("127.0.0.1".to_string(), i32::from(plain))]
    );
    assert_eq!(
        ports(ssl_client(ssl, &ca_file)),
        vec![("127.0.0.1".to_string(), i32::from(ssl))]
    );
}

#[test]
fn advertised_listeners_are_answered_per_listener() {
    let files = Files::new();
    let ca = Ca::new("test-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let ks = files.keystore("broker.pem", &ca);
    let (plain, ssl) = (free_port(), free_port());
    // The SSL listener is advertised under another name (which the
    // certificate carries), the plaintext one as bound.
    let overrides = [
        format!("listeners=PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl}"),
        format!("advertised.listeners=SSL://localhost:{ssl}"),
        format!("ssl.keystore.location={}", path(&ks)),
    ];
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let _broker = Broker::start(1, &refs);
    let consumer: BaseConsumer = ssl_client(ssl, &ca_file).create().unwrap();
    let md = consumer
        .fetch_metadata(None, Timeout::After(DEADLINE))
        .unwrap();
    let got: Vec<(&str, i32)> = md.brokers().iter().map(|b| (b.host(), b.port())).collect();
    assert_eq!(got, vec![("localhost", i32::from(ssl))]);
    let mut plain_config = ClientConfig::new();
    plain_config.set("bootstrap.servers", format!("127.0.0.1:{plain}"));
    let consumer: BaseConsumer = plain_config.create().unwrap();
    let md = consumer
        .fetch_metadata(None, Timeout::After(DEADLINE))
        .unwrap();
    let got: Vec<(&str, i32)> = md.brokers().iter().map(|b| (b.host(), b.port())).collect();
    assert_eq!(got, vec![("127.0.0.1", i32::from(plain))]);
}

/// Whether an SSL client configured by `config` reads metadata within
/// `max`.
fn reads_metadata(config: &ClientConfig, max: Duration) -> bool {
    let consumer: BaseConsumer = config
        .clone()
        .set("socket.connection.setup.timeout.ms", "10000")
        .create()
        .unwrap();
    consumer.fetch_metadata(None, Timeout::After(max)).is_ok()
}

/// An SSL client that must get through: the full deadline.
fn can_connect(config: &ClientConfig) -> bool {
    reads_metadata(config, DEADLINE)
}

/// An SSL client the broker must refuse. librdkafka retries a refused
/// handshake until the call's timeout, so this waits 15 s, not the full
/// deadline; the broker's log lines for each refusal are checked too.
fn refused_client(config: &ClientConfig) -> bool {
    !reads_metadata(config, Duration::from_secs(15))
}

#[test]
fn mutual_tls_refuses_clients_without_a_good_certificate() {
    let files = Files::new();
    let ca = Ca::new("test-ca");
    let other = Ca::new("other-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let ks = files.keystore("broker.pem", &ca);
    let (mut broker, _plain, ssl) = tls_broker(
        &ks,
        &[
            "ssl.client.auth=required".into(),
            format!("ssl.truststore.location={}", path(&ca_file)),
        ],
    );
    let with_cert = |(cert, key): (String, String), name: &str| {
        let mut c = ssl_client(ssl, &ca_file);
        c.set(
            "ssl.certificate.location",
            path(&files.write(&format!("{name}.crt"), &cert)),
        )
        .set(
            "ssl.key.location",
            path(&files.write(&format!("{name}.key"), &key)),
        );
        c
    };
    let alice = with_cert(
        ca.issue(&[("O", "Acme"), ("OU", "eng"), ("CN", "alice")], false),
        "alice",
    );
    produce(&alice, "mtls", 10);
    assert_eq!(consume(&alice, "mtls", 10).len(), 10);
    assert!(refused_client(&ssl_client(ssl, &ca_file)), "no certificate");
    let forged = with_cert(other.issue(&[("CN", "mallory")], false), "mallory");
    assert!(refused_client(&forged), "signed by another CA");
    let expired = with_cert(ca.issue(&[("CN", "old")], true), "old");
    assert!(refused_client(&expired), "expired");
    // Each refusal was logged with the peer's address; alice still works.
    produce(&alice, "mtls", 10);
    broker.stop();
    let failures = broker
        .log()
        .matches("TLS handshake failed; closing")
        .count();
    assert!(failures >= 3, "{}", broker.log());
}

#[test]
fn the_principal_is_the_certificate_subject_through_the_mapping_rules() {
    // A rule list that maps only admins: alice's certificate has no
    // principal, so she is refused, and the log shows her DN as RFC 2253
    // prints it (most specific first).
    let files = Files::new();
    let ca = Ca::new("test-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let ks = files.keystore("broker.pem", &ca);
    let (broker, _plain, ssl) = tls_broker(
        &ks,
        &[
            "ssl.client.auth=required".into(),
            format!("ssl.truststore.location={}", path(&ca_file)),
            "ssl.principal.mapping.rules=RULE:^CN=([a-z]+),OU=admins,O=Acme$/$1/U".into(),
        ],
    );
    let client = |cn: &str, ou: &str| {
        let (cert, key) = ca.issue(&[("O", "Acme"), ("OU", ou), ("CN", cn)], false);
        let mut c = ssl_client(ssl, &ca_file);
        c.set(
            "ssl.certificate.location",
            path(&files.write(&format!("{cn}.crt"), &cert)),
        )
        .set(
            "ssl.key.location",
            path(&files.write(&format!("{cn}.key"), &key)),
        );
        c
    };
    assert!(can_connect(&client("root", "admins")), "{}", broker.log());
    assert!(refused_client(&client("alice", "eng")));
    let log = broker.log();
    assert!(
        log.contains("no ssl.principal.mapping.rules rule applies to CN=alice,OU=eng,O=Acme"),
        "{log}"
    );
}

/// Whether the broker closes `raw` (after, perhaps, a TLS alert saying
/// why) rather than keeping it open past the read timeout.
fn closes(raw: &mut Raw) -> bool {
    use std::io::Read;
    let mut rest = Vec::new();
    match raw.stream.read_to_end(&mut rest) {
        Ok(_) => rest.len() < 64,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

#[test]
fn bad_clients_are_closed_while_others_are_served() {
    let files = Files::new();
    let ca = Ca::new("test-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let ks = files.keystore("broker.pem", &ca);
    let (broker, plain, ssl) = tls_broker(&ks, &[]);
    let good = ssl_client(ssl, &ca_file);
    let producer: ThreadedProducer<DefaultProducerContext> = good.create().unwrap();
    let mut sent = 0;
    let send_one = |sent: &mut usize| {
        let v = format!("m{sent}");
        producer
            .send(BaseRecord::<(), _>::to("steady").payload(&v))
            .unwrap();
        producer.flush(Timeout::After(DEADLINE)).unwrap();
        assert_eq!(producer.in_flight_count(), 0);
        *sent += 1;
    };
    send_one(&mut sent);
    let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // A plaintext Kafka request on the TLS port.
    let mut plaintext = Raw::connect(addr(ssl));
    plaintext.send_bytes(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert!(closes(&mut plaintext), "plaintext on the TLS port");
    send_one(&mut sent);
    // A TLS ClientHello on the plaintext port (its first bytes read as a
    // length far beyond socket.request.max.bytes).
    let mut hello = Raw::connect(addr(plain));
    hello.send_bytes(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ]);
    assert!(closes(&mut hello), "TLS on the plaintext port");
    send_one(&mut sent);
    // A handshake cut short: the start of a ClientHello, then nothing;
    // the handshake deadline closes it.
    let mut silent = Raw::connect(addr(ssl));
    silent.send_bytes(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    send_one(&mut sent);
    assert!(closes(&mut silent), "a handshake past its deadline");
    // A handshake truncated by the peer.
    let truncated = Raw::connect(addr(ssl));
    drop(truncated);
    send_one(&mut sent);
    let log = broker.log();
    assert!(log.contains("TLS handshake failed; closing"), "{log}");
    assert!(log.contains("TLS handshake not done within"), "{log}");
    assert_eq!(consume(&good, "steady", sent).len(), sent);
}

#[test]
fn a_certificate_replaced_on_disk_is_served_on_the_next_handshake() {
    let files = Files::new();
    let (old_ca, new_ca) = (Ca::new("old-ca"), Ca::new("new-ca"));
    let old_ca_file = files.write("old-ca.pem", &old_ca.pem());
    let new_ca_file = files.write("new-ca.pem", &new_ca.pem());
    let ks = files.keystore("broker.pem", &old_ca);
    let (mut broker, _plain, ssl) = tls_broker(&ks, &[]);
    assert!(can_connect(&ssl_client(ssl, &old_ca_file)));
    let both = [&rustls::version::TLS12, &rustls::version::TLS13];
    assert!(negotiate(ssl, &new_ca.pem(), &both, None).is_err());
    // Replaced by a rename, as certificate tools do.
    let fresh = files.keystore("fresh.pem", &new_ca);
    std::fs::rename(&fresh, &ks).unwrap();
    assert!(can_connect(&ssl_client(ssl, &new_ca_file)));
    assert!(negotiate(ssl, &old_ca.pem(), &both, None).is_err());
    assert!(negotiate(ssl, &new_ca.pem(), &both, None).is_ok());
    // SIGHUP reloads too (here: nothing changed, the same certificate).
    broker.signal(libc::SIGHUP);
    let start = Instant::now();
    while !broker.log().contains("SIGHUP: reloading TLS certificates") {
        assert!(start.elapsed() < DEADLINE, "{}", broker.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(can_connect(&ssl_client(ssl, &new_ca_file)));
    broker.stop();
}

#[test]
fn kcat_produces_and_consumes_over_ssl() {
    let files = Files::new();
    let ca = Ca::new("test-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let ks = files.keystore("broker.pem", &ca);
    let (broker, _plain, ssl) = tls_broker(&ks, &[]);
    let b = format!("127.0.0.1:{ssl}");
    let ca_arg = format!("ssl.ca.location={}", path(&ca_file));
    let input: String = (0..100).map(|i| format!("line-{i}\n")).collect();
    let mut child = Command::new("timeout")
        .args([
            "60",
            "kcat",
            "-b",
            &b,
            "-X",
            "security.protocol=ssl",
            "-X",
            &ca_arg,
        ])
        .args(["-P", "-t", "kcat-tls"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kcat is installed (apt-get install kcat)");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    assert!(child.wait().unwrap().success(), "{}", broker.log());
    let out = run_client(
        "kcat over SSL",
        &[
            "60",
            "kcat",
            "-b",
            &b,
            "-X",
            "security.protocol=ssl",
            "-X",
            &ca_arg,
            "-C",
            "-t",
            "kcat-tls",
            "-e",
            "-q",
        ],
        || broker.log(),
    );
    assert_eq!(out, input);
    common::passed("kcat", &["security"]);
}

#[test]
fn kafka_python_produces_and_consumes_over_ssl() {
    let files = Files::new();
    let ca = Ca::new("test-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let ks = files.keystore("broker.pem", &ca);
    let (broker, _plain, ssl) = tls_broker(&ks, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/ssl_roundtrip.py");
    let out = run_client(
        "kafka-python over SSL",
        &[
            "120",
            "python3",
            script,
            &format!("127.0.0.1:{ssl}"),
            "py-tls",
            "500",
            &path(&ca_file),
        ],
        || broker.log(),
    );
    assert!(out.contains("ok 500"), "{out}");
    common::passed("kafka-python", &["security"]);
}

/// Three brokers whose only listener is SSL with `ssl.client.auth=required`:
/// followers fetch from leaders over it with the cluster's certificate.
/// Killed on drop.
struct TlsCluster {
    children: Vec<std::process::Child>,
    logs: Vec<PathBuf>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl TlsCluster {
    /// Broker `i` shows `keystores[i]`; all trust `truststore`; the
    /// first `voters` form the controller quorum. Each broker's only
    /// listener is SSL.
    fn start(keystores: &[&Path], truststore: &Path, voters: usize, extra: &[&str]) -> TlsCluster {
        TlsCluster::start_with(keystores, truststore, voters, |_node, port| {
            let mut o = vec![format!("listeners=SSL://127.0.0.1:{port}")];
            o.extend(extra.iter().map(|e| e.to_string()));
            o
        })
    }

    /// The same with `settings(node, port)` giving each broker's own
    /// settings, its `listeners` among them.
    fn start_with(
        keystores: &[&Path],
        truststore: &Path,
        voters: usize,
        settings: impl Fn(usize, u16) -> Vec<String>,
    ) -> TlsCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = common::cluster_spec(&dir.path().join("data"), 3);
        spec.voters = voters;
        let mut cluster = TlsCluster {
            children: Vec::new(),
            logs: Vec::new(),
            ports: spec.ports.clone(),
            _dir: dir,
        };
        for node in 1..=3 {
            let log = spec.data_dir.with_file_name(format!("broker-{node}.log"));
            let mut cmd = spec.command(node);
            for o in [
                format!("ssl.keystore.location={}", path(keystores[node - 1])),
                format!("ssl.truststore.location={}", path(truststore)),
                "ssl.client.auth=required".to_string(),
            ]
            .into_iter()
            .chain(settings(node, spec.ports[node - 1]))
            {
                cmd.arg("--override").arg(o);
            }
            let child = cmd
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            cluster.children.push(child);
            cluster.logs.push(log);
        }
        let start = Instant::now();
        for log in &cluster.logs {
            while !std::fs::read_to_string(log)
                .unwrap_or_default()
                .contains("broker ready")
            {
                assert!(start.elapsed() < DEADLINE, "{}", cluster.log());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// Stops every broker with SIGTERM and waits for each to exit.
    fn stop(&mut self) {
        for c in &mut self.children {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            assert!(c.wait().unwrap().success(), "{}", "a broker failed to stop");
        }
        self.children.clear();
    }

    fn log(&self) -> String {
        self.logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

#[test]
fn three_brokers_replicate_over_mutual_tls() {
    let files = Files::new();
    let ca = Ca::new("cluster-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let ks = files.keystore("broker.pem", &ca);
    let cluster = TlsCluster::start(&[&ks, &ks, &ks], &ca_file, 3, &[]);
    let (cert, key) = ca.issue(&[("O", "Acme"), ("CN", "app")], false);
    let mut client = ssl_client(cluster.ports[0], &ca_file);
    client
        .set(
            "bootstrap.servers",
            cluster
                .ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .set(
            "ssl.certificate.location",
            path(&files.write("app.crt", &cert)),
        )
        .set("ssl.key.location", path(&files.write("app.key", &key)))
        .set("acks", "all");
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        client.create().unwrap();
    let topic =
        rdkafka::admin::NewTopic::new("replicated", 1, rdkafka::admin::TopicReplication::Fixed(3));
    let created = futures::executor::block_on(
        admin.create_topics(&[topic], &rdkafka::admin::AdminOptions::new()),
    )
    .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    produce(&client, "replicated", 300);
    // Every replica caught up: the ISR is all three brokers.
    let consumer: BaseConsumer = client.create().unwrap();
    let start = Instant::now();
    loop {
        let md = consumer
            .fetch_metadata(Some("replicated"), Timeout::After(DEADLINE))
            .unwrap();
        let isr = md.topics()[0]
            .partitions()
            .first()
            .map_or(0, |p| p.isr().len());
        if isr == 3 {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "ISR {isr}; log:\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(consume(&client, "replicated", 300).len(), 300);
}

/// Runs a TLS handshake with rustls against `port`, trusting `ca_pem`,
/// offering only `versions` (and, if given, only `suite`); returns the
/// negotiated protocol version and cipher suite.
fn negotiate(
    port: u16,
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suite: Option<&str>,
) -> Result<(String, String), String> {
    negotiate_as(port, ca_pem, versions, suite, None)
}

/// [`negotiate`], showing the client certificate and key `identity`
/// (PEM) whatever CAs the broker names.
fn negotiate_as(
    port: u16,
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suite: Option<&str>,
    identity: Option<(&str, &str)>,
) -> Result<(String, String), String> {
    use rustls::pki_types::pem::PemObject;
    use std::io::Write;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(name) = suite {
        provider
            .cipher_suites
            .retain(|s| format!("{:?}", s.suite()).replacen("TLS13_", "TLS_", 1) == name);
        assert_eq!(provider.cipher_suites.len(), 1, "{name}");
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    // An ApiVersions v0 request: the handshake runs on the first write,
    // and the answer shows the session carries Kafka requests.
    tls.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0, 0])
        .map_err(|e| e.to_string())?;
    let mut len = [0u8; 4];
    std::io::Read::read_exact(&mut tls, &mut len).map_err(|e| e.to_string())?;
    let version = format!("{:?}", tls.conn.protocol_version().unwrap());
    let suite = format!("{:?}", tls.conn.negotiated_cipher_suite().unwrap().suite());
    Ok((version, suite))
}

#[test]
fn enabled_protocols_and_cipher_suites_limit_what_is_negotiated() {
    let files = Files::new();
    let ca = Ca::new("test-ca");
    let ks = files.keystore("broker.pem", &ca);
    let tls12 = "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256";
    let (_broker, _plain, ssl) = tls_broker(
        &ks,
        &[
            "ssl.enabled.protocols=TLSv1.2".into(),
            format!("ssl.cipher.suites={tls12},TLS_AES_128_GCM_SHA256"),
        ],
    );
    let all = [&rustls::version::TLS12, &rustls::version::TLS13];
    assert_eq!(
        negotiate(ssl, &ca.pem(), &all, None).unwrap(),
        ("TLSv1_2".to_string(), tls12.to_string())
    );
    assert!(negotiate(ssl, &ca.pem(), &[&rustls::version::TLS13], None).is_err());
    let other = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384";
    assert!(negotiate(ssl, &ca.pem(), &all, Some(other)).is_err());
}

#[test]
fn per_listener_settings_and_inline_pem_override_the_broker_ones() {
    let files = Files::new();
    let (ca, internal_ca) = (Ca::new("public-ca"), Ca::new("internal-ca"));
    let ks = files.keystore("broker.pem", &ca);
    let (chain, key) = internal_ca.issue(&[("CN", "localhost")], false);
    let (ssl, internal) = (free_port(), free_port());
    let overrides = [
        format!("listeners=SSL://127.0.0.1:{ssl},INTERNAL://127.0.0.1:{internal}"),
        "listener.security.protocol.map=SSL:SSL,INTERNAL:SSL".to_string(),
        format!("ssl.keystore.location={}", path(&ks)),
        format!("listener.name.internal.ssl.keystore.certificate.chain={chain}"),
        format!("listener.name.internal.ssl.keystore.key={key}"),
        "listener.name.internal.ssl.enabled.protocols=TLSv1.3".to_string(),
    ];
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let _broker = Broker::start(1, &refs);
    let all = [&rustls::version::TLS12, &rustls::version::TLS13];
    assert!(negotiate(ssl, &ca.pem(), &[&rustls::version::TLS12], None).is_ok());
    assert!(
        negotiate(internal, &ca.pem(), &all, None).is_err(),
        "its own certificate"
    );
    assert!(negotiate(internal, &internal_ca.pem(), &all, None).is_ok());
    assert!(
        negotiate(
            internal,
            &internal_ca.pem(),
            &[&rustls::version::TLS12],
            None
        )
        .is_err(),
        "its own protocols"
    );
}

#[test]
fn requested_client_auth_takes_clients_with_or_without_a_certificate() {
    let files = Files::new();
    let ca = Ca::new("test-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let ks = files.keystore("broker.pem", &ca);
    let (broker, _plain, ssl) = tls_broker(
        &ks,
        &[
            "ssl.client.auth=requested".into(),
            format!("ssl.truststore.certificates={}", ca.pem()),
        ],
    );
    assert!(can_connect(&ssl_client(ssl, &ca_file)), "no certificate");
    let both = [&rustls::version::TLS12, &rustls::version::TLS13];
    let (cert, key) = ca.issue(&[("CN", "alice")], false);
    assert!(negotiate_as(ssl, &ca.pem(), &both, None, Some((&cert, &key))).is_ok());
    let (cert, key) = Ca::new("other-ca").issue(&[("CN", "mallory")], false);
    let forged = negotiate_as(ssl, &ca.pem(), &both, None, Some((&cert, &key)));
    assert!(
        forged.is_err(),
        "a certificate shown is checked: {}",
        broker.log()
    );
}

#[test]
fn describe_configs_names_the_private_key_but_never_shows_it() {
    let files = Files::new();
    let ca = Ca::new("test-ca");
    let (chain, key) = ca.issue(&[("CN", "localhost")], false);
    let (plain, ssl) = (free_port(), free_port());
    let overrides = [
        format!("listeners=PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl}"),
        format!("ssl.keystore.certificate.chain={chain}"),
        format!("ssl.keystore.key={key}"),
    ];
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let broker = Broker::start(1, &refs);
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", format!("127.0.0.1:{plain}"))
            .create()
            .unwrap();
    let described = futures::executor::block_on(admin.describe_configs(
        &[rdkafka::admin::ResourceSpecifier::Broker(1)],
        &rdkafka::admin::AdminOptions::new(),
    ))
    .unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    let entry = |name: &str| {
        resource
            .entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} listed"))
    };
    let secret = entry("ssl.keystore.key");
    assert!(secret.is_sensitive && secret.value.is_none(), "{secret:?}");
    // (--override trims the value, as it trims every value.)
    assert_eq!(
        entry("ssl.keystore.certificate.chain").value.as_deref(),
        Some(chain.trim())
    );
    let text = format!("{resource:?}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    drop(files);
    drop(broker);
}

#[test]
fn a_broker_without_the_cluster_certificate_cannot_fetch_from_leaders() {
    // Broker 3's certificate comes from another CA. It still registers
    // (this cluster's controller listener is PLAINTEXT), but no leader lets it
    // fetch, nor will brokers 1 and 2 fetch from it: it drops out of
    // every in-sync replica set, and the refusals are logged.
    let files = Files::new();
    let (ca, rogue) = (Ca::new("cluster-ca"), Ca::new("rogue-ca"));
    let ca_file = files.write("ca.pem", &ca.pem());
    let ks = files.keystore("broker.pem", &ca);
    let rogue_ks = files.keystore("rogue.pem", &rogue);
    let cluster = TlsCluster::start(
        &[&ks, &ks, &rogue_ks],
        &ca_file,
        // Broker 1 alone is the controller, so that clients (which cannot
        // reach broker 3 either) can create topics.
        1,
        &["replica.lag.time.max.ms=2000"],
    );
    let (cert, key) = ca.issue(&[("CN", "app")], false);
    let mut client = ssl_client(cluster.ports[0], &ca_file);
    client
        .set(
            "ssl.certificate.location",
            path(&files.write("app.crt", &cert)),
        )
        .set("ssl.key.location", path(&files.write("app.key", &key)));
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        client.create().unwrap();
    let topic =
        rdkafka::admin::NewTopic::new("guarded", 3, rdkafka::admin::TopicReplication::Fixed(3));
    let created = futures::executor::block_on(
        admin.create_topics(&[topic], &rdkafka::admin::AdminOptions::new()),
    )
    .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let consumer: BaseConsumer = client.create().unwrap();
    let start = Instant::now();
    loop {
        let md = consumer
            .fetch_metadata(Some("guarded"), Timeout::After(DEADLINE))
            .unwrap();
        let partitions = md.topics()[0].partitions();
        let led_by_others: Vec<_> = partitions.iter().filter(|p| p.leader() != 3).collect();
        let all_out = !led_by_others.is_empty()
            && partitions.len() == 3
            && led_by_others.iter().all(|p| !p.isr().contains(&3));
        if all_out {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "broker 3 still in sync; log:\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = cluster.log();
    assert!(log.contains("TLS handshake failed; closing"), "{log}");
}

/// A TLS connection to `port` trusting `ca_pem`, for raw Kafka requests.
fn tls_stream(
    port: u16,
    ca_pem: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Sends `req` as `key` v`version` over `stream` and decodes the answer.
fn call_over<S: std::io::Read + std::io::Write, Req, Resp>(
    stream: &mut S,
    key: kafka_protocol::messages::ApiKey,
    version: i16,
    req: &Req,
) -> Resp
where
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    use kafka_protocol::messages::{RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable};
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7);
    let mut buf = bytes::BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    stream.write_all(&frame).unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).unwrap();
    let mut body = bytes::Bytes::from(body);
    let h = ResponseHeader::decode(&mut body, key.response_header_version(version)).unwrap();
    assert_eq!(h.correlation_id, 7);
    Resp::decode(&mut body, version).unwrap()
}

#[test]
fn describe_cluster_and_find_coordinator_answer_the_listener_asked() {
    use kafka_protocol::messages::{
        ApiKey, DescribeClusterRequest, DescribeClusterResponse, FindCoordinatorRequest,
        FindCoordinatorResponse,
    };
    let files = Files::new();
    let ca = Ca::new("test-ca");
    let ks = files.keystore("broker.pem", &ca);
    let (plain, ssl) = (free_port(), free_port());
    let overrides = [
        format!("listeners=PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl}"),
        format!("advertised.listeners=SSL://localhost:{ssl}"),
        format!("ssl.keystore.location={}", path(&ks)),
    ];
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let _broker = Broker::start(1, &refs);
    let mut tls = tls_stream(ssl, &ca.pem());
    let mut raw = Raw::connect(std::net::SocketAddr::from(([127, 0, 0, 1], plain)));
    let cluster: DescribeClusterResponse = call_over(
        &mut tls,
        ApiKey::DescribeCluster,
        0,
        &DescribeClusterRequest::default(),
    );
    let got: Vec<(String, i32)> = cluster
        .brokers
        .iter()
        .map(|b| (b.host.to_string(), b.port))
        .collect();
    assert_eq!(got, vec![("localhost".to_string(), i32::from(ssl))]);
    let cluster: DescribeClusterResponse = call_over(
        &mut raw.stream,
        ApiKey::DescribeCluster,
        0,
        &DescribeClusterRequest::default(),
    );
    assert_eq!(cluster.brokers[0].port, i32::from(plain));
    // The coordinator is there once the offsets topic is: ask until it is.
    let find = FindCoordinatorRequest::default().with_key("g".into());
    let start = Instant::now();
    let coordinator = |stream: &mut dyn FnMut() -> FindCoordinatorResponse| loop {
        let r = stream();
        if r.error_code == 0 {
            return (r.host.to_string(), r.port);
        }
        assert!(
            start.elapsed() < DEADLINE,
            "FindCoordinator: {}",
            r.error_code
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        coordinator(&mut || call_over(&mut tls, ApiKey::FindCoordinator, 3, &find)),
        ("localhost".to_string(), i32::from(ssl))
    );
    assert_eq!(
        coordinator(&mut || call_over(&mut raw.stream, ApiKey::FindCoordinator, 3, &find)),
        ("127.0.0.1".to_string(), i32::from(plain))
    );
}

#[test]
fn replication_runs_on_the_inter_broker_listener() {
    // Clients use PLAINTEXT; inter.broker.listener.name=SSL sends the
    // followers' fetches over mutual TLS, so the leaders' encrypted
    // bytes (tls_bytes) are the replicas' fetches.
    let files = Files::new();
    let ca = Ca::new("cluster-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let ks = files.keystore("broker.pem", &ca);
    let ssl: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut cluster = TlsCluster::start_with(&[&ks, &ks, &ks], &ca_file, 3, |node, port| {
        vec![
            format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{}",
                ssl[node - 1]
            ),
            "inter.broker.listener.name=SSL".to_string(),
        ]
    });
    let plain = cluster.ports.clone();
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", format!("127.0.0.1:{}", plain[0]))
        .set("acks", "all")
        .set("message.timeout.ms", "60000");
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        client.create().unwrap();
    let topic =
        rdkafka::admin::NewTopic::new("internal", 1, rdkafka::admin::TopicReplication::Fixed(3));
    let created = futures::executor::block_on(
        admin.create_topics(&[topic], &rdkafka::admin::AdminOptions::new()),
    )
    .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    produce(&client, "internal", 300);
    assert_eq!(consume(&client, "internal", 300).len(), 300);
    cluster.stop();
    let log = cluster.log();
    let tls_bytes: u64 = log
        .lines()
        .filter(|l| l.contains("broker stopped"))
        .filter_map(|l| l.split("tls_bytes=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(tls_bytes > 0, "no replica fetch went over TLS:\n{log}");
}
