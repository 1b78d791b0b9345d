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
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
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

  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    String topic = args[1];
    int perCodec = Integer.parseInt(args[2]);
    String group = topic + "-group";

    Properties common = new Properties();
    common.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);

    try (Admin admin = Admin.create(common)) {
      String clusterId = admin.describeCluster().clusterId().get();
      check(clusterId != null && !clusterId.isEmpty(), "cluster id is empty");
      admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get();
      admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all().get();
      TopicDescription d = describe(admin, topic);
      check(d.partitions().size() == 3, "topic has " + d.partitions().size() + " partitions, not 3");
      check(admin.listTopics().names().get().contains(topic), "listTopics misses " + topic);
      System.out.println("admin: created and grew " + topic + " to 3 partitions");
    }

    // What was written: per partition, (offset -> key/value/header).
    Map<Integer, TreeMap<Long, String>> written = new HashMap<>();
    int total = 0;
    for (String codec : CODECS) {
      Properties p = new Properties();
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
      admin.deleteTopics(List.of(topic)).all().get();
      System.out.println("admin: described the group and its offsets, found each partition's largest timestamp, deleted " + topic);
    }
    System.out.println("java client: ok");
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
