//! Which connections the broker takes: Kafka's `max.connections`,
//! `max.connections.per.ip` and `max.connections.per.ip.overrides`, counted
//! over every shard and listener.
//!
//! The rules are Kafka's:
//! - At `max.connections` a client listener stops serving new connections:
//!   the one just accepted waits, unanswered, until another closes, and the
//!   ones behind it wait in the kernel's accept queue. A client sees a
//!   connection that answers late, never a refusal.
//! - The inter-broker listener is never held back, so a broker full of
//!   clients still replicates. (Kafka closes a client listener's least
//!   recently used connection to make room for it; here it is admitted
//!   above the limit instead, so `max.connections` can be exceeded by at
//!   most the cluster's replication connections.)
//! - An address at its `max.connections.per.ip` (or its override) has any
//!   further connection closed at once, and the broker logs it (limited
//!   per address, as every bad-input warning is).
//!
//! The counts live in one structure shared by the shards: an atomic total
//! and a mutex-guarded map per address, touched only when a connection
//! opens or closes, never per request.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// How often a connection held at `max.connections` looks for room again.
/// Only connections over the limit poll; 10 ms keeps the wait short without
/// costing a busy shard anything measurable.
pub const ROOM_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// The limits, from the broker's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_total: u32,
    pub max_per_ip: u32,
    pub per_ip_overrides: HashMap<IpAddr, u32>,
}

impl Limits {
    /// No limit at all (Kafka's defaults).
    pub fn unlimited() -> Limits {
        Limits {
            max_total: u32::MAX,
            max_per_ip: u32::MAX,
            per_ip_overrides: HashMap::new(),
        }
    }

    fn per_ip(&self, ip: IpAddr) -> u32 {
        self.per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.max_per_ip)
    }
}

/// Parses `max.connections.per.ip.overrides`: `host:count` pairs separated
/// by commas, a host being an IP address or a name resolved now, as Kafka
/// resolves it when the setting is read. The error names the entry.
pub fn parse_overrides(text: &str) -> Result<HashMap<IpAddr, u32>, String> {
    let mut out = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, count) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("`{entry}` is not host:count"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{entry}`: the count is not a non-negative integer"))?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (host, 0)
                .to_socket_addrs()
                .map_err(|e| format!("`{entry}`: cannot resolve `{host}`: {e}"))?
                .map(|a| a.ip())
                .collect(),
        };
        if ips.is_empty() {
            return Err(format!("`{entry}`: `{host}` has no address"));
        }
        for ip in ips {
            out.insert(ip, count);
        }
    }
    Ok(out)
}

/// The broker's connection counts.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    total: AtomicU32,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The broker is at `max.connections`: wait for room.
    Full,
    /// The address is at its limit: close the connection.
    TooManyFromAddress { limit: u32 },
}

/// An admitted connection's place in the counts, given back on drop.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            total: AtomicU32::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Connections open now, over every listener.
    pub fn open(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts a connection from `ip` in, unless a limit forbids it.
    /// `protected`: the inter-broker listener, never held at the total.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, protected: bool) -> Result<Ticket, Refused> {
        // The address first: a connection refused for its address must not
        // take the last place in the total meanwhile.
        {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            let limit = self.limits.per_ip(ip);
            if *count >= limit {
                if *count == 0 {
                    per_ip.remove(&ip);
                }
                return Err(Refused::TooManyFromAddress { limit });
            }
            *count += 1;
        }
        let took = if protected {
            self.total.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.total
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < self.limits.max_total).then_some(n + 1)
                })
                .is_ok()
        };
        if !took {
            self.release_ip(ip);
            return Err(Refused::Full);
        }
        Ok(Ticket {
            admission: Arc::clone(self),
            ip,
        })
    }

    fn release_ip(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&ip) {
            assert!(*count > 0, "connection count of {ip} went below zero");
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let before = self.admission.total.fetch_sub(1, Ordering::Relaxed);
        assert!(before > 0, "connection total went below zero");
        self.admission.release_ip(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_at_its_limit_is_refused_until_one_closes() {
        let a = Admission::new(Limits {
            max_per_ip: 2,
            ..Limits::unlimited()
        });
        let one = a.admit(ip("10.0.0.1"), false).unwrap();
        let _two = a.admit(ip("10.0.0.1"), false).unwrap();
        assert_eq!(
            a.admit(ip("10.0.0.1"), false).unwrap_err(),
            Refused::TooManyFromAddress { limit: 2 }
        );
        // Another address is not affected.
        let _other = a.admit(ip("10.0.0.2"), false).unwrap();
        assert_eq!(a.open(), 3);
        drop(one);
        assert!(a.admit(ip("10.0.0.1"), false).is_ok());
    }

    #[test]
    fn overrides_replace_the_per_address_limit() {
        let a = Admission::new(Limits {
            max_per_ip: 1,
            per_ip_overrides: parse_overrides("127.0.0.1:3, 10.0.0.9:0").unwrap(),
            ..Limits::unlimited()
        });
        let held: Vec<_> = (0..3)
            .map(|_| a.admit(ip("127.0.0.1"), false).unwrap())
            .collect();
        assert!(a.admit(ip("127.0.0.1"), false).is_err());
        assert!(a.admit(ip("10.0.0.9"), false).is_err());
        let _x = a.admit(ip("10.0.0.8"), false).unwrap();
        assert!(a.admit(ip("10.0.0.8"), false).is_err());
        drop(held);
        assert_eq!(a.open(), 1);
    }

    #[test]
    fn the_total_holds_clients_but_not_the_inter_broker_listener() {
        let a = Admission::new(Limits {
            max_total: 2,
            ..Limits::unlimited()
        });
        let first = a.admit(ip("10.0.0.1"), false).unwrap();
        let _second = a.admit(ip("10.0.0.2"), false).unwrap();
        assert_eq!(a.admit(ip("10.0.0.3"), false).unwrap_err(), Refused::Full);
        // The refused connection left no count behind for its address.
        assert!(a.per_ip.lock().unwrap().get(&ip("10.0.0.3")).is_none());
        let _replica = a.admit(ip("10.0.0.4"), true).unwrap();
        assert_eq!(a.open(), 3);
        drop(first);
        // Still at 2 of 2 with the replica's connection counted.
        assert_eq!(a.admit(ip("10.0.0.3"), false).unwrap_err(), Refused::Full);
    }

    #[test]
    fn overrides_name_the_entry_at_fault() {
        assert!(parse_overrides("").unwrap().is_empty());
        assert!(parse_overrides("127.0.0.1")
            .unwrap_err()
            .contains("127.0.0.1"));
        assert!(parse_overrides("127.0.0.1:x")
            .unwrap_err()
            .contains("count"));
        assert!(parse_overrides("localhost:5").unwrap()[&ip("127.0.0.1")] == 5);
        assert_eq!(parse_overrides("[::1]:4").unwrap()[&ip("::1")], 4);
    }
}
