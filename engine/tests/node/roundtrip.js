// KafkaJS against a sluice broker: admin creates a topic, an idempotent
// producer sends keyed and unkeyed messages with headers and timestamps,
// alternately plain and gzip, and a consumer group reads every one back.
// Checks each message's key, value, header and timestamp, per-partition
// offset order, that one key always lands on one partition, and that the
// group's committed offsets end at the log end. Exits non-zero on any
// mismatch.
//
// usage: node roundtrip.js HOST:PORT TOPIC COUNT [REPLICATION_FACTOR]
//
// With SASL_MECHANISM (plain, scram-sha-256, scram-sha-512),
// SASL_USERNAME and SASL_PASSWORD set, every connection logs in first;
// with SSL_CA_FILE set it speaks TLS, trusting that CA.

const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const [bootstrap, topic, countArg, rfArg] = process.argv.slice(2);
const replicationFactor = Number(rfArg || 1);
const count = Number(countArg);
const PARTITIONS = 3;
const CHUNK = 100;
const BASE_TS = 1_700_000_000_000;

function fail(message) {
  throw new Error(message);
}

function expected(i) {
  return {
    key: i % 4 === 0 ? null : `key-${i % 17}`,
    value: `value-${i}`,
    timestamp: String(BASE_TS + i),
  };
}

async function produce(kafka) {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (let start = 0; start < count; start += CHUNK) {
    const messages = [];
    for (let i = start; i < Math.min(count, start + CHUNK); i++) {
      const e = expected(i);
      messages.push({ key: e.key, value: e.value, timestamp: e.timestamp, headers: { idx: String(i) } });
    }
    const compression = (start / CHUNK) % 2 ? CompressionTypes.GZIP : CompressionTypes.None;
    const acks = await producer.send({ topic, messages, acks: -1, compression });
    for (const a of acks) {
      if (a.errorCode !== 0) fail(`produce answered ${JSON.stringify(a)}`);
    }
  }
  await producer.disconnect();
}

async function consume(kafka, groupId) {
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 1_000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = new Set();
  const lastOffset = new Map();
  const partitionOfKey = new Map();
  let problem = null;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`consumed ${seen.size} of ${count} within 90 s`)),
      90_000,
    );
    consumer
      .run({
        eachMessage: async ({ partition, message }) => {
          try {
            const offset = Number(message.offset);
            const last = lastOffset.get(partition);
            if (last !== undefined && offset !== last + 1) {
              fail(`partition ${partition}: offset ${offset} after ${last}`);
            }
            lastOffset.set(partition, offset);
            const i = Number(message.headers.idx.toString());
            const e = expected(i);
            const key = message.key === null ? null : message.key.toString();
            if (key !== e.key) fail(`message ${i}: key ${key}, expected ${e.key}`);
            if (message.value.toString() !== e.value) fail(`message ${i}: value ${message.value}`);
            if (message.timestamp !== e.timestamp) {
              fail(`message ${i}: timestamp ${message.timestamp}, expected ${e.timestamp}`);
            }
            if (key !== null) {
              const p = partitionOfKey.get(key);
              if (p !== undefined && p !== partition) fail(`key ${key} on partitions ${p} and ${partition}`);
              partitionOfKey.set(key, partition);
            }
            if (seen.has(i)) fail(`message ${i} consumed twice`);
            seen.add(i);
            if (seen.size === count) {
              clearTimeout(timer);
              resolve();
            }
          } catch (err) {
            problem = problem || err;
            clearTimeout(timer);
            reject(err);
          }
        },
      })
      .catch(reject);
  });
  if (problem) throw problem;
  // Disconnecting commits what was consumed and leaves the group.
  await consumer.disconnect();
  return { consumed: seen.size, partitionsRead: lastOffset.size };
}

async function main() {
  const kafka = new Kafka({
    clientId: 'sluice-kafkajs-test',
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
    retry: { retries: 10 },
    ssl: process.env.SSL_CA_FILE
      ? { ca: [require('fs').readFileSync(process.env.SSL_CA_FILE, 'utf8')] }
      : undefined,
    sasl: process.env.SASL_MECHANISM
      ? {
          mechanism: process.env.SASL_MECHANISM,
          username: process.env.SASL_USERNAME,
          password: process.env.SASL_PASSWORD,
        }
      : undefined,
  });
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor }],
    waitForLeaders: true,
  });
  if (!created) fail(`topic ${topic} already existed`);
  const meta = await admin.fetchTopicMetadata({ topics: [topic] });
  if (meta.topics[0].partitions.length !== PARTITIONS) fail(`metadata: ${JSON.stringify(meta)}`);

  await produce(kafka);
  const ends = await admin.fetchTopicOffsets(topic);
  const total = ends.reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  if (total !== count) fail(`log ends add up to ${total} messages, sent ${count}`);

  const groupId = `${topic}-group`;
  const result = await consume(kafka, groupId);
  if (result.partitionsRead !== PARTITIONS) fail(`read ${result.partitionsRead} partitions`);

  const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
  for (const end of ends) {
    const c = committed.partitions.find((p) => p.partition === end.partition);
    if (!c || c.offset !== end.high) {
      fail(`partition ${end.partition}: committed ${c && c.offset}, log end ${end.high}`);
    }
  }
  const groups = await admin.describeGroups([groupId]);
  const state = groups.groups[0].state;
  if (state !== 'Empty') fail(`group state after the consumer left: ${state}`);

  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  console.log(JSON.stringify({ topic, ...result, committed: 'at log end', group: state }));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
