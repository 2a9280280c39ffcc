package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// standIn is a small broker stand-in: it answers each POST with the status
// its policy picks for the event's sequence number and forwards the event to
// the subscriber as many times as the policy says, after answering. It lets
// these tests know exactly what sbload must report without the gateway.
type standIn struct {
	t          *testing.T
	subscriber string
	policy     func(seq uint64) (status, forwards int)
	structured bool // forward in JSON structured mode instead of binary

	mu      sync.Mutex
	bad     []string // requests that were not the CloudEvents sbload must send
	pending sync.WaitGroup
	client  *http.Client
}

func newStandIn(t *testing.T, subscriber string, policy func(uint64) (int, int)) (*standIn, *httptest.Server) {
	s := &standIn{t: t, subscriber: subscriber, policy: policy, client: &http.Client{Timeout: 5 * time.Second}}
	srv := httptest.NewServer(s)
	t.Cleanup(func() {
		srv.Close()
		s.pending.Wait()
		s.client.CloseIdleConnections()
	})
	return s, srv
}

func (s *standIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h := r.Header
	id, sent := h.Get("Ce-Id"), h.Get("Ce-Sbloadsent")
	_, seqText, _ := strings.Cut(id, "-")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil || h.Get("Ce-Specversion") != "1.0" || h.Get("Ce-Type") == "" || h.Get("Ce-Source") == "" ||
		sent == "" || len(body) != 1024 || r.URL.Path != "/default/bench" {
		s.mu.Lock()
		s.bad = append(s.bad, fmt.Sprintf("%s %s headers %v, %d-byte body", r.Method, r.URL.Path, h, len(body)))
		s.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	status, forwards := s.policy(seq)
	w.WriteHeader(status)
	for range forwards {
		s.pending.Go(func() { s.forward(id, sent, body) })
	}
}

func (s *standIn) forward(id, sent string, body []byte) {
	var req *http.Request
	if s.structured {
		// The extension travels as a JSON string, as a structured event's
		// extensions usually do.
		b, _ := json.Marshal(map[string]any{"specversion": "1.0", "id": id, "type": "t", "source": "/s",
			"sbloadsent": sent, "data_base64": body})
		req, _ = http.NewRequest(http.MethodPost, s.subscriber, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	} else {
		req, _ = http.NewRequest(http.MethodPost, s.subscriber, bytes.NewReader(body))
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", id)
		req.Header.Set("Ce-Sbloadsent", sent)
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Errorf("forward %s: %v", id, err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		s.t.Errorf("subscriber answered %d to %s, want 202", resp.StatusCode, id)
	}
}

func (s *standIn) checkRequests(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, b := range s.bad {
		if i == 3 {
			t.Errorf("... and %d more bad requests", len(s.bad)-3)
			break
		}
		t.Errorf("stand-in got a request that is not sbload's CloudEvent: %s", b)
	}
}

// TestRunReconcilesWhatTheBrokerDid runs sbload open-loop against stand-ins
// that accept, refuse, lose, duplicate and falsely refuse events, and checks
// that the report counts each exactly.
func TestRunReconcilesWhatTheBrokerDid(t *testing.T) {
	t.Parallel()
	const rate, duration = 400, 300 * time.Millisecond // 120 events: seq 0..119
	tests := []struct {
		name       string
		policy     func(seq uint64) (status, forwards int)
		structured bool
		want       Report // only the counters checked below
	}{
		{
			name:   "every event accepted and delivered once",
			policy: func(uint64) (int, int) { return http.StatusAccepted, 1 },
			want:   Report{Accepted: 120, Delivered: 120, Statuses: map[string]uint64{}},
		},
		{
			name:       "structured deliveries are understood",
			policy:     func(uint64) (int, int) { return http.StatusAccepted, 1 },
			structured: true,
			want:       Report{Accepted: 120, Delivered: 120, Statuses: map[string]uint64{}},
		},
		{
			name: "backpressure is counted by status and is not missing",
			policy: func(seq uint64) (int, int) {
				switch seq % 10 {
				case 0:
					return http.StatusTooManyRequests, 0 // 12 events
				case 1:
					return http.StatusServiceUnavailable, 0 // 12 events
				}
				return http.StatusAccepted, 1
			},
			want: Report{Accepted: 96, Delivered: 96, Statuses: map[string]uint64{"429": 12, "503": 12}},
		},
		{
			name: "lost, duplicated and stored-but-refused events",
			policy: func(seq uint64) (int, int) {
				switch {
				case seq%40 == 3: // 3, 43, 83: accepted, never delivered
					return http.StatusAccepted, 0
				case seq%30 == 7: // 7, 37, 67, 97: delivered three times
					return http.StatusAccepted, 3
				case seq%60 == 11: // 11, 71: answered 500 but delivered
					return http.StatusInternalServerError, 1
				}
				return http.StatusAccepted, 1
			},
			want: Report{
				Accepted: 118, Delivered: 117, Statuses: map[string]uint64{"500": 2},
				Reconciliation: Reconciliation{Missing: 3, Duplicates: 8, Unconfirmed: 2, FirstMissing: []uint64{3, 43, 83}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			stand, srv := newStandIn(t, "http://"+ln.Addr().String()+"/", tt.policy)
			stand.structured = tt.structured
			cfg := testConfig(srv.URL+"/default/bench", duration)
			cfg.Rate = rate
			cfg.Drain = 2 * time.Second
			if tt.want.Missing > 0 {
				cfg.Drain = 300 * time.Millisecond // the wait runs out by design
			}

			rep, err := runOn(context.Background(), cfg, ln, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatalf("runOn: %v", err)
			}
			stand.checkRequests(t)
			checkReport(t, rep, tt.want)
			if rep.Sent != 120 {
				t.Errorf("Sent = %d, want 120 (%g/s for %v)", rep.Sent, float64(rate), duration)
			}
			// The last event is due 297.5 ms after the first: pacing held the
			// schedule rather than sending everything at once.
			if rep.SendSeconds < 0.2975 || rep.SendSeconds > 3 {
				t.Errorf("SendSeconds = %.4f, want from 0.2975 to 3", rep.SendSeconds)
			}
			if rep.StartLag.Count != 120 || rep.PostLatency.Count != int(rep.Accepted) {
				t.Errorf("start lag samples %d, POST latency samples %d; want 120 and %d",
					rep.StartLag.Count, rep.PostLatency.Count, rep.Accepted)
			}
			if rep.EndToEnd.Count != int(rep.Delivered) || rep.EndToEnd.Min < 0 || rep.EndToEnd.Max > 3000 {
				t.Errorf("end-to-end latency %+v: want %d samples between 0 and 3 s", rep.EndToEnd, rep.Delivered)
			}
			if want := tt.want.Missing == 0; rep.Verified() != want {
				t.Errorf("Verified() = %v, want %v", rep.Verified(), want)
			}
		})
	}
}

func testConfig(url string, d time.Duration) Config {
	return Config{URL: url, Concurrency: 8, Duration: d, Size: 1024, Timeout: 5 * time.Second,
		Type: "dev.signalbox.sbload.test", Source: "/sbload/test"}
}

func checkReport(t *testing.T, got *Report, want Report) {
	t.Helper()
	if got.Accepted != want.Accepted || got.Delivered != want.Delivered {
		t.Errorf("accepted %d, delivered %d; want %d and %d", got.Accepted, got.Delivered, want.Accepted,
			want.Delivered)
	}
	if fmt.Sprint(got.Statuses) != fmt.Sprint(want.Statuses) {
		t.Errorf("Statuses = %v, want %v", got.Statuses, want.Statuses)
	}
	if fmt.Sprint(got.Reconciliation) != fmt.Sprint(want.Reconciliation) {
		t.Errorf("Reconciliation = %+v, want %+v", got.Reconciliation, want.Reconciliation)
	}
	if got.TransportErrors != 0 || got.Foreign != 0 {
		t.Errorf("transport errors %d (%s), foreign %d; want none", got.TransportErrors, got.FirstError, got.Foreign)
	}
}

// TestRunClosedLoopKeepsConcurrency checks that a closed-loop run keeps
// exactly -concurrency requests in flight and no more.
func TestRunClosedLoopKeepsConcurrency(t *testing.T) {
	t.Parallel()
	var inFlight, peak, total int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		inFlight++
		total++
		peak = max(peak, inFlight)
		mu.Unlock()
		time.Sleep(2 * time.Millisecond) // long enough for all senders to pile up
		mu.Lock()
		inFlight--
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)

	cfg := testConfig(srv.URL+"/default/bench", 200*time.Millisecond)
	rep, err := runOn(context.Background(), cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("runOn: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if peak != cfg.Concurrency {
		t.Errorf("peak requests in flight = %d, want %d", peak, cfg.Concurrency)
	}
	if rep.Mode != "closed" || rep.Accepted != uint64(total) || rep.Sent != uint64(total) || rep.AcceptedPerSec <= 0 {
		t.Errorf("report mode %s, sent %d, accepted %d (%.0f/s); want closed, %d, %d, > 0/s", rep.Mode, rep.Sent,
			rep.Accepted, rep.AcceptedPerSec, total, total)
	}
	if rep.SubscriberURL != "" || !rep.Verified() {
		t.Errorf("without a subscriber: SubscriberURL %q, Verified %v; want empty and true", rep.SubscriberURL,
			rep.Verified())
	}
}

// TestCLI runs the command line as a user would and reads its JSON report.
func TestCLI(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(refusing.Close)

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring
		wantStderr string // substring
	}{
		{"help", []string{"-h"}, exitOK, "", "Exit status"},
		{"unknown flag", []string{"-nope"}, exitUsage, "", "flag provided but not defined"},
		{"missing url", []string{"-duration", "1s"}, exitError, "", "-url is required"},
		{"bad concurrency", []string{"-url", srv.URL, "-concurrency", "0"}, exitError, "", "-concurrency 0"},
		{"json report", []string{"-url", srv.URL + "/default/bench", "-duration", "100ms", "-rate", "100",
			"-listen", "", "-json"}, exitOK, `"accepted": 10,`, "sending"},
		{"text report", []string{"-url", srv.URL + "/default/bench", "-duration", "100ms", "-rate", "100",
			"-listen", ""}, exitOK, "accepted 10 (", ""},
		{"nothing accepted", []string{"-url", refusing.URL + "/x/y", "-duration", "50ms", "-rate", "100",
			"-listen", "", "-log-level", "error"}, exitUnverified, "404×5", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := cli(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout does not contain %q:\n%s", tt.wantStdout, stdout.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, stderr.String())
			}
		})
	}
}

// TestRunAgainstItsOwnSubscriber checks the calibration mode: posting to the
// subscriber makes every POST an accepted and delivered event.
func TestRunAgainstItsOwnSubscriber(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("http://"+ln.Addr().String()+"/", 200*time.Millisecond)
	cfg.Drain = time.Second
	rep, err := runOn(context.Background(), cfg, ln, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("runOn: %v", err)
	}
	if rep.Sent == 0 || rep.Accepted != rep.Sent || rep.Delivered != rep.Sent {
		t.Errorf("sent %d, accepted %d, delivered %d; want all equal and > 0", rep.Sent, rep.Accepted, rep.Delivered)
	}
	checkReport(t, rep, Report{Accepted: rep.Sent, Delivered: rep.Sent, Statuses: map[string]uint64{}})
	// sbload's own client keeps its connections alive: about one per sender.
	// net/http may dial one while an idle one is being returned and keep both,
	// so a few more are fine; one per request is not.
	if rep.SubscriberConns == 0 || rep.SubscriberConns > 2*uint64(cfg.Concurrency) {
		t.Errorf("subscriber accepted %d connections for %d requests, want 1 to %d", rep.SubscriberConns,
			rep.Sent, 2*cfg.Concurrency)
	}
	if !rep.Verified() || rep.DeliveredPerSec <= 0 || rep.EndToEnd.Count != int(rep.Sent) {
		t.Errorf("Verified %v, %.0f delivered/s, %d end-to-end samples; want true, > 0, %d", rep.Verified(),
			rep.DeliveredPerSec, rep.EndToEnd.Count, rep.Sent)
	}
}
