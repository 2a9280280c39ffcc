// Package brokertest is the conformance suite of broker.Bus: every backend
// runs it from its own tests with Run, against a real server.
//
// The suite tests the contract only. It assumes nothing of message IDs but
// that they grow in log order when compared in natural order (runs of digits
// compare as numbers, so both Redis stream ids and sequence numbers qualify).
package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/broker"
)

// Options is what the suite varies between buses.
type Options struct {
	// MaxLen is the retention limit per topic, in messages. Zero means the
	// backend's default.
	MaxLen int64
}

// NewBus returns a new bus configured with opts. Buses returned for one Run
// share their server, and the suite gives every test its own topic names.
// NewBus closes the bus in t.Cleanup, ignoring broker.ErrClosed (some tests
// close it themselves).
type NewBus func(t *testing.T, opts Options) broker.Bus

// Short durations the suite waits for. Leases are long enough that a loaded
// test machine does not let one expire by accident.
const (
	testLease   = 500 * time.Millisecond
	patience    = 10 * time.Second // how long an expected outcome may take
	quietPeriod = 300 * time.Millisecond
)

// Run runs the conformance suite as parallel subtests of t: the Bus contract,
// and the StateStore contract when the bus implements it.
func Run(t *testing.T, newBus NewBus) {
	tests := []struct {
		name string
		run  func(*testing.T, NewBus)
	}{
		{"PublishFetchInOrder", testPublishFetchInOrder},
		{"FetchRespectsMax", testFetchRespectsMax},
		{"GroupSeesOnlyLaterMessages", testGroupSeesOnlyLaterMessages},
		{"GroupsAreIndependent", testGroupsAreIndependent},
		{"ConsumersShareGroup", testConsumersShareGroup},
		{"AckPreventsRedelivery", testAckPreventsRedelivery},
		{"RestartTakesPendingBackAtOnce", testRestartTakesPendingBackAtOnce},
		{"LeaseExpiryLetsOtherConsumerTake", testLeaseExpiry},
		{"RenewKeepsLease", testRenewKeepsLease},
		{"RenewAfterTakeoverTakesNothingBack", testRenewAfterTakeover},
		{"AttemptsSurviveRestart", testAttemptsSurviveRestart},
		{"DeleteGroup", testDeleteGroup},
		{"DeleteGroupReleasesRetention", testDeleteGroupReleasesRetention},
		{"DeadLetters", testDeadLetters},
		{"BackpressureWhileUnacked", testBackpressure},
		{"NoGroupsNoBackpressure", testNoGroupsNoBackpressure},
		{"FetchWaitElapses", testFetchWaitElapses},
		{"FetchReturnsOnCancel", testFetchReturnsOnCancel},
		{"CloseUnblocksFetch", testCloseUnblocksFetch},
		{"ConcurrentPublishers", testConcurrentPublishers},
		{"SubscribeNeedsConsumer", testSubscribeNeedsConsumer},
		{"Ping", testPing},
		{"ClosedBus", testClosedBus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, newBus)
		})
	}
	for _, tt := range stateTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, s := stateStore(t, newBus)
			tt.run(t, s)
		})
	}
}

// runID keeps topics of separate runs against one server apart.
var runID = func() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

var topicSeq atomic.Int64

// newTopic returns a topic name no other test uses. It is lower-case
// letters, digits and one slash, valid for every backend.
func newTopic() string {
	return fmt.Sprintf("bt%s/topic%d", runID, topicSeq.Add(1))
}

// testContext returns a context that ends with the test, at the latest after
// a minute.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func subscribe(
	t *testing.T, bus broker.Bus, topic, group, consumer string, lease time.Duration,
) broker.Subscription {
	t.Helper()
	sub, err := bus.Subscribe(testContext(t), topic, group, broker.SubscribeConfig{Consumer: consumer, Lease: lease})
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
	if err := bus.Publish(testContext(t), topic, bs...); err != nil {
		t.Fatalf("Publish(%q, %q): %v", topic, payloads, err)
	}
}

// fetchN fetches until it has n messages, failing the test if that takes
// longer than patience or more than n arrive.
func fetchN(t *testing.T, sub broker.Subscription, n int) []broker.Message {
	t.Helper()
	ctx := testContext(t)
	var got []broker.Message
	deadline := time.Now().Add(patience)
	for len(got) < n && time.Now().Before(deadline) {
		msgs, err := sub.Fetch(ctx, n-len(got), 100*time.Millisecond)
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		got = append(got, msgs...)
	}
	if len(got) != n {
		t.Fatalf("fetched %d messages %q, want %d", len(got), payloads(got), n)
	}
	return got
}

// expectNone fails the test if sub fetches anything within d.
func expectNone(t *testing.T, sub broker.Subscription, d time.Duration) {
	t.Helper()
	msgs, err := sub.Fetch(testContext(t), 10, d)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if len(msgs) != 0 {
		t.Fatalf("fetched %q, want nothing", payloads(msgs))
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

func ack(t *testing.T, sub broker.Subscription, msgs ...broker.Message) {
	t.Helper()
	if err := sub.Ack(testContext(t), ids(msgs)...); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

func checkPayloads(t *testing.T, msgs []broker.Message, want ...string) {
	t.Helper()
	if got := payloads(msgs); !slices.Equal(got, want) {
		t.Fatalf("payloads = %q, want %q", got, want)
	}
}

// checkIncreasing fails the test unless the IDs are non-empty and grow.
func checkIncreasing(t *testing.T, ids []string) {
	t.Helper()
	for i, id := range ids {
		if id == "" {
			t.Fatalf("message %d has an empty ID", i)
		}
		if i > 0 && CompareIDs(ids[i-1], id) >= 0 {
			t.Fatalf("IDs do not grow: %q then %q", ids[i-1], id)
		}
	}
}

// CompareIDs compares two message IDs in natural order: runs of digits
// compare as numbers, everything else byte by byte. It returns -1, 0 or +1.
func CompareIDs(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na := strings.TrimLeft(a[:da], "0")
			nb := strings.TrimLeft(b[:db], "0")
			if c := cmpInt(len(na), len(nb)); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return cmpInt(int(a[0]), int(b[0]))
		}
		a, b = a[1:], b[1:]
	}
	return cmpInt(len(a), len(b))
}

func digitRun(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func testPublishFetchInOrder(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	sub := subscribe(t, bus, topic, "g1", "c1", 0)

	publish(t, bus, topic, "a", "b", "c")
	publish(t, bus, topic, "d")
	publish(t, bus, topic, "e", "f")

	msgs := fetchN(t, sub, 6)
	checkPayloads(t, msgs, "a", "b", "c", "d", "e", "f")
	checkIncreasing(t, ids(msgs))
	for _, m := range msgs {
		if m.Redelivered || m.Attempts != 0 {
			t.Errorf("new message %q: Redelivered=%v Attempts=%d, want false and 0",
				m.Payload, m.Redelivered, m.Attempts)
		}
	}
	expectNone(t, sub, quietPeriod)
}

func testFetchRespectsMax(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	sub := subscribe(t, bus, topic, "g1", "c1", 0)
	publish(t, bus, topic, "1", "2", "3", "4", "5")

	var got []broker.Message
	deadline := time.Now().Add(patience)
	for len(got) < 5 && time.Now().Before(deadline) {
		msgs, err := sub.Fetch(testContext(t), 2, 100*time.Millisecond)
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if len(msgs) > 2 {
			t.Fatalf("Fetch(max=2) returned %d messages", len(msgs))
		}
		got = append(got, msgs...)
	}
	checkPayloads(t, got, "1", "2", "3", "4", "5")
}

func testGroupSeesOnlyLaterMessages(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	publish(t, bus, topic, "before any group")
	first := subscribe(t, bus, topic, "g1", "c1", 0)
	publish(t, bus, topic, "after g1")
	second := subscribe(t, bus, topic, "g2", "c1", 0)
	publish(t, bus, topic, "after g2")

	checkPayloads(t, fetchN(t, first, 2), "after g1", "after g2")
	checkPayloads(t, fetchN(t, second, 1), "after g2")
	expectNone(t, first, quietPeriod)
	expectNone(t, second, quietPeriod)
}

func testGroupsAreIndependent(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	g1 := subscribe(t, bus, topic, "g1", "c1", 0)
	g2 := subscribe(t, bus, topic, "g2", "c1", 0)
	publish(t, bus, topic, "x", "y")

	m1 := fetchN(t, g1, 2)
	checkPayloads(t, m1, "x", "y")
	ack(t, g1, m1...)
	m2 := fetchN(t, g2, 2)
	checkPayloads(t, m2, "x", "y")

	// g2 did not acknowledge: a restart of its consumer gets both back,
	// while g1's acknowledgement does not affect it and vice versa.
	if err := g2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	g2 = subscribe(t, bus, topic, "g2", "c1", 0)
	again := fetchN(t, g2, 2)
	checkPayloads(t, again, "x", "y")
	for _, m := range again {
		if !m.Redelivered {
			t.Errorf("message %q after restart: Redelivered=false", m.Payload)
		}
	}
	expectNone(t, g1, quietPeriod)
}

func testConsumersShareGroup(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	c1 := subscribe(t, bus, topic, "g1", "c1", 0)
	c2 := subscribe(t, bus, topic, "g1", "c2", 0)
	var want []string
	for i := range 10 {
		want = append(want, strconv.Itoa(i))
	}
	publish(t, bus, topic, want...)

	got := append(fetchN(t, c1, 4), fetchN(t, c2, 6)...)
	seen := map[string]bool{}
	for _, m := range got {
		if seen[string(m.Payload)] {
			t.Fatalf("message %q fetched by both consumers", m.Payload)
		}
		seen[string(m.Payload)] = true
	}
	if len(seen) != len(want) {
		t.Fatalf("fetched %d distinct messages, want %d", len(seen), len(want))
	}
	expectNone(t, c1, quietPeriod)
}

func testAckPreventsRedelivery(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	sub := subscribe(t, bus, topic, "g1", "c1", testLease)
	publish(t, bus, topic, "m")
	ack(t, sub, fetchN(t, sub, 1)...)

	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	same := subscribe(t, bus, topic, "g1", "c1", testLease)
	other := subscribe(t, bus, topic, "g1", "c2", testLease)
	expectNone(t, same, quietPeriod)
	expectNone(t, other, 2*testLease+quietPeriod)
}

func testRestartTakesPendingBackAtOnce(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	sub := subscribe(t, bus, topic, "g1", "c1", 0) // default lease: 30s
	publish(t, bus, topic, "a", "b")
	held := fetchN(t, sub, 2)
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	sub = subscribe(t, bus, topic, "g1", "c1", 0)
	start := time.Now()
	back := fetchN(t, sub, 2)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("pending messages came back after %v, want at once", took)
	}
	checkPayloads(t, back, "a", "b")
	if !slices.Equal(ids(back), ids(held)) {
		t.Errorf("IDs after restart = %q, want %q", ids(back), ids(held))
	}
	for _, m := range back {
		if !m.Redelivered {
			t.Errorf("message %q after restart: Redelivered=false", m.Payload)
		}
	}
	ack(t, sub, back...)
	expectNone(t, sub, quietPeriod)
}

func testLeaseExpiry(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	c1 := subscribe(t, bus, topic, "g1", "c1", testLease)
	c2 := subscribe(t, bus, topic, "g1", "c2", testLease)
	publish(t, bus, topic, "m")

	fetched := time.Now()
	held := fetchN(t, c1, 1)
	expectNone(t, c2, testLease/5)

	taken := fetchN(t, c2, 1)
	if since := time.Since(fetched); since < testLease {
		t.Errorf("another consumer took the message after %v, before the %v lease expired", since, testLease)
	}
	if taken[0].ID != held[0].ID || !taken[0].Redelivered {
		t.Errorf("taken message = %+v, want ID %q redelivered", taken[0], held[0].ID)
	}
}

func testRenewKeepsLease(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	c1 := subscribe(t, bus, topic, "g1", "c1", testLease)
	c2 := subscribe(t, bus, topic, "g1", "c2", testLease)
	publish(t, bus, topic, "m")
	held := fetchN(t, c1, 1)

	stop := make(chan struct{})
	renewed := make(chan error, 1)
	go func() {
		tick := time.NewTicker(testLease / 5)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				renewed <- nil
				return
			case <-tick.C:
				if err := c1.Renew(context.Background(), held[0].ID); err != nil {
					renewed <- err
					return
				}
			}
		}
	}()
	expectNone(t, c2, 3*testLease)
	close(stop)
	if err := <-renewed; err != nil {
		t.Fatalf("Renew: %v", err)
	}

	taken := fetchN(t, c2, 1)
	if taken[0].ID != held[0].ID {
		t.Errorf("taken ID = %q, want %q", taken[0].ID, held[0].ID)
	}
}

// testRenewAfterTakeover: a consumer whose lease expired and whose message
// another consumer took cannot take it back by renewing; the lease runs from
// the new holder's fetch, so a third consumer gets the message once the new
// holder falls silent.
func testRenewAfterTakeover(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	c1 := subscribe(t, bus, topic, "g1", "c1", testLease)
	c2 := subscribe(t, bus, topic, "g1", "c2", testLease)
	c3 := subscribe(t, bus, topic, "g1", "c3", testLease)
	publish(t, bus, topic, "m")
	held := fetchN(t, c1, 1)
	time.Sleep(testLease + testLease/2)
	if taken := fetchN(t, c2, 1); taken[0].ID != held[0].ID {
		t.Fatalf("c2 took %q, want %q", taken[0].ID, held[0].ID)
	}

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(testLease / 5)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = c1.Renew(context.Background(), held[0].ID) // stale: must change nothing
			}
		}
	}()
	defer func() { close(stop); <-done }()

	ctx := testContext(t)
	deadline := time.Now().Add(4 * testLease)
	for time.Now().Before(deadline) {
		msgs, err := c3.Fetch(ctx, 1, testLease/4)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 1 {
			if msgs[0].ID != held[0].ID {
				t.Fatalf("c3 got %q, want %q", msgs[0].ID, held[0].ID)
			}
			return
		}
	}
	t.Fatalf("c3 never got the message: the stale consumer's Renew kept it leased")
}

func testAttemptsSurviveRestart(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	ctx := testContext(t)
	sub := subscribe(t, bus, topic, "g1", "c1", testLease)
	publish(t, bus, topic, "m", "n")
	held := fetchN(t, sub, 2)
	if err := sub.SetAttempts(ctx, held[0].ID, 3); err != nil {
		t.Fatalf("SetAttempts: %v", err)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	sub = subscribe(t, bus, topic, "g1", "c1", testLease)
	back := fetchN(t, sub, 2)
	if back[0].Attempts != 3 || back[1].Attempts != 0 {
		t.Fatalf("attempts after restart = %d, %d, want 3, 0", back[0].Attempts, back[1].Attempts)
	}
	if err := sub.SetAttempts(ctx, back[0].ID, 4); err != nil {
		t.Fatalf("SetAttempts: %v", err)
	}
	ack(t, sub, back[1])

	// Another consumer taking the message after the lease sees them too.
	other := subscribe(t, bus, topic, "g1", "c2", testLease)
	taken := fetchN(t, other, 1)
	if taken[0].ID != back[0].ID || taken[0].Attempts != 4 {
		t.Fatalf("taken message = %+v, want ID %q with 4 attempts", taken[0], back[0].ID)
	}
}

func testDeleteGroup(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	ctx := testContext(t)
	sub := subscribe(t, bus, topic, "g1", "c1", 0)
	publish(t, bus, topic, "old")
	held := fetchN(t, sub, 1)
	if err := sub.SetAttempts(ctx, held[0].ID, 2); err != nil {
		t.Fatalf("SetAttempts: %v", err)
	}
	dead := broker.DeadLetter{Payload: []byte("dead"), Code: -1}
	if err := bus.DeadLetter(ctx, topic, "g1", dead); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	if err := bus.DeleteGroup(ctx, topic, "g1"); err != nil {
		t.Fatalf("DeleteGroup: %v", err)
	}
	if err := bus.DeleteGroup(ctx, topic, "g1"); err != nil {
		t.Fatalf("DeleteGroup of a deleted group: %v", err)
	}
	if err := bus.DeleteGroup(ctx, newTopic(), "g1"); err != nil {
		t.Fatalf("DeleteGroup in a topic never used: %v", err)
	}

	// Subscribing again creates a new group at the end of the log: the
	// message held before is gone for it.
	sub = subscribe(t, bus, topic, "g1", "c1", 0)
	expectNone(t, sub, quietPeriod)
	publish(t, bus, topic, "new")
	msgs := fetchN(t, sub, 1)
	checkPayloads(t, msgs, "new")
	if msgs[0].Redelivered || msgs[0].Attempts != 0 {
		t.Errorf("message in the new group: Redelivered=%v Attempts=%d", msgs[0].Redelivered, msgs[0].Attempts)
	}

	dls, err := bus.DeadLetters(ctx, topic, "g1", "", 10)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	if len(dls) != 1 || string(dls[0].Payload) != "dead" {
		t.Fatalf("dead letters after DeleteGroup = %+v, want the one written before", dls)
	}
}

func testDeleteGroupReleasesRetention(t *testing.T, newBus NewBus) {
	const maxLen = 10
	bus := newBus(t, Options{MaxLen: maxLen})
	topic := newTopic()
	ctx := testContext(t)
	sub := subscribe(t, bus, topic, "g1", "c1", 0)
	publishUntilBackpressure(t, bus, topic, maxLen)
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := bus.DeleteGroup(ctx, topic, "g1"); err != nil {
		t.Fatalf("DeleteGroup: %v", err)
	}
	publishEventually(t, bus, topic, "after delete")
}

func testDeadLetters(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	ctx := testContext(t)

	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	when := time.Date(2026, 3, 4, 5, 6, 7, 8_000_000, time.UTC)
	want := []broker.DeadLetter{
		{Payload: []byte(`{"id":"1"}`), Destination: "http://sub.local/a", Code: 500, Reason: "boom",
			Attempts: 4, Time: when},
		{Payload: binary, Destination: "http://sub.local/b", Code: -1, Reason: "dial tcp: refused",
			Attempts: 1, Time: when.Add(time.Second)},
		{Payload: []byte("x"), Destination: "", Code: 400, Reason: "",
			Attempts: 11, Time: when.Add(2 * time.Second)},
		{Payload: []byte("y"), Destination: "http://sub.local/c", Code: 404, Reason: "ünïcode ✓",
			Attempts: 2, Time: when.Add(3 * time.Second)},
		{Payload: []byte("z"), Destination: "http://sub.local/d", Code: 503, Reason: "busy",
			Attempts: 3, Time: when.Add(4 * time.Second)},
	}
	for _, dl := range want {
		dl.ID = "ignored on input"
		if err := bus.DeadLetter(ctx, topic, "g1", dl); err != nil {
			t.Fatalf("DeadLetter: %v", err)
		}
	}

	all, err := bus.DeadLetters(ctx, topic, "g1", "", 100)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	if len(all) != len(want) {
		t.Fatalf("DeadLetters returned %d, want %d", len(all), len(want))
	}
	var gotIDs []string
	for i, got := range all {
		w := want[i]
		gotIDs = append(gotIDs, got.ID)
		if !bytes.Equal(got.Payload, w.Payload) || got.Destination != w.Destination || got.Code != w.Code ||
			got.Reason != w.Reason || got.Attempts != w.Attempts || !got.Time.Equal(w.Time) {
			t.Errorf("dead letter %d = %+v\nwant %+v", i, got, w)
		}
	}
	checkIncreasing(t, gotIDs)

	// Pages of two, each starting after the last ID of the one before.
	var paged []string
	after := ""
	for range len(want) + 1 {
		page, err := bus.DeadLetters(ctx, topic, "g1", after, 2)
		if err != nil {
			t.Fatalf("DeadLetters(after %q): %v", after, err)
		}
		if len(page) > 2 {
			t.Fatalf("DeadLetters(limit 2) returned %d", len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, dl := range page {
			paged = append(paged, dl.ID)
		}
		after = page[len(page)-1].ID
	}
	if !slices.Equal(paged, gotIDs) {
		t.Errorf("paged IDs = %q, want %q", paged, gotIDs)
	}

	other, err := bus.DeadLetters(ctx, topic, "g2", "", 100)
	if err != nil {
		t.Fatalf("DeadLetters of another group: %v", err)
	}
	if len(other) != 0 {
		t.Errorf("another group has %d dead letters, want 0", len(other))
	}
}

// publishUntilBackpressure publishes one message at a time until Publish
// returns broker.ErrBackpressure, and returns the payloads it accepted. It
// fails the test if that does not happen within patience, if another error
// comes, or if fewer than maxLen messages were accepted.
func publishUntilBackpressure(t *testing.T, bus broker.Bus, topic string, maxLen int) []string {
	t.Helper()
	ctx := testContext(t)
	var accepted []string
	deadline := time.Now().Add(patience)
	for time.Now().Before(deadline) {
		p := "m" + strconv.Itoa(len(accepted))
		err := bus.Publish(ctx, topic, []byte(p))
		if errors.Is(err, broker.ErrBackpressure) {
			if len(accepted) < maxLen {
				t.Fatalf("ErrBackpressure after %d messages, below the limit of %d", len(accepted), maxLen)
			}
			return accepted
		}
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		accepted = append(accepted, p)
		if len(accepted) >= maxLen {
			time.Sleep(10 * time.Millisecond) // give a background trimmer time
		}
	}
	t.Fatalf("no ErrBackpressure after %d messages in %v with a limit of %d", len(accepted), patience, maxLen)
	return nil
}

// publishEventually retries Publish while it returns broker.ErrBackpressure.
func publishEventually(t *testing.T, bus broker.Bus, topic, payload string) {
	t.Helper()
	ctx := testContext(t)
	deadline := time.Now().Add(patience)
	for {
		err := bus.Publish(ctx, topic, []byte(payload))
		if err == nil {
			return
		}
		if !errors.Is(err, broker.ErrBackpressure) {
			t.Fatalf("Publish: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish still returns ErrBackpressure after %v", patience)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testBackpressure(t *testing.T, newBus NewBus) {
	const maxLen = 10
	bus := newBus(t, Options{MaxLen: maxLen})
	topic := newTopic()
	sub := subscribe(t, bus, topic, "g1", "c1", 0)

	accepted := publishUntilBackpressure(t, bus, topic, maxLen)

	// Fetched but unacknowledged messages still hold the room: the limit
	// stays in force, and nothing is dropped to make room.
	checkPayloads(t, fetchN(t, sub, len(accepted)), accepted...)
	ctx := testContext(t)
	for end := time.Now().Add(3 * quietPeriod); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if err := bus.Publish(ctx, topic, []byte("too many")); !errors.Is(err, broker.ErrBackpressure) {
			t.Fatalf("Publish with fetched but unacknowledged messages at the limit = %v, want ErrBackpressure", err)
		}
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	sub = subscribe(t, bus, topic, "g1", "c1", 0)
	msgs := fetchN(t, sub, len(accepted))
	checkPayloads(t, msgs, accepted...)
	ack(t, sub, msgs...)

	publishEventually(t, bus, topic, "after ack")
	checkPayloads(t, fetchN(t, sub, 1), "after ack")
}

func testNoGroupsNoBackpressure(t *testing.T, newBus NewBus) {
	const maxLen = 10
	bus := newBus(t, Options{MaxLen: maxLen})
	topic := newTopic()
	for i := range 12 {
		batch := make([]string, 5)
		for j := range batch {
			batch[j] = fmt.Sprintf("m%d-%d", i, j)
		}
		publish(t, bus, topic, batch...)
		time.Sleep(50 * time.Millisecond) // let a background trimmer run meanwhile
	}

	sub := subscribe(t, bus, topic, "g1", "c1", 0)
	publish(t, bus, topic, "after")
	checkPayloads(t, fetchN(t, sub, 1), "after")
}

func testFetchWaitElapses(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	sub := subscribe(t, bus, newTopic(), "g1", "c1", 0)
	ctx := testContext(t)

	for _, wait := range []time.Duration{0, 300 * time.Millisecond} {
		start := time.Now()
		msgs, err := sub.Fetch(ctx, 10, wait)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("Fetch(wait %v): %v", wait, err)
		}
		if len(msgs) != 0 {
			t.Fatalf("Fetch(wait %v) on an empty topic = %q", wait, payloads(msgs))
		}
		if took < wait-50*time.Millisecond || took > wait+3*time.Second {
			t.Errorf("Fetch(wait %v) returned after %v", wait, took)
		}
	}
}

func testFetchReturnsOnCancel(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	sub := subscribe(t, bus, topic, "g1", "c1", 0)

	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 200*time.Millisecond)
		}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		ctx, cancel := tt.ctx()
		start := time.Now()
		msgs, err := sub.Fetch(ctx, 10, 30*time.Second)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, tt.want) {
			t.Fatalf("%s: Fetch = %q, %v; want %v", tt.name, payloads(msgs), err, tt.want)
		}
		if took > 2*time.Second {
			t.Errorf("%s: Fetch returned %v after the context ended", tt.name, took-200*time.Millisecond)
		}
	}

	// The subscription still works afterwards.
	publish(t, bus, topic, "m")
	checkPayloads(t, fetchN(t, sub, 1), "m")
}

func testCloseUnblocksFetch(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	sub := subscribe(t, bus, newTopic(), "g1", "c1", 0)

	type result struct {
		msgs []broker.Message
		err  error
	}
	done := make(chan result, 1)
	go func() {
		msgs, err := sub.Fetch(context.Background(), 10, 30*time.Second)
		done <- result{msgs, err}
	}()
	time.Sleep(200 * time.Millisecond)
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case r := <-done:
		if len(r.msgs) != 0 {
			t.Errorf("Fetch interrupted by Close returned %q", payloads(r.msgs))
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Fetch still blocked 3s after Close")
	}
	if _, err := sub.Fetch(context.Background(), 10, 0); err == nil {
		t.Error("Fetch after Close succeeded")
	}
}

func testConcurrentPublishers(t *testing.T, newBus NewBus) {
	const publishers, perPublisher = 8, 120
	bus := newBus(t, Options{})
	topic := newTopic()
	sub := subscribe(t, bus, topic, "g1", "c1", 0)

	// Each publisher sends calls of 1, 2 and 3 payloads in turn; a payload
	// names its publisher, sequence number and call.
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq := 0
			for call := 0; seq < perPublisher; call++ {
				var batch [][]byte
				for range call%3 + 1 {
					if seq < perPublisher {
						batch = append(batch, fmt.Appendf(nil, "%d:%d:%d", p, seq, call))
						seq++
					}
				}
				if err := bus.Publish(context.Background(), topic, batch...); err != nil {
					errs <- err
					return
				}
			}
		}()
	}

	// Fetch while publishing, acknowledging as we go.
	var got []broker.Message
	ctx := testContext(t)
	deadline := time.Now().Add(4 * patience)
	for len(got) < publishers*perPublisher && time.Now().Before(deadline) {
		msgs, err := sub.Fetch(ctx, 100, 100*time.Millisecond)
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if len(msgs) > 0 {
			ack(t, sub, msgs...)
		}
		got = append(got, msgs...)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish: %v", err)
	}
	expectNone(t, sub, quietPeriod)

	next := make([]int, publishers) // next sequence number per publisher
	lastPos := map[string]int{}     // "publisher:call" → position of its last payload
	for pos, m := range got {
		var p, seq, call int
		if _, err := fmt.Sscanf(string(m.Payload), "%d:%d:%d", &p, &seq, &call); err != nil {
			t.Fatalf("unexpected payload %q", m.Payload)
		}
		if seq != next[p] {
			t.Fatalf("publisher %d: got sequence %d, want %d (lost, duplicated or reordered)", p, seq, next[p])
		}
		next[p]++
		key := fmt.Sprintf("%d:%d", p, call)
		if last, ok := lastPos[key]; ok && last != pos-1 {
			t.Fatalf("payloads of publisher %d's call %d are not contiguous (positions %d and %d)", p, call, last, pos)
		}
		lastPos[key] = pos
	}
	for p, n := range next {
		if n != perPublisher {
			t.Errorf("publisher %d: %d messages arrived, want %d", p, n, perPublisher)
		}
	}
	checkIncreasing(t, ids(got))
}

func testSubscribeNeedsConsumer(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	sub, err := bus.Subscribe(testContext(t), newTopic(), "g1", broker.SubscribeConfig{})
	if err == nil {
		_ = sub.Close()
		t.Fatal("Subscribe without a consumer name succeeded")
	}
}

func testPing(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	if err := bus.Ping(testContext(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testClosedBus(t *testing.T, newBus NewBus) {
	bus := newBus(t, Options{})
	topic := newTopic()
	ctx := testContext(t)
	sub := subscribe(t, bus, topic, "g1", "c1", 0)
	if err := sub.Close(); err != nil {
		t.Fatalf("Subscription.Close: %v", err)
	}
	if err := bus.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	calls := []struct {
		name string
		call func() error
	}{
		{"Publish", func() error { return bus.Publish(ctx, topic, []byte("m")) }},
		{"Subscribe", func() error {
			_, err := bus.Subscribe(ctx, topic, "g1", broker.SubscribeConfig{Consumer: "c1"})
			return err
		}},
		{"DeleteGroup", func() error { return bus.DeleteGroup(ctx, topic, "g1") }},
		{"DeadLetter", func() error { return bus.DeadLetter(ctx, topic, "g1", broker.DeadLetter{Code: -1}) }},
		{"DeadLetters", func() error {
			_, err := bus.DeadLetters(ctx, topic, "g1", "", 10)
			return err
		}},
		{"Ping", func() error { return bus.Ping(ctx) }},
		{"Close", bus.Close},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, broker.ErrClosed) {
			t.Errorf("%s after Close = %v, want broker.ErrClosed", c.name, err)
		}
	}
}
