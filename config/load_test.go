package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	duckv1 "knative.dev/eventing/pkg/apis/duck/v1"
)

// defaultBroker is appended to inline cases so that their triggers and
// sensors have a broker to refer to; it comes last so that it does not shift
// the line numbers the cases assert.
const defaultBroker = `
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
`

// yamlDoc drops the newline after the opening backquote, so that line 1 of
// the case is the first line written.
func yamlDoc(s string) string { return strings.TrimPrefix(s, "\n") }

// wantErr is an expected problem: its line, its field and part of its
// message (and of its object, when set).
type wantErr struct {
	line   int
	field  string
	msg    string
	object string
}

// assertErrors checks that err is an ErrorList holding exactly the wanted
// problems, all in file.
func assertErrors(t *testing.T, err error, file string, want []wantErr) {
	t.Helper()
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("want an ErrorList, got %T: %v", err, err)
	}
	unmatched := append(ErrorList(nil), list...)
	for _, w := range want {
		found := false
		for i, e := range unmatched {
			if e.Line == w.line && e.Field == w.field && strings.Contains(e.Msg, w.msg) &&
				strings.Contains(e.Object, w.object) {
				if e.File != file {
					t.Errorf("%v: file %q, want %q", e, e.File, file)
				}
				unmatched = append(unmatched[:i], unmatched[i+1:]...)
				found = true
				break
			}
		}
		if !found {
			t.Errorf("missing problem: line %d, field %q, message containing %q", w.line, w.field, w.msg)
		}
	}
	for _, e := range unmatched {
		t.Errorf("unexpected problem: %v", e)
	}
	if t.Failed() {
		t.Logf("all problems:\n%v", list)
	}
}

func TestLoadValidDirectory(t *testing.T) {
	s, err := Load("testdata/valid")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(s.Brokers) != 2 || len(s.Triggers) != 3 || len(s.Sensors) != 1 {
		t.Fatalf("got %d brokers, %d triggers, %d sensors; want 2, 3, 1",
			len(s.Brokers), len(s.Triggers), len(s.Sensors))
	}

	// Files are read in name order, documents in file order.
	b := s.Brokers[1]
	if b.Origin != (Origin{File: filepath.Join("testdata", "valid", "brokers.yaml"), Line: 8}) {
		t.Errorf("broker origin = %+v", b.Origin)
	}
	if b.Namespace() != "shop" || b.Name() != "orders" || *b.Object.Spec.Delivery.Retry != 5 {
		t.Errorf("broker = %s/%s %+v", b.Namespace(), b.Name(), b.Object.Spec.Delivery)
	}
	if s.Brokers[0].Object.Namespace != "default" {
		t.Errorf("broker namespace = %q, want default", s.Brokers[0].Object.Namespace)
	}

	legacy := s.Triggers[0].Object
	if legacy.Namespace != "default" || legacy.Spec.Filter.Attributes["type"] != "dev.example.created" {
		t.Errorf("legacy trigger = %+v", legacy)
	}
	if v, ok := legacy.Spec.Filter.Attributes["myext"]; !ok || v != "" {
		t.Errorf(`attributes["myext"] = %q, %v; want "" present`, v, ok)
	}

	orders := s.Triggers[1]
	spec := orders.Object.Spec
	if orders.Origin.Line != 14 || spec.Broker != "orders" || orders.Object.Labels["team"] != "checkout" {
		t.Errorf("orders trigger = %+v at %+v", orders.Object.ObjectMeta, orders.Origin)
	}
	if len(spec.Filters) != 5 || spec.Filters[0].Exact["type"] != "com.example.order.placed" ||
		spec.Filters[1].Prefix["source"] != "/shop/" || spec.Filters[2].Suffix["subject"] != ".json" ||
		spec.Filters[3].Any[1].CESQL != "myext = 'v' AND priority > 3" ||
		spec.Filters[4].All[0].Not.Exact["subject"] != "test" {
		t.Errorf("filters = %+v", spec.Filters)
	}
	if got := spec.Subscriber.URI.String(); got != "https://orders.example.com/hook?x=1" {
		t.Errorf("subscriber = %q", got)
	}
	d := spec.Delivery
	if *d.Retry != 3 || *d.BackoffPolicy != duckv1.BackoffPolicyExponential || *d.BackoffDelay != "PT0.05S" ||
		*d.Timeout != "PT2S" || *d.RetryAfterMax != "PT10S" || *d.Format != duckv1.DeliveryFormatJson ||
		d.DeadLetterSink.URI.String() != "http://dlq.shop.local/orders" {
		t.Errorf("delivery = %+v", d)
	}

	if got := s.Triggers[2].Object.Spec.Broker; got != "default" {
		t.Errorf("defaulted spec.broker = %q, want default", got)
	}

	sensor := s.Sensors[0]
	if sensor.Origin.Line != 1 || sensor.Namespace() != "default" || sensor.Spec.Broker != "default" {
		t.Errorf("sensor = %+v", sensor)
	}
	fine, log := sensor.Spec.Triggers[0], sensor.Spec.Triggers[1]
	if fine.HTTP.Method != "POST" || fine.HTTP.Headers["X-Source"] != "signalbox" || *fine.Delivery.Retry != 5 ||
		fine.Delivery.DeadLetterSink.URI.String() != "http://dlq.local/" {
		t.Errorf("fine = %+v", fine)
	}
	if log.HTTP.Method != "PUT" {
		t.Errorf("method = %q, want PUT", log.HTTP.Method)
	}
	if c := sensor.Spec.Correlation; c == nil || c.Key != "event.subject" || c.Window != "PT5M" {
		t.Errorf("correlation = %+v", c)
	}
	if fine.Conditions != "plate && speed" || fine.Transform == nil || fine.Transform.JQ == "" ||
		len(fine.Parameters) != 2 || *fine.Parameters[1].Value != "com.example.fine" ||
		fine.ConditionsReset == nil || fine.ConditionsReset.Timezone != "Europe/Berlin" {
		t.Errorf("fine = %+v", fine)
	}
}

func TestLoadBytesDocuments(t *testing.T) {
	data := yamlDoc(`
# comment only before the first separator
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
---
# an empty document
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: a, namespace: default}
spec: {subscriber: {uri: "http://a/"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: b}
spec:
  broker: default
  subscriber: {uri: "http://b/"}
...
`)
	s, err := LoadBytes("many.yaml", []byte(data))
	if err != nil {
		t.Fatalf("LoadBytes: %v", err)
	}
	if len(s.Brokers) != 1 || len(s.Triggers) != 2 {
		t.Fatalf("got %d brokers, %d triggers", len(s.Brokers), len(s.Triggers))
	}
	for i, want := range []Origin{{"many.yaml", 10}, {"many.yaml", 15}} {
		if got := s.Triggers[i].Origin; got != want {
			t.Errorf("trigger %d origin = %+v, want %+v", i, got, want)
		}
	}
}

func TestLoadTriggerErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []wantErr
	}{{
		name: "unknown field",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orders
spec:
  subscribr:
    uri: http://x/
`,
		want: []wantErr{
			{6, "spec.subscribr", `unknown field "subscribr" (did you mean "subscriber"?)`, "Trigger default/orders"},
		},
	}, {
		name: "bad durations",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: orders, namespace: default}
spec:
  subscriber: {uri: http://x/}
  delivery:
    backoffDelay: 5s
    timeout: PT0S
    retryAfterMax: -PT1S
`,
		want: []wantErr{
			{7, "spec.delivery.backoffDelay", `invalid ISO-8601 duration "5s"`, "Trigger default/orders"},
			{8, "spec.delivery.timeout", "must be greater than zero", ""},
			{9, "spec.delivery.retryAfterMax", "must not be negative", ""},
		},
	}, {
		name: "knative delivery rules",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec:
  subscriber: {uri: http://x/}
  delivery:
    retry: -1
    backoffPolicy: quadratic
    format: xml
`,
		want: []wantErr{
			{7, "spec.delivery.retry", "invalid value: -1", ""},
			{8, "spec.delivery.backoffPolicy", "invalid value: quadratic", ""},
			{9, "spec.delivery.format", "invalid value: xml", ""},
		},
	}, {
		// Knative's list validation would put the first error at
		// filters[2][0]; each must be at its own index.
		name: "bad filters",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec:
  filters:
    - cesql: "(((("
    - exact: {type: a}
      prefix: {type: b}
    - all:
        - cesql: "type = 'b'"
        - not:
            cesql: "type ="
    - exact: {Type: a}
    - prefix: {type: ""}
  subscriber: {uri: http://x/}
`,
		want: []wantErr{
			{6, "spec.filters[0].cesql", "invalid value: ((((", ""},
			{7, "spec.filters[1]", "multiple dialects", ""},
			{12, "spec.filters[2].all[1].not.cesql", "not a complete CESQL expression", ""},
			{13, "spec.filters[3].exact[Type]", `invalid key name "Type"`, ""},
			{14, "spec.filters[4].prefix[type]", "value must not be empty", ""},
		},
	}, {
		name: "bad attribute filter",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec:
  filter:
    attributes:
      type: ok
      my.ext: x
  subscriber: {uri: http://x/}
`,
		want: []wantErr{{8, "spec.filter.attributes[my.ext]", `invalid key name "my.ext"`, ""}},
	}, {
		name: "unknown broker",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: shop}
spec:
  broker: default
  subscriber: {uri: http://x/}
`,
		want: []wantErr{{5, "spec.broker", `broker "default" is not defined in namespace "shop"`, "Trigger shop/t"}},
	}, {
		name: "defaulted broker missing",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: shop}
spec:
  subscriber: {uri: http://x/}
`,
		want: []wantErr{{4, "spec.broker", `(spec.broker defaults to "default")`, ""}},
	}, {
		name: "subscriber without uri",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec:
  broker: default
`,
		want: []wantErr{{4, "spec.subscriber.uri", "missing field: a uri is required", ""}},
	}, {
		name: "subscriber ref",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec:
  subscriber:
    ref:
      apiVersion: v1
      kind: Service
      name: svc
`,
		want: []wantErr{{6, "spec.subscriber.ref", "use uri", ""}},
	}, {
		name: "bad uris",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec:
  subscriber:
    uri: /relative
  delivery:
    deadLetterSink:
      uri: ftp://dlq/
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: u}
spec:
  subscriber:
    uri: "http://[::1"
  delivery:
    deadLetterSink:
      ref: {apiVersion: v1, kind: Service, name: dlq}
`,
		want: []wantErr{
			{6, "spec.subscriber.uri", `absolute http or https URL, got "/relative"`, ""},
			{9, "spec.delivery.deadLetterSink.uri", `absolute http or https URL, got "ftp://dlq/"`, ""},
			{16, "spec.subscriber.uri", "missing ']' in host", "Trigger default/u"},
			{19, "spec.delivery.deadLetterSink.ref", "use uri", ""},
		},
	}, {
		name: "wrong types and duplicate keys",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t
  name: u
spec:
  subscriber: {uri: http://x/}
  delivery:
    retry: three
    format: [json]
`,
		want: []wantErr{
			{5, "metadata.name", `duplicate key "name" (first at line 4)`, ""},
			{9, "spec.delivery.retry", `expected an integer, got string "three"`, ""},
			{10, "spec.delivery.format", "expected a string, got a list", ""},
		},
	}, {
		name: "names",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: Orders_1, namespace: x.y}
spec: {subscriber: {uri: http://x/}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {namespace: default}
spec: {subscriber: {uri: http://x/}}
`,
		want: []wantErr{
			{3, "metadata.name", `invalid name "Orders_1"`, ""},
			{3, "metadata.namespace", `invalid name "x.y"`, ""},
			{8, "metadata.name", "missing field", ""},
			{4, "spec.broker", `broker "default" is not defined in namespace "x.y"`, ""},
		},
	}, {
		name: "brokerRef",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec:
  brokerRef: {name: default}
  subscriber: {uri: http://x/}
`,
		want: []wantErr{{5, "spec.brokerRef", "not supported", ""}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadBytes("triggers.yaml", []byte(yamlDoc(tt.yaml)+defaultBroker))
			assertErrors(t, err, "triggers.yaml", tt.want)
		})
	}
}

func TestLoadDocumentErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []wantErr
	}{{
		name: "kinds",
		yaml: `
apiVersion: example.com/v1
kind: Widget
---
apiVersion: eventing.knative.dev/v1beta1
kind: Trigger
metadata: {name: t}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: gh}
---
metadata: {name: nothing}
---
- a list
`,
		want: []wantErr{
			{2, "kind", `unknown kind "Widget" (apiVersion "example.com/v1")`, "Widget"},
			{4, "apiVersion", `unknown apiVersion "eventing.knative.dev/v1beta1" for kind Trigger`, "Trigger default/t"},
			{8, "spec", "exactly one source kind is required", "EventSource default/gh"},
			{12, "apiVersion", "missing field", ""},
			{12, "kind", "missing field", ""},
			{14, "", "expected an object (a YAML mapping), got a list", ""},
		},
	}, {
		name: "syntax error",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t
   broken: indentation
`,
		want: []wantErr{{5, "", "invalid YAML: mapping values are not allowed in this context", ""}},
	}, {
		name: "parser error",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
 spec: {}
`,
		want: []wantErr{{4, "", "invalid YAML: did not find expected key", ""}},
	}, {
		name: "syntax error after a good document",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: other}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: "t}
`,
		want: []wantErr{{7, "", "invalid YAML", ""}},
	}, {
		name: "duplicate names in one file",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec: {subscriber: {uri: http://x/}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: default}
spec: {subscriber: {uri: http://y/}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: other}
spec: {subscriber: {uri: http://y/}}
---
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: t}
spec:
  broker: default
  dependencies: [{name: a, filter: 'true'}]
  triggers: [{name: x, http: {url: 'http://x/'}}]
`,
		want: []wantErr{
			{8, "metadata.name", `duplicate Trigger "t" in namespace "default": also defined at triggers.yaml:1`, ""},
			// The trigger in namespace other has no broker there.
			{14, "spec.broker", `broker "default" is not defined in namespace "other"`, ""},
		},
	}, {
		name: "alias cycle",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t
  managedFields:
    - fieldsV1: &loop {a: [*loop]}
spec: {subscriber: {uri: http://x/}}
`,
		want: []wantErr{{6, "metadata.managedFields[0].fieldsV1[a][0]", "refers to a node that contains it", ""}},
	}, {
		name: "merge keys",
		yaml: `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec:
  subscriber: {uri: http://x/}
  delivery:
    <<: &base {retry: 3, backoffPolicy: bogus}
    backoffPolicy: linear
    retrry: 1
`,
		want: []wantErr{{9, "spec.delivery.retrry", `did you mean "retry"`, ""}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadBytes("triggers.yaml", []byte(yamlDoc(tt.yaml)+defaultBroker))
			assertErrors(t, err, "triggers.yaml", tt.want)
		})
	}
}

func TestLoadSensorErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []wantErr
	}{{
		name: "unknown condition name",
		yaml: `
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar}
spec:
  broker: default
  dependencies:
    - name: plate
      filter: 'event.type == "radar.plate.read"'
  triggers:
    - name: fine
      conditions: 'plate && !speed'
      http: {url: 'http://fines.local/'}
    - name: other
      conditions: 'plate && (plate ||'
      http: {url: 'http://fines.local/'}
`,
		want: []wantErr{
			{11, "spec.triggers[0].conditions", `unknown dependency "speed"`, "Sensor default/radar"},
			{14, "spec.triggers[1].conditions", "expected a dependency name at the end", ""},
		},
	}, {
		name: "bad CEL",
		yaml: `
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar}
spec:
  broker: default
  dependencies:
    - name: plate
      filter: 'event.type == '
  triggers:
    - name: fine
      http: {url: 'http://fines.local/'}
`,
		want: []wantErr{{8, "spec.dependencies[0].filter", "Syntax error", ""}},
	}, {
		name: "CEL that is not a condition",
		yaml: `
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar}
spec:
  broker: default
  dependencies:
    - name: plate
      filter: 'event.type + "x"'
  triggers:
    - name: fine
      http: {url: 'http://fines.local/'}
`,
		want: []wantErr{{8, "spec.dependencies[0].filter", "want bool", ""}},
	}, {
		name: "dependencies",
		yaml: `
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar}
spec:
  broker: default
  dependencies:
    - name: 1plate
      filter: 'true'
    - name: 'true'
      filter: ''
    - name: 1plate
      filter: 'true'
  triggers:
    - name: fine
      http: {url: 'http://fines.local/'}
`,
		want: []wantErr{
			{7, "spec.dependencies[0].name", "must match [a-zA-Z_][a-zA-Z0-9_]*", ""},
			{9, "spec.dependencies[1].name", "reserved word", ""},
			{10, "spec.dependencies[1].filter", "missing field", ""},
			{11, "spec.dependencies[2].name", "must match", ""},
		},
	}, {
		name: "empty sensor",
		yaml: `
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: Radar}
spec: {}
`,
		want: []wantErr{
			{3, "metadata.name", `invalid name "Radar"`, ""},
			{4, "spec.broker", "missing field", ""},
			{4, "spec.dependencies", "missing field", ""},
			{4, "spec.triggers", "missing field", ""},
		},
	}, {
		name: "triggers",
		yaml: `
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar, namespace: shop}
spec:
  broker: orders
  dependencies: [{name: a, filter: 'true'}]
  triggers:
    - name: fine
    - name: fine
      http: {url: 'mailto:x@y', method: FETCH}
    - name: Bad_Name
      lambda: {function: f}
    - name: late
      http: {url: 'http://x/'}
      transform: {jq: '.'}
      delivery: {timeout: PT0.05S, backoffDelay: 1s, deadLetterSink: {}}
`,
		want: []wantErr{
			{5, "spec.broker", `broker "orders" is not defined in namespace "shop"`, "Sensor shop/radar"},
			{8, "spec.triggers[0]", "exactly one target is required (supported target kinds: http, lambda, openwhisk, kubernetes)", ""},
			{9, "spec.triggers[1].name", `duplicate trigger name "fine"`, ""},
			{10, "spec.triggers[1].http.url", "absolute http or https URL", ""},
			{10, "spec.triggers[1].http.method", `unknown HTTP method "FETCH"`, ""},
			{11, "spec.triggers[2].name", `invalid name "Bad_Name"`, ""},
			{12, "spec.triggers[2].lambda.function", `unknown field "function"`, ""},
			{12, "spec.triggers[2].lambda.functionName", "missing field", ""},
			{16, "spec.triggers[3].delivery.backoffDelay", `invalid ISO-8601 duration "1s"`, ""},
			{16, "spec.triggers[3].delivery.deadLetterSink.uri", "missing field", ""},
		},
	}, {
		name: "correlation",
		yaml: `
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar}
spec:
  broker: default
  dependencies: [{name: a, filter: 'true'}, {name: b, filter: 'true'}]
  correlation:
    key: 'event.subject +'
    window: 5m
  triggers: [{name: x, http: {url: 'http://x/'}}]
---
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar2}
spec:
  broker: default
  dependencies: [{name: a, filter: 'true'}]
  correlation: {window: PT0S}
  triggers: [{name: x, http: {url: 'http://x/'}}]
---
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar3}
spec:
  broker: default
  dependencies: [{name: a, filter: 'true'}]
  correlation: {}
  triggers: [{name: x, http: {url: 'http://x/'}}]
`,
		want: []wantErr{
			{8, "spec.correlation.key", "Syntax error", "Sensor default/radar"},
			{9, "spec.correlation.window", `invalid ISO-8601 duration "5m"`, ""},
			{18, "spec.correlation.window", "must be greater than zero", "Sensor default/radar2"},
			{27, "spec.correlation", "set key, window or both", "Sensor default/radar3"},
		},
	}, {
		name: "conditions over several dependencies",
		yaml: `
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar}
spec:
  broker: default
  dependencies:
    - {name: dep1, filter: 'true'}
    - {name: dep2, filter: 'true'}
    - {name: dep3, filter: 'true'}
  triggers:
    - name: ok
      conditions: 'dep1 || (dep2 && !dep3)'
      http: {url: 'http://x/'}
    - name: bad
      conditions: 'dep1 || (dep2 && dep4)'
      http: {url: 'http://x/'}
`,
		want: []wantErr{
			{15, "spec.triggers[1].conditions", `unknown dependency "dep4" (dependencies: dep1, dep2, dep3)`,
				"Sensor default/radar"},
		},
	}, {
		name: "conditionsReset",
		yaml: `
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar}
spec:
  broker: default
  dependencies: [{name: a, filter: 'true'}, {name: b, filter: 'true'}]
  triggers:
    - name: ok
      conditionsReset: {cron: '0 0 * * *', timezone: Europe/Berlin}
      http: {url: 'http://x/'}
    - name: daily
      conditionsReset: {cron: '@daily'}
      http: {url: 'http://x/'}
    - name: badcron
      conditionsReset: {cron: '61 * * * *'}
      http: {url: 'http://x/'}
    - name: badtz
      conditionsReset:
        cron: '0 0 * * *'
        timezone: Mars/Olympus
      http: {url: 'http://x/'}
    - name: nocron
      conditionsReset: {timezone: UTC}
      http: {url: 'http://x/'}
    - name: tzincron
      conditionsReset: {cron: 'CRON_TZ=UTC 0 0 * * *'}
      http: {url: 'http://x/'}
`,
		want: []wantErr{
			{15, "spec.triggers[2].conditionsReset.cron", `invalid cron expression "61 * * * *"`, ""},
			{20, "spec.triggers[3].conditionsReset.timezone", `unknown time zone "Mars/Olympus"`, ""},
			{23, "spec.triggers[4].conditionsReset.cron", "missing field", ""},
			{26, "spec.triggers[5].conditionsReset.cron", "timezone field", ""},
		},
	}, {
		name: "transform and parameters",
		yaml: `
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar}
spec:
  broker: default
  dependencies: [{name: plate, filter: 'true'}, {name: speed, filter: 'true'}]
  triggers:
    - name: ok
      transform: {jq: '{plate: .plate.data.text}'}
      parameters:
        - {src: 'speed.data.kmh', dest: body.kmh}
        - {src: '"/fines/" + plate.data.text', dest: http.url, operation: append}
        - {value: 'radar', dest: http.headers.X-Origin}
        - {value: 'com.example.fine', dest: event.type}
        - {src: 'plate.subject', dest: event.subject, operation: prepend}
      http: {url: 'http://x/'}
    - name: bad
      transform: {jq: '.', lua: 'function transform(i) return i end'}
      parameters:
        - {dest: body.x}
        - {src: 'speed.data.kmh', value: 'x', dest: body.x}
        - {src: 'sped.data', dest: 'body..x'}
        - {src: '1', dest: http.headers.Ce-Id}
        - {src: '1', dest: kubernetes.spec.replicas}
        - {src: '1', dest: http.method, operation: replace}
        - {src: '1'}
      http: {url: 'http://x/'}
    - name: empty
      transform: {}
      http: {url: 'http://x/'}
    - name: badjq
      transform: {jq: '{plate: .plate.data.text'}
      http: {url: 'http://x/'}
    - name: badlua
      transform:
        lua: 'function other(i) return i end'
      http: {url: 'http://x/'}
`,
		want: []wantErr{
			{18, "spec.triggers[1].transform", "set only one of jq and lua", ""},
			{20, "spec.triggers[1].parameters[0].src", "missing field", ""},
			{21, "spec.triggers[1].parameters[1].value", "set only one of src and value", ""},
			{22, "spec.triggers[1].parameters[2].src", "undeclared reference to 'sped'", ""},
			{22, "spec.triggers[1].parameters[2].dest", "a field name is empty", ""},
			{23, "spec.triggers[1].parameters[3].dest", "carries the CloudEvent", ""},
			{24, "spec.triggers[1].parameters[4].dest", "only for kubernetes targets", ""},
			{25, "spec.triggers[1].parameters[5].dest", `unknown destination "http.method"`, ""},
			{25, "spec.triggers[1].parameters[5].operation", `unknown operation "replace"`, ""},
			{26, "spec.triggers[1].parameters[6].dest", "missing field", ""},
			{29, "spec.triggers[2].transform", "set one of jq and lua", ""},
			{32, "spec.triggers[3].transform.jq", "jq: line 1, column", ""},
			{36, "spec.triggers[4].transform.lua", "lua:", ""},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadBytes("sensors.yaml", []byte(yamlDoc(tt.yaml)+defaultBroker))
			assertErrors(t, err, "sensors.yaml", tt.want)
		})
	}
}

func TestLoadBrokerErrors(t *testing.T) {
	data := yamlDoc(`
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: b}
spec:
  delivery:
    backoffDelay: PT1M30
    deadLetterSink: {uri: 'dlq.local'}
  config: {kind: ConfigMap}
`)
	_, err := LoadBytes("brokers.yaml", []byte(data))
	assertErrors(t, err, "brokers.yaml", []wantErr{
		{6, "spec.delivery.backoffDelay", `invalid ISO-8601 duration "PT1M30"`, "Broker default/b"},
		{7, "spec.delivery.deadLetterSink.uri", "absolute http or https URL", ""},
		// Knative's own rules for the config reference still apply.
		{8, "spec.config.name", "missing field", ""},
		{8, "spec.config.apiVersion", "missing field", ""},
	})
}

func TestLoadAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(yamlDoc(data)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", `
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
`)
	write("b.yml", `
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec: {subscriber: {uri: http://x/}}
`)
	write("c.yaml", `
# a second definition of the same trigger
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t}
spec: {subscriber: {uri: http://y/}}
`)
	write(".hidden.yaml", "not: [valid")
	write("notes.txt", "not: [valid")
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}

	_, err := Load(dir)
	assertErrors(t, err, filepath.Join(dir, "c.yaml"), []wantErr{{
		4, "metadata.name", `duplicate Trigger "t" in namespace "default": also defined at ` +
			filepath.Join(dir, "b.yml") + ":1", "",
	}})

	// A file given twice, directly and through its directory, is read once.
	if err := os.Remove(filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}
	s, err := Load(filepath.Join(dir, "b.yml"), dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(s.Triggers) != 1 || len(s.Brokers) != 1 {
		t.Errorf("got %d triggers, %d brokers; want 1, 1", len(s.Triggers), len(s.Brokers))
	}
}

func TestLoadMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(missing)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want fs.ErrNotExist", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.File != missing {
		t.Errorf("err = %#v, want an *Error naming %s", err, missing)
	}
	if _, err := Load(); err == nil {
		t.Error("Load() with no paths succeeded")
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{File: "triggers.yaml", Line: 14, Object: "Trigger default/orders", Field: "spec.delivery.backoffDelay",
			Msg: `invalid ISO-8601 duration "5s"`},
			`triggers.yaml:14: Trigger default/orders: spec.delivery.backoffDelay: invalid ISO-8601 duration "5s"`},
		{Error{File: "a.yaml", Msg: "cannot read"}, "a.yaml: cannot read"},
		{Error{Msg: "no configuration paths given"}, "no configuration paths given"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	list := ErrorList{&tests[0].err, &tests[1].err}
	if got := list.Error(); got != tests[0].want+"\n"+tests[1].want {
		t.Errorf("ErrorList.Error() = %q", got)
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"PT0.2S", 200 * time.Millisecond, ""},
		{"PT0.05S", 50 * time.Millisecond, ""},
		{"PT0.000000001S", time.Nanosecond, ""},
		{"PT1M30S", 90 * time.Second, ""},
		{"PT1.5M", 90 * time.Second, ""},
		{"PT0,5S", 500 * time.Millisecond, ""},
		{"P1DT2H", 26 * time.Hour, ""},
		{"P2W", 14 * 24 * time.Hour, ""},
		{"PT0S", 0, ""},
		{"-PT1S", -time.Second, ""},
		{"5s", 0, `must start with "P"`},
		{"P", 0, "no components"},
		{"PT", 0, `no components after "T"`},
		{"P1M", 0, "no fixed length"},
		{"P1Y", 0, "no fixed length"},
		{"PT5", 0, "no unit"},
		{"PT1S2M", 0, "out of order"},
		{"PT1H1H", 0, "out of order"},
		{"P5H", 0, `before "T"`},
		{"PT1.S", 0, "without digits"},
		{"PT1X", 0, "unknown unit"},
		{"PT999999999999H", 0, "too long"},
		{"PT1/2S", 0, "unknown unit"},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("ParseDuration(%q): %v", tt.in, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("ParseDuration(%q) error = %v, want one containing %q", tt.in, err, tt.err)
		case got != tt.want:
			t.Errorf("ParseDuration(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
