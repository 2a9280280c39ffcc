package e2e

import (
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/internal/redistest"
)

func triggerYAML(name, uri string) string {
	return fmt.Sprintf(`
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: %s, namespace: default}
spec:
  broker: default
  subscriber: {uri: %s}
  delivery: {retry: 20, backoffDelay: PT0.05S}
`, name, uri)
}

// Every event that got a 202 is delivered at least once even when the
// gateway is killed with SIGKILL while senders post and deliveries are in
// flight.
func TestSIGKILLLosesNoAcceptedEvent(t *testing.T) {
	t.Parallel()
	for _, b := range buses {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			testSIGKILL(t, b)
		})
	}
}

func testSIGKILL(t *testing.T, b bus) {
	var delivered sync.Map
	sub := newRecorder(t, func(_ int, r received, w http.ResponseWriter) {
		time.Sleep(2 * time.Millisecond) // keep deliveries in flight
		if r.Event != nil {
			delivered.Store(r.Event.ID(), true)
		}
		w.WriteHeader(http.StatusOK)
	})
	cfg := writeConfig(t, brokerYAML+triggerYAML("all", sub.URL))
	url, extra := b.start(t)
	gw := startGateway(t, url, cfg, append(extra, "--lease", "2s")...)

	var (
		accepted sync.Map
		count    atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	client := &http.Client{Timeout: 5 * time.Second}
	for s := 0; s < 8; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("k-%d-%d", s, i)
				req, _ := http.NewRequest(http.MethodPost, gw.URL+"/default/default", nil)
				for k, v := range ce(id, "crash") {
					req.Header.Set(k, v)
				}
				resp, err := client.Do(req)
				if err != nil {
					time.Sleep(20 * time.Millisecond) // the gateway is down
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusAccepted {
					accepted.Store(id, true)
					count.Add(1)
				}
			}
		}()
	}

	waitUntil(t, 10*time.Second, func() bool { return count.Load() >= 300 })
	gw.Kill()
	killedAt := count.Load()
	gw.Restart()
	waitUntil(t, 10*time.Second, func() bool { return count.Load() >= killedAt+300 })
	stop.Store(true)
	wg.Wait()

	var missing []string
	waitUntil(t, 30*time.Second, func() bool {
		missing = missing[:0]
		accepted.Range(func(k, _ any) bool {
			if _, ok := delivered.Load(k); !ok {
				missing = append(missing, k.(string))
			}
			return true
		})
		return len(missing) == 0
	})
	t.Logf("%d events accepted, all delivered", count.Load())
}

// Events accepted while the subscriber is down are delivered after a SIGTERM
// and a restart of the gateway.
func TestGracefulRestartKeepsPendingEvents(t *testing.T) {
	t.Parallel()
	for _, b := range buses {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			testGracefulRestart(t, b)
		})
	}
}

func testGracefulRestart(t *testing.T, b bus) {
	var (
		up        atomic.Bool
		delivered sync.Map
	)
	sub := newRecorder(t, func(_ int, r received, w http.ResponseWriter) {
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		delivered.Store(r.Event.ID(), true)
		w.WriteHeader(http.StatusOK)
	})
	cfg := writeConfig(t, brokerYAML+triggerYAML("all", sub.URL))
	url, extra := b.start(t)
	gw := startGateway(t, url, cfg, append(extra, "--shutdown-timeout", "2s")...)
	for i := range 20 {
		if code := postEvent(t, gw.URL+"/default/default", ce(fmt.Sprintf("g-%d", i), "x"), `{}`); code != http.StatusAccepted {
			t.Fatalf("post: %d", code)
		}
	}
	sub.WaitFor(t, 20, 10*time.Second) // every event tried at least once
	gw.Stop()
	up.Store(true)
	gw.Restart()

	waitUntil(t, 20*time.Second, func() bool {
		for i := range 20 {
			if _, ok := delivered.Load(fmt.Sprintf("g-%d", i)); !ok {
				return false
			}
		}
		return true
	})
}

// Reloading the config starts new triggers from new events and stops
// removed ones.
func TestConfigReload(t *testing.T) {
	t.Parallel()
	first, second := newRecorder(t, nil), newRecorder(t, nil)
	cfg := writeConfig(t, brokerYAML+triggerYAML("first", first.URL))
	redis := redistest.Start(t)
	gw := startGateway(t, redis.URL(), cfg)

	postEvent(t, gw.URL+"/default/default", ce("before", "x"), `{}`)
	first.WaitFor(t, 1, 10*time.Second)

	// Replace the file atomically, as editors and ConfigMap updates do.
	tmp := cfg + ".tmp"
	if err := os.WriteFile(tmp, []byte(brokerYAML+triggerYAML("second", second.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, cfg); err != nil {
		t.Fatal(err)
	}
	// Post probes until the new trigger sees one: the reload has applied.
	waitUntil(t, 10*time.Second, func() bool {
		postEvent(t, gw.URL+"/default/default", ce(fmt.Sprintf("probe-%d", time.Now().UnixNano()), "x"), `{}`)
		time.Sleep(100 * time.Millisecond)
		return len(second.All()) > 0
	})
	postEvent(t, gw.URL+"/default/default", ce("after", "x"), `{}`)
	waitUntil(t, 10*time.Second, func() bool {
		for _, id := range ids(second.All()) {
			if id == "after" {
				return true
			}
		}
		return false
	})
	for _, id := range ids(second.All()) {
		if id == "before" {
			t.Errorf("new trigger got an event posted before it existed")
		}
	}
	for _, id := range ids(first.All()) {
		if id == "after" {
			t.Errorf("removed trigger still got events")
		}
	}
}

func waitUntil(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
