package sluice;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StateRestoreListener;

/**
 * Kafka Streams (at_least_once) against a broker: a word count whose
 * groupBy(...).count() needs a repartition topic and a changelog topic.
 *
 * <ol>
 *   <li>Lines go to the input topic; the app runs until the output topic's latest count of
 *       every word is the expected total, and until its group has committed the input and
 *       repartition topics to their ends. Then it prints {@code restart the broker} and waits
 *       for a line on standard input: the caller restarts the broker meanwhile.
 *   <li>Once the app is running again and its group is stable, more lines; the counts must
 *       reach the new totals exactly.
 *   <li>The app closes (committing), and a second instance with an empty state directory
 *       restores the store from the changelog topic; more lines, exact totals again.
 * </ol>
 *
 * <p>The counts are exact, not merely at least the totals: at_least_once reprocesses only
 * records past the last commit, and every phase waits for its commits before anything can
 * drop a member (the restart, the close), and feeds its lines only to a running app in a
 * stable group.
 *
 * <p>Usage: StreamsWordCount BOOTSTRAP APP_ID STATE_DIR [PROCESSING_GUARANTEE]
 */
public final class StreamsWordCount {
  private static final Duration DEADLINE = Duration.ofSeconds(180);
  private static final String[] WORDS = {
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike"
  };
  private static final String STORE = "counts";

  public static void main(String[] args) {
    // Stream threads keep the JVM alive: leave with an exit status either way.
    try {
      run(args);
    } catch (Throwable t) {
      t.printStackTrace();
      System.exit(1);
    }
    System.exit(0);
  }

  private static void run(String[] args) throws Exception {
    String bootstrap = args[0];
    String appId = args[1];
    Path stateDir = Path.of(args[2]);
    guarantee = args.length > 3 ? args[3] : StreamsConfig.AT_LEAST_ONCE;
    String input = appId + "-lines";
    String output = appId + "-counts";

    Properties adminProps = new Properties();
    adminProps.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    Map<String, Long> expected = new TreeMap<>();
    try (Admin admin = Admin.create(adminProps);
        KafkaProducer<String, String> producer = producer(bootstrap);
        KafkaConsumer<String, Long> reader = reader(bootstrap)) {
      admin
          .createTopics(List.of(new NewTopic(input, 3, (short) 1), new NewTopic(output, 3, (short) 1)))
          .all()
          .get();
      reader.assign(
          List.of(
              new TopicPartition(output, 0),
              new TopicPartition(output, 1),
              new TopicPartition(output, 2)));
      Map<String, Long> latest = new TreeMap<>();

      produce(producer, input, 0, 400, expected);
      KafkaStreams first = start(bootstrap, appId, stateDir.resolve("first"), input, output);
      awaitCounts(reader, latest, expected, "before the restart");
      awaitCommitted(admin, appId, input);
      checkInternalTopics(admin, appId);
      progress("counted and committed before the restart");
      System.out.println("restart the broker");
      System.out.flush();
      BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
      String line = stdin.readLine();
      check("restarted".equals(line), "expected 'restarted' on standard input, got " + line);

      awaitRunningInStableGroup(admin, first, appId);
      produce(producer, input, 400, 700, expected);
      awaitCounts(reader, latest, expected, "after the restart");
      awaitCommitted(admin, appId, input);
      progress("counted and committed after the restart");
      // Leaving the group lets the second instance take every task at once rather than
      // after the first one's session times out.
      check(
          first.close(
              CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                  .withTimeout(DEADLINE)),
          "the first app did not close in time");
      check(first.state() == KafkaStreams.State.NOT_RUNNING, "first app did not close: " + first.state());

      long restoredByFirst = RESTORED.get();
      KafkaStreams second = start(bootstrap, appId, stateDir.resolve("second"), input, output);
      awaitRunningInStableGroup(admin, second, appId);
      produce(producer, input, 700, 900, expected);
      awaitCounts(reader, latest, expected, "after restoring from the changelog");
      long restored = RESTORED.get() - restoredByFirst;
      check(restored > 0, "the second app restored nothing from the changelog");
      progress("counted after restoring " + restored + " changelog records");
      check(second.close(DEADLINE), "the second app did not close in time");
      check(second.state() == KafkaStreams.State.NOT_RUNNING, "second app did not close: " + second.state());
    }
    long total = expected.values().stream().mapToLong(Long::longValue).sum();
    System.out.println("streams word count: ok (" + total + " words, " + expected.size() + " distinct)");
  }

  /** Line i: between one and five words of WORDS. */
  private static String line(int i) {
    List<String> words = new ArrayList<>();
    for (int j = 0; j <= i % 5; j++) {
      words.add(WORDS[(i * 7 + j * j * 3 + j) % WORDS.length]);
    }
    return String.join(" ", words);
  }

  private static void produce(
      KafkaProducer<String, String> producer, String topic, int from, int to, Map<String, Long> expected)
      throws Exception {
    for (int i = from; i < to; i++) {
      String l = line(i);
      producer.send(new ProducerRecord<>(topic, "line-" + i, l));
      for (String w : l.split(" ")) {
        expected.merge(w, 1L, Long::sum);
      }
    }
    producer.flush();
  }

  private static Topology topology(String input, String output) {
    StreamsBuilder b = new StreamsBuilder();
    b.<String, String>stream(input)
        .flatMapValues(v -> Arrays.asList(v.split(" ")))
        .groupBy((k, w) -> w)
        .count(Materialized.as(STORE))
        .toStream()
        .to(output, Produced.with(Serdes.String(), Serdes.Long()));
    return b.build();
  }

  private static final AtomicReference<Throwable> FAILURE = new AtomicReference<>();
  /** processing.guarantee: at_least_once unless a fourth argument names another. */
  private static String guarantee;
  /** Changelog records restored into the store, by any instance. */
  private static final AtomicLong RESTORED = new AtomicLong();

  private static KafkaStreams start(String bootstrap, String appId, Path stateDir, String input, String output) {
    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
    p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
    p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
    KafkaStreams s = new KafkaStreams(topology(input, output), p);
    s.setUncaughtExceptionHandler(
        e -> {
          FAILURE.compareAndSet(null, e);
          return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    s.setGlobalStateRestoreListener(
        new StateRestoreListener() {
          @Override
          public void onRestoreStart(TopicPartition tp, String store, long start, long end) {}

          @Override
          public void onBatchRestored(TopicPartition tp, String store, long end, long n) {}

          @Override
          public void onRestoreEnd(TopicPartition tp, String store, long total) {
            RESTORED.addAndGet(total);
          }
        });
    s.start();
    return s;
  }

  private static KafkaProducer<String, String> producer(String bootstrap) {
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
    return new KafkaProducer<>(p);
  }

  /** A plain consumer of the output topic, outside any group. */
  private static KafkaConsumer<String, Long> reader(String bootstrap) {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class);
    return new KafkaConsumer<>(p);
  }

  /** Reads the output topic on until the latest count of every word is the expected one. */
  private static void awaitCounts(
      KafkaConsumer<String, Long> reader, Map<String, Long> latest, Map<String, Long> expected, String when) {
    long end = System.nanoTime() + DEADLINE.toNanos();
    while (!latest.equals(expected)) {
      failIfStreamsFailed();
      for (String w : latest.keySet()) {
        long got = latest.get(w);
        long want = expected.getOrDefault(w, 0L);
        check(got <= want, when + ": " + w + " counted " + got + " times, more than its " + want);
      }
      check(System.nanoTime() < end, when + ": counts " + latest + ", expected " + expected);
      for (ConsumerRecord<String, Long> r : reader.poll(Duration.ofMillis(200))) {
        latest.put(r.key(), r.value());
      }
    }
  }

  /**
   * Waits until the application's group has committed every partition of the input and
   * repartition topics at its end offset: nothing processed is left to be processed again.
   */
  private static void awaitCommitted(Admin admin, String appId, String input) throws Exception {
    long end = System.nanoTime() + DEADLINE.toNanos();
    String repartition = appId + "-" + STORE + "-repartition";
    while (true) {
      failIfStreamsFailed();
      Map<TopicPartition, OffsetSpec> specs = new TreeMap<>(StreamsWordCount::compare);
      for (String t : List.of(input, repartition)) {
        int n = admin.describeTopics(List.of(t)).allTopicNames().get().get(t).partitions().size();
        for (int i = 0; i < n; i++) {
          specs.put(new TopicPartition(t, i), OffsetSpec.latest());
        }
      }
      Map<TopicPartition, Long> ends =
          admin.listOffsets(specs).all().get().entrySet().stream()
              .collect(Collectors.toMap(Map.Entry::getKey, e -> e.getValue().offset()));
      Map<TopicPartition, OffsetAndMetadata> committed =
          admin.listConsumerGroupOffsets(appId).partitionsToOffsetAndMetadata().get();
      List<String> behind = new ArrayList<>();
      for (Map.Entry<TopicPartition, Long> e : ends.entrySet()) {
        OffsetAndMetadata c = committed.get(e.getKey());
        // A partition that never held a record has nothing to commit.
        long at = c == null ? 0 : c.offset();
        if (at != e.getValue()) {
          behind.add(e.getKey() + " committed " + at + " of " + e.getValue());
        }
      }
      if (behind.isEmpty()) {
        return;
      }
      check(System.nanoTime() < end, "commits never reached the ends: " + behind);
      Thread.sleep(100);
    }
  }

  private static int compare(TopicPartition a, TopicPartition b) {
    int c = a.topic().compareTo(b.topic());
    return c != 0 ? c : Integer.compare(a.partition(), b.partition());
  }

  /** The app created its internal topics with the configurations Streams asks for. */
  private static void checkInternalTopics(Admin admin, String appId) throws Exception {
    String changelog = appId + "-" + STORE + "-changelog";
    String repartition = appId + "-" + STORE + "-repartition";
    ConfigResource cl = new ConfigResource(ConfigResource.Type.TOPIC, changelog);
    ConfigResource rp = new ConfigResource(ConfigResource.Type.TOPIC, repartition);
    Map<ConfigResource, Config> configs = admin.describeConfigs(List.of(cl, rp)).all().get();
    String clPolicy = configs.get(cl).get("cleanup.policy").value();
    check("compact".equals(clPolicy), changelog + " has cleanup.policy " + clPolicy);
    String rpPolicy = configs.get(rp).get("cleanup.policy").value();
    check("delete".equals(rpPolicy), repartition + " has cleanup.policy " + rpPolicy);
    String rpRetention = configs.get(rp).get("retention.ms").value();
    check("-1".equals(rpRetention), repartition + " has retention.ms " + rpRetention);
  }

  /**
   * Waits until the app is RUNNING and its group is Stable with a member: no rebalance is
   * pending that could take its tasks away mid-batch.
   */
  private static void awaitRunningInStableGroup(Admin admin, KafkaStreams s, String appId)
      throws Exception {
    long end = System.nanoTime() + DEADLINE.toNanos();
    String last = "";
    while (true) {
      failIfStreamsFailed();
      if (s.state() == KafkaStreams.State.RUNNING) {
        try {
          ConsumerGroupDescription g =
              admin.describeConsumerGroups(List.of(appId)).all().get().get(appId);
          Collection<?> members = g.members();
          last = g.groupState() + " with " + members.size() + " members";
          if (g.groupState() == GroupState.STABLE && members.size() == 1 && s.state() == KafkaStreams.State.RUNNING) {
            return;
          }
        } catch (Exception e) {
          last = e.toString();
        }
      } else {
        last = "app " + s.state();
      }
      check(System.nanoTime() < end, "the app never ran in a stable group: " + last);
      Thread.sleep(100);
    }
  }

  private static final long STARTED = System.nanoTime();

  private static void progress(String what) {
    System.out.printf("%.1f s: %s%n", (System.nanoTime() - STARTED) / 1e9, what);
  }

  private static void failIfStreamsFailed() {
    Throwable t = FAILURE.get();
    if (t != null) {
      t.printStackTrace();
      throw new IllegalStateException("a stream thread failed: " + t, t);
    }
  }

  private static void check(boolean ok, String what) {
    if (!ok) {
      throw new IllegalStateException(what);
    }
  }
}
