package sluice;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.Future;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicCollection;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Apache Kafka's Java client against a broker: the admin client creates,
 * describes and grows a topic; an idempotent acks=all producer writes keyed
 * records with headers in every codec; a consumer group reads them all back
 * in per-partition order and commits; a second member finds the commits at
 * the end offsets; the admin client describes the group and its offsets and
 * deletes the topic. Any difference from what was written fails with a
 * message naming it.
 *
 * <p>Usage: ClientsCheck BOOTSTRAP TOPIC MESSAGES_PER_CODEC
 */
public final class ClientsCheck {
  private static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};
  private static final Duration DEADLINE = Duration.ofSeconds(120);
  /** Client security settings (security.protocol, sasl.*, ssl.*) from the
   * properties file SLUICE_CLIENT_PROPERTIES names, for every client. */
  private static final Properties SECURITY = security();

  private static Properties security() {
    Properties p = new Properties();
    String path = System.getenv("SLUICE_CLIENT_PROPERTIES");
    if (path != null && !path.isEmpty()) {
      try (java.io.FileReader r = new java.io.FileReader(path)) {
        p.load(r);
      } catch (java.io.IOException e) {
        throw new RuntimeException("reading " + path, e);
      }
    }
    return p;
  }

  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    String topic = args[1];
    int perCodec = Integer.parseInt(args[2]);
    String group = topic + "-group";

    Properties common = new Properties();

    common.putAll(SECURITY);
    common.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);

    try (Admin admin = Admin.create(common)) {
      String clusterId = admin.describeCluster().clusterId().get();
      check(clusterId != null && !clusterId.isEmpty(), "cluster id is empty");
      admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get();
      admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all().get();
      TopicDescription d = describe(admin, topic);
      check(d.partitions().size() == 3, "topic has " + d.partitions().size() + " partitions, not 3");
      // DescribeTopicPartitions one partition per answer: the client follows the cursor.
      TopicDescription paged =
          admin
              .describeTopics(List.of(topic), new DescribeTopicsOptions().partitionSizeLimitPerResponse(1))
              .allTopicNames()
              .get()
              .get(topic);
      List<Integer> pagedIndexes = paged.partitions().stream().map(p -> p.partition()).collect(Collectors.toList());
      check(pagedIndexes.equals(List.of(0, 1, 2)), "describeTopics a partition per page: " + pagedIndexes);
      check(paged.topicId().equals(d.topicId()), "paged describeTopics has another topic id");
      // By topic id (Metadata names topics by id).
      TopicDescription byId =
          admin.describeTopics(TopicCollection.ofTopicIds(List.of(d.topicId()))).allTopicIds().get().get(d.topicId());
      check(byId.name().equals(topic), "describeTopics by id names " + byId.name());
      check(admin.listTopics().names().get().contains(topic), "listTopics misses " + topic);
      System.out.println("admin: created and grew " + topic + " to 3 partitions");
    }

    // What was written: per partition, (offset -> key/value/header).
    Map<Integer, TreeMap<Long, String>> written = new HashMap<>();
    int total = 0;
    for (String codec : CODECS) {
      Properties p = new Properties();
      p.putAll(SECURITY);
      p.putAll(common);
      p.put(ProducerConfig.ACKS_CONFIG, "all");
      p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
      p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
      p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
      p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
      p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
      try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        List<String> texts = new ArrayList<>();
        for (int i = 0; i < perCodec; i++) {
          String key = codec + "-" + (i % 17);
          String value = codec + "-value-" + i + "-" + "x".repeat(i % 50);
          ProducerRecord<byte[], byte[]> r =
              new ProducerRecord<>(topic, bytes(key), bytes(value));
          r.headers().add("codec", bytes(codec)).add("n", bytes(Integer.toString(i)));
          sent.add(producer.send(r));
          texts.add(key + "|" + value + "|" + codec + "|" + i);
        }
        producer.flush();
        for (int i = 0; i < sent.size(); i++) {
          RecordMetadata m = sent.get(i).get();
          String prev =
              written.computeIfAbsent(m.partition(), k -> new TreeMap<>()).put(m.offset(), texts.get(i));
          check(prev == null, "two acknowledged records at " + m.partition() + "/" + m.offset());
        }
      }
      total += perCodec;
    }
    for (Map.Entry<Integer, TreeMap<Long, String>> e : written.entrySet()) {
      long expect = 0;
      for (long o : e.getValue().keySet()) {
        check(o == expect, "partition " + e.getKey() + ": offset " + o + " where " + expect + " was due");
        expect++;
      }
    }
    System.out.println("producer: " + total + " records acknowledged, offsets contiguous");

    Properties c = new Properties();

    c.putAll(SECURITY);
    c.putAll(common);
    c.put(ConsumerConfig.GROUP_ID_CONFIG, group);
    c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    Map<Integer, TreeMap<Long, String>> read = new HashMap<>();
    // Per partition, the largest timestamp read and the first offset with it.
    Map<Integer, long[]> maxTimestamp = new HashMap<>();
    try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c)) {
      consumer.subscribe(List.of(topic));
      long until = System.nanoTime() + DEADLINE.toNanos();
      int count = 0;
      while (count < total) {
        check(System.nanoTime() < until, "consumed " + count + " of " + total + " in time");
        ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(500));
        for (ConsumerRecord<byte[], byte[]> r : records) {
          Header codec = r.headers().lastHeader("codec");
          Header n = r.headers().lastHeader("n");
          check(codec != null && n != null, "record " + r.partition() + "/" + r.offset() + " lost its headers");
          String text = text(r.key()) + "|" + text(r.value()) + "|" + text(codec.value()) + "|" + text(n.value());
          String prev = read.computeIfAbsent(r.partition(), k -> new TreeMap<>()).put(r.offset(), text);
          long[] max = maxTimestamp.computeIfAbsent(r.partition(), k -> new long[] {-1, -1});
          if (r.timestamp() > max[0]) {
            max[0] = r.timestamp();
            max[1] = r.offset();
          }
          check(prev == null, "record " + r.partition() + "/" + r.offset() + " read twice");
          count++;
        }
      }
      consumer.commitSync();
    }
    check(read.equals(written), "what was read differs from what was written");
    System.out.println("consumer: read all " + total + " records in order, with keys and headers");

    // A second member of the group starts at the committed offsets: the ends.
    try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c)) {
      Set<TopicPartition> parts = new HashSet<>();
      for (int p = 0; p < 3; p++) {
        parts.add(new TopicPartition(topic, p));
      }
      Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(parts);
      Map<TopicPartition, Long> ends = consumer.endOffsets(parts);
      for (TopicPartition tp : parts) {
        OffsetAndMetadata om = committed.get(tp);
        long end = ends.get(tp);
        check(om != null && om.offset() == end, tp + ": committed " + om + ", end " + end);
      }
    }
    System.out.println("consumer: committed offsets are the end offsets");

    try (Admin admin = Admin.create(common)) {
      Collection<String> groups =
          admin.listConsumerGroups().all().get().stream().map(g -> g.groupId()).collect(Collectors.toList());
      check(groups.contains(group), "listConsumerGroups misses " + group + ": " + groups);
      ConsumerGroupDescription g = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
      check(g != null, "describeConsumerGroups has no " + group);
      Map<TopicPartition, OffsetAndMetadata> offsets =
          admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
      long committed = offsets.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
      check(committed == total, "group offsets add up to " + committed + ", not " + total);
      Map<TopicPartition, OffsetSpec> specs = new HashMap<>();
      for (int p = 0; p < 3; p++) {
        specs.put(new TopicPartition(topic, p), OffsetSpec.maxTimestamp());
      }
      for (Map.Entry<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> e :
          admin.listOffsets(specs).all().get().entrySet()) {
        long[] max = maxTimestamp.get(e.getKey().partition());
        check(
            max != null && e.getValue().offset() == max[1] && e.getValue().timestamp() == max[0],
            e.getKey() + ": max-timestamp offset " + e.getValue() + ", read " + java.util.Arrays.toString(max));
      }
      System.out.println("admin: described the group and its offsets, found each partition's largest timestamp");
    }

    moreProducingAndConsuming(common, topic, written);

    try (Admin admin = Admin.create(common)) {
      // Configs: a topic override round-trips through describeConfigs.
      ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
      admin
          .incrementalAlterConfigs(
              Map.of(
                  res,
                  List.of(
                      new AlterConfigOp(
                          new ConfigEntry("retention.ms", "86400000"), AlterConfigOp.OpType.SET))))
          .all()
          .get();
      Config cfg = admin.describeConfigs(List.of(res)).all().get().get(res);
      check("86400000".equals(cfg.get("retention.ms").value()), "retention.ms is " + cfg.get("retention.ms"));
      // Delete records below offset 10 of partition 0: the log start moves.
      TopicPartition p0 = new TopicPartition(topic, 0);
      long low =
          admin.deleteRecords(Map.of(p0, RecordsToDelete.beforeOffset(10))).lowWatermarks().get(p0).get().lowWatermark();
      ListOffsetsResult.ListOffsetsResultInfo earliest =
          admin.listOffsets(Map.of(p0, OffsetSpec.earliest())).all().get().get(p0);
      check(low == 10 && earliest.offset() == 10, "log start after deleteRecords: " + low + ", " + earliest);
      // Log dirs: every partition of the topic has a replica on the broker.
      Map<Integer, Map<String, LogDirDescription>> dirs =
          admin.describeLogDirs(admin.describeCluster().nodes().get().stream().map(n -> n.id()).collect(Collectors.toList()))
              .allDescriptions()
              .get();
      long replicas =
          dirs.values().stream()
              .flatMap(m -> m.values().stream())
              .flatMap(d -> d.replicaInfos().keySet().stream())
              .filter(tp -> tp.topic().equals(topic))
              .count();
      check(replicas == 3, "describeLogDirs shows " + replicas + " replicas of " + topic);
      admin.deleteTopics(List.of(topic)).all().get();
      System.out.println("admin: configs, deleteRecords and log dirs; deleted " + topic);
    }
    System.out.println("java client: ok");
  }

  /**
   * acks=0 and acks=1 producers; an assigned consumer that seeks by
   * timestamp and pauses and resumes a partition; two cooperative-sticky
   * members whose rebalance listener sees partitions revoked and assigned
   * incrementally.
   */
  private static void moreProducingAndConsuming(
      Properties common, String topic, Map<Integer, TreeMap<Long, String>> written) throws Exception {
    for (String acks : new String[] {"0", "1"}) {
      Properties p = new Properties();
      p.putAll(SECURITY);
      p.putAll(common);
      p.put(ProducerConfig.ACKS_CONFIG, acks);
      p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
      p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
      p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
      try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
        for (int i = 0; i < 100; i++) {
          producer.send(new ProducerRecord<>(topic, 1, null, bytes("acks" + acks + "-" + i))).get();
        }
      }
    }
    // All 200 land at the end of partition 1.
    Properties c = new Properties();
    c.putAll(SECURITY);
    c.putAll(common);
    c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    TopicPartition p1 = new TopicPartition(topic, 1);
    TopicPartition p2 = new TopicPartition(topic, 2);
    long p1Before = written.getOrDefault(1, new TreeMap<>()).size();
    try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c)) {
      consumer.assign(List.of(p1, p2));
      consumer.seek(p1, p1Before);
      consumer.seekToBeginning(List.of(p2));
      consumer.pause(List.of(p2));
      List<String> tail = new ArrayList<>();
      long until = System.nanoTime() + DEADLINE.toNanos();
      while (tail.size() < 200) {
        check(System.nanoTime() < until, "read " + tail.size() + " of the 200 acks=0/1 records");
        for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
          check(r.partition() == 1, "a paused partition was read: " + r.partition());
          tail.add(text(r.value()));
        }
      }
      // Each producer's records in its order. (Across the two there is no
      // order: the acks=0 producer's last requests may still be on their
      // way through the broker when the acks=1 one connects.)
      for (String acks : new String[] {"acks0-", "acks1-"}) {
        List<String> mine = tail.stream().filter(v -> v.startsWith(acks)).collect(Collectors.toList());
        for (int i = 0; i < 100; i++) {
          check(i < mine.size() && mine.get(i).equals(acks + i), acks + " records read: " + mine);
        }
      }
      // Resumed, partition 2 reads from its start.
      consumer.resume(List.of(p2));
      ConsumerRecord<byte[], byte[]> first = null;
      until = System.nanoTime() + DEADLINE.toNanos();
      while (first == null) {
        check(System.nanoTime() < until, "partition 2 gave nothing after resume");
        for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
          if (r.partition() == 2 && first == null) {
            first = r;
          }
        }
      }
      check(first.offset() == 0, "partition 2 resumed at " + first.offset());
      // Seek by timestamp: the first record at or after a record's own
      // timestamp is that record or an earlier one with the same time.
      Map<TopicPartition, OffsetAndTimestamp> found =
          consumer.offsetsForTimes(Map.of(p2, first.timestamp()));
      check(found.get(p2) != null && found.get(p2).offset() == 0, "offsetsForTimes: " + found);
    }
    System.out.println("producer acks=0 and acks=1, assign, seek, pause/resume and offsetsForTimes: ok");

    // Cooperative-sticky: the second member takes partitions without the
    // first giving up the ones it keeps.
    c.put(ConsumerConfig.GROUP_ID_CONFIG, topic + "-coop");
    c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    c.put(
        ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
        "org.apache.kafka.clients.consumer.CooperativeStickyAssignor");
    Listener l1 = new Listener();
    Listener l2 = new Listener();
    try (KafkaConsumer<byte[], byte[]> a = new KafkaConsumer<>(c);
        KafkaConsumer<byte[], byte[]> b = new KafkaConsumer<>(c)) {
      a.subscribe(List.of(topic), l1);
      long until = System.nanoTime() + DEADLINE.toNanos();
      while (a.assignment().size() < 3) {
        check(System.nanoTime() < until, "first member holds " + a.assignment());
        a.poll(Duration.ofMillis(100));
      }
      b.subscribe(List.of(topic), l2);
      until = System.nanoTime() + DEADLINE.toNanos();
      while (a.assignment().size() + b.assignment().size() != 3 || b.assignment().isEmpty()) {
        check(System.nanoTime() < until, "members hold " + a.assignment() + " and " + b.assignment());
        a.poll(Duration.ofMillis(100));
        b.poll(Duration.ofMillis(100));
      }
      Set<TopicPartition> both = new HashSet<>(a.assignment());
      both.retainAll(b.assignment());
      check(both.isEmpty(), "both members hold " + both);
      // Incremental: the first member only ever lost what the second took.
      check(l1.revoked.stream().allMatch(b.assignment()::contains), "revoked " + l1.revoked + ", taken " + b.assignment());
    }
    System.out.println("cooperative-sticky: the second member took partitions incrementally");
  }

  /** Records what a rebalance listener is told. */
  private static final class Listener implements ConsumerRebalanceListener {
    final List<TopicPartition> revoked = new ArrayList<>();
    final List<TopicPartition> assigned = new ArrayList<>();

    @Override
    public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
      revoked.addAll(partitions);
    }

    @Override
    public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
      assigned.addAll(partitions);
    }
  }

  private static TopicDescription describe(Admin admin, String topic) throws Exception {
    return admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
  }

  private static byte[] bytes(String s) {
    return s.getBytes(StandardCharsets.UTF_8);
  }

  private static String text(byte[] b) {
    return b == null ? "<null>" : new String(b, StandardCharsets.UTF_8);
  }

  private static void check(boolean ok, String what) {
    if (!ok) {
      System.err.println("FAILED: " + what);
      System.exit(1);
    }
  }
}
