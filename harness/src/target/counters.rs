//! The embedded brokers' own counters around a point, read from their
//! metrics listeners (`GET /metrics`): which path carried the fetched
//! bytes (sendfile, a user-space copy, or read-and-encrypt for TLS) and
//! which listeners took connections. They show what a point's numbers were
//! measured over: a TLS point whose bytes went out by sendfile, or whose
//! clients came in on the PLAINTEXT listener, did not measure TLS.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long one scrape may take; a broker under load answers in
/// milliseconds.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest scrape read; one broker's is a few hundred kB with thousands of
/// partitions.
const SCRAPE_BYTES_MAX: u64 = 64 << 20;

/// Counts summed over the brokers and their shards; as a point's figure,
/// the change over the point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerCounters {
    /// Fetch bytes sent with sendfile from the page cache.
    pub fetch_sendfile_bytes: u64,
    /// Fetch bytes copied through user space (plaintext).
    pub fetch_copied_bytes: u64,
    /// Fetch bytes read from the page cache and encrypted (TLS listeners).
    pub fetch_tls_bytes: u64,
    /// Connections accepted, by listener name.
    pub connections_accepted: BTreeMap<String, u64>,
}

impl BrokerCounters {
    /// What changed from `before` to `self`.
    pub fn since(&self, before: &BrokerCounters) -> BrokerCounters {
        BrokerCounters {
            fetch_sendfile_bytes: self
                .fetch_sendfile_bytes
                .saturating_sub(before.fetch_sendfile_bytes),
            fetch_copied_bytes: self
                .fetch_copied_bytes
                .saturating_sub(before.fetch_copied_bytes),
            fetch_tls_bytes: self.fetch_tls_bytes.saturating_sub(before.fetch_tls_bytes),
            connections_accepted: self
                .connections_accepted
                .iter()
                .map(|(l, n)| {
                    let was = before.connections_accepted.get(l).copied().unwrap_or(0);
                    (l.clone(), n.saturating_sub(was))
                })
                .collect(),
        }
    }

    fn add(&mut self, o: &BrokerCounters) {
        self.fetch_sendfile_bytes += o.fetch_sendfile_bytes;
        self.fetch_copied_bytes += o.fetch_copied_bytes;
        self.fetch_tls_bytes += o.fetch_tls_bytes;
        for (l, n) in &o.connections_accepted {
            *self.connections_accepted.entry(l.clone()).or_default() += n;
        }
    }
}

/// The counters of every broker in `metrics`, added up.
pub fn scrape_all(metrics: &[SocketAddr]) -> Result<BrokerCounters, String> {
    let mut sum = BrokerCounters::default();
    for a in metrics {
        sum.add(&parse(&scrape(*a)?));
    }
    Ok(sum)
}

fn scrape(addr: SocketAddr) -> Result<String, String> {
    let fail = |e: std::io::Error| format!("reading the broker's metrics at {addr}: {e}");
    let mut s = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).map_err(fail)?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT)).map_err(fail)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(fail)?;
    let mut text = String::new();
    s.take(SCRAPE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(fail)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("the broker's metrics at {addr}: no HTTP header"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let status = head.lines().next().unwrap_or("");
        return Err(format!("the broker's metrics at {addr}: {status}"));
    }
    Ok(body.to_string())
}

/// Reads the families this module needs from one scrape (the text
/// exposition format: `name{label="v",...} value`, counters with a
/// `_total` suffix).
pub fn parse(text: &str) -> BrokerCounters {
    let mut c = BrokerCounters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..name_end].trim_end_matches("_total");
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let value = value as u64;
        match name {
            "sluice_fetch_sendfile_bytes" => c.fetch_sendfile_bytes += value,
            "sluice_fetch_copied_bytes" => c.fetch_copied_bytes += value,
            "sluice_fetch_tls_bytes" => c.fetch_tls_bytes += value,
            "sluice_listener_connections_accepted" => {
                if let Some(l) = label(line, "listener") {
                    *c.connections_accepted.entry(l.to_string()).or_default() += value;
                }
            }
            _ => {}
        }
    }
    c
}

fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_families_it_needs() {
        let text = "# HELP sluice_fetch_tls_bytes x\n\
            # TYPE sluice_fetch_tls_bytes counter\n\
            sluice_fetch_tls_bytes_total{shard=\"0\"} 100\n\
            sluice_fetch_tls_bytes_total{shard=\"1\"} 20\n\
            sluice_fetch_sendfile_bytes_total{shard=\"0\"} 7\n\
            sluice_fetch_copied_bytes_total{shard=\"0\"} 0\n\
            sluice_listener_connections{listener=\"SSL\"} 2\n\
            sluice_listener_connections_accepted_total{listener=\"SSL\"} 5\n\
            sluice_listener_connections_accepted_total{listener=\"PLAINTEXT\"} 1\n\
            # EOF\n";
        let c = parse(text);
        assert_eq!(c.fetch_tls_bytes, 120);
        assert_eq!(c.fetch_sendfile_bytes, 7);
        assert_eq!(c.connections_accepted["SSL"], 5);
        assert_eq!(c.connections_accepted["PLAINTEXT"], 1);
        let later = BrokerCounters {
            fetch_tls_bytes: 150,
            ..c.clone()
        };
        let d = later.since(&c);
        assert_eq!(d.fetch_tls_bytes, 30);
        assert_eq!(d.connections_accepted["SSL"], 0);
    }
}
