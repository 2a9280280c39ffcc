package receiver

import (
	"context"
	"sync"
	"time"
)

// DefaultMaxDeliveries is how many delivery ids a source remembers when
// Config.MaxDeliveries is zero.
const DefaultMaxDeliveries = 100_000

// dedupe remembers the delivery ids of one source that were stored, for a
// window, so that a provider's retry of a stored delivery is answered
// without storing it again. A delivery being stored blocks requests with the
// same id until it is done: if it fails they store it themselves, otherwise
// they are duplicates. The memory is this process's: replicas do not share
// it (subscribers still see the delivery id as the event id and dedupe on
// it). It is safe for concurrent use.
type dedupe struct {
	window time.Duration
	max    int

	mu    sync.Mutex
	seen  map[string]*delivery
	order []stored // stored deliveries, oldest first
}

type delivery struct {
	done    chan struct{} // closed when the request storing it finished
	stored  bool          // set before done is closed
	expires time.Time
}

type stored struct {
	id      string
	expires time.Time
}

func newDedupe(window time.Duration, max int) *dedupe {
	return &dedupe{window: window, max: max, seen: map[string]*delivery{}}
}

// claim reports whether the caller should store delivery id: true means it
// must call finish once it knows whether it stored it; false means the
// delivery was already stored within the window. It waits while another
// request is storing the same delivery, and returns ctx's error if ctx ends
// first.
func (dd *dedupe) claim(ctx context.Context, id string, now time.Time) (bool, error) {
	for {
		dd.mu.Lock()
		dd.expire(now)
		d := dd.seen[id]
		switch {
		case d == nil:
			dd.seen[id] = &delivery{done: make(chan struct{})}
			dd.mu.Unlock()
			return true, nil
		case d.stored:
			dd.mu.Unlock()
			return false, nil
		}
		done := d.done
		dd.mu.Unlock()

		select {
		case <-done:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// finish ends a claim: a stored delivery is remembered until now+window, a
// failed one is forgotten so that the provider's retry stores it.
func (dd *dedupe) finish(id string, wasStored bool, now time.Time) {
	dd.mu.Lock()
	defer dd.mu.Unlock()
	d := dd.seen[id]
	if d == nil || d.stored {
		return // not claimed; cannot happen
	}
	if wasStored {
		d.stored = true
		d.expires = now.Add(dd.window)
		dd.order = append(dd.order, stored{id, d.expires})
	} else {
		delete(dd.seen, id)
	}
	close(d.done)
	dd.expire(now)
}

// expire forgets stored deliveries older than the window, and the oldest
// ones beyond max.
func (dd *dedupe) expire(now time.Time) {
	n := 0
	for n < len(dd.order) && (!now.Before(dd.order[n].expires) || len(dd.order)-n > dd.max) {
		s := dd.order[n]
		if d := dd.seen[s.id]; d != nil && d.stored && d.expires.Equal(s.expires) {
			delete(dd.seen, s.id)
		}
		n++
	}
	if n > 0 {
		dd.order = dd.order[n:]
	}
}

// len returns how many deliveries are remembered or in progress.
func (dd *dedupe) len() int {
	dd.mu.Lock()
	defer dd.mu.Unlock()
	return len(dd.seen)
}
