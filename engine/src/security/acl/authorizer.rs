//! The broker's authorizer: the three settings that shape a decision
//! (`authorizer.class.name`, `super.users`,
//! `allow.everyone.if.no.acl.found`) over the ACL index of the metadata
//! snapshot in hand. It holds no ACLs itself and no lock: a decision is
//! a pure function of (settings, ACLs, principal, host, operation,
//! resource), so every shard decides on its own.

use super::index::{AclIndex, Decision};
use super::{Operation, ResourceType};
use crate::config::{BrokerConfig, ConfigError};
use crate::security::Principal;
use std::collections::HashSet;

/// Kafka's KRaft authorizer, whose ACL model Sluice implements.
pub const KAFKA_STANDARD_AUTHORIZER: &str =
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer";

/// Sluice's own name for the same authorizer.
pub const SLUICE_AUTHORIZER: &str = "sluice.acl";

/// Decides requests; see the module doc.
#[derive(Debug, Default)]
pub struct Authorizer {
    enabled: bool,
    super_users: HashSet<Principal>,
    allow_if_no_acl: bool,
}

impl Authorizer {
    /// The authorizer the config asks for: off without
    /// `authorizer.class.name`, refused for a class Sluice does not have.
    pub fn from_config(config: &BrokerConfig) -> Result<Authorizer, ConfigError> {
        let class = config.get("authorizer.class.name").unwrap_or("").trim();
        let enabled = match class {
            "" => false,
            KAFKA_STANDARD_AUTHORIZER | SLUICE_AUTHORIZER => true,
            other => {
                return Err(ConfigError::InvalidValue {
                    key: "authorizer.class.name".into(),
                    value: other.into(),
                    expected: format!(
                        "{KAFKA_STANDARD_AUTHORIZER} or {SLUICE_AUTHORIZER} (ACLs in the \
                         metadata log), or empty for no authorization; other authorizers \
                         are Java classes Sluice cannot load"
                    ),
                })
            }
        };
        let text = config.get("super.users").unwrap_or("");
        let mut super_users = HashSet::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let p = Principal::parse(part).ok_or_else(|| ConfigError::InvalidValue {
                key: "super.users".into(),
                value: text.into(),
                expected: "principals separated by ';', as User:alice;User:bob".into(),
            })?;
            super_users.insert(p);
        }
        Ok(Authorizer {
            enabled,
            super_users,
            allow_if_no_acl: config.get("allow.everyone.if.no.acl.found") == Some("true"),
        })
    }

    /// An authorizer that is on, for tests.
    pub fn new(super_users: &[Principal], allow_if_no_acl: bool) -> Authorizer {
        Authorizer {
            enabled: true,
            super_users: super_users.iter().cloned().collect(),
            allow_if_no_acl,
        }
    }

    /// Whether requests are checked at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `principal` connecting from `host` (an IP address) may do
    /// `operation` on resource (`resource_type`, `name`).
    pub fn authorize(
        &self,
        acls: &AclIndex,
        principal: &Principal,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled || self.super_users.contains(principal) {
            return true;
        }
        match acls.decide(principal, host, operation, resource_type, name) {
            Decision::Allow => true,
            Decision::Deny => false,
            Decision::NoAcl => self.allow_if_no_acl,
        }
    }
}

impl Authorizer {
    /// Whether `principal` may do `operation` on some resource of
    /// `resource_type` (see [`AclIndex::decide_any`]).
    pub fn authorize_any(
        &self,
        acls: &AclIndex,
        principal: &Principal,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.enabled || self.super_users.contains(principal) {
            return true;
        }
        match acls.decide_any(principal, host, operation, resource_type) {
            Decision::Allow => true,
            Decision::Deny => false,
            Decision::NoAcl => self.allow_if_no_acl,
        }
    }
}

/// Why a peer may not speak on the controller listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRefusal {
    /// Not a super user, and this node has not loaded the ACLs yet.
    AclsNotLoaded,
    /// The ACLs on the cluster deny it CLUSTER_ACTION (a DENY applies,
    /// or ACLs name the cluster and none allows it).
    Denied,
    /// No ACL names the cluster and `allow.everyone.if.no.acl.found` is
    /// false.
    NoAcl,
}

impl std::fmt::Display for PeerRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerRefusal::AclsNotLoaded => {
                "not a super user, and this voter has not loaded the metadata yet \
                 (until it has, super.users alone decide)"
            }
            PeerRefusal::Denied => "the ACLs on the cluster do not allow it CLUSTER_ACTION",
            PeerRefusal::NoAcl => {
                "not a super user and no ACL names the cluster \
                 (allow.everyone.if.no.acl.found is false)"
            }
        })
    }
}

impl Authorizer {
    /// Whether `principal` connecting from `host` may speak on the
    /// controller listener (register, heartbeat, fetch the metadata log,
    /// ask for changes, Raft between voters): CLUSTER_ACTION on the
    /// cluster, as Kafka's controller asks of its BrokerRegistration,
    /// BrokerHeartbeat, Vote and Fetch callers. `acls` is `None` until
    /// this node has loaded the metadata; super users alone are let in
    /// then, as Kafka's authorizer answers only super users before its
    /// initial load (the voters must elect a leader before any ACL can
    /// be read). Without an authorizer everyone may.
    pub fn authorize_cluster_peer(
        &self,
        acls: Option<&AclIndex>,
        principal: &Principal,
        host: &str,
    ) -> Result<(), PeerRefusal> {
        if !self.enabled || self.super_users.contains(principal) {
            return Ok(());
        }
        let acls = acls.ok_or(PeerRefusal::AclsNotLoaded)?;
        match acls.decide(
            principal,
            host,
            Operation::ClusterAction,
            ResourceType::Cluster,
            super::CLUSTER_NAME,
        ) {
            Decision::Allow => Ok(()),
            Decision::Deny => Err(PeerRefusal::Denied),
            Decision::NoAcl if self.allow_if_no_acl => Ok(()),
            Decision::NoAcl => Err(PeerRefusal::NoAcl),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::acl::{AclBinding, PatternType, Permission};

    fn config(pairs: &[(&str, &str)]) -> Result<Authorizer, ConfigError> {
        let mut c = BrokerConfig::default();
        for (k, v) in pairs {
            c.set(k, v).unwrap();
        }
        Authorizer::from_config(&c)
    }

    #[test]
    fn settings_are_read_and_bad_ones_refused() {
        assert!(!config(&[]).unwrap().enabled());
        let a = config(&[
            ("authorizer.class.name", KAFKA_STANDARD_AUTHORIZER),
            ("super.users", "User:admin; User:CN=broker,O=x"),
            ("allow.everyone.if.no.acl.found", "true"),
        ])
        .unwrap();
        assert!(a.enabled() && a.allow_if_no_acl);
        assert!(a.super_users.contains(&Principal::user("CN=broker,O=x")));
        let e = config(&[(
            "authorizer.class.name",
            "kafka.security.authorizer.AclAuthorizer",
        )])
        .unwrap_err();
        assert!(e.to_string().contains("authorizer.class.name"), "{e}");
        assert!(config(&[("super.users", "admin")]).is_err());
        assert!(config(&[("authorizer.class.name", SLUICE_AUTHORIZER)])
            .unwrap()
            .enabled());
    }

    #[test]
    fn super_users_and_the_no_acl_rule() {
        let deny_all = AclBinding {
            resource_type: ResourceType::Topic,
            name: "*".into(),
            pattern: PatternType::Literal,
            principal: "User:*".into(),
            host: "*".into(),
            operation: Operation::All,
            permission: Permission::Deny,
        };
        let acls = AclIndex::new(&[deny_all].into());
        let root = Principal::user("root");
        let anon = Principal::anonymous();
        let strict = Authorizer::new(std::slice::from_ref(&root), false);
        let open = Authorizer::new(&[], true);
        let read = |a: &Authorizer, p: &Principal, t, name| {
            a.authorize(&acls, p, "127.0.0.1", Operation::Read, t, name)
        };
        assert!(read(&strict, &root, ResourceType::Topic, "t"));
        assert!(!read(&strict, &anon, ResourceType::Topic, "t"));
        assert!(!read(&strict, &anon, ResourceType::Group, "g"));
        assert!(read(&open, &anon, ResourceType::Group, "g"));
        assert!(!read(&open, &anon, ResourceType::Topic, "t"));
        assert!(read(
            &Authorizer::default(),
            &anon,
            ResourceType::Topic,
            "t"
        ));
    }
    #[test]
    fn controller_peers_need_cluster_action_or_super_user() {
        let acl = |principal: &str, host: &str, operation, permission| AclBinding {
            resource_type: ResourceType::Cluster,
            name: crate::security::acl::CLUSTER_NAME.into(),
            pattern: PatternType::Literal,
            principal: principal.into(),
            host: host.into(),
            operation,
            permission,
        };
        let broker = Principal::user("CN=broker");
        let peer = Principal::user("CN=broker-2");
        let intruder = Principal::user("CN=intruder");
        let host = "127.0.0.1";
        let strict = Authorizer::new(std::slice::from_ref(&broker), false);
        let open = Authorizer::new(std::slice::from_ref(&broker), true);
        let none = AclIndex::default();

        // Before the ACLs are loaded only super users get in, whatever
        // allow.everyone.if.no.acl.found says.
        assert_eq!(strict.authorize_cluster_peer(None, &broker, host), Ok(()));
        for a in [&strict, &open] {
            assert_eq!(
                a.authorize_cluster_peer(None, &peer, host),
                Err(PeerRefusal::AclsNotLoaded)
            );
        }
        // No ACL names the cluster: allow.everyone.if.no.acl.found decides.
        assert_eq!(
            strict.authorize_cluster_peer(Some(&none), &intruder, host),
            Err(PeerRefusal::NoAcl)
        );
        assert_eq!(
            open.authorize_cluster_peer(Some(&none), &intruder, host),
            Ok(())
        );

        // An ALLOW for one principal names the cluster: nobody else.
        let allowed = AclIndex::new(
            &[acl(
                "User:CN=broker-2",
                "*",
                Operation::ClusterAction,
                Permission::Allow,
            )]
            .into(),
        );
        for a in [&strict, &open] {
            assert_eq!(
                a.authorize_cluster_peer(Some(&allowed), &peer, host),
                Ok(())
            );
            assert_eq!(
                a.authorize_cluster_peer(Some(&allowed), &intruder, host),
                Err(PeerRefusal::Denied)
            );
            assert_eq!(
                a.authorize_cluster_peer(Some(&allowed), &broker, host),
                Ok(())
            );
        }
        // Another operation does not do; ALL does; a DENY beats ALL; the
        // host must match.
        let other = AclIndex::new(
            &[acl(
                "User:CN=broker-2",
                "*",
                Operation::Alter,
                Permission::Allow,
            )]
            .into(),
        );
        assert_eq!(
            strict.authorize_cluster_peer(Some(&other), &peer, host),
            Err(PeerRefusal::Denied)
        );
        let everyone_but = AclIndex::new(
            &[
                acl("User:*", "*", Operation::All, Permission::Allow),
                acl(
                    "User:CN=intruder",
                    "*",
                    Operation::ClusterAction,
                    Permission::Deny,
                ),
            ]
            .into(),
        );
        assert_eq!(
            strict.authorize_cluster_peer(Some(&everyone_but), &peer, host),
            Ok(())
        );
        assert_eq!(
            strict.authorize_cluster_peer(Some(&everyone_but), &intruder, host),
            Err(PeerRefusal::Denied)
        );
        let elsewhere = AclIndex::new(
            &[acl(
                "User:CN=broker-2",
                "10.0.0.9",
                Operation::ClusterAction,
                Permission::Allow,
            )]
            .into(),
        );
        assert_eq!(
            strict.authorize_cluster_peer(Some(&elsewhere), &peer, host),
            Err(PeerRefusal::Denied)
        );
        assert_eq!(
            strict.authorize_cluster_peer(Some(&elsewhere), &peer, "10.0.0.9"),
            Ok(())
        );
        // Without an authorizer everyone may, as before.
        let off = Authorizer::default();
        assert_eq!(off.authorize_cluster_peer(None, &intruder, host), Ok(()));
        assert_eq!(
            off.authorize_cluster_peer(Some(&everyone_but), &intruder, host),
            Ok(())
        );
    }
}
