//! Certificates made for a test with `rcgen`: a CA, leaf certificates
//! for brokers and clients, and the files a broker or client reads them
//! from. No key is committed.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::path::PathBuf;

/// A certificate authority made for one test.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate and its key, as PEM: for the broker (names
    /// localhost and 127.0.0.1) or a client (subject `dn`, most general
    /// first: `[("O", "Acme"), ("OU", "eng"), ("CN", "alice")]`).
    pub fn issue(&self, dn: &[(&str, &str)], expired: bool) -> (String, String) {
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        // Not rcgen's default subject: only `dn`, in its order.
        p.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in dn {
            let kind = match *kind {
                "O" => DnType::OrganizationName,
                "OU" => DnType::OrganizationalUnitName,
                "CN" => DnType::CommonName,
                other => panic!("no DN type {other} in these tests"),
            };
            p.distinguished_name.push(kind, *value);
        }
        if expired {
            p.not_before = rcgen::date_time_ymd(2001, 1, 1);
            p.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A test's certificate files.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A broker keystore (key and chain in one PEM) issued by `ca`.
    pub fn keystore(&self, name: &str, ca: &Ca) -> PathBuf {
        let (cert, key) = ca.issue(&[("CN", "localhost")], false);
        self.write(name, &format!("{key}{cert}"))
    }
}
