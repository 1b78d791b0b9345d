//! SASL settings under Kafka's key names, per listener.
//!
//! Each setting may be given for one listener, `listener.name.<name>.<key>`
//! (the listener name in lower case, e.g. `sasl_plaintext`), or for all,
//! `<key>`; the listener's own wins. PLAIN users come from the JAAS
//! config `listener.name.<name>.plain.sasl.jaas.config`, or
//! `sasl.jaas.config` when the listener has none. Keys holding secrets
//! (`*.sasl.jaas.config`, [`BOOTSTRAP_USERS_KEY`]) are never reported by
//! DescribeConfigs.

use super::oauth::OAuthSettings;
use super::scram::{parse_bootstrap_users, BootstrapUser};
use super::{jaas, Mechanism};
use std::collections::BTreeMap;

/// SCRAM users created at start-up if absent (a Sluice key; Kafka does
/// this with `kafka-storage format --add-scram`):
/// `SCRAM-SHA-512=[name=admin,password=admin-secret];SCRAM-SHA-256=[...]`.
pub const BOOTSTRAP_USERS_KEY: &str = "sluice.scram.users";

/// Keys that may be given per listener, with their defaults (also in the
/// broker's key table, so DescribeConfigs shows them).
pub const LISTENER_KEYS: &[&str] = &[
    MECHANISMS_KEY,
    REAUTH_KEY,
    JWKS_KEY,
    AUDIENCE_KEY,
    ISSUER_KEY,
    SUB_CLAIM_KEY,
];

pub const MECHANISMS_KEY: &str = "sasl.enabled.mechanisms";
pub const REAUTH_KEY: &str = "connections.max.reauth.ms";
pub const FAILED_DELAY_KEY: &str = "connection.failed.authentication.delay.ms";
pub const MAX_RECEIVE_KEY: &str = "sasl.server.max.receive.size";
pub const JWKS_KEY: &str = "sasl.oauthbearer.jwks.endpoint.url";
pub const AUDIENCE_KEY: &str = "sasl.oauthbearer.expected.audience";
pub const ISSUER_KEY: &str = "sasl.oauthbearer.expected.issuer";
pub const SUB_CLAIM_KEY: &str = "sasl.oauthbearer.sub.claim.name";
pub const JAAS_KEY: &str = "sasl.jaas.config";
const PLAIN_JAAS_SUFFIX: &str = "plain.sasl.jaas.config";

/// One listener's SASL settings, fixed at start-up.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mechanisms: Vec<Mechanism>,
    /// PLAIN users: name → password.
    pub plain_users: BTreeMap<String, String>,
    pub oauth: Option<OAuthSettings>,
    /// `connections.max.reauth.ms`; 0: sessions never expire.
    pub reauth_ms: i64,
    /// `connection.failed.authentication.delay.ms`.
    pub failed_delay_ms: u64,
    /// `sasl.server.max.receive.size`: largest frame before authentication.
    pub max_receive_bytes: usize,
}

impl Settings {
    pub fn enabled(&self, m: Mechanism) -> bool {
        self.mechanisms.contains(&m)
    }

    /// The enabled mechanisms' names, as SaslHandshake lists them.
    pub fn mechanism_names(&self) -> Vec<&'static str> {
        self.mechanisms.iter().map(|m| m.name()).collect()
    }

    /// The settings of listener `listener` (lower-case name); `get` reads
    /// a key's value from the broker config. The error names the key.
    pub fn for_listener(
        get: &dyn Fn(&str) -> Option<String>,
        listener: &str,
    ) -> Result<Settings, (String, String)> {
        let scoped = |key: &str| format!("listener.name.{listener}.{key}");
        let lookup = |key: &str| -> (String, Option<String>) {
            let own = scoped(key);
            match get(&own) {
                Some(v) => (own, Some(v)),
                None => (key.to_string(), get(key)),
            }
        };
        let (key, value) = lookup(MECHANISMS_KEY);
        let mechanisms =
            parse_mechanisms(value.as_deref().unwrap_or("PLAIN")).map_err(|e| (key, e))?;
        let mut plain_users = BTreeMap::new();
        if mechanisms.contains(&Mechanism::Plain) {
            let (key, value) = lookup(PLAIN_JAAS_SUFFIX);
            let (key, value) = match value {
                Some(v) => (key, v),
                None => match get(JAAS_KEY) {
                    Some(v) => (JAAS_KEY.to_string(), v),
                    None => {
                        return Err((
                            scoped(PLAIN_JAAS_SUFFIX),
                            "PLAIN is enabled but no JAAS config names its users".into(),
                        ))
                    }
                },
            };
            plain_users = parse_plain_jaas(&value).map_err(|e| (key, e))?;
        }
        let oauth = match mechanisms.contains(&Mechanism::OAuthBearer) {
            true => Some(oauth_settings(&lookup)?),
            false => None,
        };
        let number = |key: &str| -> Result<i64, (String, String)> {
            let (key, value) = lookup(key);
            value
                .as_deref()
                .unwrap_or("0")
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or((key, "expected a number of at least 0".into()))
        };
        Ok(Settings {
            mechanisms,
            plain_users,
            oauth,
            reauth_ms: number(REAUTH_KEY)?,
            failed_delay_ms: number(FAILED_DELAY_KEY)? as u64,
            max_receive_bytes: number(MAX_RECEIVE_KEY)?.max(1) as usize,
        })
    }
}

fn oauth_settings(
    lookup: &dyn Fn(&str) -> (String, Option<String>),
) -> Result<OAuthSettings, (String, String)> {
    let (key, url) = lookup(JWKS_KEY);
    let url = url.filter(|u| !u.is_empty()).ok_or_else(|| {
        (
            key.clone(),
            "OAUTHBEARER is enabled but no key set is configured".to_string(),
        )
    })?;
    let keys = OAuthSettings::load_jwks(&url).map_err(|e| (key, e))?;
    let list = |k: &str| -> Vec<String> {
        lookup(k)
            .1
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let sub_claim = lookup(SUB_CLAIM_KEY)
        .1
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sub".into());
    Ok(OAuthSettings {
        keys,
        audience: list(AUDIENCE_KEY),
        issuer: lookup(ISSUER_KEY).1.filter(|s| !s.is_empty()),
        sub_claim,
    })
}

/// Parses `sasl.enabled.mechanisms`; GSSAPI and unknown names are
/// refused with the reason.
pub fn parse_mechanisms(value: &str) -> Result<Vec<Mechanism>, String> {
    let mut out = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let upper = name.to_ascii_uppercase();
        if upper == "GSSAPI" {
            return Err(
                "GSSAPI (Kerberos) is not supported; enable PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
                    .into(),
            );
        }
        let m = Mechanism::from_name(&upper).ok_or_else(|| {
            format!(
                "'{name}' is not one of {}",
                Mechanism::ALL.map(Mechanism::name).join(", ")
            )
        })?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

fn parse_plain_jaas(value: &str) -> Result<BTreeMap<String, String>, String> {
    jaas::parse(value).and_then(|e| jaas::plain_users(&e))
}

/// Whether `name`'s value holds passwords: error messages leave it out.
pub fn is_secret(name: &str) -> bool {
    name == JAAS_KEY || name == BOOTSTRAP_USERS_KEY || name.ends_with(".sasl.jaas.config")
}

/// Whether `name` is a SASL key outside the broker's key table: secrets
/// and listener-scoped keys.
pub fn is_unlisted_key(name: &str) -> bool {
    if name == JAAS_KEY || name == BOOTSTRAP_USERS_KEY {
        return true;
    }
    let Some(rest) = name.strip_prefix("listener.name.") else {
        return false;
    };
    let Some((listener, key)) = rest.split_once('.') else {
        return false;
    };
    !listener.is_empty() && (key == PLAIN_JAAS_SUFFIX || LISTENER_KEYS.contains(&key))
}

/// Checks a SASL key's value (listed or not); the error says what was
/// expected.
pub fn check(name: &str, value: &str) -> Result<(), String> {
    let key = name
        .strip_prefix("listener.name.")
        .and_then(|r| r.split_once('.'))
        .map_or(name, |(_, k)| k);
    match key {
        MECHANISMS_KEY => parse_mechanisms(value).map(|_| ()),
        JAAS_KEY | PLAIN_JAAS_SUFFIX => parse_plain_jaas(value).map(|_| ()),
        BOOTSTRAP_USERS_KEY => parse_bootstrap_users(value).map(|_| ()),
        REAUTH_KEY => value
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|_| ())
            .ok_or_else(|| "a number of milliseconds, 0 or more".into()),
        JWKS_KEY if !value.is_empty() && !value.starts_with("file://") => {
            Err("a file:// URL of a JWKS document".into())
        }
        _ => Ok(()),
    }
}

/// The SCRAM users to create at start-up.
pub fn bootstrap_users(value: Option<&str>) -> Vec<BootstrapUser> {
    value
        .map(|v| parse_bootstrap_users(v).unwrap_or_default())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, (String, String)> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::for_listener(&|k| map.get(k).cloned(), "sasl_plaintext")
    }

    const ALICE: &str =
        "org.apache.kafka.common.security.plain.PlainLoginModule required user_alice=\"a\";";

    #[test]
    fn listener_keys_win_and_errors_name_the_key() {
        let s = settings(&[
            ("sasl.enabled.mechanisms", "SCRAM-SHA-256"),
            (
                "listener.name.sasl_plaintext.sasl.enabled.mechanisms",
                "PLAIN,SCRAM-SHA-512",
            ),
            ("sasl.jaas.config", ALICE),
            ("connections.max.reauth.ms", "5000"),
        ])
        .unwrap();
        assert_eq!(s.mechanism_names(), ["PLAIN", "SCRAM-SHA-512"]);
        assert_eq!(s.plain_users["alice"], "a");
        assert_eq!(s.reauth_ms, 5000);
        let (key, why) = settings(&[("sasl.enabled.mechanisms", "GSSAPI")]).unwrap_err();
        assert_eq!(key, "sasl.enabled.mechanisms");
        assert!(why.contains("Kerberos"), "{why}");
        let (key, _) = settings(&[]).unwrap_err();
        assert_eq!(key, "listener.name.sasl_plaintext.plain.sasl.jaas.config");
        let (key, _) = settings(&[
            (
                "listener.name.sasl_plaintext.plain.sasl.jaas.config",
                "x required",
            ),
            ("sasl.jaas.config", ALICE),
        ])
        .unwrap_err();
        assert_eq!(key, "listener.name.sasl_plaintext.plain.sasl.jaas.config");
        let (key, _) = settings(&[("sasl.enabled.mechanisms", "OAUTHBEARER")]).unwrap_err();
        assert_eq!(key, "sasl.oauthbearer.jwks.endpoint.url");
    }

    #[test]
    fn unlisted_keys() {
        assert!(is_unlisted_key(
            "listener.name.sasl_ssl.plain.sasl.jaas.config"
        ));
        assert!(is_unlisted_key("listener.name.x.sasl.enabled.mechanisms"));
        assert!(is_unlisted_key("sasl.jaas.config"));
        assert!(!is_unlisted_key(
            "listener.name.x.scram-sha-256.sasl.jaas.config"
        ));
        assert!(!is_unlisted_key("sasl.enabled.mechanisms"));
        assert!(check("listener.name.x.sasl.enabled.mechanisms", "GSSAPI").is_err());
        assert!(check("sasl.oauthbearer.jwks.endpoint.url", "https://idp/jwks").is_err());
    }
}
