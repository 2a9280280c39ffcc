// Package dispatch reads each trigger's events from the bus, filters them and
// delivers them to the trigger's target with retries, backoff, Retry-After,
// dead letters and replies.
//
// Every Knative Trigger and every Sensor trigger is one consumer group on its
// broker's topic, with one worker per replica. A worker fetches in batches,
// acknowledges filtered-out events in batches, keeps a bounded number of
// attempts in flight, schedules retries on timers so that a failing event
// never holds up the others, and renews the lease of every event it holds so
// that no other replica takes an event while it is still being worked on.
//
// A Sensor trigger's worker matches each event against the dependencies its
// conditions name. When the conditions name one dependency, every match fires
// at once; otherwise matches are correlated in the bus's StateStore (see
// correlate.go) and a completed set fires once, through a transform and the
// trigger's parameters, with the same delivery policy as a Knative Trigger.
package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	duckv1 "knative.dev/eventing/pkg/apis/duck/v1"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/config"
	"github.com/signalbox-dev/signalbox/dispatch/delivery"
	"github.com/signalbox-dev/signalbox/dispatch/filter"
	"github.com/signalbox-dev/signalbox/functions"
	"github.com/signalbox-dev/signalbox/functions/httptarget"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultLease           = 30 * time.Second
	DefaultMaxInFlight     = 100
	DefaultShutdownTimeout = 10 * time.Second
	DefaultRemovalGrace    = time.Minute
)

// ErrClosed is returned by Apply after Close.
var ErrClosed = errors.New("dispatch: closed")

// ErrUnsupported is returned by Apply for configuration the dispatcher cannot
// run, such as a Sensor trigger without a target, or one that needs
// correlation state on a bus without a broker.StateStore.
var ErrUnsupported = errors.New("dispatch: not supported")

// Config configures a Dispatcher.
type Config struct {
	// Bus is the log events are read from, replies published to and dead
	// letters written to. Required.
	Bus broker.Bus

	// ReplicaID names this replica's consumer in every group. A replica
	// restarted with the same id takes back at once the events it held.
	// Required.
	ReplicaID string

	// Lease is how long an event this replica holds stays its own without a
	// renewal; the worker renews every held event about three times per
	// Lease. Zero means DefaultLease (30s).
	Lease time.Duration

	// MaxInFlight bounds the concurrent delivery attempts of one trigger on
	// this replica. Zero means DefaultMaxInFlight (100).
	MaxInFlight int

	// MaxHeld bounds the events one trigger holds on this replica, in flight
	// or waiting for a retry; fetching pauses while it is reached. Zero means
	// 10×MaxInFlight.
	MaxHeld int

	// ShutdownTimeout is how long Close (and a trigger's restart or removal)
	// lets in-flight attempts run before cutting them short. Zero means
	// DefaultShutdownTimeout (10s).
	ShutdownTimeout time.Duration

	// RemovalGrace is how long the group of a removed trigger is kept before
	// it is deleted with its undelivered events. A trigger that comes back
	// within it (a config file rewritten in two steps, a rename undone)
	// resumes where it stopped instead of losing those events. Zero means
	// DefaultRemovalGrace (1m); negative deletes at once.
	RemovalGrace time.Duration

	// Logger receives lifecycle at Info, failed attempts at Warn, dead
	// letters at Error and per-event lines at Debug. Nil discards.
	Logger *slog.Logger

	// Metrics registers the signalbox_dispatch_* collectors; nil registers
	// them nowhere.
	Metrics prometheus.Registerer

	// HTTPClient sends events to HTTP targets and dead-letter sinks; nil
	// means httptarget's shared client (see httptarget.NewClient).
	HTTPClient *http.Client

	// Kubeconfig is the kubeconfig file kubernetes triggers use, read at the
	// first one; empty means KUBECONFIG, then the pod's service account, then
	// ~/.kube/config (see kubernetes.LoadRESTConfig).
	Kubeconfig string
}

func (c Config) validate() (Config, error) {
	switch {
	case c.Bus == nil:
		return c, errors.New("dispatch: Config.Bus: required")
	case c.ReplicaID == "":
		return c, errors.New("dispatch: Config.ReplicaID: required")
	case c.Lease < 0:
		return c, fmt.Errorf("dispatch: Config.Lease: must not be negative, got %v", c.Lease)
	case c.MaxInFlight < 0:
		return c, fmt.Errorf("dispatch: Config.MaxInFlight: must not be negative, got %d", c.MaxInFlight)
	case c.MaxHeld < 0:
		return c, fmt.Errorf("dispatch: Config.MaxHeld: must not be negative, got %d", c.MaxHeld)
	case c.ShutdownTimeout < 0:
		return c, fmt.Errorf("dispatch: Config.ShutdownTimeout: must not be negative, got %v", c.ShutdownTimeout)
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxHeld == 0 {
		c.MaxHeld = 10 * c.MaxInFlight
	}
	if c.MaxHeld < c.MaxInFlight {
		return c, fmt.Errorf("dispatch: Config.MaxHeld: must be at least MaxInFlight (%d), got %d",
			c.MaxInFlight, c.MaxHeld)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.RemovalGrace == 0 {
		c.RemovalGrace = DefaultRemovalGrace
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c, nil
}

// Dispatcher runs one worker per trigger of the applied configuration. Its
// methods are safe for concurrent use.
type Dispatcher struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	kube kubeAccess // the Kubernetes configuration of kubernetes triggers

	applyMu   sync.Mutex    // serialises Apply and Close
	closing   chan struct{} // closed when Close starts, to end an Apply waiting for groups
	closeOnce sync.Once

	mu      sync.Mutex
	workers map[groupKey]*worker
	orphans map[groupKey]time.Time // groups of removed triggers, by removal time, not yet deleted
	sweep   chan struct{}          // closed by Close to stop the orphan sweeper
	applied bool
	closed  bool
}

// groupKey identifies a consumer group.
type groupKey struct{ topic, group string }

// New returns a dispatcher that runs nothing until Apply.
func New(cfg Config) (*Dispatcher, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	d := &Dispatcher{
		cfg:     cfg,
		log:     cfg.Logger,
		m:       m,
		workers: make(map[groupKey]*worker),
		orphans: make(map[groupKey]time.Time),
		closing: make(chan struct{}),
		sweep:   make(chan struct{}),
	}
	go d.sweepOrphans()
	return d, nil
}

// Apply makes the running triggers those of snap. It first builds every
// trigger (filters, targets, delivery policy) and, if one is invalid, returns
// an error and changes nothing. Then it stops the workers of removed triggers
// (their groups are deleted after Config.RemovalGrace unless the trigger
// comes back), restarts the workers of changed triggers on their existing
// groups, and starts workers for new triggers, whose groups start at the end
// of the log. It returns once every new group exists, so an event
// published after Apply returns reaches every trigger; when ctx ends first it
// returns an error and the missing groups keep being created in the
// background (Ready reports when they are). Triggers of a broker missing from
// snap are not run.
func (d *Dispatcher) Apply(ctx context.Context, snap *config.Snapshot) error {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	if d.isClosed() {
		return ErrClosed
	}
	if snap == nil {
		return errors.New("dispatch: Apply: nil snapshot")
	}
	desired, err := d.plan(snap)
	if err != nil {
		return err
	}

	removed, changed := d.diff(desired)
	d.retire(ctx, removed, changed)
	d.adoptOrphans(desired)
	d.deleteOrphans(ctx)
	return d.startAndWait(ctx, desired)
}

// diff sorts the running workers against desired: removed ones, changed ones,
// and unchanged ones, whose new build is dropped from desired.
func (d *Dispatcher) diff(desired map[groupKey]*spec) (removed, changed []*worker) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, w := range d.workers {
		s, ok := desired[k]
		switch {
		case !ok:
			removed = append(removed, w)
		case s.fingerprint != w.spec.fingerprint:
			changed = append(changed, w)
		default:
			s.close()
			delete(desired, k)
		}
	}
	return removed, changed
}

// retire stops the workers of removed and changed triggers. The groups of
// removed ones are queued for deletion; changed ones keep theirs.
func (d *Dispatcher) retire(ctx context.Context, removed, changed []*worker) {
	stopAll(ctx, slices.Concat(removed, changed))
	d.mu.Lock()
	now := time.Now()
	for _, w := range removed {
		delete(d.workers, w.spec.key)
		d.orphans[w.spec.key] = now
	}
	for _, w := range changed {
		delete(d.workers, w.spec.key)
	}
	d.mu.Unlock()

	for _, w := range removed {
		w.spec.close()
		d.m.forget(w.spec.key.topic, w.spec.key.group)
		d.log.Info("trigger removed; its group and undelivered events are deleted unless it comes back",
			"broker", w.spec.key.topic, "trigger", w.spec.key.group, "grace", d.cfg.RemovalGrace)
	}
	for _, w := range changed {
		w.spec.close()
		d.log.Info("trigger changed; restarting it", "broker", w.spec.key.topic, "trigger", w.spec.key.group)
	}
}

// startAndWait starts a worker per spec and waits until every worker, new or
// not, has its group: a worker of an earlier Apply may still be retrying.
func (d *Dispatcher) startAndWait(ctx context.Context, desired map[groupKey]*spec) error {
	d.mu.Lock()
	for k, s := range desired {
		w := newWorker(d, s)
		d.workers[k] = w
		w.start()
	}
	d.applied = true
	all := slices.Collect(maps.Values(d.workers))
	d.mu.Unlock()

	for _, w := range all {
		select {
		case <-w.subscribed:
		case <-ctx.Done():
			return fmt.Errorf("dispatch: waiting for the group of %s: %w", w.spec.desc, context.Cause(ctx))
		case <-d.closing:
			return ErrClosed
		}
	}
	return nil
}

// adoptOrphans keeps the group of a removed trigger that is wanted again
// within the grace period: the trigger resumes where it stopped.
func (d *Dispatcher) adoptOrphans(desired map[groupKey]*spec) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range desired {
		if _, ok := d.orphans[k]; ok {
			delete(d.orphans, k)
			d.log.Info("removed trigger is back; it resumes its group", "broker", k.topic, "trigger", k.group)
		}
	}
}

// deleteOrphans deletes the groups of triggers removed longer than the grace
// period ago. A failure is logged and retried by the next sweep: a forgotten
// group would hold back the log's retention forever.
func (d *Dispatcher) deleteOrphans(ctx context.Context) {
	d.mu.Lock()
	var keys []groupKey
	for k, at := range d.orphans {
		if time.Since(at) >= d.cfg.RemovalGrace {
			keys = append(keys, k)
		}
	}
	d.mu.Unlock()

	for _, k := range keys {
		err := d.cfg.Bus.DeleteGroup(ctx, k.topic, k.group)
		if store, ok := d.cfg.Bus.(broker.StateStore); ok && err == nil && strings.HasPrefix(k.group, "sensor.") {
			// A sensor trigger's held events go with it.
			err = store.PurgeState(ctx, k.topic, k.group)
		}
		if err != nil {
			d.log.Warn("cannot delete the group of a removed trigger; will retry", "broker", k.topic,
				"trigger", k.group, "err", err)
			continue
		}
		d.mu.Lock()
		delete(d.orphans, k)
		d.mu.Unlock()
		d.log.Info("deleted the group of a removed trigger", "broker", k.topic, "trigger", k.group)
	}
}

// sweepOrphans deletes expired orphan groups between Applies, until Close.
func (d *Dispatcher) sweepOrphans() {
	every := min(max(d.cfg.RemovalGrace/4, 10*time.Millisecond), 10*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.sweep:
			return
		case <-t.C:
			d.applyMu.Lock()
			if !d.isClosed() {
				ctx, cancel := context.WithTimeout(context.Background(), busOpTimeout)
				d.deleteOrphans(ctx)
				cancel()
			}
			d.applyMu.Unlock()
		}
	}
}

// Ready reports whether a configuration has been applied and every trigger's
// group exists.
func (d *Dispatcher) Ready() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.applied || d.closed {
		return false
	}
	for _, w := range d.workers {
		select {
		case <-w.subscribed:
		default:
			return false
		}
	}
	return true
}

// Close stops every worker: fetching stops at once, in-flight attempts run
// until they finish, ShutdownTimeout passes or ctx ends, whichever is first,
// and every other held event (waiting for a retry included) is handed back
// to the bus unacknowledged, so a replica with the same ReplicaID takes it
// at once and others after the lease. An attempt cut short does not count.
// Groups are kept. An Apply waiting for groups returns ErrClosed. Close does
// not close the Bus; calling it again does nothing.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.closeOnce.Do(func() { close(d.closing); close(d.sweep) })
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	ws := slices.Collect(maps.Values(d.workers))
	d.workers = map[groupKey]*worker{}
	d.mu.Unlock()

	stopAll(ctx, ws)
	for _, w := range ws {
		w.spec.close()
	}
	d.log.Info("dispatcher stopped", "triggers", len(ws))
	return nil
}

func (d *Dispatcher) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// stopAll stops workers in parallel, so that their shutdown timeouts overlap.
func stopAll(ctx context.Context, ws []*worker) {
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.stop(ctx) })
	}
	wg.Wait()
}

// spec is everything a worker needs, built and validated by plan.
type spec struct {
	key  groupKey
	desc string // "trigger ns/name" or "sensor ns/name trigger t", for errors
	// fingerprint changes when anything the worker depends on does.
	fingerprint string
	filter      filter.Filter
	target      functions.Target
	sink        functions.Target // nil without a deadLetterSink
	policy      delivery.Policy
	sensor      *sensorSpec // set for Sensor triggers, which use it instead of filter
}

func (s *spec) close() {
	if s.filter != nil {
		s.filter.Close()
	}
}

// plan builds a spec for every trigger of snap. On error it releases what it
// built.
func (d *Dispatcher) plan(snap *config.Snapshot) (map[groupKey]*spec, error) {
	brokers := make(map[string]*config.Broker, len(snap.Brokers))
	for i := range snap.Brokers {
		b := &snap.Brokers[i]
		brokers[b.Namespace()+"/"+b.Name()] = b
	}
	out := make(map[groupKey]*spec)
	var errs []error
	add := func(s *spec, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		if s == nil {
			return
		}
		if _, dup := out[s.key]; dup {
			s.close()
			errs = append(errs, fmt.Errorf("dispatch: %s: group %q of %q is used twice", s.desc, s.key.group, s.key.topic))
			return
		}
		out[s.key] = s
	}
	for i := range snap.Triggers {
		add(d.triggerSpec(&snap.Triggers[i], brokers))
	}
	for i := range snap.Sensors {
		sn := &snap.Sensors[i]
		for j := range sn.Spec.Triggers {
			add(d.sensorSpec(sn, &sn.Spec.Triggers[j], brokers))
		}
	}
	if err := errors.Join(errs...); err != nil {
		for _, s := range out {
			s.close()
		}
		return nil, err
	}
	return out, nil
}

// triggerSpec builds a Knative Trigger's spec; nil without error when its
// broker is not configured (Knative keeps such a trigger not ready).
func (d *Dispatcher) triggerSpec(t *config.Trigger, brokers map[string]*config.Broker) (*spec, error) {
	ts := &t.Object.Spec
	topic := t.Namespace() + "/" + ts.Broker
	desc := fmt.Sprintf("trigger %s/%s", t.Namespace(), t.Name())
	b, ok := brokers[topic]
	if !ok {
		d.log.Warn("trigger's broker is not configured; trigger not run", "broker", topic, "trigger", t.Name())
		return nil, nil
	}
	var brokerDelivery *duckv1.DeliverySpec
	if b.Object != nil {
		brokerDelivery = b.Object.Spec.Delivery
	}
	if ts.Subscriber.URI == nil {
		return nil, fmt.Errorf("dispatch: %s: spec.subscriber.uri: required (a ref is resolved only in a cluster)", desc)
	}
	s := &spec{
		key:  groupKey{topic: topic, group: TriggerGroup(t.Name())},
		desc: desc,
	}
	fp, err := fingerprint(ts, brokerDelivery)
	if err != nil {
		return nil, fmt.Errorf("dispatch: %s: %w", desc, err)
	}
	s.fingerprint = fp
	if s.policy, err = delivery.Resolve(brokerDelivery, ts.Delivery); err != nil {
		return nil, fmt.Errorf("dispatch: %s: %w", desc, err)
	}
	tcfg := httptarget.Config{URL: ts.Subscriber.URI.String(), Structured: s.policy.Structured, Client: d.cfg.HTTPClient}
	if s.target, err = httptarget.New(tcfg); err != nil {
		return nil, fmt.Errorf("dispatch: %s: spec.subscriber.uri: %w", desc, err)
	}
	if s.sink, err = d.sinkTarget(s.policy); err != nil {
		return nil, fmt.Errorf("dispatch: %s: %w", desc, err)
	}
	if s.filter, err = filter.ForTrigger(ts); err != nil {
		return nil, fmt.Errorf("dispatch: %s: %w", desc, err)
	}
	return s, nil
}

func (d *Dispatcher) sinkTarget(p delivery.Policy) (functions.Target, error) {
	if p.DeadLetterSink == "" {
		return nil, nil
	}
	t, err := httptarget.New(httptarget.Config{URL: p.DeadLetterSink, Structured: p.Structured, Client: d.cfg.HTTPClient})
	if err != nil {
		return nil, fmt.Errorf("deadLetterSink: %w", err)
	}
	return t, nil
}

// fingerprint serialises the parts of the configuration a worker depends on.
func fingerprint(parts ...any) (string, error) {
	b, err := json.Marshal(parts)
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	return string(b), nil
}

// TriggerGroup is the consumer group of the Knative Trigger named name on its
// broker's topic.
func TriggerGroup(name string) string { return "trigger." + name }

// SensorGroup is the consumer group of one trigger of a Sensor.
func SensorGroup(sensor, trigger string) string { return "sensor." + sensor + "." + trigger }
