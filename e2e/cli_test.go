package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// --broker-capacity reaches the bus: once the slowest trigger is that far
// behind, the ingress answers 429 with Retry-After, on every bus.
func TestBrokerCapacityPushesBack(t *testing.T) {
	t.Parallel()
	for _, b := range buses {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			stuck := newRecorder(t, func(_ int, _ received, w http.ResponseWriter) {
				w.WriteHeader(http.StatusServiceUnavailable)
			})
			cfg := writeConfig(t, brokerYAML+fmt.Sprintf(`
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: stuck, namespace: default}
spec:
  broker: default
  subscriber: {uri: %s}
  delivery: {retry: 100, backoffDelay: PT10S}
`, stuck.URL))
			url, extra := b.start(t)
			gw := startGateway(t, url, cfg, append(extra, "--broker-capacity", "5")...)

			deadline := time.Now().Add(10 * time.Second)
			for i := 0; ; i++ {
				req, _ := http.NewRequest(http.MethodPost, gw.URL+"/default/default", strings.NewReader("{}"))
				for k, v := range ce(fmt.Sprintf("c-%d", i), "x") {
					req.Header.Set(k, v)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusTooManyRequests {
					if resp.Header.Get("Retry-After") == "" {
						t.Fatal("429 without Retry-After")
					}
					if i < 5 {
						t.Fatalf("pushed back after %d events, below the capacity of 5", i)
					}
					return
				}
				if resp.StatusCode != http.StatusAccepted {
					t.Fatalf("post %d: %d", i, resp.StatusCode)
				}
				if time.Now().After(deadline) {
					t.Fatalf("no 429 after %d undelivered events with --broker-capacity 5", i+1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// `signalbox validate` exits 1 with one file:line line per problem, and 0 on
// a good config.
func TestValidateCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(brokerYAML+`
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: default}
spec:
  subscribr: {uri: http://x/}
  delivery: {backoffDelay: 5s}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "validate", bad).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("validate of a bad file: %v\n%s", err, out)
	}
	for _, want := range []string{bad + ":11: Trigger default/t: spec.subscribr", bad + ":12: Trigger default/t: spec.delivery.backoffDelay"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	good := writeConfig(t, brokerYAML)
	if out, err := exec.Command(binary, "validate", good).CombinedOutput(); err != nil ||
		!strings.HasPrefix(string(out), "ok: 1 broker(s)") {
		t.Fatalf("validate of a good file: %v\n%s", err, out)
	}
}
