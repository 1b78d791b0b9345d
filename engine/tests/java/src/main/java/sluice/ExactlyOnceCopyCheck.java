package sluice;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Apache Kafka's Java client and transactions: a transactional producer
 * commits a transaction, aborts one and commits another; a read_committed
 * consumer reads exactly the committed records, in order per partition,
 * and a read_uncommitted one the aborted ones too. Then a
 * consume-transform-produce loop in a consumer group copies the committed
 * records to TOPIC-out, committing its offsets in each transaction
 * (sendOffsetsToTransaction with the consumer's group metadata); the
 * group's offsets, read with requireStable, are then those committed last
 * (past the last record copied from each partition) and TOPIC-out holds
 * each record once. Prints "transactions ok".
 *
 * <p>Usage: ExactlyOnceCopyCheck BOOTSTRAP TOPIC PARTITIONS GROUP_PROTOCOL
 *
 * <p>GROUP_PROTOCOL is the copying consumer's {@code group.protocol}: {@code classic}
 * or {@code consumer} (KIP-848), whose member epoch the offsets carry.
 */
public final class ExactlyOnceCopyCheck {
  private static final Duration DEADLINE = Duration.ofSeconds(120);

  private ExactlyOnceCopyCheck() {}

  private static void check(boolean ok, String what) {
    if (!ok) {
      System.out.println("FAIL: " + what);
      System.exit(1);
    }
  }

  private static KafkaProducer<String, String> producer(String bootstrap, String txnId) {
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
    return new KafkaProducer<>(p);
  }

  private static KafkaConsumer<String, String> consumer(
      String bootstrap, String group, String isolation) {
    return consumer(bootstrap, group, isolation, "classic");
  }

  private static KafkaConsumer<String, String> consumer(
      String bootstrap, String group, String isolation, String protocol) {
    Properties p = new Properties();
    p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
    p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
    return new KafkaConsumer<>(p);
  }

  /** Reads TOPIC from the start: (partition, value) until `want` came, then a little more. */
  private static List<ConsumerRecord<String, String>> readAll(
      String bootstrap, String topic, int partitions, String isolation, int want) {
    List<TopicPartition> tps = new ArrayList<>();
    for (int i = 0; i < partitions; i++) {
      tps.add(new TopicPartition(topic, i));
    }
    List<ConsumerRecord<String, String>> got = new ArrayList<>();
    try (KafkaConsumer<String, String> c = consumer(bootstrap, "reader-" + isolation, isolation)) {
      c.assign(tps);
      c.seekToBeginning(tps);
      long deadline = System.nanoTime() + DEADLINE.toNanos();
      while (got.size() < want && System.nanoTime() < deadline) {
        c.poll(Duration.ofMillis(500)).forEach(got::add);
      }
      long extra = System.nanoTime() + Duration.ofSeconds(2).toNanos();
      while (System.nanoTime() < extra) {
        c.poll(Duration.ofMillis(200)).forEach(got::add);
      }
    }
    return got;
  }

  private static List<String> values(List<ConsumerRecord<String, String>> records) {
    List<String> out = new ArrayList<>();
    for (ConsumerRecord<String, String> r : records) {
      out.add(r.value());
    }
    return out;
  }

  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    String topic = args[1];
    int partitions = Integer.parseInt(args[2]);
    String protocol = args[3];
    String out = topic + "-out";
    Properties ap = new Properties();
    ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    try (Admin admin = Admin.create(ap)) {
      admin.createTopics(List.of(new NewTopic(out, partitions, (short) 1))).all().get();
    }

    List<String> committed = new ArrayList<>();
    List<String> everything = new ArrayList<>();
    try (KafkaProducer<String, String> p = producer(bootstrap, "java-txn-" + topic)) {
      p.initTransactions();
      String[][] batches = {{"c1", "90", "commit"}, {"ab", "60", "abort"}, {"c2", "90", "commit"}};
      for (String[] b : batches) {
        p.beginTransaction();
        int n = Integer.parseInt(b[1]);
        for (int i = 0; i < n; i++) {
          String v = b[0] + "-" + i;
          p.send(new ProducerRecord<>(topic, i % partitions, null, v));
          everything.add(v);
          if (b[2].equals("commit")) {
            committed.add(v);
          }
        }
        p.flush();
        if (b[2].equals("commit")) {
          p.commitTransaction();
        } else {
          p.abortTransaction();
        }
      }
    }

    List<ConsumerRecord<String, String>> got =
        readAll(bootstrap, topic, partitions, "read_committed", committed.size());
    List<String> seen = values(got);
    List<String> sortedSeen = new ArrayList<>(seen);
    Collections.sort(sortedSeen);
    List<String> sortedWant = new ArrayList<>(committed);
    Collections.sort(sortedWant);
    check(sortedSeen.equals(sortedWant),
        "read_committed read " + seen.size() + " records, wanted " + committed.size());
    for (int part = 0; part < partitions; part++) {
      List<String> mine = new ArrayList<>();
      for (ConsumerRecord<String, String> r : got) {
        if (r.partition() == part) {
          mine.add(r.value());
        }
      }
      List<String> want = new ArrayList<>();
      for (String v : committed) {
        if (Integer.parseInt(v.split("-")[1]) % partitions == part) {
          want.add(v);
        }
      }
      check(mine.equals(want), "partition " + part + " read out of order");
    }
    List<String> all = values(readAll(bootstrap, topic, partitions, "read_uncommitted",
        everything.size()));
    check(all.size() == everything.size(),
        "read_uncommitted read " + all.size() + ", wanted " + everything.size());

    copyInTransactions(bootstrap, topic, out, committed.size(), protocol);
    List<String> copied = values(readAll(bootstrap, out, partitions, "read_committed",
        committed.size()));
    Collections.sort(copied);
    check(copied.equals(sortedWant),
        "the copy holds " + copied.size() + " records, wanted each of " + committed.size() + " once");
    System.out.println("transactions ok");
  }

  /** The consume-transform-produce loop; then checks the group's stable offsets. */
  private static void copyInTransactions(
      String bootstrap, String topic, String out, int want, String protocol) throws Exception {
    String group = "java-eos-" + topic;
    int copied = 0;
    Map<TopicPartition, Long> next = new HashMap<>();
    try (KafkaConsumer<String, String> c = consumer(bootstrap, group, "read_committed", protocol);
        KafkaProducer<String, String> p = producer(bootstrap, "java-copy-" + topic)) {
      p.initTransactions();
      c.subscribe(List.of(topic));
      long deadline = System.nanoTime() + DEADLINE.toNanos();
      while (copied < want && System.nanoTime() < deadline) {
        var records = c.poll(Duration.ofMillis(500));
        if (records.isEmpty()) {
          continue;
        }
        p.beginTransaction();
        Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
        for (ConsumerRecord<String, String> r : records) {
          p.send(new ProducerRecord<>(out, r.partition(), null, r.value()));
          offsets.put(new TopicPartition(topic, r.partition()),
              new OffsetAndMetadata(r.offset() + 1));
          copied++;
        }
        p.sendOffsetsToTransaction(offsets, c.groupMetadata());
        offsets.forEach((tp, o) -> next.put(tp, o.offset()));
        p.commitTransaction();
      }
      check(copied == want, "copied " + copied + " records, wanted " + want);
      Properties ap = new Properties();
      ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
      try (Admin admin = Admin.create(ap)) {
        Map<TopicPartition, OffsetAndMetadata> stable = admin
            .listConsumerGroupOffsets(group, new ListConsumerGroupOffsetsOptions().requireStable(true))
            .partitionsToOffsetAndMetadata().get();
        check(stable.size() == next.size(), "group offsets " + stable + ", wanted " + next);
        for (Map.Entry<TopicPartition, Long> e : next.entrySet()) {
          OffsetAndMetadata o = stable.get(e.getKey());
          check(o != null && o.offset() == e.getValue(),
              "group offset of " + e.getKey() + " is " + o + ", wanted " + e.getValue());
        }
      }
    }
  }
}
