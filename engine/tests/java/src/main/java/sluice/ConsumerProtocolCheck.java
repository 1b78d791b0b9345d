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
import java.util.concurrent.atomic.AtomicInteger;
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
 * The consumer group protocol (KIP-848, {@code group.protocol=consumer}) with
 * Apache Kafka's Java client. Members run as separate JVMs so one can be
 * killed with SIGKILL: while a producer writes, three members share a topic,
 * one is killed (the broker fences it after its session timeout and hands
 * its partitions on), a static member joins and leaves, and a new
 * incarnation of it joins and leaves too. Every member
 * commits after each poll and reports each record it reads with its member
 * epoch. The check: every acknowledged record is read; a record is read
 * twice only when its first reader was the killed member or its commit
 * failed (never twice by one member within one epoch); the admin client
 * describes a Stable consumer-type group whose committed offsets are the
 * end offsets.
 *
 * <p>Usage: ConsumerProtocolCheck BOOTSTRAP TOPIC MESSAGES, or, as a member,
 * ConsumerProtocolCheck --member BOOTSTRAP TOPIC GROUP NAME.
 */
public final class ConsumerProtocolCheck {
  private static final Duration DEADLINE = Duration.ofSeconds(150);

  public static void main(String[] args) throws Exception {
    if (args[0].equals("--member")) {
      member(args[1], args[2], args[3], args[4], args.length > 5 ? args[5] : null);
      return;
    }
    new ConsumerProtocolCheck(args[0], args[1], Integer.parseInt(args[2])).run();
    System.out.println("consumer protocol: ok");
  }

  // ---- a member process -------------------------------------------------

  /** Reads and commits until stdin says "stop", then leaves the group. */
  private static void member(
      String bootstrap, String topic, String group, String name, String instanceId)
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
    p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
    p.put(ConsumerConfig.CLIENT_ID_CONFIG, name);
    if (instanceId != null) {
      p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, instanceId);
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
        int epoch = c.groupMetadata().generationId();
        StringBuilder b = new StringBuilder();
        for (ConsumerRecord<String, String> r : records) {
          b.append("R ").append(name).append(' ').append(epoch).append(' ');
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
  private final Map<String, Member> members = new ConcurrentHashMap<>();

  private ConsumerProtocolCheck(String bootstrap, String topic, int messages) {
    this.bootstrap = bootstrap;
    this.topic = topic;
    this.messages = messages;
    this.group = topic + "-group";
  }

  /** A member JVM and what it has reported. */
  private static final class Member {
    final String name;
    final Process process;
    final List<String> lines = new ArrayList<>();
    final Thread reader;

    Member(String name, Process process) {
      this.name = name;
      this.process = process;
      this.reader =
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
                  // The process was killed.
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

  private Member start(String name, String... instanceId) throws Exception {
    String java = ProcessHandle.current().info().command().orElse("java");
    List<String> command =
        new ArrayList<>(
            List.of(
                java,
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp",
                System.getProperty("java.class.path"),
                ConsumerProtocolCheck.class.getName(),
                "--member",
                bootstrap,
                topic,
                group,
                name));
    command.addAll(List.of(instanceId));
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

  private void runWith(Admin admin) throws Exception {
    {
      admin.createTopics(List.of(new NewTopic(topic, 6, (short) 1))).all().get();
      Member m1 = start("m1");
      Member m2 = start("m2");
      Member m3 = start("m3");
      Producer producer = new Producer();
      producer.start();
      waitFor("m1, m2 and m3 to read", () -> m1.reads() > 0 && m2.reads() > 0 && m3.reads() > 0);
      m2.process.destroyForcibly().waitFor();
      System.out.println("killed m2 after " + m2.reads() + " reads");
      // m4 and m5 are one static member (group.instance.id) in turn: m4
      // leaves temporarily (epoch -2) and m5 takes its place, or, if m5
      // starts after m4's session expired, joins afresh.
      Member m4 = start("m4", "static-member");
      waitFor("m4 to read", () -> m4.reads() > 0);
      m4.stop();
      waitFor("m4 to leave", () -> m4.snapshot().contains("LEFT m4"));
      Member m5 = start("m5", "static-member");
      waitFor("m5 to read", () -> m5.reads() > 0);
      m5.stop();
      waitFor("m5 to leave", () -> m5.snapshot().contains("LEFT m5"));
      producer.done.set(true);
      producer.join(DEADLINE.toMillis());
      check(!producer.isAlive() && producer.failure.get() == null, "producer: " + producer.failure);
      waitFor("every record to be read", () -> missing(producer.acked).isEmpty());
      waitFor("a Stable consumer group", () -> stable(admin));
      checkOffsets(admin);
      m1.stop();
      m3.stop();
      waitFor(
          "m1 and m3 to leave",
          () -> m1.snapshot().contains("LEFT m1") && m3.snapshot().contains("LEFT m3"));
      checkReads();
      for (Member m : List.of(m4, m5)) {
        m.snapshot().stream().filter(l -> l.startsWith("ASSIGNED")).forEach(System.out::println);
      }
    }
  }

  /** Writes MESSAGES records at a steady pace, so members come and go under load. */
  private final class Producer extends Thread {
    final Set<String> acked = ConcurrentHashMap.newKeySet();
    final AtomicBoolean done = new AtomicBoolean();
    final java.util.concurrent.atomic.AtomicReference<Exception> failure =
        new java.util.concurrent.atomic.AtomicReference<>();

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

  private boolean stable(Admin admin) throws Exception {
    ConsumerGroupDescription d =
        admin.describeConsumerGroups(List.of(group)).all().get().get(group);
    check(d.type() == GroupType.CONSUMER, "group type " + d.type());
    return d.groupState() == GroupState.STABLE && d.members().size() == 2;
  }

  private void checkOffsets(Admin admin) throws Exception {
    Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
    for (int p = 0; p < 6; p++) {
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

  /** No record read twice by one member in one epoch; duplicates only after a kill or failed commit. */
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
    AtomicInteger duplicates = new AtomicInteger();
    for (var e : byRecord.entrySet()) {
      List<String[]> reads = e.getValue();
      Set<String> readers = new HashSet<>();
      for (String[] f : reads) {
        check(readers.add(f[1] + "@" + f[2]), "record " + e.getKey() + " read twice by " + f[1]
            + " in epoch " + f[2]);
      }
      if (reads.size() > 1) {
        duplicates.incrementAndGet();
        boolean explained =
            reads.stream().anyMatch(f -> f[1].equals("m2") || failedCommit.contains(f[1]));
        check(explained, "record " + e.getKey() + " read by " + readers + " without a kill");
      }
    }
    System.out.println(
        byRecord.size() + " records read, " + duplicates + " re-read after m2 was killed");
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
