package dispatch

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	duckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/config"
)

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no bus", Config{ReplicaID: "r"}, "Config.Bus"},
		{"no replica", Config{Bus: bus}, "Config.ReplicaID"},
		{"negative lease", Config{Bus: bus, ReplicaID: "r", Lease: -1}, "Config.Lease"},
		{"negative in flight", Config{Bus: bus, ReplicaID: "r", MaxInFlight: -1}, "Config.MaxInFlight"},
		{"held below in flight", Config{Bus: bus, ReplicaID: "r", MaxInFlight: 10, MaxHeld: 5}, "Config.MaxHeld"},
		{"negative shutdown", Config{Bus: bus, ReplicaID: "r", ShutdownTimeout: -1}, "Config.ShutdownTimeout"},
	}
	for _, tc := range tests {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New error = %v, want one naming %s", tc.name, err, tc.want)
		}
	}
}

// TestFilters: attribute, filters-list and CEL triggers receive exactly the
// events they match, unchanged and without the TTL; field cases BR-10 and
// BR-12 end to end.
func TestFilters(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, reg := newDispatcher(t, Config{Bus: bus})

	sub1, sub2, sub3, sub4, sub5 := newRecorder(t, nil), newRecorder(t, nil), newRecorder(t, nil),
		newRecorder(t, nil), newRecorder(t, nil)
	cel1, cel2 := newRecorder(t, nil), newRecorder(t, nil)
	snap := snapshot(nil,
		trigger("t1", sub1.URL(), func(s *eventingv1.TriggerSpec) {
			s.Filters = []eventingv1.SubscriptionsAPIFilter{{Exact: map[string]string{"subject": "orders"}}}
		}),
		trigger("t2", sub2.URL(), func(s *eventingv1.TriggerSpec) {
			s.Filters = []eventingv1.SubscriptionsAPIFilter{{Exact: map[string]string{"type": "com.example.ping"}}}
		}),
		trigger("t3", sub3.URL(), func(s *eventingv1.TriggerSpec) {
			s.Filters = []eventingv1.SubscriptionsAPIFilter{{CESQL: "myext = 'v'"}}
		}),
		trigger("t4", sub4.URL(), func(s *eventingv1.TriggerSpec) {
			s.Filter = &eventingv1.TriggerFilter{Attributes: map[string]string{"myext": ""}}
		}),
		trigger("t5", sub5.URL(), func(s *eventingv1.TriggerSpec) {
			s.Filter = &eventingv1.TriggerFilter{Attributes: map[string]string{"subject": ""}}
		}),
	)
	snap.Sensors = []config.Sensor{
		sensor("s1", config.Dependency{Name: "d", Filter: `has(data.fizz.baz.buzz) || data.kind == "x"`},
			config.SensorTrigger{Name: "fwd", HTTP: &config.HTTPTarget{URL: cel1.URL()}}),
		sensor("s2", config.Dependency{Name: "d",
			Filter: `data.object_attributes.oldrev != "" || data.object_kind == "merge_request"`},
			config.SensorTrigger{Name: "fwd", Conditions: "d", HTTP: &config.HTTPTarget{URL: cel2.URL()}}),
	}
	apply(t, d, snap)
	if !d.Ready() {
		t.Fatal("not ready after Apply")
	}

	// BR-12: no subject, no myext, no data.
	publish(t, bus, newEvent("e-1", "com.example.ping", ""))
	eventually(t, 5*time.Second, "e-1 at SUB2", func() bool { return len(sub2.of("e-1")) == 1 })
	// BR-10.
	publish(t, bus,
		newEvent("f-1", "t", `{"fizz":{"buzz":{"baz":"biz"}},"kind":"x"}`),
		newEvent("f-2", "t", `{"fizz":{"buzz":{}},"kind":"y"}`),
		newEvent("f-3", "t", `{"object_kind":"merge_request","object_attributes":{}}`),
	)
	eventually(t, 5*time.Second, "f-1 at S1 and f-3 at S2", func() bool {
		return len(cel1.of("f-1")) == 1 && len(cel2.of("f-3")) == 1
	})
	// BR-12: the dispatcher survived.
	e2 := newEvent("e-2", "com.example.ping", "")
	e2.SetSubject("orders")
	withExt := newEvent("e-3", "other", "")
	withExt.SetExtension("myext", "v")
	publish(t, bus, e2, withExt)
	eventually(t, 5*time.Second, "e-2 at SUB, SUB2 and SUB5, e-3 at SUB3 and SUB4", func() bool {
		return len(sub1.of("e-2")) == 1 && len(sub2.of("e-2")) == 1 && len(sub5.of("e-2")) == 1 &&
			len(sub3.of("e-3")) == 1 && len(sub4.of("e-3")) == 1
	})
	// Every trigger has seen every event once everyone has acknowledged it.
	eventually(t, 5*time.Second, "all events processed", func() bool {
		return metric(t, reg, "signalbox_dispatch_events_total", nil) == 7*6
	})

	want := map[*recorder][]string{
		sub1: {"e-2"},
		sub2: {"e-1", "e-2"},
		sub3: {"e-3"},
		sub4: {"e-3"},
		sub5: {"e-2"},
		cel1: {"f-1"},
		cel2: {"f-3"},
	}
	names := map[*recorder]string{sub1: "T1", sub2: "T2", sub3: "T3", sub4: "T4", sub5: "T5", cel1: "S1", cel2: "S2"}
	for r, ids := range want {
		got := r.ids()
		slices.Sort(got)
		if !slices.Equal(got, ids) {
			t.Errorf("%s received %v, want %v", names[r], got, ids)
		}
	}
	// f-1, f-2 and f-3 fail S1's or S2's expression on a missing field:
	// counted, not fatal.
	if n := metric(t, reg, "signalbox_dispatch_filter_errors_total", nil); n == 0 {
		t.Error("no filter error counted")
	}

	// Subscribers never see the TTL; a sensor forwards the event unchanged.
	r := cel1.of("f-1")[0]
	if _, ok := r.ev.Extensions()[cloudevent.ExtTTL]; ok {
		t.Error("subscriber saw knativebrokerttl")
	}
	if r.header.Get("Prefer") != "reply" || r.header.Get("Ce-Id") != "f-1" || string(r.ev.Data()) != `{"fizz":{"buzz":{"baz":"biz"}},"kind":"x"}` {
		t.Errorf("forwarded event changed: %v %s", r.header, r.ev.Data())
	}
	if _, ok := r.ev.Extensions()[cloudevent.ExtArrivalTime]; !ok {
		t.Error("knativearrivaltime missing")
	}
}

// TestRetryThenDeadLetter is field case BR-18 with shorter delays.
func TestRetryThenDeadLetter(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, reg := newDispatcher(t, Config{Bus: bus})
	sub := newRecorder(t, func(ev *event.Event, n int) response {
		if ev.ID() == "r-2" && n == 3 {
			return response{status: http.StatusOK}
		}
		return response{status: http.StatusInternalServerError, body: `{"error":"boom"}`}
	})
	dlq := newRecorder(t, nil)
	exp := duckv1.BackoffPolicyExponential
	apply(t, d, snapshot(nil, trigger("br18", sub.URL(), func(s *eventingv1.TriggerSpec) {
		s.Delivery = &duckv1.DeliverySpec{Retry: ptr[int32](3), BackoffPolicy: &exp,
			BackoffDelay: ptr("PT0.05S"), DeadLetterSink: dls(dlq.URL())}
	})))

	publish(t, bus, newEvent("r-1", "t", `{}`), newEvent("r-2", "t", `{}`))
	eventually(t, 5*time.Second, "r-1 at the DLQ", func() bool { return len(dlq.of("r-1")) == 1 })
	time.Sleep(300 * time.Millisecond) // room for attempts that should not come

	got := sub.of("r-1")
	if len(got) != 4 {
		t.Fatalf("SUB got %d attempts of r-1, want 4", len(got))
	}
	for i, want := range []time.Duration{50, 100, 200} {
		if gap := got[i+1].at.Sub(got[i].at); gap < want*time.Millisecond {
			t.Errorf("gap before retry %d = %v, want at least %vms", i+1, gap, want)
		}
	}
	if n := len(dlq.all()); n != 1 {
		t.Fatalf("DLQ got %d events (%v), want only r-1", n, dlq.ids())
	}
	dl := dlq.of("r-1")[0].ev
	exts := dl.Extensions()
	if exts[cloudevent.ExtErrorDest] != sub.URL() || exts[cloudevent.ExtErrorCode] != "500" ||
		exts[cloudevent.ExtErrorData] != base64.StdEncoding.EncodeToString([]byte(`{"error":"boom"}`)) {
		t.Errorf("dead letter extensions = %v", exts)
	}
	if _, ok := exts[cloudevent.ExtTTL]; ok {
		t.Error("the dead-letter sink saw knativebrokerttl")
	}

	// The variant: two failures, then success.
	if n := len(sub.of("r-2")); n != 3 {
		t.Errorf("SUB got %d attempts of r-2, want 3", n)
	}
	if len(dlq.of("r-2")) != 0 {
		t.Error("r-2 reached the DLQ")
	}

	// The bus keeps the dead letter too.
	dlsInBus := deadLetters(t, bus, "trigger.br18")
	if len(dlsInBus) != 1 || dlsInBus[0].Attempts != 4 || dlsInBus[0].Code != 500 ||
		dlsInBus[0].Destination != sub.URL() {
		t.Fatalf("bus dead letters = %+v", dlsInBus)
	}
	ev, err := cloudevent.Unmarshal(dlsInBus[0].Payload)
	if err != nil || ev.ID() != "r-1" {
		t.Fatalf("dead letter payload: %v, %v", ev, err)
	}
	if v := metric(t, reg, "signalbox_dispatch_dead_letters_total", nil); v != 1 {
		t.Errorf("dead_letters_total = %v", v)
	}
	if v := metric(t, reg, "signalbox_dispatch_attempts_total", map[string]string{"outcome": "retryable"}); v != 6 {
		t.Errorf("retryable attempts = %v, want 6", v)
	}
}

// TestStatusHandling is field case BR-19 (a, b, e, f), shortened.
func TestStatusHandling(t *testing.T) {
	t.Parallel()
	linear := duckv1.BackoffPolicyLinear
	tests := []struct {
		name      string
		respond   func(n int) response
		timeout   string
		attempts  int
		dead      bool
		minGap    time.Duration
		structure bool
	}{
		{name: "400 not retried", respond: func(int) response { return response{status: 400} },
			attempts: 1, dead: true},
		{name: "429 Retry-After honoured", respond: func(n int) response {
			if n == 1 {
				return response{status: 429, header: map[string]string{"Retry-After": "1"}}
			}
			return response{status: 200}
		}, attempts: 2, minGap: time.Second},
		{name: "404 retried", respond: func(n int) response {
			if n == 1 {
				return response{status: 404}
			}
			return response{status: 202}
		}, attempts: 2},
		{name: "timeout retried", timeout: "PT0.2S", respond: func(n int) response {
			if n == 1 {
				return response{status: 200, delay: 2 * time.Second}
			}
			return response{status: 200}
		}, attempts: 2, minGap: 200 * time.Millisecond},
		{name: "structured format", structure: true, respond: func(int) response { return response{status: 204} },
			attempts: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bus := newBus(t)
			d, _ := newDispatcher(t, Config{Bus: bus})
			sub := newRecorder(t, func(_ *event.Event, n int) response { return tc.respond(n) })
			dlq := newRecorder(t, nil)
			del := &duckv1.DeliverySpec{Retry: ptr[int32](3), BackoffPolicy: &linear, BackoffDelay: ptr("PT0.05S"),
				RetryAfterMax: ptr("PT10S"), DeadLetterSink: dls(dlq.URL())}
			if tc.timeout != "" {
				del.Timeout = ptr(tc.timeout)
			}
			if tc.structure {
				del.Format = ptr(duckv1.DeliveryFormatJson)
			}
			apply(t, d, snapshot(nil, trigger("br19", sub.URL(), func(s *eventingv1.TriggerSpec) { s.Delivery = del })))

			start := time.Now()
			publish(t, bus, newEvent("x-1", "t", `{"a":1}`))
			eventually(t, 5*time.Second, "the attempts", func() bool { return len(sub.of("x-1")) >= tc.attempts })
			if tc.dead {
				eventually(t, time.Second, "the dead letter", func() bool { return len(dlq.of("x-1")) == 1 })
			}
			time.Sleep(300 * time.Millisecond)
			got := sub.of("x-1")
			if len(got) != tc.attempts {
				t.Fatalf("%d attempts, want %d", len(got), tc.attempts)
			}
			if !tc.dead && len(dlq.all()) != 0 {
				t.Fatalf("DLQ got %v", dlq.ids())
			}
			if tc.minGap > 0 {
				if gap := got[1].at.Sub(got[0].at); gap < tc.minGap {
					t.Fatalf("second attempt %v after the first, want at least %v", gap, tc.minGap)
				}
			}
			if tc.structure && got[0].header.Get("Content-Type") != cloudevent.MediaStructuredJSON {
				t.Fatalf("Content-Type = %q", got[0].header.Get("Content-Type"))
			}
			if took := time.Since(start); took > 4*time.Second {
				t.Fatalf("took %v", took)
			}
		})
	}
}

// TestNoConcurrentDuplicate is field case BR-22, shortened: two replicas, a
// lease of 1s and a subscriber that takes 2.5s. The leases of events in
// flight are renewed, so the other replica never takes them.
func TestNoConcurrentDuplicate(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	sub := newRecorder(t, func(*event.Event, int) response {
		return response{status: 200, delay: 2500 * time.Millisecond}
	})
	snap := snapshot(&duckv1.DeliverySpec{Retry: ptr[int32](3)}, trigger("br22", sub.URL(), nil))
	a, _ := newDispatcher(t, Config{Bus: bus, ReplicaID: "a", Lease: time.Second})
	b, _ := newDispatcher(t, Config{Bus: bus, ReplicaID: "b", Lease: time.Second})
	apply(t, a, snap)
	apply(t, b, snap)

	var evs []*event.Event
	for i := 1; i <= 8; i++ {
		evs = append(evs, newEvent(fmt.Sprintf("p-%d", i), "t", `{}`))
	}
	publish(t, bus, evs...)
	eventually(t, 8*time.Second, "8 answered deliveries", func() bool { return sub.answeredCount() >= 8 })
	time.Sleep(500 * time.Millisecond) // a late duplicate would show up

	if got := sub.ids(); len(got) != 8 {
		t.Fatalf("deliveries = %v, want each of p-1..p-8 once", got)
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.overlaps) > 0 {
		t.Fatalf("concurrent duplicate deliveries of %v", sub.overlaps)
	}
}

// TestRetriesDoNotBlock: with one attempt in flight at a time, an event
// waiting for its retry does not hold up the events after it.
func TestRetriesDoNotBlock(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, _ := newDispatcher(t, Config{Bus: bus, MaxInFlight: 1})
	sub := newRecorder(t, func(ev *event.Event, n int) response {
		if ev.ID() == "bad" {
			return response{status: 503}
		}
		return response{status: 200}
	})
	linear := duckv1.BackoffPolicyLinear
	apply(t, d, snapshot(&duckv1.DeliverySpec{Retry: ptr[int32](2), BackoffPolicy: &linear, BackoffDelay: ptr("PT2S")},
		trigger("noblock", sub.URL(), nil)))

	evs := []*event.Event{newEvent("bad", "t", `{}`)}
	for i := range 5 {
		evs = append(evs, newEvent(fmt.Sprintf("good-%d", i), "t", `{}`))
	}
	publish(t, bus, evs...)
	eventually(t, 1500*time.Millisecond, "the good events", func() bool { return len(sub.all()) == 6 })
	if n := len(sub.of("bad")); n != 1 {
		t.Fatalf("bad attempted %d times before the good events were done", n)
	}
}

// TestReplies: a reply is published to the broker with the original's TTL
// decremented and reaches the triggers that match it; a reply whose TTL is
// used up is dropped and the delivery still counts as done.
func TestReplies(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, reg := newDispatcher(t, Config{Bus: bus})
	replier := newRecorder(t, func(ev *event.Event, n int) response {
		return response{status: 200, header: map[string]string{
			"Ce-Specversion": "1.0", "Ce-Id": "reply-to-" + ev.ID(), "Ce-Source": "/replier",
			"Ce-Type": "reply", "Content-Type": "application/json",
		}, body: `{"ok":true}`}
	})
	notCE := newRecorder(t, func(*event.Event, int) response {
		return response{status: 200, header: map[string]string{"Content-Type": "application/json"},
			body: `{"specversion":"1.0","id":"fake","source":"/x","type":"reply"}`}
	})
	replies := newRecorder(t, nil)
	apply(t, d, snapshot(nil,
		trigger("asks", replier.URL(), func(s *eventingv1.TriggerSpec) {
			s.Filter = &eventingv1.TriggerFilter{Attributes: map[string]string{"type": "request"}}
		}),
		trigger("plain", notCE.URL(), func(s *eventingv1.TriggerSpec) {
			s.Filter = &eventingv1.TriggerFilter{Attributes: map[string]string{"type": "request"}}
		}),
		trigger("answers", replies.URL(), func(s *eventingv1.TriggerSpec) {
			s.Filter = &eventingv1.TriggerFilter{Attributes: map[string]string{"type": "reply"}}
		}),
	))
	// An observer group sees what is published to the topic.
	obs, err := bus.Subscribe(context.Background(), topic, "observer", broker.SubscribeConfig{Consumer: "o"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = obs.Close() })

	fresh := newEvent("q-1", "request", `{}`)
	lastHop := newEvent("q-2", "request", `{}`)
	lastHop.SetExtension(cloudevent.ExtTTL, "1") // the ingress makes it 0: no reply may follow
	publish(t, bus, fresh, lastHop)

	eventually(t, 5*time.Second, "the reply at its subscriber", func() bool { return len(replies.all()) >= 1 })
	eventually(t, 5*time.Second, "q-2 done", func() bool {
		return metric(t, reg, "signalbox_dispatch_replies_total", map[string]string{"result": "ttl_exhausted"}) == 1
	})
	time.Sleep(200 * time.Millisecond)

	if got := replies.ids(); !slices.Equal(got, []string{"reply-to-q-1"}) {
		t.Fatalf("reply subscriber got %v, want only reply-to-q-1", got)
	}
	if n := len(replier.of("q-2")); n != 1 {
		t.Fatalf("q-2 delivered %d times; a dropped reply must not fail the delivery", n)
	}
	if v := metric(t, reg, "signalbox_dispatch_deliveries_total",
		map[string]string{"trigger": "trigger.asks", "outcome": "delivered"}); v != 2 {
		t.Fatalf("asks delivered %v events, want 2", v)
	}

	var onTopic []*event.Event
	eventually(t, 5*time.Second, "the observer to read 3 events", func() bool {
		msgs, err := obs.Fetch(context.Background(), 10, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			ev, err := cloudevent.Unmarshal(m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			onTopic = append(onTopic, ev)
		}
		return len(onTopic) >= 3
	})
	reply := onTopic[2]
	if reply.ID() != "reply-to-q-1" {
		t.Fatalf("topic holds %v", onTopic)
	}
	if ttl, _ := cloudevent.TTL(reply); ttl != cloudevent.DefaultTTL-1 {
		t.Fatalf("reply TTL = %d, want %d", ttl, cloudevent.DefaultTTL-1)
	}
	if v := metric(t, reg, "signalbox_dispatch_replies_total", map[string]string{"result": "published"}); v != 1 {
		t.Fatalf("published replies = %v", v)
	}
}

// TestShutdownHandsBackWaitingRetry: Close does not wait for a retry; a
// replica restarted with the same id takes the event back at once, and the
// attempt made before the restart counts.
func TestShutdownHandsBackWaitingRetry(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	sub := newRecorder(t, func(*event.Event, int) response { return response{status: 500} })
	snap := snapshot(&duckv1.DeliverySpec{Retry: ptr[int32](1), BackoffDelay: ptr("PT30S")},
		trigger("handback", sub.URL(), nil))

	first, reg := newDispatcher(t, Config{Bus: bus, ReplicaID: "r"})
	apply(t, first, snap)
	publish(t, bus, newEvent("h-1", "t", `{}`))
	eventually(t, 5*time.Second, "the first attempt", func() bool {
		return metric(t, reg, "signalbox_dispatch_attempts_total", nil) == 1
	})
	time.Sleep(100 * time.Millisecond) // the attempt count is recorded after the metric

	start := time.Now()
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if first.Ready() {
		t.Fatal("ready after Close")
	}
	if err := first.Apply(context.Background(), snap); !errors.Is(err, ErrClosed) {
		t.Fatalf("Apply after Close = %v", err)
	}

	second, _ := newDispatcher(t, Config{Bus: bus, ReplicaID: "r"})
	apply(t, second, snap)
	eventually(t, 3*time.Second, "the retry after the restart", func() bool { return len(sub.of("h-1")) == 2 })
	// That was the last of 1+retry attempts: dead-lettered with both counted.
	eventually(t, 3*time.Second, "the dead letter", func() bool { return len(deadLetters(t, bus, "trigger.handback")) == 1 })
	if dl := deadLetters(t, bus, "trigger.handback")[0]; dl.Attempts != 2 {
		t.Fatalf("dead letter after %d attempts, want 2", dl.Attempts)
	}
}

// TestShutdownCutsAttemptShort: an attempt still running when the shutdown
// timeout ends is cancelled and does not count.
func TestShutdownCutsAttemptShort(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	var slow atomic.Bool
	slow.Store(true)
	sub := newRecorder(t, func(*event.Event, int) response {
		if slow.Load() {
			return response{status: 200, delay: 5 * time.Second}
		}
		return response{status: 200}
	})
	snap := snapshot(&duckv1.DeliverySpec{}, trigger("cut", sub.URL(), nil)) // no retries

	first, _ := newDispatcher(t, Config{Bus: bus, ReplicaID: "r", ShutdownTimeout: 100 * time.Millisecond})
	apply(t, first, snap)
	publish(t, bus, newEvent("c-1", "t", `{}`))
	eventually(t, 5*time.Second, "the first attempt", func() bool { return len(sub.of("c-1")) == 1 })

	start := time.Now()
	_ = first.Close(context.Background())
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v with a 100ms shutdown timeout", d)
	}
	if dl := deadLetters(t, bus, "trigger.cut"); len(dl) != 0 {
		t.Fatalf("the cut attempt counted: dead letters %+v", dl)
	}

	slow.Store(false)
	second, reg := newDispatcher(t, Config{Bus: bus, ReplicaID: "r"})
	apply(t, second, snap)
	eventually(t, 3*time.Second, "the delivery after the restart", func() bool {
		return metric(t, reg, "signalbox_dispatch_deliveries_total", map[string]string{"outcome": "delivered"}) == 1
	})
}

// TestUndecodablePayload: garbage in the log is dead-lettered, and the
// trigger goes on.
func TestUndecodablePayload(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, _ := newDispatcher(t, Config{Bus: bus})
	sub := newRecorder(t, nil)
	apply(t, d, snapshot(nil, trigger("garbage", sub.URL(), nil)))

	if err := bus.Publish(context.Background(), topic, []byte("not an event"), []byte{1, 0, 5}); err != nil {
		t.Fatal(err)
	}
	publish(t, bus, newEvent("ok-1", "t", `{}`))
	eventually(t, 5*time.Second, "ok-1", func() bool { return len(sub.of("ok-1")) == 1 })
	eventually(t, 5*time.Second, "two dead letters", func() bool { return len(deadLetters(t, bus, "trigger.garbage")) == 2 })
	for _, dl := range deadLetters(t, bus, "trigger.garbage") {
		if dl.Code != -1 || !strings.Contains(dl.Reason, "undecodable") {
			t.Errorf("dead letter %+v", dl)
		}
	}
	if n := len(sub.all()); n != 1 {
		t.Fatalf("subscriber got %d requests", n)
	}
}

// TestApplyLifecycle: a changed trigger keeps its group, a removed one loses
// it after the grace period (so when it comes back it starts at the end of
// the log), and an invalid configuration changes nothing.
func TestApplyLifecycle(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, _ := newDispatcher(t, Config{Bus: bus, RemovalGrace: 50 * time.Millisecond})
	if d.Ready() {
		t.Fatal("ready before Apply")
	}
	old, moved, other := newRecorder(t, nil), newRecorder(t, nil), newRecorder(t, nil)

	apply(t, d, snapshot(nil, trigger("life", old.URL(), nil), trigger("other", other.URL(), nil)))
	publish(t, bus, newEvent("l-1", "t", `{}`))
	eventually(t, 5*time.Second, "l-1", func() bool { return len(old.of("l-1")) == 1 && len(other.of("l-1")) == 1 })

	// Changed subscriber: same group, new target.
	apply(t, d, snapshot(nil, trigger("life", moved.URL(), nil), trigger("other", other.URL(), nil)))
	publish(t, bus, newEvent("l-2", "t", `{}`))
	eventually(t, 5*time.Second, "l-2 at the new subscriber", func() bool { return len(moved.of("l-2")) == 1 })

	// Invalid configuration: refused, and nothing changes.
	bad := snapshot(nil, trigger("life", moved.URL(), func(s *eventingv1.TriggerSpec) {
		s.Filters = []eventingv1.SubscriptionsAPIFilter{{CESQL: "type = = 'x'"}}
	}))
	if err := d.Apply(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "trigger default/life") {
		t.Fatalf("Apply of an invalid filter = %v", err)
	}
	noTarget := snapshot(nil)
	noTarget.Sensors = []config.Sensor{sensor("multi", config.Dependency{Name: "a", Filter: "true"},
		config.SensorTrigger{Name: "t"})}
	if err := d.Apply(context.Background(), noTarget); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Apply of a sensor trigger without a target = %v", err)
	}
	publish(t, bus, newEvent("l-3", "t", `{}`))
	eventually(t, 5*time.Second, "l-3 after refused configs", func() bool {
		return len(moved.of("l-3")) == 1 && len(other.of("l-3")) == 1
	})

	// Removed: events published meanwhile are not kept for it.
	apply(t, d, snapshot(nil, trigger("other", other.URL(), nil)))
	publish(t, bus, newEvent("l-4", "t", `{}`))
	eventually(t, 5*time.Second, "l-4 at the remaining trigger", func() bool { return len(other.of("l-4")) == 1 })
	eventually(t, 5*time.Second, "the removed trigger's group deleted", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.orphans) == 0
	})
	apply(t, d, snapshot(nil, trigger("life", moved.URL(), nil), trigger("other", other.URL(), nil)))
	publish(t, bus, newEvent("l-5", "t", `{}`))
	eventually(t, 5*time.Second, "l-5", func() bool { return len(moved.of("l-5")) == 1 })
	time.Sleep(200 * time.Millisecond)
	if n := len(moved.of("l-4")); n != 0 {
		t.Fatalf("a re-added trigger got an event published while it was removed")
	}
	if !d.Ready() {
		t.Fatal("not ready")
	}

	// A trigger of an unknown broker is not run and does not block readiness.
	orphan := trigger("lost", other.URL(), func(s *eventingv1.TriggerSpec) { s.Broker = "nope" })
	apply(t, d, snapshot(nil, trigger("other", other.URL(), nil), orphan))
	if !d.Ready() {
		t.Fatal("not ready with a trigger of an unknown broker")
	}
}

// TestRemovedTriggerBackWithinGraceResumes: a trigger removed and restored
// within the grace period loses nothing, not even events published while it
// was gone.
func TestRemovedTriggerBackWithinGraceResumes(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, _ := newDispatcher(t, Config{Bus: bus})
	sub, other := newRecorder(t, nil), newRecorder(t, nil)
	both := snapshot(nil, trigger("flaky", sub.URL(), nil), trigger("other", other.URL(), nil))
	apply(t, d, both)
	apply(t, d, snapshot(nil, trigger("other", other.URL(), nil)))
	publish(t, bus, newEvent("g-1", "t", `{}`))
	eventually(t, 5*time.Second, "g-1 at the remaining trigger", func() bool { return len(other.of("g-1")) == 1 })
	apply(t, d, both)
	eventually(t, 5*time.Second, "g-1 at the restored trigger", func() bool { return len(sub.of("g-1")) == 1 })
}

// TestApplyWaitsForGroups: while the bus is down Apply cannot create the
// groups and says so; the worker keeps trying and readiness follows once the
// bus is back.
func TestApplyWaitsForGroups(t *testing.T) {
	t.Parallel()
	bus, srv := newBusServer(t)
	d, _ := newDispatcher(t, Config{Bus: bus})
	sub := newRecorder(t, nil)
	srv.Kill()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := d.Apply(ctx, snapshot(nil, trigger("waits", sub.URL(), nil)))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Apply with the bus down = %v", err)
	}
	if d.Ready() {
		t.Fatal("ready without groups")
	}

	srv.Restart()
	eventually(t, 10*time.Second, "readiness", d.Ready)
	publish(t, bus, newEvent("w-1", "t", `{}`))
	eventually(t, 5*time.Second, "w-1", func() bool { return len(sub.of("w-1")) == 1 })
}

// TestDeadLetterSinkRetries: the deadLetterSink gets the trigger's retry
// policy; when it never accepts, the event is still done with (it is in the
// bus's dead letters).
func TestDeadLetterSinkRetries(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, reg := newDispatcher(t, Config{Bus: bus})
	sub := newRecorder(t, func(*event.Event, int) response { return response{status: 422} })
	flaky := newRecorder(t, func(_ *event.Event, n int) response {
		if n == 1 {
			return response{status: 503}
		}
		return response{status: 200}
	})
	down := newRecorder(t, func(*event.Event, int) response { return response{status: 500} })
	del := func(sink string) func(*eventingv1.TriggerSpec) {
		return func(s *eventingv1.TriggerSpec) {
			s.Delivery = &duckv1.DeliverySpec{Retry: ptr[int32](2), BackoffDelay: ptr("PT0.05S"),
				DeadLetterSink: dls(sink)}
		}
	}
	apply(t, d, snapshot(nil, trigger("flaky", sub.URL(), del(flaky.URL())), trigger("down", sub.URL(), del(down.URL()))))

	publish(t, bus, newEvent("s-1", "t", `{}`))
	eventually(t, 5*time.Second, "both sinks done", func() bool {
		return metric(t, reg, "signalbox_dispatch_dead_letter_sink_total", nil) == 2
	})
	time.Sleep(300 * time.Millisecond)
	if n := len(sub.of("s-1")); n != 2 {
		t.Errorf("subscriber got %d attempts, want 1 per trigger (422 is permanent)", n)
	}
	if n := len(flaky.of("s-1")); n != 2 {
		t.Errorf("flaky sink got %d attempts, want 2", n)
	}
	if n := len(down.of("s-1")); n != 3 {
		t.Errorf("failing sink got %d attempts, want 1+retry = 3", n)
	}
	if ext := flaky.of("s-1")[1].ev.Extensions(); ext[cloudevent.ExtErrorCode] != "422" {
		t.Errorf("sink extensions = %v", ext)
	}
	if v := metric(t, reg, "signalbox_dispatch_dead_letter_sink_total", map[string]string{"outcome": "failed"}); v != 1 {
		t.Errorf("failed sink deliveries = %v, want 1", v)
	}
	if v := metric(t, reg, "signalbox_dispatch_held_events", nil); v != 0 {
		t.Errorf("%v events still held", v)
	}
}
