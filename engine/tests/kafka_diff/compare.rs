//! One broker under test (a [`Side`]), the API versions both brokers
//! speak, and the comparison of two scenario transcripts.
//!
//! A scenario talks to one side and records each answer as the pretty
//! `Debug` text of the decoded response, after [`normalise`] masks what
//! legitimately varies between two brokers (node ids, ports, ids, throttle
//! times, timestamps; the list is `MASKED`). Two transcripts then compare
//! line by line, so a difference names the step and the field.

use crate::common::{call, Raw};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Encodable};
use sluice_protocol::api_versions::{codec_version, is_hand_coded};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Per API key, the highest version both brokers and the `kafka-protocol`
/// crate speak, and the highest both brokers speak (for the versions
/// `sluice_protocol` writes itself). Nothing here is fixed: both brokers
/// are asked.
#[derive(Clone, Debug, Default)]
pub struct Versions(BTreeMap<i16, i16>, BTreeMap<i16, i16>);

impl Versions {
    pub fn negotiate(a: SocketAddr, b: SocketAddr) -> Versions {
        let (ra, rb) = (api_versions(a), api_versions(b));
        let mut out = BTreeMap::new();
        let mut both = BTreeMap::new();
        for key in ApiKey::iter() {
            let k = key as i16;
            let (Some(&(amin, amax)), Some(&(bmin, bmax))) = (ra.get(&k), rb.get(&k)) else {
                continue;
            };
            both.insert(k, amax.min(bmax));
            let crate_range = key.valid_versions();
            // A version laid out as one the crate knows (ListOffsets v11
            // is v10 on the wire) is spoken too; `call` writes it so.
            let next = crate_range.max + 1;
            let known_max = match codec_version(key, next) <= crate_range.max {
                true => next,
                false => crate_range.max,
            };
            let mut max = amax.min(bmax).min(known_max);
            let min = amin.max(bmin).max(crate_range.min);
            // Versions `sluice_protocol` writes itself (OffsetCommit and
            // OffsetFetch v10) are past the crate's requests, though its
            // `valid_versions` lists them.
            while max >= min && is_hand_coded(key, max) {
                max -= 1;
            }
            if min <= max {
                out.insert(k, max);
            }
        }
        Versions(out, both)
    }

    /// Whether both brokers speak `version` of `key`, whatever the crate
    /// knows (a version `sluice_protocol` reads and writes).
    pub fn both_speak(&self, key: ApiKey, version: i16) -> bool {
        self.1.get(&(key as i16)).is_some_and(|&max| max >= version)
    }

    /// The version to use for `key`; a scenario needs every API it calls.
    pub fn of(&self, key: ApiKey) -> i16 {
        *self
            .0
            .get(&(key as i16))
            .unwrap_or_else(|| panic!("no version of {key:?} both brokers speak"))
    }

    pub fn describe(&self) -> String {
        self.0
            .iter()
            .filter_map(|(k, v)| Some(format!("{:?} v{v}", ApiKey::try_from(*k).ok()?)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn api_versions(addr: SocketAddr) -> BTreeMap<i16, (i16, i16)> {
    let mut raw = Raw::connect(addr);
    let resp: ApiVersionsResponse = call(
        &mut raw,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(kafka_protocol::protocol::StrBytes::from_static_str("diff"))
            .with_client_software_version(kafka_protocol::protocol::StrBytes::from_static_str("1")),
    )
    .expect("an ApiVersions answer");
    assert_eq!(resp.error_code, 0, "ApiVersions from {addr}");
    resp.api_keys
        .iter()
        .map(|v| (v.api_key, (v.min_version, v.max_version)))
        .collect()
}

/// One broker as a scenario sees it: a connection, the agreed versions and
/// the transcript of normalised answers.
pub struct Side {
    pub name: &'static str,
    pub versions: Versions,
    raw: Raw,
    pub transcript: Vec<(String, String)>,
}

impl Side {
    pub fn new(name: &'static str, addr: SocketAddr, versions: Versions) -> Side {
        Side {
            name,
            versions,
            raw: Raw::connect(addr),
            transcript: Vec::new(),
        }
    }

    pub fn v(&self, key: ApiKey) -> i16 {
        self.versions.of(key)
    }

    /// Sends `req` at the agreed version of `key` and returns the answer,
    /// unrecorded (for set-up steps and values a later step needs).
    pub fn ask<Req: Encodable, Resp: Decodable>(&mut self, key: ApiKey, req: &Req) -> Resp {
        let version = self.v(key);
        call(&mut self.raw, key, version, req).unwrap_or_else(|| {
            panic!(
                "{}: no answer to {key:?} v{version}; the broker closed the connection",
                self.name
            )
        })
    }

    /// Sends a body `sluice_protocol` wrote at `version` of `key` and
    /// returns the answer's body, unrecorded.
    pub fn ask_bytes(&mut self, key: ApiKey, version: i16, body: &[u8]) -> Vec<u8> {
        crate::common::call_bytes(&mut self.raw, key, version, body).unwrap_or_else(|| {
            panic!(
                "{}: no answer to {key:?} v{version}; the broker closed the connection",
                self.name
            )
        })
    }

    /// Records `resp`, normalised, as the answer of `step`.
    pub fn record<T: std::fmt::Debug>(&mut self, step: &str, resp: &T) {
        self.transcript
            .push((step.to_string(), normalise(&format!("{resp:#?}"))));
    }

    /// [`Side::ask`] and [`Side::record`] in one.
    pub fn step<Req: Encodable, Resp: Decodable + std::fmt::Debug>(
        &mut self,
        step: &str,
        key: ApiKey,
        req: &Req,
    ) -> Resp {
        let resp = self.ask(key, req);
        self.record(step, &resp);
        resp
    }
}

/// Fields whose values differ between any two brokers and say nothing
/// about behaviour: which node, which port, generated ids, throttling and
/// wall-clock times, and the free text of per-record errors.
/// `error_message` is handled apart ([`normalise`]).
const MASKED: &[&str] = &[
    "throttle_time_ms",
    "node_id",
    "leader_id",
    "host",
    "port",
    "cluster_id",
    "controller_id",
    "topic_id",
    "member_id",
    "producer_id",
    "leader",
    "log_append_time_ms",
    "replica_nodes",
    "isr_nodes",
    "offline_replicas",
    "current_leader",
    "node_endpoints",
    "authorized_operations",
    "topic_authorized_operations",
    "cluster_authorized_operations",
    "unknown_tagged_fields",
    "batch_index_error_message",
];

/// Masks the values of [`MASKED`] fields in the pretty `Debug` text of a
/// response. A masked value that spans lines (a newtype, a struct, a list)
/// is dropped up to the line that closes it.
///
/// Error messages are free text, each broker's own. Where the error code
/// next to one is 0 only its presence is compared (Kafka sends none, or
/// an empty one, on success, depending on the API); with an error the
/// message is masked, since Sluice explains some errors Kafka leaves
/// without a message. `aborted_transactions` of `Some([])` and `None`
/// both say none was aborted (Kafka sends the first for unknown
/// partitions, Sluice the second).
pub fn normalise(text: &str) -> String {
    let mut out = Vec::new();
    // The last error code seen at each indentation, for the message
    // beside it.
    let mut codes: BTreeMap<usize, String> = BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        codes.retain(|i, _| *i <= indent);
        let Some((field, value)) = trimmed.split_once(": ") else {
            out.push(line.to_string());
            continue;
        };
        if field == "error_code" {
            codes.insert(indent, value.trim_end_matches(',').to_string());
        }
        let shown = match field {
            "error_message" if codes.get(&indent).is_some_and(|c| c == "0") => {
                if value.starts_with("None") {
                    "None"
                } else {
                    "Some(_)"
                }
            }
            "error_message" => "_",
            "aborted_transactions"
                if value == "Some(" && lines.peek().is_some_and(|l| l.trim() == "[],") =>
            {
                "None"
            }
            f if MASKED.contains(&f) => "_",
            _ => {
                out.push(line.to_string());
                continue;
            }
        };
        out.push(format!("{}{field}: {shown},", &line[..indent]));
        if value.ends_with('(') || value.ends_with('{') || value.ends_with('[') {
            // Skip to the closing line at this indentation.
            for inner in lines.by_ref() {
                let inner_indent = inner.len() - inner.trim_start().len();
                if inner_indent == indent {
                    break;
                }
            }
        }
    }
    out.join("\n")
}

/// The differences between two transcripts of one scenario, step by step:
/// empty when they agree.
pub fn differences(kafka: &Side, sluice: &Side) -> Vec<String> {
    let mut found = Vec::new();
    let steps = kafka.transcript.len().max(sluice.transcript.len());
    for i in 0..steps {
        match (kafka.transcript.get(i), sluice.transcript.get(i)) {
            (Some((ks, ka)), Some((ss, sa))) => {
                assert_eq!(ks, ss, "the scenario took different steps");
                if ka != sa {
                    found.push(format!("step `{ks}`:\n{}", line_diff(ka, sa)));
                }
            }
            (k, s) => found.push(format!(
                "the transcripts end differently: kafka {:?}, sluice {:?}",
                k.map(|x| &x.0),
                s.map(|x| &x.0)
            )),
        }
    }
    found
}

/// A line diff (longest common subsequence) in hunks: each run of
/// changed lines once, under the nearest enclosing field names, `-` for
/// Kafka's lines and `+` for Sluice's.
fn line_diff(kafka: &str, sluice: &str) -> String {
    let a: Vec<&str> = kafka.lines().collect();
    let b: Vec<&str> = sluice.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    let mut context: Vec<String> = Vec::new();
    let mut in_hunk = false;
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            track_context(&mut context, a[i]);
            in_hunk = false;
            i += 1;
            j += 1;
            continue;
        }
        if !in_hunk {
            out.push(format!("  in {}", context.join(" > ")));
            in_hunk = true;
        }
        if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("    + sluice {}", b[j].trim()));
            j += 1;
        } else {
            out.push(format!("    - kafka  {}", a[i].trim()));
            i += 1;
        }
    }
    out.join("\n")
}

/// Keeps the stack of open structs and lists (`name: Type {`, `[`) that a
/// line of pretty `Debug` text is inside.
fn track_context(context: &mut Vec<String>, line: &str) {
    let t = line.trim();
    if t.ends_with('{') || t.ends_with('[') || t.ends_with('(') {
        context.push(t.trim_end_matches(['{', '[', '(']).trim().to_string());
    } else if t.starts_with('}') || t.starts_with(']') || t.starts_with(')') {
        context.pop();
    } else if let Some(last) = context.last_mut() {
        // A list element's first field names it: `name: "x"` or `partition_index: 0`.
        if (t.starts_with("name: ")
            || t.starts_with("partition_index: ")
            || t.starts_with("index: ")
            || t.starts_with("partition: "))
            && !last.contains('=')
        {
            last.push_str(&format!(
                " {}",
                t.trim_end_matches(',').replacen(": ", "=", 1)
            ));
        }
    }
}
