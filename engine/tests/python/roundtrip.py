"""kafka-python round trip against a Sluice broker: produce keyed messages
with headers (idempotent producer, kafka-python's default), consume them back
from assigned partitions, check every one. Exits non-zero on any mismatch."""

import sys

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
seen = 0
for m in consumer:
    i = placed.get((m.partition, m.offset))
    assert i is not None, "unexpected record at %d/%d" % (m.partition, m.offset)
    assert m.key == b"k%d" % i, (m.key, i)
    assert m.value == b"v%d" % i, (m.value, i)
    assert m.headers == [("i", str(i).encode())], m.headers
    seen += 1
    if seen == count:
        break
assert seen == count, "consumed %d of %d" % (seen, count)
print("kafka-python round trip: %d messages" % seen)
