//! `sluice-bench handshake`: what a new connection costs, per security
//! protocol, against the embedded broker.
//!
//! One connection is what a client pays before its first request: TCP
//! connect, the TLS handshake (SSL, SASL_SSL), ApiVersions, and the SASL
//! exchange (SaslHandshake, then SaslAuthenticate: one round trip for
//! PLAIN, two for SCRAM, whose salted password costs the broker
//! 4096 HMAC iterations per login). Connections open one after another
//! and close at once, so each figure is one client's set-up latency, not
//! a throughput. Rounds interleave the protocols, so a neighbour's load on
//! a shared machine falls on each alike; the spread of the rounds' medians
//! shows how much it moved them.

use crate::client::conn::Connection;
use crate::client::security::{Security, SecurityProtocol};
use crate::measure::cpu::{self, Watched};
use crate::target::{self, Target};
use crate::workload::security::SecurityProps;
use std::time::{Duration, Instant};

/// How long one connection may take before the run is called off.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bounds on the work one command line can ask for.
const CONNECTIONS_MAX: usize = 100_000;
const ROUNDS_MAX: usize = 100;

pub struct HandshakeOptions {
    pub protocols: Vec<SecurityProtocol>,
    /// `sasl.mechanism` for the SASL protocols.
    pub mechanism: String,
    /// Connections per protocol per round.
    pub connections: usize,
    pub rounds: usize,
}

/// One protocol's figures over every round.
pub struct ProtocolCost {
    pub security: String,
    /// Every connection's set-up time, sorted.
    pub times_us: Vec<u64>,
    /// Each round's median.
    pub round_p50_us: Vec<u64>,
    /// The broker's CPU per connection, from its process (none in-process).
    pub broker_cpu_us_per_connection: Option<f64>,
}

impl ProtocolCost {
    pub fn quantile_us(&self, q: f64) -> u64 {
        quantile(&self.times_us, q)
    }
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    assert!(!sorted.is_empty());
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Starts an embedded broker with every listener and measures.
pub fn run(o: &HandshakeOptions) -> Result<Vec<ProtocolCost>, String> {
    if o.protocols.is_empty() {
        return Err("--protocols: name at least one".into());
    }
    if o.connections == 0 || o.connections > CONNECTIONS_MAX {
        return Err(format!("--connections: 1 to {CONNECTIONS_MAX}"));
    }
    if o.rounds == 0 || o.rounds > ROUNDS_MAX {
        return Err(format!("--rounds: 1 to {ROUNDS_MAX}"));
    }
    let securities = o
        .protocols
        .iter()
        .map(|p| {
            let bad = |e: crate::workload::error::FieldError| format!("{}: {}", e.field, e.message);
            let mut props = SecurityProps::default();
            props
                .set("security.protocol", "--protocols", p.name())
                .map_err(bad)?;
            props
                .set("sasl.mechanism", "--mechanism", &o.mechanism)
                .map_err(bad)?;
            props.resolve_embedded().map_err(bad)
        })
        .collect::<Result<Vec<Security>, String>>()?;
    let t = target::start_embedded_secured(1, 1, true)?;
    let result = measure(&t, &securities, o);
    t.stop();
    result
}

fn measure(
    t: &Target,
    securities: &[Security],
    o: &HandshakeOptions,
) -> Result<Vec<ProtocolCost>, String> {
    let (watched, _) = t.watched();
    let brokers: Vec<Watched> = watched.into_iter().filter(|w| w.broker).collect();
    let mut out: Vec<ProtocolCost> = securities
        .iter()
        .map(|s| ProtocolCost {
            security: s.describe(),
            times_us: Vec::new(),
            round_p50_us: Vec::new(),
            broker_cpu_us_per_connection: None,
        })
        .collect();
    let mut broker_cpu_s = vec![0.0; securities.len()];
    // One connection each first: the broker's first TLS session and SCRAM
    // login warm caches a client pays for once per process, not per
    // connection.
    for s in securities {
        connect_once(t, s)?;
    }
    for _ in 0..o.rounds {
        for (i, s) in securities.iter().enumerate() {
            let before = cpu::snapshot(&brokers);
            let mut round = Vec::with_capacity(o.connections);
            for _ in 0..o.connections {
                round.push(connect_once(t, s)?);
            }
            let after = cpu::snapshot(&brokers);
            broker_cpu_s[i] += after
                .processes
                .iter()
                .zip(&before.processes)
                .map(|((a, _), (b, _))| a.total() - b.total())
                .sum::<f64>();
            round.sort_unstable();
            out[i].round_p50_us.push(quantile(&round, 0.5));
            out[i].times_us.extend(round);
        }
    }
    for (c, cpu_s) in out.iter_mut().zip(broker_cpu_s) {
        c.times_us.sort_unstable();
        if !brokers.is_empty() {
            c.broker_cpu_us_per_connection = Some(cpu_s * 1e6 / c.times_us.len() as f64);
        }
    }
    Ok(out)
}

/// Opens one connection as a client would (through authentication), and
/// returns how long that took; it closes when dropped.
fn connect_once(t: &Target, s: &Security) -> Result<u64, String> {
    let ep = t.endpoint_for(s)?;
    let start = Instant::now();
    let c =
        Connection::open(&ep, s, CONNECT_TIMEOUT).map_err(|e| format!("{}: {e}", s.describe()))?;
    let us = start.elapsed().as_micros() as u64;
    drop(c);
    Ok(us)
}

/// The figures as a table.
pub fn table(costs: &[ProtocolCost], o: &HandshakeOptions) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let mut s = format!(
        "{} connections per protocol in {} interleaved rounds; set-up = TCP connect + TLS \
         handshake + ApiVersions + SASL exchange\n{:<44} {:>8} {:>8} {:>8} {:>12}  round p50s (ms)\n",
        o.connections * o.rounds,
        o.rounds,
        "protocol",
        "p50 ms",
        "p99 ms",
        "max ms",
        "broker µs/conn"
    );
    for c in costs {
        let rounds: Vec<String> = c
            .round_p50_us
            .iter()
            .map(|&u| format!("{:.2}", ms(u)))
            .collect();
        s.push_str(&format!(
            "{:<44} {:>8.2} {:>8.2} {:>8.2} {:>12}  {}\n",
            c.security,
            ms(c.quantile_us(0.5)),
            ms(c.quantile_us(0.99)),
            ms(c.quantile_us(1.0)),
            c.broker_cpu_us_per_connection
                .map_or("-".to_string(), |u| format!("{u:.0}")),
            rounds.join(" ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_of_sorted_times() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[7], 0.5), 7);
    }
}
