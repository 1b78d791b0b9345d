"""librdkafka (through confluent-kafka) with group.protocol=consumer
(KIP-848) against a Sluice broker: two consumers of one group share a
topic, assigned by the broker's `range` assignor, which they ask for with
group.remote.assignor; they read the first half of the messages,
committing synchronously after each; then one closes (a leave, member
epoch -1) and the other takes over its partitions and reads the second
half. Every message must be read exactly once: with a commit after each
read and a planned leave, a repeat or a gap is a defect. The committed
offsets are then the log end offsets. Exits non-zero on any mismatch,
printing the consumers' last group and offset debug lines.

usage: kip848_librdkafka.py BOOTSTRAP TOPIC GROUP COUNT PARTITIONS
"""

import collections
import logging
import os
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

DEADLINE_S = 120

# librdkafka's group and offset debug lines, the last few thousand, shown
# on a failure.
DEBUG_LINES = collections.deque(maxlen=3000)


class Keep(logging.Handler):
    def emit(self, record):
        DEBUG_LINES.append(self.format(record))


LOGGER = logging.getLogger("librdkafka")
LOGGER.addHandler(Keep())
LOGGER.setLevel(logging.DEBUG)
LOGGER.propagate = False


def fail(what):
    print(f"FAIL: {what}", flush=True)
    print("librdkafka's last group and offset lines:", flush=True)
    for line in list(DEBUG_LINES)[-400:]:
        print(line)
    sys.stdout.flush()
    # Leave without closing the consumers: a close can wait for a
    # rebalance that no longer comes.
    os._exit(1)


def produce(bootstrap, topic, start, count, partitions):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    errors = []

    def delivered(err, _msg):
        if err is not None:
            errors.append(err)

    for i in range(start, start + count):
        p.produce(topic, key=f"k{i}", value=f"v{i}", partition=i % partitions, on_delivery=delivered)
        p.poll(0)
    if p.flush(60) != 0 or errors:
        fail(f"produce: {errors or 'not flushed'}")


def consumer(bootstrap, group, name):
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": "consumer",
            "group.remote.assignor": "range",
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "debug": "cgrp,topic",
        },
        logger=LOGGER,
    )


def read_until(consumers, seen, want):
    """Polls every consumer in turn until `want` values were read,
    committing each message before the next poll."""
    deadline = time.monotonic() + DEADLINE_S
    while len(seen) < want:
        if time.monotonic() > deadline:
            fail(f"read {len(seen)} of {want}")
        for name, c in consumers.items():
            m = c.poll(0.1)
            if m is None:
                continue
            if m.error():
                fail(f"{name}: {m.error()}")
            value = m.value().decode()
            if value in seen:
                fail(f"{value} read twice: by {seen[value]} and by {name} at {m.partition()}/{m.offset()}")
            seen[value] = name
            try:
                committed = c.commit(message=m, asynchronous=False)
            except KafkaException as e:
                fail(f"{name} commit: {e}")
            # A synchronous commit raises only for the request as a whole;
            # a partition refused (STALE_MEMBER_EPOCH, say) is in its entry.
            refused = [tp for tp in committed if tp.error is not None]
            if refused:
                fail(f"{name} commit at {m.partition()}/{m.offset()}: {[(tp.partition, str(tp.error)) for tp in refused]}")


def main():
    bootstrap, topic, group, count, partitions = sys.argv[1:6]
    count, partitions = int(count), int(partitions)
    half = count // 2
    produce(bootstrap, topic, 0, half, partitions)
    consumers = {"c1": consumer(bootstrap, group, "c1"), "c2": consumer(bootstrap, group, "c2")}
    for c in consumers.values():
        c.subscribe([topic])
    seen = {}
    read_until(consumers, seen, half)
    # Both members end with a range share of the partitions.
    deadline = time.monotonic() + DEADLINE_S
    while True:
        owned = {n: sorted(tp.partition for tp in c.assignment()) for n, c in consumers.items()}
        if sorted(owned["c1"] + owned["c2"]) == list(range(partitions)) and all(owned.values()):
            break
        if time.monotonic() > deadline:
            fail(f"assignment never settled: {owned}")
        for c in consumers.values():
            c.poll(0.1)
    print(f"assigned {owned}", flush=True)
    if not all(v == list(range(v[0], v[0] + len(v))) for v in owned.values()):
        fail(f"range assignor gives contiguous partitions: {owned}")
    consumers.pop("c2").close()
    produce(bootstrap, topic, half, count - half, partitions)
    read_until(consumers, seen, count)
    c1 = consumers["c1"]
    committed = c1.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
    for tp in committed:
        _, high = c1.get_watermark_offsets(tp, timeout=30)
        if tp.offset != high:
            fail(f"partition {tp.partition} committed at {tp.offset}, ends at {high}")
    c1.close()
    print(f"read {len(seen)} once each", flush=True)
    print("librdkafka consumer protocol: ok", flush=True)


if __name__ == "__main__":
    main()
