package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/internal/redistest"
)

// radarSensorYAML is the final stage of the speed-camera pipeline: a fine
// joins the plate and the speed of the same flash (the subject).
func radarSensorYAML(uri, window string) string {
	return fmt.Sprintf(`
---
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar, namespace: default}
spec:
  broker: default
  dependencies:
    - {name: plate, filter: 'event.type == "radar.plate.read"'}
    - {name: speed, filter: 'event.type == "radar.speed.measured"'}
  correlation: {key: event.subject, window: %s}
  triggers:
    - name: fine
      http: {url: '%s'}
      transform: {jq: '{flash: .plate.subject, plate: .plate.data.text, kmh: .speed.data.kmh}'}
      delivery: {retry: 5, backoffDelay: PT0.05S}
`, window, uri)
}

// postPart posts one half of a flash through the ingress.
func postPart(t *testing.T, gw *gateway, id, typ, flash, body string) {
	t.Helper()
	if code := postEvent(t, gw.URL+"/default/default", ce(id, typ, "ce-subject", flash), body); code != http.StatusAccepted {
		t.Fatalf("post %s: %d", id, code)
	}
}

// fine is the data the radar sensor's transform sends.
type fine struct {
	Flash string `json:"flash"`
	Plate string `json:"plate"`
	Kmh   int    `json:"kmh"`
}

func fines(t *testing.T, got []received) []fine {
	t.Helper()
	var out []fine
	for _, r := range got {
		if r.Event == nil {
			t.Fatalf("not a CloudEvent: %s", r.Body)
		}
		var f fine
		if err := json.Unmarshal(r.Event.Data(), &f); err != nil {
			t.Fatalf("fine data %s: %v", r.Event.Data(), err)
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Flash < out[j].Flash })
	return out
}

// Two interleaved flashes, A1 B2 B1 A2, fire exactly two fines, each joining
// the parts of its own flash, on every bus.
func TestSensorInterleavedFlashes(t *testing.T) {
	t.Parallel()
	for _, b := range buses {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			sub := newRecorder(t, nil)
			url, extra := b.start(t)
			gw := startGateway(t, url, writeConfig(t, brokerYAML+radarSensorYAML(sub.URL, "PT1M")), extra...)

			postPart(t, gw, "A1", "radar.plate.read", "1", `{"text":"KA-SB-1"}`)
			postPart(t, gw, "B2", "radar.speed.measured", "2", `{"kmh":72}`)
			postPart(t, gw, "B1", "radar.speed.measured", "1", `{"kmh":91}`)
			postPart(t, gw, "A2", "radar.plate.read", "2", `{"text":"KA-SB-2"}`)

			sub.WaitFor(t, 2, 10*time.Second)
			got := sub.Quiet(t, 2, 500*time.Millisecond)
			want := []fine{{"1", "KA-SB-1", 91}, {"2", "KA-SB-2", 72}}
			if f := fines(t, got); !reflect.DeepEqual(f, want) {
				t.Errorf("fines %+v, want %+v", f, want)
			}
			for _, r := range got {
				if r.Event.Type() != "dev.signalbox.sensor.fired" || r.Event.Source() != "/default/sensors/radar/fine" {
					t.Errorf("fine attributes: %v", r.Event.Context)
				}
			}
		})
	}
}

// Field case BR-13 with a 1 s window, and a restart of the gateway (SIGKILL)
// between the halves of a match: an expired partner never fires, a match
// whose halves straddle the restart fires once.
func TestFieldCaseBR13WindowAcrossRestart(t *testing.T) {
	t.Parallel()
	for _, b := range buses {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fanin, radar := newRecorder(t, nil), newRecorder(t, nil)
			cfg := brokerYAML + radarSensorYAML(radar.URL, "PT1M") + fmt.Sprintf(`
---
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: fanin, namespace: default}
spec:
  broker: default
  dependencies:
    - {name: depA, filter: 'event.type == "a"'}
    - {name: depB, filter: 'event.type == "b"'}
  correlation: {window: PT1S}
  triggers:
    - name: t
      conditions: depA && depB
      http: {url: '%s'}
`, fanin.URL)
			url, extra := b.start(t)
			gw := startGateway(t, url, writeConfig(t, cfg), extra...)

			start := time.Now()
			postEvent(t, gw.URL+"/default/default", ce("b-old", "b"), `{}`)
			postPart(t, gw, "A1", "radar.plate.read", "r1", `{"text":"KA-1"}`)
			time.Sleep(200 * time.Millisecond) // let both be taken in
			gw.Kill()
			gw.Restart()

			time.Sleep(time.Until(start.Add(1300 * time.Millisecond)))
			postEvent(t, gw.URL+"/default/default", ce("a-1", "a"), `{}`)
			postPart(t, gw, "B1", "radar.speed.measured", "r1", `{"kmh":88}`)
			radar.WaitFor(t, 1, 10*time.Second)
			fanin.Quiet(t, 0, 500*time.Millisecond)

			postEvent(t, gw.URL+"/default/default", ce("b-new", "b"), `{}`)
			got := fanin.WaitFor(t, 1, 10*time.Second)
			var in map[string]struct{ ID string }
			if err := json.Unmarshal(got[0].Event.Data(), &in); err != nil {
				t.Fatal(err)
			}
			if in["depA"].ID != "a-1" || in["depB"].ID != "b-new" {
				t.Errorf("fired with %+v, want a-1 and b-new", in)
			}
			fanin.Quiet(t, 1, 300*time.Millisecond)
			if f := fines(t, radar.Quiet(t, 1, 100*time.Millisecond)); f[0] != (fine{"r1", "KA-1", 88}) {
				t.Errorf("fine across the restart = %+v", f[0])
			}
		})
	}
}

// Two gateway replicas on one Redis: every match fires once, whichever
// replica takes each half.
func TestSensorTwoReplicasOneRedis(t *testing.T) {
	t.Parallel()
	sub := newRecorder(t, nil)
	redis := redistest.Start(t)
	cfg := writeConfig(t, brokerYAML+radarSensorYAML(sub.URL, "PT1M"))
	gws := []*gateway{
		startGateway(t, redis.URL(), cfg, "--replica-id", "one"),
		startGateway(t, redis.URL(), cfg, "--replica-id", "two"),
	}

	const flashes = 30
	var wg sync.WaitGroup
	for i := range flashes {
		wg.Go(func() {
			k := fmt.Sprint(i)
			postPart(t, gws[i%2], "A"+k, "radar.plate.read", k, fmt.Sprintf(`{"text":"P%d"}`, i))
			postPart(t, gws[(i+1)%2], "B"+k, "radar.speed.measured", k, fmt.Sprintf(`{"kmh":%d}`, 60+i))
		})
	}
	wg.Wait()

	sub.WaitFor(t, flashes, 15*time.Second)
	time.Sleep(500 * time.Millisecond)
	idsByFlash := map[string]map[string]bool{}
	for _, f := range fines(t, sub.All()) {
		if f.Plate != "P"+f.Flash || fmt.Sprint(f.Kmh-60) != f.Flash {
			t.Errorf("fine joins parts of different flashes: %+v", f)
		}
	}
	for _, r := range sub.All() {
		var f fine
		_ = json.Unmarshal(r.Event.Data(), &f)
		if idsByFlash[f.Flash] == nil {
			idsByFlash[f.Flash] = map[string]bool{}
		}
		idsByFlash[f.Flash][r.Event.ID()] = true
	}
	if len(idsByFlash) != flashes {
		t.Errorf("%d flashes fined, want %d", len(idsByFlash), flashes)
	}
	for k, ids := range idsByFlash {
		if len(ids) != 1 {
			t.Errorf("flash %s fined with %d different ids", k, len(ids))
		}
	}
	if n := len(sub.All()); n != flashes {
		t.Logf("%d deliveries for %d flashes; duplicates repeat their id", n, flashes)
	}
}

// Field case BR-16 through the binary, a jq transform, and Lua scripts that
// loop forever, allocate without bound or reach for os.execute: those are
// dead-lettered with the error, and the gateway goes on.
func TestFieldCaseBR16AndTransforms(t *testing.T) {
	t.Parallel()
	lua, identity, jq, dlq := newRecorder(t, nil), newRecorder(t, nil), newRecorder(t, nil), newRecorder(t, nil)
	runaway := newRecorder(t, nil)
	trig := func(name, transform, uri string) string {
		return fmt.Sprintf(`
    - name: %s
      transform: %s
      http: {url: '%s'}
      delivery: {retry: 1, backoffDelay: PT0.05S, deadLetterSink: {uri: '%s'}}`, name, transform, uri, dlq.URL)
	}
	cfg := brokerYAML + `
---
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: shapes, namespace: default}
spec:
  broker: default
  dependencies:
    - {name: ev, filter: 'event.type == "com.example.shape"'}
  triggers:` +
		trig("lua", `{lua: 'function transform(input) input.ev.data.age = 111; return input.ev.data end'}`, lua.URL) +
		trig("identity", `{lua: 'function transform(input) return input.ev.data end'}`, identity.URL) +
		trig("jq", `{jq: '{name: .ev.data.name, tags: .ev.data.tags, id: .ev.id}'}`, jq.URL) +
		trig("loop", `{lua: 'function transform(input) while true do end end'}`, runaway.URL) +
		trig("alloc", `{lua: 'function transform(input) local s = "x" while true do s = s .. s end end'}`, runaway.URL) +
		trig("exec", `{lua: 'function transform(input) os.execute("touch /tmp/signalbox-e2e") return input end'}`,
			runaway.URL) + "\n"
	gw := startGateway(t, "", writeConfig(t, cfg), "--data-dir", t.TempDir())

	const body = `{"name":"x","info":{},"list":[],"tags":["a"],"note":null,"nested":{"arr":[[]]}}`
	if code := postEvent(t, gw.URL+"/default/default", ce("shape-1", "com.example.shape"), body); code != http.StatusAccepted {
		t.Fatalf("post: %d", code)
	}

	jsonEq := func(a, b []byte) bool {
		var x, y any
		return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
	}
	want := map[*recorder]string{
		lua:      `{"name":"x","info":{},"list":[],"tags":["a"],"note":null,"nested":{"arr":[[]]},"age":111}`,
		identity: body,
		jq:       `{"name":"x","tags":["a"],"id":"shape-1"}`,
	}
	for rec, w := range want {
		got := rec.WaitFor(t, 1, 10*time.Second)
		if !jsonEq(got[0].Event.Data(), []byte(w)) {
			t.Errorf("%s got %s, want %s", rec.URL, got[0].Event.Data(), w)
		}
	}

	got := dlq.WaitFor(t, 3, 15*time.Second)
	var reasons []string
	for _, r := range got {
		if r.Event == nil || r.Event.Extensions()["knativeerrorcode"] != "-1" {
			t.Errorf("dead letter without knativeerrorcode -1: %v", r.Header)
			continue
		}
		var in map[string]map[string]json.RawMessage
		if err := json.Unmarshal(r.Event.Data(), &in); err != nil || !jsonEq(in["ev"]["data"], []byte(body)) {
			t.Errorf("dead letter does not carry the event set: %s", r.Event.Data())
		}
		reasons = append(reasons, r.Event.Source())
	}
	slices.Sort(reasons)
	if !slices.Equal(reasons, []string{"/default/sensors/shapes/alloc", "/default/sensors/shapes/exec",
		"/default/sensors/shapes/loop"}) {
		t.Errorf("dead letters from %v", reasons)
	}
	runaway.Quiet(t, 0, 200*time.Millisecond)
	logs := gw.logs.String()
	for _, w := range []string{"instruction budget", "memory budget", "'execute'"} {
		if !strings.Contains(logs, w) {
			t.Errorf("logs do not mention %q", w)
		}
	}

	// The gateway is still at work.
	postEvent(t, gw.URL+"/default/default", ce("shape-2", "com.example.shape"), body)
	jq.WaitFor(t, 2, 10*time.Second)
}
