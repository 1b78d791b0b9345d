"""kafka-python's admin client moves partition 0 of a topic to new
replicas on a cluster: refusals first (a broker twice, an unknown broker,
a cancellation with nothing to cancel), then the move, listed while it
runs and gone from the list once done, after which the topic's metadata
names the new replicas. Exits non-zero on any mismatch."""

import sys
import time

from kafka import KafkaAdminClient, TopicPartition
from kafka.errors import InvalidReplicationAssignmentError, NoReassignmentInProgressError

bootstrap, topic = sys.argv[1], sys.argv[2]
target = [int(b) for b in sys.argv[3].split(",")]
tp = TopicPartition(topic, 0)

admin = KafkaAdminClient(bootstrap_servers=bootstrap)
refused = {
    "a broker twice": [target[0], target[0]],
    "an unknown broker": [target[0], 97],
}
for why, replicas in refused.items():
    result = admin.alter_partition_reassignments({tp: replicas})
    assert result == {tp: InvalidReplicationAssignmentError}, (why, result)
result = admin.alter_partition_reassignments({tp: None})
assert result == {tp: NoReassignmentInProgressError}, result
assert admin.list_partition_reassignments() == {}

result = admin.alter_partition_reassignments({tp: target})
assert result == {tp: None}, result
deadline = time.time() + 120
while True:
    running = admin.list_partition_reassignments([tp])
    if not running:
        break
    assert set(running) == {tp}, running
    assert running[tp]["replicas"][: len(target)] == target, running
    assert time.time() < deadline, f"still moving: {running}"
    time.sleep(0.2)
while True:
    [described] = admin.describe_topics([topic])
    [p0] = [p for p in described["partitions"] if p["partition_index"] == 0]
    if p0["replica_nodes"] == target and sorted(p0["isr_nodes"]) == sorted(target):
        break
    assert time.time() < deadline, f"metadata still says {p0}"
    time.sleep(0.2)
admin.close()
print(f"kafka-python moved {topic}-0 to {target}")
