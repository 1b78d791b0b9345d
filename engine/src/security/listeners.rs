//! Named listeners: `listeners`, `listener.security.protocol.map`,
//! `advertised.listeners`, `inter.broker.listener.name` and
//! `controller.listener.names`, resolved together once at start-up.
//!
//! Each key is checked alone when it is set; what only the keys together
//! can say (a listener name the map does not know, two listeners on one
//! port, an advertised listener naming no listener, a TLS listener
//! without a certificate) is checked here, and refused with the key to
//! fix and the reason. Nothing falls back to plaintext.

use super::tls::TlsSettings;
use super::SecurityProtocol;
use crate::config::{BrokerConfig, ConfigError};
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

/// Longest listener name accepted (Kafka sets none; a bound on input).
const LISTENER_NAME_LEN_MAX: usize = 64;
/// Most listeners one broker may have.
const LISTENERS_MAX: usize = 16;

/// One listener clients (or other brokers) connect to.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Upper-case name: `PLAINTEXT`, `SSL`, `INTERNAL`, ...
    pub name: String,
    pub protocol: SecurityProtocol,
    /// Where each shard binds it.
    pub bind: SocketAddr,
    /// host and port other brokers and clients are told.
    pub advertised: (String, u16),
    /// The TLS material and settings, for SSL and SASL_SSL listeners.
    pub tls: Option<TlsSettings>,
}

/// Every listener of a broker.
#[derive(Clone, Debug)]
pub struct Listeners {
    /// The listeners the shards bind (controller listeners excluded), in
    /// the order `listeners` gives them.
    pub all: Vec<ListenerConfig>,
    /// The listener followers use to fetch from leaders.
    pub inter_broker: String,
    /// `controller.listener.names`, upper case.
    pub controller: Vec<String>,
    /// The controller quorum's TLS settings when its listener maps to SSL:
    /// the voters serve with them and every node dials voters with them.
    pub controller_tls: Option<TlsSettings>,
}

impl Listeners {
    /// The listener named `name`.
    pub fn get(&self, name: &str) -> Option<&ListenerConfig> {
        self.all.iter().find(|l| l.name == name)
    }

    /// The inter-broker listener.
    pub fn inter_broker(&self) -> &ListenerConfig {
        self.get(&self.inter_broker)
            .expect("resolve checks the inter-broker listener exists")
    }

    /// Every listener's advertised endpoint by name, as the broker
    /// registers them.
    pub fn advertised(&self) -> BTreeMap<String, (String, u16)> {
        self.all
            .iter()
            .map(|l| (l.name.clone(), l.advertised.clone()))
            .collect()
    }
}

/// A listener as the shards serve it: its settings and, for TLS, the
/// live certificates.
#[derive(Debug)]
pub struct Served {
    pub config: ListenerConfig,
    pub tls: Option<super::tls::TlsAcceptor>,
}

impl Served {
    pub fn new(config: ListenerConfig) -> Result<Served, ConfigError> {
        let tls = match &config.tls {
            Some(settings) => Some(super::tls::TlsAcceptor::new(settings.clone())?),
            None => None,
        };
        Ok(Served { config, tls })
    }
}

fn refused(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Refused {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// One `NAME://HOST:PORT` entry.
struct Endpoint {
    name: String,
    host: String,
    port: u16,
}

/// Parses a `listeners` or `advertised.listeners` list.
fn parse_endpoints(key: &str, text: &str) -> Result<Vec<Endpoint>, ConfigError> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |why: &str| refused(key, format!("'{part}': {why} (expected NAME://HOST:PORT)"));
        let (name, hostport) = part.split_once("://").ok_or_else(|| bad("no NAME://"))?;
        let name = name.trim().to_ascii_uppercase();
        if name.is_empty()
            || name.len() > LISTENER_NAME_LEN_MAX
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(bad("a listener name is letters, digits and '_'"));
        }
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if out.iter().any(|e: &Endpoint| e.name == name) {
            return Err(refused(key, format!("listener name {name} appears twice")));
        }
        out.push(Endpoint { name, host, port });
    }
    if out.len() > LISTENERS_MAX {
        return Err(refused(key, format!("more than {LISTENERS_MAX} listeners")));
    }
    Ok(out)
}

/// Parses `listener.security.protocol.map`: `NAME:PROTOCOL,...`.
fn parse_map(text: &str) -> Result<BTreeMap<String, SecurityProtocol>, ConfigError> {
    let key = "listener.security.protocol.map";
    let mut map = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, protocol) = part
            .split_once(':')
            .ok_or_else(|| refused(key, format!("'{part}' is not NAME:PROTOCOL")))?;
        let protocol = SecurityProtocol::parse(protocol.trim()).ok_or_else(|| {
            refused(
                key,
                format!(
                    "unknown security protocol '{}' (known: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)",
                    protocol.trim()
                ),
            )
        })?;
        let name = name.trim().to_ascii_uppercase();
        if map.insert(name.clone(), protocol).is_some() {
            return Err(refused(key, format!("listener name {name} appears twice")));
        }
    }
    Ok(map)
}

/// The machine's host name, advertised for a listener bound to every
/// interface (an empty host), as Kafka advertises its canonical name.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match rc {
        0 if end > 0 => String::from_utf8_lossy(&buf[..end]).into_owned(),
        _ => "localhost".into(),
    }
}

/// Resolves every listener key of `config` together.
pub fn resolve(config: &BrokerConfig) -> Result<Listeners, ConfigError> {
    let get = |k: &str| config.get(k).unwrap_or("").to_string();
    let map = parse_map(&get("listener.security.protocol.map"))?;
    let endpoints = parse_endpoints("listeners", &get("listeners"))?;
    if endpoints.is_empty() {
        return Err(refused("listeners", "no listener is configured"));
    }
    let advertised = parse_endpoints("advertised.listeners", &get("advertised.listeners"))?;
    for a in &advertised {
        if !endpoints.iter().any(|e| e.name == a.name) {
            return Err(refused(
                "advertised.listeners",
                format!("{} names no listener in 'listeners'", a.name),
            ));
        }
    }
    let controller = controller_names(config, &map, &endpoints)?;
    let controller_tls = match controller.first() {
        Some(name) if map.get(name) == Some(&SecurityProtocol::Ssl) => {
            Some(controller_tls(config, name)?)
        }
        _ => None,
    };
    let mut all = Vec::new();
    for e in &endpoints {
        let protocol = *map.get(&e.name).ok_or_else(|| {
            refused(
                "listeners",
                format!(
                    "listener {} has no security protocol: add it to listener.security.protocol.map",
                    e.name
                ),
            )
        })?;
        if let Some(other) = endpoints
            .iter()
            .take_while(|o| !std::ptr::eq(*o, e))
            .find(|o| o.port == e.port)
        {
            return Err(refused(
                "listeners",
                format!(
                    "listeners {} and {} both use port {}",
                    other.name, e.name, e.port
                ),
            ));
        }
        if controller.contains(&e.name) {
            continue;
        }
        all.push(listener(config, e, protocol, &advertised)?);
    }
    let inter_broker = match get("inter.broker.listener.name") {
        n if n.is_empty() => all
            .first()
            .map(|l| l.name.clone())
            .ok_or_else(|| refused("listeners", "every listener is a controller listener"))?,
        n => n.to_ascii_uppercase(),
    };
    if !all.iter().any(|l| l.name == inter_broker) {
        return Err(refused(
            "inter.broker.listener.name",
            format!("{inter_broker} names no broker listener in 'listeners'"),
        ));
    }
    Ok(Listeners {
        all,
        inter_broker,
        controller,
        controller_tls,
    })
}

/// The TLS settings of controller listener `name`. Every node is a client
/// of the quorum, so each needs CA certificates to check the voters'
/// certificates, and the keystore it shows them (a voter serves with the
/// same keystore).
fn controller_tls(config: &BrokerConfig, name: &str) -> Result<TlsSettings, ConfigError> {
    let settings = TlsSettings::from_config(config, name)?;
    if settings.build_client()?.is_none() {
        let (_, key) = config.listener_setting(name, "ssl.truststore.location");
        return Err(refused(
            &key,
            format!(
                "the controller listener {name} uses TLS: every node checks the voters' certificates against CA certificates, and none are configured"
            ),
        ));
    }
    Ok(settings)
}

fn listener(
    config: &BrokerConfig,
    e: &Endpoint,
    protocol: SecurityProtocol,
    advertised: &[Endpoint],
) -> Result<ListenerConfig, ConfigError> {
    let bind_host = if e.host.is_empty() {
        "0.0.0.0"
    } else {
        &e.host
    };
    let bind = (bind_host, e.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            refused(
                "listeners",
                format!("{}: '{}' does not resolve", e.name, e.host),
            )
        })?;
    let advertised = match advertised.iter().find(|a| a.name == e.name) {
        Some(a) => (a.host.clone(), a.port),
        None if e.host.is_empty() => (host_name(), e.port),
        None => (e.host.clone(), e.port),
    };
    let tls = match protocol.uses_tls() {
        true => Some(TlsSettings::from_config(config, &e.name)?),
        false => None,
    };
    Ok(ListenerConfig {
        name: e.name.clone(),
        protocol,
        bind,
        advertised,
        tls,
    })
}

/// `controller.listener.names`, checked against the controller quorum's
/// listener. The quorum speaks PLAINTEXT or SSL (no SASL), one protocol
/// on its one port, so every name must map to the same one of those; a
/// name that also appears in `listeners` must sit on this node's port in
/// `controller.quorum.voters`, and is bound by the quorum rather than
/// served as a Kafka listener.
fn controller_names(
    config: &BrokerConfig,
    map: &BTreeMap<String, SecurityProtocol>,
    endpoints: &[Endpoint],
) -> Result<Vec<String>, ConfigError> {
    let key = "controller.listener.names";
    let names: Vec<String> = config
        .get(key)
        .unwrap_or("")
        .split(',')
        .map(|n| n.trim().to_ascii_uppercase())
        .filter(|n| !n.is_empty())
        .collect();
    let voters =
        crate::cluster::parse_voters(config.get("controller.quorum.voters").unwrap_or(""))?;
    let own = voters
        .iter()
        .find(|(id, _)| i64::try_from(*id).ok() == Some(i64::from(config.node_id)))
        .map(|(_, a)| a.port());
    for name in &names {
        match map.get(name) {
            None => {
                return Err(refused(
                    key,
                    format!("{name} has no entry in listener.security.protocol.map"),
                ))
            }
            Some(p) if p.uses_sasl() => {
                return Err(refused(
                    key,
                    format!(
                        "{name} maps to {p}; the controller quorum authenticates with mutual TLS, not SASL: map it to SSL (with ssl.client.auth=required) or PLAINTEXT"
                    ),
                ))
            }
            Some(p) => {
                let first = map.get(&names[0]).copied();
                if first != Some(*p) {
                    return Err(refused(
                        key,
                        format!(
                            "{name} maps to {p} and {} does not; the quorum serves one protocol",
                            names[0]
                        ),
                    ));
                }
            }
        }
        let Some(e) = endpoints.iter().find(|e| &e.name == name) else {
            continue;
        };
        match own {
            Some(port) if port == e.port => {}
            Some(port) => {
                return Err(refused(
                    key,
                    format!(
                        "controller listener {name} is on port {}, but controller.quorum.voters puts node {} on port {port}",
                        e.port, config.node_id
                    ),
                ))
            }
            None => {
                return Err(refused(
                    key,
                    format!(
                        "listener {name} is a controller listener, but node {} is not in controller.quorum.voters",
                        config.node_id
                    ),
                ))
            }
        }
    }
    if let Some(n) = config
        .get("inter.broker.listener.name")
        .map(str::to_ascii_uppercase)
        .filter(|n| names.contains(n))
    {
        return Err(refused(
            "inter.broker.listener.name",
            format!("{n} is a controller listener"),
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BrokerConfig {
        let mut c = BrokerConfig::default();
        for (k, v) in pairs {
            c.set(k, v).unwrap();
        }
        c
    }

    fn refusal(pairs: &[(&str, &str)]) -> String {
        resolve(&config(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn several_listeners_with_custom_names() {
        let c = config(&[
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:19092,INTERNAL://127.0.0.1:19093",
            ),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
            ),
            ("advertised.listeners", "INTERNAL://broker1.internal:29093"),
            ("inter.broker.listener.name", "INTERNAL"),
        ]);
        let l = resolve(&c).unwrap();
        assert_eq!(l.all.len(), 2);
        assert_eq!(l.inter_broker, "INTERNAL");
        assert_eq!(
            l.inter_broker().advertised,
            ("broker1.internal".to_string(), 29093)
        );
        assert_eq!(l.get("PLAINTEXT").unwrap().advertised.1, 19092);
    }

    #[test]
    fn an_empty_host_binds_every_interface_and_advertises_the_host_name() {
        let l = resolve(&config(&[("listeners", "PLAINTEXT://:19092")])).unwrap();
        assert!(l.all[0].bind.ip().is_unspecified());
        assert_eq!(l.all[0].advertised, (host_name(), 19092));
    }

    #[test]
    fn the_first_listener_is_the_inter_broker_default() {
        let l = resolve(&config(&[("listeners", "PLAINTEXT://127.0.0.1:19092")])).unwrap();
        assert_eq!(l.inter_broker, "PLAINTEXT");
    }

    #[test]
    fn refusals_name_the_key() {
        let e = refusal(&[("listeners", "CUSTOM://127.0.0.1:1")]);
        assert!(e.contains("'listeners'") && e.contains("CUSTOM"), "{e}");
        let e = refusal(&[("listener.security.protocol.map", "A:TLS")]);
        assert!(
            e.contains("listener.security.protocol.map") && e.contains("TLS"),
            "{e}"
        );
        let e = refusal(&[("listeners", "PLAINTEXT://127.0.0.1:1,SSL://127.0.0.1:1")]);
        assert!(e.contains("port 1"), "{e}");
        let e = refusal(&[(
            "listeners",
            "PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.1:2",
        )]);
        assert!(e.contains("appears twice"), "{e}");
        let e = refusal(&[("advertised.listeners", "SSL://x:1")]);
        assert!(e.contains("'advertised.listeners'"), "{e}");
        let e = refusal(&[("inter.broker.listener.name", "NOPE")]);
        assert!(e.contains("'inter.broker.listener.name'"), "{e}");
        let e = refusal(&[("listeners", "SSL://127.0.0.1:1")]);
        assert!(e.contains("ssl.keystore"), "{e}");
    }

    #[test]
    fn controller_listeners_match_the_quorum() {
        let base = [
            ("node.id", "1"),
            ("controller.quorum.voters", "1@127.0.0.1:19093"),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SECURE:SSL",
            ),
        ];
        let mut ok = base.to_vec();
        ok.push((
            "listeners",
            "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
        ));
        ok.push(("controller.listener.names", "CONTROLLER"));
        let l = resolve(&config(&ok)).unwrap();
        assert_eq!(l.all.len(), 1, "the quorum binds the controller listener");
        assert_eq!(l.controller, vec!["CONTROLLER".to_string()]);
        let mut wrong_port = base.to_vec();
        wrong_port.push((
            "listeners",
            "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19094",
        ));
        wrong_port.push(("controller.listener.names", "CONTROLLER"));
        let e = refusal(&wrong_port);
        assert!(
            e.contains("'controller.listener.names'") && e.contains("19093"),
            "{e}"
        );
        let mut unmapped = base.to_vec();
        unmapped.push(("controller.listener.names", "QUORUM"));
        let e = refusal(&unmapped);
        assert!(e.contains("'controller.listener.names'"), "{e}");
        let mut sasl = base.to_vec();
        sasl[2].1 = "PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_SSL";
        sasl.push(("controller.listener.names", "CONTROLLER"));
        let e = refusal(&sasl);
        assert!(
            e.contains("'controller.listener.names'") && e.contains("not SASL"),
            "{e}"
        );
        let mut mixed = base.to_vec();
        mixed.push(("controller.listener.names", "CONTROLLER,SECURE"));
        let e = refusal(&mixed);
        assert!(e.contains("one protocol"), "{e}");
        // SSL without CA certificates: nothing to check a voter against.
        let mut untrusting = base.to_vec();
        untrusting.push(("controller.listener.names", "SECURE"));
        let e = refusal(&untrusting);
        assert!(e.contains("ssl.keystore"), "{e}");
    }

    #[test]
    fn an_ssl_controller_listener_takes_its_listener_settings() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let keystore = dir.path().join("node.pem");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(
            &keystore,
            format!("{}{}", ca.key_pair.serialize_pem(), ca.cert.pem()),
        )
        .unwrap();
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let (ks, ca_path) = (
            keystore.display().to_string(),
            ca_file.display().to_string(),
        );
        let mut pairs = vec![
            ("node.id", "1"),
            ("controller.quorum.voters", "1@127.0.0.1:19093"),
            ("listeners", "PLAINTEXT://127.0.0.1:19092"),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:SSL",
            ),
            ("controller.listener.names", "CONTROLLER"),
            (
                "listener.name.controller.ssl.keystore.location",
                ks.as_str(),
            ),
        ];
        let e = refusal(&pairs);
        assert!(
            e.contains("'listener.name.controller.ssl.truststore.location'")
                || e.contains("'ssl.truststore.location'"),
            "{e}"
        );
        pairs.push((
            "listener.name.controller.ssl.truststore.location",
            ca_path.as_str(),
        ));
        pairs.push(("listener.name.controller.ssl.client.auth", "required"));
        let l = resolve(&config(&pairs)).unwrap();
        let tls = l.controller_tls.as_ref().expect("the quorum speaks TLS");
        assert_eq!(tls.listener, "CONTROLLER");
        assert_eq!(tls.client_auth, super::super::tls::ClientAuth::Required);
        assert!(l.get("PLAINTEXT").unwrap().tls.is_none());
    }
}
