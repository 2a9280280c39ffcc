package jetstream

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/signalbox-dev/signalbox/broker"
)

// These helpers mirror brokertest's, which are unexported there.

func subscribe(
	t *testing.T, bus broker.Bus, topic, group, consumer string, lease time.Duration,
) broker.Subscription {
	t.Helper()
	sub, err := bus.Subscribe(context.Background(), topic, group,
		broker.SubscribeConfig{Consumer: consumer, Lease: lease})
	if err != nil {
		t.Fatalf("Subscribe(%q, %q, %q): %v", topic, group, consumer, err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

func publish(t *testing.T, bus broker.Bus, topic string, payloads ...string) {
	t.Helper()
	bs := make([][]byte, len(payloads))
	for i, p := range payloads {
		bs[i] = []byte(p)
	}
	if err := bus.Publish(context.Background(), topic, bs...); err != nil {
		t.Fatalf("Publish(%q): %v", topic, err)
	}
}

// fetchN fetches until it has n messages, for at most 10s.
func fetchN(t *testing.T, sub broker.Subscription, n int) []broker.Message {
	t.Helper()
	var got []broker.Message
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		msgs, err := sub.Fetch(context.Background(), n-len(got), 100*time.Millisecond)
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		got = append(got, msgs...)
	}
	if len(got) != n {
		t.Fatalf("fetched %d messages, want %d", len(got), n)
	}
	return got
}

func expectNone(t *testing.T, sub broker.Subscription, d time.Duration) {
	t.Helper()
	msgs, err := sub.Fetch(context.Background(), 10, d)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if len(msgs) != 0 {
		t.Fatalf("fetched %q, want nothing", payloads(msgs))
	}
}

func ack(t *testing.T, sub broker.Subscription, msgs ...broker.Message) {
	t.Helper()
	if len(msgs) == 0 {
		return
	}
	if err := sub.Ack(context.Background(), ids(msgs)...); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

func payloads(msgs []broker.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Payload)
	}
	return out
}

func ids(msgs []broker.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func checkPayloads(t *testing.T, msgs []broker.Message, want ...string) {
	t.Helper()
	if got := payloads(msgs); !slices.Equal(got, want) {
		t.Fatalf("payloads = %q, want %q", got, want)
	}
}

// renewWhile renews the message every interval until the returned function
// is called.
func renewWhile(t *testing.T, sub broker.Subscription, id string, interval time.Duration) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				result <- nil
				return
			case <-tick.C:
				if err := sub.Renew(context.Background(), id); err != nil {
					result <- err
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		if err := <-result; err != nil {
			t.Errorf("Renew: %v", err)
		}
	}
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streamMsgs returns how many messages the topic's log stream holds.
func streamMsgs(t *testing.T, bus *Bus, topic string) uint64 {
	t.Helper()
	s, err := bus.js.Stream(context.Background(), topicNames(topic).logStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// attemptRecords counts the recorded attempts of the messages in the group.
func attemptRecords(t *testing.T, bus *Bus, topic, group string, msgs []broker.Message) int {
	t.Helper()
	ctx := context.Background()
	n := topicNames(topic)
	state, err := bus.js.Stream(ctx, n.stateStream)
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, seq := range mustSeqs(t, msgs) {
		_, err := state.GetLastMsgForSubject(ctx, n.attemptsSubject(token(group), seq))
		switch {
		case err == nil:
			count++
		case !errors.Is(err, natsjs.ErrMsgNotFound):
			t.Fatal(err)
		}
	}
	return count
}

func mustSeqs(t *testing.T, msgs []broker.Message) []uint64 {
	t.Helper()
	seqs, err := parseIDs(ids(msgs))
	if err != nil {
		t.Fatal(err)
	}
	return seqs
}
