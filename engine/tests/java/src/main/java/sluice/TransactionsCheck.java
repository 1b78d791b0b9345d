package sluice;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Apache Kafka's Java transactional producer against a broker: a committed
 * transaction, an aborted one and a committed one over two partitions; a
 * read_committed consumer reads exactly the committed records. Then a second
 * producer with the same transactional.id fences the first, whose commit
 * fails with ProducerFencedException, and none of its records are read.
 *
 * <p>Usage: TransactionsCheck BOOTSTRAP TOPIC (a topic of two partitions)
 */
public final class TransactionsCheck {
  private TransactionsCheck() {}

  private static KafkaProducer<String, String> producer(String bootstrap, String id) {
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, id);
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    KafkaProducer<String, String> producer = new KafkaProducer<>(p);
    producer.initTransactions();
    return producer;
  }

  private static void send(KafkaProducer<String, String> p, String topic, String value) {
    for (int partition = 0; partition < 2; partition++) {
      for (int i = 0; i < 5; i++) {
        p.send(new ProducerRecord<>(topic, partition, null, value));
      }
    }
    p.flush();
  }

  /** Reads until `until` has been seen 10 times; returns everything read. */
  private static List<String> readCommitted(String bootstrap, String topic, String until) {
    Properties c = new Properties();
    c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    List<String> got = new ArrayList<>();
    try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
      List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1));
      consumer.assign(tps);
      consumer.seekToBeginning(tps);
      long deadline = System.currentTimeMillis() + 120_000;
      while (got.stream().filter(until::equals).count() < 10) {
        if (System.currentTimeMillis() > deadline) {
          throw new AssertionError("read_committed read only " + got);
        }
        for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
          got.add(r.value());
        }
      }
    }
    return got;
  }

  private static void check(boolean ok, String what) {
    if (!ok) {
      throw new AssertionError(what);
    }
  }

  public static void main(String[] args) {
    String bootstrap = args[0];
    String topic = args[1];
    try (KafkaProducer<String, String> p = producer(bootstrap, "java-txn")) {
      p.beginTransaction();
      send(p, topic, "first");
      p.commitTransaction();
      p.beginTransaction();
      send(p, topic, "aborted");
      p.abortTransaction();
      p.beginTransaction();
      send(p, topic, "second");
      p.commitTransaction();
    }
    List<String> got = readCommitted(bootstrap, topic, "second");
    check(got.stream().filter("first"::equals).count() == 10, "first commit whole: " + got);
    check(got.stream().noneMatch("aborted"::equals), "nothing aborted: " + got);

    KafkaProducer<String, String> zombie = producer(bootstrap, "java-fenced");
    zombie.beginTransaction();
    send(zombie, topic, "zombie");
    try (KafkaProducer<String, String> fresh = producer(bootstrap, "java-fenced")) {
      fresh.beginTransaction();
      send(fresh, topic, "fresh");
      fresh.commitTransaction();
    }
    boolean fenced = false;
    try {
      zombie.commitTransaction();
    } catch (ProducerFencedException e) {
      fenced = true;
    }
    zombie.close(Duration.ZERO);
    check(fenced, "the zombie's commit was not fenced");
    got = readCommitted(bootstrap, topic, "fresh");
    check(got.stream().noneMatch("zombie"::equals), "no zombie record: " + got);
    System.out.println("java transactions: ok");
  }
}
