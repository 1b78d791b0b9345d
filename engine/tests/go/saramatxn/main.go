// sarama transactions against a broker: a transactional producer commits
// a transaction, aborts one and commits another; a read_committed
// consumer reads exactly the committed messages, a read_uncommitted one
// reads them all. Any difference fails with a message naming it.
//
// Usage: saramatxn BOOTSTRAP TOPIC MESSAGES_PER_TRANSACTION
package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAILED: "+format+"\n", args...)
	os.Exit(1)
}

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V3_6_0_0
	c.ClientID = "sluice-sarama-txn"
	return c
}

func main() {
	bootstrap, topic := os.Args[1], os.Args[2]
	n, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fail("messages per transaction: %v", err)
	}
	c := config()
	c.Producer.Idempotent = true
	c.Producer.Transaction.ID = topic + "-producer"
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Partitioner = sarama.NewRoundRobinPartitioner
	c.Net.MaxOpenRequests = 1
	p, err := sarama.NewSyncProducer([]string{bootstrap}, c)
	if err != nil {
		fail("producer: %v", err)
	}
	var want []string
	for _, txn := range []struct {
		prefix string
		commit bool
	}{{"first", true}, {"aborted", false}, {"second", true}} {
		if err := p.BeginTxn(); err != nil {
			fail("beginning %s: %v", txn.prefix, err)
		}
		var msgs []*sarama.ProducerMessage
		for i := 0; i < n; i++ {
			msgs = append(msgs, &sarama.ProducerMessage{
				Topic: topic,
				Value: sarama.StringEncoder(fmt.Sprintf("%s-%d", txn.prefix, i)),
			})
		}
		if err := p.SendMessages(msgs); err != nil {
			fail("producing %s: %v", txn.prefix, err)
		}
		if txn.commit {
			err = p.CommitTxn()
			for i := 0; i < n; i++ {
				want = append(want, fmt.Sprintf("%s-%d", txn.prefix, i))
			}
		} else {
			err = p.AbortTxn()
		}
		if err != nil {
			fail("ending %s: %v", txn.prefix, err)
		}
		fmt.Println("producer: transaction", txn.prefix, "ended, commit =", txn.commit)
	}
	if err := p.Close(); err != nil {
		fail("closing the producer: %v", err)
	}
	sort.Strings(want)

	committed := consume(bootstrap, topic, sarama.ReadCommitted, len(want))
	if strings.Join(committed, ",") != strings.Join(want, ",") {
		fail("read_committed read %d messages %v, want %d %v", len(committed), committed, len(want), want)
	}
	fmt.Println("read_committed:", len(committed), "messages, the aborted ones absent")
	all := consume(bootstrap, topic, sarama.ReadUncommitted, 3*n)
	aborted := 0
	for _, v := range all {
		if strings.HasPrefix(v, "aborted-") {
			aborted++
		}
	}
	if len(all) != 3*n || aborted != n {
		fail("read_uncommitted read %d messages (%d aborted), want %d (%d)", len(all), aborted, 3*n, n)
	}
	fmt.Println("read_uncommitted:", len(all), "messages, the aborted ones included")
	fmt.Println("sarama transactions: ok")
}

// consume reads every partition of topic from the oldest offset with
// isolation until want messages are in, and returns their values sorted.
// Messages that should not be there take the place of ones that should,
// so the caller's comparison finds them.
func consume(bootstrap, topic string, isolation sarama.IsolationLevel, want int) []string {
	c := config()
	c.Consumer.IsolationLevel = isolation
	c.Consumer.Return.Errors = true
	consumer, err := sarama.NewConsumer([]string{bootstrap}, c)
	if err != nil {
		fail("consumer: %v", err)
	}
	defer consumer.Close()
	partitions, err := consumer.Partitions(topic)
	if err != nil {
		fail("partitions of %s: %v", topic, err)
	}
	values := make(chan string)
	errs := make(chan error)
	for _, part := range partitions {
		pc, err := consumer.ConsumePartition(topic, part, sarama.OffsetOldest)
		if err != nil {
			fail("consuming %s/%d: %v", topic, part, err)
		}
		defer pc.AsyncClose()
		go func() {
			for m := range pc.Messages() {
				values <- string(m.Value)
			}
		}()
		go func() {
			for e := range pc.Errors() {
				errs <- e
			}
		}()
	}
	var got []string
	deadline := time.After(120 * time.Second)
	for len(got) < want {
		select {
		case v := <-values:
			got = append(got, v)
		case e := <-errs:
			fail("consuming %s: %v", topic, e)
		case <-deadline:
			fail("consuming %s: %d of %d messages read", topic, len(got), want)
		}
	}
	sort.Strings(got)
	return got
}
