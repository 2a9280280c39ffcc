package jetstream

import (
	"context"
	"errors"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
)

// Expired entries are removed by the server, not only hidden, and entries
// survive a restart of the embedded server.
func TestStateExpiresOnServerAndSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	b := newTestBus(t, Config{DataDir: dir})
	if _, err := b.CompareAndSwapState(ctx, "d/b", "sensor.s.t", "gone", 0, []byte("v"), 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CompareAndSwapState(ctx, "d/b", "sensor.s.t", "kept", 0, []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	tp, _ := b.topic("d/b")
	subject := tp.stateEntrySubject(token("sensor.s.t"), "gone")
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := tp.kv.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, natsjs.ErrMsgNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("expired entry still stored on the server: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = newTestBus(t, Config{DataDir: dir})
	e, err := b.GetState(ctx, "d/b", "sensor.s.t", "kept")
	if err != nil || string(e.Value) != "v" {
		t.Fatalf("after restart: %q, %v", e.Value, err)
	}
}

func TestServerTTL(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Millisecond:        "1s",
		time.Second:             "1s",
		1500 * time.Millisecond: "2s",
		time.Hour:               "3600s",
	} {
		if got := serverTTL(d); got != want {
			t.Errorf("serverTTL(%v) = %q, want %q", d, got, want)
		}
	}
}
