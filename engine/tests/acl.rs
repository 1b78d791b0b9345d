//! ACL authorization against real `sluice` processes: ACLs made with
//! CreateAcls (raw requests, kafka-python's and confluent-kafka's admin
//! clients, Kafka's `kafka-acls` tool) decide what librdkafka clients may
//! do, survive a restart and reach every broker of a cluster.
//!
//! Until SASL or TLS name other users every client is `User:ANONYMOUS`,
//! so the brokers run with `allow.everyone.if.no.acl.found=true`: a
//! resource nobody wrote an ACL for is open (CreateAcls itself needs
//! ALTER on the cluster, which has none), and each test writes ACLs that
//! close or open the resources it looks at.

mod common;

use common::{call, create_topic, run_client, Broker, Raw, READY_DEADLINE};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use sluice_engine::cluster::local::LocalCluster;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AUTHORIZER: &str =
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer";
const OPEN_IF_NO_ACL: &str = "allow.everyone.if.no.acl.found=true";

// Kafka's wire codes (ResourceType, PatternType, AclOperation,
// AclPermissionType).
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const ANY: i8 = 1;
const ALL: i8 = 2;
const READ: i8 = 3;
const WRITE: i8 = 4;
const DESCRIBE: i8 = 8;
const DENY: i8 = 2;
const ALLOW: i8 = 3;

const ANONYMOUS: &str = "User:ANONYMOUS";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn broker() -> Broker {
    Broker::start(2, &[AUTHORIZER, OPEN_IF_NO_ACL])
}

/// One ACL: (resource type, name, pattern, principal, operation, permission).
type Acl<'a> = (i8, &'a str, i8, &'a str, i8, i8);

/// CreateAcls v3; each entry's error code.
fn create_acls(addr: SocketAddr, acls: &[Acl<'_>]) -> Vec<i16> {
    let creations = acls
        .iter()
        .map(|(t, name, pattern, principal, op, perm)| {
            AclCreation::default()
                .with_resource_type(*t)
                .with_resource_name(s(name))
                .with_resource_pattern_type(*pattern)
                .with_principal(s(principal))
                .with_host(s("*"))
                .with_operation(*op)
                .with_permission_type(*perm)
        })
        .collect();
    let req = CreateAclsRequest::default().with_creations(creations);
    let resp: CreateAclsResponse =
        call(&mut Raw::connect(addr), ApiKey::CreateAcls, 3, &req).expect("CreateAcls answer");
    resp.results.iter().map(|r| r.error_code).collect()
}

/// Creates ACLs, failing the test unless each is accepted.
fn grant(addr: SocketAddr, acls: &[Acl<'_>]) {
    let codes = create_acls(addr, acls);
    assert!(codes.iter().all(|c| *c == 0), "CreateAcls: {codes:?}");
}

/// A described ACL: (type, name, pattern, principal, op, permission).
type Described = (i8, String, i8, String, i8, i8);

/// DescribeAcls v3 of every ACL, with the response's error code.
fn describe_acls(addr: SocketAddr) -> (i16, Vec<Described>) {
    let req = DescribeAclsRequest::default()
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_resource_type_filter(ANY)
        .with_pattern_type_filter(ANY)
        .with_operation(ANY)
        .with_permission_type(ANY);
    let resp: DescribeAclsResponse =
        call(&mut Raw::connect(addr), ApiKey::DescribeAcls, 3, &req).expect("DescribeAcls answer");
    let mut out = Vec::new();
    for r in &resp.resources {
        for a in &r.acls {
            out.push((
                r.resource_type,
                r.resource_name.to_string(),
                r.pattern_type,
                a.principal.to_string(),
                a.operation,
                a.permission_type,
            ));
        }
    }
    (resp.error_code, out)
}

/// Records each delivery's outcome.
#[derive(Clone, Default)]
struct Outcomes(Arc<Mutex<Vec<Result<(), RDKafkaErrorCode>>>>);

impl ClientContext for Outcomes {}

impl ProducerContext for Outcomes {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        let outcome = match r {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
        };
        self.0.lock().unwrap().push(outcome);
    }
}

/// Produces one record with librdkafka: delivered, or the error it failed
/// with.
fn produce(bootstrap: &str, topic: &str) -> Result<(), RDKafkaErrorCode> {
    produce_with(bootstrap, &[], topic)
}

/// [`produce`] with extra client settings (a SASL login, say).
fn produce_with(
    bootstrap: &str,
    settings: &[(&str, &str)],
    topic: &str,
) -> Result<(), RDKafkaErrorCode> {
    let outcomes = Outcomes::default();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "60000");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let producer: BaseProducer<Outcomes> = config
        .create_with_context(outcomes.clone())
        .expect("producer");
    producer
        .send(BaseRecord::to(topic).key("k").payload("v"))
        .map_err(|(e, _)| e)
        .expect("queued");
    let deadline = Instant::now() + READY_DEADLINE;
    while outcomes.0.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no delivery report for {topic}");
        producer.poll(Duration::from_millis(100));
    }
    let outcome = outcomes.0.lock().unwrap()[0];
    outcome
}

/// Reads `topic`'s partition 0 from its start with librdkafka: the first
/// record's value, or the first error that is not connection churn.
fn consume(bootstrap: &str, topic: &str) -> Result<String, RDKafkaErrorCode> {
    consume_with(bootstrap, &[], topic)
}

/// [`consume`] with extra client settings.
fn consume_with(
    bootstrap: &str,
    settings: &[(&str, &str)],
    topic: &str,
) -> Result<String, RDKafkaErrorCode> {
    use rdkafka::Message;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "acl-test-unused")
        .set("enable.auto.commit", "false");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "nothing read from {topic}");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => return Ok(String::from_utf8_lossy(m.payload().unwrap()).into()),
            Some(Err(e)) if common::is_transient(&e) => {}
            Some(Err(e)) => return Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
            None => {}
        }
    }
}

#[test]
fn write_without_read_produces_but_is_refused_a_fetch() {
    let broker = broker();
    let b = broker.bootstrap();
    create_topic(&broker, "orders", 1);
    grant(
        broker.addr(),
        &[(TOPIC, "orders", LITERAL, ANONYMOUS, WRITE, ALLOW)],
    );
    assert_eq!(produce(&b, "orders"), Ok(()));
    // Metadata reports what the client may do: WRITE, and the DESCRIBE
    // it implies (KIP-430 bits by operation code).
    let req = MetadataRequest::default()
        .with_include_topic_authorized_operations(true)
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(TopicName(s("orders"))))]));
    let m: MetadataResponse =
        call(&mut Raw::connect(broker.addr()), ApiKey::Metadata, 12, &req).unwrap();
    assert_eq!(
        m.topics[0].topic_authorized_operations,
        (1 << WRITE) | (1 << DESCRIBE)
    );
    assert_eq!(
        consume(&b, "orders"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    // Granting READ opens it: the record written is there.
    grant(
        broker.addr(),
        &[(TOPIC, "orders", LITERAL, ANONYMOUS, READ, ALLOW)],
    );
    assert_eq!(consume(&b, "orders"), Ok("v".into()));
}

#[test]
fn a_prefixed_acl_grants_a_family_of_topics() {
    let broker = broker();
    let b = broker.bootstrap();
    for t in ["fam-a", "fam-b", "other"] {
        create_topic(&broker, t, 1);
    }
    // Every topic now has an ACL (for someone else), so only what is
    // granted is open.
    grant(
        broker.addr(),
        &[
            (TOPIC, "*", LITERAL, "User:nobody", READ, ALLOW),
            (TOPIC, "fam-", PREFIXED, ANONYMOUS, ALL, ALLOW),
        ],
    );
    for t in ["fam-a", "fam-b"] {
        assert_eq!(produce(&b, t), Ok(()), "{t}");
        assert_eq!(consume(&b, t), Ok("v".into()), "{t}");
    }
    assert_eq!(
        produce(&b, "other"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
}

#[test]
fn deny_beats_allow_but_not_for_a_super_user() {
    let broker = broker();
    let b = broker.bootstrap();
    create_topic(&broker, "guarded", 1);
    grant(
        broker.addr(),
        &[
            (TOPIC, "guarded", LITERAL, "User:*", ALL, ALLOW),
            (TOPIC, "gua", PREFIXED, ANONYMOUS, WRITE, DENY),
        ],
    );
    assert_eq!(
        produce(&b, "guarded"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );

    // The same ACLs; ANONYMOUS is a super user now.
    let mut sup = Broker::start_at(
        None,
        1,
        &[AUTHORIZER, OPEN_IF_NO_ACL, "super.users=User:ANONYMOUS"],
    );
    create_topic(&sup, "guarded", 1);
    grant(
        sup.addr(),
        &[(TOPIC, "guarded", LITERAL, "User:*", ALL, DENY)],
    );
    assert_eq!(produce(&sup.bootstrap(), "guarded"), Ok(()));
    assert_eq!(consume(&sup.bootstrap(), "guarded"), Ok("v".into()));
    sup.stop();
}

fn metadata(addr: SocketAddr, topics: Option<&[&str]>) -> MetadataResponse {
    let mut req = MetadataRequest::default();
    req.topics = topics.map(|ts| {
        ts.iter()
            .map(|t| {
                metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s(t))))
            })
            .collect()
    });
    call(&mut Raw::connect(addr), ApiKey::Metadata, 12, &req).expect("Metadata answer")
}

#[test]
fn metadata_hides_topics_without_describe_and_groups_are_checked() {
    let broker = broker();
    let addr = broker.addr();
    create_topic(&broker, "hidden", 1);
    create_topic(&broker, "shown", 1);
    grant(
        addr,
        &[
            (
                TOPIC,
                "hidden",
                LITERAL,
                "User:someone-else",
                DESCRIBE,
                ALLOW,
            ),
            (GROUP, "private", LITERAL, "User:someone-else", READ, ALLOW),
        ],
    );
    let all = metadata(addr, None);
    let names: Vec<String> = all
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    assert!(names.contains(&"shown".to_string()), "{names:?}");
    assert!(!names.contains(&"hidden".to_string()), "{names:?}");
    let named = metadata(addr, Some(&["hidden"]));
    assert_eq!(named.topics[0].error_code, 29, "TOPIC_AUTHORIZATION_FAILED");
    assert!(named.topics[0].partitions.is_empty());

    // The group: FindCoordinator, JoinGroup and OffsetCommit refused.
    let mut raw = Raw::connect(addr);
    let find = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![s("private")]);
    let found: FindCoordinatorResponse = call(&mut raw, ApiKey::FindCoordinator, 4, &find).unwrap();
    assert_eq!(
        found.coordinators[0].error_code, 30,
        "GROUP_AUTHORIZATION_FAILED"
    );
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(s("private")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(s("range"))]);
    let joined: JoinGroupResponse = call(&mut raw, ApiKey::JoinGroup, 5, &join).unwrap();
    assert_eq!(joined.error_code, 30);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("private")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("shown")))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(0),
                ]),
        ]);
    let committed: OffsetCommitResponse = call(&mut raw, ApiKey::OffsetCommit, 8, &commit).unwrap();
    assert_eq!(committed.topics[0].partitions[0].error_code, 30);
    // librdkafka's group consumer hears of it too.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "private")
        .create()
        .unwrap();
    consumer.subscribe(&["shown"]).unwrap();
    let deadline = Instant::now() + READY_DEADLINE;
    let code = loop {
        assert!(
            Instant::now() < deadline,
            "the consumer never heard of the denial"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Err(e)) if !common::is_transient(&e) => break e.rdkafka_error_code(),
            _ => {}
        }
    };
    assert_eq!(code, Some(RDKafkaErrorCode::GroupAuthorizationFailed));
}

#[test]
fn acls_survive_a_restart_and_bad_ones_are_refused_per_entry() {
    let mut broker = broker();
    let addr = broker.addr();
    let codes = create_acls(
        addr,
        &[
            (TOPIC, "kept", LITERAL, ANONYMOUS, READ, ALLOW),
            (TOPIC, "kept", 2, ANONYMOUS, READ, ALLOW), // MATCH is a filter type
            (TOPIC, "kept", LITERAL, "ANONYMOUS", READ, ALLOW), // no "User:"
            (4, "not-the-cluster", LITERAL, ANONYMOUS, 7, ALLOW),
            (GROUP, "kept", PREFIXED, "User:*", DESCRIBE, DENY),
        ],
    );
    assert_eq!(
        codes,
        vec![0, 42, 42, 42, 0],
        "INVALID_REQUEST per bad entry"
    );
    let (code, before) = describe_acls(addr);
    assert_eq!(code, 0);
    assert_eq!(before.len(), 2, "{before:?}");
    broker.stop();
    broker.restart();
    let (_, after) = describe_acls(broker.addr());
    assert_eq!(after, before);

    // DeleteAcls with a MATCH filter takes the literal ACL, not the group's.
    let filter = DeleteAclsFilter::default()
        .with_resource_type_filter(TOPIC)
        .with_resource_name_filter(Some(s("kept")))
        .with_pattern_type_filter(2)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(ANY)
        .with_permission_type(ANY);
    let req = DeleteAclsRequest::default().with_filters(vec![filter]);
    let resp: DeleteAclsResponse = call(
        &mut Raw::connect(broker.addr()),
        ApiKey::DeleteAcls,
        3,
        &req,
    )
    .unwrap();
    assert_eq!(resp.filter_results[0].error_code, 0);
    assert_eq!(resp.filter_results[0].matching_acls.len(), 1);
    let (_, left) = describe_acls(broker.addr());
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, GROUP);
}

#[test]
fn without_an_authorizer_acl_apis_answer_security_disabled_and_a_foreign_class_is_refused() {
    let open = Broker::start(1, &[]);
    let codes = create_acls(
        open.addr(),
        &[(TOPIC, "t", LITERAL, ANONYMOUS, READ, ALLOW)],
    );
    assert_eq!(codes, vec![54], "SECURITY_DISABLED");
    assert_eq!(describe_acls(open.addr()).0, 54);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .args([
            "--data-dir",
            &open.data_dir.with_extension("other").display().to_string(),
        ])
        .args([
            "--override",
            "authorizer.class.name=kafka.security.authorizer.AclAuthorizer",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("authorizer.class.name"), "{err}");
    let _ = std::fs::remove_dir_all(open.data_dir.with_extension("other"));
}

#[test]
fn acls_reach_every_broker_of_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::cluster_spec(dir.path(), 3);
    // The voters admit only peers with CLUSTER_ACTION, and only super
    // users until they hold the ACLs (as Kafka's controllers): the
    // brokers speak to them over mutual TLS as User:CN=localhost, a
    // super user, while the clients stay User:ANONYMOUS, whom the DENY
    // below reaches.
    let files = common::certs::Files::new();
    let ca = common::certs::Ca::new("cluster-ca");
    let ca_file = files.write("ca.pem", &ca.pem());
    let keystore = files.keystore("broker.pem", &ca);
    spec.overrides = vec![
        AUTHORIZER.into(),
        OPEN_IF_NO_ACL.into(),
        "super.users=User:CN=localhost".into(),
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:SSL".into(),
        "controller.listener.names=CONTROLLER".into(),
        "listener.name.controller.ssl.client.auth=required".into(),
        format!("ssl.keystore.location={}", keystore.display()),
        format!("ssl.truststore.location={}", ca_file.display()),
    ];
    let mut c = LocalCluster::start(spec, READY_DEADLINE).expect("cluster starts");
    let addr = |node: usize| SocketAddr::from(([127, 0, 0, 1], c.spec.ports[node - 1]));
    grant(addr(1), &[(TOPIC, "closed", LITERAL, ANONYMOUS, ALL, DENY)]);
    for node in 1..=3 {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let (code, acls) = describe_acls(addr(node));
            if acls.len() == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "broker {node} never saw the ACL: {code} {acls:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let named = metadata(addr(node), Some(&["closed"]));
        assert_eq!(named.topics[0].error_code, 29, "broker {node}");
    }
    // Replication between the brokers, User:ANONYMOUS on the plaintext
    // listener, is unaffected (no CLUSTER ACL).
    let bootstrap = c.bootstrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let new = NewTopic::new("replicated", 1, TopicReplication::Fixed(3));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let created = futures::executor::block_on(admin.create_topics([&new], &options)).unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    assert_eq!(produce(&bootstrap, "replicated"), Ok(()));
    c.stop_all();
}

#[test]
fn kafka_python_and_confluent_kafka_admin_clients_manage_acls() {
    let broker = broker();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/acls.py");
    let out = run_client(
        "admin clients' ACLs",
        &["180", "python3", script, &broker.bootstrap()],
        || broker.log(),
    );
    assert!(out.contains("kafka-python ok"), "{out}");
    assert!(out.contains("confluent-kafka ok"), "{out}");
    assert!(describe_acls(broker.addr()).1.is_empty());
}

/// InitProducerId v4 without a transactional id: its error code.
fn init_producer_id(addr: SocketAddr) -> i16 {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let resp: InitProducerIdResponse =
        call(&mut Raw::connect(addr), ApiKey::InitProducerId, 4, &req).unwrap();
    resp.error_code
}

#[test]
fn an_idempotent_producer_needs_idempotent_write_or_write_on_some_topic() {
    let broker = broker();
    let addr = broker.addr();
    create_topic(&broker, "idem", 1);
    // The cluster now has an ACL (ALTER, so ACLs can still be changed)
    // that grants no IDEMPOTENT_WRITE, and every topic one that grants
    // ANONYMOUS nothing.
    grant(
        addr,
        &[
            (4, "kafka-cluster", LITERAL, ANONYMOUS, 7, ALLOW),
            (TOPIC, "*", LITERAL, "User:nobody", READ, ALLOW),
        ],
    );
    assert_eq!(init_producer_id(addr), 31, "CLUSTER_AUTHORIZATION_FAILED");
    // WRITE on a topic is enough (KIP-679).
    grant(addr, &[(TOPIC, "idem", LITERAL, ANONYMOUS, WRITE, ALLOW)]);
    assert_eq!(init_producer_id(addr), 0);
    let outcomes = Outcomes::default();
    let producer: BaseProducer<Outcomes> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create_with_context(outcomes.clone())
        .unwrap();
    producer
        .send(BaseRecord::to("idem").key("k").payload("v"))
        .map_err(|(e, _)| e)
        .unwrap();
    let deadline = Instant::now() + READY_DEADLINE;
    while outcomes.0.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no delivery report");
        producer.poll(Duration::from_millis(100));
    }
    assert_eq!(outcomes.0.lock().unwrap()[0], Ok(()));
}

/// With the authorizer on and `allow.everyone.if.no.acl.found` at its
/// default (false), a broker without ACLs refuses everything that needs
/// one: even ACLs cannot be made until a super user grants them.
#[test]
fn without_acls_everything_is_denied_by_default() {
    let broker = Broker::start(1, &[AUTHORIZER]);
    let addr = broker.addr();
    let codes = create_acls(addr, &[(TOPIC, "t", LITERAL, ANONYMOUS, READ, ALLOW)]);
    assert_eq!(codes, vec![31], "CLUSTER_AUTHORIZATION_FAILED");
    assert_eq!(describe_acls(addr).0, 31);
    let named = metadata(addr, Some(&["t"]));
    assert_eq!(named.topics[0].error_code, 29, "no auto-creation either");
    assert!(metadata(addr, None).topics.is_empty());
    assert_eq!(init_producer_id(addr), 31);
    let mut raw = Raw::connect(addr);
    let cluster: DescribeClusterResponse = call(
        &mut raw,
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default().with_endpoint_type(1),
    )
    .unwrap();
    assert_eq!(cluster.error_code, 31);
    let create = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s("t")))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let created: CreateTopicsResponse = call(&mut raw, ApiKey::CreateTopics, 7, &create).unwrap();
    assert_eq!(created.topics[0].error_code, 29);
    // Markers come from brokers only: CLUSTER_ACTION on the cluster.
    let markers = WriteTxnMarkersRequest::default().with_markers(vec![
        write_txn_markers_request::WritableTxnMarker::default()
            .with_producer_id(ProducerId(1))
            .with_topics(vec![
                write_txn_markers_request::WritableTxnMarkerTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0]),
            ]),
    ]);
    let written: WriteTxnMarkersResponse =
        call(&mut raw, ApiKey::WriteTxnMarkers, 1, &markers).unwrap();
    assert_eq!(written.markers[0].topics[0].partitions[0].error_code, 31);
}

/// Commits offset 0 of `topic` for a simple group (no members): the
/// OffsetCommit error code.
fn commit_offset(addr: SocketAddr, group: &str, topic: &str) -> i16 {
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(0),
                ]),
        ]);
    let resp: OffsetCommitResponse =
        call(&mut Raw::connect(addr), ApiKey::OffsetCommit, 8, &commit).unwrap();
    resp.topics[0].partitions[0].error_code
}

fn listed_groups(addr: SocketAddr) -> Vec<String> {
    let resp: ListGroupsResponse = call(
        &mut Raw::connect(addr),
        ApiKey::ListGroups,
        4,
        &ListGroupsRequest::default(),
    )
    .unwrap();
    let mut ids: Vec<String> = resp.groups.iter().map(|g| g.group_id.to_string()).collect();
    ids.sort();
    ids
}

#[test]
fn list_groups_hides_groups_without_describe_unless_the_cluster_allows_it() {
    let broker = broker();
    let addr = broker.addr();
    create_topic(&broker, "lg", 1);
    assert_eq!(commit_offset(addr, "lg-open", "lg"), 0);
    assert_eq!(commit_offset(addr, "lg-closed", "lg"), 0);
    assert_eq!(listed_groups(addr), vec!["lg-closed", "lg-open"]);
    grant(
        addr,
        &[(GROUP, "lg-closed", LITERAL, "User:other", READ, ALLOW)],
    );
    // Still listed: DESCRIBE on the cluster (no cluster ACL) lists all.
    assert_eq!(listed_groups(addr), vec!["lg-closed", "lg-open"]);
    // The cluster gets an ACL that is not ANONYMOUS's (the last change
    // ANONYMOUS may make).
    grant(
        addr,
        &[(4, "kafka-cluster", LITERAL, "User:other", DESCRIBE, ALLOW)],
    );
    assert_eq!(listed_groups(addr), vec!["lg-open"]);
    assert_eq!(commit_offset(addr, "lg-closed", "lg"), 30);
}

/// Users who logged in with SASL are authorized as themselves: alice,
/// granted WRITE on a topic, produces there and is refused a fetch until
/// she is granted READ; bob, granted nothing, is refused. The test
/// administers over a plaintext listener whose anonymous clients are
/// super users, as an internal listener would be.
#[test]
fn sasl_users_are_authorized_by_their_principal() {
    let sasl_port = common::free_port();
    let broker = Broker::start_with(1, |port| {
        vec![
            format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}"
            ),
            AUTHORIZER.to_string(),
            "super.users=User:ANONYMOUS".into(),
            "sasl.enabled.mechanisms=PLAIN".into(),
            "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \
             user_alice=\"alice-pw\" user_bob=\"bob-pw\";"
                .into(),
        ]
    });
    create_topic(&broker, "ledger", 1);
    // The consumer's group is hers to use; the topic is not hers to read.
    grant(
        broker.addr(),
        &[
            (TOPIC, "ledger", LITERAL, "User:alice", WRITE, ALLOW),
            (GROUP, "acl-test-unused", LITERAL, "User:alice", READ, ALLOW),
        ],
    );
    let login = |user: &'static str, password: &'static str| {
        [
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.username", user),
            ("sasl.password", password),
        ]
    };
    let b = format!("127.0.0.1:{sasl_port}");
    assert_eq!(
        produce_with(&b, &login("alice", "alice-pw"), "ledger"),
        Ok(())
    );
    assert_eq!(
        consume_with(&b, &login("alice", "alice-pw"), "ledger"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    assert_eq!(
        produce_with(&b, &login("bob", "bob-pw"), "ledger"),
        Err(RDKafkaErrorCode::TopicAuthorizationFailed)
    );
    grant(
        broker.addr(),
        &[(TOPIC, "ledger", LITERAL, "User:alice", READ, ALLOW)],
    );
    assert_eq!(
        consume_with(&b, &login("alice", "alice-pw"), "ledger").as_deref(),
        Ok("v")
    );
}

/// InitProducerId v4 for transactional id `id`: its error code.
fn init_transactional(addr: SocketAddr, id: &str) -> (i16, (i64, i16)) {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(id))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let resp: InitProducerIdResponse =
            call(&mut Raw::connect(addr), ApiKey::InitProducerId, 4, &req).unwrap();
        // Retriable while the state topic is created and loaded.
        if ![14, 15, 16].contains(&resp.error_code) || Instant::now() > deadline {
            return (resp.error_code, (resp.producer_id.0, resp.producer_epoch));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn transactions_need_write_on_the_transactional_id_and_on_each_topic() {
    const TRANSACTIONAL_ID: i8 = 5;
    let broker = broker();
    let addr = broker.addr();
    create_topic(&broker, "tx-open", 1);
    create_topic(&broker, "tx-closed", 1);
    grant(
        addr,
        &[
            (TRANSACTIONAL_ID, "locked", LITERAL, ANONYMOUS, WRITE, DENY),
            (TOPIC, "tx-closed", LITERAL, ANONYMOUS, WRITE, DENY),
        ],
    );
    assert_eq!(
        init_transactional(addr, "locked").0,
        53,
        "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
    );
    let (code, p) = init_transactional(addr, "free");
    assert_eq!(code, 0);
    let add = |topic: &str| -> i16 {
        use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("free")))
            .with_v3_and_below_producer_id(ProducerId(p.0))
            .with_v3_and_below_producer_epoch(p.1)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![0])]);
        let resp: AddPartitionsToTxnResponse =
            call(&mut Raw::connect(addr), ApiKey::AddPartitionsToTxn, 3, &req).unwrap();
        resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
    };
    assert_eq!(add("tx-closed"), 29, "TOPIC_AUTHORIZATION_FAILED");
    assert_eq!(add("tx-open"), 0);
}

/// TxnOffsetCommit v3 of offset 0 of `topic` for `group` as transactional
/// id `id` and `producer`: its first partition's error code.
fn txn_commit_offset(
    addr: SocketAddr,
    id: &str,
    group: &str,
    topic: &str,
    producer: (i64, i16),
) -> i16 {
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s(id)))
        .with_group_id(GroupId(s(group)))
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(0)])]);
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let resp: TxnOffsetCommitResponse =
            call(&mut Raw::connect(addr), ApiKey::TxnOffsetCommit, 3, &req).unwrap();
        let code = resp.topics[0].partitions[0].error_code;
        // Retriable while the offsets topic is created and loaded.
        if ![14, 15, 16].contains(&code) || Instant::now() > deadline {
            return code;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn txn_offset_commit_needs_write_on_the_id_and_read_on_the_group_and_topic() {
    const TRANSACTIONAL_ID: i8 = 5;
    let broker = broker();
    let addr = broker.addr();
    create_topic(&broker, "tx-in", 1);
    create_topic(&broker, "tx-hidden", 1);
    grant(
        addr,
        &[
            (TRANSACTIONAL_ID, "locked", LITERAL, ANONYMOUS, WRITE, DENY),
            (GROUP, "closed-group", LITERAL, ANONYMOUS, READ, DENY),
            (TOPIC, "tx-hidden", LITERAL, ANONYMOUS, READ, DENY),
        ],
    );
    let (code, producer) = init_transactional(addr, "free");
    assert_eq!(code, 0);
    let code = txn_commit_offset(addr, "locked", "open-group", "tx-in", producer);
    assert_eq!(code, 53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED");
    let code = txn_commit_offset(addr, "free", "closed-group", "tx-in", producer);
    assert_eq!(code, 30, "GROUP_AUTHORIZATION_FAILED");
    let code = txn_commit_offset(addr, "free", "open-group", "tx-hidden", producer);
    assert_eq!(code, 29, "TOPIC_AUTHORIZATION_FAILED");
    // The group's offsets partition joins the transaction first, as
    // clients do (the broker verifies it).
    let req = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(s("free")))
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_group_id(GroupId(s("open-group")));
    let resp: AddOffsetsToTxnResponse =
        call(&mut Raw::connect(addr), ApiKey::AddOffsetsToTxn, 3, &req).unwrap();
    assert_eq!(resp.error_code, 0);
    let code = txn_commit_offset(addr, "free", "open-group", "tx-in", producer);
    assert_eq!(code, 0);
}
