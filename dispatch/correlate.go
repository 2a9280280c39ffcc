package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/cloudevent"
)

// Correlation state
//
// Each stateful Sensor trigger keeps one StateStore entry per correlation key
// (a single entry, key "", without correlation.key) in the namespace named
// by its group, so one trigger firing never consumes what another trigger of
// the sensor waits for. An entry holds:
//
//   - held: the latest event of each dependency (by knativearrivaltime);
//   - firing: sets that completed a match and are being delivered, each with
//     the event that completed it;
//   - used: the most recent events consumed by a fire, so that a redelivered
//     event is not held a second time.
//
// An event is handled as follows, with every change to the entry made by a
// compare-and-swap that is retried from a fresh read on conflict:
//
//  1. It is added to held for each dependency it matches, unless it is
//     already there, used or part of a firing (a redelivery). Held events
//     that arrived more than the window before the newest held event are
//     dropped.
//  2. The conditions are evaluated over held. When they hold, the same swap
//     moves every held event into a new firing. Only the writer whose swap
//     succeeds fires, so two replicas never both complete one match.
//  3. The fired events are built and delivered (or dead-lettered) with the
//     trigger's delivery policy, then a last swap removes the firing, and
//     only then is the message acknowledged.
//
// A crash anywhere leaves the message unacknowledged; when it comes back,
// step 1 finds it in held (nothing to do), used (nothing to do) or as the
// completer of a pending firing, which is then delivered again with the same
// event ids. So a match fires at least once and, apart from such crashes,
// exactly once.

// Tuning of the correlation state.
const (
	// maxUsed bounds the consumed-event records kept per entry.
	maxUsed = 256
	// usedRetention is how long an entry that holds only consumed-event
	// records is kept after its last write: longer than a redelivery takes
	// after a crash, short enough that finished keys do not pile up.
	usedRetention = 10 * time.Minute
	// windowGrace is added to twice the window to form the TTL of an entry
	// with held events: the window itself is judged by arrival times, so the
	// TTL only has to outlast it with room for processing delays.
	windowGrace = time.Minute
	// maxSwapTries bounds compare-and-swap retries of one update; beyond it
	// the event is retried later like after any bus error.
	maxSwapTries = 64
)

// errBusyEntry is returned when an entry kept changing under an update.
var errBusyEntry = errors.New("correlation state entry kept changing; will retry")

// stateEntry is the stored form of one correlation key's state.
type stateEntry struct {
	Held   map[string]*heldEvent `json:"held,omitempty"`
	Firing []*firing             `json:"firing,omitempty"`
	Used   []eventRef            `json:"used,omitempty"`
}

// eventRef identifies an event: subscribers dedupe on source and id.
type eventRef struct {
	Source string `json:"s"`
	ID     string `json:"i"`
}

// heldEvent is an event held for a dependency.
type heldEvent struct {
	eventRef
	// Arrival is the event's knativearrivaltime in Unix nanoseconds.
	Arrival int64 `json:"at"`
	// TTL is its knativebrokerttl; 0 when it has none.
	TTL int `json:"ttl,omitempty"`
	// Event is the event in CloudEvents JSON form, without the TTL.
	Event json.RawMessage `json:"ev"`
}

// firing is a completed set being delivered.
type firing struct {
	ID     string                `json:"id"`
	By     eventRef              `json:"by"` // the event that completed it
	Events map[string]*heldEvent `json:"events"`
}

func (f *firing) uses(r eventRef) bool {
	for _, e := range f.Events {
		if e.eventRef == r {
			return true
		}
	}
	return false
}

// addOutcome is what adding an event to an entry did.
type addOutcome int

const (
	addHeld       addOutcome = iota // held, waiting for the rest of a match
	addFired                        // completed a match: a new firing
	addResume                       // completed a match earlier; that firing is still pending
	addKnown                        // already held, consumed or in a firing: a redelivery
	addSuperseded                   // older than what is held, or outside the window
)

func (o addOutcome) String() string {
	return [...]string{"held", "fired", "resumed", "duplicate", "superseded"}[o]
}

// add records e for the dependencies deps and evaluates the conditions. It
// returns the firing e completed (new or pending) and how many held events
// the window expired.
func (st *stateEntry) add(ss *sensorSpec, deps []string, e *heldEvent) (addOutcome, *firing, int, error) {
	ref := e.eventRef
	for _, f := range st.Firing {
		if f.By == ref {
			return addResume, f, 0, nil
		}
		if f.uses(ref) {
			return addKnown, nil, 0, nil
		}
	}
	if slices.Contains(st.Used, ref) {
		return addKnown, nil, 0, nil
	}
	if st.Held == nil {
		st.Held = map[string]*heldEvent{}
	}
	known := true
	for _, d := range deps {
		if h := st.Held[d]; h == nil || h.eventRef != ref {
			known = false
		}
	}
	if known {
		return addKnown, nil, 0, nil
	}

	for _, d := range deps {
		if h := st.Held[d]; h != nil && h.Arrival > e.Arrival {
			continue // the held one is newer
		}
		st.Held[d] = e
	}
	expired := st.expire(ss.window)
	kept := false
	for _, d := range deps {
		kept = kept || st.Held[d] == e
	}
	if !kept {
		return addSuperseded, nil, expired, nil
	}

	ok, err := ss.cond.Eval(func(dep string) bool { return st.Held[dep] != nil })
	if err != nil {
		return 0, nil, expired, err
	}
	if !ok {
		return addHeld, nil, expired, nil
	}
	f := &firing{By: ref, Events: st.Held}
	f.ID = fireID(ss.trigger, f.Events)
	st.Held = nil
	st.Firing = append(st.Firing, f)
	for _, h := range f.Events {
		if !slices.Contains(st.Used, h.eventRef) {
			st.Used = append(st.Used, h.eventRef)
		}
	}
	if n := len(st.Used); n > maxUsed {
		st.Used = slices.Delete(st.Used, 0, n-maxUsed)
	}
	return addFired, f, expired, nil
}

// expire drops held events that arrived more than window before the newest
// held event, and returns how many it dropped. A window of 0 keeps them all.
func (st *stateEntry) expire(window time.Duration) int {
	if window <= 0 {
		return 0
	}
	var newest int64
	for _, h := range st.Held {
		newest = max(newest, h.Arrival)
	}
	dropped := map[*heldEvent]bool{}
	for d, h := range st.Held {
		if newest-h.Arrival > int64(window) {
			delete(st.Held, d)
			dropped[h] = true
		}
	}
	return len(dropped)
}

// settle removes the firing with the given id; it reports whether there was
// one.
func (st *stateEntry) settle(id string) bool {
	i := slices.IndexFunc(st.Firing, func(f *firing) bool { return f.ID == id })
	if i < 0 {
		return false
	}
	st.Firing = slices.Delete(st.Firing, i, i+1)
	return true
}

// ttl is how long the entry may be kept after this write: for ever while a
// firing is pending or, without a window, while events are held; with a
// window, long enough that its held events expire by arrival time first.
func (st *stateEntry) ttl(window time.Duration) time.Duration {
	switch {
	case len(st.Firing) > 0:
		return 0
	case len(st.Held) > 0 && window > 0:
		return 2*window + windowGrace
	case len(st.Held) > 0:
		return 0
	}
	return usedRetention
}

// updateState applies fn to the entry at key with compare-and-swap, re-reading
// and re-applying on conflict. fn reports whether it changed the entry; when
// it did not, nothing is written.
func (ss *sensorSpec) updateState(ctx context.Context, topic, group, key string,
	fn func(st *stateEntry) (bool, error)) error {
	for try := range maxSwapTries {
		cur, err := ss.store.GetState(ctx, topic, group, key)
		if err != nil {
			return err
		}
		st := &stateEntry{}
		if cur.Value != nil {
			if err := json.Unmarshal(cur.Value, st); err != nil {
				// An entry this version cannot read would block the key for
				// good; start it afresh.
				st = &stateEntry{}
			}
		}
		changed, err := fn(st)
		if err != nil || !changed {
			return err
		}
		b, err := json.Marshal(st)
		if err != nil {
			return fmt.Errorf("encode correlation state: %w", err)
		}
		_, err = ss.store.CompareAndSwapState(ctx, topic, group, key, cur.Revision, b, st.ttl(ss.window))
		if !errors.Is(err, broker.ErrStateConflict) {
			return err
		}
		if try >= 4 {
			// Many writers on one key: spread them out a little.
			if !sleep(ctx, time.Duration(rand.Int64N(int64(time.Millisecond)<<min(try-4, 5)))) {
				return ctx.Err()
			}
		}
	}
	return errBusyEntry
}

// newHeldEvent prepares a fetched event for the state: its CloudEvents JSON
// form without the TTL, which subscribers never see.
func newHeldEvent(ev *event.Event, now time.Time) (*heldEvent, error) {
	he := &heldEvent{eventRef: eventRef{Source: ev.Source(), ID: ev.ID()}, Arrival: now.UnixNano()}
	if s, ok := ev.Extensions()[cloudevent.ExtArrivalTime].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			he.Arrival = t.UnixNano()
		}
	}
	if ttl, ok := cloudevent.TTL(ev); ok {
		he.TTL = ttl
	}
	c := ev.Clone()
	_ = c.Context.SetExtension(cloudevent.ExtTTL, nil)
	b, err := cloudevent.MarshalStructured(&c)
	if err != nil {
		return nil, err
	}
	he.Event = b
	return he, nil
}
