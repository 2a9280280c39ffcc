package openwhisk

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/functions"
	"github.com/signalbox-dev/signalbox/functions/functionstest"
)

const (
	testUUID = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502"
	testKey  = "123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
	testAuth = testUUID + ":" + testKey
)

// fakeWhisk speaks the OpenWhisk controller's action invocation API: it
// checks basic authentication (401 as the controller answers, on a wrong
// credential), records each invocation and lets the test answer it.
type fakeWhisk struct {
	srv     *httptest.Server
	respond func(w http.ResponseWriter, r *http.Request, body []byte)
	mu      sync.Mutex
	reqs    []*http.Request
	bodies  [][]byte
}

func newFakeWhisk(t *testing.T, tlsServer bool, respond func(w http.ResponseWriter, r *http.Request, body []byte)) *fakeWhisk {
	t.Helper()
	f := &fakeWhisk{respond: respond}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		if user, key, ok := r.BasicAuth(); !ok || user != testUUID || key != testKey {
			whiskError(w, http.StatusUnauthorized, "The supplied authentication is invalid.")
			return
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, r)
		f.bodies = append(f.bodies, body)
		f.mu.Unlock()
		f.respond(w, r, body)
	})
	if tlsServer {
		f.srv = httptest.NewTLSServer(h)
	} else {
		f.srv = httptest.NewServer(h)
	}
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeWhisk) last() (*http.Request, []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		return nil, nil
	}
	return f.reqs[len(f.reqs)-1], f.bodies[len(f.bodies)-1]
}

// whiskError answers as the controller does: {"error": ..., "code": ...}.
func whiskError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"error": msg, "code": "4b2e6a4f8c1d"})
	_, _ = w.Write(b)
}

// activation writes an activation record, as a blocking invocation without
// result=true answers.
func activation(w http.ResponseWriter, status int, id string, success bool, result any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Openwhisk-Activation-Id", id)
	w.WriteHeader(status)
	st := "success"
	if !success {
		st = "application error"
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"activationId": id, "namespace": "guest", "name": "act",
		"response": map[string]any{"status": st, "success": success, "result": result},
	})
}

func newTestTarget(t *testing.T, f *fakeWhisk, cfg Config, log *slog.Logger) *Target {
	t.Helper()
	cfg.Host = f.srv.URL
	if cfg.Action == "" {
		cfg.Action = "act"
	}
	if cfg.Auth == "" {
		cfg.Auth = testAuth
	}
	tg, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func TestConformance(t *testing.T) {
	t.Parallel()
	functionstest.Run(t, functionstest.Harness{Start: startWhisk})
}

// startWhisk plays the scenario as a controller would for a blocking
// invocation; the permanent answer echoes the Authorization header, as a
// careless proxy might, to check that the target redacts it.
func startWhisk(t *testing.T, s functionstest.Scenario, log *slog.Logger) functionstest.Fixture {
	var rec functionstest.Recorder
	f := newFakeWhisk(t, false, func(w http.ResponseWriter, r *http.Request, body []byte) {
		switch s.Case {
		case functionstest.Success:
			if ev, err := cloudevent.ParseStructured(body); err == nil {
				rec.Add(ev.ID())
			}
			activation(w, http.StatusOK, "a-1", true, map[string]any{"ok": true})
		case functionstest.Reply:
			if ev, err := cloudevent.ParseStructured(body); err == nil {
				rec.Add(ev.ID())
			}
			b, _ := cloudevent.MarshalStructured(s.Reply)
			activation(w, http.StatusOK, "a-2", true, json.RawMessage(b))
		case functionstest.Retryable:
			activation(w, http.StatusBadGateway, "a-3", false, map[string]any{"error": "database unavailable"})
		case functionstest.RetryAfter:
			w.Header().Set("Retry-After", strconv.Itoa(int(s.RetryAfter.Seconds())))
			whiskError(w, http.StatusTooManyRequests, "Too many requests in the last minute (count: 61, allowed: 60).")
		case functionstest.Permanent:
			whiskError(w, http.StatusNotFound, "The requested resource does not exist. ("+r.Header.Get("Authorization")+")")
		case functionstest.Timeout:
			<-r.Context().Done()
		}
	})
	return functionstest.Fixture{
		Target:   newTestTarget(t, f, Config{}, log),
		Received: rec.IDs,
		Secrets:  []string{testKey, testAuth},
	}
}

func TestRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		cfg       Config
		wantPath  string
		wantQuery string
		wantDest  string
	}{
		{"defaults", Config{Action: "act"}, "/api/v1/namespaces/_/actions/act", "blocking=true", "/api/v1/namespaces/_/actions/act"},
		{"package, result", Config{Namespace: "guest", Action: "orders/new order", Result: true},
			"/api/v1/namespaces/guest/actions/orders/new order", "blocking=true&result=true",
			"/api/v1/namespaces/guest/actions/orders/new%20order"},
		{"non-blocking", Config{Action: "act", NonBlocking: true}, "/api/v1/namespaces/_/actions/act", "blocking=false",
			"/api/v1/namespaces/_/actions/act"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeWhisk(t, false, func(w http.ResponseWriter, r *http.Request, body []byte) {
				_, _ = w.Write([]byte(`{"ok":true}`))
			})
			tg := newTestTarget(t, f, tc.cfg, nil)
			e := functionstest.NewEvent("e-1")
			if out := tg.Send(context.Background(), e); out.Result != functions.Success {
				t.Fatalf("Send = %+v", out)
			}
			r, body := f.last()
			if r.Method != http.MethodPost || r.URL.Path != tc.wantPath || r.URL.RawQuery != tc.wantQuery {
				t.Errorf("request %s %s?%s, want POST %s?%s", r.Method, r.URL.Path, r.URL.RawQuery, tc.wantPath, tc.wantQuery)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if tg.Destination() != f.srv.URL+tc.wantDest {
				t.Errorf("Destination = %q, want %q", tg.Destination(), f.srv.URL+tc.wantDest)
			}
			var fields map[string]any
			if err := json.Unmarshal(body, &fields); err != nil {
				t.Fatal(err)
			}
			if fields["id"] != "e-1" || fields["subject"] != e.Subject() || fields["specversion"] != "1.0" {
				t.Errorf("parameters = %s, want the event in structured JSON", body)
			}
			if _, ok := fields[cloudevent.ExtTTL]; ok {
				t.Errorf("the action saw the TTL: %s", body)
			}
		})
	}
}

func TestOutcomes(t *testing.T) {
	t.Parallel()
	ce := `{"specversion":"1.0","id":"r-1","source":"/act","type":"t"}`
	tests := []struct {
		name     string
		cfg      Config
		respond  func(w http.ResponseWriter)
		want     functions.Result
		status   int
		errHas   string
		reply    string
		replyErr bool
	}{
		{name: "result only, plain", cfg: Config{Result: true},
			respond: func(w http.ResponseWriter) { _, _ = w.Write([]byte(`{"ok":true}`)) }, want: functions.Success, status: 200},
		{name: "result only, reply", cfg: Config{Result: true},
			respond: func(w http.ResponseWriter) { _, _ = w.Write([]byte(ce)) }, want: functions.Success, status: 200, reply: "r-1"},
		{name: "result only, invalid reply", cfg: Config{Result: true},
			respond: func(w http.ResponseWriter) { _, _ = w.Write([]byte(`{"specversion":"1.0","id":"r-1"}`)) },
			want:    functions.Success, status: 200, replyErr: true},
		{name: "record, no result", respond: func(w http.ResponseWriter) { activation(w, 200, "a", true, nil) },
			want: functions.Success, status: 200},
		{name: "blocking outran its wait", respond: func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte(`{"activationId":"a-slow"}`))
		}, want: functions.Success, status: 202},
		{name: "application error", respond: func(w http.ResponseWriter) {
			activation(w, http.StatusBadGateway, "a", false, map[string]any{"error": "no order id"})
		}, want: functions.Retryable, status: 502, errHas: "application error: no order id"},
		{name: "throttled", respond: func(w http.ResponseWriter) { whiskError(w, 429, "Too many concurrent requests in flight") },
			want: functions.Retryable, status: 429, errHas: "Too many concurrent requests"},
		{name: "internal error", respond: func(w http.ResponseWriter) { whiskError(w, 500, "internal error") },
			want: functions.Retryable, status: 500},
		{name: "unavailable", respond: func(w http.ResponseWriter) { w.WriteHeader(503) }, want: functions.Retryable, status: 503},
		{name: "gateway timeout", respond: func(w http.ResponseWriter) { w.WriteHeader(504) }, want: functions.Retryable, status: 504},
		{name: "bad request", respond: func(w http.ResponseWriter) { whiskError(w, 400, "The request content was malformed") },
			want: functions.Permanent, status: 400, errHas: "malformed"},
		{name: "forbidden", respond: func(w http.ResponseWriter) { whiskError(w, 403, "not authorized") },
			want: functions.Permanent, status: 403},
		{name: "no such action", respond: func(w http.ResponseWriter) { whiskError(w, 404, "The requested resource does not exist.") },
			want: functions.Permanent, status: 404},
		{name: "conflict", respond: func(w http.ResponseWriter) { whiskError(w, 409, "conflict") },
			want: functions.Permanent, status: 409},
		{name: "too large", respond: func(w http.ResponseWriter) { whiskError(w, 413, "The request content was too large") },
			want: functions.Permanent, status: 413},
		{name: "redirect not followed", respond: func(w http.ResponseWriter) {
			w.Header().Set("Location", "/elsewhere")
			w.WriteHeader(http.StatusTemporaryRedirect)
		}, want: functions.Permanent, status: 307},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeWhisk(t, false, func(w http.ResponseWriter, r *http.Request, body []byte) { tc.respond(w) })
			out := newTestTarget(t, f, tc.cfg, nil).Send(context.Background(), functionstest.NewEvent("e-1"))
			if out.Result != tc.want || out.Status != tc.status {
				t.Fatalf("Send = %v %d (%v), want %v %d", out.Result, out.Status, out.Err, tc.want, tc.status)
			}
			if (out.Err == nil) != (tc.want == functions.Success) {
				t.Fatalf("Err = %v for %v", out.Err, out.Result)
			}
			if tc.errHas != "" && !strings.Contains(out.Err.Error(), tc.errHas) {
				t.Errorf("Err = %q, want it to hold %q", out.Err, tc.errHas)
			}
			if (out.ReplyErr != nil) != tc.replyErr {
				t.Errorf("ReplyErr = %v, want error %v", out.ReplyErr, tc.replyErr)
			}
			switch {
			case tc.reply == "" && len(out.Replies) != 0:
				t.Errorf("Replies = %v, want none", out.Replies)
			case tc.reply != "" && (len(out.Replies) != 1 || out.Replies[0].ID() != tc.reply):
				t.Errorf("Replies = %v, want %s", out.Replies, tc.reply)
			}
		})
	}
}

func TestWrongKeyIsPermanent(t *testing.T) {
	t.Parallel()
	f := newFakeWhisk(t, false, func(w http.ResponseWriter, r *http.Request, body []byte) {
		t.Error("an invocation with a wrong key was accepted")
	})
	out := newTestTarget(t, f, Config{Auth: testUUID + ":wrong"}, nil).Send(context.Background(), functionstest.NewEvent("e-1"))
	if out.Result != functions.Permanent || out.Status != http.StatusUnauthorized {
		t.Fatalf("Send = %+v, want permanent 401", out)
	}
}

// TestActivationIDLogged: a non-blocking invocation answers 202 with the
// activation id, which is the only handle on the action's result; it is
// logged at debug level.
func TestActivationIDLogged(t *testing.T) {
	t.Parallel()
	f := newFakeWhisk(t, false, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"activationId":"5bc8d2f09d2a4a5f88d2f09d2a2a5f3c"}`))
	})
	var logs functionstest.LogBuffer
	out := newTestTarget(t, f, Config{NonBlocking: true}, logs.Logger()).Send(context.Background(), functionstest.NewEvent("e-1"))
	if out.Result != functions.Success || out.Status != http.StatusAccepted || len(out.Replies) != 0 {
		t.Fatalf("Send = %+v", out)
	}
	var entry struct {
		Level        string `json:"level"`
		Msg          string `json:"msg"`
		ActivationID string `json:"activation_id"`
		EventID      string `json:"event_id"`
	}
	for line := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		if err := json.Unmarshal([]byte(line), &entry); err == nil && entry.ActivationID != "" {
			break
		}
	}
	if entry.Level != "DEBUG" || entry.ActivationID != "5bc8d2f09d2a4a5f88d2f09d2a2a5f3c" || entry.EventID != "e-1" {
		t.Fatalf("log = %s, want the activation id and event id at debug level", logs.String())
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	f := newFakeWhisk(t, true, func(w http.ResponseWriter, r *http.Request, body []byte) {
		_, _ = w.Write([]byte(`{}`))
	})
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})

	t.Run("untrusted", func(t *testing.T) {
		out := newTestTarget(t, f, Config{}, nil).Send(context.Background(), functionstest.NewEvent("e-1"))
		if out.Result != functions.Retryable || out.Status != functions.NoResponse ||
			!strings.Contains(out.Err.Error(), "certificate") {
			t.Fatalf("Send = %+v, want a certificate error", out)
		}
	})
	t.Run("custom CA", func(t *testing.T) {
		out := newTestTarget(t, f, Config{CACertPEM: caPEM}, nil).Send(context.Background(), functionstest.NewEvent("e-1"))
		if out.Result != functions.Success {
			t.Fatalf("Send = %+v", out)
		}
	})
	t.Run("insecure is loud", func(t *testing.T) {
		var logs functionstest.LogBuffer
		out := newTestTarget(t, f, Config{Insecure: true}, logs.Logger()).Send(context.Background(), functionstest.NewEvent("e-1"))
		if out.Result != functions.Success {
			t.Fatalf("Send = %+v", out)
		}
		if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), "verification is OFF") {
			t.Fatalf("log = %s, want a warning that verification is off", logs.String())
		}
	})
}

func TestNoResponse(t *testing.T) {
	t.Parallel()
	f := newFakeWhisk(t, false, nil)
	tg := newTestTarget(t, f, Config{}, nil)
	f.srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := tg.Send(ctx, functionstest.NewEvent("e-1"))
	if out.Result != functions.Retryable || out.Status != functions.NoResponse || out.Err == nil {
		t.Fatalf("Send = %+v", out)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no host", Config{Action: "a", Auth: testAuth}, "Host"},
		{"host without scheme", Config{Host: "ow.example:443", Action: "a", Auth: testAuth}, "Host"},
		{"no action", Config{Host: "https://ow", Auth: testAuth}, "Action"},
		{"deep action", Config{Host: "https://ow", Action: "a/b/c", Auth: testAuth}, "Action"},
		{"empty segment", Config{Host: "https://ow", Action: "a/", Auth: testAuth}, "Action"},
		{"namespace with slash", Config{Host: "https://ow", Namespace: "a/b", Action: "a", Auth: testAuth}, "Namespace"},
		{"auth without key", Config{Host: "https://ow", Action: "a", Auth: "only-a-secret-value"}, "Auth"},
		{"result without blocking", Config{Host: "https://ow", Action: "a", Auth: testAuth, NonBlocking: true, Result: true}, "Result"},
		{"bad CA", Config{Host: "https://ow", Action: "a", Auth: testAuth, CACertPEM: []byte("nope")}, "CACertPEM"},
	}
	for _, tc := range tests {
		_, err := New(tc.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New error = %v, want one naming %s", tc.name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "only-a-secret-value") || strings.Contains(err.Error(), testKey) {
			t.Errorf("%s: the error quotes the credential: %v", tc.name, err)
		}
	}
	if _, err := New(Config{Host: "https://ow.example:443/", Action: "a", Auth: testAuth}, nil); err != nil {
		t.Fatal(err)
	}
}

func ExampleNew() {
	tg, err := New(Config{
		Host:   "https://openwhisk.example:443",
		Action: "orders/notify",
		Auth:   "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:KEY", // resolved from secretFrom
	}, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(tg.Destination())
	// Output: https://openwhisk.example:443/api/v1/namespaces/_/actions/orders/notify
}

// FuzzReply reads controller answers and action results: no panic, and a
// reply is always a valid event.
func FuzzReply(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"r","source":"/s","type":"t"}`))
	f.Add([]byte(`{"activationId":"a","response":{"result":{"specversion":"1.0","id":"r","source":"/s","type":"t"}}}`))
	f.Add([]byte(`{"activationId":"a","response":{"result":"text"}}`))
	f.Add([]byte(`{"error":"boom","code":"c"}`))
	f.Add([]byte(`{"response":{"status":"application error","result":{"error":{"nested":true}}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_ = errorReason(body)
		evs, err := reply(body)
		if err != nil && len(evs) != 0 {
			t.Fatal("replies together with an error")
		}
		for _, ev := range evs {
			if verr := ev.Validate(); verr != nil {
				t.Fatalf("invalid reply accepted: %v", verr)
			}
		}
	})
}
