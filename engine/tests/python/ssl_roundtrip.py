"""kafka-python over SSL against a Sluice broker: produce COUNT messages
to a new topic through a TLS listener (checking the broker's certificate
against CA_FILE and its host name), consume them back, check every one.
Prints "ok COUNT"; exits non-zero on any mismatch."""

import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

bootstrap, topic, count, cafile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
tls = dict(security_protocol="SSL", ssl_cafile=cafile, ssl_check_hostname=True)

producer = KafkaProducer(bootstrap_servers=bootstrap, **tls)
futures = [producer.send(topic, key=b"k%d" % i, value=b"v%d" % i) for i in range(count)]
producer.flush(timeout=60)
for f in futures:
    f.get(timeout=60)
producer.close()

consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         consumer_timeout_ms=10000, **tls)
tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
consumer.assign(tps)
consumer.seek_to_beginning(*tps)
seen = set()
for m in consumer:
    seen.add(m.value)
    if len(seen) == count:
        break
consumer.close()
want = {b"v%d" % i for i in range(count)}
if seen != want:
    print("missing %d of %d" % (len(want - seen), count))
    sys.exit(1)
print("ok %d" % count)
