//! A consumer whose partitions come from a consumer group, as a Kafka
//! consumer's `subscribe` gives them: the fetch loop of [`Consumer`] plus
//! the membership of [`GroupMember`].
//!
//! Between fetches the consumer heartbeats when due, auto-commits when due,
//! and on a rebalance commits its positions (so the next owner of a
//! partition resumes where it stopped), rejoins, reads the committed offsets
//! of its new partitions, and starts the rest per its reset policy. All on
//! the consumer's own thread, blocking, like the rest of the harness client.

use super::admin::ClusterMetadata;
use super::assignor::Assignment;
use super::consumer::Consumer;
use super::endpoint::Endpoint;
use super::error::ClientError;
use super::group::{GroupMember, GroupTimeouts, Standing};
use crate::measure::clock::Clock;
use crate::measure::recorder::Recorder;
use crate::workload::props::ConsumerSettings;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a member with no partitions waits between membership checks;
/// it has nothing to fetch, so it would otherwise spin.
const IDLE_WAIT_MAX: Duration = Duration::from_millis(100);

pub struct GroupConsumer {
    member: GroupMember,
    consumer: Consumer,
    /// Partitions held in the current generation; `None` until joined and
    /// after a rebalance starts.
    assignment: Option<Assignment>,
    auto_commit: Option<Duration>,
    last_commit: Instant,
    /// `EARLIEST`/`LATEST`: where partitions without a committed offset start.
    reset_at: i64,
    idle_wait: Duration,
    /// Generations this consumer has joined.
    pub joins: u32,
}

impl GroupConsumer {
    /// A consumer of `topics` in group `group_id`. Nothing is sent until the
    /// first [`GroupConsumer::poll`], so many consumers of one group can be
    /// created on one thread and joined from their own.
    pub fn new(
        clock: Clock,
        settings: ConsumerSettings,
        group_id: String,
        topics: Vec<String>,
        md: &ClusterMetadata,
        bootstrap: impl Into<Endpoint>,
        reset_at: i64,
    ) -> Result<GroupConsumer, ClientError> {
        let timeouts = GroupTimeouts {
            session_ms: settings.session_timeout_ms,
            rebalance_ms: settings.max_poll_interval_ms,
            heartbeat_interval: settings.heartbeat_interval(),
        };
        let auto_commit = settings
            .enable_auto_commit
            .then(|| Duration::from_millis(settings.auto_commit_interval_ms));
        let idle_wait = Duration::from_millis(settings.fetch_max_wait_ms as u64).min(IDLE_WAIT_MAX);
        let bootstrap: Endpoint = bootstrap.into();
        let security = settings.security.clone();
        let consumer = Consumer::new(clock, settings, &[], md, bootstrap.clone())?;
        Ok(GroupConsumer {
            member: GroupMember::new(bootstrap, group_id, topics, timeouts).with_security(security),
            consumer,
            assignment: None,
            auto_commit,
            last_commit: Instant::now(),
            reset_at,
            idle_wait,
            joins: 0,
        })
    }

    pub fn group_id(&self) -> &str {
        self.member.group_id()
    }

    /// The generation and partitions held, once joined.
    pub fn assignment(&self) -> Option<(i32, &Assignment)> {
        self.assignment
            .as_ref()
            .map(|a| (self.member.generation(), a))
    }

    /// Every held partition and the next offset to read from it.
    pub fn positions(&self) -> Vec<(String, i32, i64)> {
        self.consumer.positions()
    }

    /// Errors the fetch loop met and survived.
    pub fn client_errors(&mut self) -> &mut Vec<String> {
        &mut self.consumer.client_errors
    }

    /// Keeps the membership current: joins if not in a generation,
    /// heartbeats and auto-commits when due, and rejoins when the group
    /// rebalances.
    pub fn poll(&mut self) -> Result<(), ClientError> {
        if self.assignment.is_none() {
            return self.join();
        }
        if self
            .auto_commit
            .is_some_and(|every| self.last_commit.elapsed() >= every)
            && self.commit()? == Standing::Rejoin
        {
            return self.rejoin();
        }
        if self.member.heartbeat_due() && self.member.heartbeat()? == Standing::Rejoin {
            return self.rejoin();
        }
        Ok(())
    }

    /// Membership, then one fetch round. Returns records consumed.
    pub fn fetch_once(&mut self, rec: &mut Recorder) -> Result<u64, ClientError> {
        self.poll()?;
        if self.assignment.as_ref().is_none_or(|a| a.is_empty()) {
            std::thread::sleep(self.idle_wait);
            return Ok(0);
        }
        self.consumer.fetch_once(rec)
    }

    fn commit(&mut self) -> Result<Standing, ClientError> {
        self.last_commit = Instant::now();
        self.member.commit(&self.consumer.positions())
    }

    /// The partitions are being revoked: commit what was read (when
    /// committing at all), then join the next generation.
    fn rejoin(&mut self) -> Result<(), ClientError> {
        if self.auto_commit.is_some() {
            // A commit refused because the generation moved on is the
            // expected race; the next owner then starts per its reset policy.
            let _ = self.commit()?;
        }
        self.assignment = None;
        self.consumer
            .reassign(&[], &BTreeMap::new(), self.reset_at)?;
        self.join()
    }

    fn join(&mut self) -> Result<(), ClientError> {
        let a = self.member.join()?;
        self.joins += 1;
        let committed = if a.is_empty() {
            BTreeMap::new()
        } else {
            self.member.committed(&a)?
        };
        let partitions: Vec<(String, i32)> = a
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect();
        self.consumer
            .reassign(&partitions, &committed, self.reset_at)?;
        self.last_commit = Instant::now();
        self.assignment = Some(a);
        Ok(())
    }

    /// Commits (when auto-committing) and leaves the group.
    pub fn close(&mut self) -> Result<(), ClientError> {
        if self.assignment.is_some() && self.auto_commit.is_some() {
            self.commit()?;
        }
        self.assignment = None;
        self.member.leave()
    }
}
