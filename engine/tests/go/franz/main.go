// franz-go against a broker: kadm creates and describes a topic, a
// producer writes keyed records with headers in every codec (idempotent,
// acks=all), a consumer group reads them back in per-partition order and
// commits, kadm finds the group's commits at the end offsets, and deletes
// the topic. Any difference from what was written fails with a message
// naming it.
//
// Usage: franz BOOTSTRAP TOPIC MESSAGES_PER_CODEC
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAILED: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	bootstrap, topic := os.Args[1], os.Args[2]
	perCodec, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fail("messages per codec: %v", err)
	}
	group := topic + "-group"
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	admin, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		fail("admin client: %v", err)
	}
	adm := kadm.NewClient(admin)
	created, err := adm.CreateTopics(ctx, 3, 1, nil, topic)
	if err != nil || created[topic].Err != nil {
		fail("creating %s: %v %v", topic, err, created[topic].Err)
	}
	details, err := adm.ListTopics(ctx, topic)
	if err != nil || len(details[topic].Partitions) != 3 {
		fail("listing %s: %v %v", topic, err, details[topic])
	}
	fmt.Println("kadm: created", topic, "with 3 partitions")

	written := map[int32]map[int64]string{}
	total := 0
	codecs := map[string]kgo.CompressionCodec{
		"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(),
		"snappy": kgo.SnappyCompression(), "lz4": kgo.Lz4Compression(),
		"zstd": kgo.ZstdCompression(),
	}
	for _, name := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		p, err := kgo.NewClient(
			kgo.SeedBrokers(bootstrap),
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.ProducerBatchCompression(codecs[name]),
			kgo.ProducerLinger(5*time.Millisecond),
			kgo.DefaultProduceTopic(topic),
		)
		if err != nil {
			fail("producer: %v", err)
		}
		var records []*kgo.Record
		for i := 0; i < perCodec; i++ {
			records = append(records, &kgo.Record{
				Key:   []byte(fmt.Sprintf("%s-%d", name, i%17)),
				Value: []byte(fmt.Sprintf("%s-value-%d-%s", name, i, strings.Repeat("x", i%50))),
				Headers: []kgo.RecordHeader{
					{Key: "codec", Value: []byte(name)},
					{Key: "n", Value: []byte(strconv.Itoa(i))},
				},
			})
		}
		results := p.ProduceSync(ctx, records...)
		if err := results.FirstErr(); err != nil {
			fail("producing %s: %v", name, err)
		}
		for _, r := range results {
			m := written[r.Record.Partition]
			if m == nil {
				m = map[int64]string{}
				written[r.Record.Partition] = m
			}
			if _, dup := m[r.Record.Offset]; dup {
				fail("two acknowledged records at %d/%d", r.Record.Partition, r.Record.Offset)
			}
			m[r.Record.Offset] = text(r.Record)
		}
		total += perCodec
		p.Close()
	}
	for part, m := range written {
		for o := int64(0); o < int64(len(m)); o++ {
			if _, ok := m[o]; !ok {
				fail("partition %d: offsets not contiguous, %d missing", part, o)
			}
		}
	}
	fmt.Println("producer:", total, "records acknowledged, offsets contiguous")

	c, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
	)
	if err != nil {
		fail("consumer: %v", err)
	}
	read := map[int32]map[int64]string{}
	count := 0
	for count < total {
		if ctx.Err() != nil {
			fail("consumed %d of %d in time", count, total)
		}
		fetches := c.PollFetches(ctx)
		fetches.EachError(func(t string, p int32, err error) {
			fail("fetching %s-%d: %v", t, p, err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			m := read[r.Partition]
			if m == nil {
				m = map[int64]string{}
				read[r.Partition] = m
			}
			if _, dup := m[r.Offset]; dup {
				fail("record %d/%d read twice", r.Partition, r.Offset)
			}
			m[r.Offset] = text(r)
			count++
		})
	}
	if err := c.CommitUncommittedOffsets(ctx); err != nil {
		fail("committing: %v", err)
	}
	c.Close()
	for part, m := range written {
		for o, w := range m {
			if read[part][o] != w {
				fail("%d/%d: read %q, wrote %q", part, o, read[part][o], w)
			}
		}
	}
	fmt.Println("consumer: read all", total, "records in order, with keys and headers")

	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		fail("fetching the group's offsets: %v", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		fail("listing end offsets: %v", err)
	}
	ends.Each(func(e kadm.ListedOffset) {
		got, ok := committed.Lookup(topic, e.Partition)
		if !ok || got.At != e.Offset {
			fail("%s-%d: committed %v, end %d", topic, e.Partition, got, e.Offset)
		}
	})
	groups, err := adm.DescribeGroups(ctx, group)
	if err != nil || groups[group].Err != nil {
		fail("describing %s: %v", group, err)
	}
	if _, err := adm.DeleteTopics(ctx, topic); err != nil {
		fail("deleting %s: %v", topic, err)
	}
	fmt.Println("kadm: group commits are the end offsets; deleted", topic)
	fmt.Println("franz-go: ok")
}

func text(r *kgo.Record) string {
	h := ""
	for _, x := range r.Headers {
		h += x.Key + "=" + string(x.Value) + ";"
	}
	return string(r.Key) + "|" + string(r.Value) + "|" + h
}
