package dispatch

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the dispatcher's Prometheus collectors. Every series carries
// the labels broker (the topic, "namespace/name") and trigger (the group).
type metrics struct {
	events      *prometheus.CounterVec   // fetched events by result: matched, filtered
	filterErrs  *prometheus.CounterVec   // filters that could not be evaluated
	attempts    *prometheus.CounterVec   // delivery attempts by outcome
	attemptTime *prometheus.HistogramVec // attempt latency, reply publishing included
	deliveries  *prometheus.CounterVec   // finished events by outcome: delivered, dead_lettered
	deadLetters *prometheus.CounterVec   // dead letters written to the bus
	sinkResults *prometheus.CounterVec   // dead-letter sink deliveries by outcome: delivered, failed
	replies     *prometheus.CounterVec   // replies by result: published, ttl_exhausted, invalid
	held        *prometheus.GaugeVec     // events held: in flight or waiting for a retry

	sensorEvents *prometheus.CounterVec // sensor trigger events by correlation outcome
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	labels := []string{"broker", "trigger"}
	counter := func(name, help string, extra ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "signalbox", Subsystem: "dispatch", Name: name, Help: help,
		}, append(labels, extra...))
	}
	m := &metrics{
		events: counter("events_total",
			"Events read from the bus, by filter result (matched, filtered).", "result"),
		filterErrs: counter("filter_errors_total",
			"Events whose filter could not be evaluated (a missing field, a type error); they count as no match."),
		attempts: counter("attempts_total",
			"Delivery attempts, by outcome (success, retryable, permanent).", "outcome"),
		attemptTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "signalbox", Subsystem: "dispatch", Name: "attempt_duration_seconds",
			Help:    "Duration of a delivery attempt, publishing its replies included.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, labels),
		deliveries: counter("deliveries_total",
			"Events done with, by outcome (delivered, dead_lettered).", "outcome"),
		deadLetters: counter("dead_letters_total",
			"Events written to the trigger's dead-letter log in the bus."),
		sinkResults: counter("dead_letter_sink_total",
			"Dead letters posted to the trigger's deadLetterSink, by outcome (delivered, failed).", "outcome"),
		replies: counter("replies_total",
			"Reply events, by result (published, ttl_exhausted, invalid).", "result"),
		sensorEvents: counter("sensor_events_total",
			"Events a Sensor trigger matched, by what they did: held, fired, resumed (a fire redelivered "+
				"after a crash), duplicate, superseded, expired (held events dropped by the window), "+
				"no_output (a transform yielded nothing), failed (a transform or parameter failed).", "outcome"),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "signalbox", Subsystem: "dispatch", Name: "held_events",
			Help: "Events this replica holds for a trigger: in flight or waiting for a retry.",
		}, labels),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("dispatch: metrics already registered: use one Registerer per Dispatcher")
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.events, m.filterErrs, m.attempts, m.attemptTime, m.deliveries,
		m.deadLetters, m.sinkResults, m.replies, m.held, m.sensorEvents}
}

// forget drops a removed trigger's series.
func (m *metrics) forget(topic, group string) {
	l := prometheus.Labels{"broker": topic, "trigger": group}
	for _, c := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.events, m.filterErrs, m.attempts, m.attemptTime, m.deliveries, m.deadLetters, m.sinkResults,
		m.replies, m.held, m.sensorEvents,
	} {
		c.DeletePartialMatch(l)
	}
}
