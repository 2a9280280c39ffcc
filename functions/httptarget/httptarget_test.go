package httptarget

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/functions"
)

func testEvent() *event.Event {
	e := event.New("1.0")
	e.SetID("e-1")
	e.SetSource("/s")
	e.SetType("com.example.t")
	e.SetSubject(`a "quoted" subject, café 100%`)
	e.SetExtension(cloudevent.ExtTTL, "254")
	e.SetExtension("myext", "v")
	_ = e.SetData("application/json", map[string]any{"k": "v"})
	return &e
}

func newTarget(t *testing.T, cfg Config) *Target {
	t.Helper()
	if cfg.Client == nil {
		cfg.Client = NewClient()
		t.Cleanup(cfg.Client.CloseIdleConnections)
	}
	tg, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestStatusClassification(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		want   functions.Result
	}{
		{200, functions.Success}, {201, functions.Success}, {202, functions.Success}, {204, functions.Success},
		{400, functions.Permanent}, {401, functions.Permanent}, {403, functions.Permanent},
		{413, functions.Permanent}, {422, functions.Permanent},
		{404, functions.Retryable}, {408, functions.Retryable}, {409, functions.Retryable},
		{429, functions.Retryable}, {500, functions.Retryable}, {502, functions.Retryable},
		{503, functions.Retryable}, {504, functions.Retryable},
		{301, functions.Permanent}, {307, functions.Permanent},
	}
	for _, tc := range tests {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			t.Parallel()
			var redirected atomic.Int32
			srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/moved" {
					redirected.Add(1)
					return
				}
				if tc.status >= 300 && tc.status < 400 {
					w.Header().Set("Location", "/moved")
				}
				w.WriteHeader(tc.status)
			})
			out := newTarget(t, Config{URL: srv.URL + "/"}).Send(context.Background(), testEvent())
			if out.Result != tc.want || out.Status != tc.status {
				t.Fatalf("Send = %v %d (%v), want %v %d", out.Result, out.Status, out.Err, tc.want, tc.status)
			}
			if (out.Err == nil) != (tc.want == functions.Success) {
				t.Fatalf("Err = %v for %v", out.Err, out.Result)
			}
			if redirected.Load() != 0 {
				t.Fatal("a redirect was followed")
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		header string
		min    time.Duration
		max    time.Duration
	}{
		{"429 seconds", 429, "3", 3 * time.Second, 3 * time.Second},
		{"503 date", 503, time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat), time.Second, 3 * time.Second},
		{"500 ignored", 500, "3", 0, 0},
		{"429 malformed", 429, "later", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", tc.header)
				w.WriteHeader(tc.status)
			})
			out := newTarget(t, Config{URL: srv.URL}).Send(context.Background(), testEvent())
			if out.Result != functions.Retryable || out.RetryAfter < tc.min || out.RetryAfter > tc.max {
				t.Fatalf("Send = %v, RetryAfter %v; want retryable within [%v, %v]", out.Result, out.RetryAfter, tc.min, tc.max)
			}
		})
	}
}

func TestBinaryRequest(t *testing.T) {
	t.Parallel()
	var got *http.Request
	var body []byte
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got, body = r, mustRead(t, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})
	e := testEvent()
	out := newTarget(t, Config{URL: srv.URL + "/sub", Method: http.MethodPut,
		Headers: map[string]string{"X-Token": "abc"}}).Send(context.Background(), e)
	if out.Result != functions.Success || out.Status != http.StatusAccepted {
		t.Fatalf("Send = %+v", out)
	}
	checks := map[string]string{
		"Ce-Id":          "e-1",
		"Ce-Specversion": "1.0",
		"Ce-Myext":       "v",
		"Ce-Subject":     "a%20%22quoted%22%20subject,%20caf%C3%A9%20100%25",
		"Content-Type":   "application/json",
		"Prefer":         "reply",
		"X-Token":        "abc",
	}
	for k, want := range checks {
		if v := got.Header.Get(k); v != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	if got.Method != http.MethodPut || got.URL.Path != "/sub" {
		t.Errorf("request %s %s", got.Method, got.URL.Path)
	}
	if v, ok := got.Header["Ce-Knativebrokerttl"]; ok {
		t.Errorf("subscriber saw the TTL: %q", v)
	}
	if string(body) != `{"k":"v"}` {
		t.Errorf("body = %q", body)
	}
	// The caller's event keeps its TTL.
	if ttl, ok := cloudevent.TTL(e); !ok || ttl != 254 {
		t.Errorf("Send modified the event's TTL: %v %v", ttl, ok)
	}
	// The subscriber reads back exactly the event that was sent.
	evs, err := cloudevent.Parse(got.Header, body)
	if err != nil || evs[0].Subject() != e.Subject() {
		t.Errorf("subscriber parsed %v, %v", evs, err)
	}
}

func TestStructuredRequest(t *testing.T) {
	t.Parallel()
	var ct string
	var fields map[string]any
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		ct = r.Header.Get("Content-Type")
		_ = json.Unmarshal(mustRead(t, r.Body), &fields)
	})
	out := newTarget(t, Config{URL: srv.URL, Structured: true}).Send(context.Background(), testEvent())
	if out.Result != functions.Success {
		t.Fatalf("Send = %+v", out)
	}
	if ct != cloudevent.MediaStructuredJSON {
		t.Errorf("Content-Type = %q", ct)
	}
	if fields["id"] != "e-1" || fields["myext"] != "v" || fields["subject"] != testEvent().Subject() {
		t.Errorf("structured body = %v", fields)
	}
	if _, ok := fields[cloudevent.ExtTTL]; ok {
		t.Errorf("subscriber saw the TTL")
	}
	if d, _ := fields["data"].(map[string]any); d["k"] != "v" {
		t.Errorf("data = %v", fields["data"])
	}
}

func TestReplies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		respond   func(w http.ResponseWriter)
		maxReply  int64
		wantReply string
		wantErr   bool
	}{
		{name: "binary reply", respond: func(w http.ResponseWriter) {
			h := w.Header()
			h.Set("Ce-Specversion", "1.0")
			h.Set("Ce-Id", "r-1")
			h.Set("Ce-Source", "/sub")
			h.Set("Ce-Type", "reply")
			h.Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"ok":true}`))
		}, wantReply: "r-1"},
		{name: "structured reply", respond: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", cloudevent.MediaStructuredJSON)
			_, _ = w.Write([]byte(`{"specversion":"1.0","id":"r-2","source":"/sub","type":"reply"}`))
		}, wantReply: "r-2"},
		{name: "plain json body is not a reply", respond: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"specversion":"1.0","id":"r-3","source":"/sub","type":"reply"}`))
		}},
		{name: "empty 200", respond: func(w http.ResponseWriter) {}},
		{name: "invalid reply", respond: func(w http.ResponseWriter) {
			w.Header().Set("Ce-Specversion", "1.0")
			w.Header().Set("Ce-Type", "reply")
			w.WriteHeader(http.StatusOK)
		}, wantErr: true},
		{name: "reply too large", maxReply: 16, respond: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", cloudevent.MediaStructuredJSON)
			_, _ = w.Write([]byte(`{"specversion":"1.0","id":"r-4","source":"/sub","type":"reply"}`))
		}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := serve(t, func(w http.ResponseWriter, r *http.Request) { tc.respond(w) })
			out := newTarget(t, Config{URL: srv.URL, MaxReplyBytes: tc.maxReply}).Send(context.Background(), testEvent())
			if out.Result != functions.Success {
				t.Fatalf("Send = %+v", out)
			}
			if (out.ReplyErr != nil) != tc.wantErr {
				t.Fatalf("ReplyErr = %v, want error %v", out.ReplyErr, tc.wantErr)
			}
			switch {
			case tc.wantReply == "" && len(out.Replies) != 0:
				t.Fatalf("got replies %v, want none", out.Replies)
			case tc.wantReply != "" && (len(out.Replies) != 1 || out.Replies[0].ID() != tc.wantReply):
				t.Fatalf("got replies %v, want %s", out.Replies, tc.wantReply)
			}
		})
	}
}

func TestFailureBodyExcerpt(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("e", 5000)
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(long))
	})
	out := newTarget(t, Config{URL: srv.URL}).Send(context.Background(), testEvent())
	if out.Result != functions.Retryable || out.Status != 500 {
		t.Fatalf("Send = %+v", out)
	}
	if string(out.Body) != long[:functions.MaxBodyExcerpt] {
		t.Fatalf("Body has %d bytes, want the first %d", len(out.Body), functions.MaxBodyExcerpt)
	}
	if n := len(out.ErrorData()); n != 1024 {
		t.Fatalf("ErrorData has %d characters, want 1024", n)
	}
}

func TestNoResponse(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	slow := serve(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	t.Run("timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		out := newTarget(t, Config{URL: slow.URL}).Send(ctx, testEvent())
		if out.Result != functions.Retryable || out.Status != functions.NoResponse || out.Err == nil {
			t.Fatalf("Send = %+v", out)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("timed-out attempt took %v", d)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		out := newTarget(t, Config{URL: closed.URL}).Send(context.Background(), testEvent())
		if out.Result != functions.Retryable || out.Status != functions.NoResponse || out.Err == nil {
			t.Fatalf("Send = %+v", out)
		}
	})
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"empty URL", Config{}, "URL"},
		{"relative URL", Config{URL: "/path"}, "URL"},
		{"other scheme", Config{URL: "ftp://x/"}, "URL"},
		{"negative reply limit", Config{URL: "http://x/", MaxReplyBytes: -1}, "MaxReplyBytes"},
		{"ce header", Config{URL: "http://x/", Headers: map[string]string{"ce-id": "x"}}, "Headers"},
		{"content type", Config{URL: "http://x/", Headers: map[string]string{"content-type": "x"}}, "Headers"},
	}
	for _, tc := range tests {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New error = %v, want one naming %s", tc.name, err, tc.want)
		}
	}
	tg, err := New(Config{URL: "https://sub.example/x"})
	if err != nil || tg.Destination() != "https://sub.example/x" {
		t.Fatalf("New = %v, %v", tg, err)
	}
}

func mustRead(t *testing.T, r io.Reader) []byte {
	b, err := io.ReadAll(r)
	if err != nil {
		t.Error(err)
	}
	return b
}
