// KafkaJS transactions against a sluice broker: an idempotent producer
// with a transactionalId commits a transaction, aborts one and commits
// another; a read_committed consumer group (readUncommitted: false) reads
// exactly the committed messages, a read_uncommitted one reads them all.
// Exits non-zero on any difference.
//
// usage: node transactions.js HOST:PORT TOPIC MESSAGES_PER_TRANSACTION

const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, perTxnArg] = process.argv.slice(2);
const perTxn = Number(perTxnArg);

function fail(message) {
  throw new Error(message);
}

async function produce(kafka) {
  const producer = kafka.producer({
    transactionalId: `${topic}-producer`,
    idempotent: true,
    maxInFlightRequests: 1,
  });
  await producer.connect();
  const committed = [];
  for (const [prefix, commit] of [['first', true], ['aborted', false], ['second', true]]) {
    const txn = await producer.transaction();
    const messages = [];
    for (let i = 0; i < perTxn; i++) {
      messages.push({ key: `k-${i % 7}`, value: `${prefix}-${i}` });
    }
    // Two sends, so that a transaction spans more than one batch.
    const half = Math.floor(messages.length / 2);
    await txn.send({ topic, messages: messages.slice(0, half) });
    await txn.send({ topic, messages: messages.slice(half) });
    if (commit) {
      await txn.commit();
      committed.push(...messages.map((m) => m.value));
    } else {
      await txn.abort();
    }
    console.log(`producer: transaction ${prefix} ${commit ? 'committed' : 'aborted'}`);
  }
  await producer.disconnect();
  return committed.sort();
}

// Reads the topic from the start in a new group until `want` messages are
// in, and returns their values sorted.
async function consume(kafka, group, readUncommitted, want) {
  const consumer = kafka.consumer({ groupId: group, readUncommitted });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${group}: ${got.length} of ${want} messages read: ${got}`)),
      120000,
    );
    consumer
      .run({
        eachMessage: async ({ message }) => {
          got.push(message.value.toString());
          if (got.length >= want) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return got.sort();
}

async function main() {
  const kafka = new Kafka({
    clientId: 'sluice-kafkajs-txn',
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
  });
  const want = await produce(kafka);
  const committed = await consume(kafka, `${topic}-committed`, false, want.length);
  if (committed.join(',') !== want.join(',')) {
    fail(`read_committed read ${committed.length}: ${committed}, want ${want.length}: ${want}`);
  }
  console.log(`read_committed: ${committed.length} messages, the aborted ones absent`);
  const all = await consume(kafka, `${topic}-uncommitted`, true, 3 * perTxn);
  const aborted = all.filter((v) => v.startsWith('aborted-')).length;
  if (all.length !== 3 * perTxn || aborted !== perTxn) {
    fail(`read_uncommitted read ${all.length} (${aborted} aborted), want ${3 * perTxn} (${perTxn})`);
  }
  console.log(`read_uncommitted: ${all.length} messages, the aborted ones included`);
  console.log('kafkajs transactions: ok');
}

main().catch((e) => {
  console.error(`FAILED: ${e.stack || e}`);
  process.exit(1);
});
