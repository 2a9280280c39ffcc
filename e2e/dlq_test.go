package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/internal/redistest"
)

// Dead letters are kept in the bus even without a deadLetterSink, and
// `signalbox dlq` lists and replays them.
func TestDeadLetterListAndReplay(t *testing.T) {
	t.Parallel()
	sub := newRecorder(t, func(n int, _ received, w http.ResponseWriter) {
		if n == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("down for maintenance"))
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	cfg := writeConfig(t, brokerYAML+fmt.Sprintf(`
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: once, namespace: default}
spec:
  broker: default
  subscriber: {uri: %s}
  delivery: {retry: 0}
`, sub.URL))
	redis := redistest.Start(t)
	gw := startGateway(t, redis.URL(), cfg)
	postEvent(t, gw.URL+"/default/default", ce("d-1", "x"), `{"n":1}`)
	sub.WaitFor(t, 1, 10*time.Second)

	var line struct {
		ID, Destination, Reason string
		Code, Attempts          int
		Event                   map[string]any
	}
	waitUntil(t, 10*time.Second, func() bool {
		out, err := exec.Command(binary, "dlq", "list", "--bus", redis.URL(), "--trigger", "once").CombinedOutput()
		if err != nil {
			t.Fatalf("dlq list: %v\n%s", err, out)
		}
		return json.Unmarshal(out, &line) == nil
	})
	if line.Code != 500 || line.Attempts != 1 || line.Destination != sub.URL || line.Event["id"] != "d-1" ||
		!strings.Contains(line.Reason, "500") {
		t.Fatalf("dead letter = %+v", line)
	}

	out, err := exec.Command(binary, "dlq", "replay", "--bus", redis.URL(), "--trigger", "once").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "1 dead letter(s) replayed") {
		t.Fatalf("dlq replay: %v\n%s", err, out)
	}
	got := sub.WaitFor(t, 2, 10*time.Second)
	if got[1].Event == nil || got[1].Event.ID() != "d-1" || string(got[1].Body) != `{"n":1}` {
		t.Fatalf("replayed delivery = %+v", got[1])
	}
}
