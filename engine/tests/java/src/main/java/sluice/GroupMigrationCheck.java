package sluice;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
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
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Online migration of a group between the classic protocol and the consumer
 * group protocol (KIP-848) with Apache Kafka's Java client, as an operator
 * rolls a deployment: while a producer writes, three members with {@code
 * group.protocol=classic} share a topic; each in turn is stopped and
 * replaced by one with {@code group.protocol=consumer} (the first
 * replacement turns the classic group with members into a consumer group),
 * then each of those in turn by a classic one again (the last replacement
 * turns it back). Members commit after every poll and report each record
 * they read with their generation or member epoch. The check: every
 * acknowledged record is read; none is read twice by one member in one
 * generation; a record read by two members is explained by a failed commit;
 * the group is a consumer group in the middle and a classic one at the end,
 * Stable, with committed offsets at the end offsets.
 *
 * <p>With {@code static}, every member has a {@code group.instance.id} (one
 * per slot) and each replacement is a new incarnation of a static member:
 * the classic ones send no LeaveGroup when they stop, and the replacement
 * under the other protocol takes their place, converting the group when it
 * replaces the first classic member (upgrade) or the last consumer-protocol
 * member (downgrade).
 *
 * <p>Usage: GroupMigrationCheck BOOTSTRAP TOPIC MESSAGES [static], or, as a
 * member, GroupMigrationCheck --member BOOTSTRAP TOPIC GROUP NAME PROTOCOL
 * INSTANCE (INSTANCE "-" for none).
 */
public final class GroupMigrationCheck {
  private static final Duration DEADLINE = Duration.ofSeconds(150);
  private static final int PARTITIONS = 6;

  public static void main(String[] args) throws Exception {
    if (args[0].equals("--member")) {
      member(args[1], args[2], args[3], args[4], args[5], args[6]);
      return;
    }
    boolean statics = args.length > 3 && args[3].equals("static");
    new GroupMigrationCheck(args[0], args[1], Integer.parseInt(args[2]), statics).run();
    System.out.println("group migration: ok");
  }

  // ---- a member process -------------------------------------------------

  /** Reads and commits until stdin says "stop", then leaves the group. */
  private static void member(
      String bootstrap, String topic, String group, String name, String protocol, String instance)
      throws Exception {
    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    AtomicBoolean stop = new AtomicBoolean();
    Thread stdin =
        new Thread(
            () -> {
              try (BufferedReader r =
                  new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                  if (line.equals("stop")) {
                    break;
                  }
                }
              } catch (Exception e) {
                // The parent went away: stop as well.
              }
              stop.set(true);
            });
    stdin.setDaemon(true);
    stdin.start();
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
    p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
    p.put(ConsumerConfig.CLIENT_ID_CONFIG, name);
    if (!instance.equals("-")) {
      p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, instance);
    }
    if (protocol.equals("classic")) {
      // Short enough that a member told to rejoin does so within a second.
      p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
      p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
    }
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "50");
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
      c.subscribe(
          List.of(topic),
          new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> parts) {
              out.println("REVOKED " + name + " " + parts);
            }

            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> parts) {
              out.println("ASSIGNED " + name + " " + parts);
            }

            @Override
            public void onPartitionsLost(Collection<TopicPartition> parts) {
              out.println("LOST " + name + " " + parts);
            }
          });
      while (!stop.get()) {
        var records = c.poll(Duration.ofMillis(200));
        if (records.isEmpty()) {
          continue;
        }
        int generation = c.groupMetadata().generationId();
        StringBuilder b = new StringBuilder();
        for (ConsumerRecord<String, String> r : records) {
          b.append("R ").append(name).append(' ').append(generation).append(' ');
          b.append(r.partition()).append(' ').append(r.offset()).append(' ');
          b.append(r.value()).append('\n');
        }
        out.print(b);
        try {
          c.commitSync(Duration.ofSeconds(30));
        } catch (Exception e) {
          out.println("COMMIT-FAILED " + name + " " + e);
        }
      }
      out.println("LEAVING " + name);
    }
    out.println("LEFT " + name);
  }

  // ---- the check --------------------------------------------------------

  private final String bootstrap;
  private final String topic;
  private final int messages;
  private final String group;
  private final boolean statics;
  private final Map<String, Member> members = new ConcurrentHashMap<>();

  private GroupMigrationCheck(String bootstrap, String topic, int messages, boolean statics) {
    this.bootstrap = bootstrap;
    this.topic = topic;
    this.messages = messages;
    this.group = topic + "-group";
    this.statics = statics;
  }

  /** A member JVM and what it has reported. */
  private static final class Member {
    final String name;
    final Process process;
    final List<String> lines = new ArrayList<>();

    Member(String name, Process process) {
      this.name = name;
      this.process = process;
      Thread reader =
          new Thread(
              () -> {
                try (BufferedReader r =
                    new BufferedReader(
                        new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
                  String line;
                  while ((line = r.readLine()) != null) {
                    synchronized (lines) {
                      lines.add(line);
                    }
                  }
                } catch (Exception e) {
                  // The process ended.
                }
              });
      reader.setDaemon(true);
      reader.start();
    }

    List<String> snapshot() {
      synchronized (lines) {
        return new ArrayList<>(lines);
      }
    }

    long reads() {
      return snapshot().stream().filter(l -> l.startsWith("R ")).count();
    }

    void stop() throws Exception {
      process.getOutputStream().write("stop\n".getBytes(StandardCharsets.UTF_8));
      process.getOutputStream().flush();
    }
  }

  /** Starts `name` in slot `slot` (its instance id, when static). */
  private Member start(String name, String protocol, int slot) throws Exception {
    String java = ProcessHandle.current().info().command().orElse("java");
    List<String> command =
        List.of(
            java,
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            System.getProperty("java.class.path"),
            GroupMigrationCheck.class.getName(),
            "--member",
            bootstrap,
            topic,
            group,
            name,
            protocol,
            statics ? "slot-" + slot : "-");
    ProcessBuilder pb = new ProcessBuilder(command);
    pb.redirectError(ProcessBuilder.Redirect.INHERIT);
    Member m = new Member(name, pb.start());
    members.put(name, m);
    return m;
  }

  private void run() throws Exception {
    Properties ap = new Properties();
    ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    try (Admin admin = Admin.create(ap)) {
      runWith(admin);
    } catch (Throwable e) {
      for (Member m : members.values()) {
        for (String l : m.snapshot()) {
          if (!l.startsWith("R ")) {
            System.out.println(l);
          }
        }
      }
      throw e;
    } finally {
      for (Member m : members.values()) {
        m.process.destroyForcibly();
      }
    }
  }

  /** Stops `old` and starts `name` speaking `protocol` in its slot, once it reads. */
  private Member replace(Member old, String name, String protocol, int slot) throws Exception {
    old.stop();
    waitFor(old.name + " to leave", () -> old.snapshot().contains("LEFT " + old.name));
    Member m = start(name, protocol, slot);
    waitFor(name + " to read", () -> m.reads() > 0);
    System.out.println("replaced " + old.name + " by " + name + " (" + protocol + ")");
    return m;
  }

  private void runWith(Admin admin) throws Exception {
    admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get();
    List<Member> live = new ArrayList<>();
    for (int i = 1; i <= 3; i++) {
      live.add(start("c" + i, "classic", i));
    }
    Producer producer = new Producer();
    producer.start();
    waitFor("c1, c2 and c3 to read", () -> live.stream().allMatch(m -> m.reads() > 0));
    waitFor("a Stable classic group of 3", () -> stable(admin, GroupType.CLASSIC, 3));
    // The upgrade: after the first replacement the group is a consumer
    // group with two classic members in it.
    for (int i = 0; i < 3; i++) {
      live.set(i, replace(live.get(i), "u" + (i + 1), "consumer", i + 1));
      check(type(admin) == GroupType.CONSUMER, "a consumer group after u" + (i + 1));
      // Stable: every member, classic or not, reached its target.
      waitFor("a Stable consumer group of 3", () -> stable(admin, GroupType.CONSUMER, 3));
    }
    // The downgrade: classic members join the consumer group; when the
    // last consumer-protocol member leaves it is a classic group again.
    for (int i = 0; i < 3; i++) {
      live.set(i, replace(live.get(i), "d" + (i + 1), "classic", i + 1));
      if (i < 2) {
        waitFor("a Stable consumer group of 3", () -> stable(admin, GroupType.CONSUMER, 3));
      }
    }
    waitFor("a Stable classic group of 3", () -> stable(admin, GroupType.CLASSIC, 3));
    producer.done.set(true);
    producer.join(DEADLINE.toMillis());
    check(!producer.isAlive() && producer.failure.get() == null, "producer: " + producer.failure);
    waitFor("every record to be read", () -> missing(producer.acked).isEmpty());
    checkOffsets(admin);
    for (Member m : live) {
      m.stop();
    }
    waitFor(
        "d1, d2 and d3 to leave",
        () -> live.stream().allMatch(m -> m.snapshot().contains("LEFT " + m.name)));
    checkReads();
  }

  /** Writes at least MESSAGES records at a steady pace until told to stop. */
  private final class Producer extends Thread {
    final Set<String> acked = ConcurrentHashMap.newKeySet();
    final AtomicBoolean done = new AtomicBoolean();
    final AtomicReference<Exception> failure = new AtomicReference<>();

    @Override
    public void run() {
      Properties p = new Properties();
      p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
      p.put(ProducerConfig.ACKS_CONFIG, "all");
      p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
      p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
      try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
        for (int i = 0; i < messages || !done.get(); i++) {
          String v = "v" + i;
          producer.send(
              new ProducerRecord<>(topic, "k" + i, v),
              (md, e) -> {
                if (e == null) {
                  acked.add(v);
                } else {
                  failure.compareAndSet(null, e);
                }
              });
          if (i % 100 == 99) {
            producer.flush();
            Thread.sleep(50); // pacing the load, not synchronisation
          }
        }
        producer.flush();
      } catch (Exception e) {
        failure.compareAndSet(null, e);
      }
    }
  }

  private Set<String> missing(Set<String> acked) {
    Set<String> read = new HashSet<>();
    for (Member m : members.values()) {
      for (String l : m.snapshot()) {
        if (l.startsWith("R ")) {
          read.add(l.split(" ")[5]);
        }
      }
    }
    Set<String> out = new HashSet<>(acked);
    out.removeAll(read);
    return out;
  }

  private GroupType type(Admin admin) throws Exception {
    return admin.describeConsumerGroups(List.of(group)).all().get().get(group).type();
  }

  private boolean stable(Admin admin, GroupType type, int size) throws Exception {
    ConsumerGroupDescription d =
        admin.describeConsumerGroups(List.of(group)).all().get().get(group);
    return d.type() == type && d.groupState() == GroupState.STABLE && d.members().size() == size;
  }

  private void checkOffsets(Admin admin) throws Exception {
    Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
    for (int p = 0; p < PARTITIONS; p++) {
      latest.put(new TopicPartition(topic, p), OffsetSpec.latest());
    }
    var ends = admin.listOffsets(latest).all().get();
    waitFor(
        "committed offsets at the end offsets",
        () -> {
          Map<TopicPartition, OffsetAndMetadata> committed =
              admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
          for (var e : ends.entrySet()) {
            OffsetAndMetadata c = committed.get(e.getKey());
            if (c == null || c.offset() != e.getValue().offset()) {
              return false;
            }
          }
          return true;
        });
  }

  /** No record read twice by one member in one generation; two readers only after a failed commit. */
  private void checkReads() {
    Map<String, List<String[]>> byRecord = new HashMap<>();
    Set<String> failedCommit = new HashSet<>();
    for (Member m : members.values()) {
      for (String l : m.snapshot()) {
        if (l.startsWith("R ")) {
          String[] f = l.split(" ");
          byRecord.computeIfAbsent(f[3] + "/" + f[4], k -> new ArrayList<>()).add(f);
        } else if (l.startsWith("COMMIT-FAILED ")) {
          failedCommit.add(l.split(" ")[1]);
          System.out.println(l);
        }
      }
    }
    int duplicates = 0;
    for (var e : byRecord.entrySet()) {
      List<String[]> reads = e.getValue();
      Set<String> readers = new HashSet<>();
      for (String[] f : reads) {
        check(
            readers.add(f[1] + "@" + f[2]),
            "record " + e.getKey() + " read twice by " + f[1] + " in generation " + f[2]);
      }
      if (reads.size() > 1) {
        duplicates++;
        boolean explained = reads.stream().anyMatch(f -> failedCommit.contains(f[1]));
        check(explained, "record " + e.getKey() + " read by " + readers + " with no failed commit");
      }
    }
    System.out.println(byRecord.size() + " records read, " + duplicates + " read twice");
  }

  interface Condition {
    boolean holds() throws Exception;
  }

  private static void waitFor(String what, Condition c) throws Exception {
    long deadline = System.nanoTime() + DEADLINE.toNanos();
    while (!c.holds()) {
      if (System.nanoTime() > deadline) {
        throw new AssertionError("timed out waiting for " + what);
      }
      Thread.sleep(100);
    }
  }

  private static void check(boolean ok, String what) {
    if (!ok) {
      throw new AssertionError(what);
    }
  }
}
