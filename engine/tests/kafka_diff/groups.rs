//! Classic group state transitions and their errors: JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, DescribeGroups, OffsetCommit, OffsetFetch and
//! DeleteGroups with unknown groups, members and generations.

use crate::compare::Side;
use crate::records::create_topic;
use crate::{text, topic_name};
use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use std::time::{Duration, Instant};

/// Kafka creates `__consumer_offsets` on the first FindCoordinator and
/// then loads it; until then group calls answer "not available" or "load
/// in progress". Generous, for loaded machines.
const COORDINATOR_DEADLINE: Duration = Duration::from_secs(120);

const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;

fn group(id: &str) -> GroupId {
    GroupId(text(id))
}

/// FindCoordinator for `id`, asked again until the coordinator is there;
/// the final answer is recorded.
fn find_coordinator(side: &mut Side, id: &str) {
    let version = side.v(ApiKey::FindCoordinator);
    let req = if version >= 4 {
        FindCoordinatorRequest::default().with_coordinator_keys(vec![text(id)])
    } else {
        FindCoordinatorRequest::default().with_key(text(id))
    };
    let start = Instant::now();
    loop {
        let resp: FindCoordinatorResponse = side.ask(ApiKey::FindCoordinator, &req);
        let code = if version >= 4 {
            resp.coordinators[0].error_code
        } else {
            resp.error_code
        };
        if code == 0 || start.elapsed() > COORDINATOR_DEADLINE {
            side.record("find coordinator", &resp);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_loaded(side, start);
}

/// Until the coordinator has loaded its partition of `__consumer_offsets`:
/// Kafka names itself coordinator before that, and while loading it
/// answers a Heartbeat with no error, whatever the group, so a scenario
/// must not start earlier. DescribeGroups says COORDINATOR_LOAD_IN_PROGRESS
/// meanwhile.
fn wait_loaded(side: &mut Side, start: Instant) {
    let req = DescribeGroupsRequest::default().with_groups(vec![group("diff-group-probe")]);
    loop {
        let resp: DescribeGroupsResponse = side.ask(ApiKey::DescribeGroups, &req);
        let code = resp.groups[0].error_code;
        let loading = [
            COORDINATOR_LOAD_IN_PROGRESS,
            COORDINATOR_NOT_AVAILABLE,
            NOT_COORDINATOR,
        ]
        .contains(&code);
        assert!(
            start.elapsed() < COORDINATOR_DEADLINE || !loading,
            "{}: the group coordinator did not load in {COORDINATOR_DEADLINE:?}",
            side.name
        );
        if !loading {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Join<'a> {
    group: &'a str,
    member: &'a str,
    session_timeout_ms: i32,
    protocol_type: &'a str,
    protocols: &'a [&'a str],
    instance: Option<&'a str>,
}

impl Join<'_> {
    fn new(group: &str) -> Join<'_> {
        Join {
            group,
            member: "",
            session_timeout_ms: 30_000,
            protocol_type: "consumer",
            protocols: &["range"],
            instance: None,
        }
    }

    fn request(&self) -> JoinGroupRequest {
        JoinGroupRequest::default()
            .with_group_id(group(self.group))
            .with_session_timeout_ms(self.session_timeout_ms)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(text(self.member))
            .with_group_instance_id(self.instance.map(text))
            .with_protocol_type(text(self.protocol_type))
            .with_protocols(
                self.protocols
                    .iter()
                    .map(|p| {
                        JoinGroupRequestProtocol::default()
                            .with_name(text(p))
                            .with_metadata(Bytes::from_static(b"subscription"))
                    })
                    .collect(),
            )
    }
}

/// JoinGroup, asked again while the coordinator is loading.
fn join(side: &mut Side, step: &str, j: &Join) -> JoinGroupResponse {
    let start = Instant::now();
    loop {
        let resp: JoinGroupResponse = side.ask(ApiKey::JoinGroup, &j.request());
        let loading = [
            COORDINATOR_LOAD_IN_PROGRESS,
            COORDINATOR_NOT_AVAILABLE,
            NOT_COORDINATOR,
        ]
        .contains(&resp.error_code);
        if !loading || start.elapsed() > COORDINATOR_DEADLINE {
            side.record(step, &resp);
            return resp;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Joins a new member: the first JoinGroup (v4+) answers MEMBER_ID_REQUIRED
/// with the id to join with. Returns (member id, generation).
fn join_member(side: &mut Side, group_id: &str) -> (String, i32) {
    let first = join(side, "join without a member id", &Join::new(group_id));
    let member = first.member_id.to_string();
    let mut j = Join::new(group_id);
    j.member = &member;
    let second = join(side, "join with the member id", &j);
    assert_eq!(second.error_code, 0, "{}: joining {group_id}", side.name);
    (member, second.generation_id)
}

fn sync(
    side: &mut Side,
    step: &str,
    group_id: &str,
    generation: i32,
    member: &str,
    protocol_type: Option<&str>,
    assign_to: Option<&str>,
) {
    let mut req = SyncGroupRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id(generation)
        .with_member_id(text(member));
    if side.v(ApiKey::SyncGroup) >= 5 {
        req = req
            .with_protocol_type(protocol_type.map(text))
            .with_protocol_name(Some(text("range")));
    }
    if let Some(m) = assign_to {
        req = req.with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(text(m))
            .with_assignment(Bytes::from_static(b"assignment"))]);
    }
    let _: SyncGroupResponse = side.step(step, ApiKey::SyncGroup, &req);
}

fn heartbeat(side: &mut Side, step: &str, group_id: &str, generation: i32, member: &str) {
    heartbeat_as(side, step, group_id, generation, member, None);
}

fn heartbeat_as(
    side: &mut Side,
    step: &str,
    group_id: &str,
    generation: i32,
    member: &str,
    instance: Option<&str>,
) {
    let req = HeartbeatRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id(generation)
        .with_member_id(text(member))
        .with_group_instance_id(instance.map(text));
    let _: HeartbeatResponse = side.step(step, ApiKey::Heartbeat, &req);
}

fn leave(side: &mut Side, step: &str, group_id: &str, members: &[&str]) {
    let mut req = LeaveGroupRequest::default().with_group_id(group(group_id));
    if side.v(ApiKey::LeaveGroup) >= 3 {
        req = req.with_members(
            members
                .iter()
                .map(|m| MemberIdentity::default().with_member_id(text(m)))
                .collect(),
        );
    } else {
        req = req.with_member_id(text(members[0]));
    }
    let _: LeaveGroupResponse = side.step(step, ApiKey::LeaveGroup, &req);
}

fn describe(side: &mut Side, step: &str, groups: &[&str]) {
    let req =
        DescribeGroupsRequest::default().with_groups(groups.iter().map(|g| group(g)).collect());
    let _: DescribeGroupsResponse = side.step(step, ApiKey::DescribeGroups, &req);
}

pub fn join_sync_heartbeat(side: &mut Side) {
    let g = "diff-group-a";
    find_coordinator(side, g);
    let none = "diff-group-none";
    heartbeat(side, "heartbeat, unknown group", none, 1, "nobody");
    sync(
        side,
        "sync, unknown group",
        none,
        1,
        "nobody",
        Some("consumer"),
        None,
    );
    leave(side, "leave, unknown group", none, &["nobody"]);
    describe(side, "describe, unknown group", &[none]);
    let mut j = Join::new(g);
    j.session_timeout_ms = 1000;
    join(side, "join, session timeout below the minimum", &j);
    let mut j = Join::new(g);
    j.session_timeout_ms = 3_600_000;
    join(side, "join, session timeout above the maximum", &j);
    let mut j = Join::new(g);
    j.protocols = &[];
    join(side, "join, no protocols", &j);
    let mut j = Join::new(g);
    j.member = "nobody";
    join(side, "join, unknown member id", &j);
    join(side, "join, empty group id", &Join::new(""));
    let (member, generation) = join_member(side, g);
    let mut j = Join::new(g);
    j.protocol_type = "connect";
    join(side, "join, another protocol type", &j);
    describe(side, "describe, completing rebalance", &[g]);
    heartbeat(
        side,
        "heartbeat, completing rebalance",
        g,
        generation,
        &member,
    );
    sync(
        side,
        "sync, wrong generation",
        g,
        generation + 1,
        &member,
        Some("consumer"),
        None,
    );
    sync(
        side,
        "sync, unknown member",
        g,
        generation,
        "nobody",
        Some("consumer"),
        None,
    );
    sync(
        side,
        "sync, another protocol type",
        g,
        generation,
        &member,
        Some("connect"),
        None,
    );
    sync(
        side,
        "sync",
        g,
        generation,
        &member,
        Some("consumer"),
        Some(&member),
    );
    describe(side, "describe, stable", &[g]);
    heartbeat(side, "heartbeat", g, generation, &member);
    heartbeat(
        side,
        "heartbeat, wrong generation",
        g,
        generation + 1,
        &member,
    );
    heartbeat(side, "heartbeat, unknown member", g, generation, "nobody");
    leave(side, "leave, unknown member", g, &["nobody"]);
    leave(side, "leave", g, &[&member]);
    describe(side, "describe, empty", &[g]);
    heartbeat(side, "heartbeat after leaving", g, generation, &member);
}

fn commit(
    side: &mut Side,
    step: &str,
    group_id: &str,
    generation: i32,
    member: &str,
    topic: &str,
    metadata: &str,
) {
    let partitions = (0..2)
        .map(|p| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(10 + i64::from(p))
                .with_committed_metadata(Some(text(metadata)))
        })
        .collect();
    let req = OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(text(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(partitions)]);
    let _: OffsetCommitResponse = side.step(step, ApiKey::OffsetCommit, &req);
}

/// OffsetFetch of partitions 0..3 of `topic` (all topics when `None`).
fn fetch_offsets(side: &mut Side, step: &str, group_id: &str, topic: Option<&str>) {
    let req = if side.v(ApiKey::OffsetFetch) >= 8 {
        let topics = topic.map(|t| {
            vec![OffsetFetchRequestTopics::default()
                .with_name(topic_name(t))
                .with_partition_indexes(vec![0, 1, 2])]
        });
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(group(group_id))
            .with_topics(topics)])
    } else {
        let topics = topic.map(|t| {
            vec![OffsetFetchRequestTopic::default()
                .with_name(topic_name(t))
                .with_partition_indexes(vec![0, 1, 2])]
        });
        OffsetFetchRequest::default()
            .with_group_id(group(group_id))
            .with_topics(topics)
    };
    let _: OffsetFetchResponse = side.step(step, ApiKey::OffsetFetch, &req);
}

fn delete_groups(side: &mut Side, step: &str, groups: &[&str]) {
    let req =
        DeleteGroupsRequest::default().with_groups_names(groups.iter().map(|g| group(g)).collect());
    let _: DeleteGroupsResponse = side.step(step, ApiKey::DeleteGroups, &req);
}

pub fn offsets(side: &mut Side) {
    let g = "diff-group-offsets";
    let t = "diff-group-offsets-topic";
    create_topic(side, t, 2, &[]);
    find_coordinator(side, g);
    fetch_offsets(side, "fetch, unknown group", "diff-group-none", Some(t));
    commit(side, "commit, no member (simple group)", g, -1, "", t, "m0");
    fetch_offsets(side, "fetch after a simple commit", g, Some(t));
    commit(
        side,
        "commit, unknown topic",
        g,
        -1,
        "",
        "diff-group-no-topic",
        "m",
    );
    commit(
        side,
        "commit, unknown member of an empty group",
        g,
        1,
        "nobody",
        t,
        "m",
    );
    let big = "x".repeat(5000);
    commit(side, "commit, metadata too large", g, -1, "", t, &big);
    describe(side, "describe, simple group", &[g]);
    let (member, generation) = join_member(side, g);
    sync(
        side,
        "sync",
        g,
        generation,
        &member,
        Some("consumer"),
        Some(&member),
    );
    commit(side, "commit, member", g, generation, &member, t, "m1");
    commit(
        side,
        "commit, wrong generation",
        g,
        generation + 1,
        &member,
        t,
        "m",
    );
    commit(
        side,
        "commit, no member to a group with members",
        g,
        -1,
        "",
        t,
        "m",
    );
    commit(
        side,
        "commit, unknown member",
        g,
        generation,
        "nobody",
        t,
        "m",
    );
    fetch_offsets(side, "fetch", g, Some(t));
    fetch_offsets(side, "fetch every topic", g, None);
    delete_groups(side, "delete, not empty", &[g]);
    leave(side, "leave", g, &[&member]);
    delete_groups(side, "delete, unknown and empty", &["diff-group-none", g]);
    fetch_offsets(side, "fetch after delete", g, Some(t));
    describe(side, "describe after delete", &[g]);
    if side.versions.both_speak(ApiKey::DeleteGroups, 3) {
        use sluice_protocol::delete_groups as v3;
        let req = v3::DeleteGroupsRequest {
            groups_names: vec!["diff-group-none".into(), g.into(), g.into()],
        };
        let body = side.ask_bytes(ApiKey::DeleteGroups, 3, &req.encode());
        let resp = v3::DeleteGroupsResponse::decode(&body).expect("a v3 DeleteGroups answer");
        side.record("delete v3, unknown and deleted (named twice)", &resp);
    }
}

/// Static membership (`group.instance.id`, JoinGroup v5+): a static member
/// joins without MEMBER_ID_REQUIRED, and a new member id for the same
/// instance fences the old one.
pub fn static_members(side: &mut Side) {
    if side.v(ApiKey::JoinGroup) < 5 {
        return;
    }
    let g = "diff-group-static";
    find_coordinator(side, g);
    let mut j = Join::new(g);
    j.instance = Some("instance-1");
    let first = join(side, "join as a static member", &j);
    let (old, generation) = (first.member_id.to_string(), first.generation_id);
    sync(
        side,
        "sync",
        g,
        generation,
        &old,
        Some("consumer"),
        Some(&old),
    );
    heartbeat_as(side, "heartbeat", g, generation, &old, Some("instance-1"));
    let again = join(side, "join again, same instance, no member id", &j);
    let new = again.member_id.to_string();
    heartbeat_as(
        side,
        "heartbeat of the replaced member",
        g,
        generation,
        &old,
        Some("instance-1"),
    );
    heartbeat_as(
        side,
        "heartbeat of the new member",
        g,
        again.generation_id,
        &new,
        Some("instance-1"),
    );
    heartbeat_as(
        side,
        "heartbeat, another instance id",
        g,
        again.generation_id,
        &new,
        Some("instance-2"),
    );
    describe(side, "describe", &[g]);
    let req = LeaveGroupRequest::default()
        .with_group_id(group(g))
        .with_members(vec![MemberIdentity::default()
            .with_member_id(text(""))
            .with_group_instance_id(Some(text("instance-1")))]);
    if side.v(ApiKey::LeaveGroup) >= 3 {
        let _: LeaveGroupResponse = side.step("leave by instance id", ApiKey::LeaveGroup, &req);
        describe(side, "describe after leaving", &[g]);
    }
}

/// ListGroups, cut to this test's groups (the broker may hold others).
fn list_groups(side: &mut Side, step: &str, states: &[&str]) {
    let mut req = ListGroupsRequest::default();
    if side.v(ApiKey::ListGroups) >= 4 {
        req = req.with_states_filter(states.iter().map(|s| text(s)).collect());
    }
    let mut resp: ListGroupsResponse = side.ask(ApiKey::ListGroups, &req);
    resp.groups
        .retain(|g| g.group_id.0.as_str().starts_with("diff-group-listed"));
    resp.groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    side.record(step, &resp);
}

fn delete_offsets(side: &mut Side, step: &str, group_id: &str, topic: &str, partitions: &[i32]) {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let req = OffsetDeleteRequest::default()
        .with_group_id(group(group_id))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| OffsetDeleteRequestPartition::default().with_partition_index(*p))
                    .collect(),
            )]);
    let _: OffsetDeleteResponse = side.step(step, ApiKey::OffsetDelete, &req);
}

/// ListGroups with and without a state filter, DescribeGroups of several
/// groups at once, OffsetDelete, and commits to partitions that do not
/// exist.
pub fn listed(side: &mut Side) {
    let (empty, stable) = ("diff-group-listed-empty", "diff-group-listed-stable");
    let t = "diff-group-listed-topic";
    create_topic(side, t, 2, &[]);
    find_coordinator(side, empty);
    find_coordinator(side, stable);
    commit(side, "commit to the empty group", empty, -1, "", t, "m");
    let (member, generation) = join_member(side, stable);
    sync(
        side,
        "sync",
        stable,
        generation,
        &member,
        Some("consumer"),
        Some(&member),
    );
    list_groups(side, "list", &[]);
    list_groups(side, "list Stable", &["Stable"]);
    list_groups(side, "list Empty and Dead", &["Empty", "Dead"]);
    list_groups(side, "list an unknown state", &["Sleeping"]);
    describe(
        side,
        "describe several",
        &[stable, "diff-group-none", empty],
    );
    let req = OffsetCommitRequest::default()
        .with_group_id(group(empty))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(text(""))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(t))
            .with_partitions(
                [5, -1]
                    .iter()
                    .map(|p| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(1)
                    })
                    .collect(),
            )]);
    let _: OffsetCommitResponse = side.step(
        "commit to partitions that do not exist",
        ApiKey::OffsetCommit,
        &req,
    );
    delete_offsets(side, "delete offsets", empty, t, &[0]);
    fetch_offsets(side, "fetch after deleting offsets", empty, Some(t));
    delete_offsets(
        side,
        "delete offsets, unknown group",
        "diff-group-none",
        t,
        &[0],
    );
    delete_offsets(
        side,
        "delete offsets, unknown topic",
        empty,
        "diff-group-no-topic",
        &[0],
    );
    leave(side, "leave", stable, &[&member]);
}

/// A consumer-protocol group (KIP-848): a member joins with a
/// subscription and is given every partition, heartbeats with a stale
/// epoch and an unknown member id are refused, the group is described,
/// and the member leaves.
pub fn consumer_protocol(side: &mut Side) {
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    let id = "diff-cg";
    let t = create_topic(side, "diff-cg-topic", 2, &[]);
    crate::admin::wait_leaders(side, &t.name, 2);
    find_coordinator(side, id);
    let member = "diff-cg-member-0000000001";
    let beat = |member: &str, epoch: i32| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group(id))
            .with_member_id(text(member))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(-1)
    };
    let join = beat(member, 0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![topic_name(&t.name)]))
        .with_topic_partitions(Some(Vec::new()));
    // The assignment may come with the first answer or a later one.
    let mut resp: ConsumerGroupHeartbeatResponse = side.ask(ApiKey::ConsumerGroupHeartbeat, &join);
    let start = Instant::now();
    while resp.error_code == 0
        && resp.assignment.is_none()
        && start.elapsed() < COORDINATOR_DEADLINE
    {
        std::thread::sleep(Duration::from_millis(100));
        resp = side.ask(
            ApiKey::ConsumerGroupHeartbeat,
            &beat(member, resp.member_epoch),
        );
    }
    side.record("join: every partition assigned", &resp);
    let epoch = resp.member_epoch;
    let owned = resp.assignment.as_ref().map(|a| {
        a.topic_partitions
            .iter()
            .map(|tp| {
                TopicPartitions::default()
                    .with_topic_id(tp.topic_id)
                    .with_partitions(tp.partitions.clone())
            })
            .collect()
    });
    side.step::<_, ConsumerGroupHeartbeatResponse>(
        "heartbeat owning the assignment",
        ApiKey::ConsumerGroupHeartbeat,
        &beat(member, epoch).with_topic_partitions(owned),
    );
    side.step::<_, ConsumerGroupHeartbeatResponse>(
        "an epoch from the future",
        ApiKey::ConsumerGroupHeartbeat,
        &beat(member, epoch + 5),
    );
    side.step::<_, ConsumerGroupHeartbeatResponse>(
        "an unknown member",
        ApiKey::ConsumerGroupHeartbeat,
        &beat("diff-cg-member-0000000002", 3),
    );
    let describe = ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec![group(id), group("diff-cg-none")]);
    side.step::<_, ConsumerGroupDescribeResponse>(
        "described",
        ApiKey::ConsumerGroupDescribe,
        &describe,
    );
    side.step::<_, ConsumerGroupHeartbeatResponse>(
        "the member leaves",
        ApiKey::ConsumerGroupHeartbeat,
        &beat(member, -1),
    );
}
