package dispatch

import (
	"context"
	"errors"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/dispatch/celexpr"
	"github.com/signalbox-dev/signalbox/functions"
)

// acceptSensor matches a decoded event against a Sensor trigger's
// dependencies and queues it for correlation (or, for a stateless trigger,
// straight for firing). Events no dependency matches are acknowledged.
func (w *worker) acceptSensor(m broker.Message, ev *event.Event) {
	ss := w.spec.sensor
	in := celexpr.NewInput(ev)
	var deps []string
	var nerr int
	var lastErr error
	if !ss.never {
		deps, nerr, lastErr = ss.match(in)
	}
	if nerr > 0 {
		w.filterErrs.Add(float64(nerr))
		w.log.Debug("dependency filter could not be evaluated; no match", "event_id", ev.ID(), "err", lastErr)
	}
	if len(deps) == 0 {
		w.filtered.Inc()
		w.log.Debug("event filtered out", "event_id", ev.ID())
		w.acks <- m.ID
		return
	}
	h := &held{msg: m, ev: ev, attempts: m.Attempts, deps: deps, phase: phaseCorrelate}
	if ss.stateless {
		h.phase = phaseFire
	}
	if !ss.forward {
		key, err := ss.correlationKey(in)
		if err != nil {
			// An event without a key cannot be correlated with anything.
			w.filterErrs.Inc()
			w.filtered.Inc()
			w.log.Debug("correlation key could not be computed; no match", "event_id", ev.ID(), "err", err)
			w.acks <- m.ID
			return
		}
		h.key = key
	}
	w.matched.Inc()
	w.hold(h)
}

// correlate adds h's event to the trigger's correlation state. It reports
// whether h moved on to firing; otherwise h is acknowledged, or retried
// later when the bus failed.
func (w *worker) correlate(h *held) bool {
	ss := w.spec.sensor
	if h.heldEv == nil {
		he, err := newHeldEvent(h.ev, time.Now())
		if err != nil {
			w.failFire(h, nil, err)
			return true
		}
		h.heldEv = he
	}

	var outcome addOutcome
	var f *firing
	var expired int
	ctx, cancel := context.WithTimeout(context.Background(), busOpTimeout)
	err := ss.updateState(ctx, w.spec.key.topic, w.spec.key.group, h.key, func(st *stateEntry) (bool, error) {
		var err error
		outcome, f, expired, err = st.add(ss, h.deps, h.heldEv)
		return outcome == addHeld || outcome == addFired || expired > 0, err
	})
	cancel()
	if err != nil {
		w.stateFailed(h, "cannot update the correlation state; will retry", err)
		return false
	}
	h.busFailures = 0
	if expired > 0 {
		w.sensorEvents.WithLabelValues("expired").Add(float64(expired))
	}
	w.sensorEvents.WithLabelValues(outcome.String()).Inc()
	w.log.Debug("event correlated", "event_id", h.ev.ID(), "key", h.key, "outcome", outcome.String(),
		"expired", expired)

	if outcome != addFired && outcome != addResume {
		w.done(h)
		return false
	}
	h.fire = &fireInput{id: f.ID, key: h.key, keyed: ss.key != nil, events: f.Events}
	h.settleID = f.ID
	h.phase = phaseFire
	return true
}

// fire builds the events h's fire sends and moves h on to delivering them,
// or to the dead letters when they cannot be built.
func (w *worker) fire(h *held) bool {
	ss := w.spec.sensor
	if h.fire == nil { // a stateless trigger: the event fires alone
		h.fire = &fireInput{key: h.key, keyed: ss.key != nil}
		if !ss.forward || len(ss.params) > 0 {
			he, err := newHeldEvent(h.ev, time.Now())
			if err != nil {
				w.failFire(h, nil, err)
				return true
			}
			h.fire.events = map[string]*heldEvent{h.deps[0]: he}
			h.fire.id = fireID(ss.trigger, h.fire.events)
		}
	}

	outs, err := ss.build(w.attemptCtx, h.fire, h.ev, h.msg.Payload)
	if err != nil && errors.Is(context.Cause(w.attemptCtx), errShutdown) {
		return false // the transform was cut short: the event goes back to the bus
	}
	if err != nil {
		w.failFire(h, h.fire, err)
		return true
	}
	if len(outs) == 0 {
		w.sensorEvents.WithLabelValues("no_output").Inc()
		w.log.Debug("transform yielded nothing; nothing sent", "event_id", h.ev.ID(), "fire_id", h.fire.id)
		return w.finish(h)
	}
	h.out = outs
	h.phase = phaseDeliver
	if h.attempts >= w.spec.policy.Attempts() {
		// The last attempt was made before a restart, but the fire was not
		// dead-lettered yet.
		h.phase = phaseDeadLetter
		h.reason = "attempts made before a restart"
		h.last.Status = functions.NoResponse
	}
	return true
}

// failFire sends the event set of a fire that cannot be built to the dead
// letters: as a fired event whose data is the input object, with the error
// as the reason.
func (w *worker) failFire(h *held, f *fireInput, err error) {
	ss := w.spec.sensor
	w.sensorEvents.WithLabelValues("failed").Inc()
	o := outgoing{ev: h.ev, target: ss.target, raw: h.msg.Payload}
	if f != nil && len(f.events) > 0 {
		data, ierr := f.input()
		if ierr == nil {
			o = outgoing{ev: ss.firedEvent(f, data), target: ss.target}
		}
	}
	h.out = []outgoing{o}
	h.phase = phaseDeadLetter
	h.reason = err.Error()
	h.last = functions.Outcome{Status: functions.NoResponse, Err: err}
	w.log.Warn("sensor trigger cannot build its event; the event set goes to the dead letters",
		"event_id", h.ev.ID(), "err", err)
}

// settle removes h's delivered (or dead-lettered) fire from the correlation
// state and acknowledges h.
func (w *worker) settle(h *held) bool {
	ss := w.spec.sensor
	ctx, cancel := context.WithTimeout(context.Background(), busOpTimeout)
	err := ss.updateState(ctx, w.spec.key.topic, w.spec.key.group, h.key, func(st *stateEntry) (bool, error) {
		return st.settle(h.settleID), nil
	})
	cancel()
	if err != nil {
		w.stateFailed(h, "cannot record a fire as done; will retry", err)
		return false
	}
	h.busFailures = 0
	h.settleID = ""
	w.done(h)
	return false
}

// stateFailed schedules h again after a failed state operation.
func (w *worker) stateFailed(h *held, msg string, err error) {
	wait := backoff(h.busFailures)
	h.busFailures++
	w.log.Warn(msg, "event_id", h.ev.ID(), "message_id", h.msg.ID, "retry_in", wait, "err", err)
	w.schedule(h, wait)
}

// resetLoop clears the trigger's correlation state at each tick of its
// conditionsReset schedule. Every replica does it; purging twice is
// harmless.
func (w *worker) resetLoop() {
	defer close(w.resetDone)
	ss := w.spec.sensor
	for {
		next := ss.reset.Next(time.Now())
		if next.IsZero() {
			return // a schedule that never fires again
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-w.resetStop:
			t.Stop()
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), busOpTimeout)
		err := ss.store.PurgeState(ctx, w.spec.key.topic, w.spec.key.group)
		cancel()
		if err != nil {
			w.log.Warn("conditionsReset: cannot clear the held events", "err", err)
			continue
		}
		w.log.Info("conditionsReset: held events cleared")
	}
}
