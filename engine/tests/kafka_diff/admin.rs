//! Admin calls with good and bad arguments: CreateTopics, DeleteTopics,
//! DescribeConfigs, AlterConfigs, IncrementalAlterConfigs,
//! CreatePartitions; the ACL APIs without an authorizer.

use crate::compare::Side;
use crate::{intended, text, topic_name};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;

/// The topic configuration keys both brokers implement; Kafka has more
/// (docs/DIFFERENTIAL.md). Answers listing every config are cut to these.
pub const TOPIC_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "max.message.bytes",
    "segment.bytes",
    "segment.ms",
    "segment.index.bytes",
    "index.interval.bytes",
    "flush.messages",
    "flush.ms",
    "retention.ms",
    "retention.bytes",
    "min.insync.replicas",
    "message.timestamp.type",
    "message.timestamp.after.max.ms",
    "unclean.leader.election.enable",
    "file.delete.delay.ms",
    "segment.jitter.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "delete.retention.ms",
];

/// Broker keys asked of both (resource name "1": both are node 1).
const BROKER_KEYS: &[&str] = &[
    "num.partitions",
    "default.replication.factor",
    "auto.create.topics.enable",
    "message.max.bytes",
    "log.segment.bytes",
    "log.cleanup.policy",
    "group.initial.rebalance.delay.ms",
    "group.min.session.timeout.ms",
    "offsets.topic.num.partitions",
    "log.retention.check.interval.ms",
    "log.cleaner.backoff.ms",
    "group.consumer.migration.policy",
    "no.such.key",
];

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

pub fn creatable(name: &str, partitions: i32, rf: i16, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(rf)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(text(k))
                        .with_value(Some(text(v)))
                })
                .collect(),
        )
}

/// CreateTopics of `topics`, the answer recorded with its config list cut
/// to [`TOPIC_KEYS`].
pub fn create(
    side: &mut Side,
    step: &str,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
) -> CreateTopicsResponse {
    let req = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(30_000)
        .with_validate_only(validate_only);
    let mut resp: CreateTopicsResponse = side.ask(ApiKey::CreateTopics, &req);
    let full = resp.clone();
    if side.name == "kafka" {
        intended::kafka_min_insync_default_created(&mut resp);
    }
    for t in &mut resp.topics {
        if let Some(configs) = &mut t.configs {
            configs.retain(|c| TOPIC_KEYS.contains(&c.name.as_str()));
            configs.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }
    side.record(step, &resp);
    full
}

/// Creates a topic and waits until every partition has a leader that
/// answers for it.
pub fn create_ok(
    side: &mut Side,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> CreateTopicsResponse {
    let resp = create(
        side,
        &format!("create {name}"),
        vec![creatable(name, partitions, 1, configs)],
        false,
    );
    assert_eq!(
        resp.topics[0].error_code, 0,
        "{}: creating {name}",
        side.name
    );
    wait_leaders(side, name, partitions);
    resp
}

/// Kafka answers CreateTopics once the controller has the topic; its
/// broker becomes the partitions' leader a little later, answering
/// NOT_LEADER_OR_FOLLOWER or UNKNOWN_TOPIC_OR_PARTITION meanwhile. Asks
/// ListOffsets (latest) of every partition until all answer without an
/// error. Generous, for loaded machines.
pub fn wait_leaders(side: &mut Side, name: &str, partitions: i32) {
    use list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let deadline = std::time::Duration::from_secs(120);
    let start = std::time::Instant::now();
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(name))
            .with_partitions(
                (0..partitions)
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(-1)
                    })
                    .collect(),
            )]);
    loop {
        let resp: ListOffsetsResponse = side.ask(ApiKey::ListOffsets, &req);
        let codes: Vec<i16> = resp
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect();
        if codes.iter().all(|c| *c == 0) {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "{}: {name} has no leader for every partition after {deadline:?}: {codes:?}",
            side.name
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

pub fn create_topics(side: &mut Side) {
    create_ok(side, "diff-ct-a", 3, &[]);
    let long = "x".repeat(250);
    let bad = vec![
        creatable("bad name!", 1, 1, &[]),
        creatable(&long, 1, 1, &[]),
        creatable(".", 1, 1, &[]),
        creatable("..", 1, 1, &[]),
        creatable("diff-ct-zero", 0, 1, &[]),
        creatable("diff-ct-minus2", -2, 1, &[]),
        creatable("diff-ct-rf0", 1, 0, &[]),
        creatable("diff-ct-rf2", 1, 2, &[]),
        creatable("diff-ct-rf-minus2", 1, -2, &[]),
        creatable("diff-ct-key", 1, 1, &[("no.such.config", "1")]),
        creatable("diff-ct-policy", 1, 1, &[("cleanup.policy", "bogus")]),
        creatable("diff-ct-retention", 1, 1, &[("retention.ms", "abc")]),
        creatable("diff-ct-max-message", 1, 1, &[("max.message.bytes", "-5")]),
        creatable(
            "diff-ct-compression",
            1,
            1,
            &[("compression.type", "brotli")],
        ),
        creatable(
            "diff-ct-lags",
            1,
            1,
            &[
                ("min.compaction.lag.ms", "2000"),
                ("max.compaction.lag.ms", "1000"),
            ],
        ),
        creatable(
            "diff-ct-dirty-ratio",
            1,
            1,
            &[("min.cleanable.dirty.ratio", "1.5")],
        ),
        creatable("diff-ct-a", 1, 1, &[]),
    ];
    create(side, "bad arguments", bad, false);
    create(
        side,
        "a million partitions",
        vec![creatable("diff-ct-many", 1_000_000, 1, &[])],
        false,
    );
    create(
        side,
        "defaults (-1, -1)",
        vec![creatable("diff-ct-defaults", -1, -1, &[])],
        false,
    );
    create(
        side,
        "with configs",
        vec![creatable(
            "diff-ct-configs",
            2,
            1,
            &[
                ("cleanup.policy", "compact"),
                ("retention.ms", "3600000"),
                ("max.message.bytes", "2000"),
                ("min.cleanable.dirty.ratio", "0.25"),
                ("delete.retention.ms", "60000"),
                ("segment.jitter.ms", "1000"),
            ],
        )],
        false,
    );
    create(
        side,
        "validate only",
        vec![creatable("diff-ct-validate", 2, 1, &[])],
        true,
    );
    let assigned = creatable("diff-ct-assigned", -1, -1, &[]).with_assignments(
        (0..2)
            .map(|p| {
                create_topics_request::CreatableReplicaAssignment::default()
                    .with_partition_index(p)
                    .with_broker_ids(vec![BrokerId(1)])
            })
            .collect(),
    );
    create(
        side,
        "replicas assigned by the caller",
        vec![assigned],
        false,
    );
    let unknown_broker = creatable("diff-ct-assigned-bad", -1, -1, &[]).with_assignments(vec![
        create_topics_request::CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(9)]),
    ]);
    create(
        side,
        "replicas on an unknown broker",
        vec![unknown_broker],
        false,
    );
    let gap = creatable("diff-ct-assigned-gap", -1, -1, &[]).with_assignments(vec![
        create_topics_request::CreatableReplicaAssignment::default()
            .with_partition_index(1)
            .with_broker_ids(vec![BrokerId(1)]),
    ]);
    create(side, "assignments not from partition 0", vec![gap], false);
    let with_count = creatable("diff-ct-assigned-count", 2, -1, &[]).with_assignments(vec![
        create_topics_request::CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(1)]),
    ]);
    create(
        side,
        "assignments and a partition count",
        vec![with_count],
        false,
    );
    create(
        side,
        "the same name twice in one request",
        vec![
            creatable("diff-ct-twice", 1, 1, &[]),
            creatable("diff-ct-twice", 1, 1, &[]),
        ],
        false,
    );
    // Whether validate-only and the doubled name created anything.
    let names = [
        "diff-ct-validate",
        "diff-ct-twice",
        "diff-ct-defaults",
        "diff-ct-assigned",
        "diff-ct-assigned-bad",
        "diff-ct-zero",
    ];
    metadata(side, "what exists", &names);
}

/// Metadata for `names`, without creating any.
pub fn metadata(side: &mut Side, step: &str, names: &[&str]) -> MetadataResponse {
    let version = side.v(ApiKey::Metadata);
    let topics = names
        .iter()
        .map(|n| metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(n))))
        .collect();
    let mut req = MetadataRequest::default().with_topics(Some(topics));
    if version >= 4 {
        req = req.with_allow_auto_topic_creation(false);
    }
    let mut resp: MetadataResponse = side.ask(ApiKey::Metadata, &req);
    // Which brokers there are is not compared; the order of topics is
    // not specified.
    resp.brokers.clear();
    resp.topics.sort_by(|a, b| a.name.cmp(&b.name));
    side.record(step, &resp);
    resp
}

fn delete(side: &mut Side, step: &str, names: &[&str]) -> DeleteTopicsResponse {
    let version = side.v(ApiKey::DeleteTopics);
    let mut req = DeleteTopicsRequest::default().with_timeout_ms(30_000);
    if version >= 6 {
        req = req.with_topics(
            names
                .iter()
                .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
                .collect(),
        );
    } else {
        req = req.with_topic_names(names.iter().map(|n| topic_name(n)).collect());
    }
    let mut resp: DeleteTopicsResponse = side.ask(ApiKey::DeleteTopics, &req);
    resp.responses.sort_by(|a, b| a.name.cmp(&b.name));
    side.record(step, &resp);
    resp
}

pub fn delete_topics(side: &mut Side) {
    create_ok(side, "diff-dt-a", 1, &[]);
    delete(side, "unknown topic", &["diff-dt-unknown"]);
    delete(
        side,
        "existing and unknown",
        &["diff-dt-a", "diff-dt-unknown"],
    );
    delete(side, "again", &["diff-dt-a"]);
    metadata(side, "after delete", &["diff-dt-a"]);
    if side.v(ApiKey::DeleteTopics) >= 6 {
        let req = DeleteTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![DeleteTopicState::default().with_topic_id(
                uuid::Uuid::from_u128(0x5151_0000_0000_0000_0000_0000_0000_0001),
            )]);
        let _: DeleteTopicsResponse = side.step("unknown topic id", ApiKey::DeleteTopics, &req);
    }
}

fn describe(
    side: &mut Side,
    step: &str,
    resources: Vec<(i8, &str, Option<&[&str]>)>,
) -> DescribeConfigsResponse {
    let resources = resources
        .into_iter()
        .map(|(kind, name, keys)| {
            DescribeConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(text(name))
                .with_configuration_keys(keys.map(|ks| ks.iter().map(|k| text(k)).collect()))
        })
        .collect();
    let req = DescribeConfigsRequest::default()
        .with_resources(resources)
        .with_include_synonyms(true);
    let mut resp: DescribeConfigsResponse = side.ask(ApiKey::DescribeConfigs, &req);
    if side.name == "kafka" {
        intended::kafka_min_insync_default(&mut resp);
        intended::kafka_broker_configs_read_only(&mut resp);
    }
    for r in &mut resp.results {
        r.configs.sort_by(|a, b| a.name.cmp(&b.name));
    }
    side.record(step, &resp);
    resp
}

/// Waits until `name`'s configs show `expected` values. A broker answers
/// an alteration once the controller has committed it, and applies it
/// when the metadata reaches it, which for Kafka can be a moment later:
/// describing at once could see the old value.
fn settle(side: &mut Side, name: &str, expected: &[(&str, &str)]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let keys: Vec<_> = expected.iter().map(|(k, _)| text(k)).collect();
    loop {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(TOPIC)
                .with_resource_name(text(name))
                .with_configuration_keys(Some(keys.clone())),
        ]);
        let resp: DescribeConfigsResponse = side.ask(ApiKey::DescribeConfigs, &req);
        let shown = |key: &str| {
            resp.results
                .iter()
                .flat_map(|r| &r.configs)
                .find(|c| c.name.as_str() == key)
                .and_then(|c| c.value.as_ref().map(|v| v.to_string()))
        };
        if expected
            .iter()
            .all(|(k, v)| shown(k).as_deref() == Some(*v))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: {name} never showed {expected:?}",
            side.name
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub fn describe_configs(side: &mut Side) {
    create_ok(side, "diff-dc-plain", 1, &[]);
    create_ok(
        side,
        "diff-dc-set",
        1,
        &[
            ("cleanup.policy", "compact,delete"),
            ("retention.ms", "3600000"),
            ("segment.bytes", "1048576"),
        ],
    );
    describe(
        side,
        "topic defaults",
        vec![(TOPIC, "diff-dc-plain", Some(TOPIC_KEYS))],
    );
    describe(
        side,
        "topic overrides",
        vec![(TOPIC, "diff-dc-set", Some(TOPIC_KEYS))],
    );
    describe(
        side,
        "unknown topic",
        vec![(TOPIC, "diff-dc-unknown", Some(TOPIC_KEYS))],
    );
    describe(
        side,
        "unknown key",
        vec![(TOPIC, "diff-dc-plain", Some(&["no.such.key"]))],
    );
    describe(side, "broker", vec![(BROKER, "1", Some(BROKER_KEYS))]);
    describe(
        side,
        "another broker",
        vec![(BROKER, "7", Some(BROKER_KEYS))],
    );
    describe(
        side,
        "broker name not a number",
        vec![(BROKER, "one", Some(BROKER_KEYS))],
    );
    describe(side, "unknown resource type", vec![(99, "x", None)]);
    describe(
        side,
        "the cluster-wide default broker (\"\")",
        vec![(BROKER, "", Some(BROKER_KEYS))],
    );
}

fn incremental(
    side: &mut Side,
    step: &str,
    name: &str,
    configs: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) {
    use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let configs = configs
        .iter()
        .map(|(k, op, v)| {
            AlterableConfig::default()
                .with_name(text(k))
                .with_config_operation(*op)
                .with_value(v.map(text))
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(text(name))
            .with_configs(configs)]);
    let _: IncrementalAlterConfigsResponse = side.step(step, ApiKey::IncrementalAlterConfigs, &req);
}

fn alter(side: &mut Side, step: &str, name: &str, configs: &[(&str, &str)]) {
    use alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let configs = configs
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(text(k))
                .with_value(Some(text(v)))
        })
        .collect();
    let req = AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(TOPIC)
        .with_resource_name(text(name))
        .with_configs(configs)]);
    let _: AlterConfigsResponse = side.step(step, ApiKey::AlterConfigs, &req);
}

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub fn alter_configs(side: &mut Side) {
    let t = "diff-ac";
    create_ok(side, t, 1, &[]);
    incremental(
        side,
        "set a bad number",
        t,
        &[("retention.ms", SET, Some("abc"))],
        false,
    );
    incremental(
        side,
        "set an unknown key",
        t,
        &[("no.such.key", SET, Some("1"))],
        false,
    );
    incremental(
        side,
        "set a bad policy",
        t,
        &[("cleanup.policy", SET, Some("bogus"))],
        false,
    );
    incremental(
        side,
        "append to a number",
        t,
        &[("retention.ms", APPEND, Some("1"))],
        false,
    );
    incremental(
        side,
        "set without a value",
        t,
        &[("retention.ms", SET, None)],
        false,
    );
    incremental(
        side,
        "unknown topic",
        "diff-ac-unknown",
        &[("retention.ms", SET, Some("1000"))],
        false,
    );
    incremental(
        side,
        "the same key twice",
        t,
        &[
            ("retention.ms", SET, Some("1000")),
            ("retention.ms", SET, Some("2000")),
        ],
        false,
    );
    incremental(
        side,
        "validate only",
        t,
        &[("retention.ms", SET, Some("1000"))],
        true,
    );
    describe(
        side,
        "after validate only",
        vec![(TOPIC, t, Some(&["retention.ms"]))],
    );
    incremental(
        side,
        "set",
        t,
        &[
            ("retention.ms", SET, Some("1000")),
            ("cleanup.policy", APPEND, Some("compact")),
        ],
        false,
    );
    settle(
        side,
        t,
        &[
            ("retention.ms", "1000"),
            ("cleanup.policy", "delete,compact"),
        ],
    );
    describe(side, "after set", vec![(TOPIC, t, Some(TOPIC_KEYS))]);
    incremental(
        side,
        "subtract and delete",
        t,
        &[
            ("cleanup.policy", SUBTRACT, Some("delete")),
            ("retention.ms", DELETE, None),
        ],
        false,
    );
    settle(
        side,
        t,
        &[("retention.ms", "604800000"), ("cleanup.policy", "compact")],
    );
    describe(
        side,
        "after subtract and delete",
        vec![(TOPIC, t, Some(TOPIC_KEYS))],
    );
    incremental(
        side,
        "delete a key never set",
        t,
        &[("segment.ms", DELETE, None)],
        false,
    );
    alter(
        side,
        "alter a bad value",
        t,
        &[("max.message.bytes", "big")],
    );
    alter(side, "alter an unknown key", t, &[("no.such.key", "1")]);
    alter(
        side,
        "alter, the same key twice",
        t,
        &[("retention.ms", "1000"), ("retention.ms", "2000")],
    );
    alter(
        side,
        "alter an unknown topic",
        "diff-ac-unknown",
        &[("retention.ms", "1000")],
    );
    alter(side, "alter", t, &[("segment.bytes", "2097152")]);
    settle(side, t, &[("segment.bytes", "2097152")]);
    describe(side, "after alter", vec![(TOPIC, t, Some(TOPIC_KEYS))]);
}

fn partitions(side: &mut Side, step: &str, name: &str, count: i32, validate_only: bool) {
    let req = CreatePartitionsRequest::default()
        .with_timeout_ms(30_000)
        .with_validate_only(validate_only)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic_name(name))
            .with_count(count)
            .with_assignments(None)]);
    let _: CreatePartitionsResponse = side.step(step, ApiKey::CreatePartitions, &req);
}

pub fn create_partitions(side: &mut Side) {
    let t = "diff-cp";
    create_ok(side, t, 3, &[]);
    partitions(side, "shrink", t, 2, false);
    partitions(side, "same count", t, 3, false);
    partitions(side, "zero", t, 0, false);
    partitions(side, "unknown topic", "diff-cp-unknown", 4, false);
    partitions(side, "validate only", t, 5, true);
    partitions(side, "above the limit", t, 1_000_000, true);
    metadata(side, "after validate only", &[t]);
    partitions(side, "grow", t, 4, false);
    wait_leaders(side, t, 4);
    metadata(side, "after grow", &[t]);
}

/// Metadata for topics that do not exist, with and without
/// auto-creation, and for a name no topic may have.
pub fn metadata_cases(side: &mut Side) {
    metadata(
        side,
        "unknown topic, no auto-creation",
        &["diff-md-unknown"],
    );
    metadata(side, "a bad name, no auto-creation", &["bad name!"]);
    if side.v(ApiKey::Metadata) >= 4 {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(topic_name("bad name!")))]))
            .with_allow_auto_topic_creation(true);
        let mut resp: MetadataResponse = side.ask(ApiKey::Metadata, &req);
        resp.brokers.clear();
        side.record("a bad name, auto-creation", &resp);
    }
}

/// CreateAcls, DescribeAcls and DeleteAcls on a broker without an
/// authorizer (neither side has one here): SECURITY_DISABLED, per entry
/// where the response has entries.
pub fn acls_without_authorizer(side: &mut Side) {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
    let creation = AclCreation::default()
        .with_resource_type(TOPIC)
        .with_resource_name(text("diff-acl"))
        .with_resource_pattern_type(3)
        .with_principal(text("User:alice"))
        .with_host(text("*"))
        .with_operation(3)
        .with_permission_type(3);
    let req = CreateAclsRequest::default().with_creations(vec![creation.clone(), creation]);
    let _: CreateAclsResponse = side.step("create", ApiKey::CreateAcls, &req);
    let req = DescribeAclsRequest::default()
        .with_resource_type_filter(1)
        .with_resource_name_filter(None)
        .with_pattern_type_filter(1)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(1)
        .with_permission_type(1);
    let _: DescribeAclsResponse = side.step("describe", ApiKey::DescribeAcls, &req);
    let filter = DeleteAclsFilter::default()
        .with_resource_type_filter(1)
        .with_resource_name_filter(None)
        .with_pattern_type_filter(1)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(1)
        .with_permission_type(1);
    let req = DeleteAclsRequest::default().with_filters(vec![filter]);
    let _: DeleteAclsResponse = side.step("delete", ApiKey::DeleteAcls, &req);
}

/// ApiVersions v5 (KIP-1242) naming neither the cluster nor the node,
/// this broker's, another cluster, another node, and only one of the
/// two: the error code and whether ranges came back (the ranges
/// themselves are each broker's own).
pub fn api_versions_v5(side: &mut Side) {
    use kafka_protocol::protocol::Decodable;
    use sluice_protocol::api_versions_request::ApiVersionsRequest as V5Request;
    if !side.versions.both_speak(ApiKey::ApiVersions, 5) {
        return;
    }
    let md: MetadataResponse = side.ask(
        ApiKey::Metadata,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    let cluster = md.cluster_id.expect("a cluster id").to_string();
    let node = md.brokers[0].node_id.0;
    let cases = [
        ("neither named", None, -1),
        ("this broker", Some(cluster.as_str()), node),
        ("another cluster", Some("diff-another-cluster"), node),
        ("another node", Some(cluster.as_str()), node + 7),
        ("a cluster without a node", Some(cluster.as_str()), -1),
        ("a node without a cluster", None, node),
    ];
    for (step, cluster_id, node_id) in cases {
        let req = V5Request {
            client_software_name: "diff".into(),
            client_software_version: "1".into(),
            cluster_id: cluster_id.map(str::to_string),
            node_id,
        };
        let body = side.ask_bytes(ApiKey::ApiVersions, 5, &req.encode());
        let resp = ApiVersionsResponse::decode(&mut bytes::Bytes::from(body), 4)
            .expect("an ApiVersions answer, laid out as v4");
        let answer = (resp.error_code, !resp.api_keys.is_empty());
        side.record(step, &answer);
    }
}

/// ListTransactions v2 (KIP-1152) with a transactional id pattern that
/// matches nothing and one that does not compile.
pub fn list_transactions_patterns(side: &mut Side) {
    if side.v(ApiKey::ListTransactions) < 2 {
        return;
    }
    for (step, pattern) in [
        ("a pattern matching nothing", "diff-no-txn-.*"),
        ("a pattern that does not compile", "diff-(["),
    ] {
        let req =
            ListTransactionsRequest::default().with_transactional_id_pattern(Some(text(pattern)));
        let _: ListTransactionsResponse = side.step(step, ApiKey::ListTransactions, &req);
    }
}
