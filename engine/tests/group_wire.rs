//! Group requests made by hand: each kind of bad request gets Kafka's
//! error code and leaves the group usable, and the broker keeps serving.

mod common;

use bytes::Bytes;
use common::{call, create_topic, Broker, Raw};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::ErrorCode;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join(raw: &mut Raw, member: &str, session_ms: i32, protocol: &str) -> JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s(protocol))
            .with_metadata(Bytes::from_static(b"\0\0\0\0\0\0"))]);
    call(raw, ApiKey::JoinGroup, 7, &req).expect("JoinGroup answer")
}

fn code(c: i16) -> ErrorCode {
    ErrorCode::from_code(c)
}

fn commit(raw: &mut Raw, member: &str, generation: i32, topic: &str) -> ErrorCode {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(5)])]);
    let resp: OffsetCommitResponse = call(raw, ApiKey::OffsetCommit, 8, &req).expect("answer");
    code(resp.topics[0].partitions[0].error_code)
}

#[test]
fn bad_group_requests_get_kafka_error_codes() {
    let broker = Broker::start(
        2,
        &[
            "group.initial.rebalance.delay.ms=0",
            "group.min.session.timeout.ms=1000",
        ],
    );
    create_topic(&broker, "t", 1);
    let mut raw = Raw::connect(broker.addr());
    let find: FindCoordinatorResponse = call(
        &mut raw,
        ApiKey::FindCoordinator,
        4,
        &FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![s("txn")]),
    )
    .expect("answer");
    assert_eq!(
        code(find.coordinators[0].error_code),
        ErrorCode::None,
        "the transaction coordinator is found like a group's"
    );
    assert_eq!(find.coordinators[0].port, i32::from(broker.port));

    let bad = join(&mut raw, "", 10, "range");
    assert_eq!(code(bad.error_code), ErrorCode::InvalidSessionTimeout);
    let first = join(&mut raw, "", 6_000, "range");
    assert_eq!(code(first.error_code), ErrorCode::MemberIdRequired);
    let member = first.member_id.to_string();
    let joined = join(&mut raw, &member, 6_000, "range");
    assert_eq!(code(joined.error_code), ErrorCode::None);
    assert_eq!(joined.leader, joined.member_id);
    let generation = joined.generation_id;

    let other = join(&mut raw, "", 6_000, "roundrobin");
    assert_eq!(code(other.error_code), ErrorCode::InconsistentGroupProtocol);
    let ghost = join(&mut raw, "ghost", 6_000, "range");
    assert_eq!(code(ghost.error_code), ErrorCode::UnknownMemberId);

    let sync = |raw: &mut Raw, generation: i32| -> ErrorCode {
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(generation)
            .with_member_id(s(&member))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(Bytes::from_static(b"a"))]);
        let resp: SyncGroupResponse = call(raw, ApiKey::SyncGroup, 5, &req).expect("answer");
        code(resp.error_code)
    };
    assert_eq!(sync(&mut raw, generation + 1), ErrorCode::IllegalGeneration);
    assert_eq!(sync(&mut raw, generation), ErrorCode::None);

    let heartbeat = |raw: &mut Raw, who: &str, generation: i32| -> ErrorCode {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(generation)
            .with_member_id(s(who));
        let resp: HeartbeatResponse = call(raw, ApiKey::Heartbeat, 4, &req).expect("answer");
        code(resp.error_code)
    };
    assert_eq!(heartbeat(&mut raw, &member, generation), ErrorCode::None);
    assert_eq!(
        heartbeat(&mut raw, "ghost", generation),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(
        heartbeat(&mut raw, &member, generation - 1),
        ErrorCode::IllegalGeneration
    );

    assert_eq!(
        commit(&mut raw, &member, generation, "nope"),
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        commit(&mut raw, &member, generation + 3, "t"),
        ErrorCode::IllegalGeneration
    );
    assert_eq!(commit(&mut raw, &member, generation, "t"), ErrorCode::None);

    let delete: DeleteGroupsResponse = call(
        &mut raw,
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g")), GroupId(s("x"))]),
    )
    .expect("answer");
    assert_eq!(code(delete.results[0].error_code), ErrorCode::NonEmptyGroup);
    assert_eq!(
        code(delete.results[1].error_code),
        ErrorCode::GroupIdNotFound
    );

    // The group still works: the committed offset is there.
    let fetch: OffsetFetchResponse = call(
        &mut raw,
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(None),
    )
    .expect("answer");
    assert_eq!(fetch.topics[0].partitions[0].committed_offset, 5);
    assert!(!broker.log().contains("panicked"));
}

/// An `offsets.topic.replication.factor` above the live brokers keeps
/// groups waiting, as Kafka does: FindCoordinator answers
/// COORDINATOR_NOT_AVAILABLE (clients retry) and the broker keeps serving.
#[test]
fn an_offsets_topic_larger_than_the_cluster_waits_for_brokers() {
    let find = |raw: &mut Raw| -> ErrorCode {
        let resp: FindCoordinatorResponse = call(
            raw,
            ApiKey::FindCoordinator,
            4,
            &FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_coordinator_keys(vec![s("g")]),
        )
        .expect("answer");
        code(resp.coordinators[0].error_code)
    };
    let strict = Broker::start(1, &["offsets.topic.replication.factor=3"]);
    let mut raw = Raw::connect(strict.addr());
    assert_eq!(find(&mut raw), ErrorCode::CoordinatorNotAvailable);
    assert_eq!(find(&mut raw), ErrorCode::CoordinatorNotAvailable);
    create_topic(&strict, "still-serving", 1);

    let default = Broker::start(1, &[]);
    let mut raw = Raw::connect(default.addr());
    assert_eq!(find(&mut raw), ErrorCode::None);
}
