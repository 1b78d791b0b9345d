//! Certificates made on the spot for brokers that run on this host only:
//! `sluice cluster --secure` and the benchmark harness's embedded broker.
//! Each call makes a new CA, so nothing made here outlives the run that
//! trusts it.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// The names the broker certificate is valid for: clients verify the host
/// they dialled (`ssl.endpoint.identification.algorithm=https`), by name
/// or by loopback address.
pub const BROKER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A new CA and a broker key store signed by it, as PEM: the CA
/// certificate, then the broker's key followed by its certificate (one
/// file, as `ssl.keystore.location` takes it).
pub fn broker_certificates() -> Result<(String, String), rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "sluice cluster CA");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut leaf = CertificateParams::new(BROKER_NAMES.map(String::from).to_vec())?;
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "sluice broker");
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;
    Ok((
        ca_cert.pem(),
        format!("{}{}", key.serialize_pem(), cert.pem()),
    ))
}
