package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/functions"
)

// Tuning of a worker. None of them changes what is delivered, only how many
// round trips it takes.
const (
	fetchBatch    = 64                     // most messages per Fetch
	fetchWait     = 2 * time.Second        // how long a Fetch blocks for new messages
	ackBatch      = 256                    // acks sent in one call at most
	ackDelay      = 5 * time.Millisecond   // how long an ack may wait for others to join it
	renewBatch    = 256                    // ids renewed in one call at most
	busOpTimeout  = 10 * time.Second       // bounds Ack, SetAttempts, DeadLetter
	retryMin      = 100 * time.Millisecond // first wait after a bus error
	retryMax      = 10 * time.Second       // longest wait after bus errors
	warnEvery     = 30 * time.Second       // repeated bus errors are logged at Warn this often
	ackRetries    = 3                      // tries of one Ack call
	minRenewEvery = 10 * time.Millisecond  // floor of the renewal period
)

// Why an attempt's context ended: a shutdown does not count as an attempt, a
// timeout does.
var (
	errShutdown       = errors.New("dispatch: shutting down")
	errAttemptTimeout = errors.New("dispatch: delivery attempt timed out")
)

// phase is where an event is in its handling.
type phase int

const (
	phaseDeliver    phase = iota // attempts on the target
	phaseDeadLetter              // being written to the bus's dead-letter log
	phaseSink                    // being posted to the deadLetterSink
	phaseCorrelate               // sensor: being added to the correlation state
	phaseFire                    // sensor: building the events a fire sends
	phaseSettle                  // sensor: removing a delivered fire from the state
)

// held is an event this worker holds: in flight, or waiting for a retry.
type held struct {
	msg broker.Message
	ev  *event.Event // nil when the payload cannot be decoded

	phase        phase
	out          []outgoing        // events not yet delivered, or not yet dead-lettered
	sinkOut      []outgoing        // dead letters not yet posted to the deadLetterSink
	attempts     int               // attempts on the target, recorded ones included
	last         functions.Outcome // the last failed attempt, for the dead letter
	reason       string            // why the event is dead-lettered
	sinkAttempts int
	busFailures  int         // consecutive failed bus operations (dead letter, state)
	timer        *time.Timer // a scheduled retry; guarded by worker.mu

	// Sensor triggers only.
	deps     []string   // the dependencies the event matched
	key      string     // its correlation key
	fire     *fireInput // the set this event fires, once known
	settleID string     // the firing to remove from the state once done
	heldEv   *heldEvent // the event as the state keeps it
}

// worker runs one trigger's group on this replica.
type worker struct {
	d    *Dispatcher
	spec *spec
	log  *slog.Logger

	// Series of this trigger.
	matched, filtered, filterErrs     prometheus.Counter
	attempts, deliveries, sinkResults *prometheus.CounterVec
	replies                           *prometheus.CounterVec
	deadLetters                       prometheus.Counter
	attemptTime                       prometheus.Observer
	heldGauge                         prometheus.Gauge

	sub        broker.Subscription // set before subscribed is closed
	subscribed chan struct{}

	fetchCtx       context.Context // ends when fetching must stop
	stopFetch      context.CancelFunc
	attemptCtx     context.Context // ends (cause errShutdown) when in-flight attempts must stop
	cancelAttempts context.CancelCauseFunc
	stopWork       chan struct{} // closed when no new processing may start

	mu       sync.Mutex
	held     map[string]*held
	acking   map[string]struct{} // done events whose ack is not yet confirmed; still renewed
	stopping bool

	ready chan *held    // events due for processing; capacity MaxHeld
	room  chan struct{} // signalled when held shrinks
	acks  chan string

	fetchDone chan struct{}
	pool      sync.WaitGroup // deliverLoop and the processing goroutines it starts
	ackDone   chan struct{}
	renewStop chan struct{}
	renewDone chan struct{}
	resetStop chan struct{} // stops resetLoop; nil when the trigger has no conditionsReset
	resetDone chan struct{}
	stopOnce  sync.Once

	sensorEvents *prometheus.CounterVec // sensor triggers: events by correlation outcome
}

func newWorker(d *Dispatcher, s *spec) *worker {
	labels := prometheus.Labels{"broker": s.key.topic, "trigger": s.key.group}
	w := &worker{
		d:    d,
		spec: s,
		log:  d.log.With("broker", s.key.topic, "trigger", s.key.group),

		matched:     d.m.events.MustCurryWith(labels).WithLabelValues("matched"),
		filtered:    d.m.events.MustCurryWith(labels).WithLabelValues("filtered"),
		filterErrs:  d.m.filterErrs.With(labels),
		attempts:    d.m.attempts.MustCurryWith(labels),
		deliveries:  d.m.deliveries.MustCurryWith(labels),
		sinkResults: d.m.sinkResults.MustCurryWith(labels),
		replies:     d.m.replies.MustCurryWith(labels),
		deadLetters: d.m.deadLetters.With(labels),
		attemptTime: d.m.attemptTime.With(labels),
		heldGauge:   d.m.held.With(labels),

		subscribed: make(chan struct{}),
		stopWork:   make(chan struct{}),
		held:       make(map[string]*held),
		acking:     make(map[string]struct{}),
		ready:      make(chan *held, d.cfg.MaxHeld),
		room:       make(chan struct{}, 1),
		acks:       make(chan string, ackBatch),
		fetchDone:  make(chan struct{}),
		ackDone:    make(chan struct{}),
		renewStop:  make(chan struct{}),
		renewDone:  make(chan struct{}),

		sensorEvents: d.m.sensorEvents.MustCurryWith(labels),
	}
	if ss := s.sensor; ss != nil && ss.reset != nil && ss.store != nil {
		w.resetStop = make(chan struct{})
		w.resetDone = make(chan struct{})
	}
	w.fetchCtx, w.stopFetch = context.WithCancel(context.Background())
	w.attemptCtx, w.cancelAttempts = context.WithCancelCause(context.Background())
	return w
}

// start subscribes in the background and, once subscribed, runs the fetch
// loop, the delivery goroutines, the acknowledger and the lease renewer.
func (w *worker) start() {
	go func() {
		defer close(w.fetchDone)
		if !w.subscribe() {
			return
		}
		go w.ackLoop()
		go w.renewLoop()
		if w.resetStop != nil {
			go w.resetLoop()
		}
		w.pool.Go(w.deliverLoop)
		w.fetchLoop()
	}()
}

// subscribe creates the group (or joins it), retrying until it succeeds or
// the worker stops. It reports whether it succeeded.
func (w *worker) subscribe() bool {
	cfg := broker.SubscribeConfig{Consumer: w.d.cfg.ReplicaID, Lease: w.d.cfg.Lease}
	var warned time.Time
	for failures := 0; ; failures++ {
		sub, err := w.d.cfg.Bus.Subscribe(w.fetchCtx, w.spec.key.topic, w.spec.key.group, cfg)
		if err == nil {
			w.sub = sub
			close(w.subscribed)
			w.log.Info("trigger started", "max_in_flight", w.d.cfg.MaxInFlight, "retry", w.spec.policy.Retry)
			return true
		}
		if w.fetchCtx.Err() != nil {
			return false
		}
		w.warnLimited(&warned, "cannot create the trigger's consumer group; retrying", err)
		if !sleep(w.fetchCtx, backoff(failures)) {
			return false
		}
	}
}

// fetchLoop reads messages while there is room for more, until stopped.
func (w *worker) fetchLoop() {
	var warned time.Time
	failures := 0
	for {
		n := w.roomLeft()
		if n == 0 {
			select {
			case <-w.room:
				continue
			case <-w.fetchCtx.Done():
				return
			}
		}
		msgs, err := w.sub.Fetch(w.fetchCtx, min(n, fetchBatch), fetchWait)
		if err != nil {
			if w.fetchCtx.Err() != nil || errors.Is(err, broker.ErrClosed) {
				return
			}
			w.warnLimited(&warned, "cannot fetch events; retrying", err)
			if !sleep(w.fetchCtx, backoff(failures)) {
				return
			}
			failures++
			continue
		}
		failures = 0
		for _, m := range msgs {
			w.accept(m)
		}
	}
}

func (w *worker) roomLeft() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return max(w.d.cfg.MaxHeld-len(w.held), 0)
}

// accept decodes and filters a fetched message and queues it for delivery.
func (w *worker) accept(m broker.Message) {
	w.mu.Lock()
	_, dup := w.held[m.ID]
	w.mu.Unlock()
	if dup {
		// Our own lease ran out and Fetch handed the message back to us while
		// we still work on it: delivering it again would be a concurrent
		// duplicate.
		w.log.Debug("fetched a message already held", "message_id", m.ID)
		return
	}

	ev, err := cloudevent.Unmarshal(m.Payload)
	if err != nil {
		w.hold(&held{msg: m, attempts: m.Attempts, phase: phaseDeadLetter,
			out:    []outgoing{{target: w.spec.target, raw: m.Payload}},
			reason: "undecodable payload: " + err.Error(), last: functions.Outcome{Status: functions.NoResponse}})
		return
	}
	if w.spec.sensor != nil {
		w.acceptSensor(m, ev)
		return
	}
	ok, err := w.spec.filter.Match(ev)
	if err != nil {
		w.filterErrs.Inc()
		w.log.Debug("filter could not be evaluated; no match", "event_id", ev.ID(), "err", err)
	}
	if !ok {
		w.filtered.Inc()
		w.log.Debug("event filtered out", "event_id", ev.ID())
		w.acks <- m.ID
		return
	}
	w.matched.Inc()

	h := &held{msg: m, ev: ev, attempts: m.Attempts, out: []outgoing{{ev: ev, target: w.spec.target, raw: m.Payload}}}
	if h.attempts >= w.spec.policy.Attempts() {
		// The last attempt was made before a restart, but the event was not
		// dead-lettered yet.
		h.phase = phaseDeadLetter
		h.reason = fmt.Sprintf("%d attempts made before a restart", h.attempts)
		h.last.Status = functions.NoResponse
	}
	w.hold(h)
}

// hold records h as held and queues it. The ready channel has room for every
// held event, and an event is queued at most once at a time, so this never
// blocks.
func (w *worker) hold(h *held) {
	w.mu.Lock()
	w.held[h.msg.ID] = h
	n := len(w.held)
	w.mu.Unlock()
	w.heldGauge.Set(float64(n))
	w.ready <- h
}

// done acknowledges h: it is no longer held.
func (w *worker) done(h *held) {
	w.mu.Lock()
	delete(w.held, h.msg.ID)
	w.acking[h.msg.ID] = struct{}{}
	n := len(w.held)
	w.mu.Unlock()
	w.heldGauge.Set(float64(n))
	select {
	case w.room <- struct{}{}:
	default:
	}
	w.acks <- h.msg.ID
}

// schedule queues h again after wait, unless the worker stops first: then h
// stays pending in the bus for the next consumer.
func (w *worker) schedule(h *held, wait time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping {
		return
	}
	h.timer = time.AfterFunc(wait, func() {
		w.mu.Lock()
		h.timer = nil
		stopping := w.stopping
		w.mu.Unlock()
		if !stopping {
			w.ready <- h
		}
	})
}

// deliverLoop takes due events and processes each in its own goroutine, at
// most MaxInFlight at a time, until the worker stops. Goroutines exist only
// while there is work, so idle triggers cost little.
func (w *worker) deliverLoop() {
	sem := make(chan struct{}, w.d.cfg.MaxInFlight)
	for {
		var h *held
		select {
		case <-w.stopWork:
			return
		case h = <-w.ready:
		}
		select {
		case sem <- struct{}{}:
		case <-w.stopWork:
			return // leave h pending in the bus
		}
		select {
		case <-w.stopWork:
			return
		default:
		}
		w.pool.Go(func() {
			defer func() { <-sem }()
			w.process(h)
		})
	}
}

// process runs h through its phases until it is done or waits for a retry.
func (w *worker) process(h *held) {
	for {
		var next bool
		switch h.phase {
		case phaseDeliver:
			next = w.deliver(h)
		case phaseDeadLetter:
			next = w.deadLetter(h)
		case phaseSink:
			next = w.deliverToSink(h)
		case phaseCorrelate:
			next = w.correlate(h)
		case phaseFire:
			next = w.fire(h)
		case phaseSettle:
			next = w.settle(h)
		}
		if !next {
			return
		}
	}
}

// deliver makes one attempt on the target for each event not yet delivered
// (one, except for a sensor fire whose transform yields several), stopping
// at the first failure. It reports whether h moved on to another phase.
func (w *worker) deliver(h *held) bool {
	n := h.attempts + 1
	var out functions.Outcome
	id := ""
	for len(h.out) > 0 {
		o := h.out[0]
		id = o.ev.ID()
		var cut bool
		out, cut = w.try(o.target, o.ev, true)
		if cut {
			w.log.Debug("attempt cut short by shutdown; not counted", "event_id", id, "attempt", n)
			return false
		}
		w.attempts.WithLabelValues(out.Result.String()).Inc()
		if out.Result != functions.Success {
			break
		}
		w.log.Debug("event delivered", "event_id", id, "attempt", n, "status", out.Status)
		h.out = h.out[1:]
	}
	h.attempts = n

	switch {
	case len(h.out) == 0:
		w.deliveries.WithLabelValues("delivered").Inc()
		return w.finish(h)
	case out.Result == functions.Retryable && n < w.spec.policy.Attempts():
		w.recordAttempts(h)
		wait := w.spec.policy.Wait(n, out.RetryAfter)
		w.log.Warn("delivery attempt failed; will retry", "event_id", id, "attempt", n,
			"status", out.Status, "retry_in", wait, "err", out.Err)
		w.schedule(h, wait)
		return false
	}
	w.log.Warn("delivery attempt failed", "event_id", id, "attempt", n, "status", out.Status,
		"result", out.Result.String(), "err", out.Err)
	h.last = out
	h.phase = phaseDeadLetter
	if out.Result == functions.Permanent {
		h.reason = fmt.Sprintf("permanent failure after %d attempts: %v", n, out.Err)
	} else {
		h.reason = fmt.Sprintf("no success after %d attempts: %v", n, out.Err)
	}
	return true
}

// try makes one attempt of ev on t under the trigger's timeout. cut reports
// an attempt that failed because the worker is shutting down: it does not
// count.
func (w *worker) try(t functions.Target, ev *event.Event, publishReplies bool) (out functions.Outcome, cut bool) {
	var ctx context.Context
	var cancel context.CancelFunc
	if d := w.spec.policy.Timeout; d > 0 {
		ctx, cancel = context.WithTimeoutCause(w.attemptCtx, d, errAttemptTimeout)
	} else {
		ctx, cancel = context.WithCancel(w.attemptCtx)
	}
	defer cancel()

	start := time.Now()
	out = t.Send(ctx, ev)
	if out.Result == functions.Success && publishReplies {
		out = w.publishReplies(ctx, ev, out)
	}
	w.attemptTime.Observe(time.Since(start).Seconds())
	cut = out.Result == functions.Retryable && errors.Is(context.Cause(ctx), errShutdown)
	return out, cut
}

// publishReplies publishes the replies of a successful attempt to the
// trigger's broker. Each reply inherits the original event's TTL, which the
// ingress rules then decrement; a reply whose TTL is exhausted or that is
// invalid is dropped. A failed publish fails the attempt.
func (w *worker) publishReplies(ctx context.Context, orig *event.Event, out functions.Outcome) functions.Outcome {
	if out.ReplyErr != nil {
		w.replies.WithLabelValues("invalid").Inc()
		w.log.Warn("subscriber answered with an invalid reply; dropped", "event_id", orig.ID(), "err", out.ReplyErr)
	}
	if len(out.Replies) == 0 {
		return out
	}
	ttl, hasTTL := cloudevent.TTL(orig)
	payloads := make([][]byte, 0, len(out.Replies))
	for _, r := range out.Replies {
		if hasTTL {
			cloudevent.SetTTL(r, ttl)
		} else {
			_ = r.Context.SetExtension(cloudevent.ExtTTL, nil)
		}
		err := cloudevent.PrepareIngress(r, time.Now())
		var b []byte
		if err == nil {
			b, err = cloudevent.Marshal(r)
		}
		switch {
		case errors.Is(err, cloudevent.ErrTTLExpired):
			w.replies.WithLabelValues("ttl_exhausted").Inc()
			w.log.Warn("reply dropped: its TTL is exhausted (a reply loop?)", "event_id", orig.ID(), "reply_id", r.ID())
		case err != nil:
			w.replies.WithLabelValues("invalid").Inc()
			w.log.Warn("invalid reply dropped", "event_id", orig.ID(), "reply_id", r.ID(), "err", err)
		default:
			payloads = append(payloads, b)
		}
	}
	if len(payloads) == 0 {
		return out
	}
	if err := w.d.cfg.Bus.Publish(ctx, w.spec.key.topic, payloads...); err != nil {
		return functions.Outcome{Result: functions.Retryable, Status: out.Status,
			Err: fmt.Errorf("publish reply: %w", err)}
	}
	w.replies.WithLabelValues("published").Add(float64(len(payloads)))
	w.log.Debug("replies published", "event_id", orig.ID(), "replies", len(payloads))
	return out
}

// recordAttempts stores h's attempt count in the bus so that a restart does
// not grant the event fresh attempts. A failure only costs that guarantee.
func (w *worker) recordAttempts(h *held) {
	ctx, cancel := context.WithTimeout(context.Background(), busOpTimeout)
	defer cancel()
	if err := w.sub.SetAttempts(ctx, h.msg.ID, h.attempts); err != nil {
		w.log.Warn("cannot record the attempt count", "message_id", h.msg.ID, "attempt", h.attempts, "err", err)
	}
}

// deadLetter appends each event not delivered to the group's dead-letter
// log, retrying while the bus fails. It reports whether h moved on to
// another phase.
func (w *worker) deadLetter(h *held) bool {
	for len(h.out) > 0 {
		o := h.out[0]
		payload, err := o.payload()
		if err != nil {
			payload = h.msg.Payload // cannot happen for an event that validated; keep what came in
		}
		dl := broker.DeadLetter{
			Payload:     payload,
			Destination: o.target.Destination(),
			Code:        h.last.Status,
			Reason:      h.reason,
			Attempts:    h.attempts,
			Time:        time.Now(),
		}
		ctx, cancel := context.WithTimeout(context.Background(), busOpTimeout)
		err = w.d.cfg.Bus.DeadLetter(ctx, w.spec.key.topic, w.spec.key.group, dl)
		cancel()
		if err != nil {
			wait := backoff(h.busFailures)
			h.busFailures++
			w.log.Warn("cannot write a dead letter; will retry", "message_id", h.msg.ID, "retry_in", wait, "err", err)
			w.schedule(h, wait)
			return false
		}
		h.busFailures = 0
		h.out = h.out[1:]
		w.deadLetters.Inc()
		id := ""
		if o.ev != nil {
			id = o.ev.ID()
			if w.spec.sink != nil {
				h.sinkOut = append(h.sinkOut, o)
			}
		}
		w.log.Error("event dead-lettered", "event_id", id, "message_id", h.msg.ID, "attempts", h.attempts,
			"status", h.last.Status, "reason", h.reason)
	}
	w.deliveries.WithLabelValues("dead_lettered").Inc()
	if len(h.sinkOut) > 0 {
		h.phase = phaseSink
		return true
	}
	return w.finish(h)
}

// deliverToSink posts h's dead letters to the deadLetterSink with the
// trigger's retry policy. Whatever happens, they are already in the bus's
// dead letters. It reports whether h moved on to another phase.
func (w *worker) deliverToSink(h *held) bool {
	n := h.sinkAttempts + 1
	var out functions.Outcome
	id := ""
	for len(h.sinkOut) > 0 {
		o := h.sinkOut[0]
		id = o.ev.ID()
		var cut bool
		out, cut = w.try(w.spec.sink, errorEvent(o, h.last), false)
		if cut {
			return false
		}
		if out.Result != functions.Success {
			break
		}
		w.log.Debug("dead letter delivered to the sink", "event_id", id, "attempt", n)
		h.sinkOut = h.sinkOut[1:]
	}
	h.sinkAttempts = n
	switch {
	case len(h.sinkOut) == 0:
		w.sinkResults.WithLabelValues("delivered").Inc()
		return w.finish(h)
	case out.Result == functions.Retryable && n < w.spec.policy.Attempts():
		wait := w.spec.policy.Wait(n, out.RetryAfter)
		w.log.Warn("dead-letter sink attempt failed; will retry", "event_id", id, "attempt", n,
			"status", out.Status, "retry_in", wait, "err", out.Err)
		w.schedule(h, wait)
		return false
	}
	w.sinkResults.WithLabelValues("failed").Inc()
	w.log.Error("dead-letter sink did not take the event; it stays in the bus's dead letters",
		"event_id", id, "attempts", n, "status", out.Status, "err", out.Err)
	return w.finish(h)
}

// errorEvent is o's event as the deadLetterSink receives it: with Knative's
// knativeerrordest, knativeerrorcode and knativeerrordata extensions.
func errorEvent(o outgoing, last functions.Outcome) *event.Event {
	e := *o.ev
	e.Context = o.ev.Context.Clone()
	_ = e.Context.SetExtension(cloudevent.ExtErrorDest, o.target.Destination())
	_ = e.Context.SetExtension(cloudevent.ExtErrorCode, last.Status)
	_ = e.Context.SetExtension(cloudevent.ExtErrorData, last.ErrorData())
	return &e
}

// finish ends h's handling: a sensor fire is first removed from the
// correlation state, then h is acknowledged. It reports whether h moved on
// to another phase.
func (w *worker) finish(h *held) bool {
	if h.settleID != "" {
		h.phase = phaseSettle
		return true
	}
	w.done(h)
	return false
}

// ackLoop acknowledges in batches: an ack waits up to ackDelay for others.
func (w *worker) ackLoop() {
	defer close(w.ackDone)
	var (
		batch    []string
		flush    <-chan time.Time
		inFlight bool
		flushed  = make(chan struct{}, 1)
	)
	// send acknowledges the batch in the background, so a slow bus delays
	// only the acknowledgements, never the events still being processed.
	send := func() {
		ids := batch
		batch, flush, inFlight = nil, nil, true
		go func() {
			w.flushAcks(ids)
			flushed <- struct{}{}
		}()
	}
	for {
		select {
		case id, ok := <-w.acks:
			if !ok {
				if inFlight {
					<-flushed
				}
				w.flushAcks(batch)
				return
			}
			batch = append(batch, id)
			switch {
			case inFlight: // sent when the running flush ends
			case len(batch) >= ackBatch:
				send()
			case flush == nil:
				flush = time.After(ackDelay)
			}
		case <-flush:
			flush = nil
			if !inFlight {
				send()
			}
		case <-flushed:
			inFlight = false
			if len(batch) > 0 {
				send()
			}
		}
	}
}

// flushAcks acknowledges ids, ackBatch at a time, retrying a failed call a
// few times. Either way the ids stop being renewed afterwards.
func (w *worker) flushAcks(ids []string) {
	defer func() {
		w.mu.Lock()
		for _, id := range ids {
			delete(w.acking, id)
		}
		w.mu.Unlock()
	}()
	for len(ids) > 0 {
		n := min(len(ids), ackBatch)
		w.ackChunk(ids[:n])
		ids = ids[n:]
	}
}

func (w *worker) ackChunk(ids []string) {
	var err error
	for try := range ackRetries {
		ctx, cancel := context.WithTimeout(context.Background(), busOpTimeout)
		err = w.sub.Ack(ctx, ids...)
		cancel()
		if err == nil || errors.Is(err, broker.ErrClosed) {
			return
		}
		time.Sleep(backoff(try))
	}
	// The events were handled; unacknowledged, they come back after the
	// lease and are delivered again (at least once).
	w.log.Warn("cannot acknowledge events; they will be redelivered", "events", len(ids), "err", err)
}

// renewLoop extends the lease of every held event about three times per
// lease, so that no other consumer takes an event in flight or waiting for a
// retry.
func (w *worker) renewLoop() {
	defer close(w.renewDone)
	every := max(w.d.cfg.Lease/3, minRenewEvery)
	t := time.NewTicker(every)
	defer t.Stop()
	var warned time.Time
	for {
		select {
		case <-w.renewStop:
			return
		case <-t.C:
		}
		w.mu.Lock()
		ids := make([]string, 0, len(w.held)+len(w.acking))
		for id := range w.held {
			ids = append(ids, id)
		}
		for id := range w.acking {
			ids = append(ids, id)
		}
		w.mu.Unlock()
		for len(ids) > 0 {
			n := min(len(ids), renewBatch)
			ctx, cancel := context.WithTimeout(context.Background(), every)
			err := w.sub.Renew(ctx, ids[:n]...)
			cancel()
			if err != nil && !errors.Is(err, broker.ErrClosed) {
				w.warnLimited(&warned, "cannot renew leases; another replica may take held events", err)
			}
			ids = ids[n:]
		}
	}
}

// stop shuts the worker down as Dispatcher.Close describes.
func (w *worker) stop(ctx context.Context) {
	w.stopOnce.Do(func() { w.shutdown(ctx) })
}

func (w *worker) shutdown(ctx context.Context) {
	w.stopFetch()
	<-w.fetchDone
	select {
	case <-w.subscribed:
	default:
		return // never subscribed: nothing else runs
	}

	w.mu.Lock()
	w.stopping = true
	waiting := 0
	for _, h := range w.held {
		if h.timer != nil && h.timer.Stop() {
			waiting++
		}
	}
	w.mu.Unlock()
	close(w.stopWork)

	poolDone := make(chan struct{})
	go func() {
		w.pool.Wait()
		close(poolDone)
	}()
	grace := time.NewTimer(w.d.cfg.ShutdownTimeout)
	defer grace.Stop()
	select {
	case <-poolDone:
	case <-grace.C:
	case <-ctx.Done():
	}
	w.cancelAttempts(errShutdown)
	<-poolDone

	close(w.acks)
	<-w.ackDone
	close(w.renewStop)
	<-w.renewDone
	if w.resetStop != nil {
		close(w.resetStop)
		<-w.resetDone
	}

	w.mu.Lock()
	handedBack := len(w.held)
	w.mu.Unlock()
	if err := w.sub.Close(); err != nil {
		w.log.Warn("closing the subscription", "err", err)
	}
	w.heldGauge.Set(0)
	w.log.Info("trigger stopped", "handed_back", handedBack, "waiting_for_retry", waiting)
}

// warnLimited logs a repeated error at Warn at most every warnEvery and at
// Debug in between.
func (w *worker) warnLimited(last *time.Time, msg string, err error) {
	if time.Since(*last) >= warnEvery {
		*last = time.Now()
		w.log.Warn(msg, "err", err)
		return
	}
	w.log.Debug(msg, "err", err)
}

// backoff is the wait after the n-th consecutive bus failure (n from 0).
func backoff(n int) time.Duration {
	d := retryMin << min(n, 10)
	return min(d, retryMax)
}

// sleep waits for d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
