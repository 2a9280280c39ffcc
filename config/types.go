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
	// Correlation pairs the events of several dependencies; nil holds the
	// latest event of each dependency until its trigger fires.
	Correlation *Correlation `json:"correlation,omitempty"`
	// Triggers act when their conditions are satisfied.
	Triggers []SensorTrigger `json:"triggers"`
}

// Correlation says which held events belong together and for how long a
// partial match waits for the rest.
type Correlation struct {
	// Key is a CEL expression over `event` and `data`, evaluated on each
	// matched event; only events with equal keys fire together. It must yield
	// a string, number, bool, bytes or timestamp (compared by its string
	// form). Empty means no key: the latest event of each dependency.
	Key string `json:"key,omitempty"`
	// Window is an ISO-8601 duration: a held event expires this long after
	// it arrived (knativearrivaltime), so a match fires only with events that
	// arrived within Window of its first one. Empty means held events never
	// expire.
	Window string `json:"window,omitempty"`
}

// ConditionsReset clears a trigger's held events on a schedule, so that a
// partial match left over from one period never completes in the next.
type ConditionsReset struct {
	// Cron is a standard five-field cron expression ("0 0 * * *") or a
	// descriptor such as "@daily". Required.
	Cron string `json:"cron"`
	// Timezone is an IANA time zone name the schedule is read in; empty
	// means UTC.
	Timezone string `json:"timezone,omitempty"`
}

// Transform turns a trigger's input object (keyed by dependency name) into
// the outgoing event's data. Exactly one program is set.
type Transform struct {
	// JQ is a jq program; each value it yields becomes one outgoing event,
	// and no value sends nothing.
	JQ string `json:"jq,omitempty"`
	// Lua is a Lua script defining function transform(input) that returns
	// the data.
	Lua string `json:"lua,omitempty"`
}

// Parameter sets one part of the outgoing request from the trigger's input
// object, as Argo Events' trigger parameters do.
type Parameter struct {
	// Src is a CEL expression whose variables are the dependency names, each
	// the event that took part in CloudEvents JSON form (speed.data.kmh,
	// plate.subject), or null when it took no part. Exactly one of Src and
	// Value is set.
	Src string `json:"src,omitempty"`
	// Value is a literal string used instead of Src.
	Value *string `json:"value,omitempty"`
	// Dest is where the value goes: http.url, http.headers.<Name>, body (the
	// whole data), body.<a.b.c> (a field of JSON data), event.type,
	// event.source or event.subject. Required.
	Dest string `json:"dest"`
	// Operation is overwrite (the default), append or prepend.
	Operation string `json:"operation,omitempty"`
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
	// ConditionsReset clears the events held for this trigger on a schedule.
	ConditionsReset *ConditionsReset `json:"conditionsReset,omitempty"`
	// HTTP delivers the event to a URL.
	HTTP *HTTPTarget `json:"http,omitempty"`
	// Lambda invokes an AWS Lambda function with the event.
	Lambda *LambdaTarget `json:"lambda,omitempty"`
	// OpenWhisk invokes an Apache OpenWhisk action with the event.
	OpenWhisk *OpenWhiskTarget `json:"openwhisk,omitempty"`
	// Kubernetes creates, updates, patches or deletes a Kubernetes object.
	Kubernetes *KubernetesTarget `json:"kubernetes,omitempty"`
	// Transform computes the outgoing event's data; nil sends the input
	// object (or, for a condition on one dependency, that event unchanged).
	Transform *Transform `json:"transform,omitempty"`
	// Parameters set parts of the outgoing request and event, in order.
	Parameters []Parameter `json:"parameters,omitempty"`
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
