// Package config loads signalbox's Kubernetes-style YAML objects (Knative
// Broker and Trigger, signalbox Sensor), validates them and watches their
// files for changes.
package config

import (
	duckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
)

// API versions and kinds understood by the loader.
const (
	KnativeEventingV1 = "eventing.knative.dev/v1"
	SignalboxV1Alpha1 = "signalbox.dev/v1alpha1"

	KindBroker  = "Broker"
	KindTrigger = "Trigger"
	KindSensor  = "Sensor"
)

// Snapshot is one consistent, validated view of every object loaded from the
// configured paths. A Snapshot is immutable once returned by the loader.
type Snapshot struct {
	Brokers      []Broker
	Triggers     []Trigger
	Sensors      []Sensor
	EventSources []EventSource
}

// Origin says where an object was defined, for error messages and logs.
type Origin struct {
	File string // path as given on the command line or found in a directory
	Line int    // 1-based line of the object's first key
}

// Broker is a Knative Broker: a named topic that accepts events at
// POST /{namespace}/{name}.
type Broker struct {
	Origin Origin
	Object *eventingv1.Broker
}

// Namespace returns the broker's namespace ("default" when unset).
func (b Broker) Namespace() string { return namespaceOr(b.Object.Namespace) }

// Name returns the broker's name.
func (b Broker) Name() string { return b.Object.Name }

// Trigger is a Knative Trigger: a filter over one broker's events and the
// subscriber they are delivered to.
type Trigger struct {
	Origin Origin
	Object *eventingv1.Trigger
}

// Namespace returns the trigger's namespace ("default" when unset).
func (t Trigger) Namespace() string { return namespaceOr(t.Object.Namespace) }

// Name returns the trigger's name.
func (t Trigger) Name() string { return t.Object.Name }

// Sensor is a signalbox Sensor: CEL-selected dependencies and the triggers
// that fire on them.
type Sensor struct {
	Origin     Origin     `json:"-"`
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       SensorSpec `json:"spec"`
}

// Namespace returns the sensor's namespace ("default" when unset).
func (s Sensor) Namespace() string { return namespaceOr(s.Metadata.Namespace) }

// Name returns the sensor's name.
func (s Sensor) Name() string { return s.Metadata.Name }

// ObjectMeta is the subset of Kubernetes object metadata signalbox uses.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// SensorSpec is the body of a Sensor.
type SensorSpec struct {
	// Broker is the name of the broker, in the sensor's namespace, whose
	// events the sensor reads.
	Broker string `json:"broker"`
	// Dependencies are the named event selectors.
	Dependencies []Dependency `json:"dependencies"`
	// Triggers act when their conditions are satisfied.
	Triggers []SensorTrigger `json:"triggers"`
}

// Dependency selects events with a CEL expression over `event` and `data`.
type Dependency struct {
	Name   string `json:"name"`
	Filter string `json:"filter"`
}

// SensorTrigger is one action of a sensor. Exactly one target is set.
type SensorTrigger struct {
	Name string `json:"name"`
	// Conditions is a boolean expression over dependency names; empty means
	// all dependencies.
	Conditions string `json:"conditions,omitempty"`
	// HTTP delivers the event to a URL.
	HTTP *HTTPTarget `json:"http,omitempty"`
	// Delivery has the meaning of a Knative Trigger's spec.delivery.
	Delivery *duckv1.DeliverySpec `json:"delivery,omitempty"`
}

// HTTPTarget delivers events over HTTP as CloudEvents.
type HTTPTarget struct {
	URL string `json:"url"`
	// Method defaults to POST.
	Method string `json:"method,omitempty"`
	// Headers are added to every request.
	Headers map[string]string `json:"headers,omitempty"`
}

func namespaceOr(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}
