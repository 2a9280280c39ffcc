// Package e2e runs the signalbox binary as a user would: real processes, a
// real redis-server, subscribers that are real HTTP servers, and events
// posted over HTTP.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/internal/redistest"
)

// binary is the signalbox executable built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "signalbox-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "signalbox")
	build := exec.Command("go", "build", "-o", binary, "../cmd/signalbox")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build signalbox:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// gateway is one `signalbox serve` process.
type gateway struct {
	t      *testing.T
	URL    string
	args   []string
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startGateway runs `signalbox serve` on a free port with the given bus (""
// leaves --bus out) and config and waits until /readyz answers 200. extra
// flags are appended.
func startGateway(t *testing.T, busURL, configPath string, extra ...string) *gateway {
	t.Helper()
	g := &gateway{t: t, logs: &syncBuffer{}}
	addr := freeAddr(t)
	g.URL = "http://" + addr
	g.args = []string{"serve", "--addr", addr, "--config", configPath, "--replica-id", "e2e", "--log-level", "debug"}
	if busURL != "" {
		g.args = append(g.args, "--bus", busURL)
	}
	g.args = append(g.args, extra...)
	t.Cleanup(func() {
		g.Kill()
		if t.Failed() {
			t.Logf("gateway logs:\n%s", g.logs.String())
		}
	})
	g.start()
	return g
}

func (g *gateway) start() {
	g.t.Helper()
	g.cmd = exec.Command(binary, g.args...)
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(g.cmd, g.exited)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(g.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-g.exited:
			g.t.Fatalf("gateway exited before it was ready:\n%s", g.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("gateway not ready after 20s:\n%s", g.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill ends the process with SIGKILL, as a crash would.
func (g *gateway) Kill() {
	if g.cmd == nil || g.cmd.Process == nil {
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.exited
}

// Stop sends SIGTERM and waits for a graceful exit.
func (g *gateway) Stop() {
	g.t.Helper()
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(30 * time.Second):
		g.t.Fatalf("gateway did not stop within 30s of SIGTERM")
	}
}

// Restart starts the process again with the same flags and port.
func (g *gateway) Restart() {
	g.t.Helper()
	g.start()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// bus is a bus the durability tests run on: its --bus value and extra flags.
type bus struct {
	name  string
	start func(t *testing.T) (url string, extra []string)
}

// buses are every kind of bus signalbox runs on. Redis keeps an fsynced AOF so
// that it, too, survives the crashes these tests cause.
var buses = []bus{
	{"redis", func(t *testing.T) (string, []string) {
		return redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always").URL(), nil
	}},
	{"embedded", func(t *testing.T) (string, []string) {
		return "", []string{"--data-dir", t.TempDir()}
	}},
}

// writeConfig writes YAML to a fresh directory and returns the file's path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "signalbox.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// received is one request a recorder got.
type received struct {
	At     time.Time
	Header http.Header
	Body   []byte
	Event  *event.Event // nil when the request was not a CloudEvent
}

// recorder is a subscriber that records every request and answers with
// respond (200 when nil).
type recorder struct {
	*httptest.Server
	mu      sync.Mutex
	got     []received
	notify  chan struct{}
	respond func(n int, r received, w http.ResponseWriter)
}

func newRecorder(t *testing.T, respond func(n int, r received, w http.ResponseWriter)) *recorder {
	t.Helper()
	rec := &recorder{notify: make(chan struct{}, 1), respond: respond}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got := received{At: time.Now(), Header: r.Header.Clone(), Body: body}
		if events, err := cloudevent.Parse(r.Header, body); err == nil && len(events) == 1 {
			got.Event = events[0]
		}
		rec.mu.Lock()
		n := len(rec.got)
		rec.got = append(rec.got, got)
		rec.mu.Unlock()
		select {
		case rec.notify <- struct{}{}:
		default:
		}
		if rec.respond != nil {
			rec.respond(n, got, w)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rec.Close)
	return rec
}

// All returns a copy of what was received so far.
func (r *recorder) All() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

// WaitFor waits until at least n requests arrived or the timeout passes, and
// returns what arrived.
func (r *recorder) WaitFor(t *testing.T, n int, timeout time.Duration) []received {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if got := r.All(); len(got) >= n {
			return got
		}
		select {
		case <-r.notify:
		case <-deadline:
			got := r.All()
			t.Fatalf("%s received %d requests, want %d", r.URL, len(got), n)
			return got
		}
	}
}

// Quiet asserts that no more than n requests arrive within d.
func (r *recorder) Quiet(t *testing.T, n int, d time.Duration) []received {
	t.Helper()
	time.Sleep(d)
	got := r.All()
	if len(got) > n {
		t.Fatalf("%s received %d requests, want %d", r.URL, len(got), n)
	}
	return got
}

// ids returns the CloudEvent ids of what was received, in order.
func ids(got []received) []string {
	out := make([]string, 0, len(got))
	for _, g := range got {
		if g.Event != nil {
			out = append(out, g.Event.ID())
		} else {
			out = append(out, "<not a cloudevent>")
		}
	}
	return out
}

// postEvent posts a binary-mode event and returns the status code.
func postEvent(t *testing.T, url string, header map[string]string, body string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, strings.NewReader(body))
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
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Logf("POST %s: %d %s", url, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// ce builds binary-mode headers for an event with the given id and type,
// plus extra header pairs.
func ce(id, typ string, kv ...string) map[string]string {
	h := map[string]string{"ce-specversion": "1.0", "ce-id": id, "ce-source": "/e2e", "ce-type": typ,
		"content-type": "application/json"}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = kv[i+1]
	}
	return h
}
