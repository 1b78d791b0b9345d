//! What the security tests against Kafka and against Sluice share: a
//! produce-and-consume run over a secured connection, and the certificates.

// Each test crate uses its own part of this module.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use sluice_harness::client::endpoint::Endpoint;
use sluice_harness::report::files::read_run_json;
use sluice_harness::run::sweep::{run_workload, RunOptions};
use sluice_harness::workload::parse;
use std::path::{Path, PathBuf};

/// Runs a produce-and-consume workload with `props` as its common client
/// config against `bootstrap`; every message must be acknowledged and
/// consumed, with no client error on the way.
pub fn run_secured(name: &str, bootstrap: &str, props: &str, seconds: u32) {
    let indented: String = props.lines().map(|l| format!("  {l}\n")).collect();
    let text = format!(
        "name: {name}\npartitionsPerTopic: 2\nmessageSize: 200\nproducerRate: 500\n\
         testDurationSeconds: {seconds}\nwarmupDurationSeconds: 0.5\ncommonConfig: |\n{indented}"
    );
    let f = parse(Path::new("secured.yaml"), &text, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut opts = RunOptions::quiet(out.path().to_path_buf(), None);
    opts.bootstrap = Some(Endpoint::parse(bootstrap).unwrap());
    let dir = run_workload(&f, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    let run = read_run_json(&dir).unwrap();
    let p = &run.points[0];
    assert!(p.sent >= 1_000, "{name}: only {} messages sent", p.sent);
    assert_eq!(p.errors, 0, "{name}: {:?}", p.error_samples);
    assert!(p.error_samples.is_empty(), "{name}: {:?}", p.error_samples);
    assert_eq!(p.unsent, 0, "{name}: {p:?}");
    assert_eq!(p.unconsumed, 0, "{name}: {p:?}");
    assert!(p.end_to_end.count > 0, "{name}: nothing consumed");
}

/// A CA, a server certificate for `localhost` (not for 127.0.0.1) and a
/// client certificate, as PEM files in `dir`.
pub struct Pki {
    pub ca: PathBuf,
    /// Key and chain in one file, as Kafka's PEM key store takes them.
    pub server: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The client's key and chain in one file (Java's PEM key store).
    pub client_keystore: PathBuf,
}

pub fn make_pki(dir: &Path, ca_name: &str) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        "localhost",
        vec!["localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) =
        leaf("sluice-bench", vec![], ExtendedKeyUsagePurpose::ClientAuth);
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server: write("server.pem", format!("{server_key}{server_cert}")),
        client_keystore: write("client-keystore.pem", format!("{client_key}{client_cert}")),
        client_cert: write("client.pem", client_cert),
        client_key: write("client.key", client_key),
    }
}
