//! Incremental fetch sessions (KIP-227). A client that opens a session
//! sends its partitions once; later fetches name only the partitions whose
//! position changed, plus those to drop, and the answer carries only the
//! partitions with news: records, a new high watermark or log start, or
//! an error. A follower or consumer with many quiet partitions then sends
//! and parses a few entries per fetch instead of all of them.
//!
//! A connection keeps at most one session, and a session lives only on
//! the connection that opened it. Clients use one connection per broker,
//! and a client that reconnects is told FETCH_SESSION_ID_NOT_FOUND and
//! starts a new session with a full fetch, as the protocol provides.

use sluice_protocol::ErrorCode;
use std::cell::Cell;
use std::collections::HashMap;

/// A request's session id and epoch that open no session (KIP-227's
/// FINAL_EPOCH with no id): a full, sessionless fetch.
pub const FINAL_EPOCH: i32 = -1;
const INITIAL_EPOCH: i32 = 0;

/// What the session remembers of one partition: the position the client
/// asked for last, and what it was last told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<P> {
    pub topic: String,
    pub partition: i32,
    /// The request fields of this partition, as last sent.
    pub ask: P,
    sent_high_watermark: i64,
    sent_last_stable: i64,
    sent_log_start: i64,
}

/// One connection's fetch session.
#[derive(Debug)]
pub struct Session<P> {
    id: i32,
    /// The epoch the next incremental fetch must carry.
    next_epoch: i32,
    entries: Vec<Entry<P>>,
    index: HashMap<(String, i32), usize>,
}

/// How a request is to be answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// Every partition asked for, no session: `session_id` 0.
    Sessionless,
    /// Every partition; the session `id` starts here.
    Full { id: i32 },
    /// Only the session's partitions with news.
    Incremental { id: i32 },
}

/// A partition of a request: its key and request fields.
pub type Ask<P> = ((String, i32), P);

/// The partitions a request is to read, in session order when it has one.
pub struct Plan<P> {
    pub kind: Kind,
    pub asks: Vec<Ask<P>>,
}

thread_local! {
    /// Session ids handed out by this shard (each shard is a thread).
    static NEXT_ID: Cell<i32> = const { Cell::new(1) };
}

/// A new session id: unique per shard, with the shard's number in the low
/// bits so two shards' ids differ too; never 0.
fn new_id(shard: usize) -> i32 {
    NEXT_ID.with(|n| {
        let v = n.get();
        n.set(if v >= (i32::MAX >> 6) { 1 } else { v + 1 });
        (v << 6) | (shard as i32 & 63)
    })
}

/// Applies a request's session fields to `slot`, the connection's session,
/// and says what to read: a full fetch of `asks` (opening a session when
/// the epoch is 0), or an incremental one over the session after `asks`
/// are added or updated and `forgotten` dropped. Errors are the response's
/// top-level error code.
pub fn plan<P: Clone>(
    slot: &mut Option<Session<P>>,
    shard: usize,
    (session_id, epoch): (i32, i32),
    asks: Vec<Ask<P>>,
    forgotten: &[(String, i32)],
) -> Result<Plan<P>, ErrorCode> {
    if epoch == FINAL_EPOCH || epoch == INITIAL_EPOCH {
        // Closes the session named, if it is this connection's.
        if session_id != 0 && slot.as_ref().is_some_and(|s| s.id == session_id) {
            *slot = None;
        }
        if epoch == FINAL_EPOCH {
            return Ok(Plan {
                kind: Kind::Sessionless,
                asks,
            });
        }
        let id = new_id(shard);
        let mut s = Session {
            id,
            next_epoch: 1,
            entries: Vec::with_capacity(asks.len()),
            index: HashMap::with_capacity(asks.len()),
        };
        for (key, ask) in &asks {
            s.upsert(key, ask.clone());
        }
        *slot = Some(s);
        return Ok(Plan {
            kind: Kind::Full { id },
            asks,
        });
    }
    let s = match slot.as_mut() {
        Some(s) if s.id == session_id && session_id != 0 => s,
        _ => return Err(ErrorCode::FetchSessionIdNotFound),
    };
    if epoch != s.next_epoch {
        return Err(ErrorCode::InvalidFetchSessionEpoch);
    }
    s.next_epoch = if s.next_epoch == i32::MAX {
        1
    } else {
        s.next_epoch + 1
    };
    for key in forgotten {
        s.remove(key);
    }
    for (key, ask) in asks {
        s.upsert(&key, ask);
    }
    Ok(Plan {
        kind: Kind::Incremental { id: s.id },
        asks: s
            .entries
            .iter()
            .map(|e| ((e.topic.clone(), e.partition), e.ask.clone()))
            .collect(),
    })
}

impl<P> Session<P> {
    fn upsert(&mut self, key: &(String, i32), ask: P) {
        match self.index.get(key) {
            Some(&i) => self.entries[i].ask = ask,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push(Entry {
                    topic: key.0.clone(),
                    partition: key.1,
                    ask,
                    sent_high_watermark: -1,
                    sent_last_stable: -1,
                    sent_log_start: -1,
                });
            }
        }
    }

    fn remove(&mut self, key: &(String, i32)) {
        if let Some(i) = self.index.remove(key) {
            self.entries.remove(i);
            for (j, e) in self.entries.iter().enumerate().skip(i) {
                self.index.insert((e.topic.clone(), e.partition), j);
            }
        }
    }

    /// Whether an incremental response must carry this partition, given
    /// what it would say: `always` for records or an error, else only a
    /// high watermark, last stable offset or log start the client was not
    /// told (`marks`, in that order). Remembers what
    /// is sent; full responses call it too, so the session starts from what
    /// the client was told.
    pub fn must_send(&mut self, key: &(String, i32), always: bool, marks: (i64, i64, i64)) -> bool {
        let (high_watermark, last_stable, log_start) = marks;
        let Some(&i) = self.index.get(key) else {
            return true;
        };
        let e = &mut self.entries[i];
        let news = always
            || e.sent_high_watermark != high_watermark
            || e.sent_last_stable != last_stable
            || e.sent_log_start != log_start;
        if news {
            e.sent_high_watermark = high_watermark;
            e.sent_last_stable = last_stable;
            e.sent_log_start = log_start;
        }
        news
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(t: &str, p: i32, offset: i64) -> Ask<i64> {
        ((t.to_string(), p), offset)
    }

    fn offsets(plan: &Plan<i64>) -> Vec<(String, i32, i64)> {
        plan.asks
            .iter()
            .map(|((t, p), o)| (t.clone(), *p, *o))
            .collect()
    }

    #[test]
    fn a_session_remembers_positions_and_takes_changes_and_drops() {
        let mut slot = None;
        let full = plan(
            &mut slot,
            0,
            (0, 0),
            vec![ask("a", 0, 10), ask("a", 1, 20), ask("b", 0, 5)],
            &[],
        )
        .unwrap();
        let Kind::Full { id } = full.kind else {
            panic!("{:?}", full.kind)
        };
        assert_ne!(id, 0);
        // Only a-1 moved; b-0 is dropped; c-0 is new.
        let inc = plan(
            &mut slot,
            0,
            (id, 1),
            vec![ask("a", 1, 25), ask("c", 0, 0)],
            &[("b".into(), 0)],
        )
        .unwrap();
        assert_eq!(inc.kind, Kind::Incremental { id });
        assert_eq!(
            offsets(&inc),
            vec![("a".into(), 0, 10), ("a".into(), 1, 25), ("c".into(), 0, 0)]
        );
        assert_eq!(slot.as_ref().unwrap().entries.len(), 3);
    }

    #[test]
    fn wrong_ids_and_epochs_are_refused_and_final_epoch_closes() {
        let mut slot = None;
        assert_eq!(
            plan(&mut slot, 0, (77, 1), vec![ask("a", 0, 0)], &[]).err(),
            Some(ErrorCode::FetchSessionIdNotFound)
        );
        let Kind::Full { id } = plan(&mut slot, 1, (0, 0), vec![ask("a", 0, 0)], &[])
            .unwrap()
            .kind
        else {
            panic!()
        };
        assert_eq!(
            plan(&mut slot, 1, (id, 2), vec![], &[]).err(),
            Some(ErrorCode::InvalidFetchSessionEpoch)
        );
        assert!(plan(&mut slot, 1, (id, 1), vec![], &[]).is_ok());
        assert_eq!(
            plan(&mut slot, 1, (id, 1), vec![], &[]).err(),
            Some(ErrorCode::InvalidFetchSessionEpoch),
            "an epoch is used once"
        );
        let closed = plan(&mut slot, 1, (id, FINAL_EPOCH), vec![ask("z", 0, 3)], &[]).unwrap();
        assert_eq!(closed.kind, Kind::Sessionless);
        assert_eq!(offsets(&closed), vec![("z".into(), 0, 3)]);
        assert!(slot.is_none());
        assert_eq!(
            plan(&mut slot, 1, (id, 2), vec![], &[]).err(),
            Some(ErrorCode::FetchSessionIdNotFound)
        );
    }

    #[test]
    fn only_news_is_sent_again() {
        let mut slot = None;
        plan(&mut slot, 0, (0, 0), vec![ask("a", 0, 0)], &[]).unwrap();
        let s = slot.as_mut().unwrap();
        let key = ("a".to_string(), 0);
        assert!(s.must_send(&key, false, (100, 100, 0)), "first answer");
        assert!(!s.must_send(&key, false, (100, 100, 0)), "nothing new");
        assert!(
            s.must_send(&key, true, (100, 100, 0)),
            "records or an error"
        );
        assert!(s.must_send(&key, false, (101, 100, 0)), "high watermark");
        assert!(
            s.must_send(&key, false, (101, 101, 0)),
            "last stable offset"
        );
        assert!(s.must_send(&key, false, (101, 101, 7)), "log start");
        assert!(!s.must_send(&key, false, (101, 101, 7)), "told already");
        assert!(s.must_send(&("b".into(), 0), false, (0, 0, 0)), "unknown");
    }

    #[test]
    fn ids_differ_between_shards_and_are_never_zero() {
        let a: Vec<i32> = (0..100).map(|_| new_id(0)).collect();
        let b: Vec<i32> = (0..100).map(|_| new_id(1)).collect();
        assert!(a.iter().chain(&b).all(|&id| id > 0));
        assert!(a.iter().all(|id| !b.contains(id)));
    }
}
