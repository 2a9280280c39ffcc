package jetstream

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/broker/brokertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newTestBus returns a bus closed when the test ends. An empty cfg.URL and
// cfg.DataDir get an embedded server in a fresh directory.
func newTestBus(t testing.TB, cfg Config) *Bus {
	t.Helper()
	if cfg.URL == "" && cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil && !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// startExternal runs a JetStream server the way an operator would run one,
// on a free loopback port, stopped when the test ends. Buses reach it by URL.
func startExternal(t testing.TB) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoSigs:    true,
		NoLog:     true,
	})
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		t.Fatal("nats-server not ready after 10s")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

func TestConformanceEmbedded(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, opts brokertest.Options) broker.Bus {
		return newTestBus(t, Config{MaxLen: opts.MaxLen})
	})
}

func TestConformanceExternal(t *testing.T) {
	srv := startExternal(t)
	brokertest.Run(t, func(t *testing.T, opts brokertest.Options) broker.Bus {
		return newTestBus(t, Config{URL: srv.ClientURL(), MaxLen: opts.MaxLen})
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		wantField string
	}{
		{"embedded without DataDir", Config{}, "Config.DataDir"},
		{"bad URL scheme", Config{URL: "http://user:secret@example:4222"}, "Config.URL"},
		{"URL without host", Config{URL: "nats://"}, "Config.URL"},
		{"one bad URL of two", Config{URL: "nats://a:4222,redis://user:secret@b"}, "Config.URL"},
		{"Listen with URL", Config{URL: "nats://localhost:4222", Listen: "127.0.0.1:4222"}, "Config.Listen"},
		{"SyncAlways with URL", Config{URL: "nats://localhost:4222", SyncAlways: true}, "Config.SyncAlways"},
		{"SyncInterval with URL", Config{URL: "nats://localhost:4222", SyncInterval: time.Second},
			"Config.SyncInterval"},
		{"Listen without port", Config{DataDir: "d", Listen: "localhost"}, "Config.Listen"},
		{"Listen with bad port", Config{DataDir: "d", Listen: "localhost:http"}, "Config.Listen"},
		{"negative SyncInterval", Config{DataDir: "d", SyncInterval: -time.Second}, "Config.SyncInterval"},
		{"negative MaxLen", Config{DataDir: "d", MaxLen: -1}, "Config.MaxLen"},
		{"negative retention", Config{DataDir: "d", DeadLetterRetention: -time.Hour}, "Config.DeadLetterRetention"},
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

	cfg, err := Config{DataDir: "d"}.validate()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxLen != DefaultMaxLen || cfg.DeadLetterRetention != DefaultDeadLetterRetention ||
		cfg.SyncInterval != DefaultSyncInterval || cfg.Logger == nil {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	cfg, err = Config{URL: "nats://a:4222, tls://b:4222"}.validate()
	if err != nil || cfg.SyncInterval != 0 {
		t.Errorf("validate(external) = %+v, %v; want no error and no SyncInterval", cfg, err)
	}
}

func TestNewFailsWhenServerIsDown(t *testing.T) {
	srv := startExternal(t)
	url := srv.ClientURL()
	srv.Shutdown()
	srv.WaitForShutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if b, err := New(ctx, Config{URL: url}); err == nil {
		_ = b.Close()
		t.Fatal("New succeeded with the server down")
	}
}

func TestDescribeAndListen(t *testing.T) {
	dir := t.TempDir()
	embedded := newTestBus(t, Config{DataDir: dir, Listen: "127.0.0.1:0"})
	desc := embedded.Describe()
	if !strings.Contains(desc, "embedded JetStream, data in "+filepath.Join(dir, "jetstream")) ||
		!strings.Contains(desc, "fsync every 1s") || !strings.Contains(desc, "listening on nats://127.0.0.1:") {
		t.Errorf("Describe() = %q", desc)
	}
	listen := embedded.ListenURL()
	if !strings.HasPrefix(listen, "nats://127.0.0.1:") || strings.HasSuffix(listen, ":0") {
		t.Fatalf("ListenURL() = %q, want the actual loopback address", listen)
	}

	// Another process (here: another bus) reaches the embedded server and
	// shares its topics.
	remote := newTestBus(t, Config{URL: "nats://user:secret@" + strings.TrimPrefix(listen, "nats://")})
	d := remote.Describe()
	if !strings.HasPrefix(d, "JetStream at nats://127.0.0.1:") || strings.Contains(d, "secret") {
		t.Errorf("Describe() of the remote bus = %q", d)
	}
	if remote.ListenURL() != "" {
		t.Errorf("ListenURL() of a remote bus = %q, want empty", remote.ListenURL())
	}
	ctx := context.Background()
	sub := subscribe(t, remote, "ns/shared", "g", "c", 0)
	if err := embedded.Publish(ctx, "ns/shared", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	checkPayloads(t, fetchN(t, sub, 1), "hello")

	quiet := newTestBus(t, Config{SyncAlways: true})
	if d := quiet.Describe(); !strings.Contains(d, "fsync on every write") || strings.Contains(d, "listening") {
		t.Errorf("Describe() = %q", d)
	}
	if quiet.ListenURL() != "" {
		t.Errorf("ListenURL() without Listen = %q, want empty", quiet.ListenURL())
	}
}

func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	first, err := New(context.Background(), Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := New(context.Background(), Config{DataDir: dir}); !errors.Is(err, ErrDataDirLocked) {
		if err == nil {
			_ = b.Close()
		}
		t.Fatalf("second New on one DataDir = %v, want ErrDataDirLocked", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	newTestBus(t, Config{DataDir: dir}) // the lock is released by Close
}

// TestRestartKeepsEverything closes the bus, and so its embedded server, and
// starts a new one on the same directory: the stored messages, the group's
// position, the messages its consumer held and their attempts are all there.
func TestRestartKeepsEverything(t *testing.T) {
	const n = 200
	dir := t.TempDir()
	ctx := context.Background()
	const topic = "ns/restart"

	first := newTestBus(t, Config{DataDir: dir})
	sub := subscribe(t, first, topic, "g", "c", 0)
	other := subscribe(t, first, topic, "other", "c", 0)
	var want []string
	for i := range n {
		want = append(want, "m"+strconv.Itoa(i))
	}
	publish(t, first, topic, want[:n/2]...)
	publish(t, first, topic, want[n/2:]...)

	held := fetchN(t, sub, 3)
	if err := sub.SetAttempts(ctx, held[1].ID, 7); err != nil {
		t.Fatal(err)
	}
	ack(t, other, fetchN(t, other, n)...) // "other" is done; "g" still needs everything
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second := newTestBus(t, Config{DataDir: dir})
	sub = subscribe(t, second, topic, "g", "c", 0)
	start := time.Now()
	got := fetchN(t, sub, n)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("fetching after the restart took %v; the held messages waited for their lease", took)
	}
	checkPayloads(t, got, want...)
	for i, m := range got {
		wantAttempts, wantRedelivered := 0, i < 3
		if i == 1 {
			wantAttempts = 7
		}
		if m.Attempts != wantAttempts || m.Redelivered != wantRedelivered || m.ID != ids(got)[i] {
			t.Errorf("message %d after restart: Attempts=%d Redelivered=%v, want %d and %v",
				i, m.Attempts, m.Redelivered, wantAttempts, wantRedelivered)
		}
	}
	if got[1].ID != held[1].ID {
		t.Errorf("ID after restart = %q, want %q", got[1].ID, held[1].ID)
	}
	other = subscribe(t, second, topic, "other", "c", 0)
	expectNone(t, other, 300*time.Millisecond)

	// Acknowledged by every group, the messages leave the log.
	ack(t, sub, got...)
	waitFor(t, "the log to empty", func() bool { return streamMsgs(t, second, topic) == 0 })
}

// TestCrashRestartGetsPendingBack covers a consumer that goes away without
// Close, as in a crash: the record written by its last Fetch lets a new
// consumer with its name take its messages at once.
func TestCrashRestartGetsPendingBack(t *testing.T) {
	bus := newTestBus(t, Config{})
	const topic = "ns/crash"
	crashed, err := bus.Subscribe(context.Background(), topic, "g", broker.SubscribeConfig{Consumer: "c"})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, bus, topic, "a", "b", "c")
	held := fetchN(t, crashed, 3)

	// crashed is never closed before the new one runs.
	again := subscribe(t, bus, topic, "g", "c", 0)
	start := time.Now()
	back := fetchN(t, again, 3)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("pending messages came back after %v, want at once", took)
	}
	if !slices.Equal(ids(back), ids(held)) {
		t.Errorf("IDs = %q, want %q", ids(back), ids(held))
	}
	_ = crashed.Close()
}

// TestHandBackSkipsExpiredLeases makes sure a restarted consumer does not
// take back a message whose lease ran out and that another consumer holds
// by now: that would deliver it twice at the same time.
func TestHandBackSkipsExpiredLeases(t *testing.T) {
	const lease = 300 * time.Millisecond
	bus := newTestBus(t, Config{})
	const topic = "ns/expired"
	c1 := subscribe(t, bus, topic, "g", "c1", lease)
	c2 := subscribe(t, bus, topic, "g", "c2", lease)
	publish(t, bus, topic, "m")
	held := fetchN(t, c1, 1)
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}

	taken := fetchN(t, c2, 1) // after the lease
	if taken[0].ID != held[0].ID {
		t.Fatalf("c2 took %q, want %q", taken[0].ID, held[0].ID)
	}
	stop := renewWhile(t, c2, taken[0].ID, lease/5)

	c1 = subscribe(t, bus, topic, "g", "c1", lease)
	expectNone(t, c1, 3*lease)
	stop()
	ack(t, c2, taken...)
	expectNone(t, c1, 2*lease)
}

// TestInterruptedFetchLosesNothing cancels Fetches while messages are on
// their way: whatever the server delivered to them comes back at once, not
// after the 30s lease.
func TestInterruptedFetchLosesNothing(t *testing.T) {
	const n = 200
	bus := newTestBus(t, Config{})
	const topic = "ns/interrupted"
	sub := subscribe(t, bus, topic, "g", "c", 0)
	payload := strings.Repeat("x", 1024)
	batch := make([]string, n)
	for i := range batch {
		batch[i] = payload
	}
	publish(t, bus, topic, batch...)

	seen := map[string]bool{}
	interrupted := 0
	var timings []time.Duration
	for i := range 40 {
		timings = append(timings, time.Duration(i)*150*time.Microsecond)
	}
	for _, after := range timings {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(after, cancel)
		msgs, err := sub.Fetch(ctx, n, 10*time.Second)
		cancel()
		switch {
		case errors.Is(err, context.Canceled):
			interrupted++
		case err != nil:
			t.Fatalf("Fetch: %v", err)
		}
		for _, m := range msgs {
			seen[m.ID] = true
		}
		ack(t, sub, msgs...)
	}
	t.Logf("%d of %d fetches interrupted; %d messages fetched by the others", interrupted, len(timings), len(seen))

	deadline := time.Now().Add(5 * time.Second)
	for len(seen) < n && time.Now().Before(deadline) {
		msgs, err := sub.Fetch(context.Background(), n, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if seen[m.ID] {
				t.Fatalf("message %s fetched again after it was acknowledged", m.ID)
			}
			seen[m.ID] = true
		}
		ack(t, sub, msgs...)
	}
	if len(seen) != n {
		t.Fatalf("%d of %d messages fetched within 5s; the others wait for their lease", len(seen), n)
	}
}

func TestDeleteGroupStopsFetch(t *testing.T) {
	bus := newTestBus(t, Config{})
	ctx := context.Background()
	const topic = "ns/deleted"
	sub := subscribe(t, bus, topic, "g", "c", 0)
	publish(t, bus, topic, "a")
	fetchN(t, sub, 1)

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
		if !errors.Is(err, errGroupMissing) {
			t.Fatalf("blocked Fetch during DeleteGroup = %v, want errGroupMissing", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked Fetch did not return after DeleteGroup")
	}
	if _, err := sub.Fetch(ctx, 10, 100*time.Millisecond); !errors.Is(err, errGroupMissing) {
		t.Fatalf("Fetch after DeleteGroup = %v, want errGroupMissing", err)
	}
	n := topicNames(topic)
	if _, err := bus.js.Consumer(ctx, n.logStream, token("g")); !errors.Is(err, natsjs.ErrConsumerNotFound) {
		t.Errorf("consumer after DeleteGroup and Fetch: %v, want not found", err)
	}
}

func TestAckForgetsAttempts(t *testing.T) {
	bus := newTestBus(t, Config{})
	ctx := context.Background()
	const topic = "ns/attempts"
	sub := subscribe(t, bus, topic, "g", "c", 0)
	publish(t, bus, topic, "a", "b", "c")
	msgs := fetchN(t, sub, 3)
	for _, m := range msgs {
		if err := sub.SetAttempts(ctx, m.ID, 5); err != nil {
			t.Fatal(err)
		}
	}
	if got := attemptRecords(t, bus, topic, "g", msgs); got != 3 {
		t.Fatalf("attempt records = %d, want 3", got)
	}
	ack(t, sub, msgs[0])
	if got := attemptRecords(t, bus, topic, "g", msgs); got != 2 {
		t.Errorf("attempt records after one Ack = %d, want 2", got)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bus.DeleteGroup(ctx, topic, "g"); err != nil {
		t.Fatal(err)
	}
	if got := attemptRecords(t, bus, topic, "g", msgs); got != 0 {
		t.Errorf("attempt records after DeleteGroup = %d, want 0", got)
	}
	state, err := bus.js.Stream(ctx, topicNames(topic).stateStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := state.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Errorf("state stream after DeleteGroup: %+v, %v; want empty", info.State, err)
	}
}

// TestOddNames runs names that are not valid JetStream names as they are,
// and names long enough to be hashed.
func TestOddNames(t *testing.T) {
	bus := newTestBus(t, Config{})
	ctx := context.Background()
	long := strings.Repeat("n", 300)
	tests := []struct{ topic, group, consumer string }{
		{"Ns/Na.me *>", "trigger.Orders", "host.example.com"},
		{"ns/ünï cøde", "sensor.s.t", "pod-0"},
		{"ns/" + long, "trigger." + long, long},
	}
	for _, tt := range tests {
		sub := subscribe(t, bus, tt.topic, tt.group, tt.consumer, 0)
		publish(t, bus, tt.topic, "x")
		msgs := fetchN(t, sub, 1)
		if err := sub.SetAttempts(ctx, msgs[0].ID, 1); err != nil {
			t.Fatalf("%q: SetAttempts: %v", tt.topic, err)
		}
		ack(t, sub, msgs...)
		dl := broker.DeadLetter{Payload: []byte("d"), Code: -1}
		if err := bus.DeadLetter(ctx, tt.topic, tt.group, dl); err != nil {
			t.Fatalf("%q: DeadLetter: %v", tt.topic, err)
		}
		if dls, err := bus.DeadLetters(ctx, tt.topic, tt.group, "", 10); err != nil || len(dls) != 1 {
			t.Fatalf("%q: DeadLetters = %v, %v", tt.topic, dls, err)
		}
		if err := bus.DeleteGroup(ctx, tt.topic, tt.group); err != nil {
			t.Fatalf("%q: DeleteGroup: %v", tt.topic, err)
		}
	}
}

func TestDeadLetterRetention(t *testing.T) {
	bus := newTestBus(t, Config{DeadLetterRetention: 300 * time.Millisecond})
	ctx := context.Background()
	const topic = "ns/dlq-retention"
	for range 5 {
		if err := bus.DeadLetter(ctx, topic, "g", broker.DeadLetter{Code: -1}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "old dead letters to expire", func() bool {
		dls, err := bus.DeadLetters(ctx, topic, "g", "", 10)
		return err == nil && len(dls) == 0
	})
	if err := bus.DeadLetter(ctx, topic, "g", broker.DeadLetter{Payload: []byte("fresh"), Code: 500}); err != nil {
		t.Fatal(err)
	}
	dls, err := bus.DeadLetters(ctx, topic, "g", "", 10)
	if err != nil || len(dls) != 1 || string(dls[0].Payload) != "fresh" || dls[0].ID != "6" {
		t.Errorf("DeadLetters = %+v, %v; want the fresh one, ID 6", dls, err)
	}
	if _, err := bus.DeadLetters(ctx, topic, "g", "", 0); err == nil {
		t.Error("DeadLetters with limit 0 succeeded")
	}
	if _, err := bus.DeadLetters(ctx, topic, "g", "not-an-id", 10); err == nil {
		t.Error("DeadLetters after a malformed ID succeeded")
	}
}

// TestExternalServerRestart stops the external server under a running bus
// and starts it again on the same port and store.
func TestExternalServerRestart(t *testing.T) {
	dir := t.TempDir()
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: dir,
		NoSigs: true, NoLog: true}
	srv := runServer(t, opts)
	addr := srv.Addr().(*net.TCPAddr)
	bus := newTestBus(t, Config{URL: srv.ClientURL()})
	ctx := context.Background()
	const topic = "ns/server-restart"
	sub := subscribe(t, bus, topic, "g", "c", 0)
	publish(t, bus, topic, "before")
	ack(t, sub, fetchN(t, sub, 1)...)

	srv.Shutdown()
	srv.WaitForShutdown()
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	err := bus.Publish(pctx, topic, []byte("while down"))
	cancel()
	if err == nil || errors.Is(err, broker.ErrBackpressure) {
		t.Fatalf("Publish with the server down = %v, want a plain error", err)
	}
	if err := bus.Ping(ctx); err == nil {
		t.Error("Ping with the server down succeeded")
	}

	opts.Port = addr.Port
	runServer(t, opts)
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := bus.Publish(pctx, topic, []byte("after"))
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Publish after the server came back: %v", err)
		}
	}
	// "while down" may have been stored after the reconnection; "after" was.
	var got []string
	for time.Now().Before(deadline) && !slices.Contains(got, "after") {
		msgs, err := sub.Fetch(ctx, 10, 100*time.Millisecond)
		if err != nil {
			continue // errors while the client reconnects
		}
		got = append(got, payloads(msgs)...)
		ack(t, sub, msgs...)
	}
	if !slices.Contains(got, "after") {
		t.Fatalf("fetched %q after the server came back, want \"after\"", got)
	}
	// Close before the cleanup stops the server.
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
}

func runServer(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	o := *opts
	srv, err := server.NewServer(&o)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready after 10s")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// BenchmarkPublish publishes 1 KiB payloads from many goroutines, the way
// the ingress does under load, to the embedded server.
func BenchmarkPublish(b *testing.B) {
	bus := newTestBus(b, Config{MaxLen: benchMaxLen, Logger: slog.New(slog.DiscardHandler)})
	benchmarkPublish(b, bus)
}

// BenchmarkPublishExternal is BenchmarkPublish against a server reached over
// loopback TCP.
func BenchmarkPublishExternal(b *testing.B) {
	srv := startExternal(b)
	bus := newTestBus(b, Config{URL: srv.ClientURL(), MaxLen: benchMaxLen, Logger: slog.New(slog.DiscardHandler)})
	benchmarkPublish(b, bus)
}

// benchMaxLen keeps a long benchmark from reaching the retention limit: the
// benchmark's group never acknowledges, so every payload stays on disk.
const benchMaxLen = 1 << 40

func benchmarkPublish(b *testing.B, bus *Bus) {
	ctx := context.Background()
	// With interest retention a topic without groups stores nothing.
	sub, err := bus.Subscribe(ctx, "bench/publish", "g", broker.SubscribeConfig{Consumer: "c"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Close() })
	payload := []byte(strings.Repeat("x", 1024))

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
}

// TestSubscribeChangesLease checks that the last subscriber's lease becomes
// the group's ack wait.
func TestSubscribeChangesLease(t *testing.T) {
	bus := newTestBus(t, Config{})
	ctx := context.Background()
	const topic = "ns/lease"
	subscribe(t, bus, topic, "g", "c1", time.Second)
	subscribe(t, bus, topic, "g", "c2", 2*time.Second)
	c, err := bus.js.Consumer(ctx, topicNames(topic).logStream, token("g"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config.AckWait; got != 2*time.Second {
		t.Errorf("ack wait = %v, want 2s", got)
	}
}

// BenchmarkFetchAck consumes 1 KiB messages the way a dispatcher does:
// fetches of up to 100, each message acknowledged on its own.
func BenchmarkFetchAck(b *testing.B) {
	bus := newTestBus(b, Config{MaxLen: benchMaxLen, Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	sub, err := bus.Subscribe(ctx, "bench/fetch", "g", broker.SubscribeConfig{Consumer: "c"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Close() })
	payload := []byte(strings.Repeat("x", 1024))
	batch := make([][]byte, 1000)
	for i := range batch {
		batch[i] = payload
	}
	for left := b.N; left > 0; left -= len(batch) {
		if err := bus.Publish(ctx, "bench/fetch", batch[:min(left, len(batch))]...); err != nil {
			b.Fatal(err)
		}
	}

	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	for got := 0; got < b.N; {
		msgs, err := sub.Fetch(ctx, 100, time.Second)
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range msgs {
			if err := sub.Ack(ctx, m.ID); err != nil {
				b.Fatal(err)
			}
		}
		got += len(msgs)
	}
}

// TestCloseLosesNoAcks acknowledges many messages one by one right before a
// clean shutdown: after a restart none of them is pending again.
func TestCloseLosesNoAcks(t *testing.T) {
	const n = 3000
	dir := t.TempDir()
	const topic = "ns/close-acks"
	first := newTestBus(t, Config{DataDir: dir})
	sub := subscribe(t, first, topic, "g", "c", 0)
	batch := make([]string, n)
	for i := range batch {
		batch[i] = "m"
	}
	publish(t, first, topic, batch...)
	for _, m := range fetchN(t, sub, n) {
		ack(t, sub, m)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second := newTestBus(t, Config{DataDir: dir})
	c, err := second.js.Consumer(context.Background(), topicNames(topic).logStream, token("g"))
	if err != nil {
		t.Fatal(err)
	}
	if info := c.CachedInfo(); info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("after a clean restart: %d messages pending acknowledgement, %d undelivered; want none",
			info.NumAckPending, info.NumPending)
	}
	if got := streamMsgs(t, second, topic); got != 0 {
		t.Errorf("log holds %d messages after every one was acknowledged", got)
	}
}
