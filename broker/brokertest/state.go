package brokertest

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/broker"
)

// stateTests are the StateStore subtests. A bus that does not implement
// broker.StateStore skips them.
var stateTests = []struct {
	name string
	run  func(*testing.T, broker.StateStore)
}{
	{"StateCompareAndSwap", testStateCompareAndSwap},
	{"StateConcurrentSwapsLoseNothing", testStateConcurrentSwaps},
	{"StateTTL", testStateTTL},
	{"StateDelete", testStateDelete},
	{"StatePurgeNamespace", testStatePurge},
	{"StateBadNamespace", testStateBadNamespace},
	{"StateClosedBus", testStateClosedBus},
}

func stateStore(t *testing.T, newBus NewBus) (broker.Bus, broker.StateStore) {
	t.Helper()
	bus := newBus(t, Options{})
	s, ok := bus.(broker.StateStore)
	if !ok {
		t.Skipf("%T does not implement broker.StateStore", bus)
	}
	return bus, s
}

func getState(t *testing.T, s broker.StateStore, topic, ns, key string) broker.StateEntry {
	t.Helper()
	e, err := s.GetState(testContext(t), topic, ns, key)
	if err != nil {
		t.Fatalf("GetState(%q, %q): %v", ns, key, err)
	}
	return e
}

func swapState(t *testing.T, s broker.StateStore, topic, ns, key string, rev uint64, value string,
	ttl time.Duration) uint64 {
	t.Helper()
	r, err := s.CompareAndSwapState(testContext(t), topic, ns, key, rev, []byte(value), ttl)
	if err != nil {
		t.Fatalf("CompareAndSwapState(%q, %q, rev %d): %v", ns, key, rev, err)
	}
	return r
}

func testStateCompareAndSwap(t *testing.T, s broker.StateStore) {
	topic := newTopic()
	for _, key := range []string{"k", "", "a key with spaces/and.dots*?[x]{y}"} {
		missing := getState(t, s, topic, "sensor.s.t", key)
		if missing.Value != nil {
			t.Fatalf("key %q: missing entry has value %q", key, missing.Value)
		}
		r1 := swapState(t, s, topic, "sensor.s.t", key, missing.Revision, "one", 0)
		if r1 <= missing.Revision {
			t.Errorf("key %q: revision after create = %d, want > %d", key, r1, missing.Revision)
		}
		got := getState(t, s, topic, "sensor.s.t", key)
		if string(got.Value) != "one" || got.Revision != r1 {
			t.Errorf("key %q: GetState = %q rev %d, want \"one\" rev %d", key, got.Value, got.Revision, r1)
		}

		// A writer that read the missing entry lost the race.
		_, err := s.CompareAndSwapState(testContext(t), topic, "sensor.s.t", key, missing.Revision, []byte("x"), 0)
		if !errors.Is(err, broker.ErrStateConflict) {
			t.Errorf("key %q: swap with a stale revision: %v, want ErrStateConflict", key, err)
		}
		r2 := swapState(t, s, topic, "sensor.s.t", key, r1, "", 0)
		if r2 <= r1 {
			t.Errorf("key %q: revision %d after %d, want growth", key, r2, r1)
		}
		got = getState(t, s, topic, "sensor.s.t", key)
		if got.Value == nil || len(got.Value) != 0 || got.Revision != r2 {
			t.Errorf("key %q: empty value read back as %q (nil %v) rev %d", key, got.Value, got.Value == nil, got.Revision)
		}
		if _, err := s.CompareAndSwapState(testContext(t), topic, "sensor.s.t", key, r1, []byte("x"), 0); !errors.Is(err,
			broker.ErrStateConflict) {
			t.Errorf("key %q: swap with the previous revision: %v, want ErrStateConflict", key, err)
		}
	}
	// Namespaces and topics are apart.
	if e := getState(t, s, topic, "other", "k"); e.Value != nil {
		t.Errorf("namespace other sees %q", e.Value)
	}
	if e := getState(t, s, newTopic(), "sensor.s.t", "k"); e.Value != nil {
		t.Errorf("another topic sees %q", e.Value)
	}
}

// testStateConcurrentSwaps increments a counter from several goroutines with
// read-modify-swap loops: no increment may be lost.
func testStateConcurrentSwaps(t *testing.T, s broker.StateStore) {
	topic := newTopic()
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			ctx := testContext(t)
			for range each {
				for {
					e, err := s.GetState(ctx, topic, "counter", "n")
					if err != nil {
						errs <- err
						return
					}
					n := 0
					if e.Value != nil {
						n, _ = strconv.Atoi(string(e.Value))
					}
					_, err = s.CompareAndSwapState(ctx, topic, "counter", "n", e.Revision, []byte(strconv.Itoa(n+1)), 0)
					if err == nil {
						break
					}
					if !errors.Is(err, broker.ErrStateConflict) {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := string(getState(t, s, topic, "counter", "n").Value); got != strconv.Itoa(writers*each) {
		t.Errorf("counter = %s, want %d", got, writers*each)
	}
}

func testStateTTL(t *testing.T, s broker.StateStore) {
	topic := newTopic()
	const ttl = 400 * time.Millisecond
	start := time.Now()
	r := swapState(t, s, topic, "ns", "short", getState(t, s, topic, "ns", "short").Revision, "v", ttl)
	swapState(t, s, topic, "ns", "kept", getState(t, s, topic, "ns", "kept").Revision, "v", ttl)
	if e := getState(t, s, topic, "ns", "short"); time.Since(start) < ttl && string(e.Value) != "v" {
		t.Fatalf("entry gone before its TTL: %q", e.Value)
	}
	// A write without a TTL keeps the entry for good.
	kept := getState(t, s, topic, "ns", "kept")
	swapState(t, s, topic, "ns", "kept", kept.Revision, "forever", 0)

	time.Sleep(time.Until(start.Add(ttl + 100*time.Millisecond)))
	e := getState(t, s, topic, "ns", "short")
	if e.Value != nil {
		t.Fatalf("entry still there %v after its TTL: %q", time.Since(start), e.Value)
	}
	if string(getState(t, s, topic, "ns", "kept").Value) != "forever" {
		t.Error("entry rewritten without a TTL expired")
	}
	// It can be created again with the revision read now.
	r2 := swapState(t, s, topic, "ns", "short", e.Revision, "again", 0)
	if r2 <= r {
		t.Errorf("revision %d after expiry, want > %d", r2, r)
	}
	if got := getState(t, s, topic, "ns", "short"); string(got.Value) != "again" {
		t.Errorf("recreated entry = %q", got.Value)
	}
}

func testStateDelete(t *testing.T, s broker.StateStore) {
	topic := newTopic()
	ctx := testContext(t)
	missing := getState(t, s, topic, "ns", "k")
	if err := s.DeleteState(ctx, topic, "ns", "k", missing.Revision); err != nil {
		t.Errorf("deleting a missing entry: %v", err)
	}
	r1 := swapState(t, s, topic, "ns", "k", getState(t, s, topic, "ns", "k").Revision, "v1", 0)
	r2 := swapState(t, s, topic, "ns", "k", r1, "v2", 0)
	if err := s.DeleteState(ctx, topic, "ns", "k", r1); !errors.Is(err, broker.ErrStateConflict) {
		t.Errorf("delete with a stale revision: %v, want ErrStateConflict", err)
	}
	if err := s.DeleteState(ctx, topic, "ns", "k", r2); err != nil {
		t.Fatalf("DeleteState: %v", err)
	}
	e := getState(t, s, topic, "ns", "k")
	if e.Value != nil {
		t.Fatalf("deleted entry reads %q", e.Value)
	}
	if _, err := s.CompareAndSwapState(ctx, topic, "ns", "k", r2, []byte("x"), 0); !errors.Is(err,
		broker.ErrStateConflict) {
		t.Errorf("swap against the deleted revision: %v, want ErrStateConflict", err)
	}
	r3 := swapState(t, s, topic, "ns", "k", e.Revision, "v3", 0)
	if r3 <= r2 {
		t.Errorf("revision %d after delete, want > %d", r3, r2)
	}
}

func testStatePurge(t *testing.T, s broker.StateStore) {
	topic := newTopic()
	ctx := testContext(t)
	revs := map[string]uint64{}
	for i := range 5 {
		key := fmt.Sprintf("key-%d", i)
		revs[key] = swapState(t, s, topic, "sensor.a.t", key, getState(t, s, topic, "sensor.a.t", key).Revision, "a", 0)
	}
	// A namespace whose name starts like the purged one's is not touched.
	swapState(t, s, topic, "sensor.a.t2", "key-0", getState(t, s, topic, "sensor.a.t2", "key-0").Revision, "b", 0)
	other := newTopic()
	swapState(t, s, other, "sensor.a.t", "key-0", getState(t, s, other, "sensor.a.t", "key-0").Revision, "c", 0)

	if err := s.PurgeState(ctx, topic, "sensor.a.t"); err != nil {
		t.Fatalf("PurgeState: %v", err)
	}
	for key, rev := range revs {
		e := getState(t, s, topic, "sensor.a.t", key)
		if e.Value != nil {
			t.Errorf("%s survived the purge: %q", key, e.Value)
		}
		if _, err := s.CompareAndSwapState(ctx, topic, "sensor.a.t", key, rev, []byte("x"), 0); !errors.Is(err,
			broker.ErrStateConflict) {
			t.Errorf("%s: swap with a revision read before the purge: %v, want ErrStateConflict", key, err)
		}
		swapState(t, s, topic, "sensor.a.t", key, e.Revision, "new", 0)
	}
	if got := string(getState(t, s, topic, "sensor.a.t2", "key-0").Value); got != "b" {
		t.Errorf("neighbouring namespace = %q, want b", got)
	}
	if got := string(getState(t, s, other, "sensor.a.t", "key-0").Value); got != "c" {
		t.Errorf("same namespace of another topic = %q, want c", got)
	}
	if err := s.PurgeState(ctx, newTopic(), "never-used"); err != nil {
		t.Errorf("purging an empty namespace: %v", err)
	}
}

func testStateBadNamespace(t *testing.T, s broker.StateStore) {
	topic := newTopic()
	ctx := testContext(t)
	for _, ns := range []string{"", "a:b", "a b", "a*", "{x}"} {
		if _, err := s.GetState(ctx, topic, ns, "k"); err == nil {
			t.Errorf("GetState accepted namespace %q", ns)
		}
		if _, err := s.CompareAndSwapState(ctx, topic, ns, "k", 0, []byte("v"), 0); err == nil {
			t.Errorf("CompareAndSwapState accepted namespace %q", ns)
		}
		if err := s.PurgeState(ctx, topic, ns); err == nil {
			t.Errorf("PurgeState accepted namespace %q", ns)
		}
	}
	if _, err := s.CompareAndSwapState(ctx, topic, "ns", "k", 0, nil, 0); err == nil {
		t.Error("CompareAndSwapState accepted a nil value")
	}
}

func testStateClosedBus(t *testing.T, s broker.StateStore) {
	bus := s.(broker.Bus)
	topic := newTopic()
	swapState(t, s, topic, "ns", "k", getState(t, s, topic, "ns", "k").Revision, "v", 0)
	if err := bus.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := testContext(t)
	if _, err := s.GetState(ctx, topic, "ns", "k"); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("GetState after Close: %v, want ErrClosed", err)
	}
	if _, err := s.CompareAndSwapState(ctx, topic, "ns", "k", 1, []byte("v"), 0); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("CompareAndSwapState after Close: %v, want ErrClosed", err)
	}
	if err := s.DeleteState(ctx, topic, "ns", "k", 1); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("DeleteState after Close: %v, want ErrClosed", err)
	}
	if err := s.PurgeState(ctx, topic, "ns"); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("PurgeState after Close: %v, want ErrClosed", err)
	}
}
