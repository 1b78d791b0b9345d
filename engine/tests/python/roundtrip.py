"""kafka-python round trip against a Sluice broker: produce keyed messages
with headers (idempotent producer, kafka-python's default), consume them back
from assigned partitions to each partition's end, check every one: each
acknowledged record read exactly once, nothing else in the log. Exits
non-zero on any mismatch."""

import sys
from collections import Counter

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
compression = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "none" else None

producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=compression)
futures = [
    producer.send(topic, key=b"k%d" % i, value=b"v%d" % i, headers=[("i", str(i).encode())])
    for i in range(count)
]
producer.flush(timeout=60)
placed = {}
for i, f in enumerate(futures):
    md = f.get(timeout=60)
    placed[(md.partition, md.offset)] = i
producer.close()

consumer = KafkaConsumer(
    bootstrap_servers=bootstrap,
    enable_auto_commit=False,
    consumer_timeout_ms=10000,
)
partitions = consumer.partitions_for_topic(topic)
tps = [TopicPartition(topic, p) for p in sorted(partitions)]
consumer.assign(tps)
consumer.seek_to_beginning(*tps)

# Each partition must end right after the last acknowledged record: a record
# the broker stored beyond them (a duplicate append, say) moves the end.
ends = {tp.partition: end for tp, end in consumer.end_offsets(tps).items()}
want_ends = {p: 0 for p in partitions}
for partition, offset in placed:
    want_ends[partition] = max(want_ends[partition], offset + 1)
assert ends == want_ends, "end offsets %s, acknowledged up to %s" % (ends, want_ends)

# Read every partition to its end, keeping every record, so that a record
# read twice and one never read do not cancel out in a count.
consumed = []
next_offset = {p: 0 for p in partitions}
for m in consumer:
    consumed.append(m)
    next_offset[m.partition] = max(next_offset[m.partition], m.offset + 1)
    if all(next_offset[p] >= ends[p] for p in partitions):
        break
at = Counter((m.partition, m.offset) for m in consumed)
twice = sorted(k for k, n in at.items() if n > 1)
assert not twice, "records read more than once: %s" % twice[:10]
for m in consumed:
    i = placed.get((m.partition, m.offset))
    assert i is not None, "unexpected record at %d/%d" % (m.partition, m.offset)
    assert m.key == b"k%d" % i, (m.key, i)
    assert m.value == b"v%d" % i, (m.value, i)
    assert m.headers == [("i", str(i).encode())], m.headers
values = Counter(m.value for m in consumed)
want = Counter(b"v%d" % i for i in range(count))
assert values == want, "missing %s, extra %s" % (
    sorted((want - values).elements())[:10],
    sorted((values - want).elements())[:10],
)
print("kafka-python round trip: %d messages" % len(consumed))
