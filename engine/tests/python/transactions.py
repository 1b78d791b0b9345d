"""confluent-kafka's transactional producer against a broker.

A committed, an aborted and a committed transaction over two partitions; a
read_committed consumer reads exactly the committed records; a second
producer with the same transactional.id fences the first, whose commit
fails with a fatal (fencing) error.

Usage: transactions.py BOOTSTRAP TOPIC   (TOPIC has two partitions)
"""

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

bootstrap, topic = sys.argv[1], sys.argv[2]


def producer(txn_id):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id})
    p.init_transactions(60)
    return p


def send(p, value):
    for partition in (0, 1):
        for _ in range(5):
            p.produce(topic, value=value, partition=partition)
    p.flush(60)


def read_committed(until):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "py-txn-reader",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in (0, 1)])
    got = []
    deadline = time.time() + 120
    while got.count(until) < 10:
        assert time.time() < deadline, f"read_committed read only {got}"
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m.value().decode())
    c.close()
    return got


p = producer("py-txn")
for value, commit in (("first", True), ("aborted", False), ("second", True)):
    p.begin_transaction()
    send(p, value)
    if commit:
        p.commit_transaction(60)
    else:
        p.abort_transaction(60)
got = read_committed("second")
assert got.count("first") == 10, got
assert "aborted" not in got, got

zombie = producer("py-fenced")
zombie.begin_transaction()
send(zombie, "zombie")
fresh = producer("py-fenced")
fresh.begin_transaction()
send(fresh, "fresh")
fresh.commit_transaction(60)
try:
    zombie.commit_transaction(60)
    raise AssertionError("the zombie's commit was not fenced")
except KafkaException as e:
    assert e.args[0].fatal(), e
got = read_committed("fresh")
assert "zombie" not in got, got
print("confluent-kafka transactions: ok")
