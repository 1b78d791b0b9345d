//! `sweep:` expansion: a map from setting names to value lists, expanded as a
//! cartesian product at the YAML level so each point deserializes and
//! resolves exactly as a hand-written file would.

use super::error::FieldError;
use super::props::{consumer_accepts, producer_accepts, topic_accepts};
use super::raw::{scalar_to_string, TOP_LEVEL_FIELDS};
use super::security::is_security_key;
use serde_yaml::{Mapping, Value};

/// Upper bound on points in one sweep, so a typo cannot queue days of runs.
pub const POINTS_MAX: usize = 1_000;

/// Where a sweep key writes its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A top-level workload field, e.g. `partitionsPerTopic`.
    Top(String),
    /// A property in the `producer`, `consumer` or `topic` block.
    Block(&'static str, String),
    /// A property of both clients' blocks: a bare `security.protocol`,
    /// `ssl.*` or `sasl.*` key, since a producer and a consumer of one
    /// point speaking different protocols is not what a sweep of it means.
    Clients(String),
}

/// Classifies a sweep key: a top-level field, `producer.X`/`consumer.X`/
/// `topic.X`, or a bare Kafka property (producer first, then consumer, then
/// topic; so bare `compression.type` is the producer's), except bare
/// security keys, which both clients take.
pub fn classify(key: &str) -> Result<Target, FieldError> {
    let field = format!("sweep.{key}");
    if TOP_LEVEL_FIELDS.contains(&key) {
        return Ok(Target::Top(key.to_string()));
    }
    if is_security_key(key) {
        return Ok(Target::Clients(key.to_string()));
    }
    for block in ["producer", "consumer", "topic"] {
        if let Some(prop) = key.strip_prefix(block).and_then(|r| r.strip_prefix('.')) {
            return Ok(Target::Block(block, prop.to_string()));
        }
    }
    if producer_accepts(key) {
        return Ok(Target::Block("producer", key.to_string()));
    }
    if consumer_accepts(key) {
        return Ok(Target::Block("consumer", key.to_string()));
    }
    if topic_accepts(key) {
        return Ok(Target::Block("topic", key.to_string()));
    }
    Err(FieldError::new(
        field,
        "unknown setting: not a workload field nor a Kafka producer, consumer or topic property",
    ))
}

/// One expanded point: its `(sweep key, value)` settings and the workload
/// mapping with those values written in.
#[derive(Clone, Debug)]
pub struct Expanded {
    pub settings: Vec<(String, String)>,
    pub mapping: Mapping,
}

/// Expands `sweep` over `base` (which must no longer hold `sweep`).
pub fn expand(base: &Mapping, sweep: Option<&Mapping>) -> Result<Vec<Expanded>, FieldError> {
    let mut points = vec![Expanded {
        settings: Vec::new(),
        mapping: base.clone(),
    }];
    let Some(sweep) = sweep else {
        return Ok(points);
    };
    for (k, values) in sweep {
        let key = k
            .as_str()
            .ok_or_else(|| FieldError::new("sweep", "sweep keys must be strings"))?;
        let field = format!("sweep.{key}");
        let target = classify(key)?;
        let values = values
            .as_sequence()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| FieldError::new(&field, "must be a non-empty list of values"))?;
        if points.len() * values.len() > POINTS_MAX {
            return Err(FieldError::new(
                &field,
                format!("the sweep expands to more than {POINTS_MAX} points"),
            ));
        }
        let mut next = Vec::with_capacity(points.len() * values.len());
        for p in &points {
            for v in values {
                let label = scalar_to_string(v).ok_or_else(|| {
                    FieldError::new(&field, "sweep values must be scalars (numbers, strings)")
                })?;
                let mut e = p.clone();
                write(&mut e.mapping, &target, v.clone(), &field)?;
                e.settings.push((key.to_string(), label));
                next.push(e);
            }
        }
        points = next;
    }
    Ok(points)
}

fn write(m: &mut Mapping, target: &Target, v: Value, field: &str) -> Result<(), FieldError> {
    match target {
        Target::Top(name) => {
            m.insert(Value::String(name.clone()), v);
        }
        Target::Block(block, prop) => write_block(m, block, prop, v, field)?,
        Target::Clients(prop) => {
            write_block(m, "producer", prop, v.clone(), field)?;
            write_block(m, "consumer", prop, v, field)?;
        }
    }
    Ok(())
}

fn write_block(
    m: &mut Mapping,
    block: &str,
    prop: &str,
    v: Value,
    field: &str,
) -> Result<(), FieldError> {
    let entry = m
        .entry(Value::String(block.to_string()))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let Value::Mapping(inner) = entry else {
        return Err(FieldError::new(field, format!("`{block}` is not a map")));
    };
    inner.insert(Value::String(prop.to_string()), v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Mapping {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn cartesian_product_in_declaration_order() {
        let base = yaml("name: x\nproducer:\n  acks: 1\n");
        let sweep = yaml("linger.ms: [0, 5]\nacks: [1, all]\nbatch.size: [16384, 1048576]\n");
        let points = expand(&base, Some(&sweep)).unwrap();
        assert_eq!(points.len(), 8);
        assert_eq!(
            points[7].settings,
            vec![
                ("linger.ms".to_string(), "5".to_string()),
                ("acks".to_string(), "all".to_string()),
                ("batch.size".to_string(), "1048576".to_string())
            ]
        );
        let producer = points[7].mapping.get("producer").unwrap();
        assert_eq!(producer.get("acks").unwrap().as_str(), Some("all"));
        assert_eq!(producer.get("linger.ms").unwrap().as_u64(), Some(5));
    }

    #[test]
    fn keys_are_classified() {
        assert_eq!(
            classify("partitionsPerTopic").unwrap(),
            Target::Top("partitionsPerTopic".into())
        );
        assert_eq!(
            classify("replication.factor").unwrap(),
            Target::Block("topic", "replication.factor".into())
        );
        assert_eq!(
            classify("fetch.min.bytes").unwrap(),
            Target::Block("consumer", "fetch.min.bytes".into())
        );
        assert_eq!(
            classify("topic.compression.type").unwrap(),
            Target::Block("topic", "compression.type".into())
        );
        assert_eq!(
            classify("security.protocol").unwrap(),
            Target::Clients("security.protocol".into())
        );
        assert_eq!(
            classify("consumer.security.protocol").unwrap(),
            Target::Block("consumer", "security.protocol".into())
        );
        assert!(classify("lingerms").is_err());
    }

    #[test]
    fn a_bare_security_key_sets_both_clients() {
        let base = yaml("name: x\nconsumer:\n  fetch.min.bytes: 1\n");
        let sweep = yaml("security.protocol: [PLAINTEXT, SSL]\n");
        let points = expand(&base, Some(&sweep)).unwrap();
        for block in ["producer", "consumer"] {
            let b = points[1].mapping.get(block).unwrap();
            assert_eq!(b.get("security.protocol").unwrap().as_str(), Some("SSL"));
        }
        let consumer = points[1].mapping.get("consumer").unwrap();
        assert!(consumer.get("fetch.min.bytes").is_some());
    }

    #[test]
    fn empty_and_huge_sweeps_are_refused() {
        let base = yaml("name: x\n");
        assert!(expand(&base, Some(&yaml("acks: []\n"))).is_err());
        let big = yaml(
            "linger.ms: [0,1,2,3,4,5,6,7,8,9]\nbatch.size: [1,2,3,4,5,6,7,8,9,10]\nretries: [1,2,3,4,5,6,7,8,9,10,11]\n",
        );
        assert!(expand(&base, Some(&big)).is_err());
    }
}
