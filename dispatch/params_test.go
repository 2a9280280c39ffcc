package dispatch

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/signalbox-dev/signalbox/config"
)

func TestSetPath(t *testing.T) {
	tests := []struct {
		data, op string
		path     []string
		v        any
		want     string
		wantErr  bool
	}{
		{`{"a":1}`, "overwrite", []string{"b", "c"}, "x", `{"a":1,"b":{"c":"x"}}`, false},
		{`{"a":"km"}`, "prepend", []string{"a"}, "91 ", `{"a":"91 km"}`, false},
		{`{"a":[1]}`, "append", []string{"a"}, int64(2), `{"a":[1,2]}`, false},
		{`{"a":[1]}`, "prepend", []string{"a"}, []any{int64(0)}, `{"a":[0,1]}`, false},
		{`{"a":[{"b":1}]}`, "overwrite", []string{"a", "0", "b"}, true, `{"a":[{"b":true}]}`, false},
		{`{"n":90071992547409930}`, "append", []string{"n"}, "!", `{"n":"90071992547409930!"}`, false},
		{`null`, "overwrite", nil, map[string]any{"k": "v"}, `{"k":"v"}`, false},
		{`{"a":"s"}`, "overwrite", []string{"a", "b"}, 1, ``, true},
		{`{"a":[1]}`, "overwrite", []string{"a", "5"}, 1, ``, true},
	}
	for _, tt := range tests {
		var data any
		d := json.NewDecoder(stringsReader(tt.data))
		d.UseNumber()
		if err := d.Decode(&data); err != nil {
			t.Fatal(err)
		}
		got, err := setPath(data, tt.path, tt.v, tt.op)
		if tt.wantErr {
			if err == nil {
				t.Errorf("setPath(%s, %v) succeeded", tt.data, tt.path)
			}
			continue
		}
		b, _ := json.Marshal(got)
		if err != nil || string(b) != tt.want {
			t.Errorf("setPath(%s, %v, %v, %s) = %s, %v; want %s", tt.data, tt.path, tt.v, tt.op, b, err, tt.want)
		}
	}
}

func TestKeyString(t *testing.T) {
	for v, want := range map[any]string{"a": "a", int64(7): "7", uint64(7): "7", 1.0: "1", 2.5: "2.5", true: "true"} {
		if got, err := keyString(v); err != nil || got != want {
			t.Errorf("keyString(%#v) = %q, %v; want %q", v, got, err, want)
		}
	}
	for _, v := range []any{nil, []any{}, map[string]any{}} {
		if _, err := keyString(v); err == nil {
			t.Errorf("keyString(%#v) accepted", v)
		}
	}
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// A parameter sees a dependency that took no part in a fire as null.
func TestParametersSeeMissingDependenciesAsNull(t *testing.T) {
	sn := &config.Sensor{Spec: config.SensorSpec{Dependencies: []config.Dependency{
		{Name: "a", Filter: "true"}, {Name: "b", Filter: "true"}}}}
	st := &config.SensorTrigger{Name: "t", Conditions: "a || b", Parameters: []config.Parameter{
		{Src: `b != null ? b.data.x : "no b"`, Dest: "body.b"},
		{Src: `a.id`, Dest: "event.subject"},
	}}
	ss := &sensorSpec{trigger: "t", source: "/default/sensors/s/t"}
	if err := ss.compile(sn, st); err != nil {
		t.Fatal(err)
	}
	a := he("a-1", 1)
	a.Event = []byte(`{"id":"a-1","data":{"x":1}}`)
	f := &fireInput{id: "f", events: map[string]*heldEvent{"a": a}}
	outs, err := ss.build(context.Background(), f, nil, nil)
	if err != nil || len(outs) != 1 {
		t.Fatalf("build = %v, %v", outs, err)
	}
	var data map[string]any
	if err := json.Unmarshal(outs[0].ev.Data(), &data); err != nil || data["b"] != "no b" ||
		outs[0].ev.Subject() != "a-1" {
		t.Errorf("data %s, subject %q", outs[0].ev.Data(), outs[0].ev.Subject())
	}
}
