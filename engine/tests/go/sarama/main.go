// Sarama, the Go client, against a Sluice broker: create a topic with the
// cluster admin, produce keyed messages with headers (acks=all) once per
// codec, read every partition back and check each message and its order
// and that nothing follows them, then consume the whole topic in a consumer
// group (every value sent read, nothing else, none twice within a
// session), commit, and read the committed offsets back. Exits non-zero on
// any mismatch.
//
// This is Debian's sarama 1.22 (2019). Two of its calls use versions that
// Kafka 4.0 dropped and Sluice does not serve either: ClusterAdmin's
// ListTopics (DescribeConfigs v0) and offset commits without a retention
// (OffsetCommit v1). The test lists topics through the client's metadata
// and sets a retention, which makes sarama commit with v2.
//
// Usage: sarama BOOTSTRAP TOPIC MESSAGES_PER_CODEC
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const partitions = 3

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func config() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_1_0_0
	cfg.ClientID = "sluice-sarama-test"
	return cfg
}

// Each codec's messages: "<codec>-<i>", keyed "k<i>", header seq=<i>.
// Sarama 1.22 sends zstd in Produce v3, which Kafka refuses too
// (zstd needs v7), so zstd is left to the clients that send it right.
var codecs = map[string]sarama.CompressionCodec{
	"none":   sarama.CompressionNone,
	"gzip":   sarama.CompressionGZIP,
	"snappy": sarama.CompressionSnappy,
	"lz4":    sarama.CompressionLZ4,
}

func produce(bootstrap, topic string, n int) map[int32][]string {
	sent := map[int32][]string{}
	for _, name := range []string{"none", "gzip", "snappy", "lz4"} {
		cfg := config()
		cfg.Producer.Return.Successes = true
		cfg.Producer.RequiredAcks = sarama.WaitForAll
		cfg.Producer.Compression = codecs[name]
		p, err := sarama.NewSyncProducer([]string{bootstrap}, cfg)
		if err != nil {
			fail("producer: %v", err)
		}
		for i := 0; i < n; i++ {
			value := fmt.Sprintf("%s-%d", name, i)
			msg := &sarama.ProducerMessage{
				Topic:   topic,
				Key:     sarama.StringEncoder(fmt.Sprintf("k%d", i)),
				Value:   sarama.StringEncoder(value),
				Headers: []sarama.RecordHeader{{Key: []byte("seq"), Value: []byte(strconv.Itoa(i))}},
			}
			partition, _, err := p.SendMessage(msg)
			if err != nil {
				fail("send %s: %v", value, err)
			}
			sent[partition] = append(sent[partition], value)
		}
		if err := p.Close(); err != nil {
			fail("producer close: %v", err)
		}
	}
	return sent
}

func readPartitions(bootstrap, topic string, sent map[int32][]string) {
	client, err := sarama.NewClient([]string{bootstrap}, config())
	if err != nil {
		fail("client: %v", err)
	}
	defer client.Close()
	c, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		fail("consumer: %v", err)
	}
	defer c.Close()
	for partition := int32(0); partition < partitions; partition++ {
		want := sent[partition]
		pc, err := c.ConsumePartition(topic, partition, sarama.OffsetOldest)
		if err != nil {
			fail("partition %d: %v", partition, err)
		}
		for i, value := range want {
			var m *sarama.ConsumerMessage
			select {
			case m = <-pc.Messages():
			case <-time.After(30 * time.Second):
				fail("partition %d: got %d of %d messages", partition, i, len(want))
			}
			if string(m.Value) != value || m.Offset != int64(i) {
				fail("partition %d offset %d: %q, want %q at %d", partition, m.Offset, m.Value, value, i)
			}
			seq := value[strings.LastIndex(value, "-")+1:]
			if string(m.Key) != "k"+seq || len(m.Headers) != 1 || string(m.Headers[0].Value) != seq {
				fail("partition %d offset %d: key %q headers %v for %q", partition, m.Offset, m.Key, m.Headers, value)
			}
			if m.Timestamp.IsZero() {
				fail("partition %d offset %d: no timestamp", partition, m.Offset)
			}
		}
		pc.Close()
		// Nothing after the acknowledged messages: the partition ends
		// right after the last one.
		end, err := client.GetOffset(topic, partition, sarama.OffsetNewest)
		if err != nil {
			fail("partition %d end offset: %v", partition, err)
		}
		if end != int64(len(want)) {
			fail("partition %d ends at %d, %d messages were sent to it", partition, end, len(want))
		}
	}
}

// groupHandler marks every message it is given and counts each value,
// so that a value read twice cannot stand in for one never read, and
// checks the order of every partition's reads.
type groupHandler struct {
	mu       sync.Mutex
	sent     map[string]bool
	times    map[string]int
	sessions int
	reads    map[int32]partitionRead
	done     chan struct{}
	once     sync.Once
}

// partitionRead is where a partition's reading stands.
type partitionRead struct {
	next    int64 // the offset after the last one read
	session int   // the group session that read it
}

// order checks a read of partition p at offset: the group's first read of
// a partition is at 0 (a new group reads from the oldest), every later one
// is the offset after the last, except that a new session (a rebalance)
// restarts from the last commit, which is at or before that offset.
// Sarama 1.22 commits in the background, so the exact restart offset is
// unknown; a gap, or a re-read within one session, is always wrong. Called
// with mu held.
func (h *groupHandler) order(p int32, offset int64) {
	r, seen := h.reads[p]
	switch {
	case !seen && offset != 0:
		fail("the group's first read of partition %d is at %d, not 0", p, offset)
	case !seen, offset == r.next:
	case offset < r.next && h.sessions > r.session:
	default:
		fail("partition %d: read %d in session %d after %d in session %d: a gap, or a re-read with no rebalance between",
			p, offset, h.sessions, r.next-1, r.session)
	}
	h.reads[p] = partitionRead{next: offset + 1, session: h.sessions}
}

func (h *groupHandler) Setup(sarama.ConsumerGroupSession) error {
	h.mu.Lock()
	h.sessions++
	h.mu.Unlock()
	return nil
}
func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *groupHandler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		s.MarkMessage(m, "")
		value := string(m.Value)
		h.mu.Lock()
		if !h.sent[value] {
			fail("the group read %q at %d/%d, which was never sent", value, m.Partition, m.Offset)
		}
		h.times[value]++
		h.order(m.Partition, m.Offset)
		if len(h.times) == len(h.sent) {
			h.once.Do(func() { close(h.done) })
		}
		h.mu.Unlock()
	}
	return nil
}

// check fails on a value read more than once within a single group
// session: only a new session (a rebalance) may read from the last commit
// again.
func (h *groupHandler) check() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sessions > 1 {
		return
	}
	for value, n := range h.times {
		if n > 1 {
			fail("%q read %d times in one group session", value, n)
		}
	}
}

func consumeInGroup(bootstrap, topic string, sent map[int32][]string) {
	total := 0
	for _, values := range sent {
		total += len(values)
	}
	cfg := config()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.CommitInterval = 100 * time.Millisecond
	cfg.Consumer.Offsets.Retention = 24 * time.Hour
	group, err := sarama.NewConsumerGroup([]string{bootstrap}, "sarama-group", cfg)
	if err != nil {
		fail("consumer group: %v", err)
	}
	h := &groupHandler{
		sent:  map[string]bool{},
		times: map[string]int{},
		reads: map[int32]partitionRead{},
		done:  make(chan struct{}),
	}
	for _, values := range sent {
		for _, value := range values {
			h.sent[value] = true
		}
	}
	if len(h.sent) != total {
		fail("%d distinct values among %d sent", len(h.sent), total)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for ctx.Err() == nil {
			if err := group.Consume(ctx, []string{topic}, h); err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "group session ended: %v\n", err)
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	select {
	case <-h.done:
	case <-time.After(90 * time.Second):
		h.mu.Lock()
		fail("the group consumed %d of %d messages", len(h.times), total)
	}
	cancel()
	// Closing commits what was marked and leaves the group.
	if err := group.Close(); err != nil {
		fail("group close: %v", err)
	}
	h.check()

	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, config())
	if err != nil {
		fail("admin: %v", err)
	}
	defer admin.Close()
	// Named partitions: sarama sends OffsetFetch v1, which cannot ask
	// for all of a group's offsets.
	asked := map[string][]int32{topic: {0, 1, 2}}
	offsets, err := admin.ListConsumerGroupOffsets("sarama-group", asked)
	if err != nil {
		fail("committed offsets: %v", err)
	}
	for partition := int32(0); partition < partitions; partition++ {
		block := offsets.GetBlock(topic, partition)
		want := int64(len(sent[partition]))
		if block == nil || block.Offset != want {
			fail("partition %d: committed %+v, want %d", partition, block, want)
		}
	}
}

func main() {
	if len(os.Args) != 4 {
		fail("usage: sarama BOOTSTRAP TOPIC MESSAGES_PER_CODEC")
	}
	bootstrap, topic := os.Args[1], os.Args[2]
	n, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fail("messages: %v", err)
	}
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, config())
	if err != nil {
		fail("admin: %v", err)
	}
	detail := &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}
	if err := admin.CreateTopic(topic, detail, false); err != nil {
		fail("create topic: %v", err)
	}
	admin.Close()
	client, err := sarama.NewClient([]string{bootstrap}, config())
	if err != nil {
		fail("client: %v", err)
	}
	listed, err := client.Partitions(topic)
	if err != nil || len(listed) != partitions {
		fail("partitions of %s: %v %v", topic, listed, err)
	}
	client.Close()

	sent := produce(bootstrap, topic, n)
	readPartitions(bootstrap, topic, sent)
	consumeInGroup(bootstrap, topic, sent)
	fmt.Printf("sarama: %d messages produced, read back and consumed in a group\n", 4*n)
}
