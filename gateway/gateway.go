// Package gateway is signalbox's HTTP front door: the Knative-compatible
// broker ingress (POST /{namespace}/{broker}), the health and readiness
// probes and the Prometheus endpoint.
package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/cloudevent"
)

// DefaultMaxBodyBytes is the largest request body the ingress reads when
// Config.MaxBodyBytes is zero.
const DefaultMaxBodyBytes = 1 << 20

// Config configures a Server.
type Config struct {
	// Bus stores accepted events. Required.
	Bus broker.Bus
	// MaxBodyBytes is the largest request body accepted; larger requests get
	// 413. Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// PublishTimeout bounds how long a request waits for the bus before it is
	// answered 503. Zero means 10s.
	PublishTimeout time.Duration
	// Webhooks, when set, serves POST /webhooks/{namespace}/{source}: the
	// endpoints of webhook event sources. Nil answers 404 there.
	Webhooks http.Handler
	// Ready reports whether the rest of the process is ready (config loaded,
	// every trigger's group in place). Nil means always ready.
	Ready func() bool
	// Logger receives lifecycle and per-request debug logs. Nil discards.
	Logger *slog.Logger
	// Registry receives the gateway's metrics and is served at /metrics. Nil
	// means a new registry.
	Registry *prometheus.Registry
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

func (c *Config) validate() error {
	if c.Bus == nil {
		return errors.New("gateway: Config.Bus is required")
	}
	if c.MaxBodyBytes < 0 {
		return errors.New("gateway: Config.MaxBodyBytes must not be negative")
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.Ready == nil {
		c.Ready = func() bool { return true }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Server serves the ingress. It is safe for concurrent use; SetBrokers may be
// called at any time to change which brokers exist.
type Server struct {
	cfg     Config
	brokers atomic.Pointer[map[string]prometheus.Counter] // accepted-events counter by "ns/name"
	byCode  sync.Map                                      // int status → requests counter
	bufs    sync.Pool
	handler http.Handler

	requests *prometheus.CounterVec
	events   *prometheus.CounterVec
	latency  prometheus.Histogram
}

// New returns a Server with no brokers.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg}
	s.bufs.New = func() any { return new(bytes.Buffer) }
	empty := map[string]prometheus.Counter{}
	s.brokers.Store(&empty)

	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "signalbox_ingress_requests_total",
		Help: "Ingress requests by HTTP status code.",
	}, []string{"code"})
	s.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "signalbox_ingress_events_total",
		Help: "Events durably accepted by the ingress, by broker.",
	}, []string{"broker"})
	s.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "signalbox_ingress_request_duration_seconds",
		Help:    "Time from request start to response, including the durable write.",
		Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1},
	})
	for _, c := range []prometheus.Collector{s.requests, s.events, s.latency} {
		if err := cfg.Registry.Register(c); err != nil {
			return nil, err
		}
	}

	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { writeText(w, http.StatusOK, "ok") })
	r.Get("/readyz", s.readyz)
	r.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry}))
	if cfg.Webhooks != nil {
		r.Mount("/webhooks", cfg.Webhooks)
	}
	r.Route("/{namespace}/{broker}", func(r chi.Router) {
		r.Post("/", s.ingest)
		r.Options("/", s.options)
		r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Allow", "POST, OPTIONS")
			writeError(w, http.StatusMethodNotAllowed, "method not allowed: use POST")
		})
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such route: "+r.URL.Path)
	})
	s.handler = r
	return s, nil
}

// Handler returns the HTTP handler of every route.
func (s *Server) Handler() http.Handler { return s.handler }

// SetBrokers replaces the set of brokers that accept events; each is named
// "namespace/name".
func (s *Server) SetBrokers(names []string) {
	m := make(map[string]prometheus.Counter, len(names))
	for _, n := range names {
		m[n] = s.events.WithLabelValues(n)
	}
	s.brokers.Store(&m)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Ready() {
		writeError(w, http.StatusServiceUnavailable, "not ready: configuration or consumer groups not in place")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Bus.Ping(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not ready: bus unreachable: "+err.Error())
		return
	}
	writeText(w, http.StatusOK, "ok")
}

// options answers the CloudEvents webhook abuse-protection handshake.
func (s *Server) options(w http.ResponseWriter, r *http.Request) {
	if topic := chi.URLParam(r, "namespace") + "/" + chi.URLParam(r, "broker"); (*s.brokers.Load())[topic] == nil {
		writeError(w, http.StatusNotFound, "no broker "+topic)
		return
	}
	h := w.Header()
	h.Set("Allow", "POST, OPTIONS")
	if origin := r.Header.Get("WebHook-Request-Origin"); origin != "" {
		h.Set("WebHook-Allowed-Origin", origin)
		h.Set("WebHook-Allowed-Rate", "*")
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) ingest(w http.ResponseWriter, r *http.Request) {
	start := s.cfg.Now()
	code := s.serveIngest(w, r)
	s.requestCounter(code).Inc()
	s.latency.Observe(time.Since(start).Seconds())
}

// serveIngest handles one ingress request and returns the status it wrote.
func (s *Server) serveIngest(w http.ResponseWriter, r *http.Request) int {
	topic := chi.URLParam(r, "namespace") + "/" + chi.URLParam(r, "broker")
	accepted := (*s.brokers.Load())[topic]
	if accepted == nil {
		return writeError(w, http.StatusNotFound, "no broker "+topic)
	}

	buf := s.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer s.bufs.Put(buf)
	if status, msg := s.readBody(w, r, buf); status != 0 {
		return writeError(w, status, msg)
	}

	events, err := cloudevent.Parse(r.Header, buf.Bytes())
	if err != nil {
		var ce *cloudevent.Error
		if errors.As(err, &ce) {
			return writeError(w, ce.Status, ce.Msg)
		}
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	payloads, status, msg := s.encode(events)
	if status != 0 {
		return writeError(w, status, msg)
	}

	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.PublishTimeout)
	defer cancel()
	if err := s.cfg.Bus.Publish(ctx, topic, payloads...); err != nil {
		w.Header().Set("Retry-After", "1")
		if errors.Is(err, broker.ErrBackpressure) {
			return writeError(w, http.StatusTooManyRequests, "broker "+topic+" is at its retention limit; retry later")
		}
		s.cfg.Logger.Warn("publish failed", "broker", topic, "err", err)
		return writeError(w, http.StatusServiceUnavailable, "event bus unavailable; retry later")
	}
	accepted.Add(float64(len(events)))
	if s.cfg.Logger.Enabled(r.Context(), slog.LevelDebug) {
		for _, e := range events {
			s.cfg.Logger.Debug("event accepted", "broker", topic, "event_id", e.ID(), "event_type", e.Type(),
				"event_source", e.Source())
		}
	}
	w.WriteHeader(http.StatusAccepted)
	return http.StatusAccepted
}

// requestCounter returns the requests counter of a status code, created once,
// so the hot path neither formats the code nor looks up its labels.
func (s *Server) requestCounter(code int) prometheus.Counter {
	if c, ok := s.byCode.Load(code); ok {
		return c.(prometheus.Counter)
	}
	c, _ := s.byCode.LoadOrStore(code, s.requests.WithLabelValues(strconv.Itoa(code)))
	return c.(prometheus.Counter)
}

// readBody reads the request body into buf, refusing bodies over the limit.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) (int, string) {
	limit := s.cfg.MaxBodyBytes
	tooLarge := func() string { return "request body exceeds " + strconv.FormatInt(limit, 10) + " bytes" }
	if r.ContentLength > limit {
		return http.StatusRequestEntityTooLarge, tooLarge()
	}
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return http.StatusRequestEntityTooLarge, tooLarge()
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return http.StatusBadRequest, "request body ended early"
		}
		return http.StatusBadRequest, "reading request body: " + err.Error()
	}
	return 0, ""
}

// encode applies the ingress rules to every event and encodes them for the
// bus. One bad event refuses the whole request.
func (s *Server) encode(events []*event.Event) ([][]byte, int, string) {
	now := s.cfg.Now()
	payloads := make([][]byte, len(events))
	for i, e := range events {
		if err := cloudevent.PrepareIngress(e, now); err != nil {
			if errors.Is(err, cloudevent.ErrTTLExpired) {
				return nil, http.StatusBadRequest, "event " + e.ID() + ": " + err.Error() + " (a reply loop?)"
			}
			return nil, http.StatusBadRequest, err.Error()
		}
		b, err := cloudevent.Marshal(e)
		if err != nil {
			return nil, http.StatusBadRequest, err.Error()
		}
		payloads[i] = b
	}
	return payloads, 0, ""
}

func writeError(w http.ResponseWriter, status int, msg string) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
	return status
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}
