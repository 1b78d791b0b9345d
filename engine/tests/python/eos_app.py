"""An exactly-once consume-transform-produce application through
confluent-kafka (librdkafka) against a Sluice broker, and its checks.

usage:
  eos_app.py produce BOOTSTRAP TOPIC COUNT PARTITIONS
      Writes COUNT records "in-0".."in-{COUNT-1}" (idempotent, acks=all).
  eos_app.py process BOOTSTRAP IN OUT GROUP TXN_ID
      A consume-transform-produce application: reads IN in GROUP
      (read_committed, static member, no auto commit), writes each
      record's value with "out-" in place of "in-" to OUT and commits its
      consumer offsets in the same transaction
      (send_offsets_to_transaction). Exits 0 once its committed position
      reaches the end of every partition of IN. Killing it anywhere must
      lose and repeat nothing.
  eos_app.py verify BOOTSTRAP IN OUT GROUP COUNT
      Reads OUT with read_committed: each of "out-0".."out-{COUNT-1}"
      exactly once, and nothing else; GROUP's committed offsets (asked
      with require_stable, as read_committed consumers do) are IN's end
      offsets.
Exits non-zero on any mismatch.
"""

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

DEADLINE_S = 120
RECORDS_PER_TRANSACTION = 20


def fail(what):
    print(f"FAIL: {what}", flush=True)
    sys.exit(1)


def read_all(bootstrap, topic, partitions, isolation, expected):
    """Reads TOPIC from the start until `expected` records arrived (or the
    deadline passed, or a while went by with the high watermarks reached);
    returns (partition, value) pairs in arrival order."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{isolation}-{time.time_ns()}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    deadline = time.time() + DEADLINE_S
    while len(got) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF, not enabled
                continue
            fail(f"{isolation} consumer: {m.error()}")
        got.append((m.partition(), m.value().decode()))
    # Anything beyond what was expected must not exist either: read on a
    # little past the count, bounded by the end offsets.
    extra_deadline = time.time() + 3
    while time.time() < extra_deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append((m.partition(), m.value().decode()))
    c.close()
    return got


def produce(bootstrap, topic, count, partitions):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    errors = []

    def delivered(err, _msg):
        if err is not None:
            errors.append(err)

    for i in range(count):
        p.produce(topic, value=f"in-{i}", partition=i % partitions, on_delivery=delivered)
        p.poll(0)
    if p.flush(60) != 0 or errors:
        fail(f"produce: {errors or 'not flushed'}")


def end_offsets(consumer, topic):
    meta = consumer.list_topics(topic, timeout=30).topics[topic]
    ends = {}
    for part in meta.partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=30)
        ends[part] = high
    return ends


def process(bootstrap, source, sink, group, txn_id):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.instance.id": f"{txn_id}-member",
            "session.timeout.ms": 30000,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "transaction.timeout.ms": 60000})
    p.init_transactions(60)
    c.subscribe([source])
    ends = end_offsets(c, source)
    deadline = time.time() + DEADLINE_S
    committed = []
    while time.time() < deadline:
        msgs = c.consume(RECORDS_PER_TRANSACTION, 1.0)
        msgs = [m for m in msgs if not m.error()]
        if msgs:
            p.begin_transaction()
            for m in msgs:
                out = m.value().decode().replace("in-", "out-", 1)
                p.produce(sink, value=out, partition=m.partition())
            p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 60)
            p.commit_transaction(60)
            continue
        # Nothing to read: done once the group's committed offsets (a
        # position stays unknown on a partition nothing was read from
        # since the assignment) reach the end of every partition.
        committed = c.committed([TopicPartition(source, q) for q in ends], timeout=30)
        if all(tp.offset >= ends[tp.partition] for tp in committed):
            c.close()
            print("caught up", flush=True)
            return
    fail(f"the application did not catch up before its deadline: ends {ends}, "
         f"committed {[(tp.partition, tp.offset) for tp in committed]}")


def verify(bootstrap, source, sink, group, count):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_committed"})
    ends = end_offsets(c, source)
    committed = c.committed([TopicPartition(source, q) for q in ends], timeout=60)
    got = {tp.partition: tp.offset for tp in committed}
    if got != ends:
        fail(f"committed offsets {got}, wanted the end offsets {ends}")
    c.close()
    partitions = len(ends)
    values = [v for _, v in read_all(bootstrap, sink, partitions, "read_committed", count)]
    want = [f"out-{i}" for i in range(count)]
    if sorted(values) != sorted(want):
        seen = {}
        for v in values:
            seen[v] = seen.get(v, 0) + 1
        repeated = [v for v, n in seen.items() if n > 1]
        missing = [v for v in want if v not in seen]
        fail(f"read {len(values)} of {count}: {len(repeated)} repeated {repeated[:5]}, {len(missing)} missing {missing[:5]}")
    print(f"exactly once: {count} records, offsets {got}")


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    try:
        if mode == "produce":
            produce(args[0], args[1], int(args[2]), int(args[3]))
        elif mode == "process":
            process(*args[:5])
        elif mode == "verify":
            verify(args[0], args[1], args[2], args[3], int(args[4]))
        else:
            fail(f"unknown mode {mode}")
    except KafkaException as e:
        fail(f"{mode}: {e}")


if __name__ == "__main__":
    main()
