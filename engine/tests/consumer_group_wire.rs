//! The consumer group protocol (KIP-848) by hand: ConsumerGroupHeartbeat
//! and ConsumerGroupDescribe answers, Kafka's error codes for bad
//! heartbeats (with the group left intact), member epochs on
//! OffsetCommit/OffsetFetch v9, how the classic group APIs see a consumer
//! group, session expiry, and what survives a restart.

mod common;

use common::{call, create_topic, Broker, Raw};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;
use std::time::{Duration, Instant};

const GROUP: &str = "kip848";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(c: i16) -> ErrorCode {
    ErrorCode::from_code(c)
}

/// A first heartbeat: joins with a subscription.
fn join_request(member: &str, topics: &[&str]) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(s(member))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(topics.iter().map(|t| TopicName(s(t))).collect()))
        .with_topic_partitions(Some(Vec::new()))
}

/// A later heartbeat, reporting what the member owns.
fn beat_request(
    member: &str,
    epoch: i32,
    owned: Option<&consumer_group_heartbeat_response::Assignment>,
) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(s(member))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(-1)
        .with_topic_partitions(owned.map(|a| {
            a.topic_partitions
                .iter()
                .map(|t| {
                    TopicPartitions::default()
                        .with_topic_id(t.topic_id)
                        .with_partitions(t.partitions.clone())
                })
                .collect()
        }))
}

fn heartbeat(raw: &mut Raw, req: &ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
    call(raw, ApiKey::ConsumerGroupHeartbeat, 1, req).expect("ConsumerGroupHeartbeat answer")
}

fn partitions(a: &Option<consumer_group_heartbeat_response::Assignment>) -> usize {
    a.as_ref().map_or(0, |a| {
        a.topic_partitions.iter().map(|t| t.partitions.len()).sum()
    })
}

fn commit(raw: &mut Raw, version: i16, member: &str, epoch: i32, offset: i64) -> ErrorCode {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_generation_id_or_member_epoch(epoch)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])]);
    let resp: OffsetCommitResponse =
        call(raw, ApiKey::OffsetCommit, version, &req).expect("answer");
    code(resp.topics[0].partitions[0].error_code)
}

/// OffsetFetch v9 as a member: the group's error and partition 0's offset.
fn fetch(raw: &mut Raw, member: Option<&str>, epoch: i32) -> (ErrorCode, i64) {
    let req = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(member.map(s))
        .with_member_epoch(epoch)
        .with_topics(None)]);
    let resp: OffsetFetchResponse = call(raw, ApiKey::OffsetFetch, 9, &req).expect("answer");
    let g = &resp.groups[0];
    let offset = g
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == 0)
        .map_or(-1, |p| p.committed_offset);
    (code(g.error_code), offset)
}

fn describe(raw: &mut Raw, group: &str) -> consumer_group_describe_response::DescribedGroup {
    let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))]);
    let resp: ConsumerGroupDescribeResponse =
        call(raw, ApiKey::ConsumerGroupDescribe, 1, &req).expect("answer");
    resp.groups.into_iter().next().expect("one group")
}

fn listed(raw: &mut Raw) -> Option<(String, String)> {
    let resp: ListGroupsResponse =
        call(raw, ApiKey::ListGroups, 4, &ListGroupsRequest::default()).expect("answer");
    resp.groups
        .iter()
        .find(|g| g.group_id.0.as_str() == GROUP)
        .map(|g| (g.protocol_type.to_string(), g.group_state.to_string()))
}

#[test]
fn consumer_group_heartbeats_assign_and_bad_ones_get_kafka_error_codes() {
    let mut broker = Broker::start(
        2,
        &[
            "group.consumer.heartbeat.interval.ms=1234",
            "group.consumer.session.timeout.ms=10000",
            "offsets.retention.check.interval.ms=500",
        ],
    );
    create_topic(&broker, "t", 4);
    let mut raw = Raw::connect(broker.addr());

    let first = heartbeat(&mut raw, &join_request("m1", &["t"]));
    assert_eq!(code(first.error_code), ErrorCode::None, "{first:?}");
    assert_eq!(first.heartbeat_interval_ms, 1234);
    assert_eq!(first.member_id.as_deref(), Some("m1"));
    let epoch = first.member_epoch;
    assert!(epoch > 0);
    assert_eq!(partitions(&first.assignment), 4);

    // Bad heartbeats: Kafka's codes, and the group stays as it was.
    let bad = [
        (beat_request("ghost", 1, None), ErrorCode::UnknownMemberId),
        (
            beat_request("m1", epoch + 5, None),
            ErrorCode::FencedMemberEpoch,
        ),
        (
            join_request("m2", &["t"]).with_server_assignor(Some(s("sticky"))),
            ErrorCode::UnsupportedAssignor,
        ),
        (
            join_request("m2", &[]).with_subscribed_topic_regex(Some(s("t("))),
            ErrorCode::InvalidRegularExpression,
        ),
        (beat_request("m1", -7, None), ErrorCode::InvalidRequest),
        (
            beat_request("m1", epoch, None).with_group_id(GroupId(s("nowhere"))),
            ErrorCode::GroupIdNotFound,
        ),
    ];
    for (req, expected) in bad {
        let r = heartbeat(&mut raw, &req);
        assert_eq!(code(r.error_code), expected, "{req:?}");
        assert!(r.error_message.is_some());
    }
    let again = heartbeat(
        &mut raw,
        &beat_request("m1", epoch, first.assignment.as_ref()),
    );
    assert_eq!(code(again.error_code), ErrorCode::None);
    assert_eq!(again.member_epoch, epoch, "no rebalance came of them");
    let d = describe(&mut raw, GROUP);
    assert_eq!(code(d.error_code), ErrorCode::None);
    assert_eq!((d.group_state.as_str(), d.group_epoch), ("Stable", epoch));
    assert_eq!(d.assignor_name.as_str(), "uniform");
    assert_eq!(d.members.len(), 1);
    assert_eq!(
        d.members[0].assignment.topic_partitions[0]
            .topic_name
            .0
            .as_str(),
        "t"
    );
    // The member learns topic names from Metadata by topic id (KIP-516).
    let id = first.assignment.as_ref().unwrap().topic_partitions[0].topic_id;
    let by_id = |raw: &mut Raw, id| -> MetadataResponse {
        let req = MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default()
                .with_topic_id(id)
                .with_name(None),
        ]));
        call(raw, ApiKey::Metadata, 12, &req).expect("answer")
    };
    let named = by_id(&mut raw, id);
    assert_eq!(
        named.topics[0].name.as_ref().map(|n| n.0.as_str()),
        Some("t")
    );
    assert_eq!(named.topics[0].partitions.len(), 4);
    let unknown = by_id(&mut raw, uuid::Uuid::from_u128(7));
    assert_eq!(
        code(unknown.topics[0].error_code),
        ErrorCode::UnknownTopicId
    );
    let missing = describe(&mut raw, "nobody");
    assert_eq!(code(missing.error_code), ErrorCode::GroupIdNotFound);

    // Offsets: v9 with the member epoch; a stale epoch or v8 is refused.
    assert_eq!(commit(&mut raw, 9, "m1", epoch, 5), ErrorCode::None);
    assert_eq!(
        commit(&mut raw, 9, "m1", epoch - 1, 6),
        ErrorCode::StaleMemberEpoch
    );
    assert_eq!(
        commit(&mut raw, 8, "m1", epoch, 6),
        ErrorCode::UnsupportedVersion
    );
    assert_eq!(
        commit(&mut raw, 9, "ghost", epoch, 6),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(fetch(&mut raw, Some("m1"), epoch), (ErrorCode::None, 5));
    assert_eq!(
        fetch(&mut raw, Some("m1"), epoch + 1).0,
        ErrorCode::StaleMemberEpoch
    );
    assert_eq!(fetch(&mut raw, None, -1), (ErrorCode::None, 5));

    // `sluice groups describe` finds it through ConsumerGroupDescribe.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "groups",
            "describe",
            GROUP,
            "--bootstrap",
            &broker.bootstrap(),
        ])
        .args(["--timeout-ms", "30000"])
        .output()
        .expect("run sluice groups");
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        stdout.contains("state Stable, protocol consumer/uniform, 1 member"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.contains("m1")), "{stdout}");
    // m1 heartbeats between steps, so no step's time can expire it.
    let r = heartbeat(
        &mut raw,
        &beat_request("m1", epoch, first.assignment.as_ref()),
    );
    assert_eq!(code(r.error_code), ErrorCode::None, "{r:?}");

    // The classic APIs: listed as a consumer group, Dead to DescribeGroups
    // v5, not deletable while it has a member. A classic member may join
    // it (KIP-848's online migration): a first JoinGroup gets a member id.
    assert_eq!(listed(&mut raw), Some(("consumer".into(), "Stable".into())));
    let dg: DescribeGroupsResponse = call(
        &mut raw,
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(GROUP))]),
    )
    .expect("answer");
    assert_eq!(dg.groups[0].group_state.as_str(), "Dead");
    let classic = JoinGroupRequest::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name(s("range"))
        ]);
    let joined: JoinGroupResponse = call(&mut raw, ApiKey::JoinGroup, 7, &classic).expect("answer");
    assert_eq!(code(joined.error_code), ErrorCode::MemberIdRequired);
    let deleted: DeleteGroupsResponse = call(
        &mut raw,
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(GROUP))]),
    )
    .expect("answer");
    assert_eq!(
        code(deleted.results[0].error_code),
        ErrorCode::NonEmptyGroup
    );

    // A second member joins and goes silent: m1 first gives up half,
    // then, once m2's 10 s session expires, gets everything back.
    let m2 = heartbeat(&mut raw, &join_request("m2", &["t"]));
    assert_eq!(code(m2.error_code), ErrorCode::None);
    let (mut epoch, mut owned) = (epoch, first.assignment.clone());
    let mut shrank = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = heartbeat(&mut raw, &beat_request("m1", epoch, owned.as_ref()));
        assert_eq!(code(r.error_code), ErrorCode::None, "{r:?}");
        epoch = r.member_epoch;
        if r.assignment.is_some() {
            owned = r.assignment;
        }
        shrank |= partitions(&owned) == 2;
        if shrank && partitions(&owned) == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "m2 was never fenced: {owned:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(broker.log().contains("session expired"));

    // A group that empties with no offsets is forgotten at the next
    // expiry check; one with offsets (the main group) stays.
    let brief = GroupId(s("brief"));
    let joined = heartbeat(
        &mut raw,
        &join_request("b1", &["t"]).with_group_id(brief.clone()),
    );
    assert_eq!(code(joined.error_code), ErrorCode::None);
    let left = heartbeat(&mut raw, &beat_request("b1", -1, None).with_group_id(brief));
    assert_eq!(code(left.error_code), ErrorCode::None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while code(describe(&mut raw, "brief").error_code) != ErrorCode::GroupIdNotFound {
        // m1 keeps its session meanwhile.
        let r = heartbeat(&mut raw, &beat_request("m1", epoch, owned.as_ref()));
        assert_eq!(code(r.error_code), ErrorCode::None, "{r:?}");
        assert!(
            Instant::now() < deadline,
            "the empty group was never forgotten"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // m1 leaves and m4 joins and stays across a restart: the new
    // coordinator reads the group epoch, m4's metadata and assignment
    // back, so m4 carries on with its epoch and partitions.
    let left = heartbeat(&mut raw, &beat_request("m1", -1, None));
    assert_eq!(
        (code(left.error_code), left.member_epoch),
        (ErrorCode::None, -1)
    );
    assert_eq!(listed(&mut raw), Some(("consumer".into(), "Empty".into())));
    assert_eq!(code(describe(&mut raw, GROUP).error_code), ErrorCode::None);
    let m4 = heartbeat(&mut raw, &join_request("m4", &["t"]));
    assert_eq!(partitions(&m4.assignment), 4);
    let last_epoch = describe(&mut raw, GROUP).group_epoch;
    broker.stop();
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    let deadline = Instant::now() + Duration::from_secs(60);
    let kept = loop {
        let owned = m4.assignment.as_ref();
        let r = heartbeat(&mut raw, &beat_request("m4", m4.member_epoch, owned));
        if code(r.error_code) == ErrorCode::None {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "m4 not known after restart: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(kept.member_epoch >= m4.member_epoch, "{kept:?}");
    assert!(
        kept.assignment.is_none() || partitions(&kept.assignment) == 4,
        "{kept:?}"
    );
    let rejoined = heartbeat(&mut raw, &join_request("m3", &["t"]));
    assert_eq!(code(rejoined.error_code), ErrorCode::None);
    assert!(
        rejoined.member_epoch > last_epoch,
        "epoch {} after restart, {last_epoch} before",
        rejoined.member_epoch
    );
    assert_eq!(fetch(&mut raw, None, -1), (ErrorCode::None, 5));
    assert!(!broker.log().contains("panicked"));
}

/// A ConsumerProtocolSubscription v1 to `t`, owning `owned` of it.
fn classic_subscription(owned: &[i32]) -> bytes::Bytes {
    use bytes::BufMut;
    use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition;
    use kafka_protocol::protocol::Encodable;
    let body = ConsumerProtocolSubscription::default()
        .with_topics(vec![s("t")])
        .with_owned_partitions(vec![TopicPartition::default()
            .with_topic(TopicName(s("t")))
            .with_partitions(owned.to_vec())]);
    let mut out = bytes::BytesMut::new();
    out.put_i16(1);
    body.encode(&mut out, 1).unwrap();
    out.freeze()
}

/// The partitions of `t` in a SyncGroup assignment.
fn classic_assignment(b: &bytes::Bytes) -> Vec<i32> {
    use kafka_protocol::protocol::Decodable;
    let mut body = b.slice(2..);
    let version = i16::from_be_bytes([b[0], b[1]]);
    let a = ConsumerProtocolAssignment::decode(&mut body, version).unwrap();
    let mut ps: Vec<i32> = a
        .assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.clone())
        .collect();
    ps.sort_unstable();
    ps
}

fn classic_join(raw: &mut Raw, member: &str, owned: &[i32]) -> JoinGroupResponse {
    classic_join_as(raw, member, None, owned)
}

/// A classic JoinGroup, static under `instance` if given.
fn classic_join_as(
    raw: &mut Raw,
    member: &str,
    instance: Option<&str>,
    owned: &[i32],
) -> JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_instance_id(instance.map(s))
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(s(member))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(classic_subscription(owned))]);
    call(raw, ApiKey::JoinGroup, 7, &req).expect("JoinGroup answer")
}

fn classic_sync(
    raw: &mut Raw,
    member: &str,
    generation: i32,
    assignment: Option<bytes::Bytes>,
) -> SyncGroupResponse {
    classic_sync_as(raw, member, None, generation, assignment)
}

/// A classic SyncGroup, static under `instance` if given.
fn classic_sync_as(
    raw: &mut Raw,
    member: &str,
    instance: Option<&str>,
    generation: i32,
    assignment: Option<bytes::Bytes>,
) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_instance_id(instance.map(s))
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(s(member))
        .with_generation_id(generation)
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(
            assignment
                .map(|a| {
                    vec![sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(s(member))
                        .with_assignment(a)]
                })
                .unwrap_or_default(),
        );
    call(raw, ApiKey::SyncGroup, 5, &req).expect("SyncGroup answer")
}

fn classic_heartbeat(raw: &mut Raw, member: &str, generation: i32) -> ErrorCode {
    classic_heartbeat_as(raw, member, None, generation)
}

/// A classic Heartbeat, static under `instance` if given.
fn classic_heartbeat_as(
    raw: &mut Raw,
    member: &str,
    instance: Option<&str>,
    generation: i32,
) -> ErrorCode {
    let req = HeartbeatRequest::default()
        .with_group_instance_id(instance.map(s))
        .with_group_id(GroupId(s(GROUP)))
        .with_member_id(s(member))
        .with_generation_id(generation);
    let r: HeartbeatResponse = call(raw, ApiKey::Heartbeat, 4, &req).expect("Heartbeat answer");
    code(r.error_code)
}

/// All of `t` (4 partitions) as a leader's SyncGroup assignment.
fn all_of_t() -> bytes::Bytes {
    use bytes::BufMut;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::Encodable;
    let body = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
        TopicPartition::default()
            .with_topic(TopicName(s("t")))
            .with_partitions(vec![0, 1, 2, 3]),
    ]);
    let mut out = bytes::BytesMut::new();
    out.put_i16(0);
    body.encode(&mut out, 0).unwrap();
    out.freeze()
}

/// Retries `f` until the restarted coordinator has loaded the group.
fn after_restart<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: no answer after restart");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_classic_group_with_members_upgrades_and_downgrades_online_across_restarts() {
    let mut broker = Broker::start(
        2,
        &[
            "group.initial.rebalance.delay.ms=0",
            "group.consumer.session.timeout.ms=30000",
        ],
    );
    create_topic(&broker, "t", 4);
    let mut raw = Raw::connect(broker.addr());

    // A classic member c1 leads a classic group and owns all of t.
    let first = classic_join(&mut raw, "", &[]);
    assert_eq!(code(first.error_code), ErrorCode::MemberIdRequired);
    let c1 = first.member_id.to_string();
    let joined = classic_join(&mut raw, &c1, &[]);
    assert_eq!(code(joined.error_code), ErrorCode::None);
    assert_eq!(joined.leader.as_str(), c1);
    let generation = joined.generation_id;
    let synced = classic_sync(&mut raw, &c1, generation, Some(all_of_t()));
    assert_eq!(classic_assignment(&synced.assignment), vec![0, 1, 2, 3]);
    assert_eq!(commit(&mut raw, 7, &c1, generation, 5), ErrorCode::None);

    // The upgrade: a consumer-protocol member joins; the group becomes a
    // consumer group holding c1, which still owns everything, so m1 gets
    // nothing yet.
    let m1 = heartbeat(&mut raw, &join_request("m1", &["t"]));
    assert_eq!(code(m1.error_code), ErrorCode::None, "{m1:?}");
    assert!(m1.member_epoch > generation);
    assert_eq!(partitions(&m1.assignment), 0);
    assert_eq!(
        listed(&mut raw),
        Some(("consumer".into(), "Reconciling".into()))
    );
    let d = describe(&mut raw, GROUP);
    assert_eq!(d.members.len(), 2);
    let classic = d
        .members
        .iter()
        .find(|m| m.member_id.as_str() == c1)
        .unwrap();
    assert_eq!((classic.member_type, classic.member_epoch), (0, generation));

    // The coordinator restarts in the middle of the migration.
    broker.stop();
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    let told = after_restart("c1's heartbeat", || {
        match classic_heartbeat(&mut raw, &c1, generation) {
            // Not yet loaded (a group not yet replayed is unknown).
            ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::NotCoordinator
            | ErrorCode::UnknownMemberId => None,
            other => Some(other),
        }
    });
    assert_eq!(told, ErrorCode::RebalanceInProgress);
    // c1 (eager) gave everything up and rejoins: it reaches the new
    // epoch with the partitions nobody else owns, then m1 gets the rest.
    let rejoined = classic_join(&mut raw, &c1, &[]);
    assert_eq!(code(rejoined.error_code), ErrorCode::None, "{rejoined:?}");
    assert!(rejoined.generation_id > generation);
    assert_eq!(rejoined.leader.as_str(), "");
    let synced = classic_sync(&mut raw, &c1, rejoined.generation_id, None);
    assert_eq!(code(synced.error_code), ErrorCode::None);
    let c1_owns = classic_assignment(&synced.assignment);
    assert_eq!(c1_owns.len(), 2, "{c1_owns:?}");
    let m1_beat = heartbeat(
        &mut raw,
        &beat_request("m1", m1.member_epoch, m1.assignment.as_ref()),
    );
    assert_eq!(code(m1_beat.error_code), ErrorCode::None, "{m1_beat:?}");
    let m1_owns: Vec<i32> = m1_beat
        .assignment
        .as_ref()
        .map(|a| {
            a.topic_partitions
                .iter()
                .flat_map(|t| t.partitions.clone())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(m1_owns.len(), 2, "{m1_beat:?}");
    assert!(m1_owns.iter().all(|p| !c1_owns.contains(p)));
    assert_eq!(
        classic_heartbeat(&mut raw, &c1, rejoined.generation_id),
        ErrorCode::None
    );
    // The offset committed while the group was classic is still there;
    // c1 commits with its generation, a stale one is refused.
    assert_eq!(fetch(&mut raw, None, -1), (ErrorCode::None, 5));
    let g = rejoined.generation_id;
    assert_eq!(commit(&mut raw, 7, &c1, g, 6), ErrorCode::None);
    assert_eq!(
        commit(&mut raw, 7, &c1, generation, 7),
        ErrorCode::IllegalGeneration
    );

    // The downgrade: m1 leaves, c1 is alone and the group is classic
    // again, rebalancing; c1 rejoins, leads, and the group is Stable.
    let left = heartbeat(&mut raw, &beat_request("m1", -1, None));
    assert_eq!(code(left.error_code), ErrorCode::None);
    assert_eq!(
        listed(&mut raw),
        Some(("consumer".into(), "PreparingRebalance".into()))
    );
    assert_eq!(
        classic_heartbeat(&mut raw, &c1, rejoined.generation_id),
        ErrorCode::RebalanceInProgress
    );
    let again = classic_join(&mut raw, &c1, &[]);
    assert_eq!(code(again.error_code), ErrorCode::None);
    assert_eq!(again.leader.as_str(), c1);
    assert!(again.generation_id > rejoined.generation_id);
    let synced = classic_sync(&mut raw, &c1, again.generation_id, Some(all_of_t()));
    assert_eq!(code(synced.error_code), ErrorCode::None);
    assert_eq!(listed(&mut raw), Some(("consumer".into(), "Stable".into())));
    assert_eq!(
        code(describe(&mut raw, GROUP).error_code),
        ErrorCode::GroupIdNotFound
    );

    // And the classic group, with its offsets, survives a restart too.
    broker.stop();
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    let beat = after_restart("c1's heartbeat", || {
        match classic_heartbeat(&mut raw, &c1, again.generation_id) {
            // Not yet loaded (a group not yet replayed is unknown).
            ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::NotCoordinator
            | ErrorCode::UnknownMemberId => None,
            other => Some(other),
        }
    });
    assert_eq!(beat, ErrorCode::None);
    assert_eq!(fetch(&mut raw, None, -1), (ErrorCode::None, 6));
    assert!(!broker.log().contains("panicked"));
}

/// A classic group of one member, c1, owning all of `t`: its member id
/// and generation.
fn classic_group_of_one(raw: &mut Raw) -> (String, i32) {
    let first = classic_join(raw, "", &[]);
    let c1 = first.member_id.to_string();
    let joined = classic_join(raw, &c1, &[]);
    assert_eq!(code(joined.error_code), ErrorCode::None);
    let synced = classic_sync(raw, &c1, joined.generation_id, Some(all_of_t()));
    assert_eq!(code(synced.error_code), ErrorCode::None);
    (c1, joined.generation_id)
}

#[test]
fn the_migration_policy_decides_which_conversions_happen() {
    // disabled: a consumer-protocol member cannot join a classic group
    // with members, as Kafka answers; the classic group carries on.
    let broker = Broker::start(
        1,
        &[
            "group.initial.rebalance.delay.ms=0",
            "group.consumer.migration.policy=disabled",
        ],
    );
    create_topic(&broker, "t", 4);
    let mut raw = Raw::connect(broker.addr());
    let (c1, generation) = classic_group_of_one(&mut raw);
    let refused = heartbeat(&mut raw, &join_request("m1", &["t"]));
    assert_eq!(code(refused.error_code), ErrorCode::GroupIdNotFound);
    assert_eq!(
        classic_heartbeat(&mut raw, &c1, generation),
        ErrorCode::None
    );
    drop(broker);

    // upgrade: the group converts, but stays a consumer group when its
    // consumer-protocol member leaves.
    let broker = Broker::start(
        1,
        &[
            "group.initial.rebalance.delay.ms=0",
            "group.consumer.migration.policy=upgrade",
        ],
    );
    create_topic(&broker, "t", 4);
    let mut raw = Raw::connect(broker.addr());
    let (c1, generation) = classic_group_of_one(&mut raw);
    let m1 = heartbeat(&mut raw, &join_request("m1", &["t"]));
    assert_eq!(code(m1.error_code), ErrorCode::None);
    let left = heartbeat(&mut raw, &beat_request("m1", -1, None));
    assert_eq!(code(left.error_code), ErrorCode::None);
    let d = describe(&mut raw, GROUP);
    assert_eq!(code(d.error_code), ErrorCode::None);
    assert_eq!(d.members.len(), 1);
    assert_eq!(
        classic_heartbeat(&mut raw, &c1, generation),
        ErrorCode::RebalanceInProgress
    );
}

/// A static member's replacement converts the group, as in Kafka 4. A
/// classic static member restarted with group.protocol=consumer under
/// the same group.instance.id upgrades the group and takes the classic
/// member's place and partitions at once (it used to be refused with
/// UNRELEASED_INSTANCE_ID); restarted again as a classic member, it
/// turns the group back into a classic group, Stable at the generation
/// its JoinGroup answers, with no rebalance, and a restart replays it.
#[test]
fn a_static_members_replacement_upgrades_and_downgrades_the_group() {
    let mut broker = Broker::start(1, &["group.initial.rebalance.delay.ms=0"]);
    create_topic(&broker, "t", 4);
    let mut raw = Raw::connect(broker.addr());
    let joined = classic_join_as(&mut raw, "", Some("i1"), &[]);
    assert_eq!(code(joined.error_code), ErrorCode::None, "{joined:?}");
    let c1 = joined.member_id.to_string();
    let generation = joined.generation_id;
    let synced = classic_sync_as(&mut raw, &c1, Some("i1"), generation, Some(all_of_t()));
    assert_eq!(classic_assignment(&synced.assignment), vec![0, 1, 2, 3]);

    // The upgrade: m1 replaces c1.
    let up = heartbeat(
        &mut raw,
        &join_request("m1", &["t"]).with_instance_id(Some(s("i1"))),
    );
    assert_eq!(code(up.error_code), ErrorCode::None, "{up:?}");
    assert_eq!(up.member_epoch, generation, "no rebalance");
    assert_eq!(partitions(&up.assignment), 4);
    assert_eq!(listed(&mut raw), Some(("consumer".into(), "Stable".into())));
    let d = describe(&mut raw, GROUP);
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id.as_str(), "m1");
    assert_eq!(
        classic_heartbeat_as(&mut raw, &c1, Some("i1"), generation),
        ErrorCode::FencedInstanceId
    );

    // The downgrade: a classic incarnation replaces m1.
    let down = classic_join_as(&mut raw, "", Some("i1"), &[]);
    assert_eq!(code(down.error_code), ErrorCode::None, "{down:?}");
    let c2 = down.member_id.to_string();
    assert!(c2 != c1 && c2 != "m1");
    assert_eq!(down.generation_id, generation);
    assert_eq!(down.leader.as_str(), "");
    assert_eq!(
        code(describe(&mut raw, GROUP).error_code),
        ErrorCode::GroupIdNotFound
    );
    assert_eq!(listed(&mut raw), Some(("consumer".into(), "Stable".into())));
    let synced = classic_sync_as(&mut raw, &c2, Some("i1"), down.generation_id, None);
    assert_eq!(code(synced.error_code), ErrorCode::None, "{synced:?}");
    assert_eq!(classic_assignment(&synced.assignment), vec![0, 1, 2, 3]);
    let m1_beat = heartbeat(&mut raw, &beat_request("m1", up.member_epoch, None));
    assert_eq!(code(m1_beat.error_code), ErrorCode::GroupIdNotFound);

    broker.stop();
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    let beat = after_restart("c2's heartbeat", || {
        match classic_heartbeat_as(&mut raw, &c2, Some("i1"), generation) {
            ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::NotCoordinator
            | ErrorCode::UnknownMemberId => None,
            other => Some(other),
        }
    });
    assert_eq!(beat, ErrorCode::None);
    assert_eq!(listed(&mut raw), Some(("consumer".into(), "Stable".into())));
    assert!(!broker.log().contains("panicked"));
}
