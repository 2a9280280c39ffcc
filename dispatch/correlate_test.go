package dispatch

import (
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/dispatch/celexpr"
)

func testSensorSpec(t *testing.T, cond string, deps []string, window time.Duration) *sensorSpec {
	t.Helper()
	c, err := celexpr.CompileConditions(cond, deps)
	if err != nil {
		t.Fatal(err)
	}
	return &sensorSpec{trigger: "t", cond: c, window: window}
}

func he(id string, at int64) *heldEvent {
	return &heldEvent{eventRef: eventRef{Source: "/s", ID: id}, Arrival: at, Event: []byte(`{"id":"` + id + `"}`)}
}

// step adds one event to an entry; want is the outcome and, for a fire, the
// ids by dependency.
type step struct {
	deps    []string
	ev      *heldEvent
	want    addOutcome
	fired   map[string]string
	expired int
}

func TestStateEntryAdd(t *testing.T) {
	sec := int64(time.Second)
	tests := []struct {
		name   string
		cond   string
		window time.Duration
		steps  []step
	}{{
		name: "a and b, latest of each",
		cond: "a && b",
		steps: []step{
			{deps: []string{"a"}, ev: he("a1", 1), want: addHeld},
			{deps: []string{"a"}, ev: he("a2", 2), want: addHeld},
			{deps: []string{"a"}, ev: he("a0", 0), want: addSuperseded}, // processed late
			{deps: []string{"b"}, ev: he("b1", 3), want: addFired, fired: map[string]string{"a": "a2", "b": "b1"}},
			{deps: []string{"b"}, ev: he("b2", 4), want: addHeld},
		},
	}, {
		name: "redeliveries change nothing",
		cond: "a && b",
		steps: []step{
			{deps: []string{"a"}, ev: he("a1", 1), want: addHeld},
			{deps: []string{"a"}, ev: he("a1", 1), want: addKnown},
			{deps: []string{"b"}, ev: he("b1", 2), want: addFired, fired: map[string]string{"a": "a1", "b": "b1"}},
			// The completer again, before its fire is settled: resume it.
			{deps: []string{"b"}, ev: he("b1", 2), want: addResume, fired: map[string]string{"a": "a1", "b": "b1"}},
			// Another member of the pending fire: nothing to do.
			{deps: []string{"a"}, ev: he("a1", 1), want: addKnown},
		},
	}, {
		name:   "window from the first held event, in arrival time (BR-13)",
		cond:   "a && b",
		window: 5 * time.Second,
		steps: []step{
			{deps: []string{"b"}, ev: he("b-old", 0), want: addHeld},
			{deps: []string{"a"}, ev: he("a-1", 7*sec), want: addHeld, expired: 1},
			{deps: []string{"b"}, ev: he("b-new", 8*sec), want: addFired,
				fired: map[string]string{"a": "a-1", "b": "b-new"}},
		},
	}, {
		name:   "an event too old for the window is not held",
		cond:   "a && b",
		window: time.Second,
		steps: []step{
			{deps: []string{"a"}, ev: he("a1", 10*sec), want: addHeld},
			{deps: []string{"b"}, ev: he("b-late", 5*sec), want: addSuperseded, expired: 1},
		},
	}, {
		name: "dep1 || (dep2 && dep3)",
		cond: "dep1 || (dep2 && dep3)",
		steps: []step{
			{deps: []string{"dep1"}, ev: he("e1", 1), want: addFired, fired: map[string]string{"dep1": "e1"}},
			{deps: []string{"dep2"}, ev: he("e2", 2), want: addHeld},
			{deps: []string{"dep3"}, ev: he("e3", 3), want: addFired, fired: map[string]string{"dep2": "e2", "dep3": "e3"}},
			{deps: []string{"dep3"}, ev: he("e4", 4), want: addHeld},
			{deps: []string{"dep1"}, ev: he("e5", 5), want: addFired, fired: map[string]string{"dep1": "e5", "dep3": "e4"}},
		},
	}, {
		name: "negation: a && !b",
		cond: "a && !b",
		steps: []step{
			{deps: []string{"b"}, ev: he("b1", 1), want: addHeld},
			{deps: []string{"a"}, ev: he("a1", 2), want: addHeld},
		},
	}, {
		name: "one event for two dependencies",
		cond: "a && b",
		steps: []step{
			{deps: []string{"a", "b"}, ev: he("ab", 1), want: addFired, fired: map[string]string{"a": "ab", "b": "ab"}},
			{deps: []string{"a", "b"}, ev: he("ab", 1), want: addResume, fired: map[string]string{"a": "ab", "b": "ab"}},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var deps []string
			for _, s := range tt.steps {
				for _, d := range s.deps {
					if !contains(deps, d) {
						deps = append(deps, d)
					}
				}
			}
			ss := testSensorSpec(t, tt.cond, deps, tt.window)
			st := &stateEntry{}
			for i, s := range tt.steps {
				got, f, expired, err := st.add(ss, s.deps, s.ev)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got != s.want || expired != s.expired {
					t.Fatalf("step %d (%s): outcome %v, expired %d; want %v, %d", i, s.ev.ID, got, expired, s.want, s.expired)
				}
				if s.fired == nil {
					if f != nil {
						t.Fatalf("step %d: unexpected fire", i)
					}
					continue
				}
				ids := map[string]string{}
				for d, e := range f.Events {
					ids[d] = e.ID
				}
				if len(ids) != len(s.fired) {
					t.Fatalf("step %d: fired %v, want %v", i, ids, s.fired)
				}
				for d, id := range s.fired {
					if ids[d] != id {
						t.Fatalf("step %d: fired %v, want %v", i, ids, s.fired)
					}
				}
				if f.ID != fireID("t", f.Events) {
					t.Errorf("step %d: fire id %q not derived from its events", i, f.ID)
				}
				if s.want == addFired {
					// Deliver it at once, as the worker does.
					if !st.settle(f.ID) {
						t.Fatalf("step %d: nothing to settle", i)
					}
					if i+1 < len(tt.steps) && tt.steps[i+1].want == addResume {
						st.Firing = append(st.Firing, f) // not settled yet in that case
					}
				}
			}
		})
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestFireIDIsStable(t *testing.T) {
	a := map[string]*heldEvent{"a": he("1", 0), "b": he("2", 0)}
	b := map[string]*heldEvent{"b": he("2", 5), "a": he("1", 9)}
	if fireID("t", a) != fireID("t", b) {
		t.Error("fire id depends on map order or arrival")
	}
	if fireID("t", a) == fireID("u", a) {
		t.Error("fire id ignores the trigger")
	}
	if fireID("t", a) == fireID("t", map[string]*heldEvent{"a": he("2", 0), "b": he("1", 0)}) {
		t.Error("fire id ignores which dependency an event was for")
	}
}

func TestStateEntryTTL(t *testing.T) {
	st := &stateEntry{}
	if st.ttl(time.Second) != usedRetention {
		t.Errorf("empty entry ttl = %v", st.ttl(time.Second))
	}
	st.Held = map[string]*heldEvent{"a": he("1", 0)}
	if got := st.ttl(time.Second); got != 2*time.Second+windowGrace {
		t.Errorf("held with window ttl = %v", got)
	}
	if got := st.ttl(0); got != 0 {
		t.Errorf("held without window ttl = %v, want none", got)
	}
	st.Firing = []*firing{{ID: "x"}}
	if got := st.ttl(time.Second); got != 0 {
		t.Errorf("pending firing ttl = %v, want none", got)
	}
}
