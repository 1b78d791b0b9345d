"""kafka-python against a compacted topic: produce ROUNDS rounds of KEYS keys
(value `round-R-of-key-K`) and FILLERS records of keys of their own (so the
rounds lie in sealed segments), then read partition 0 from the beginning to
its end until the cleaner has left one record per key. Every read must show
offsets rising and, for each key, the latest value produced as the last one
seen; the last read must show each key once with its latest value. Exits
non-zero on any mismatch, or when the log is not compacted within the
deadline."""

import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

bootstrap, topic = sys.argv[1], sys.argv[2]
keys, rounds, fillers = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
DEADLINE_S = 150

producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
latest = {}
futures = []
for r in range(rounds):
    for k in range(keys):
        key, value = b"key-%d" % k, b"round-%d-of-key-%d" % (r, k)
        futures.append(producer.send(topic, key=key, value=value, partition=0))
        latest[key] = value
for i in range(fillers):
    key, value = b"filler-%d" % i, b"%040d" % i
    futures.append(producer.send(topic, key=key, value=value, partition=0))
    latest[key] = value
producer.flush(timeout=120)
for f in futures:
    f.get(timeout=60)
producer.close()
print("produced %d records over %d keys" % (len(futures), len(latest)))

tp = TopicPartition(topic, 0)


def read_all():
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    end = consumer.end_offsets([tp])[tp]
    seen = []
    while consumer.position(tp) < end:
        for records in consumer.poll(timeout_ms=1000).values():
            seen.extend((m.offset, m.key, m.value) for m in records)
    consumer.close()
    return seen


start = time.monotonic()
while True:
    seen = read_all()
    last = {}
    for (a, _, _), (b, _, _) in zip(seen, seen[1:]):
        if a >= b:
            sys.exit("offsets do not rise: %d then %d" % (a, b))
    for _, key, value in seen:
        last[key] = value
    for key, value in latest.items():
        if last.get(key) != value:
            sys.exit("latest value of %r: read %r, produced %r" % (key, last.get(key), value))
    if len(seen) == len(latest):
        print("compacted: %d records, one per key" % len(seen))
        break
    if time.monotonic() - start > DEADLINE_S:
        sys.exit("not compacted after %d s: %d records for %d keys" % (DEADLINE_S, len(seen), len(latest)))
    time.sleep(0.5)
