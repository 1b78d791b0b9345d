//! The intended differences between Kafka's answers and Sluice's that
//! need more than masking a field (`compare::MASKED`), each undone here
//! before the answers are compared. `docs/DIFFERENTIAL.md` lists them all
//! with the reason for each; a new entry needs one there too.

use kafka_protocol::messages::{CreateTopicsResponse, DescribeConfigsResponse};

/// DYNAMIC_DEFAULT_BROKER_CONFIG: a cluster-wide dynamic setting.
const DYNAMIC_DEFAULT: i8 = 3;
/// DEFAULT_CONFIG.
const DEFAULT: i8 = 5;

/// Kafka 4's controller writes `min.insync.replicas` as a cluster-wide
/// dynamic default when the cluster is formatted, so Kafka reports its
/// source as DYNAMIC_DEFAULT_BROKER_CONFIG with an extra synonym. Sluice
/// has no dynamic broker configs: the same value is its default. Applied
/// to Kafka's answers only.
pub fn kafka_min_insync_default(resp: &mut DescribeConfigsResponse) {
    for result in &mut resp.results {
        for c in &mut result.configs {
            if c.name.as_str() != "min.insync.replicas" || c.config_source != DYNAMIC_DEFAULT {
                continue;
            }
            c.config_source = DEFAULT;
            c.synonyms.retain(|s| s.source != DYNAMIC_DEFAULT);
        }
    }
}

/// The same for the configs CreateTopics (v5+) lists.
pub fn kafka_min_insync_default_created(resp: &mut CreateTopicsResponse) {
    for t in &mut resp.topics {
        for c in t.configs.iter_mut().flatten() {
            if c.name.as_str() == "min.insync.replicas" && c.config_source == DYNAMIC_DEFAULT {
                c.config_source = DEFAULT;
            }
        }
    }
}

/// Every broker config of Sluice is static (set in its file or with
/// `--override`, read at start), so DescribeConfigs marks each read-only;
/// Kafka can change some at run time (`message.max.bytes`,
/// `log.segment.bytes`, ...) and marks those writable. Applied to Kafka's
/// answers for broker resources only.
pub fn kafka_broker_configs_read_only(resp: &mut DescribeConfigsResponse) {
    for result in &mut resp.results {
        if result.resource_type == BROKER {
            result.configs.iter_mut().for_each(|c| c.read_only = true);
        }
    }
}

/// DescribeConfigs' resource type for a broker.
const BROKER: i8 = 4;
