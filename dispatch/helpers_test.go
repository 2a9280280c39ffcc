package dispatch

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	duckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/pkg/apis"
	pkgduckv1 "knative.dev/pkg/apis/duck/v1"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/broker/redisbus"
	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/config"
	"github.com/signalbox-dev/signalbox/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	ns    = "default"
	bname = "default"
	topic = ns + "/" + bname
)

// newBus starts a redis-server for the test and returns a bus on it.
func newBus(t *testing.T) *redisbus.Bus {
	t.Helper()
	bus, _ := newBusServer(t)
	return bus
}

// newBusServer is newBus that also returns the redis-server.
func newBusServer(t *testing.T) (*redisbus.Bus, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bus, err := redisbus.New(ctx, redisbus.Config{URL: srv.URL(), TrimInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	return bus, srv
}

// testLogger logs to the test output when SIGNALBOX_TEST_LOG is set.
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("SIGNALBOX_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// newDispatcher returns a dispatcher closed when the test ends, before the
// bus. cfg's Bus, Logger, Metrics and HTTPClient are filled in when unset.
func newDispatcher(t *testing.T, cfg Config) (*Dispatcher, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if cfg.ReplicaID == "" {
		cfg.ReplicaID = "replica-a"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	cfg.Metrics = reg
	if cfg.HTTPClient == nil {
		c := &http.Client{
			Transport:     http.DefaultTransport.(*http.Transport).Clone(),
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		t.Cleanup(c.CloseIdleConnections)
		cfg.HTTPClient = c
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = d.Close(ctx)
	})
	return d, reg
}

func apply(t *testing.T, d *Dispatcher, snap *config.Snapshot) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Apply(ctx, snap); err != nil {
		t.Fatal(err)
	}
}

// newEvent returns an event as a sender would post it.
func newEvent(id, typ, data string) *event.Event {
	e := event.New("1.0")
	e.SetID(id)
	e.SetSource("/s")
	e.SetType(typ)
	if data != "" {
		e.SetDataContentType("application/json")
		e.DataEncoded = []byte(data)
	}
	return &e
}

// publish does what the ingress does and appends the events to the topic.
func publish(t *testing.T, bus broker.Bus, evs ...*event.Event) {
	t.Helper()
	payloads := make([][]byte, 0, len(evs))
	for _, e := range evs {
		if err := cloudevent.PrepareIngress(e, time.Now()); err != nil {
			t.Fatal(err)
		}
		b, err := cloudevent.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, b)
	}
	if err := bus.Publish(context.Background(), topic, payloads...); err != nil {
		t.Fatal(err)
	}
}

func snapshot(brokerDelivery *duckv1.DeliverySpec, triggers ...config.Trigger) *config.Snapshot {
	return &config.Snapshot{
		Brokers: []config.Broker{{Object: &eventingv1.Broker{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: bname},
			Spec:       eventingv1.BrokerSpec{Delivery: brokerDelivery},
		}}},
		Triggers: triggers,
	}
}

func trigger(name, uri string, change func(*eventingv1.TriggerSpec)) config.Trigger {
	u, err := apis.ParseURL(uri)
	if err != nil {
		panic(err)
	}
	tr := &eventingv1.Trigger{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: eventingv1.TriggerSpec{
			Broker:     bname,
			Subscriber: pkgduckv1.Destination{URI: u},
		},
	}
	if change != nil {
		change(&tr.Spec)
	}
	return config.Trigger{Object: tr}
}

func sensor(name string, dep config.Dependency, triggers ...config.SensorTrigger) config.Sensor {
	return config.Sensor{
		APIVersion: config.SignalboxV1Alpha1,
		Kind:       config.KindSensor,
		Metadata:   config.ObjectMeta{Name: name, Namespace: ns},
		Spec:       config.SensorSpec{Broker: bname, Dependencies: []config.Dependency{dep}, Triggers: triggers},
	}
}

func ptr[T any](v T) *T { return &v }

// deliverySpec is a delivery with retries and a backoff delay.
func deliverySpec(retry int32, delay string) *duckv1.DeliverySpec {
	return &duckv1.DeliverySpec{Retry: &retry, BackoffDelay: &delay}
}

func dls(uri string) *pkgduckv1.Destination {
	u, err := apis.ParseURL(uri)
	if err != nil {
		panic(err)
	}
	return &pkgduckv1.Destination{URI: u}
}

// received is one request a recorder got.
type received struct {
	at     time.Time
	path   string
	header http.Header
	ev     *event.Event
	err    error // why the request is not a valid CloudEvent
}

// response is what a recorder answers.
type response struct {
	status int
	header map[string]string
	body   string
	// delay is how long to wait before answering; the wait ends early when
	// the client goes away.
	delay time.Duration
}

// recorder is an HTTP subscriber that records CloudEvents and answers with
// respond(event, n), n being the 1-based count of requests for the event id.
type recorder struct {
	srv     *httptest.Server
	respond func(ev *event.Event, n int) response

	mu       sync.Mutex
	reqs     []received
	inFlight map[string]int
	overlaps []string // ids received while a request for the same id was in flight
	answered int      // requests answered (not cut short by the client)
}

func newRecorder(t *testing.T, respond func(ev *event.Event, n int) response) *recorder {
	t.Helper()
	if respond == nil {
		respond = func(*event.Event, int) response { return response{status: http.StatusOK} }
	}
	r := &recorder{respond: respond, inFlight: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) URL() string { return r.srv.URL + "/" }

func (r *recorder) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	rec := received{at: time.Now(), path: req.URL.Path, header: req.Header.Clone()}
	evs, err := cloudevent.Parse(req.Header, body)
	if err == nil {
		rec.ev = evs[0]
	} else {
		rec.err = err
		rec.ev = newEvent("invalid", "invalid", "")
	}
	id := rec.ev.ID()

	r.mu.Lock()
	r.reqs = append(r.reqs, rec)
	n := 0
	for _, x := range r.reqs {
		if x.ev.ID() == id {
			n++
		}
	}
	if r.inFlight[id] > 0 {
		r.overlaps = append(r.overlaps, id)
	}
	r.inFlight[id]++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inFlight[id]--
		r.mu.Unlock()
	}()

	resp := r.respond(rec.ev, n)
	if resp.delay > 0 {
		select {
		case <-time.After(resp.delay):
		case <-req.Context().Done():
			return
		}
	}
	for k, v := range resp.header {
		w.Header().Set(k, v)
	}
	if resp.status == 0 {
		resp.status = http.StatusOK
	}
	w.WriteHeader(resp.status)
	_, _ = io.WriteString(w, resp.body)
	r.mu.Lock()
	r.answered++
	r.mu.Unlock()
}

// answeredCount returns how many requests were answered.
func (r *recorder) answeredCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.answered
}

// all returns the requests received so far.
func (r *recorder) all() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.reqs...)
}

// of returns the requests received for an event id.
func (r *recorder) of(id string) []received {
	var out []received
	for _, x := range r.all() {
		if x.ev.ID() == id {
			out = append(out, x)
		}
	}
	return out
}

func (r *recorder) ids() []string {
	var out []string
	for _, x := range r.all() {
		out = append(out, x.ev.ID())
	}
	return out
}

// eventually fails the test when cond does not hold within d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metric returns the value of the counter or gauge name with the given labels
// (a subset), summed over the matching series.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func deadLetters(t *testing.T, bus broker.Bus, group string) []broker.DeadLetter {
	t.Helper()
	dl, err := bus.DeadLetters(context.Background(), topic, group, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	return dl
}
