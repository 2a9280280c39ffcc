package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/broker/redisbus"
	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/gateway"
	"github.com/signalbox-dev/signalbox/internal/redistest"
)

const topic = "default/default"

type fixture struct {
	url   string
	bus   broker.Bus
	sub   broker.Subscription
	redis *redistest.Server
}

func newFixture(t *testing.T, cfg redisbus.Config, maxBody int64) *fixture {
	t.Helper()
	srv := redistest.Start(t)
	cfg.URL = srv.URL()
	bus, err := redisbus.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	sub, err := bus.Subscribe(context.Background(), topic, "test", broker.SubscribeConfig{Consumer: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	gw, err := gateway.New(gateway.Config{Bus: bus, MaxBodyBytes: maxBody,
		Now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	gw.SetBrokers([]string{topic})
	hs := httptest.NewServer(gw.Handler())
	t.Cleanup(hs.Close)
	return &fixture{url: hs.URL, bus: bus, sub: sub, redis: srv}
}

// stored returns what the bus holds for the test group, waiting briefly.
func (f *fixture) stored(t *testing.T) []broker.Message {
	t.Helper()
	msgs, err := f.sub.Fetch(context.Background(), 100, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func post(t *testing.T, url string, header map[string]string, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var binaryValid = map[string]string{"ce-specversion": "1.0", "ce-id": "m-1", "ce-source": "/s",
	"ce-type": "com.example.t", "content-type": "application/json"}

func with(base map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

func TestIngressRefusesBadEventsAndStoresNothing(t *testing.T) {
	f := newFixture(t, redisbus.Config{}, 1024)
	structured := map[string]string{"content-type": cloudevent.MediaStructuredJSON}
	tests := []struct {
		name   string
		path   string
		header map[string]string
		body   string
		status int
		msg    string
	}{
		{"missing source", "/default/default", with(binaryValid, "ce-source", ""), "{}", 400, `"source"`},
		{"missing specversion", "/default/default", with(binaryValid, "ce-specversion", ""), "{}", 400, "specversion"},
		{"unknown specversion", "/default/default", with(binaryValid, "ce-specversion", "9.9"), "{}", 400, "9.9"},
		{"structured without id", "/default/default", structured,
			`{"specversion":"1.0","type":"t","source":"/s"}`, 400, `"id"`},
		{"structured bad json", "/default/default", structured, `{"specversion":"1.0",`, 400, "JSON"},
		{"invalid extension name", "/default/default", with(binaryValid, "ce-bad_name", "x"), "{}", 400, "bad_name"},
		{"plain text", "/default/default", map[string]string{"content-type": "text/plain"}, "hello", 400, "not a CloudEvent"},
		{"ttl exhausted", "/default/default", with(binaryValid, "ce-knativebrokerttl", "0"), "{}", 400, "knativebrokerttl"},
		{"unknown structured format", "/default/default", map[string]string{"content-type": "application/cloudevents+avro"},
			"x", 415, "avro"},
		{"unknown broker", "/default/nope", binaryValid, "{}", 404, "default/nope"},
		{"oversize", "/default/default", binaryValid, `{"blob":"` + strings.Repeat("a", 2048) + `"}`, 413, "1024 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := post(t, f.url+tt.path, tt.header, tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d (%s), want %d", resp.StatusCode, body, tt.status)
			}
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error, tt.msg) {
				t.Fatalf("body = %s, want JSON error containing %q", body, tt.msg)
			}
		})
	}
	if msgs := f.stored(t); len(msgs) != 0 {
		t.Fatalf("refused requests stored %d events", len(msgs))
	}
}

func TestIngressOversizeChunked(t *testing.T) {
	f := newFixture(t, redisbus.Config{}, 1024)
	req, _ := http.NewRequest(http.MethodPost, f.url+"/default/default",
		io.MultiReader(strings.NewReader(`{"blob":"`), bytes.NewReader(bytes.Repeat([]byte("a"), 4096)), strings.NewReader(`"}`)))
	for k, v := range binaryValid {
		req.Header.Set(k, v)
	}
	req.ContentLength = -1 // chunked
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d, want 413", resp.StatusCode)
	}
	if msgs := f.stored(t); len(msgs) != 0 {
		t.Fatalf("stored %d events", len(msgs))
	}
}

func TestIngressAcceptsAndStoresIntact(t *testing.T) {
	f := newFixture(t, redisbus.Config{}, 0)
	tests := []struct {
		name   string
		header map[string]string
		body   string
		ids    []string
	}{
		{"binary", with(binaryValid, "ce-id", "b-1", "ce-myext", "caf%C3%A9 au lait"), `{"n":1}`, []string{"b-1"}},
		{"structured", map[string]string{"content-type": cloudevent.MediaStructuredJSON},
			`{"specversion":"1.0","id":"s-1","source":"/s","type":"com.example.t","myext":"café au lait","data":{"n":1}}`,
			[]string{"s-1"}},
		{"batch", map[string]string{"content-type": cloudevent.MediaBatchJSON},
			`[{"specversion":"1.0","id":"x-1","source":"/s","type":"com.example.t","myext":"café au lait","data":{"n":1}},
			  {"specversion":"1.0","id":"x-2","source":"/s","type":"com.example.t","myext":"café au lait","data":{"n":1}}]`,
			[]string{"x-1", "x-2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := post(t, f.url+"/default/default", tt.header, tt.body)
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("status = %d (%s), want 202", resp.StatusCode, body)
			}
			msgs := f.stored(t)
			if len(msgs) != len(tt.ids) {
				t.Fatalf("stored %d events, want %d", len(msgs), len(tt.ids))
			}
			for i, m := range msgs {
				e, err := cloudevent.Unmarshal(m.Payload)
				if err != nil {
					t.Fatal(err)
				}
				ext := e.Extensions()
				if e.ID() != tt.ids[i] || ext["myext"] != "café au lait" || ext[cloudevent.ExtTTL] != "255" ||
					ext[cloudevent.ExtArrivalTime] != "2026-01-01T00:00:00Z" {
					t.Errorf("stored event %d = %s", i, e)
				}
				var data map[string]int
				if err := json.Unmarshal(e.Data(), &data); err != nil || data["n"] != 1 {
					t.Errorf("data = %s", e.Data())
				}
				if err := f.sub.Ack(context.Background(), m.ID); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestIngressMethodsAndProbes(t *testing.T) {
	f := newFixture(t, redisbus.Config{}, 0)
	tests := []struct {
		method, path string
		header       map[string]string
		status       int
		check        func(t *testing.T, resp *http.Response, body string)
	}{
		{"GET", "/default/default", nil, 405, func(t *testing.T, resp *http.Response, _ string) {
			if got := resp.Header.Get("Allow"); got != "POST, OPTIONS" {
				t.Errorf("Allow = %q", got)
			}
		}},
		{"PUT", "/default/default", nil, 405, nil},
		{"OPTIONS", "/default/default", map[string]string{"WebHook-Request-Origin": "eventemitter.example.com"}, 200,
			func(t *testing.T, resp *http.Response, _ string) {
				if got := resp.Header.Get("WebHook-Allowed-Origin"); got != "eventemitter.example.com" {
					t.Errorf("WebHook-Allowed-Origin = %q", got)
				}
			}},
		{"OPTIONS", "/default/nope", map[string]string{"WebHook-Request-Origin": "x.example.com"}, 404, nil},
		{"GET", "/healthz", nil, 200, nil},
		{"GET", "/readyz", nil, 200, nil},
		{"GET", "/metrics", nil, 200, func(t *testing.T, _ *http.Response, body string) {
			if !strings.Contains(body, "signalbox_ingress_request_duration_seconds") {
				t.Errorf("metrics lack signalbox_ingress_request_duration_seconds")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, f.url+tt.path, nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d (%s), want %d", resp.StatusCode, body, tt.status)
			}
			if tt.check != nil {
				tt.check(t, resp, string(body))
			}
		})
	}
}

func TestIngressBusDownIs503(t *testing.T) {
	f := newFixture(t, redisbus.Config{}, 0)
	f.redis.Kill()
	resp, body := post(t, f.url+"/default/default", binaryValid, "{}")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status = %d %q (%s), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	resp, _ = post(t, f.url+"/readyz", nil, "")
	if resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz POST = %d", resp.StatusCode)
	}
	r, err := http.Get(f.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz with the bus down = %d, want 503", r.StatusCode)
	}
}

func TestIngressBackpressureIs429(t *testing.T) {
	f := newFixture(t, redisbus.Config{MaxLen: 5}, 0)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		resp, body := post(t, f.url+"/default/default", with(binaryValid, "ce-id", "t-"+string(rune('a'+i%26))), "{}")
		if resp.StatusCode == http.StatusTooManyRequests {
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
			break
		}
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status = %d (%s)", resp.StatusCode, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no backpressure after %d unacknowledged events over a retention of 5", i+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
