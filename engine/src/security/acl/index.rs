//! The ACLs of one metadata snapshot, arranged for the question every
//! request asks: which rules apply to resource (type, name)?
//!
//! Per resource type, LITERAL rules sit in a hash map by name (the
//! wildcard `*` is one more name), PREFIXED rules in a sorted map by
//! prefix, with the distinct prefix lengths kept aside: a name of
//! length n is then checked with one lookup per distinct prefix length
//! no longer than n (usually a handful), not one per character and never
//! a scan over all rules. The index is built once per metadata change,
//! shared by every shard through the snapshot's `Arc`, and never
//! changed, so the data path reads it without locks.

use super::{AclBinding, Operation, PatternType, Permission, ResourceType, WILDCARD};
use crate::security::Principal;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The part of a binding the decision needs once the resource matched.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    principal: String,
    host: String,
    operation: Operation,
    permission: Permission,
}

impl Entry {
    fn of(b: &AclBinding) -> Entry {
        Entry {
            principal: b.principal.clone(),
            host: b.host.clone(),
            operation: b.operation,
            permission: b.permission,
        }
    }
}

#[derive(Debug, Default)]
struct TypeAcls {
    literal: HashMap<String, Vec<Entry>>,
    prefixed: BTreeMap<String, Vec<Entry>>,
    /// Distinct lengths of the keys of `prefixed`, ascending.
    prefix_lengths: Vec<usize>,
}

/// What the ACLs say about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// No ACL names the resource at all (for any principal): the answer
    /// is `allow.everyone.if.no.acl.found`.
    NoAcl,
}

/// Every ACL of a snapshot; see the module doc.
#[derive(Debug, Default)]
pub struct AclIndex {
    by_type: HashMap<ResourceType, TypeAcls>,
    /// All bindings in order, for DescribeAcls and DeleteAcls.
    all: BTreeSet<AclBinding>,
}

impl AclIndex {
    pub fn new(bindings: &BTreeSet<AclBinding>) -> AclIndex {
        let mut by_type: HashMap<ResourceType, TypeAcls> = HashMap::new();
        for b in bindings {
            let t = by_type.entry(b.resource_type).or_default();
            let map = match b.pattern {
                PatternType::Prefixed => t.prefixed.entry(b.name.clone()).or_default(),
                _ => t.literal.entry(b.name.clone()).or_default(),
            };
            map.push(Entry::of(b));
        }
        for t in by_type.values_mut() {
            let lengths: BTreeSet<usize> = t.prefixed.keys().map(String::len).collect();
            t.prefix_lengths = lengths.into_iter().collect();
        }
        AclIndex {
            by_type,
            all: bindings.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Every binding, in order.
    pub fn bindings(&self) -> impl Iterator<Item = &AclBinding> {
        self.all.iter()
    }

    /// Whether the index holds `b`.
    pub fn contains(&self, b: &AclBinding) -> bool {
        self.all.contains(b)
    }

    /// The rules that apply to resource (`resource_type`, `name`), in no
    /// particular order.
    fn applying<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let t = self.by_type.get(&resource_type);
        let literal = t.into_iter().flat_map(move |t| {
            let exact = t.literal.get(name).into_iter().flatten();
            let star = (name != WILDCARD)
                .then(|| t.literal.get(WILDCARD))
                .flatten()
                .into_iter()
                .flatten();
            exact.chain(star)
        });
        let prefixed = t.into_iter().flat_map(move |t| {
            t.prefix_lengths
                .iter()
                .take_while(move |len| **len <= name.len())
                .filter_map(move |len| name.get(..*len))
                .filter_map(move |prefix| t.prefixed.get(prefix))
                .flatten()
        });
        literal.chain(prefixed)
    }

    /// Kafka's rule: a matching DENY wins; else a matching ALLOW (with
    /// the implied operations) allows; else the resource is denied, or
    /// left to `allow.everyone.if.no.acl.found` when no rule names it.
    pub fn decide(
        &self,
        principal: &Principal,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Decision {
        let mut found = false;
        let mut allowed = false;
        for e in self.applying(resource_type, name) {
            found = true;
            if !principal_matches(&e.principal, principal)
                || !(e.host == WILDCARD || e.host == host)
            {
                continue;
            }
            match e.permission {
                Permission::Deny if e.operation.denies(operation) => return Decision::Deny,
                Permission::Allow if e.operation.allows(operation) => allowed = true,
                _ => {}
            }
        }
        match (allowed, found) {
            (true, _) => Decision::Allow,
            (false, true) => Decision::Deny,
            (false, false) => Decision::NoAcl,
        }
    }
}

impl AclIndex {
    /// Kafka's question for an idempotent producer without IDEMPOTENT_WRITE
    /// (KIP-679): may `principal` do `operation` on *some* resource of
    /// `resource_type`? Yes when an ALLOW names one that no DENY covers
    /// (a DENY of the literal `*` covers all). `NoAcl` when some resource
    /// of the type is named by no ACL (there is no literal `*` ACL), so
    /// that `allow.everyone.if.no.acl.found` would allow it, as Kafka
    /// answers by asking about a name nobody wrote an ACL for.
    pub fn decide_any(
        &self,
        principal: &Principal,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
    ) -> Decision {
        let Some(t) = self.by_type.get(&resource_type) else {
            return Decision::NoAcl;
        };
        let applies = |e: &Entry| {
            principal_matches(&e.principal, principal) && (e.host == WILDCARD || e.host == host)
        };
        let denies = |entries: Option<&Vec<Entry>>| {
            entries.into_iter().flatten().any(|e| {
                applies(e) && e.permission == Permission::Deny && e.operation.denies(operation)
            })
        };
        if denies(t.literal.get(WILDCARD)) {
            return Decision::Deny;
        }
        let allows = |entries: &Vec<Entry>| {
            entries.iter().any(|e| {
                applies(e) && e.permission == Permission::Allow && e.operation.allows(operation)
            })
        };
        // A prefix DENY covers every name and prefix that starts with it.
        let prefix_denied = |name: &str| {
            t.prefix_lengths
                .iter()
                .take_while(|len| **len <= name.len())
                .filter_map(|len| name.get(..*len))
                .any(|prefix| denies(t.prefixed.get(prefix)))
        };
        let literal = t.literal.iter().any(|(name, entries)| {
            allows(entries) && !denies(Some(entries)) && !prefix_denied(name)
        });
        let prefixed = t
            .prefixed
            .iter()
            .any(|(prefix, entries)| allows(entries) && !prefix_denied(prefix));
        match (literal || prefixed, t.literal.contains_key(WILDCARD)) {
            (true, _) => Decision::Allow,
            (false, false) => Decision::NoAcl,
            (false, true) => Decision::Deny,
        }
    }
}

/// Whether an ACL's principal (`User:alice`, `User:*`) names `p`.
fn principal_matches(acl: &str, p: &Principal) -> bool {
    match acl.split_once(':') {
        Some((kind, name)) => kind == p.kind && (name == WILDCARD || name == p.name),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        t: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: Operation,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: t,
            name: name.into(),
            pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn topic(
        name: &str,
        pattern: PatternType,
        who: &str,
        op: Operation,
        p: Permission,
    ) -> AclBinding {
        acl(ResourceType::Topic, name, pattern, who, op, p)
    }

    #[test]
    fn literal_prefixed_and_wildcard_rules_apply() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        let alice = Principal::user("alice");
        let bob = Principal::user("bob");
        let index = AclIndex::new(
            &[
                topic("orders", Literal, "User:alice", Write, Allow),
                topic("pay", Prefixed, "User:alice", Read, Allow),
                topic("*", Literal, "User:*", Describe, Allow),
                topic("pay.secret", Literal, "User:alice", Read, Deny),
            ]
            .into(),
        );
        let d =
            |p: &Principal, op, name| index.decide(p, "10.0.0.1", op, ResourceType::Topic, name);
        assert_eq!(d(&alice, Write, "orders"), Decision::Allow);
        assert_eq!(d(&alice, Read, "orders"), Decision::Deny);
        assert_eq!(d(&alice, Describe, "orders"), Decision::Allow);
        assert_eq!(d(&bob, Describe, "anything"), Decision::Allow);
        assert_eq!(d(&bob, Write, "orders"), Decision::Deny);
        assert_eq!(d(&alice, Read, "payments"), Decision::Allow);
        assert_eq!(d(&alice, Read, "pa"), Decision::Deny);
        assert_eq!(d(&alice, Read, "pay.secret"), Decision::Deny);
        // A DENY of READ does not deny the DESCRIBE a READ allows.
        assert_eq!(d(&alice, Describe, "pay.secret"), Decision::Allow);
        assert_eq!(
            index.decide(&alice, "h", Read, ResourceType::Group, "g"),
            Decision::NoAcl
        );
    }

    #[test]
    fn deny_beats_allow_and_hosts_match() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        let alice = Principal::user("alice");
        let mut from_host = topic("t", Literal, "User:alice", All, Deny);
        from_host.host = "10.0.0.9".into();
        let index = AclIndex::new(
            &[
                topic("t", Prefixed, "User:*", Read, Allow),
                topic("t", Literal, "User:alice", Write, Allow),
                from_host,
            ]
            .into(),
        );
        let d = |host, op| index.decide(&alice, host, op, ResourceType::Topic, "t");
        assert_eq!(d("10.0.0.1", Read), Decision::Allow);
        assert_eq!(d("10.0.0.9", Read), Decision::Deny);
        assert_eq!(d("10.0.0.9", Write), Decision::Deny);
        assert_eq!(d("10.0.0.1", Write), Decision::Allow);
    }

    #[test]
    fn some_resource_of_a_type() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        let p = Principal::user("u");
        let any = |acls: &[AclBinding]| {
            AclIndex::new(&acls.iter().cloned().collect()).decide_any(
                &p,
                "h",
                Write,
                ResourceType::Topic,
            )
        };
        assert_eq!(any(&[]), Decision::NoAcl);
        assert_eq!(
            any(&[topic("t", Literal, "User:u", Write, Allow)]),
            Decision::Allow
        );
        assert_eq!(
            any(&[topic("t", Literal, "User:u", Read, Allow)]),
            Decision::NoAcl
        );
        let closed = topic("*", Literal, "User:nobody", Read, Allow);
        assert_eq!(any(std::slice::from_ref(&closed)), Decision::Deny);
        let denied_by_prefix = [
            topic("t1", Literal, "User:u", Write, Allow),
            topic("t", Prefixed, "User:*", Write, Deny),
            closed,
        ];
        assert_eq!(any(&denied_by_prefix), Decision::Deny);
        let star = [
            topic("x", Prefixed, "User:u", All, Allow),
            topic("*", Literal, "User:u", Write, Deny),
        ];
        assert_eq!(any(&star), Decision::Deny);
        assert_eq!(any(&star[..1]), Decision::Allow);
    }

    #[test]
    fn prefixes_of_many_lengths() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        let p = Principal::user("u");
        let index = AclIndex::new(
            &[
                topic("a", Prefixed, "User:u", Read, Allow),
                topic("abc", Prefixed, "User:u", Read, Deny),
                topic("abcdef", Prefixed, "User:u", Write, Allow),
            ]
            .into(),
        );
        let d = |op, name| index.decide(&p, "h", op, ResourceType::Topic, name);
        assert_eq!(d(Read, "ab"), Decision::Allow);
        assert_eq!(d(Read, "abcd"), Decision::Deny);
        assert_eq!(d(Write, "abcdefg"), Decision::Allow);
        assert_eq!(d(Write, "abcde"), Decision::Deny);
        assert_eq!(d(Read, "b"), Decision::NoAcl);
        // Multi-byte names: a prefix length inside a character is skipped.
        assert_eq!(d(Read, "é"), Decision::NoAcl);
    }
}
