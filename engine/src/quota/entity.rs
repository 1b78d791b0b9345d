//! Client quota entities and their stored values (KIP-13, KIP-55,
//! KIP-546): which user and client id a quota is for, Kafka's order of
//! precedence between them, and DescribeClientQuotas' filters.
//!
//! An entity names a user, a client id, or both; either name may be the
//! default (`<default>`, a null name on the wire), which applies to every
//! user or client id without a quota of its own. The stored quotas are
//! part of the metadata image; each broker's snapshot holds them as a
//! [`ClientQuotas`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Entity type names on the wire.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
/// Kafka's connection-rate entity (KIP-612), which Sluice does not serve.
pub const IP: &str = "ip";

/// A user or client id named in a quota entity, or the default one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Name {
    Default,
    Named(String),
}

impl Name {
    /// From the wire: a null name is the default.
    pub fn from_wire(name: Option<&str>) -> Name {
        name.map_or(Name::Default, |n| Name::Named(n.to_string()))
    }

    pub fn to_wire(&self) -> Option<&str> {
        match self {
            Name::Default => None,
            Name::Named(n) => Some(n),
        }
    }
}

/// Whom a quota is for: a user, a client id, or a user's client id.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Name>,
}

impl QuotaEntity {
    /// (entity type, name) pairs as the wire lists them.
    pub fn parts(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push((USER, u.to_wire()));
        }
        if let Some(c) = &self.client_id {
            parts.push((CLIENT_ID, c.to_wire()));
        }
        parts
    }

    fn name_of(&self, entity_type: &str) -> Option<&Name> {
        match entity_type {
            USER => self.user.as_ref(),
            CLIENT_ID => self.client_id.as_ref(),
            _ => None,
        }
    }
}

/// The quotas Sluice enforces. Kafka's `controller_mutation_rate`
/// (KIP-599) and the ip entity's `connection_creation_rate` are refused
/// rather than stored and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QuotaKey {
    /// Bytes per second of produce requests.
    #[serde(rename = "producer_byte_rate")]
    ProducerByteRate,
    /// Bytes per second of fetch responses.
    #[serde(rename = "consumer_byte_rate")]
    ConsumerByteRate,
    /// Handling time as a percentage of one shard's time.
    #[serde(rename = "request_percentage")]
    RequestPercentage,
}

impl QuotaKey {
    pub const ALL: [QuotaKey; 3] = [
        QuotaKey::ProducerByteRate,
        QuotaKey::ConsumerByteRate,
        QuotaKey::RequestPercentage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
            QuotaKey::RequestPercentage => "request_percentage",
        }
    }

    pub fn from_name(name: &str) -> Option<QuotaKey> {
        QuotaKey::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Kafka defines the byte rates as LONG and the percentage as DOUBLE.
    pub fn is_long(self) -> bool {
        self != QuotaKey::RequestPercentage
    }
}

/// A quota's value, a double as Kafka's QuotaRecord has it; compared by
/// its bits so that metadata images compare.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &QuotaValue) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for QuotaValue {}

/// Every stored quota, by entity.
pub type QuotaMap = BTreeMap<QuotaEntity, BTreeMap<QuotaKey, QuotaValue>>;

/// How a DescribeClientQuotas component matches an entity's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// MATCH_TYPE_EXACT: this name.
    Exact(String),
    /// MATCH_TYPE_DEFAULT: the default entity.
    Default,
    /// MATCH_TYPE_SPECIFIED: any name, default included.
    Any,
}

/// The users and client ids whose rates are counted together: Kafka's
/// quota metric tags. Empty strings where the quota that applies is not
/// per user (or per client id).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SensorKey {
    pub user: String,
    pub client_id: String,
}

/// The quotas of a metadata snapshot.
#[derive(Debug, Default)]
pub struct ClientQuotas {
    map: QuotaMap,
}

impl ClientQuotas {
    pub fn new(map: QuotaMap) -> ClientQuotas {
        ClientQuotas { map }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn map(&self) -> &QuotaMap {
        &self.map
    }

    pub fn get(&self, entity: &QuotaEntity) -> Option<&BTreeMap<QuotaKey, QuotaValue>> {
        self.map.get(entity)
    }

    /// The quota of type `key` that applies to `user`'s client
    /// `client_id`, and whose rate it is counted in. Kafka's order, most
    /// specific first (docs/OPERATIONS.md lists it):
    /// user+client, user+default client, user, default user+client,
    /// default user+default client, default user, client, default client.
    pub fn lookup(&self, user: &str, client_id: &str, key: QuotaKey) -> Option<(f64, SensorKey)> {
        use Name::{Default as D, Named as N};
        let (u, c) = (N(user.to_string()), N(client_id.to_string()));
        // (entity, counted per user, counted per client id)
        let levels: [(Option<Name>, Option<Name>, bool, bool); 8] = [
            (Some(u.clone()), Some(c.clone()), true, true),
            (Some(u.clone()), Some(D), true, true),
            (Some(u), None, true, false),
            (Some(D), Some(c.clone()), true, true),
            (Some(D), Some(D), true, true),
            (Some(D), None, true, false),
            (None, Some(c), false, true),
            (None, Some(D), false, true),
        ];
        for (user_name, client_name, per_user, per_client) in levels {
            let entity = QuotaEntity {
                user: user_name,
                client_id: client_name,
            };
            if let Some(v) = self.map.get(&entity).and_then(|q| q.get(&key)) {
                let sensor = SensorKey {
                    user: if per_user {
                        user.to_string()
                    } else {
                        String::new()
                    },
                    client_id: if per_client {
                        client_id.to_string()
                    } else {
                        String::new()
                    },
                };
                return Some((v.0, sensor));
            }
        }
        None
    }

    /// The entities DescribeClientQuotas answers for `components`
    /// (entity type, match), as Kafka's ClientQuotasImage: an entity
    /// matches when it satisfies every component; with `strict` it must
    /// also have no other entity types. No components match everything
    /// unless strict.
    pub fn describe(
        &self,
        components: &[(String, Match)],
        strict: bool,
    ) -> Vec<(&QuotaEntity, &BTreeMap<QuotaKey, QuotaValue>)> {
        if components.is_empty() && strict {
            return Vec::new();
        }
        self.map
            .iter()
            .filter(|(entity, _)| {
                let all = components
                    .iter()
                    .all(|(t, m)| match (entity.name_of(t), m) {
                        (None, _) => false,
                        (Some(_), Match::Any) => true,
                        (Some(n), Match::Default) => *n == Name::Default,
                        (Some(n), Match::Exact(s)) => *n == Name::Named(s.clone()),
                    });
                all && (!strict || entity.parts().len() == components.len())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(user: Option<Name>, client_id: Option<Name>) -> QuotaEntity {
        QuotaEntity { user, client_id }
    }

    fn named(s: &str) -> Option<Name> {
        Some(Name::Named(s.into()))
    }

    fn quotas(entries: &[(QuotaEntity, f64)]) -> ClientQuotas {
        let mut map = QuotaMap::new();
        for (e, v) in entries {
            map.entry(e.clone())
                .or_default()
                .insert(QuotaKey::ProducerByteRate, QuotaValue(*v));
        }
        ClientQuotas::new(map)
    }

    #[test]
    fn the_most_specific_quota_applies() {
        let all = [
            (entity(named("alice"), named("app")), 1.0),
            (entity(named("alice"), Some(Name::Default)), 2.0),
            (entity(named("alice"), None), 3.0),
            (entity(Some(Name::Default), named("app")), 4.0),
            (entity(Some(Name::Default), Some(Name::Default)), 5.0),
            (entity(Some(Name::Default), None), 6.0),
            (entity(None, named("app")), 7.0),
            (entity(None, Some(Name::Default)), 8.0),
        ];
        // Removing the most specific level each time uncovers the next.
        for level in 0..all.len() {
            let q = quotas(&all[level..]);
            let (bound, _) = q
                .lookup("alice", "app", QuotaKey::ProducerByteRate)
                .unwrap();
            assert_eq!(bound, (level + 1) as f64, "level {level}");
            assert!(q
                .lookup("alice", "app", QuotaKey::ConsumerByteRate)
                .is_none());
        }
    }

    #[test]
    fn a_user_quota_is_shared_by_the_users_clients() {
        let q = quotas(&[(entity(named("alice"), None), 100.0)]);
        let (_, a) = q
            .lookup("alice", "one", QuotaKey::ProducerByteRate)
            .unwrap();
        let (_, b) = q
            .lookup("alice", "two", QuotaKey::ProducerByteRate)
            .unwrap();
        assert_eq!(a, b);
        assert!(q.lookup("bob", "one", QuotaKey::ProducerByteRate).is_none());
        // A default client-id quota counts each client id apart.
        let q = quotas(&[(entity(None, Some(Name::Default)), 100.0)]);
        let (_, a) = q
            .lookup("alice", "one", QuotaKey::ProducerByteRate)
            .unwrap();
        let (_, b) = q
            .lookup("alice", "two", QuotaKey::ProducerByteRate)
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(a.user, "");
    }

    #[test]
    fn describe_filters_as_kafka() {
        let q = quotas(&[
            (entity(named("alice"), None), 1.0),
            (entity(named("alice"), named("app")), 2.0),
            (entity(Some(Name::Default), None), 3.0),
            (entity(None, named("app")), 4.0),
        ]);
        let user = |m: Match| (USER.to_string(), m);
        let n = |c: &[(String, Match)], strict| q.describe(c, strict).len();
        assert_eq!(n(&[], false), 4);
        assert_eq!(n(&[], true), 0);
        assert_eq!(n(&[user(Match::Exact("alice".into()))], false), 2);
        assert_eq!(n(&[user(Match::Exact("alice".into()))], true), 1);
        assert_eq!(n(&[user(Match::Default)], false), 1);
        assert_eq!(n(&[user(Match::Any)], false), 3);
        assert_eq!(n(&[user(Match::Any)], true), 2);
        let both = [user(Match::Any), (CLIENT_ID.to_string(), Match::Any)];
        assert_eq!(n(&both, true), 1);
    }
}
