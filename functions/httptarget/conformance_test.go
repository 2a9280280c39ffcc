package httptarget

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/functions/functionstest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	functionstest.Run(t, functionstest.Harness{Start: startHTTP})
}

// startHTTP serves the scenario as a Knative subscriber would answer.
func startHTTP(t *testing.T, s functionstest.Scenario, _ *slog.Logger) functionstest.Fixture {
	var rec functionstest.Recorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch s.Case {
		case functionstest.Success:
			if evs, err := cloudevent.Parse(r.Header, body); err == nil {
				rec.Add(evs[0].ID())
			}
			w.WriteHeader(http.StatusAccepted)
		case functionstest.Reply:
			if evs, err := cloudevent.Parse(r.Header, body); err == nil {
				rec.Add(evs[0].ID())
			}
			b, _ := cloudevent.MarshalStructured(s.Reply)
			w.Header().Set("Content-Type", cloudevent.MediaStructuredJSON)
			_, _ = w.Write(b)
		case functionstest.Retryable:
			http.Error(w, "database unavailable", http.StatusInternalServerError)
		case functionstest.RetryAfter:
			w.Header().Set("Retry-After", strconv.Itoa(int(s.RetryAfter.Seconds())))
			http.Error(w, "slow down", http.StatusTooManyRequests)
		case functionstest.Permanent:
			http.Error(w, "order field missing", http.StatusUnprocessableEntity)
		case functionstest.Timeout:
			<-r.Context().Done()
		}
	}))
	t.Cleanup(srv.Close)
	return functionstest.Fixture{Target: newTarget(t, Config{URL: srv.URL}), Received: rec.IDs}
}
