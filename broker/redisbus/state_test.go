package redisbus

import (
	"context"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/internal/redistest"
)

// Entries sit under the topic's hash tag and carry a Redis TTL exactly when
// written with one, so Redis itself removes expired partial state.
func TestStateKeysAndTTL(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newTestBus(t, srv, Config{})
	raw := rawClient(t, srv)
	ctx := context.Background()

	rev, err := b.CompareAndSwapState(ctx, "d/b", "sensor.s.t", "flash-1", 0, []byte("v"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	key := "signalbox:{d/b}:state:sensor.s.t:flash-1"
	if ttl := raw.PTTL(ctx, key).Val(); ttl <= 9*time.Second || ttl > 10*time.Second {
		t.Errorf("PTTL = %v, want about 10s", ttl)
	}
	if _, err := b.CompareAndSwapState(ctx, "d/b", "sensor.s.t", "flash-1", rev, []byte("w"), 0); err != nil {
		t.Fatal(err)
	}
	if ttl := raw.PTTL(ctx, key).Val(); ttl != -1 {
		t.Errorf("PTTL after a write without TTL = %v, want none (-1)", ttl)
	}
	if n := raw.Exists(ctx, "signalbox:{d/b}:state-rev").Val(); n != 1 {
		t.Error("revision counter missing")
	}
}

func TestGlobEscape(t *testing.T) {
	if got := globEscape(`a*b?c[d]e\f`); got != `a\*b\?c\[d\]e\\f` {
		t.Errorf("globEscape = %q", got)
	}
}
