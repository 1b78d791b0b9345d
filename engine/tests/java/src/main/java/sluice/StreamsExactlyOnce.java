package sluice;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
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

/**
 * Kafka Streams with processing.guarantee=exactly_once_v2: the word count of
 * {@link StreamsWordCount} (a repartition topic, a store with a changelog topic) with the
 * record cache off, so every word read emits its word's next count. Processed exactly once,
 * the output topic read with read_committed holds for each word the counts 1, 2, ... N in
 * order, N being how often the word occurs in the input; a line processed twice takes its
 * words' counts past their totals, a count written twice or lost breaks the run, a line lost
 * leaves N short.
 *
 * <p>Three modes, run as separate processes so the caller can SIGKILL the application and
 * kill brokers between them:
 *
 * <ul>
 *   <li>{@code feed BOOTSTRAP APP_ID}: creates the input and output topics (three partitions,
 *       three replicas) if missing and appends lines 0, 1, ... to the input with an idempotent
 *       producer, about two hundred a second, until its standard input ends; prints {@code fed
 *       N} every hundred lines and at last {@code fed lines 0..N}. The input never runs dry
 *       while the caller kills things, so every kill lands mid-run.
 *   <li>{@code app BOOTSTRAP APP_ID STATE_DIR}: runs the application until killed or until
 *       its standard input ends (then closes it and exits). Every hundred input lines it reads
 *       it prints {@code at N}, N the latest line read so far, and {@code state S} at each
 *       state change.
 *   <li>{@code verify BOOTSTRAP APP_ID LINES}: reads the output with read_committed until
 *       every word's latest count is its total over lines 0..LINES, checking each word's counts
 *       step by one from 1; then waits until the application's group has committed the input
 *       topic at its ends (read with requireStable). Prints {@code exactly
 *       once: ok}, and how many output records only read_uncommitted sees (those of aborted
 *       transactions).
 * </ul>
 */
public final class StreamsExactlyOnce {
  private static final Duration DEADLINE = Duration.ofSeconds(240);
  private static final String[] WORDS = {
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike"
  };
  private static final String STORE = "counts";
  private static final int PARTITIONS = 3;

  public static void main(String[] args) {
    // Stream threads keep the JVM alive: leave with an exit status either way.
    try {
      switch (args[0]) {
        case "feed" -> feed(args[1], args[2]);
        case "app" -> app(args[1], args[2], args[3]);
        case "verify" -> verify(args[1], args[2], Integer.parseInt(args[3]));
        default -> throw new IllegalArgumentException("unknown mode " + args[0]);
      }
    } catch (Throwable t) {
      t.printStackTrace();
      System.out.flush();
      System.exit(1);
    }
    System.out.flush();
    System.exit(0);
  }

  private static String input(String appId) {
    return appId + "-lines";
  }

  private static String output(String appId) {
    return appId + "-counts";
  }

  /** Line i: between one and five words of WORDS. */
  private static String line(int i) {
    List<String> words = new ArrayList<>();
    for (int j = 0; j <= i % 5; j++) {
      words.add(WORDS[(i * 7 + j * j * 3 + j) % WORDS.length]);
    }
    return String.join(" ", words);
  }

  private static void feed(String bootstrap, String appId) throws Exception {
    Properties a = new Properties();
    a.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    try (Admin admin = Admin.create(a)) {
      for (String t : List.of(input(appId), output(appId))) {
        try {
          admin.createTopics(List.of(new NewTopic(t, PARTITIONS, (short) 3))).all().get();
        } catch (ExecutionException e) {
          if (!(e.getCause() instanceof TopicExistsException)) {
            throw e;
          }
        }
      }
    }
    AtomicBoolean stop = new AtomicBoolean();
    Thread stdin =
        new Thread(
            () -> {
              try {
                BufferedReader r =
                    new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
                while (r.readLine() != null) {
                  // Feeds until standard input ends.
                }
              } catch (Exception e) {
                e.printStackTrace();
              }
              stop.set(true);
            });
    stdin.start();
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
    AtomicReference<Exception> failed = new AtomicReference<>();
    int fed = 0;
    try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
      while (!stop.get()) {
        producer.send(
            new ProducerRecord<>(input(appId), "line-" + fed, line(fed)),
            (m, e) -> {
              if (e != null) {
                failed.compareAndSet(null, e);
              }
            });
        fed++;
        if (fed % 100 == 0) {
          System.out.println("fed " + fed);
          System.out.flush();
        }
        // About two hundred lines a second: the application keeps up, so each of its
        // transactions carries lines through both sub-topologies.
        Thread.sleep(5);
      }
      producer.flush();
    }
    if (failed.get() != null) {
      throw failed.get();
    }
    System.out.println("fed lines 0.." + fed);
  }

  private static void app(String bootstrap, String appId, String stateDir) throws Exception {
    AtomicLong processed = new AtomicLong();
    AtomicLong latest = new AtomicLong();
    StreamsBuilder b = new StreamsBuilder();
    b.<String, String>stream(input(appId))
        .peek(
            (k, v) -> {
              long n = processed.incrementAndGet();
              long at = latest.accumulateAndGet(Long.parseLong(k.substring("line-".length())), Math::max);
              if (n % 100 == 0) {
                System.out.println("at " + at);
                System.out.flush();
              }
            })
        .flatMapValues(v -> Arrays.asList(v.split(" ")))
        .groupBy((k, w) -> w)
        .count(Materialized.as(STORE))
        .toStream()
        .to(output(appId), Produced.with(Serdes.String(), Serdes.Long()));
    Topology topology = b.build();

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
    // Transactions of about half a second, their records sent as they come: a kill aborts
    // records already on the brokers.
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 500);
    p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), 5);
    // Every word read emits its count: no record cache coalescing updates.
    p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
    // The changelog and repartition topics outlive a broker.
    p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 3);
    p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
    p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
    // A killed instance leaves the group within seconds, not the default 45.
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 1000);
    KafkaStreams streams = new KafkaStreams(topology, p);
    streams.setStateListener(
        (now, before) -> {
          System.out.println("state " + now);
          System.out.flush();
        });
    streams.setUncaughtExceptionHandler(
        e -> {
          System.out.println("a stream thread failed:");
          e.printStackTrace(System.out);
          System.out.flush();
          // Exit from another thread: close() waits for this one.
          new Thread(() -> System.exit(1)).start();
          return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    streams.start();
    BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    while (stdin.readLine() != null) {
      // Runs until standard input ends.
    }
    boolean closed =
        streams.close(
            CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP)
                .withTimeout(DEADLINE));
    check(closed, "the application did not close in time");
    System.out.println("closed after processing " + processed.get() + " lines");
  }

  private static KafkaConsumer<String, Long> reader(String bootstrap, String isolation) {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class);
    return new KafkaConsumer<>(p);
  }

  private static List<TopicPartition> partitions(String topic) {
    List<TopicPartition> ps = new ArrayList<>();
    for (int i = 0; i < PARTITIONS; i++) {
      ps.add(new TopicPartition(topic, i));
    }
    return ps;
  }

  private static void verify(String bootstrap, String appId, int lines) throws Exception {
    Map<String, Long> expected = new TreeMap<>();
    for (int i = 0; i < lines; i++) {
      for (String w : line(i).split(" ")) {
        expected.merge(w, 1L, Long::sum);
      }
    }
    long records = expected.values().stream().mapToLong(Long::longValue).sum();
    Map<String, Long> latest = new TreeMap<>();
    long committedRecords = 0;
    try (KafkaConsumer<String, Long> reader = reader(bootstrap, "read_committed")) {
      reader.assign(partitions(output(appId)));
      long end = System.nanoTime() + DEADLINE.toNanos();
      while (!latest.equals(expected)) {
        check(System.nanoTime() < end, "counts " + latest + ", expected " + expected);
        for (ConsumerRecord<String, Long> r : reader.poll(Duration.ofMillis(200))) {
          committedRecords++;
          long before = latest.getOrDefault(r.key(), 0L);
          check(
              r.value() == before + 1,
              r.key() + " counted " + r.value() + " after " + before + " at " + r.topic() + "-"
                  + r.partition() + "@" + r.offset() + ": a count written twice or lost");
          check(
              r.value() <= expected.getOrDefault(r.key(), 0L),
              r.key() + " counted " + r.value() + " times, more than its "
                  + expected.getOrDefault(r.key(), 0L));
          latest.put(r.key(), r.value());
        }
      }
    }
    check(committedRecords == records, committedRecords + " committed outputs, not " + records);
    System.out.println("read_committed: " + records + " counts, each word's 1.." + "N in order");

    awaitCommitted(bootstrap, appId);
    System.out.println("the group committed the input topic at its ends");

    // read_uncommitted also returns the records of aborted transactions: those a killed
    // instance wrote after its last commit. Not asserted, for what a kill interrupts varies.
    String changelog = appId + "-" + STORE + "-changelog";
    long abortedOutputs =
        count(bootstrap, output(appId), "read_uncommitted") - count(bootstrap, output(appId), "read_committed");
    long abortedChanges =
        count(bootstrap, changelog, "read_uncommitted") - count(bootstrap, changelog, "read_committed");
    System.out.println(
        "exactly once: ok ("
            + lines
            + " lines, "
            + records
            + " words; aborted transactions left "
            + abortedOutputs
            + " records in the output topic and "
            + abortedChanges
            + " in the changelog topic that read_uncommitted sees)");
  }

  /** The records of TOPIC up to its end (for read_committed, its last stable offset). */
  private static long count(String bootstrap, String topic, String isolation) {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
    long n = 0;
    try (KafkaConsumer<byte[], byte[]> reader = new KafkaConsumer<>(p)) {
      List<TopicPartition> ps = partitions(topic);
      reader.assign(ps);
      Map<TopicPartition, Long> ends = reader.endOffsets(ps);
      long end = System.nanoTime() + DEADLINE.toNanos();
      while (ps.stream().anyMatch(tp -> reader.position(tp) < ends.get(tp))) {
        check(System.nanoTime() < end, isolation + " never reached the ends " + ends + " of " + topic);
        n += reader.poll(Duration.ofMillis(200)).count();
      }
    }
    return n;
  }

  /**
   * Waits until the application's group has committed every partition of the input topic at
   * its end offset, asking for stable offsets (none pending in an open transaction). (The
   * repartition topic's ends lie past COMMIT markers the application need not commit past.)
   */
  private static void awaitCommitted(String bootstrap, String appId) throws Exception {
    Properties a = new Properties();
    a.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    try (Admin admin = Admin.create(a)) {
      Map<TopicPartition, OffsetSpec> specs = new TreeMap<>(StreamsExactlyOnce::compare);
      for (TopicPartition tp : partitions(input(appId))) {
        specs.put(tp, OffsetSpec.latest());
      }
      long end = System.nanoTime() + DEADLINE.toNanos();
      while (true) {
        Map<TopicPartition, Long> ends =
            admin.listOffsets(specs).all().get().entrySet().stream()
                .collect(Collectors.toMap(Map.Entry::getKey, e -> e.getValue().offset()));
        Map<TopicPartition, OffsetAndMetadata> committed =
            admin
                .listConsumerGroupOffsets(appId, new ListConsumerGroupOffsetsOptions().requireStable(true))
                .partitionsToOffsetAndMetadata()
                .get();
        List<String> behind = new ArrayList<>();
        for (Map.Entry<TopicPartition, Long> e : ends.entrySet()) {
          OffsetAndMetadata c = committed.get(e.getKey());
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
  }

  private static int compare(TopicPartition a, TopicPartition b) {
    int c = a.topic().compareTo(b.topic());
    return c != 0 ? c : Integer.compare(a.partition(), b.partition());
  }

  private static void check(boolean ok, String what) {
    if (!ok) {
      throw new IllegalStateException(what);
    }
  }
}
