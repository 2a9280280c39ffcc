package receiver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestDedupeWindow(t *testing.T) {
	ctx := context.Background()
	t0 := time.Unix(1_000_000, 0)
	dd := newDedupe(time.Hour, 100)

	claim := func(id string, at time.Time) bool {
		t.Helper()
		owned, err := dd.claim(ctx, id, at)
		if err != nil {
			t.Fatal(err)
		}
		return owned
	}
	if !claim("a", t0) {
		t.Fatal("first claim not owned")
	}
	dd.finish("a", true, t0)
	if claim("a", t0.Add(59*time.Minute)) {
		t.Error("a stored delivery was claimable within the window")
	}
	if !claim("a", t0.Add(time.Hour)) {
		t.Error("a stored delivery stayed a duplicate after the window")
	}
	dd.finish("a", false, t0.Add(time.Hour))
	if !claim("a", t0.Add(time.Hour)) {
		t.Error("a failed delivery was not claimable again")
	}
	dd.finish("a", true, t0.Add(time.Hour))
	if n := dd.len(); n != 1 {
		t.Errorf("remembers %d deliveries, want 1", n)
	}
}

func TestDedupeMax(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_000_000, 0)
	dd := newDedupe(time.Hour, 3)
	for i := range 5 {
		id := fmt.Sprint(i)
		if owned, _ := dd.claim(ctx, id, now); !owned {
			t.Fatalf("claim %s not owned", id)
		}
		dd.finish(id, true, now)
	}
	if n := dd.len(); n != 3 {
		t.Errorf("remembers %d deliveries, want at most 3", n)
	}
	if owned, _ := dd.claim(ctx, "0", now); !owned {
		t.Error("the oldest delivery was not forgotten first")
	}
	if owned, _ := dd.claim(ctx, "4", now); owned {
		t.Error("the newest delivery was forgotten")
	}
}

// A request carrying a delivery that another request is storing waits for
// its outcome: a duplicate if it was stored, its own to store otherwise.
func TestDedupeConcurrent(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_000_000, 0)
	for _, stored := range []bool{true, false} {
		dd := newDedupe(time.Hour, 10)
		if owned, _ := dd.claim(ctx, "x", now); !owned {
			t.Fatal("first claim not owned")
		}
		var wg sync.WaitGroup
		results := make(chan bool, 5)
		for range 5 {
			wg.Go(func() {
				owned, err := dd.claim(ctx, "x", now)
				if err != nil {
					t.Error(err)
				}
				if owned {
					dd.finish("x", true, now)
				}
				results <- owned
			})
		}
		time.Sleep(20 * time.Millisecond) // let them block
		dd.finish("x", stored, now)
		wg.Wait()
		close(results)
		owners := 0
		for owned := range results {
			if owned {
				owners++
			}
		}
		if want := map[bool]int{true: 0, false: 1}[stored]; owners != want {
			t.Errorf("first stored=%v: %d waiters took the delivery over, want %d", stored, owners, want)
		}
	}

	dd := newDedupe(time.Hour, 10)
	_, _ = dd.claim(ctx, "y", now)
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := dd.claim(short, "y", now); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting past the deadline: %v", err)
	}
}
