// franz-go transactions against a broker: a transactional producer commits
// a transaction, aborts one and commits another; a read_committed consumer
// reads exactly the committed records, a read_uncommitted one reads all of
// them. Then a GroupTransactSession consumes the committed records in a
// group and writes them transformed to a second topic, its offsets
// committed in the same transactions; a read_committed consumer of that
// topic reads each input record's transform once, and the group's
// committed offsets are after the input's last records.
//
// Usage: txn BOOTSTRAP TOPIC OUTPUT_TOPIC RECORDS_PER_TRANSACTION
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
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
	bootstrap, topic, output := os.Args[1], os.Args[2], os.Args[3]
	n, err := strconv.Atoi(os.Args[4])
	if err != nil {
		fail("records per transaction: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	p, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.TransactionalID(topic+"-producer"),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
	)
	if err != nil {
		fail("producer: %v", err)
	}
	var want []string
	for _, txn := range []struct {
		prefix string
		commit kgo.TransactionEndTry
	}{{"first", kgo.TryCommit}, {"aborted", kgo.TryAbort}, {"second", kgo.TryCommit}} {
		if err := p.BeginTransaction(); err != nil {
			fail("beginning %s: %v", txn.prefix, err)
		}
		var records []*kgo.Record
		for i := 0; i < n; i++ {
			records = append(records, kgo.StringRecord(fmt.Sprintf("%s-%d", txn.prefix, i)))
		}
		if err := p.ProduceSync(ctx, records...).FirstErr(); err != nil {
			fail("producing %s: %v", txn.prefix, err)
		}
		if err := p.EndTransaction(ctx, txn.commit); err != nil {
			fail("ending %s: %v", txn.prefix, err)
		}
		if txn.commit == kgo.TryCommit {
			for _, r := range records {
				want = append(want, string(r.Value))
			}
		}
		fmt.Println("producer: transaction", txn.prefix, "ended, commit =", bool(txn.commit))
	}
	p.Close()
	sort.Strings(want)

	committed := consume(ctx, bootstrap, topic, kgo.ReadCommitted(), len(want))
	if strings.Join(committed, ",") != strings.Join(want, ",") {
		fail("read_committed read %d records %v, want %d %v", len(committed), committed, len(want), want)
	}
	fmt.Println("read_committed:", len(committed), "records, the aborted ones absent")
	all := consume(ctx, bootstrap, topic, kgo.ReadUncommitted(), 3*n)
	aborted := 0
	for _, v := range all {
		if strings.HasPrefix(v, "aborted-") {
			aborted++
		}
	}
	if len(all) != 3*n || aborted != n {
		fail("read_uncommitted read %d records (%d aborted), want %d (%d)", len(all), aborted, 3*n, n)
	}
	fmt.Println("read_uncommitted:", len(all), "records, the aborted ones included")

	transform(ctx, bootstrap, topic, output, len(want))
	out := consume(ctx, bootstrap, output, kgo.ReadCommitted(), len(want))
	var wantOut []string
	for _, v := range want {
		wantOut = append(wantOut, "t-"+v)
	}
	sort.Strings(wantOut)
	if strings.Join(out, ",") != strings.Join(wantOut, ",") {
		fail("the transformed topic holds %v, want %v", out, wantOut)
	}
	adm, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		fail("admin client: %v", err)
	}
	defer adm.Close()
	a := kadm.NewClient(adm)
	offsets, err := a.FetchOffsets(ctx, topic+"-group")
	if err != nil {
		fail("fetching the group's offsets: %v", err)
	}
	ends, err := a.ListEndOffsets(ctx, topic)
	if err != nil {
		fail("listing end offsets: %v", err)
	}
	// Every partition's log ends with the second transaction's commit
	// marker, which the group steps over but does not consume.
	ends.Each(func(e kadm.ListedOffset) {
		o, ok := offsets.Lookup(topic, e.Partition)
		if !ok || o.At != e.Offset-1 {
			fail("partition %d: the group committed %v, the end is %d after the last marker", e.Partition, o, e.Offset)
		}
	})
	fmt.Println("transact session:", len(out), "records transformed, offsets committed before the last markers")
	fmt.Println("franz-go transactions: ok")
}

// consume reads topic from the start with isolation until it holds want
// records and returns their values sorted. Records that should not be
// there take the place of ones that should, so the caller's comparison
// finds them.
func consume(ctx context.Context, bootstrap, topic string, isolation kgo.IsolationLevel, want int) []string {
	c, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(isolation),
	)
	if err != nil {
		fail("consumer: %v", err)
	}
	defer c.Close()
	var got []string
	for len(got) < want {
		fetches := c.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			fail("consuming %s: %d of %d records read: %v", topic, len(got), want, err)
		}
		fetches.EachError(func(t string, p int32, err error) {
			fail("fetching %s/%d: %v", t, p, err)
		})
		fetches.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	sort.Strings(got)
	return got
}

// transform copies records from topic to output as "t-" + value through a
// GroupTransactSession, a transaction per poll, until count are copied.
func transform(ctx context.Context, bootstrap, topic, output string, count int) {
	s, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(bootstrap),
		kgo.TransactionalID(topic+"-transform"),
		kgo.ConsumerGroup(topic+"-group"),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DefaultProduceTopic(output),
	)
	if err != nil {
		fail("transact session: %v", err)
	}
	defer s.Close()
	copied := 0
	for copied < count {
		fetches := s.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			fail("transforming: %d of %d copied: %v", copied, count, err)
		}
		fetches.EachError(func(t string, p int32, err error) {
			fail("fetching %s/%d: %v", t, p, err)
		})
		if fetches.NumRecords() == 0 {
			continue
		}
		if err := s.Begin(); err != nil {
			fail("beginning a transform transaction: %v", err)
		}
		var records []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) {
			records = append(records, kgo.StringRecord("t-"+string(r.Value)))
		})
		if err := s.ProduceSync(ctx, records...).FirstErr(); err != nil {
			fail("producing transforms: %v", err)
		}
		committed, err := s.End(ctx, kgo.TryCommit)
		if err != nil {
			fail("ending a transform transaction: %v", err)
		}
		if !committed {
			fail("a transform transaction was aborted")
		}
		copied += len(records)
	}
}
