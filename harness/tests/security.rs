//! The harness's client over TLS and SASL against Apache Kafka itself: one
//! KRaft node (the jars `scripts/kafka.sh fetch` brings) with an SSL
//! listener that requires client certificates, a SASL_SSL listener with
//! PLAIN and SCRAM-SHA-512, and a SASL_PLAINTEXT listener with SCRAM-SHA-512
//! whose sessions expire every few seconds (KIP-368). Certificates are made
//! here with rcgen, fresh each run; the SCRAM user is created when Kafka's
//! storage is formatted.
//!
//! Each protocol runs a short workload (produce and consume, a few thousand
//! messages, consumers in a group) and the results must count every
//! message. Then the ways a secured connection must fail: a wrong password,
//! a mechanism the listener does not enable, a certificate that does not
//! name the host.

mod kafka;
use kafka::{common_properties, free_port, KafkaNode};
mod secured;
use secured::{make_pki, run_secured, Pki};
use sluice_harness::client::admin;
use sluice_harness::client::conn::Connection;
use sluice_harness::client::endpoint::Endpoint;
use sluice_harness::client::error::ClientError;
use sluice_harness::client::security::Security;
use sluice_harness::workload::security::SecurityProps;
use std::path::Path;
use std::time::{Duration, Instant};

const CLUSTER_ID: &str = "c2x1aWNlLXNlY3VyaXR5MQ";
const PASSWORD: &str = "alice-secret";
/// The SASL_PLAINTEXT listener's session lifetime: short, so a run of a
/// few seconds must re-authenticate on every connection.
const REAUTH_MS: u64 = 4_000;

struct Kafka {
    /// Runs until the test ends.
    _node: KafkaNode,
    pki: Pki,
    ssl: u16,
    sasl_ssl: u16,
    sasl_plaintext: u16,
}

impl Kafka {
    fn start() -> Kafka {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), "sluice-bench test CA");
        let (plaintext, controller, ssl, sasl_ssl, sasl_plaintext) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let plain_jaas = format!(
            "org.apache.kafka.common.security.plain.PlainLoginModule required user_alice=\"{PASSWORD}\";"
        );
        let scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
        let props = format!(
            "listeners=PLAINTEXT://127.0.0.1:{plaintext},CONTROLLER://127.0.0.1:{controller},SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl_ssl},SASL_PLAINTEXT://127.0.0.1:{sasl_plaintext}
advertised.listeners=PLAINTEXT://127.0.0.1:{plaintext},SSL://localhost:{ssl},SASL_SSL://localhost:{sasl_ssl},SASL_PLAINTEXT://127.0.0.1:{sasl_plaintext}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,SASL_PLAINTEXT:SASL_PLAINTEXT
{common}ssl.keystore.type=PEM
ssl.keystore.location={server}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
listener.name.ssl.ssl.client.auth=required
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config={plain_jaas}
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram_jaas}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram_jaas}
listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram_jaas}
listener.name.sasl_plaintext.scram-sha-512.connections.max.reauth.ms={REAUTH_MS}
",
            common = common_properties(controller, &dir.path().join("data")),
            server = pki.server.display(),
            ca = pki.ca.display(),
        );
        let scram = |mechanism: &str| {
            [
                "--add-scram".to_string(),
                format!("{mechanism}=[name=alice,password={PASSWORD}]"),
            ]
        };
        let format_args = [scram("SCRAM-SHA-512"), scram("SCRAM-SHA-256")].concat();
        let ready_at = std::net::SocketAddr::from(([127, 0, 0, 1], plaintext));
        let node = kafka::start(dir, &props, CLUSTER_ID, &format_args, ready_at);
        Kafka {
            _node: node,
            pki,
            ssl,
            sasl_ssl,
            sasl_plaintext,
        }
    }

    /// Client properties (`key=value` lines) for each case.
    fn ssl_props(&self) -> String {
        format!(
            "security.protocol=SSL\nssl.ca.location={}\nssl.certificate.location={}\nssl.key.location={}\n",
            self.pki.ca.display(),
            self.pki.client_cert.display(),
            self.pki.client_key.display()
        )
    }
}

/// `key=value` lines resolved as a workload's client properties are.
fn security(props: &str) -> Security {
    let mut s = SecurityProps::default();
    for line in props.lines().filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').unwrap();
        s.set(k, &format!("test.{k}"), v).unwrap();
    }
    s.resolve("test").unwrap()
}

#[test]
fn the_harness_produces_and_consumes_over_tls_and_sasl_against_kafka() {
    let kafka = Kafka::start();
    let localhost = |port: u16| format!("localhost:{port}");

    // SSL with a client certificate (the listener requires one), the
    // certificate checked against the host name `localhost`.
    run_secured("ssl", &localhost(kafka.ssl), &kafka.ssl_props(), 4);

    // SASL_SSL with PLAIN, trust given the Java client's way.
    let plain = format!(
        "security.protocol=SASL_SSL\nssl.truststore.type=PEM\nssl.truststore.location={}\n\
         sasl.mechanism=PLAIN\nsasl.username=alice\nsasl.password={PASSWORD}\n",
        kafka.pki.ca.display()
    );
    run_secured("sasl-ssl-plain", &localhost(kafka.sasl_ssl), &plain, 4);

    // SASL_SSL with SCRAM-SHA-512, credentials in a JAAS entry.
    let scram_ssl = format!(
        "security.protocol=SASL_SSL\nssl.ca.location={}\nsasl.mechanism=SCRAM-SHA-512\n\
         sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"alice\" password=\"{PASSWORD}\";\n",
        kafka.pki.ca.display()
    );
    run_secured("sasl-ssl-scram", &localhost(kafka.sasl_ssl), &scram_ssl, 4);

    // SASL_PLAINTEXT with SCRAM-SHA-512, sessions of 4 s: a 10 s run
    // re-authenticates every producer, fetch and group connection twice;
    // one that did not would be closed by the broker (a client error).
    let scram = format!(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanisms=SCRAM-SHA-512\n\
         sasl.username=alice\nsasl.password={PASSWORD}\n"
    );
    run_secured(
        "sasl-plaintext-scram",
        &format!("127.0.0.1:{}", kafka.sasl_plaintext),
        &scram,
        10,
    );

    // One control connection, used past two session lifetimes.
    let ep = Endpoint::parse(&format!("127.0.0.1:{}", kafka.sasl_plaintext)).unwrap();
    let mut c = Connection::open(&ep, &security(&scram), Duration::from_secs(10)).unwrap();
    let until = Instant::now() + Duration::from_millis(REAUTH_MS * 5 / 2);
    while Instant::now() < until {
        admin::metadata(&mut c, Some(&[])).unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }

    other_key_forms(&kafka);
    refusals(&kafka, &scram);
}

/// Security keys and values, in order.
type Props = Vec<(&'static str, String)>;

/// The other ways of giving the same things connect too: each opens a
/// connection and reads Metadata. The SSL listener requires a client
/// certificate, so each identity form is shown to be sent.
fn other_key_forms(kafka: &Kafka) {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    // Properties files cannot hold multi-line values; these are built
    // directly, one (key, value) pair at a time.
    let ssl = Endpoint::parse(&format!("localhost:{}", kafka.ssl)).unwrap();
    let sasl_ssl = Endpoint::parse(&format!("localhost:{}", kafka.sasl_ssl)).unwrap();
    let ca = read(&kafka.pki.ca);
    let cases: Vec<(&str, &Endpoint, Props)> = vec![
        (
            "SCRAM-SHA-256, inline CA",
            &sasl_ssl,
            vec![
                ("security.protocol", "SASL_SSL".into()),
                ("ssl.ca.pem", ca.clone()),
                ("sasl.mechanism", "SCRAM-SHA-256".into()),
                ("sasl.username", "alice".into()),
                ("sasl.password", PASSWORD.into()),
            ],
        ),
        (
            "Java PEM key store and inline trust store",
            &ssl,
            vec![
                ("security.protocol", "SSL".into()),
                ("ssl.truststore.certificates", ca.clone()),
                ("ssl.keystore.type", "PEM".into()),
                (
                    "ssl.keystore.location",
                    kafka.pki.client_keystore.display().to_string(),
                ),
            ],
        ),
        (
            "inline certificate and key",
            &ssl,
            vec![
                ("security.protocol", "SSL".into()),
                ("ssl.ca.location", kafka.pki.ca.display().to_string()),
                ("ssl.certificate.pem", read(&kafka.pki.client_cert)),
                ("ssl.key.pem", read(&kafka.pki.client_key)),
            ],
        ),
        (
            "Java inline key store",
            &ssl,
            vec![
                ("security.protocol", "SSL".into()),
                ("ssl.ca.location", kafka.pki.ca.display().to_string()),
                (
                    "ssl.keystore.certificate.chain",
                    read(&kafka.pki.client_cert),
                ),
                ("ssl.keystore.key", read(&kafka.pki.client_key)),
            ],
        ),
    ];
    for (name, ep, props) in cases {
        let mut s = SecurityProps::default();
        for (k, v) in &props {
            s.set(k, &format!("test.{k}"), v).unwrap();
        }
        let security = s.resolve("test").unwrap();
        let mut c = Connection::open(ep, &security, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        admin::metadata(&mut c, Some(&[])).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The error a connection attempt must end in.
fn refused(ep: &Endpoint, security: &Security) -> ClientError {
    match Connection::open(ep, security, Duration::from_secs(10)) {
        Ok(_) => panic!("{ep} with {} was accepted", security.describe()),
        Err(e) => e,
    }
}

/// The ways a secured connection must fail, each with an error that says
/// what and where.
fn refusals(kafka: &Kafka, scram: &str) {
    let t = Duration::from_secs(10);
    let sasl_plaintext = Endpoint::parse(&format!("127.0.0.1:{}", kafka.sasl_plaintext)).unwrap();

    // A wrong password: the broker and the mechanism are named.
    let wrong = scram.replace(PASSWORD, "not-the-password");
    let e = refused(&sasl_plaintext, &security(&wrong));
    assert!(matches!(e, ClientError::Auth { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("SCRAM-SHA-512") && text.contains(&sasl_plaintext.addr.to_string()),
        "{text}"
    );

    // A mechanism the listener does not enable.
    let plain = scram.replace("SCRAM-SHA-512", "PLAIN");
    let e = refused(&sasl_plaintext, &security(&plain));
    let text = e.to_string();
    assert!(
        text.contains("PLAIN") && text.contains("enables SCRAM-SHA-512"),
        "{text}"
    );

    // The server certificate names `localhost`, not 127.0.0.1: refused
    // when the host name is checked (the default) ...
    let by_ip = Endpoint::parse(&format!("127.0.0.1:{}", kafka.ssl)).unwrap();
    let e = refused(&by_ip, &security(&kafka.ssl_props()));
    assert!(matches!(e, ClientError::Tls { .. }), "{e}");
    assert!(e.to_string().contains("not valid for name"), "{e}");
    // ... and accepted with the check off, the chain still verified.
    let unchecked = format!(
        "{}ssl.endpoint.identification.algorithm=\n",
        kafka.ssl_props()
    );
    Connection::open(&by_ip, &security(&unchecked), t).unwrap();

    // Without the client certificate the SSL listener refuses the
    // handshake (TLS 1.3 reports it on the first read).
    let no_cert = format!(
        "security.protocol=SSL\nssl.ca.location={}\n",
        kafka.pki.ca.display()
    );
    let localhost_ssl = Endpoint::parse(&format!("localhost:{}", kafka.ssl)).unwrap();
    assert!(Connection::open(&localhost_ssl, &security(&no_cert), t).is_err());

    // A CA that did not sign the broker's certificate.
    let other = tempfile::tempdir().unwrap();
    let stranger = make_pki(other.path(), "another CA");
    let untrusted = format!(
        "security.protocol=SSL\nssl.ca.location={}\n",
        stranger.ca.display()
    );
    let e = refused(&localhost_ssl, &security(&untrusted));
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}
