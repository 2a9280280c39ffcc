package redisbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/broker/brokertest"
	"github.com/signalbox-dev/signalbox/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newTestBus returns a bus on srv, closed when the test ends.
func newTestBus(t testing.TB, srv *redistest.Server, cfg Config) *Bus {
	t.Helper()
	cfg.URL = srv.URL()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	b, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// rawClient returns a plain client for poking at Redis behind the bus's back.
func rawClient(t testing.TB, srv *redistest.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	brokertest.Run(t, func(t *testing.T, opts brokertest.Options) broker.Bus {
		return newTestBus(t, srv, Config{MaxLen: opts.MaxLen})
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		wantField string
	}{
		{"no URL", Config{}, "Config.URL"},
		{"bad URL", Config{URL: "http://user:secret@example/"}, "Config.URL"},
		{"negative MaxLen", Config{URL: "redis://localhost", MaxLen: -1}, "Config.MaxLen"},
		{"negative retention", Config{URL: "redis://localhost", DeadLetterRetention: -time.Second},
			"Config.DeadLetterRetention"},
		{"negative Writers", Config{URL: "redis://localhost", Writers: -1}, "Config.Writers"},
		{"negative MaxBatch", Config{URL: "redis://localhost", MaxBatch: -1}, "Config.MaxBatch"},
		{"negative TrimInterval", Config{URL: "redis://localhost", TrimInterval: -1}, "Config.TrimInterval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantField) {
				t.Fatalf("New = %v, want an error naming %s", err, tt.wantField)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q leaks the URL's password", err)
			}
		})
	}

	cfg, _, err := Config{URL: "redis://localhost:6379/2"}.validate()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxLen != DefaultMaxLen || cfg.DeadLetterRetention != DefaultDeadLetterRetention ||
		cfg.Writers != DefaultWriters || cfg.MaxBatch != DefaultMaxBatch ||
		cfg.TrimInterval != DefaultTrimInterval || cfg.Logger == nil {
		t.Errorf("defaults not applied: %+v", cfg)
	}
}

func TestNewFailsWhenRedisIsDown(t *testing.T) {
	srv := redistest.Start(t)
	srv.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if b, err := New(ctx, Config{URL: srv.URL()}); err == nil {
		_ = b.Close()
		t.Fatal("New succeeded with Redis down")
	}
}

func TestTopicNamesKeepTheHashTag(t *testing.T) {
	srv := redistest.Start(t)
	bus := newTestBus(t, srv, Config{})
	ctx := context.Background()

	for _, name := range []string{"", "a{b}/c", "ns/na}me"} {
		if err := bus.Publish(ctx, name, []byte("x")); err == nil {
			t.Errorf("Publish to %q succeeded", name)
		}
		if _, err := bus.Subscribe(ctx, name, "g", broker.SubscribeConfig{Consumer: "c"}); err == nil {
			t.Errorf("Subscribe to %q succeeded", name)
		}
	}

	// Every key of a topic carries its hash tag.
	sub, err := bus.Subscribe(ctx, "ns/name", "g", broker.SubscribeConfig{Consumer: "c"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := bus.Publish(ctx, "ns/name", []byte("x")); err != nil {
		t.Fatal(err)
	}
	msgs, err := sub.Fetch(ctx, 1, time.Second)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Fetch = %v, %v", msgs, err)
	}
	if err := sub.SetAttempts(ctx, msgs[0].ID, 1); err != nil {
		t.Fatal(err)
	}
	if err := bus.DeadLetter(ctx, "ns/name", "g", broker.DeadLetter{Code: -1}); err != nil {
		t.Fatal(err)
	}
	if err := bus.DeleteGroup(ctx, "ns/name", "other"); err != nil {
		t.Fatal(err)
	}
	keys, err := rawClient(t, srv).Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 4 {
		t.Errorf("keys = %q, want log, attempts, dlq and deleted-groups", keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "signalbox:{ns/name}:") {
			t.Errorf("key %q lacks the topic's hash tag", k)
		}
	}
}

func TestAckForgetsAttempts(t *testing.T) {
	srv := redistest.Start(t)
	bus := newTestBus(t, srv, Config{})
	raw := rawClient(t, srv)
	ctx := context.Background()
	const topic = "ns/attempts"

	sub, err := bus.Subscribe(ctx, topic, "g", broker.SubscribeConfig{Consumer: "c"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := bus.Publish(ctx, topic, []byte("a"), []byte("b")); err != nil {
		t.Fatal(err)
	}
	msgs, err := sub.Fetch(ctx, 2, time.Second)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("Fetch = %v, %v", msgs, err)
	}
	for _, m := range msgs {
		if err := sub.SetAttempts(ctx, m.ID, 5); err != nil {
			t.Fatal(err)
		}
	}
	if n := raw.HLen(ctx, attemptsKey(topic, "g")).Val(); n != 2 {
		t.Fatalf("attempts recorded = %d, want 2", n)
	}
	if err := sub.Ack(ctx, msgs[0].ID); err != nil {
		t.Fatal(err)
	}
	if got := raw.HKeys(ctx, attemptsKey(topic, "g")).Val(); len(got) != 1 || got[0] != msgs[1].ID {
		t.Errorf("attempts after ack = %q, want only %q", got, msgs[1].ID)
	}
	if err := bus.DeleteGroup(ctx, topic, "g"); err != nil {
		t.Fatal(err)
	}
	if n := raw.Exists(ctx, attemptsKey(topic, "g")).Val(); n != 0 {
		t.Error("attempts hash survives DeleteGroup")
	}
}

// consumeLoop fetches from sub until stop, the way a dispatcher does: it
// retries errors after a short pause. It sends every message it fetches.
func consumeLoop(sub broker.Subscription, stop <-chan struct{}, out chan<- broker.Message, errs *countingErr) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-stop
		cancel()
	}()
	for ctx.Err() == nil {
		msgs, err := sub.Fetch(ctx, 10, time.Second)
		if err != nil {
			if ctx.Err() == nil {
				errs.add(err)
				time.Sleep(50 * time.Millisecond)
			}
			continue
		}
		for _, m := range msgs {
			_ = sub.Ack(ctx, m.ID)
			out <- m
		}
	}
}

type countingErr struct {
	mu   sync.Mutex
	n    int
	last error
}

func (c *countingErr) add(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	c.last = err
}

func (c *countingErr) get() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.last
}

func expectMessage(t *testing.T, got <-chan broker.Message, payload string, within time.Duration) {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case m := <-got:
			if string(m.Payload) == payload {
				return
			}
			t.Fatalf("got message %q, want %q", m.Payload, payload)
		case <-timeout:
			t.Fatalf("message %q not delivered within %v", payload, within)
		}
	}
}

// TestRecoversWhenRedisLosesItsData covers a Redis that restarts empty, or is
// flushed, under a running subscription: the group is recreated and later
// messages flow without a new Subscribe.
func TestRecoversWhenRedisLosesItsData(t *testing.T) {
	tests := []struct {
		name string
		// lose makes Redis lose its data; down reports whether Publish must
		// fail until restore is called.
		lose    func(t *testing.T, srv *redistest.Server)
		down    bool
		restore func(t *testing.T, srv *redistest.Server)
	}{
		{
			name:    "restart",
			lose:    func(t *testing.T, srv *redistest.Server) { srv.Kill() },
			down:    true,
			restore: func(t *testing.T, srv *redistest.Server) { srv.Restart() },
		},
		{
			name: "flushall",
			lose: func(t *testing.T, srv *redistest.Server) {
				if err := rawClient(t, srv).FlushAll(context.Background()).Err(); err != nil {
					t.Fatal(err)
				}
			},
			restore: func(*testing.T, *redistest.Server) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t)
			bus := newTestBus(t, srv, Config{})
			ctx := context.Background()
			const topic = "ns/recover"

			sub, err := bus.Subscribe(ctx, topic, "g", broker.SubscribeConfig{Consumer: "c"})
			if err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			got := make(chan broker.Message, 10)
			var errs countingErr
			done := make(chan struct{})
			go func() {
				defer close(done)
				consumeLoop(sub, stop, got, &errs)
			}()
			defer func() {
				close(stop)
				<-done
				_ = sub.Close()
			}()

			if err := bus.Publish(ctx, topic, []byte("before")); err != nil {
				t.Fatal(err)
			}
			expectMessage(t, got, "before", 5*time.Second)

			tt.lose(t, srv)
			if tt.down {
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := bus.Publish(pctx, topic, []byte("while down"))
				cancel()
				if err == nil {
					t.Fatal("Publish succeeded while Redis was down")
				}
			}
			tt.restore(t, srv)

			// Publishing works again as soon as Redis answers.
			deadline := time.Now().Add(10 * time.Second)
			for {
				err := bus.Publish(ctx, topic, []byte("after"))
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Publish after recovery: %v", err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			expectMessage(t, got, "after", 10*time.Second)

			if n := bus.Stats().GroupsRecreated; n != 1 {
				t.Errorf("GroupsRecreated = %d, want 1", n)
			}
			// A consumer that backs off 50ms must not have failed in a tight
			// loop while Redis was away.
			if n, last := errs.get(); n > 100 {
				t.Errorf("%d Fetch errors during recovery (last: %v): looks like a crash loop", n, last)
			}
		})
	}
}

func TestDeletedGroupIsNotRecreated(t *testing.T) {
	srv := redistest.Start(t)
	bus := newTestBus(t, srv, Config{})
	raw := rawClient(t, srv)
	ctx := context.Background()
	const topic = "ns/deleted"

	sub, err := bus.Subscribe(ctx, topic, "g", broker.SubscribeConfig{Consumer: "c"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := bus.Publish(ctx, topic, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Fetch(ctx, 10, time.Second); err != nil {
		t.Fatal(err)
	}

	// A Fetch blocked at the time learns at once; later ones too.
	blocked := make(chan error, 1)
	go func() {
		_, err := sub.Fetch(ctx, 10, 10*time.Second)
		blocked <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := bus.DeleteGroup(ctx, topic, "g"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-blocked:
		if !errors.Is(err, errGroupDeleted) {
			t.Fatalf("blocked Fetch during DeleteGroup = %v, want errGroupDeleted", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked Fetch did not return after DeleteGroup")
	}
	_, err = sub.Fetch(ctx, 10, 100*time.Millisecond)
	if !errors.Is(err, errGroupDeleted) {
		t.Fatalf("Fetch after DeleteGroup = %v, want errGroupDeleted", err)
	}
	if groups := raw.XInfoGroups(ctx, logKey(topic)).Val(); len(groups) != 0 {
		t.Errorf("groups after DeleteGroup and Fetch = %+v, want none", groups)
	}

	// Subscribing again is a new start, and clears the deletion mark.
	again, err := bus.Subscribe(ctx, topic, "g", broker.SubscribeConfig{Consumer: "c"})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if raw.SIsMember(ctx, deletedKey(topic), "g").Val() {
		t.Error("group still marked deleted after Subscribe")
	}
}

// commandCalls returns how often Redis ran the command, from INFO
// commandstats.
func commandCalls(t *testing.T, raw *redis.Client, cmd string) int {
	t.Helper()
	info, err := raw.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		calls, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("commandstats line %q: %v", line, err)
		}
		return calls
	}
	return 0
}

// TestDeletedPendingEntries covers pending entries whose stream entries were
// deleted (XDEL) or trimmed behind the bus's back: they are acknowledged and
// skipped, their attempts forgotten, later messages flow, and nothing spins.
func TestDeletedPendingEntries(t *testing.T) {
	tests := []struct {
		name   string
		delete func(raw *redis.Client, key string, ids []string) error
		// left is how many of the three held entries survive.
		left int
	}{
		{"xdel first", func(raw *redis.Client, key string, ids []string) error {
			return raw.XDel(context.Background(), key, ids[0]).Err()
		}, 2},
		{"trim all", func(raw *redis.Client, key string, _ []string) error {
			return raw.XTrimMaxLen(context.Background(), key, 0).Err()
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/own pending", func(t *testing.T) {
			srv := redistest.Start(t)
			bus := newTestBus(t, srv, Config{})
			raw := rawClient(t, srv)
			ctx := context.Background()
			const topic = "ns/deleted-pending"

			sub, err := bus.Subscribe(ctx, topic, "g", broker.SubscribeConfig{Consumer: "c"})
			if err != nil {
				t.Fatal(err)
			}
			if err := bus.Publish(ctx, topic, []byte("a"), []byte("b"), []byte("c")); err != nil {
				t.Fatal(err)
			}
			held, err := sub.Fetch(ctx, 3, time.Second)
			if err != nil || len(held) != 3 {
				t.Fatalf("Fetch = %v, %v", held, err)
			}
			for _, m := range held {
				if err := sub.SetAttempts(ctx, m.ID, 1); err != nil {
					t.Fatal(err)
				}
			}
			if err := tt.delete(raw, logKey(topic), ids(held)); err != nil {
				t.Fatal(err)
			}
			_ = sub.Close()

			// The restarted consumer gets back only what still exists.
			sub, err = bus.Subscribe(ctx, topic, "g", broker.SubscribeConfig{Consumer: "c"})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			before := commandCalls(t, raw, "xreadgroup")
			back, err := sub.Fetch(ctx, 10, 500*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if len(back) != tt.left {
				t.Fatalf("fetched %d after deletion, want %d", len(back), tt.left)
			}
			if calls := commandCalls(t, raw, "xreadgroup") - before; calls > 20 {
				t.Errorf("%d XREADGROUP calls for one Fetch: spinning", calls)
			}
			if n := raw.XPending(ctx, logKey(topic), "g").Val().Count; n != int64(tt.left) {
				t.Errorf("pending = %d, want %d", n, tt.left)
			}
			if n := raw.HLen(ctx, attemptsKey(topic, "g")).Val(); n != int64(tt.left) {
				t.Errorf("recorded attempts = %d, want %d", n, tt.left)
			}
			ack(t, sub, back)

			if err := bus.Publish(ctx, topic, []byte("later")); err != nil {
				t.Fatal(err)
			}
			msgs, err := sub.Fetch(ctx, 10, 2*time.Second)
			if err != nil || len(msgs) != 1 || string(msgs[0].Payload) != "later" {
				t.Fatalf("Fetch after deletion = %v, %v; want the later message", msgs, err)
			}
		})

		t.Run(tt.name+"/claimed", func(t *testing.T) {
			srv := redistest.Start(t)
			bus := newTestBus(t, srv, Config{})
			raw := rawClient(t, srv)
			ctx := context.Background()
			const topic = "ns/deleted-claimed"
			const lease = 200 * time.Millisecond

			c1, err := bus.Subscribe(ctx, topic, "g", broker.SubscribeConfig{Consumer: "c1", Lease: lease})
			if err != nil {
				t.Fatal(err)
			}
			defer c1.Close()
			c2, err := bus.Subscribe(ctx, topic, "g", broker.SubscribeConfig{Consumer: "c2", Lease: lease})
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			if err := bus.Publish(ctx, topic, []byte("a"), []byte("b"), []byte("c")); err != nil {
				t.Fatal(err)
			}
			held, err := c1.Fetch(ctx, 3, time.Second)
			if err != nil || len(held) != 3 {
				t.Fatalf("Fetch = %v, %v", held, err)
			}
			for _, m := range held {
				if err := c1.SetAttempts(ctx, m.ID, 1); err != nil {
					t.Fatal(err)
				}
			}
			if err := tt.delete(raw, logKey(topic), ids(held)); err != nil {
				t.Fatal(err)
			}

			// c2 takes what survives once the lease is over.
			var taken []broker.Message
			before := commandCalls(t, raw, "xautoclaim")
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				msgs, err := c2.Fetch(ctx, 10, 100*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range msgs {
					if m.Attempts != 1 || !m.Redelivered {
						t.Errorf("taken %q: Attempts=%d Redelivered=%v", m.Payload, m.Attempts, m.Redelivered)
					}
				}
				ack(t, c2, msgs) // or c2 would take them again after its own lease
				taken = append(taken, msgs...)
			}
			if len(taken) != tt.left {
				t.Fatalf("c2 took %d, want %d", len(taken), tt.left)
			}
			// One claim scan per quarter lease, give or take: not a spin.
			if calls := commandCalls(t, raw, "xautoclaim") - before; calls > 100 {
				t.Errorf("%d XAUTOCLAIM calls in 2s: spinning", calls)
			}
			if n := raw.HLen(ctx, attemptsKey(topic, "g")).Val(); n != 0 {
				t.Errorf("recorded attempts = %d after all were acknowledged or deleted", n)
			}
		})
	}
}

func ids(msgs []broker.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func ack(t *testing.T, sub broker.Subscription, msgs []broker.Message) {
	t.Helper()
	if len(msgs) == 0 {
		return
	}
	if err := sub.Ack(context.Background(), ids(msgs)...); err != nil {
		t.Fatal(err)
	}
}

// TestTrimKeepsWhatGroupsNeed checks the retention arithmetic: acknowledged
// entries go, entries any group still needs stay, and a log without groups
// keeps about MaxLen entries.
func TestTrimKeepsWhatGroupsNeed(t *testing.T) {
	srv := redistest.Start(t)
	bus := newTestBus(t, srv, Config{MaxLen: 100, TrimInterval: 20 * time.Millisecond})
	raw := rawClient(t, srv)
	ctx := context.Background()

	waitLen := func(t *testing.T, topic string, ok func(int64) bool, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := raw.XLen(ctx, logKey(topic)).Val()
			if ok(n) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("log length %d, want %s", n, what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	t.Run("groups", func(t *testing.T) {
		const topic = "ns/trim-groups"
		fast, err := bus.Subscribe(ctx, topic, "fast", broker.SubscribeConfig{Consumer: "c"})
		if err != nil {
			t.Fatal(err)
		}
		defer fast.Close()
		slow, err := bus.Subscribe(ctx, topic, "slow", broker.SubscribeConfig{Consumer: "c"})
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		idle, err := bus.Subscribe(ctx, topic, "idle", broker.SubscribeConfig{Consumer: "c"})
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()

		for i := range 10 {
			if err := bus.Publish(ctx, topic, []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		all, err := fast.Fetch(ctx, 10, time.Second)
		if err != nil || len(all) != 10 {
			t.Fatalf("Fetch = %v, %v", all, err)
		}
		ack(t, fast, all)
		someSlow, err := slow.Fetch(ctx, 10, time.Second)
		if err != nil || len(someSlow) != 10 {
			t.Fatalf("Fetch = %v, %v", someSlow, err)
		}
		ack(t, slow, someSlow[:4]) // slow still holds 4..9; idle has read nothing
		waitLen(t, topic, func(n int64) bool { return n == 10 }, "10 (idle needs all)")

		// Reading without acknowledging moves the need to the oldest pending.
		got, err := idle.Fetch(ctx, 10, time.Second)
		if err != nil || len(got) != 10 {
			t.Fatalf("Fetch = %v, %v", got, err)
		}
		ack(t, idle, got[:7])
		if err := bus.Publish(ctx, topic, []byte("wake the trimmer")); err != nil {
			t.Fatal(err)
		}
		waitLen(t, topic, func(n int64) bool { return n == 7 }, "7 (slow holds 4..9, plus one new)")
		if err := bus.DeleteGroup(ctx, topic, "slow"); err != nil {
			t.Fatal(err)
		}
		waitLen(t, topic, func(n int64) bool { return n == 4 }, "4 (idle holds 7..9, plus one new)")
	})

	t.Run("no groups", func(t *testing.T) {
		const topic = "ns/trim-none"
		for range 30 {
			batch := make([][]byte, 20)
			for i := range batch {
				batch[i] = []byte("x")
			}
			if err := bus.Publish(ctx, topic, batch...); err != nil {
				t.Fatal(err)
			}
		}
		// Approximate trimming removes whole nodes of up to 100 entries.
		waitLen(t, topic, func(n int64) bool { return n >= 100 && n < 300 }, "about MaxLen (100)")
	})
}

// TestBlockedFetchesDoNotStarvePublish runs more blocking Fetches than the
// shared pool has connections, and publishes meanwhile.
func TestBlockedFetchesDoNotStarvePublish(t *testing.T) {
	srv := redistest.Start(t)
	bus := newTestBus(t, srv, Config{})
	ctx := context.Background()
	const subscribers = 40

	var wg sync.WaitGroup
	subs := make([]broker.Subscription, subscribers)
	for i := range subs {
		sub, err := bus.Subscribe(ctx, "ns/waiting", fmt.Sprintf("g%d", i), broker.SubscribeConfig{Consumer: "c"})
		if err != nil {
			t.Fatal(err)
		}
		subs[i] = sub
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = sub.Fetch(ctx, 1, 30*time.Second)
		}()
	}
	time.Sleep(200 * time.Millisecond) // let the Fetches block

	start := time.Now()
	for i := range 200 {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := bus.Publish(pctx, "ns/busy", []byte(strconv.Itoa(i)))
		cancel()
		if err != nil {
			t.Fatalf("Publish %d with %d blocked Fetches: %v", i, subscribers, err)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("200 publishes took %v with %d blocked Fetches", took, subscribers)
	}
	if err := bus.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}

	start = time.Now()
	for _, sub := range subs {
		_ = sub.Close()
	}
	wg.Wait()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("closing %d subscriptions with blocked Fetches took %v", subscribers, took)
	}
}

// TestPublishCancelled checks that a cancelled context is honoured
// and that the bus keeps working after many cancelled publishes.
func TestPublishCancelled(t *testing.T) {
	srv := redistest.Start(t)
	bus := newTestBus(t, srv, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := bus.Publish(ctx, "ns/cancel", []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a cancelled context = %v", err)
	}

	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%5)*20*time.Microsecond)
			defer cancel()
			err := bus.Publish(ctx, "ns/cancel", []byte("x"))
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Publish = %v", err)
			}
		}()
	}
	wg.Wait()
	if err := bus.Publish(context.Background(), "ns/cancel", []byte("y")); err != nil {
		t.Fatalf("Publish after cancellations: %v", err)
	}
}

func TestCloseFailsQueuedPublishes(t *testing.T) {
	srv := redistest.Start(t)
	bus := newTestBus(t, srv, Config{Writers: 1})
	ctx := context.Background()

	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := bus.Publish(ctx, "ns/closing", []byte("x"))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				outcomes["ok"]++
			case errors.Is(err, broker.ErrClosed):
				outcomes["closed"]++
			default:
				outcomes[err.Error()]++
			}
		}()
	}
	time.Sleep(time.Millisecond)
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if outcomes["ok"]+outcomes["closed"] != 200 {
		t.Errorf("outcomes = %v, want only successes and ErrClosed", outcomes)
	}
	if got := bus.Stats().Published; got != uint64(outcomes["ok"]) {
		t.Errorf("Stats().Published = %d, successful publishes = %d", got, outcomes["ok"])
	}
}

// BenchmarkPublish publishes 1 KiB payloads from many goroutines, the way
// the ingress does under load.
func BenchmarkPublish(b *testing.B) {
	srv := redistest.Start(b)
	bus := newTestBus(b, srv, Config{Logger: slog.New(slog.DiscardHandler)})
	payload := []byte(strings.Repeat("x", 1024))
	ctx := context.Background()

	b.SetParallelism(32) // 64 senders on 2 CPUs
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := bus.Publish(ctx, "bench/publish", payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := bus.Stats()
	if st.Batches > 0 {
		b.ReportMetric(float64(st.Published)/float64(st.Batches), "payloads/batch")
	}
}

func TestDeadLetterRetention(t *testing.T) {
	srv := redistest.Start(t)
	bus := newTestBus(t, srv, Config{DeadLetterRetention: 200 * time.Millisecond})
	raw := rawClient(t, srv)
	ctx := context.Background()
	const topic = "ns/dlq-retention"

	// Trimming is approximate: it drops whole stream nodes of 100 entries.
	for range 150 {
		if err := bus.DeadLetter(ctx, topic, "g", broker.DeadLetter{Code: -1}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if err := bus.DeadLetter(ctx, topic, "g", broker.DeadLetter{Payload: []byte("fresh"), Code: 500}); err != nil {
		t.Fatal(err)
	}
	if n := raw.XLen(ctx, dlqKey(topic, "g")).Val(); n >= 151 || n < 1 {
		t.Errorf("dead letters kept = %d, want the expired ones (at least a node of 100) gone", n)
	}
	dls, err := bus.DeadLetters(ctx, topic, "g", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if last := dls[len(dls)-1]; string(last.Payload) != "fresh" || last.Code != 500 {
		t.Errorf("newest dead letter = %+v, want the fresh one", last)
	}
	if _, err := bus.DeadLetters(ctx, topic, "g", "", 0); err == nil {
		t.Error("DeadLetters with limit 0 succeeded")
	}
	if _, err := bus.DeadLetters(ctx, topic, "g", "not-an-id", 10); err == nil {
		t.Error("DeadLetters after a malformed id succeeded")
	}
}
