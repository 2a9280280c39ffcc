package config

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// configWith returns a valid configuration whose only trigger delivers to uri.
func configWith(uri string) string {
	return fmt.Sprintf(`apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec: {subscriber: {uri: %q}}
`, uri)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// logBuffer collects log output from the watcher's goroutine.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the logs contain every one of parts on one line.
func (b *logBuffer) waitFor(t *testing.T, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(b.String(), "\n") {
			if containsAll(line, parts) {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no log line with %q; logs:\n%s", parts, b.String())
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// startWatcher runs a watcher on paths until the test ends, and returns the
// snapshots it passes to OnChange and its logs.
func startWatcher(t *testing.T, paths ...string) (<-chan *Snapshot, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	changes := make(chan *Snapshot, 16)
	w := &Watcher{
		Paths:    paths,
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnChange: func(s *Snapshot) { changes <- s },
		Debounce: 20 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context was cancelled")
		}
	})
	return changes, logs
}

// expectURI waits for a snapshot whose trigger delivers to uri. A write seen
// half-way may produce an intermediate snapshot, which is skipped.
func expectURI(t *testing.T, changes <-chan *Snapshot, uri string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case s := <-changes:
			if len(s.Triggers) == 1 && s.Triggers[0].Object.Spec.Subscriber.URI.String() == uri {
				return
			}
		case <-timeout:
			t.Fatalf("no snapshot delivering to %s", uri)
		}
	}
}

func expectNoChange(t *testing.T, changes <-chan *Snapshot) {
	t.Helper()
	select {
	case s := <-changes:
		t.Fatalf("unexpected snapshot: %+v", s.Triggers)
	default:
	}
}

func TestWatcherReloadsFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "signalbox.yaml")
	writeFile(t, file, configWith("http://one/"))
	writeFile(t, filepath.Join(dir, "unrelated.yaml"), "not: [yaml")

	changes, logs := startWatcher(t, file)
	expectURI(t, changes, "http://one/")

	// An edit in place.
	writeFile(t, file, configWith("http://two/"))
	expectURI(t, changes, "http://two/")

	// An editor's save: write a temporary file, rename it over the old one.
	tmp := filepath.Join(dir, ".signalbox.yaml.swp")
	writeFile(t, tmp, configWith("http://three/"))
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	expectURI(t, changes, "http://three/")

	// A broken edit is logged with its position and changes nothing.
	writeFile(t, file, configWith("http://four/")+"status: \"unterminated\n")
	logs.waitFor(t, "level=ERROR", "config reload failed", "file="+file, "line=9", "invalid YAML")
	expectNoChange(t, changes)

	// Rewriting the same content as last applied is not a change.
	writeFile(t, file, configWith("http://three/"))
	logs.waitFor(t, "config files unchanged")
	expectNoChange(t, changes)

	// Once fixed, the new content is applied.
	writeFile(t, file, configWith("http://four/"))
	expectURI(t, changes, "http://four/")
}

func TestWatcherInvalidConfigKeepsPrevious(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "signalbox.yaml")
	writeFile(t, file, configWith("http://one/"))

	changes, logs := startWatcher(t, dir)
	expectURI(t, changes, "http://one/")

	// Valid YAML, invalid configuration: the field error is logged.
	writeFile(t, file, strings.Replace(configWith("http://two/"), "uri:", "url:", 1))
	logs.waitFor(t, "level=ERROR", "file="+file, "line=8", `object="Trigger default/t"`,
		"field=spec.subscriber.url", `unknown field \"url\"`)
	expectNoChange(t, changes)

	// A new file in the watched directory is picked up.
	writeFile(t, file, configWith("http://two/"))
	expectURI(t, changes, "http://two/")
	writeFile(t, filepath.Join(dir, "more.yaml"), `apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: more}
`)
	select {
	case s := <-changes:
		if len(s.Brokers) != 2 {
			t.Errorf("got %d brokers, want 2", len(s.Brokers))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("new file not loaded")
	}
}

// TestWatcherConfigMap mimics how the kubelet updates a mounted ConfigMap:
// the files are links through "..data" into a timestamped directory, and an
// update swaps the "..data" link by renaming a new link over it.
func TestWatcherConfigMap(t *testing.T) {
	for _, mode := range []string{"directory", "file"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			publish := func(version, uri string) {
				t.Helper()
				data := filepath.Join(dir, "..2026_01_01_"+version)
				if err := os.Mkdir(data, 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(data, "signalbox.yaml"), configWith(uri))
				tmp := filepath.Join(dir, "..data_tmp")
				if err := os.Symlink(filepath.Base(data), tmp); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
					t.Fatal(err)
				}
			}
			publish("1", "http://one/")
			link := filepath.Join(dir, "signalbox.yaml")
			if err := os.Symlink(filepath.Join("..data", "signalbox.yaml"), link); err != nil {
				t.Fatal(err)
			}

			path := dir
			if mode == "file" {
				path = filepath.Join(dir, "signalbox.yaml")
			}
			changes, _ := startWatcher(t, path)
			expectURI(t, changes, "http://one/")

			publish("2", "http://two/")
			if err := os.RemoveAll(filepath.Join(dir, "..2026_01_01_1")); err != nil {
				t.Fatal(err)
			}
			expectURI(t, changes, "http://two/")
		})
	}
}

func TestWatcherFirstLoadFails(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "signalbox.yaml")
	writeFile(t, file, "kind: Nope\napiVersion: x/v1\n")
	called := false
	w := &Watcher{Paths: []string{file}, OnChange: func(*Snapshot) { called = true }}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := w.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), `unknown kind "Nope"`) {
		t.Errorf("Run = %v, want the load error", err)
	}
	if called {
		t.Error("OnChange called for a failed load")
	}
}
