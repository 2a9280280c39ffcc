package filter

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.uber.org/goleak"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"

	"github.com/signalbox-dev/signalbox/dispatch/celexpr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type sf = eventingv1.SubscriptionsAPIFilter

func attrs(m map[string]string) *eventingv1.TriggerSpec {
	return &eventingv1.TriggerSpec{Filter: &eventingv1.TriggerFilter{Attributes: m}}
}

func filters(fs ...sf) *eventingv1.TriggerSpec {
	return &eventingv1.TriggerSpec{Filters: fs}
}

// ping is field case BR-12's event: no subject, no myext, no data.
func ping() *event.Event {
	e := event.New("1.0")
	e.SetID("e-1")
	e.SetSource("/s")
	e.SetType("com.example.ping")
	return &e
}

func with(e *event.Event, set func(*event.Event)) *event.Event {
	c := e.Clone()
	set(&c)
	return &c
}

func TestTriggerFilters(t *testing.T) {
	t.Parallel()
	orders := with(ping(), func(e *event.Event) { e.SetID("e-2"); e.SetSubject("orders") })
	withExt := with(ping(), func(e *event.Event) { e.SetExtension("myext", "v") })
	emptyExt := with(ping(), func(e *event.Event) { e.SetExtension("myext", "") })
	// sdk-go narrows numeric extensions of structured events to int32.
	intExt := with(ping(), func(e *event.Event) { e.SetExtension("count", int32(3)) })
	strExt := with(ping(), func(e *event.Event) { e.SetExtension("count", "3") })

	tests := []struct {
		name string
		spec *eventingv1.TriggerSpec
		ev   *event.Event
		want bool
	}{
		// Field case BR-12: T1..T5 on an event without subject, myext or data.
		{"BR-12 T1 exact subject absent", filters(sf{Exact: map[string]string{"subject": "orders"}}), ping(), false},
		{"BR-12 T2 exact type", filters(sf{Exact: map[string]string{"type": "com.example.ping"}}), ping(), true},
		{"BR-12 T3 cesql absent ext", filters(sf{CESQL: "myext = 'v'"}), ping(), false},
		{"BR-12 T4 any-value ext absent", attrs(map[string]string{"myext": ""}), ping(), false},
		{"BR-12 T5 any-value subject unset", attrs(map[string]string{"subject": ""}), ping(), false},
		{"BR-12 e-2 T1 subject orders", filters(sf{Exact: map[string]string{"subject": "orders"}}), orders, true},
		{"BR-12 e-2 T5 subject present", attrs(map[string]string{"subject": ""}), orders, true},
		{"any-value ext present", attrs(map[string]string{"myext": ""}), withExt, true},
		{"any-value time unset", attrs(map[string]string{"time": ""}), ping(), false},
		{"any-value time set", attrs(map[string]string{"time": ""}),
			with(ping(), func(e *event.Event) { e.SetTime(time.Unix(1, 0)) }), true},
		{"any-value ext empty string", attrs(map[string]string{"myext": ""}), emptyExt, false},
		{"cesql ext present", filters(sf{CESQL: "myext = 'v'"}), withExt, true},

		{"no filter", &eventingv1.TriggerSpec{}, ping(), true},
		{"empty attributes", attrs(map[string]string{}), ping(), true},
		{"attributes exact", attrs(map[string]string{"type": "com.example.ping", "source": "/s"}), ping(), true},
		{"attributes mismatch", attrs(map[string]string{"type": "com.example.ping", "source": "/x"}), ping(), false},
		{"attributes int ext", attrs(map[string]string{"count": "3"}), intExt, true},
		{"attributes string ext", attrs(map[string]string{"count": "3"}), strExt, true},
		{"exact int ext", filters(sf{Exact: map[string]string{"count": "3"}}), intExt, true},

		{"prefix", filters(sf{Prefix: map[string]string{"type": "com.example."}}), ping(), true},
		{"prefix miss", filters(sf{Prefix: map[string]string{"type": "org."}}), ping(), false},
		{"suffix", filters(sf{Suffix: map[string]string{"type": ".ping"}}), ping(), true},
		{"implicit and", filters(
			sf{Prefix: map[string]string{"type": "com."}},
			sf{Exact: map[string]string{"source": "/other"}}), ping(), false},
		{"all", filters(sf{All: []sf{
			{Prefix: map[string]string{"type": "com."}},
			{Suffix: map[string]string{"type": "ping"}}}}), ping(), true},
		{"any", filters(sf{Any: []sf{
			{Exact: map[string]string{"type": "nope"}},
			{Exact: map[string]string{"source": "/s"}}}}), ping(), true},
		{"not", filters(sf{Not: &sf{Exact: map[string]string{"type": "com.example.ping"}}}), ping(), false},
		{"filters replace attributes", &eventingv1.TriggerSpec{
			Filter:  &eventingv1.TriggerFilter{Attributes: map[string]string{"type": "nope"}},
			Filters: []sf{{Exact: map[string]string{"source": "/s"}}},
		}, ping(), true},
		{"exact two keys", filters(sf{Exact: map[string]string{"type": "com.example.ping", "source": "/s"}}), ping(), true},
		{"cesql bool", filters(sf{CESQL: "type LIKE 'com.%' AND source = '/s'"}), ping(), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, err := ForTrigger(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(f.Close)
			got, err := f.Match(tc.ev)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestBR12SameRule asserts the documented rule: a "" attribute filter treats
// an unset optional attribute and an absent extension alike.
func TestBR12SameRule(t *testing.T) {
	t.Parallel()
	t4, err := ForTrigger(attrs(map[string]string{"myext": ""}))
	if err != nil {
		t.Fatal(err)
	}
	t5, err := ForTrigger(attrs(map[string]string{"subject": ""}))
	if err != nil {
		t.Fatal(err)
	}
	evs := []*event.Event{
		ping(),
		with(ping(), func(e *event.Event) { e.SetSubject("s"); e.SetExtension("myext", "x") }),
	}
	for _, e := range evs {
		a, _ := t4.Match(e)
		b, _ := t5.Match(e)
		if a != b {
			t.Fatalf("T4 = %v, T5 = %v for %v", a, b, e)
		}
	}
}

func TestForTriggerRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec *eventingv1.TriggerSpec
		want string
	}{
		{"bad cesql", filters(sf{CESQL: "type = = 'x'"}), "cesql"},
		{"two dialects", filters(sf{Exact: map[string]string{"type": "x"}, Prefix: map[string]string{"type": "y"}}),
			"spec.filters[0]"},
		{"exact empty value", filters(sf{Exact: map[string]string{"type": ""}}), "spec.filters[0]"},
		{"bad nested", filters(sf{All: []sf{{Exact: map[string]string{"type": "x"}}, {CESQL: "(("}}}), "all"},
		{"bad attribute name", attrs(map[string]string{"Bad-Name": "x"}), "spec.filter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, err := ForTrigger(tc.spec)
			if err == nil {
				f.Close()
				t.Fatal("ForTrigger accepted an invalid filter")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			if Validate(tc.spec) == nil {
				t.Fatal("Validate accepted an invalid filter")
			}
		})
	}
}

// TestCESQLNonBoolDoesNotPanic: Knative's CESQL filter asserts a bool result
// and panics on any other; Match turns that into an error.
func TestCESQLNonBoolDoesNotPanic(t *testing.T) {
	t.Parallel()
	f, err := ForTrigger(filters(sf{CESQL: "'abc'"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	ok, err := f.Match(ping())
	if ok || !errors.Is(err, ErrPanic) {
		t.Fatalf("Match = %v, %v; want no match and ErrPanic", ok, err)
	}
}

func TestCEL(t *testing.T) {
	t.Parallel()
	x, err := celexpr.Compile(`event.type == "com.example.ping" && !has(event.subject)`)
	if err != nil {
		t.Fatal(err)
	}
	f := CEL(x)
	t.Cleanup(f.Close)
	if ok, err := f.Match(ping()); !ok || err != nil {
		t.Fatalf("Match = %v, %v", ok, err)
	}
	y, _ := celexpr.Compile(`data.kind == "x"`)
	if ok, err := CEL(y).Match(ping()); ok || err == nil {
		t.Fatalf("Match on an event without data = %v, %v; want no match with an error", ok, err)
	}
}
