package dispatch

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/config"
)

// jsonEqual reports whether two JSON texts hold the same value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

// Transforms produce the outgoing data; a jq program may send one event per
// value or none; a transform that fails, loops or allocates without bound is
// dead-lettered with its error, and the worker goes on.
func TestSensorTransforms(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, reg := newDispatcher(t, Config{Bus: bus})

	const br16 = `{"name":"x","info":{},"list":[],"tags":["a"],"note":null,"nested":{"arr":[[]]}}`
	tests := []struct {
		name      string
		transform config.Transform
		want      []string // data of each event sent, compared as JSON
		deadLet   string   // part of the dead letter's reason, when it fails
	}{
		{name: "jq-object", transform: config.Transform{JQ: `{name: .ev.data.name, n: (.ev.data.tags | length)}`},
			want: []string{`{"name":"x","n":1}`}},
		{name: "jq-several", transform: config.Transform{JQ: `.ev.data.tags[], .ev.data.name`},
			want: []string{`"a"`, `"x"`}},
		{name: "jq-none", transform: config.Transform{JQ: `empty`}},
		// Field case BR-16: Lua keeps [] and {} apart and keeps nulls.
		{name: "lua-br16", transform: config.Transform{
			Lua: `function transform(input) input.ev.data.age = 111; return input.ev.data end`},
			want: []string{`{"name":"x","info":{},"list":[],"tags":["a"],"note":null,"nested":{"arr":[[]]},"age":111}`}},
		{name: "lua-identity", transform: config.Transform{Lua: `function transform(input) return input.ev.data end`},
			want: []string{br16}},
		{name: "lua-loop", transform: config.Transform{Lua: `function transform(input) while true do end end`},
			deadLet: "instruction budget"},
		{name: "lua-alloc", transform: config.Transform{
			Lua: `function transform(input) local s = "x" while true do s = s .. s end end`},
			deadLet: "memory budget"},
		{name: "lua-os", transform: config.Transform{
			Lua: `function transform(input) os.execute("touch /tmp/signalbox-pwned") return input end`},
			deadLet: "execute"},
	}
	snap := snapshot(nil)
	subs := map[string]*recorder{}
	for _, tt := range tests {
		subs[tt.name] = newRecorder(t, nil)
		tr := config.SensorTrigger{Name: tt.name, HTTP: &config.HTTPTarget{URL: subs[tt.name].URL()},
			Transform: &tt.transform}
		snap.Sensors = append(snap.Sensors, sensor("s-"+tt.name,
			config.Dependency{Name: "ev", Filter: `event.type == "t"`}, tr))
	}
	apply(t, d, snap)
	publish(t, bus, newEvent("br16", "t", br16))

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			group := SensorGroup("s-"+tt.name, tt.name)
			sub := subs[tt.name]
			switch {
			case tt.deadLet != "":
				eventually(t, 10*time.Second, "a dead letter", func() bool { return len(deadLetters(t, bus, group)) == 1 })
				dl := deadLetters(t, bus, group)[0]
				t.Logf("reason: %s", dl.Reason)
				if !strings.Contains(dl.Reason, tt.deadLet) {
					t.Errorf("reason %q, want it to mention %q", dl.Reason, tt.deadLet)
				}
				ev, err := cloudevent.Unmarshal(dl.Payload)
				if err != nil {
					t.Fatal(err)
				}
				var in map[string]map[string]json.RawMessage
				if err := json.Unmarshal(ev.Data(), &in); err != nil || !jsonEqual(t, in["ev"]["data"], []byte(br16)) {
					t.Errorf("dead letter does not carry the event set: %s", ev.Data())
				}
				if len(sub.all()) != 0 {
					t.Error("a failed transform delivered something")
				}
			case len(tt.want) == 0:
				eventually(t, 5*time.Second, "no_output counted", func() bool {
					return metric(t, reg, "signalbox_dispatch_sensor_events_total",
						map[string]string{"trigger": group, "outcome": "no_output"}) == 1
				})
				if len(sub.all()) != 0 {
					t.Error("jq yielding nothing sent something")
				}
			default:
				eventually(t, 5*time.Second, "the events", func() bool { return len(sub.all()) >= len(tt.want) })
				got := sub.all()
				slices.SortFunc(got, func(a, b received) int { return strings.Compare(a.ev.ID(), b.ev.ID()) })
				for i, w := range tt.want {
					if !jsonEqual(t, got[i].ev.Data(), []byte(w)) {
						t.Errorf("event %d data = %s, want %s", i, got[i].ev.Data(), w)
					}
					if got[i].ev.Type() != FiredType || got[i].ev.ID() == "br16" {
						t.Errorf("event %d: type %s id %s", i, got[i].ev.Type(), got[i].ev.ID())
					}
				}
				if len(tt.want) > 1 && !strings.HasSuffix(got[1].ev.ID(), "-1") {
					t.Errorf("ids of several outputs: %v", sub.ids())
				}
			}
		})
	}
}
