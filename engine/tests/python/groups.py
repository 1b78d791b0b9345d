"""kafka-python consumer group against a Sluice broker: two KafkaConsumers
with the same group_id share a topic (each in its own thread, as an
application would run them), consume every message, commit synchronously
after each batch, and a third consumer of the group reads the committed
offsets back. Each message is read once, except Kafka's at-least-once
redelivery: a rebalance nobody planned (a member late to heartbeat on a
loaded machine) fails the commit of the batch in hand, and its new owner
reads that batch again from the last commit. So an offset may be read
again only after a rebalance that came after its first read, and no more
offsets than MAX_POLL_RECORDS per failed commit. Exits non-zero on any
mismatch; prints one `committed PARTITION OFFSET` line per partition for
the caller to check.

usage: groups.py BOOTSTRAP TOPIC GROUP COUNT PARTITIONS
"""

import sys
import threading
import time

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError

bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
count, partitions = int(sys.argv[4]), int(sys.argv[5])
DEADLINE_S = 90
MAX_POLL_RECORDS = 500

lock = threading.Lock()
seen = {}  # (partition, offset) -> consumer name
read_at = {}  # (partition, offset) -> rebalances completed when it was read
rebalances = 0  # assignments any member received
failed_commits = 0
redelivered = []
duplicates = []
assignments = {}  # consumer name -> set of partitions
failures = []
stop = threading.Event()


def consumer_config(name):
    return dict(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=name,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        max_poll_interval_ms=60000,
        max_poll_records=MAX_POLL_RECORDS,
    )


class CountRebalances(ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        global rebalances
        with lock:
            rebalances += 1


def record(name, key):
    """Notes that `name` read `key` (partition, offset); `lock` is held."""
    if key in seen:
        what = (key, seen[key], name)
        if read_at[key] < rebalances:
            redelivered.append(what)
        else:
            duplicates.append(what)
    seen[key] = name
    read_at[key] = rebalances


def run_consumer(name):
    try:
        global failed_commits
        consumer = KafkaConsumer(**consumer_config(name))
        consumer.subscribe(topics=[topic], listener=CountRebalances())
        while not stop.is_set():
            batches = consumer.poll(timeout_ms=200)
            with lock:
                assignments[name] = {tp.partition for tp in consumer.assignment()}
                for tp, records in batches.items():
                    for r in records:
                        record(name, (r.partition, r.offset))
            if batches:
                try:
                    consumer.commit()
                except CommitFailedError:
                    # The group rebalanced under this batch: its new owner
                    # reads it again from the last commit.
                    with lock:
                        failed_commits += 1
        consumer.close(autocommit=False)
    except Exception as e:  # surfaced by the main thread
        failures.append("%s: %r" % (name, e))


def wait_for(what, condition):
    start = time.time()
    while True:
        with lock:
            if failures:
                raise SystemExit("consumer failed: %s" % failures)
            if condition():
                return
        if time.time() - start > DEADLINE_S:
            with lock:
                raise SystemExit(
                    "%s: not reached; assignments %s, consumed %d"
                    % (what, assignments, len(seen))
                )
        time.sleep(0.1)


def balanced():
    sets = list(assignments.values())
    union = set().union(*sets) if sets else set()
    return (
        len(sets) == 2
        and all(len(s) == partitions // 2 for s in sets)
        and union == set(range(partitions))
    )


threads = [threading.Thread(target=run_consumer, args=("py-%d" % n,)) for n in (1, 2)]
for t in threads:
    t.start()
try:
    # Produce only once the group is settled, so that no rebalance can
    # hand a partition over between a fetch and its commit.
    wait_for("two members with half the partitions each", balanced)

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    futures = [
        producer.send(topic, value=b"m%d" % i, partition=i % partitions)
        for i in range(count)
    ]
    producer.flush(timeout=60)
    placed = {}
    for i, f in enumerate(futures):
        md = f.get(timeout=60)
        placed[(md.partition, md.offset)] = i
    producer.close()

    wait_for("every message consumed", lambda: len(seen) >= count)
finally:
    stop.set()
    for t in threads:
        t.join(timeout=60)

assert not failures, failures
assert not duplicates, "consumed twice with no rebalance between: %s" % duplicates[:10]
if redelivered:
    print(
        "redelivered after %d failed commits: %d offsets, e.g. %s"
        % (failed_commits, len(redelivered), redelivered[:3])
    )
assert len(redelivered) <= failed_commits * MAX_POLL_RECORDS, (
    "%d offsets redelivered, more than %d failed commits allow"
    % (len(redelivered), failed_commits)
)
assert set(seen) == set(placed), "consumed %d of %d" % (len(seen), count)
by_consumer = {}
for (p, _), name in seen.items():
    by_consumer.setdefault(name, set()).add(p)
assert len(by_consumer) == 2, "one consumer did all the work: %s" % by_consumer
if not redelivered:
    assert by_consumer["py-1"].isdisjoint(by_consumer["py-2"]), by_consumer

end = {}
for (p, o) in placed:
    end[p] = max(end.get(p, 0), o + 1)
reader = KafkaConsumer(**consumer_config("py-reader"))
for p in range(partitions):
    committed = reader.committed(TopicPartition(topic, p))
    assert committed == end[p], "partition %d: committed %s, log end %d" % (
        p,
        committed,
        end[p],
    )
    print("committed %d %d" % (p, committed))
reader.close(autocommit=False)
print("kafka-python group: %d messages over %s" % (len(seen), sorted(by_consumer)))
