"""A Python client logs in to a Sluice SASL_PLAINTEXT listener, produces
COUNT messages to TOPIC and reads them all back. Exits non-zero on any
failure or mismatch.

usage: sasl_clients.py CLIENT BOOTSTRAP TOPIC COUNT MECHANISM USER SECRET [PROTOCOL CAFILE]
  CLIENT     kafka-python | confluent-kafka | aiokafka
  MECHANISM  PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | OAUTHBEARER, or NONE
             for an SSL listener without SASL
  SECRET     the password, or for OAUTHBEARER the JWT (confluent-kafka
             hands it over from its oauth_cb)
  PROTOCOL   SASL_PLAINTEXT (the default), SASL_SSL or SSL
  CAFILE     the CA to check the broker's certificate with (TLS protocols)
"""

import asyncio
import sys
import time

client, bootstrap, topic, count, mechanism, user, secret = sys.argv[1:8]
protocol = sys.argv[8] if len(sys.argv) > 8 else "SASL_PLAINTEXT"
cafile = sys.argv[9] if len(sys.argv) > 9 else None
count = int(count)
uses_sasl = protocol.startswith("SASL")
want = [b"v%d" % i for i in range(count)]


def kafka_python():
    from kafka import KafkaConsumer, KafkaProducer

    sasl = dict(bootstrap_servers=bootstrap, security_protocol=protocol)
    if uses_sasl:
        sasl.update(
            sasl_mechanism=mechanism,
            sasl_plain_username=user,
            sasl_plain_password=secret,
        )
    if cafile:
        sasl.update(ssl_cafile=cafile, ssl_check_hostname=True)
    producer = KafkaProducer(**sasl)
    futures = [producer.send(topic, value=v) for v in want]
    producer.flush(timeout=60)
    for f in futures:
        f.get(timeout=60)
    producer.close()
    consumer = KafkaConsumer(
        topic, auto_offset_reset="earliest", consumer_timeout_ms=30000, **sasl
    )
    got = []
    for m in consumer:
        got.append(m.value)
        if len(got) == count:
            break
    consumer.close()
    return got


def confluent():
    from confluent_kafka import Consumer, Producer

    conf = {
        "bootstrap.servers": bootstrap,
        "security.protocol": protocol,
    }
    if cafile:
        conf["ssl.ca.location"] = cafile
    if uses_sasl:
        conf["sasl.mechanisms"] = mechanism
        if mechanism == "OAUTHBEARER":
            conf["oauth_cb"] = lambda _config: (secret, time.time() + 300)
        else:
            conf["sasl.username"] = user
            conf["sasl.password"] = secret
    failures = []
    producer = Producer(conf)
    for v in want:
        producer.produce(topic, v, on_delivery=lambda e, m: e and failures.append(e))
        producer.poll(0)
    if producer.flush(60) != 0 or failures:
        sys.exit(f"produce failed: {failures}")
    consumer = Consumer(
        dict(conf, **{"group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.time() + 60
    while len(got) < count and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            print("consumer:", m.error(), file=sys.stderr)
            continue
        got.append(m.value())
    consumer.close()
    return got


async def aiokafka():
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    sasl = dict(bootstrap_servers=bootstrap, security_protocol=protocol)
    if uses_sasl:
        sasl.update(
            sasl_mechanism=mechanism,
            sasl_plain_username=user,
            sasl_plain_password=secret,
        )
    if cafile:
        from aiokafka.helpers import create_ssl_context

        sasl["ssl_context"] = create_ssl_context(cafile=cafile)
    producer = AIOKafkaProducer(**sasl)
    await producer.start()
    try:
        for v in want:
            await producer.send_and_wait(topic, v)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **sasl)
    await consumer.start()
    got = []
    try:
        while len(got) < count:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 60)
            for records in batch.values():
                got.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return got


if client == "kafka-python":
    got = kafka_python()
elif client == "confluent-kafka":
    got = confluent()
elif client == "aiokafka":
    got = asyncio.run(aiokafka())
else:
    sys.exit(f"unknown client {client}")
if got != want:
    sys.exit(f"{client}: read {len(got)} messages, not the {count} written in order")
print(f"{client}: {count} messages over {protocol} ({mechanism})")
