//! Kafka's ACL model: who ([`Principal`], `User:*` for everyone) may do
//! what ([`Operation`]) to which resources ([`ResourceType`] and a name,
//! matched LITERAL or PREFIXED), from which host, ALLOW or DENY.
//!
//! An [`AclBinding`] is one stored rule; the set of them is part of the
//! cluster metadata log (`Record::Acl`), so every broker holds the same
//! rules and they survive restarts. Each metadata snapshot carries an
//! [`index::AclIndex`] built from them, and [`authorizer::Authorizer`]
//! decides a request against it without locks. [`apis`] says which
//! operation each API needs on which resource.
//!
//! The numeric codes are Kafka's wire codes (`ResourceType`,
//! `PatternType`, `AclOperation`, `AclPermissionType` in its clients).

pub mod apis;
pub mod authorizer;
pub mod index;

use crate::security::Principal;
use serde::{Deserialize, Serialize};

/// The name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The resource name and host that match every name and host.
pub const WILDCARD: &str = "*";

/// Longest resource name, principal or host an ACL may hold: a bound on
/// what one CreateAcls entry can make every broker keep in memory.
pub const ACL_FIELD_LEN_MAX: usize = 1024;

/// What an ACL is about. `Any` appears only in filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    Any,
    Topic,
    Group,
    Cluster,
    TransactionalId,
    DelegationToken,
    User,
}

impl ResourceType {
    /// The resource types a binding may name.
    pub const CONCRETE: [ResourceType; 6] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
        ResourceType::DelegationToken,
        ResourceType::User,
    ];

    pub fn from_code(code: i8) -> Option<ResourceType> {
        Some(match code {
            1 => ResourceType::Any,
            2 => ResourceType::Topic,
            3 => ResourceType::Group,
            4 => ResourceType::Cluster,
            5 => ResourceType::TransactionalId,
            6 => ResourceType::DelegationToken,
            7 => ResourceType::User,
            _ => return None,
        })
    }

    pub fn code(self) -> i8 {
        match self {
            ResourceType::Any => 1,
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
            ResourceType::DelegationToken => 6,
            ResourceType::User => 7,
        }
    }
}

/// How an ACL's resource name matches. `Any` and `Match` appear only in
/// filters: `Any` takes either stored type with exactly the filter's
/// name, `Match` every ACL that would apply to a resource of that name
/// (the literal name, the literal `*`, prefixes of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PatternType {
    Any,
    Match,
    Literal,
    Prefixed,
}

impl PatternType {
    pub fn from_code(code: i8) -> Option<PatternType> {
        Some(match code {
            1 => PatternType::Any,
            2 => PatternType::Match,
            3 => PatternType::Literal,
            4 => PatternType::Prefixed,
            _ => return None,
        })
    }

    pub fn code(self) -> i8 {
        match self {
            PatternType::Any => 1,
            PatternType::Match => 2,
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }
}

/// What a request does to a resource. `Any` appears only in filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    Any,
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    CreateTokens,
    DescribeTokens,
    TwoPhaseCommit,
}

impl Operation {
    pub fn from_code(code: i8) -> Option<Operation> {
        use Operation::*;
        Some(match code {
            1 => Any,
            2 => All,
            3 => Read,
            4 => Write,
            5 => Create,
            6 => Delete,
            7 => Alter,
            8 => Describe,
            9 => ClusterAction,
            10 => DescribeConfigs,
            11 => AlterConfigs,
            12 => IdempotentWrite,
            13 => CreateTokens,
            14 => DescribeTokens,
            15 => TwoPhaseCommit,
            _ => return None,
        })
    }

    pub fn code(self) -> i8 {
        use Operation::*;
        match self {
            Any => 1,
            All => 2,
            Read => 3,
            Write => 4,
            Create => 5,
            Delete => 6,
            Alter => 7,
            Describe => 8,
            ClusterAction => 9,
            DescribeConfigs => 10,
            AlterConfigs => 11,
            IdempotentWrite => 12,
            CreateTokens => 13,
            DescribeTokens => 14,
            TwoPhaseCommit => 15,
        }
    }

    /// Whether an ALLOW of `self` allows `wanted`: ALL allows everything,
    /// and as in Kafka READ, WRITE, DELETE and ALTER allow DESCRIBE, and
    /// ALTER_CONFIGS allows DESCRIBE_CONFIGS. A DENY denies only its own
    /// operation (or everything, for ALL): see [`Operation::denies`].
    pub fn allows(self, wanted: Operation) -> bool {
        use Operation::*;
        self == All
            || self == wanted
            || (wanted == Describe && matches!(self, Read | Write | Delete | Alter))
            || (wanted == DescribeConfigs && self == AlterConfigs)
    }

    /// Whether a DENY of `self` denies `wanted`.
    pub fn denies(self, wanted: Operation) -> bool {
        self == Operation::All || self == wanted
    }
}

/// ALLOW or DENY. `Any` appears only in filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    Any,
    Deny,
    Allow,
}

impl Permission {
    pub fn from_code(code: i8) -> Option<Permission> {
        Some(match code {
            1 => Permission::Any,
            2 => Permission::Deny,
            3 => Permission::Allow,
            _ => return None,
        })
    }

    pub fn code(self) -> i8 {
        match self {
            Permission::Any => 1,
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }
}

/// One stored ACL: a resource pattern and an access control entry.
/// Two equal bindings are one ACL (creating it twice keeps one).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    /// `Type:name`; `User:*` matches every principal.
    pub principal: String,
    /// An IP address or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// Why a binding or filter is refused: Kafka answers INVALID_REQUEST
/// with this message for that entry.
pub type Invalid = String;

fn check_len(what: &str, value: &str) -> Result<(), Invalid> {
    if value.len() > ACL_FIELD_LEN_MAX {
        return Err(format!(
            "The {what} is longer than {ACL_FIELD_LEN_MAX} bytes."
        ));
    }
    Ok(())
}

impl AclBinding {
    /// A binding from CreateAcls' wire fields, checked as Kafka checks
    /// them.
    pub fn from_wire(
        resource_type: i8,
        name: &str,
        pattern: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<AclBinding, Invalid> {
        let resource_type = ResourceType::from_code(resource_type)
            .filter(|t| *t != ResourceType::Any)
            .ok_or_else(|| format!("Invalid resource type {resource_type}."))?;
        let pattern = PatternType::from_code(pattern)
            .filter(|p| matches!(p, PatternType::Literal | PatternType::Prefixed))
            .ok_or_else(|| format!("Invalid pattern type {pattern}: use LITERAL or PREFIXED."))?;
        let operation = Operation::from_code(operation)
            .filter(|o| *o != Operation::Any)
            .ok_or_else(|| format!("Invalid operation {operation}."))?;
        let permission = Permission::from_code(permission)
            .filter(|p| *p != Permission::Any)
            .ok_or_else(|| format!("Invalid permission type {permission}."))?;
        if name.is_empty() {
            return Err("Invalid empty resource name.".into());
        }
        if resource_type == ResourceType::Cluster && name != CLUSTER_NAME {
            return Err(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}."
            ));
        }
        if Principal::parse(principal).is_none() {
            return Err(format!(
                "Invalid principal '{principal}': expected Type:name, as User:alice."
            ));
        }
        if host.is_empty() {
            return Err("Invalid empty host: use * for every host.".into());
        }
        check_len("resource name", name)?;
        check_len("principal", principal)?;
        check_len("host", host)?;
        Ok(AclBinding {
            resource_type,
            name: name.into(),
            pattern,
            principal: principal.into(),
            host: host.into(),
            operation,
            permission,
        })
    }
}

/// A DescribeAcls or DeleteAcls filter; `None` fields match anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub name: Option<String>,
    pub pattern: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclFilter {
    /// A filter from the wire fields, refused where Kafka refuses it.
    pub fn from_wire(
        resource_type: i8,
        name: Option<&str>,
        pattern: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<AclFilter, Invalid> {
        let f = AclFilter {
            resource_type: ResourceType::from_code(resource_type)
                .ok_or_else(|| format!("Invalid resource type filter {resource_type}."))?,
            name: name.map(str::to_string),
            pattern: PatternType::from_code(pattern)
                .ok_or_else(|| format!("Invalid pattern type filter {pattern}."))?,
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation: Operation::from_code(operation)
                .ok_or_else(|| format!("Invalid operation filter {operation}."))?,
            permission: Permission::from_code(permission)
                .ok_or_else(|| format!("Invalid permission type filter {permission}."))?,
        };
        if let Some(p) = &f.principal {
            if Principal::parse(p).is_none() {
                return Err(format!("Invalid principal filter '{p}'."));
            }
        }
        Ok(f)
    }

    /// Whether the filter selects `b`.
    pub fn matches(&self, b: &AclBinding) -> bool {
        let any_or = |want: Option<&String>, have: &str| want.is_none_or(|w| w == have);
        (self.resource_type == ResourceType::Any || self.resource_type == b.resource_type)
            && self.matches_pattern(b)
            && any_or(self.principal.as_ref(), &b.principal)
            && any_or(self.host.as_ref(), &b.host)
            && (self.operation == Operation::Any || self.operation == b.operation)
            && (self.permission == Permission::Any || self.permission == b.permission)
    }

    fn matches_pattern(&self, b: &AclBinding) -> bool {
        let Some(name) = &self.name else {
            return match self.pattern {
                PatternType::Any | PatternType::Match => true,
                p => p == b.pattern,
            };
        };
        match self.pattern {
            PatternType::Any => *name == b.name,
            PatternType::Literal | PatternType::Prefixed => {
                b.pattern == self.pattern && *name == b.name
            }
            PatternType::Match => match b.pattern {
                PatternType::Literal => b.name == *name || b.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(&b.name),
                _ => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str, pattern: PatternType) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            name: name.into(),
            pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }
    }

    fn filter(name: Option<&str>, pattern: PatternType) -> AclFilter {
        AclFilter {
            resource_type: ResourceType::Any,
            name: name.map(str::to_string),
            pattern,
            principal: None,
            host: None,
            operation: Operation::Any,
            permission: Permission::Any,
        }
    }

    #[test]
    fn codes_round_trip() {
        for code in 1..=7 {
            assert_eq!(ResourceType::from_code(code).unwrap().code(), code);
        }
        for code in 1..=4 {
            assert_eq!(PatternType::from_code(code).unwrap().code(), code);
        }
        for code in 1..=15 {
            assert_eq!(Operation::from_code(code).unwrap().code(), code);
        }
        for code in 1..=3 {
            assert_eq!(Permission::from_code(code).unwrap().code(), code);
        }
        assert_eq!(ResourceType::from_code(0), None);
        assert_eq!(Operation::from_code(16), None);
    }

    #[test]
    fn implications_are_kafkas() {
        use Operation::*;
        for op in [Read, Write, Delete, Alter] {
            assert!(op.allows(Describe), "{op:?}");
            assert!(!op.denies(Describe), "{op:?}");
        }
        assert!(!Create.allows(Describe));
        assert!(AlterConfigs.allows(DescribeConfigs));
        assert!(!DescribeConfigs.allows(AlterConfigs));
        assert!(!Describe.allows(Read));
        assert!(All.allows(ClusterAction));
        assert!(All.denies(Read));
    }

    #[test]
    fn bindings_are_checked() {
        let ok = AclBinding::from_wire(2, "t", 3, "User:a", "*", 3, 3).unwrap();
        assert_eq!(ok.operation, Operation::Read);
        assert!(AclBinding::from_wire(1, "t", 3, "User:a", "*", 3, 3).is_err());
        assert!(AclBinding::from_wire(2, "t", 2, "User:a", "*", 3, 3).is_err());
        assert!(AclBinding::from_wire(2, "t", 3, "alice", "*", 3, 3).is_err());
        assert!(AclBinding::from_wire(2, "", 3, "User:a", "*", 3, 3).is_err());
        assert!(AclBinding::from_wire(2, "t", 3, "User:a", "*", 1, 3).is_err());
        assert!(AclBinding::from_wire(2, "t", 3, "User:a", "*", 3, 1).is_err());
        assert!(AclBinding::from_wire(4, "c", 3, "User:a", "*", 7, 3).is_err());
        assert!(AclBinding::from_wire(4, CLUSTER_NAME, 3, "User:a", "*", 7, 3).is_ok());
        assert!(AclBinding::from_wire(9, "t", 3, "User:a", "*", 3, 3).is_err());
        let long = "x".repeat(ACL_FIELD_LEN_MAX + 1);
        assert!(AclBinding::from_wire(2, &long, 3, "User:a", "*", 3, 3).is_err());
    }

    #[test]
    fn filters_match_as_kafka_does() {
        let lit = binding("orders", PatternType::Literal);
        let star = binding("*", PatternType::Literal);
        let pre = binding("ord", PatternType::Prefixed);
        let m = filter(Some("orders"), PatternType::Match);
        assert!(m.matches(&lit) && m.matches(&star) && m.matches(&pre));
        assert!(!m.matches(&binding("orders-x", PatternType::Prefixed)));
        let any = filter(Some("ord"), PatternType::Any);
        assert!(any.matches(&pre) && !any.matches(&lit));
        let literal = filter(Some("orders"), PatternType::Literal);
        assert!(literal.matches(&lit) && !literal.matches(&star));
        assert!(filter(None, PatternType::Any).matches(&pre));
        assert!(!filter(None, PatternType::Literal).matches(&pre));
        let mut f = filter(None, PatternType::Any);
        f.principal = Some("User:bob".into());
        assert!(!f.matches(&lit));
        f.principal = None;
        f.operation = Operation::Write;
        assert!(!f.matches(&lit));
    }
}
