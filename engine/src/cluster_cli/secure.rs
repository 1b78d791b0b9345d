//! `sluice cluster --secure`: a local cluster as a secured deployment
//! runs, with everything it needs made on the spot.
//!
//! - A CA and one broker certificate (for `localhost` and `127.0.0.1`),
//!   written to `<data-dir>/security/`; each start makes new ones.
//! - Clients connect over SASL_SSL on the usual ports, as the SCRAM-SHA-512
//!   user `admin` with a random password.
//! - Brokers replicate over their own listener, `INTERNAL`, on mutual TLS:
//!   a process without the cluster's certificate cannot fetch as a
//!   follower.
//! - The controller quorum (`CONTROLLER`) speaks mutual TLS too: a process
//!   without the cluster's certificate cannot register as a broker nor
//!   join the quorum.
//!
//! The client settings go to `<data-dir>/security/client.properties`
//! (Kafka's Java names) and are printed in librdkafka's names.

use rand::distributions::{Alphanumeric, DistString};
use sluice_engine::security::local_pki;
use std::path::{Path, PathBuf};

/// What a secured cluster's brokers and clients use.
pub struct Secured {
    /// Settings every broker gets.
    pub common: Vec<String>,
    /// Each broker's listeners, by node - 1.
    pub per_broker: Vec<Vec<String>>,
    /// The client settings, librdkafka's names, one `key=value` a line.
    pub client_settings: String,
    /// Where the Java-named client settings were written.
    pub client_properties: PathBuf,
}

/// Makes the certificates and the admin password, and the settings that
/// use them. `ports[i]` is broker i+1's client port, `internal[i]` its
/// replication port.
pub fn prepare(dir: &Path, ports: &[u16], internal: &[u16]) -> Result<Secured, String> {
    let dir = dir.join("security");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let write = |name: &str, text: &str| -> Result<PathBuf, String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    };
    let (ca_pem, keystore_pem) =
        local_pki::broker_certificates().map_err(|e| format!("making certificates: {e}"))?;
    let ca = write("ca.pem", &ca_pem)?;
    let keystore = write("broker.pem", &keystore_pem)?;
    let password = Alphanumeric.sample_string(&mut rand::thread_rng(), 24);
    let common = vec![
        "listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL".to_string(),
        "inter.broker.listener.name=INTERNAL".into(),
        "controller.listener.names=CONTROLLER".into(),
        format!("ssl.keystore.location={}", keystore.display()),
        format!("ssl.truststore.location={}", ca.display()),
        "listener.name.internal.ssl.client.auth=required".into(),
        "listener.name.controller.ssl.client.auth=required".into(),
        "sasl.enabled.mechanisms=SCRAM-SHA-512".into(),
        format!("sluice.scram.users=SCRAM-SHA-512=[name=admin,password={password}]"),
    ];
    let per_broker = ports
        .iter()
        .zip(internal)
        .map(|(port, internal)| {
            vec![format!(
                "listeners=SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal}"
            )]
        })
        .collect();
    let client_settings = format!(
        "security.protocol=SASL_SSL\nsasl.mechanisms=SCRAM-SHA-512\nsasl.username=admin\n\
         sasl.password={password}\nssl.ca.location={}\n",
        ca.display()
    );
    let client_properties = write(
        "client.properties",
        &format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \
             username=\"admin\" password=\"{password}\";\n\
             ssl.truststore.type=PEM\nssl.truststore.location={}\n",
            ca.display()
        ),
    )?;
    Ok(Secured {
        common,
        per_broker,
        client_settings,
        client_properties,
    })
}
