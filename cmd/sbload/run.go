package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config is one load run.
type Config struct {
	// URL is the broker ingress events are POSTed to. Required.
	URL string
	// Concurrency is how many requests may be in flight at once, and in a
	// closed-loop run the number of senders. Must be positive.
	Concurrency int
	// Duration is how long new events are sent. Must be positive.
	Duration time.Duration
	// Size is each event's data size in bytes. Zero sends events without data.
	Size int
	// Rate paces an open-loop run in events per second: event i is sent at
	// start + i/Rate whether or not earlier ones were answered. Zero runs
	// closed-loop: each sender posts its next event as soon as the last one
	// is answered.
	Rate float64
	// Listen is where the subscriber that the broker's trigger delivers to
	// listens (host:port; port 0 picks one). Empty runs no subscriber and
	// measures the ingress alone.
	Listen string
	// Drain is how long to wait after the last POST for deliveries still on
	// their way. The wait ends early once every accepted event arrived.
	Drain time.Duration
	// Timeout bounds one POST, answer body included. Must be positive.
	Timeout time.Duration
	// Type and Source are the CloudEvents attributes of every event; both
	// required.
	Type, Source string
}

func (c *Config) validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		return errors.New("-url is required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("-url %q: want an http:// or https:// URL", c.URL)
	case c.Concurrency <= 0:
		return fmt.Errorf("-concurrency %d: must be positive", c.Concurrency)
	case c.Duration <= 0:
		return fmt.Errorf("-duration %s: must be positive", c.Duration)
	case c.Size < 0:
		return fmt.Errorf("-size %d: must not be negative", c.Size)
	case c.Rate < 0:
		return fmt.Errorf("-rate %g: must not be negative", c.Rate)
	case c.Drain < 0:
		return fmt.Errorf("-drain %s: must not be negative", c.Drain)
	case c.Timeout <= 0:
		return fmt.Errorf("-timeout %s: must be positive", c.Timeout)
	case c.Type == "":
		return errors.New("-type must not be empty")
	case c.Source == "":
		return errors.New("-source must not be empty")
	}
	return nil
}

// Report is the outcome of a run; -json prints it as is.
type Report struct {
	RunID       string  `json:"run_id"`
	URL         string  `json:"url"`
	Mode        string  `json:"mode"` // "closed" or "open"
	Rate        float64 `json:"rate,omitempty"`
	Concurrency int     `json:"concurrency"`
	Size        int     `json:"size"`
	Duration    float64 `json:"duration_s"`

	// Sent counts POSTs that got an answer or failed; Accepted those answered
	// 202. Statuses counts every other answer by status code.
	Sent            uint64            `json:"sent"`
	Accepted        uint64            `json:"accepted"`
	Statuses        map[string]uint64 `json:"statuses"`
	TransportErrors uint64            `json:"transport_errors"`
	FirstError      string            `json:"first_error,omitempty"`
	// SendSeconds runs from the first POST's start to the last answer.
	SendSeconds    float64 `json:"send_s"`
	AcceptedPerSec float64 `json:"accepted_per_s"`
	// PostLatency is from a POST's start to its 202, accepted events only.
	PostLatency Summary `json:"post_latency"`
	// StartLag is, in an open-loop run, how late each POST started against its
	// slot; about a millisecond is timer granularity, more means the senders
	// could not keep the rate.
	StartLag Summary `json:"start_lag"`

	SubscriberURL string `json:"subscriber_url,omitempty"`
	// Delivered counts distinct events of this run that reached the
	// subscriber; Foreign counts deliveries that were not of this run.
	Delivered uint64 `json:"delivered"`
	Foreign   uint64 `json:"foreign"`
	// SubscriberConns counts connections the subscriber accepted; far more
	// than the deliveries in flight means the broker does not keep them alive.
	SubscriberConns uint64 `json:"subscriber_conns"`
	// DeliverySeconds runs from the first POST's start to the last first
	// delivery.
	DeliverySeconds float64 `json:"delivery_s"`
	DeliveredPerSec float64 `json:"delivered_per_s"`
	// EndToEnd is from an event's release for sending (its sbloadsent
	// extension: the POST's start in a closed loop; in an open loop its slot,
	// or up to the timer granularity later) to its first delivery.
	EndToEnd Summary `json:"end_to_end"`
	Reconciliation
	DrainSeconds float64 `json:"drain_s"`

	// ClientCPUSeconds is this process's user+system CPU, so a reader can see
	// how much of a shared machine the load itself took.
	ClientCPUSeconds float64 `json:"client_cpu_s"`
}

// Verified reports whether the run proved the pipeline end to end: something
// was accepted and, with a subscriber, every accepted event arrived.
func (r *Report) Verified() bool {
	if r.Accepted == 0 {
		return false
	}
	return r.SubscriberURL == "" || r.Missing == 0
}

// run is the shared state of one load run. Senders and the subscriber's
// handler update it concurrently.
type run struct {
	cfg     Config
	log     *slog.Logger
	id      string
	prefix  string // id + "-": every event id of this run starts with it
	clock   clock
	client  *http.Client
	payload []byte
	hdr     struct{ specversion, typ, source, ctype []string }

	accepted, delivered tracker

	issued        atomic.Uint64 // sequence numbers handed to senders
	statuses      [600]atomic.Uint64
	transportErrs atomic.Uint64
	firstErr      sync.Once
	firstErrMsg   string
	lastAnswer    atomic.Int64 // unix ns

	conns        atomic.Uint64
	unique       atomic.Uint64
	foreign      atomic.Uint64
	lastDelivery atomic.Int64 // unix ns
	e2eMu        sync.Mutex
	e2e          []time.Duration
}

// workerStats are one sender's latencies, merged after the senders stop so
// recording needs no lock.
type workerStats struct {
	post, lag []time.Duration
}

// Run sends load as cfg says, waits for deliveries and returns the report.
// Cancelling ctx stops sending and draining early; the report then covers
// what happened until then.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var ln net.Listener
	if cfg.Listen != "" {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("-listen %s: %w", cfg.Listen, err)
		}
	}
	return runOn(ctx, cfg, ln, log)
}

// runOn is Run with the subscriber's listener already open (nil: no
// subscriber). It closes ln.
func runOn(ctx context.Context, cfg Config, ln net.Listener, log *slog.Logger) (*Report, error) {
	r, err := newRun(cfg, log)
	if err != nil {
		if ln != nil {
			_ = ln.Close()
		}
		return nil, err
	}
	defer r.client.CloseIdleConnections()

	var subURL string
	if ln != nil {
		srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, ConnState: r.connState}
		go func() { _ = srv.Serve(ln) }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		subURL = "http://" + ln.Addr().String() + "/"
		log.Info("subscriber listening", "url", subURL)
	}

	cpu0 := cpuTime()
	log.Info("sending", "run_id", r.id, "url", cfg.URL, "concurrency", cfg.Concurrency, "duration", cfg.Duration,
		"rate", cfg.Rate, "size", cfg.Size)
	start, workers := r.send(ctx)
	sent := r.issued.Load()

	drainStart := time.Now()
	if subURL != "" {
		log.Info("draining", "accepted", r.statuses[http.StatusAccepted].Load(), "delivered", r.unique.Load(),
			"max_wait", cfg.Drain)
		r.drain(ctx, sent)
	}
	rep := r.report(start, workers, sent)
	rep.SubscriberURL = subURL
	rep.DrainSeconds = time.Since(drainStart).Seconds()
	rep.ClientCPUSeconds = (cpuTime() - cpu0).Seconds()
	log.Info("done", "accepted", rep.Accepted, "delivered", rep.Delivered, "missing", rep.Missing)
	return rep, nil
}

func newRun(cfg Config, log *slog.Logger) (*run, error) {
	var raw [4]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("run id: %w", err)
	}
	r := &run{cfg: cfg, log: log, id: hex.EncodeToString(raw[:]), clock: newClock()}
	r.prefix = r.id + "-"
	r.payload = makePayload(cfg.Size)
	r.hdr.specversion = []string{"1.0"}
	r.hdr.typ = []string{cfg.Type}
	r.hdr.source = []string{cfg.Source}
	r.hdr.ctype = []string{"application/octet-stream"}

	// One keep-alive connection per sender, never more, never through a
	// proxy: the figures are about the server, not about connection setup.
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        cfg.Concurrency * 2,
		MaxIdleConnsPerHost: cfg.Concurrency * 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	r.client = &http.Client{Transport: tr, Timeout: cfg.Timeout}
	return r, nil
}

// makePayload returns size printable bytes, so the data survives any codec
// unchanged whatever content type a pipeline assumes.
func makePayload(size int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, size)
	for i := range b {
		b[i] = alphabet[i%len(alphabet)]
	}
	return b
}

// drain waits until every accepted event among the first n was delivered,
// the drain time is over, or ctx is done.
func (r *run) drain(ctx context.Context, n uint64) {
	timer := time.NewTimer(r.cfg.Drain)
	defer timer.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		// The full scan runs only once enough deliveries arrived to make it
		// worth it.
		if r.unique.Load() >= r.statuses[http.StatusAccepted].Load() &&
			reconcile(&r.accepted, &r.delivered, n).Missing == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			return
		case <-tick.C:
		}
	}
}

func (r *run) report(start time.Time, workers []*workerStats, sent uint64) *Report {
	rep := &Report{
		RunID: r.id, URL: r.cfg.URL, Mode: "closed", Concurrency: r.cfg.Concurrency, Size: r.cfg.Size,
		Duration: r.cfg.Duration.Seconds(), Sent: sent, Statuses: map[string]uint64{},
		TransportErrors: r.transportErrs.Load(), FirstError: r.firstErrMsg,
	}
	if r.cfg.Rate > 0 {
		rep.Mode, rep.Rate = "open", r.cfg.Rate
	}
	for code := range r.statuses {
		if n := r.statuses[code].Load(); n > 0 && code != http.StatusAccepted {
			rep.Statuses[strconv.Itoa(code)] = n
		}
	}
	rep.Accepted = r.statuses[http.StatusAccepted].Load()

	startUnix := r.clock.unix(start)
	if last := r.lastAnswer.Load(); last > startUnix {
		rep.SendSeconds = time.Duration(last - startUnix).Seconds()
		rep.AcceptedPerSec = float64(rep.Accepted) / rep.SendSeconds
	}
	var post, lag []time.Duration
	for _, w := range workers {
		post = append(post, w.post...)
		lag = append(lag, w.lag...)
	}
	rep.PostLatency = summarize(post)
	rep.StartLag = summarize(lag)

	rep.Delivered = r.unique.Load()
	rep.Foreign = r.foreign.Load()
	rep.SubscriberConns = r.conns.Load()
	if last := r.lastDelivery.Load(); last > startUnix {
		rep.DeliverySeconds = time.Duration(last - startUnix).Seconds()
		rep.DeliveredPerSec = float64(rep.Delivered) / rep.DeliverySeconds
	}
	r.e2eMu.Lock()
	rep.EndToEnd = summarize(r.e2e)
	r.e2eMu.Unlock()
	rep.Reconciliation = reconcile(&r.accepted, &r.delivered, sent)
	return rep
}
