"""Transactions through aiokafka or kafka-python against a sluice broker.

A transactional producer commits a transaction, aborts one and commits
another; a read_committed consumer reads exactly the committed messages, a
read_uncommitted one reads them all. Exits non-zero on any difference.

usage: txn_clients.py aiokafka|kafka-python BOOTSTRAP TOPIC MESSAGES_PER_TRANSACTION
"""

import asyncio
import sys
import time

TRANSACTIONS = [("first", True), ("aborted", False), ("second", True)]
DEADLINE = 120


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def messages(prefix, n):
    return [f"{prefix}-{i}".encode() for i in range(n)]


def check(client, committed, everything, n):
    want = sorted(v for prefix, commit in TRANSACTIONS if commit for v in messages(prefix, n))
    if committed != want:
        fail(f"read_committed read {len(committed)}: {committed}, want {len(want)}: {want}")
    print(f"read_committed: {len(committed)} messages, the aborted ones absent")
    aborted = sum(1 for v in everything if v.startswith(b"aborted-"))
    if len(everything) != 3 * n or aborted != n:
        fail(f"read_uncommitted read {len(everything)} ({aborted} aborted), want {3 * n} ({n})")
    print(f"read_uncommitted: {len(everything)} messages, the aborted ones included")
    print(f"{client} transactions: ok")


async def with_aiokafka(bootstrap, topic, n):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"{topic}-producer", enable_idempotence=True
    )
    await producer.start()
    try:
        for prefix, commit in TRANSACTIONS:
            if commit:
                async with producer.transaction():
                    for v in messages(prefix, n):
                        await producer.send(topic, v)
            else:
                await producer.begin_transaction()
                sent = [await producer.send(topic, v) for v in messages(prefix, n)]
                await asyncio.gather(*sent)
                await producer.abort_transaction()
            print(f"producer: transaction {prefix} {'committed' if commit else 'aborted'}")
    finally:
        await producer.stop()

    async def consume(isolation, want):
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level=isolation,
        )
        await consumer.start()
        got = []
        try:
            deadline = time.monotonic() + DEADLINE
            while len(got) < want:
                if time.monotonic() > deadline:
                    fail(f"{isolation}: {len(got)} of {want} messages read")
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    got.extend(r.value for r in records)
        finally:
            await consumer.stop()
        return sorted(got)

    committed = await consume("read_committed", 2 * n)
    everything = await consume("read_uncommitted", 3 * n)
    check("aiokafka", committed, everything, n)


def with_kafka_python(bootstrap, topic, n):
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-producer")
    producer.init_transactions()
    for prefix, commit in TRANSACTIONS:
        producer.begin_transaction()
        futures = [producer.send(topic, v) for v in messages(prefix, n)]
        producer.flush()
        for f in futures:
            f.get(timeout=DEADLINE)
        if commit:
            producer.commit_transaction()
        else:
            producer.abort_transaction()
        print(f"producer: transaction {prefix} {'committed' if commit else 'aborted'}")
    producer.close()

    def consume(isolation, want):
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level=isolation,
        )
        got = []
        deadline = time.monotonic() + DEADLINE
        while len(got) < want:
            if time.monotonic() > deadline:
                fail(f"{isolation}: {len(got)} of {want} messages read")
            for records in consumer.poll(timeout_ms=1000).values():
                got.extend(r.value for r in records)
        consumer.close()
        return sorted(got)

    committed = consume("read_committed", 2 * n)
    everything = consume("read_uncommitted", 3 * n)
    check("kafka-python", committed, everything, n)


def main():
    client, bootstrap, topic, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if client == "aiokafka":
        asyncio.run(with_aiokafka(bootstrap, topic, n))
    elif client == "kafka-python":
        with_kafka_python(bootstrap, topic, n)
    else:
        fail(f"unknown client {client}")


if __name__ == "__main__":
    main()
