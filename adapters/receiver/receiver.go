// Package receiver serves the webhook EventSources of a configuration at
// POST /{namespace}/{name} (the gateway mounts it under /webhooks): it
// enforces each source's body limit, lets the source's provider authenticate
// the request and build its events, drops deliveries already stored and
// events the source's filter rejects, and publishes the rest to the source's
// broker, answering 2xx only once the bus has stored them.
package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

	"github.com/signalbox-dev/signalbox/adapters"
	"github.com/signalbox-dev/signalbox/adapters/bitbucket"
	"github.com/signalbox-dev/signalbox/adapters/github"
	"github.com/signalbox-dev/signalbox/adapters/gitlab"
	"github.com/signalbox-dev/signalbox/adapters/slack"
	"github.com/signalbox-dev/signalbox/adapters/stripe"
	"github.com/signalbox-dev/signalbox/adapters/webhook"
	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/config"
	"github.com/signalbox-dev/signalbox/dispatch/celexpr"
)

// Config configures a Receiver.
type Config struct {
	// Bus stores the events. Required.
	Bus broker.Bus
	// PublishTimeout bounds how long a request waits for the bus (and for a
	// concurrent request carrying the same delivery) before it is answered
	// 503. Zero means 10s.
	PublishTimeout time.Duration
	// MaxDeliveries is how many stored delivery ids each source remembers for
	// deduplication; the oldest are forgotten first. Zero means
	// DefaultMaxDeliveries.
	MaxDeliveries int
	// Logger receives a line per request at Debug and Apply's problems.
	// Nil discards.
	Logger *slog.Logger
	// Registerer receives the receiver's metrics. Nil registers them nowhere.
	Registerer prometheus.Registerer
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

func (c *Config) validate() error {
	if c.Bus == nil {
		return errors.New("receiver: Config.Bus is required")
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.MaxDeliveries < 0 {
		return errors.New("receiver: Config.MaxDeliveries must not be negative")
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = DefaultMaxDeliveries
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Receiver is an http.Handler serving POST /{namespace}/{name} for every
// webhook EventSource of the last snapshot applied. It is safe for
// concurrent use; Apply may be called at any time.
type Receiver struct {
	cfg       Config
	router    http.Handler
	endpoints atomic.Pointer[map[string]*endpoint]
	applyMu   sync.Mutex

	requests   *prometheus.CounterVec
	filtered   *prometheus.CounterVec
	duplicates *prometheus.CounterVec
}

var _ http.Handler = (*Receiver)(nil)

// endpoint is one configured source, ready to serve.
type endpoint struct {
	key     string // namespace/name
	topic   string // namespace/broker
	maxBody int64
	filter  *celexpr.Expr // nil keeps every event
	source  adapters.Source
	dedupe  *dedupe // nil: off
	window  time.Duration
}

// New returns a Receiver that serves no source until Apply is called.
func New(cfg Config) (*Receiver, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rc := &Receiver{cfg: cfg}
	empty := map[string]*endpoint{}
	rc.endpoints.Store(&empty)

	rc.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "signalbox_webhook_requests_total",
		Help: `Webhook requests by source ("namespace/name", "unknown" for no such source) and HTTP status.`,
	}, []string{"source", "code"})
	rc.filtered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "signalbox_webhook_filtered_total",
		Help: "Webhook events dropped by their source's filter (answered 2xx, not stored).",
	}, []string{"source"})
	rc.duplicates = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "signalbox_webhook_duplicates_total",
		Help: "Webhook deliveries answered 2xx without being stored again: their delivery id was stored before.",
	}, []string{"source"})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{rc.requests, rc.filtered, rc.duplicates} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("receiver: register metrics: %w", err)
			}
		}
	}

	r := chi.NewRouter()
	r.Post("/{namespace}/{source}", rc.serve)
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, "error", "method not allowed: use POST")
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		rc.requests.WithLabelValues(unknownSource, "404").Inc()
		writeJSON(w, http.StatusNotFound, "error", "no webhook source at this path")
	})
	rc.router = r
	return rc, nil
}

// unknownSource labels requests for paths that name no source, so that
// arbitrary paths cannot create metric series.
const unknownSource = "unknown"

// ServeHTTP implements http.Handler.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) { rc.router.ServeHTTP(w, r) }

// providers build the Source of each provider block.
var providers = map[string]sourceBuilder{
	config.ProviderWebhook:   build(webhook.New),
	config.ProviderGitHub:    build(github.New),
	config.ProviderGitLab:    build(gitlab.New),
	config.ProviderBitbucket: build(bitbucket.New),
	config.ProviderSlack:     build(slack.New),
	config.ProviderStripe:    build(stripe.New),
}

// sourceBuilder builds the Source of one EventSource.
type sourceBuilder func(config.EventSource) (adapters.Source, error)

// build adapts a provider's constructor, keeping a failed one's nil pointer
// out of the interface.
func build[S adapters.Source](newSource func(config.EventSource) (S, error)) sourceBuilder {
	return func(es config.EventSource) (adapters.Source, error) {
		s, err := newSource(es)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

// Apply makes the receiver serve exactly the EventSources of snap. A source
// kept from the previous snapshot with the same dedupe window keeps the
// delivery ids it remembers. A source that cannot be built (the loader
// validated it, so this is unexpected) is left out and reported in the
// error; the others are served.
func (rc *Receiver) Apply(snap *config.Snapshot) error {
	if snap == nil {
		return errors.New("receiver: Apply: nil snapshot")
	}
	rc.applyMu.Lock()
	defer rc.applyMu.Unlock()

	old := *rc.endpoints.Load()
	next := make(map[string]*endpoint, len(snap.EventSources))
	var errs []error
	for _, es := range snap.EventSources {
		ep, err := rc.endpoint(es, old)
		if err != nil {
			errs = append(errs, fmt.Errorf("receiver: EventSource %s/%s: %w", es.Namespace(), es.Name(), err))
			continue
		}
		next[ep.key] = ep
	}
	rc.endpoints.Store(&next)

	for key := range old {
		if next[key] == nil {
			l := prometheus.Labels{"source": key}
			rc.requests.DeletePartialMatch(l)
			rc.filtered.DeletePartialMatch(l)
			rc.duplicates.DeletePartialMatch(l)
		}
	}
	rc.cfg.Logger.Info("webhook sources applied", "sources", len(next))
	return errors.Join(errs...)
}

func (rc *Receiver) endpoint(es config.EventSource, old map[string]*endpoint) (*endpoint, error) {
	newSource, ok := providers[es.Provider()]
	if !ok {
		return nil, fmt.Errorf("no webhook provider %q", es.Provider())
	}
	src, err := newSource(es)
	if err != nil {
		return nil, err
	}
	ep := &endpoint{
		key:     es.Namespace() + "/" + es.Name(),
		topic:   es.Namespace() + "/" + es.Spec.Broker,
		maxBody: es.Spec.MaxPayloadSize,
		source:  src,
		window:  es.Spec.DedupeWindowDuration,
	}
	if ep.maxBody <= 0 {
		ep.maxBody = config.DefaultMaxPayloadSize
	}
	if es.Spec.Filter != "" {
		if ep.filter, err = celexpr.Compile(es.Spec.Filter); err != nil {
			return nil, err
		}
	}
	if ep.window > 0 {
		if prev := old[ep.key]; prev != nil && prev.window == ep.window {
			ep.dedupe = prev.dedupe
		} else {
			ep.dedupe = newDedupe(ep.window, rc.cfg.MaxDeliveries)
		}
	}
	return ep, nil
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) {
	key := chi.URLParam(r, "namespace") + "/" + chi.URLParam(r, "source")
	ep := (*rc.endpoints.Load())[key]
	if ep == nil {
		rc.requests.WithLabelValues(unknownSource, "404").Inc()
		writeJSON(w, http.StatusNotFound, "error", "no webhook source "+key)
		return
	}
	o := rc.handle(w, r, ep)
	rc.requests.WithLabelValues(ep.key, strconv.Itoa(o.status)).Inc()
	if rc.cfg.Logger.Enabled(r.Context(), slog.LevelDebug) {
		attrs := []any{"source", ep.key, "status", o.status, "outcome", o.outcome}
		if o.delivery != "" {
			attrs = append(attrs, "delivery_id", o.delivery)
		}
		for _, e := range o.events {
			attrs = append(attrs, "event_id", e.ID(), "event_type", e.Type())
		}
		if o.err != nil {
			attrs = append(attrs, "err", o.err)
		}
		rc.cfg.Logger.Debug("webhook request", attrs...)
	}
}

// outcome describes how a request was answered, for metrics and the log.
type outcome struct {
	status   int
	outcome  string // stored, duplicate, filtered, handshake, refused, failed
	delivery string
	events   []*event.Event
	err      error
}

// handle serves one request for ep and says how it answered.
func (rc *Receiver) handle(w http.ResponseWriter, r *http.Request, ep *endpoint) outcome {
	body, status, err := readBody(w, r, ep.maxBody)
	if err != nil {
		return outcome{status: writeJSON(w, status, "error", err.Error()), outcome: "refused", err: err}
	}
	res, err := ep.source.Handle(&adapters.Request{Header: r.Header, Body: body, Now: rc.cfg.Now()})
	if err != nil {
		var ae *adapters.Error
		if !errors.As(err, &ae) {
			rc.cfg.Logger.Error("webhook source failed", "source", ep.key, "err", err)
			return outcome{status: writeJSON(w, http.StatusInternalServerError, "error", "internal error"),
				outcome: "failed", err: err}
		}
		return outcome{status: writeJSON(w, ae.Status, "error", ae.Msg), outcome: "refused", err: err}
	}
	o := outcome{delivery: res.DeliveryID, events: res.Events}
	if len(res.Events) == 0 {
		o.status, o.outcome = answer(w, res.Response, http.StatusOK, "ok"), "handshake"
		return o
	}

	ctx, cancel := context.WithTimeout(r.Context(), rc.cfg.PublishTimeout)
	defer cancel()
	if ep.dedupe != nil && res.DeliveryID != "" {
		owned, err := ep.dedupe.claim(ctx, res.DeliveryID, rc.cfg.Now())
		if err != nil {
			w.Header().Set("Retry-After", "1")
			o.status, o.outcome, o.err = writeJSON(w, http.StatusServiceUnavailable, "error",
				"the same delivery is being stored; retry later"), "failed", err
			return o
		}
		if !owned {
			rc.duplicates.WithLabelValues(ep.key).Inc()
			o.status, o.outcome = answer(w, res.Response, http.StatusOK, "duplicate"), "duplicate"
			return o
		}
		stored := false
		defer func() { ep.dedupe.finish(res.DeliveryID, stored, rc.cfg.Now()) }()
		o = rc.publish(ctx, w, ep, res, o)
		// A filtered delivery counts as handled: its retries are dropped too.
		stored = o.outcome == "stored" || o.outcome == "filtered"
		return o
	}
	return rc.publish(ctx, w, ep, res, o)
}

// publish filters, prepares and stores the events of res, then answers.
func (rc *Receiver) publish(ctx context.Context, w http.ResponseWriter, ep *endpoint, res *adapters.Result,
	o outcome) outcome {
	now := rc.cfg.Now()
	payloads := make([][]byte, 0, len(res.Events))
	for _, e := range res.Events {
		if err := cloudevent.PrepareIngress(e, now); err != nil {
			o.status, o.outcome, o.err = writeJSON(w, http.StatusBadRequest, "error", err.Error()), "refused", err
			return o
		}
		if ep.filter != nil {
			match, err := ep.filter.Match(e)
			if err != nil {
				// An expression that cannot be evaluated on this event (a
				// missing field, a type error) does not match it.
				rc.cfg.Logger.Debug("webhook filter did not evaluate", "source", ep.key, "event_id", e.ID(),
					"filter", ep.filter.String(), "err", err)
			}
			if !match {
				rc.filtered.WithLabelValues(ep.key).Inc()
				continue
			}
		}
		b, err := cloudevent.Marshal(e)
		if err != nil {
			o.status, o.outcome, o.err = writeJSON(w, http.StatusBadRequest, "error", err.Error()), "refused", err
			return o
		}
		payloads = append(payloads, b)
	}
	if len(payloads) == 0 {
		o.status, o.outcome = answer(w, res.Response, http.StatusOK, "filtered"), "filtered"
		return o
	}

	if err := rc.cfg.Bus.Publish(ctx, ep.topic, payloads...); err != nil {
		o.err = err
		o.outcome = "failed"
		w.Header().Set("Retry-After", "1")
		if errors.Is(err, broker.ErrBackpressure) {
			o.status = writeJSON(w, http.StatusTooManyRequests, "error",
				"broker "+ep.topic+" is at its retention limit; retry later")
			return o
		}
		rc.cfg.Logger.Warn("webhook publish failed", "source", ep.key, "broker", ep.topic, "err", err)
		o.status = writeJSON(w, http.StatusServiceUnavailable, "error", "event bus unavailable; retry later")
		return o
	}
	o.status, o.outcome = answer(w, res.Response, http.StatusAccepted, "accepted"), "stored"
	return o
}

// readBody reads at most limit bytes of body; a larger body is refused with
// 413 whether or not it announced its length.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, int, error) {
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body exceeds %d bytes", limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body exceeds %d bytes", limit)
		}
		return nil, http.StatusBadRequest, errors.New("reading request body failed")
	}
	return body, 0, nil
}

// answer writes the source's chosen response, or the default: status with a
// small JSON body naming what happened.
func answer(w http.ResponseWriter, resp *adapters.Response, status int, what string) int {
	if resp == nil {
		return writeJSON(w, status, "status", what)
	}
	code := resp.Status
	if code == 0 {
		code = status
	}
	if resp.ContentType != "" {
		w.Header().Set("Content-Type", resp.ContentType)
	}
	w.WriteHeader(code)
	_, _ = w.Write(resp.Body)
	return code
}

func writeJSON(w http.ResponseWriter, status int, key, msg string) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{key: msg})
	return status
}
