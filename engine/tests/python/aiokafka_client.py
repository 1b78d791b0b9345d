"""aiokafka against a Sluice broker: its admin client creates a topic, an
idempotent acks=all producer sends keyed messages with headers once per
codec, a consumer group reads every one back and commits, and a second
member of the group then finds the committed offsets at the end of every
partition. Exits non-zero on any mismatch.

usage: aiokafka_client.py BOOTSTRAP TOPIC COUNT_PER_CODEC
"""

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3


async def create_topic(bootstrap, topic):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)]
        )
        listed = await admin.list_topics()
        assert topic in listed, listed
    finally:
        await admin.close()


async def produce(bootstrap, topic, count):
    """Sends `count` messages per codec; returns {(partition, offset): i}."""
    placed = {}
    i = 0
    for codec in CODECS:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            compression_type=codec,
            linger_ms=5,
        )
        await producer.start()
        try:
            sends = []
            for _ in range(count):
                sends.append(
                    (
                        i,
                        await producer.send(
                            topic,
                            key=b"k%d" % i,
                            value=b"v%d-%s" % (i, (codec or "none").encode()),
                            headers=[("i", str(i).encode())],
                        ),
                    )
                )
                i += 1
            for n, fut in sends:
                md = await fut
                assert (md.partition, md.offset) not in placed, md
                placed[(md.partition, md.offset)] = n
        finally:
            await producer.stop()
    return placed


def check(m, placed):
    n = placed.get((m.partition, m.offset))
    assert n is not None, "unexpected record at %d/%d" % (m.partition, m.offset)
    assert m.key == b"k%d" % n, (m.key, n)
    assert m.value.startswith(b"v%d-" % n), (m.value, n)
    assert list(m.headers) == [("i", str(n).encode())], m.headers


async def consume_in_group(bootstrap, topic, placed):
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="aiokafka-group",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        last = {}
        seen = 0
        while seen < len(placed):
            batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 60)
            for tp, messages in batches.items():
                for m in messages:
                    check(m, placed)
                    # Per-partition order: offsets only grow.
                    assert m.offset > last.get(tp.partition, -1), (tp, m.offset)
                    last[tp.partition] = m.offset
                    seen += 1
        assert seen == len(placed), "consumed %d of %d" % (seen, len(placed))
        await consumer.commit()
        ends = await consumer.end_offsets(
            [TopicPartition(topic, p) for p in range(PARTITIONS)]
        )
        return ends
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap, topic):
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id="aiokafka-group",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        return {
            p: await consumer.committed(TopicPartition(topic, p))
            for p in range(PARTITIONS)
        }
    finally:
        await consumer.stop()


async def main():
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    await create_topic(bootstrap, topic)
    placed = await produce(bootstrap, topic, count)
    assert len(placed) == count * len(CODECS)
    for p in range(PARTITIONS):
        offsets = sorted(o for (q, o) in placed if q == p)
        assert offsets == list(range(len(offsets))), "partition %d not contiguous" % p
    ends = await consume_in_group(bootstrap, topic, placed)
    committed = await committed_offsets(bootstrap, topic)
    for tp, end in ends.items():
        assert committed[tp.partition] == end, (tp, committed, end)
    print("aiokafka: %d messages over %d codecs, committed %s" % (len(placed), len(CODECS), committed))


asyncio.run(main())
