package e2e

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/internal/redistest"
)

const brokerYAML = `
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
`

func TestFiltersDeliverExactlyTheMatchingEvents(t *testing.T) {
	t.Parallel()
	exact, present, filters, cesql, sensor := newRecorder(t, nil), newRecorder(t, nil), newRecorder(t, nil),
		newRecorder(t, nil), newRecorder(t, nil)
	cfg := writeConfig(t, brokerYAML+fmt.Sprintf(`
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: exact, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: com.example.a, source: /e2e}}
  subscriber: {uri: %s}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: present, namespace: default}
spec:
  broker: default
  filter: {attributes: {myext: ""}}
  subscriber: {uri: %s}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: filters, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: ignored-because-filters-wins}}
  filters:
    - prefix: {type: com.example.}
    - not: {exact: {subject: skip}}
  subscriber: {uri: %s}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: cesql, namespace: default}
spec:
  broker: default
  filters:
    - cesql: "myext = 'café au lait' AND type LIKE 'com.example.%%'"
  subscriber: {uri: %s}
---
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: big, namespace: default}
spec:
  broker: default
  dependencies:
    - name: order
      filter: 'event.type.startsWith("com.example.") && data.total > 100'
  triggers:
    - name: notify
      http: {url: %s}
`, exact.URL, present.URL, filters.URL, cesql.URL, sensor.URL))
	redis := redistest.Start(t)
	gw := startGateway(t, redis.URL(), cfg)

	send := []struct {
		id, typ string
		kv      []string
		body    string
	}{
		{"a-1", "com.example.a", []string{"ce-myext", "caf%C3%A9%20au%20lait"}, `{"total": 50}`},
		{"a-2", "com.example.a", []string{"ce-subject", "skip"}, `{"total": 150.5}`},
		{"b-1", "com.example.b", nil, `{"total": 500}`},
		{"z-1", "org.other", []string{"ce-myext", "x"}, `{"total": 1000}`},
	}
	for _, s := range send {
		if code := postEvent(t, gw.URL+"/default/default", ce(s.id, s.typ, s.kv...), s.body); code != http.StatusAccepted {
			t.Fatalf("post %s: %d", s.id, code)
		}
	}

	want := []struct {
		rec *recorder
		ids []string
	}{
		{exact, []string{"a-1", "a-2"}},
		{present, []string{"a-1", "z-1"}},
		{filters, []string{"a-1", "b-1"}},
		{cesql, []string{"a-1"}},
		{sensor, []string{"a-2", "b-1"}},
	}
	for _, w := range want {
		w.rec.WaitFor(t, len(w.ids), 10*time.Second)
		got := w.rec.Quiet(t, len(w.ids), 300*time.Millisecond)
		gotIDs := ids(got)
		slices.Sort(gotIDs)
		if !slices.Equal(gotIDs, w.ids) {
			t.Errorf("%s got %v, want %v", w.rec.URL, gotIDs, w.ids)
		}
	}

	// Attributes, extensions and data arrive intact; the TTL does not.
	for _, r := range exact.All() {
		e := r.Event
		if e == nil {
			t.Fatalf("subscriber got a non-CloudEvent: %s", r.Body)
		}
		if e.ID() != "a-1" {
			continue
		}
		if got := e.Extensions()["myext"]; got != "café au lait" {
			t.Errorf("myext = %q", got)
		}
		if got := r.Header.Get("Ce-Myext"); got != "caf%C3%A9%20au%20lait" {
			t.Errorf("Ce-Myext header = %q, want percent-encoded", got)
		}
		if string(e.Data()) != `{"total": 50}` || e.DataContentType() != "application/json" {
			t.Errorf("data = %s (%s)", e.Data(), e.DataContentType())
		}
		if _, ok := e.Extensions()["knativebrokerttl"]; ok {
			t.Errorf("subscriber saw knativebrokerttl")
		}
		if r.Header.Get("Prefer") != "reply" {
			t.Errorf("Prefer = %q", r.Header.Get("Prefer"))
		}
	}
}

func TestRetriesBackoffAndDeadLetters(t *testing.T) {
	t.Parallel()
	failing := newRecorder(t, func(_ int, _ received, w http.ResponseWriter) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"error":"boom"}`))
	})
	badRequest := newRecorder(t, func(_ int, _ received, w http.ResponseWriter) { w.WriteHeader(http.StatusBadRequest) })
	throttled := newRecorder(t, func(n int, _ received, w http.ResponseWriter) {
		if n == 0 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	dlq := newRecorder(t, nil)
	trigger := func(name, typ, uri, delivery string) string {
		return fmt.Sprintf(`
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: %s, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: %s}}
  subscriber: {uri: %s}
  delivery: %s
`, name, typ, uri, delivery)
	}
	cfg := writeConfig(t, brokerYAML+
		trigger("failing", "fail", failing.URL, fmt.Sprintf(`{retry: 3, backoffPolicy: exponential, backoffDelay: PT0.1S, deadLetterSink: {uri: %s}}`, dlq.URL))+
		trigger("bad", "bad", badRequest.URL, fmt.Sprintf(`{retry: 3, backoffDelay: PT0.1S, deadLetterSink: {uri: %s}}`, dlq.URL))+
		trigger("throttled", "throttle", throttled.URL, `{retry: 3, backoffPolicy: linear, backoffDelay: PT0.1S, retryAfterMax: PT10S}`))
	redis := redistest.Start(t)
	gw := startGateway(t, redis.URL(), cfg)

	for _, ev := range [][2]string{{"r-1", "fail"}, {"r-2", "bad"}, {"r-3", "throttle"}} {
		if code := postEvent(t, gw.URL+"/default/default", ce(ev[0], ev[1]), `{}`); code != http.StatusAccepted {
			t.Fatalf("post %s: %d", ev[0], code)
		}
	}

	// 500: 1 + 3 attempts, each wait at least the exponential backoff.
	attempts := failing.WaitFor(t, 4, 15*time.Second)
	for i, min := range []time.Duration{100, 200, 400} {
		if gap := attempts[i+1].At.Sub(attempts[i].At); gap < min*time.Millisecond {
			t.Errorf("wait before retry %d = %v, want >= %v", i+1, gap, min*time.Millisecond)
		}
	}
	// 400: one attempt only.
	badRequest.WaitFor(t, 1, 10*time.Second)

	letters := dlq.WaitFor(t, 2, 10*time.Second)
	byID := map[string]received{}
	for _, l := range letters {
		byID[l.Event.ID()] = l
	}
	failed, ok := byID["r-1"]
	if !ok {
		t.Fatalf("dead-letter sink got %v, want r-1 and r-2", ids(letters))
	}
	ext := failed.Event.Extensions()
	if ext["knativeerrordest"] != failing.URL || ext["knativeerrorcode"] != "500" ||
		ext["knativeerrordata"] != base64.StdEncoding.EncodeToString([]byte(`{"error":"boom"}`)) {
		t.Errorf("dead letter extensions = %v", ext)
	}
	if got := byID["r-2"].Event.Extensions()["knativeerrorcode"]; got != "400" {
		t.Errorf("r-2 knativeerrorcode = %v", got)
	}

	// 429 with Retry-After: 1 is retried after about a second, then succeeds.
	tries := throttled.WaitFor(t, 2, 10*time.Second)
	if gap := tries[1].At.Sub(tries[0].At); gap < time.Second || gap > 3*time.Second {
		t.Errorf("retry after 429 came %v later, want about 1s", gap)
	}

	failing.Quiet(t, 4, 700*time.Millisecond)
	badRequest.Quiet(t, 1, 0)
	dlq.Quiet(t, 2, 0)
	throttled.Quiet(t, 2, 0)
}

func TestRepliesReachOtherTriggersAndLoopsStopByTTL(t *testing.T) {
	t.Parallel()
	replier := newRecorder(t, func(_ int, r received, w http.ResponseWriter) {
		w.Header().Set("Ce-Specversion", "1.0")
		w.Header().Set("Ce-Id", "reply-to-"+r.Event.ID())
		w.Header().Set("Ce-Source", "/replier")
		w.Header().Set("Ce-Type", "com.example.reply")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"answer":42}`))
	})
	replies := newRecorder(t, nil)
	var loops int
	looper := newRecorder(t, func(n int, r received, w http.ResponseWriter) {
		loops = n + 1
		w.Header().Set("Ce-Specversion", "1.0")
		w.Header().Set("Ce-Id", fmt.Sprintf("loop-%d", n+1))
		w.Header().Set("Ce-Source", "/looper")
		w.Header().Set("Ce-Type", "com.example.loop")
		w.WriteHeader(http.StatusOK)
	})
	cfg := writeConfig(t, brokerYAML+fmt.Sprintf(`
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: requests, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: com.example.request}}
  subscriber: {uri: %s}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: replies, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: com.example.reply}}
  subscriber: {uri: %s}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: loop, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: com.example.loop}}
  subscriber: {uri: %s}
`, replier.URL, replies.URL, looper.URL))
	redis := redistest.Start(t)
	gw := startGateway(t, redis.URL(), cfg)

	postEvent(t, gw.URL+"/default/default", ce("q-1", "com.example.request"), `{}`)
	got := replies.WaitFor(t, 1, 10*time.Second)
	if e := got[0].Event; e.ID() != "reply-to-q-1" || string(e.Data()) != `{"answer":42}` {
		t.Fatalf("reply = %v", e)
	}

	// A loop that starts with a TTL of 5 is stopped after 5 deliveries.
	postEvent(t, gw.URL+"/default/default", ce("loop-0", "com.example.loop", "ce-knativebrokerttl", "5"), `{}`)
	looper.WaitFor(t, 5, 10*time.Second)
	final := looper.Quiet(t, 5, time.Second)
	if len(final) != 5 {
		t.Fatalf("loop ran %d hops (last handler call %d), want 5 with a TTL of 5", len(final), loops)
	}
}

func TestDeliverySpecPrecedence(t *testing.T) {
	t.Parallel()
	fail := func(_ int, _ received, w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) }
	inherits, overrides := newRecorder(t, fail), newRecorder(t, fail)
	brokerDLQ, triggerDLQ := newRecorder(t, nil), newRecorder(t, nil)
	cfg := writeConfig(t, fmt.Sprintf(`
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
spec:
  delivery: {retry: 2, backoffDelay: PT0.05S, deadLetterSink: {uri: %s}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: inherits, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: inherit}}
  subscriber: {uri: %s}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: overrides, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: override}}
  subscriber: {uri: %s}
  delivery: {retry: 1, backoffDelay: PT0.05S, deadLetterSink: {uri: %s}}
`, brokerDLQ.URL, inherits.URL, overrides.URL, triggerDLQ.URL))
	redis := redistest.Start(t)
	gw := startGateway(t, redis.URL(), cfg)
	postEvent(t, gw.URL+"/default/default", ce("p-1", "inherit"), `{}`)
	postEvent(t, gw.URL+"/default/default", ce("p-2", "override"), `{}`)

	inherits.WaitFor(t, 3, 10*time.Second)
	overrides.WaitFor(t, 2, 10*time.Second)
	if got := ids(brokerDLQ.WaitFor(t, 1, 10*time.Second)); !slices.Equal(got, []string{"p-1"}) {
		t.Errorf("broker's dead-letter sink got %v, want [p-1]", got)
	}
	if got := ids(triggerDLQ.WaitFor(t, 1, 10*time.Second)); !slices.Equal(got, []string{"p-2"}) {
		t.Errorf("trigger's dead-letter sink got %v, want [p-2]", got)
	}
	inherits.Quiet(t, 3, 500*time.Millisecond)
	overrides.Quiet(t, 2, 0)
	brokerDLQ.Quiet(t, 1, 0)
}

func TestLongMessageArrivesIntact(t *testing.T) {
	t.Parallel()
	sub := newRecorder(t, nil)
	cfg := writeConfig(t, brokerYAML+fmt.Sprintf(`
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: all, namespace: default}
spec:
  broker: default
  subscriber: {uri: %s}
`, sub.URL))
	redis := redistest.Start(t)
	gw := startGateway(t, redis.URL(), cfg)
	body := `{"blob":"` + strings.Repeat("x", 900<<10) + `"}`
	if code := postEvent(t, gw.URL+"/default/default", ce("long-1", "big"), body); code != http.StatusAccepted {
		t.Fatalf("post: %d", code)
	}
	got := sub.WaitFor(t, 1, 10*time.Second)
	if string(got[0].Body) != body {
		t.Fatalf("body of %d bytes arrived as %d bytes", len(body), len(got[0].Body))
	}
}
