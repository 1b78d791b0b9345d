"""kafka-python's admin client against a Sluice broker: create a topic,
grow it with CreatePartitions, write to and read from a new partition, see
a shrink refused, change the topic's configs, and see its replicas' sizes
in DescribeLogDirs. Exits non-zero on any mismatch."""

import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import InvalidPartitionsError

bootstrap, topic = sys.argv[1], sys.argv[2]

admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
admin.create_partitions({topic: NewPartitions(total_count=4)})
try:
    admin.create_partitions({topic: NewPartitions(total_count=3)})
    raise AssertionError("shrinking to 3 partitions was accepted")
except InvalidPartitionsError:
    pass
described = admin.describe_topics([topic])[0]
assert len(described["partitions"]) == 4, described

changes = {"retention.ms": "7200000", "cleanup.policy": ("APPEND", "compact")}
admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=changes)])
result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
entries = result["topic"][topic]
assert entries["retention.ms"]["value"] == "7200000", entries["retention.ms"]
assert entries["retention.ms"]["config_type"] == "LONG", entries["retention.ms"]
assert entries["cleanup.policy"]["value"] == "delete,compact", entries["cleanup.policy"]
admin.close()

producer = KafkaProducer(bootstrap_servers=bootstrap)
# Compacted now: every record needs a key (INVALID_RECORD otherwise).
md = producer.send(topic, key=b"k", value=b"in the new partition", partition=3).get(timeout=60)
assert (md.partition, md.offset) == (3, 0), md
producer.close()

consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=10000)
assert consumer.partitions_for_topic(topic) == {0, 1, 2, 3}
tp = TopicPartition(topic, 3)
consumer.assign([tp])
consumer.seek_to_beginning(tp)
values = [m.value for m in consumer]
assert values == [b"in the new partition"], values

admin = KafkaAdminClient(bootstrap_servers=bootstrap)
[described] = admin.describe_log_dirs()
[log_dir] = described["log_dirs"]
[listed] = [t for t in log_dir["topics"] if t["name"] == topic]
sizes = {p["partition_index"]: p["partition_size"] for p in listed["partitions"]}
assert sorted(sizes) == [0, 1, 2, 3] and sizes[3] > 0, sizes
admin.close()
print("kafka-python admin: topic grown to 4 partitions")
