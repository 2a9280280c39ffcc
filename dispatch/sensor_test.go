package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/config"
)

// radarDeps are the two halves of a speed-camera flash.
var radarDeps = []config.Dependency{
	{Name: "plate", Filter: `event.type == "radar.plate.read"`},
	{Name: "speed", Filter: `event.type == "radar.speed.measured"`},
}

func multiSensor(name string, corr *config.Correlation, deps []config.Dependency,
	triggers ...config.SensorTrigger) config.Sensor {
	return config.Sensor{
		APIVersion: config.SignalboxV1Alpha1,
		Kind:       config.KindSensor,
		Metadata:   config.ObjectMeta{Name: name, Namespace: ns},
		Spec: config.SensorSpec{Broker: bname, Dependencies: deps, Correlation: corr,
			Triggers: triggers},
	}
}

func sensorSnap(sensors ...config.Sensor) *config.Snapshot {
	s := snapshot(nil)
	s.Sensors = sensors
	return s
}

func httpTrigger(name, url string) config.SensorTrigger {
	return config.SensorTrigger{Name: name, HTTP: &config.HTTPTarget{URL: url},
		Delivery: deliverySpec(2, "PT0.05S")}
}

// flash is one half of a flash: a plate reading or a speed measurement.
func flash(id, typ, subject string, data string) *event.Event {
	e := newEvent(id, typ, data)
	e.SetSubject(subject)
	return e
}

// correlated is how many events the sensor trigger's correlation has taken
// in (held, fired, resumed, duplicate or superseded).
func correlated(t *testing.T, reg *prometheus.Registry, group string) float64 {
	t.Helper()
	var n float64
	for _, o := range []string{"held", "fired", "resumed", "duplicate", "superseded"} {
		n += metric(t, reg, "signalbox_dispatch_sensor_events_total", map[string]string{"trigger": group, "outcome": o})
	}
	return n
}

// publishOneByOne publishes events one at a time, each once the previous one
// has been correlated by group, so that their order is the arrival order.
func publishOneByOne(t *testing.T, bus broker.Bus, reg *prometheus.Registry, group string, evs ...*event.Event) {
	t.Helper()
	for _, e := range evs {
		before := correlated(t, reg, group)
		publish(t, bus, e)
		eventually(t, 5*time.Second, "event "+e.ID()+" correlated", func() bool {
			return correlated(t, reg, group) > before
		})
	}
}

// input decodes the data of a fired event: the events used, by dependency.
func input(t *testing.T, r received) map[string]map[string]any {
	t.Helper()
	var in map[string]map[string]any
	if err := json.Unmarshal(r.ev.Data(), &in); err != nil {
		t.Fatalf("fired event data %s: %v", r.ev.Data(), err)
	}
	return in
}

// usedIDs returns "dep=id" for each event a fire used, sorted.
func usedIDs(t *testing.T, r received) string {
	t.Helper()
	var out []string
	for dep, e := range input(t, r) {
		out = append(out, fmt.Sprintf("%s=%v", dep, e["id"]))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func firedSets(t *testing.T, r *recorder) []string {
	t.Helper()
	var out []string
	for _, x := range r.all() {
		out = append(out, usedIDs(t, x))
	}
	sort.Strings(out)
	return out
}

// Two interleaved flashes, A1 B2 B1 A2, fire exactly two fines, each joining
// the parts of the same flash; the fired events have the documented shape.
func TestSensorInterleavedFlashes(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, reg := newDispatcher(t, Config{Bus: bus})
	fines := newRecorder(t, nil)
	apply(t, d, sensorSnap(multiSensor("radar", &config.Correlation{Key: "event.subject", Window: "PT30S"},
		radarDeps, httpTrigger("fine", fines.URL()))))

	publish(t, bus,
		flash("A1", "radar.plate.read", "1", `{"text":"KA-1"}`),
		flash("B2", "radar.speed.measured", "2", `{"kmh":72}`),
		flash("B1", "radar.speed.measured", "1", `{"kmh":91}`),
		flash("A2", "radar.plate.read", "2", `{"text":"KA-2"}`),
	)
	eventually(t, 5*time.Second, "two fines", func() bool { return len(fines.all()) >= 2 })
	time.Sleep(200 * time.Millisecond)
	got := fines.all()
	if len(got) != 2 {
		t.Fatalf("fines = %d, want 2", len(got))
	}
	want := map[string]string{"1": "plate=A1,speed=B1", "2": "plate=A2,speed=B2"}
	for _, r := range got {
		if w := want[r.ev.Subject()]; usedIDs(t, r) != w {
			t.Errorf("fine for flash %q used %s, want %s", r.ev.Subject(), usedIDs(t, r), w)
		}
		if r.ev.Type() != FiredType || r.ev.Source() != "/default/sensors/radar/fine" ||
			r.ev.DataContentType() != "application/json" {
			t.Errorf("fired event attributes: %v", r.ev.Context)
		}
		in := input(t, r)
		if in["plate"]["data"].(map[string]any)["text"] == nil || in["speed"]["type"] != "radar.speed.measured" {
			t.Errorf("input object = %s", r.ev.Data())
		}
		if _, ok := in["plate"][cloudevent.ExtTTL]; ok {
			t.Error("input events carry knativebrokerttl")
		}
		if _, ok := in["plate"][cloudevent.ExtArrivalTime]; !ok {
			t.Error("input events lack knativearrivaltime")
		}
	}
	if got[0].ev.ID() == got[1].ev.ID() {
		t.Error("two fines with one id")
	}
	if n := metric(t, reg, "signalbox_dispatch_sensor_events_total",
		map[string]string{"outcome": "fired"}); n != 2 {
		t.Errorf("fired = %v, want 2", n)
	}
}

// A partial match older than the window never fires (BR-13, with a short
// window): b-old expires, a-1 waits, b-new completes it.
func TestSensorWindow(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, reg := newDispatcher(t, Config{Bus: bus})
	sub := newRecorder(t, nil)
	deps := []config.Dependency{{Name: "depA", Filter: `event.type == "a"`}, {Name: "depB", Filter: `event.type == "b"`}}
	apply(t, d, sensorSnap(multiSensor("fanin", &config.Correlation{Window: "PT0.4S"}, deps,
		config.SensorTrigger{Name: "t", Conditions: "depA && depB", HTTP: &config.HTTPTarget{URL: sub.URL()}})))
	group := SensorGroup("fanin", "t")

	publishOneByOne(t, bus, reg, group, newEvent("b-old", "b", `{}`))
	time.Sleep(600 * time.Millisecond)
	publishOneByOne(t, bus, reg, group, newEvent("a-1", "a", `{}`))
	time.Sleep(100 * time.Millisecond)
	if n := len(sub.all()); n != 0 {
		t.Fatalf("fired with an expired partner: %v", firedSets(t, sub))
	}
	publishOneByOne(t, bus, reg, group, newEvent("b-new", "b", `{}`))
	eventually(t, 5*time.Second, "the fire", func() bool { return len(sub.all()) == 1 })
	if got := firedSets(t, sub); !slices.Equal(got, []string{"depA=a-1,depB=b-new"}) {
		t.Errorf("fired %v, want a-1 with b-new", got)
	}
	if n := metric(t, reg, "signalbox_dispatch_sensor_events_total", map[string]string{"outcome": "expired"}); n != 1 {
		t.Errorf("expired = %v, want 1", n)
	}
}

// dep1 || (dep2 && dep3) fires on the right combinations only, and a fire
// consumes every event held for the trigger.
func TestSensorConditionCombinations(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, reg := newDispatcher(t, Config{Bus: bus})
	sub := newRecorder(t, nil)
	deps := []config.Dependency{
		{Name: "dep1", Filter: `event.type == "t1"`},
		{Name: "dep2", Filter: `event.type == "t2"`},
		{Name: "dep3", Filter: `event.type == "t3"`},
	}
	apply(t, d, sensorSnap(multiSensor("combo", nil, deps,
		config.SensorTrigger{Name: "t", Conditions: "dep1 || (dep2 && dep3)", HTTP: &config.HTTPTarget{URL: sub.URL()}})))
	group := SensorGroup("combo", "t")

	publishOneByOne(t, bus, reg, group,
		newEvent("e1", "t1", `{}`), // fires alone
		newEvent("e2", "t2", `{}`), // waits
		newEvent("e3", "t3", `{}`), // fires with e2
		newEvent("e4", "t3", `{}`), // waits
		newEvent("e5", "t3", `{}`), // replaces e4
		newEvent("e6", "t2", `{}`), // fires with e5
		newEvent("e7", "t2", `{}`), // waits
	)
	eventually(t, 5*time.Second, "three fires", func() bool { return len(sub.all()) >= 3 })
	time.Sleep(100 * time.Millisecond)
	want := []string{"dep1=e1", "dep2=e2,dep3=e3", "dep2=e6,dep3=e5"}
	if got := firedSets(t, sub); !slices.Equal(got, want) {
		t.Errorf("fired %v, want %v", got, want)
	}
}

// A trigger with `conditions: speed` forwards each speed event unchanged, while
// another trigger of the same sensor waits for both and still gets the speed
// event the first one used.
func TestSensorPerTriggerConditions(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, reg := newDispatcher(t, Config{Bus: bus})
	speeding, fines, never := newRecorder(t, nil), newRecorder(t, nil), newRecorder(t, nil)
	apply(t, d, sensorSnap(multiSensor("radar", nil, radarDeps,
		config.SensorTrigger{Name: "speeding", Conditions: "speed", HTTP: &config.HTTPTarget{URL: speeding.URL()}},
		config.SensorTrigger{Name: "fine", HTTP: &config.HTTPTarget{URL: fines.URL()}},
		config.SensorTrigger{Name: "never", Conditions: "!speed", HTTP: &config.HTTPTarget{URL: never.URL()}})))

	publishOneByOne(t, bus, reg, SensorGroup("radar", "fine"), flash("S1", "radar.speed.measured", "1", `{"kmh":91}`))
	eventually(t, 5*time.Second, "speeding", func() bool { return len(speeding.all()) == 1 })
	if len(fines.all()) != 0 {
		t.Fatal("fine fired on speed alone")
	}
	r := speeding.all()[0]
	if r.ev.ID() != "S1" || r.ev.Type() != "radar.speed.measured" || string(r.ev.Data()) != `{"kmh":91}` {
		t.Errorf("single-dependency trigger changed the event: %s %s %s", r.ev.ID(), r.ev.Type(), r.ev.Data())
	}
	publish(t, bus, flash("P1", "radar.plate.read", "1", `{"text":"KA-1"}`))
	eventually(t, 5*time.Second, "fine", func() bool { return len(fines.all()) == 1 })
	if got := firedSets(t, fines); !slices.Equal(got, []string{"plate=P1,speed=S1"}) {
		t.Errorf("fine used %v", got)
	}
	time.Sleep(100 * time.Millisecond)
	if len(speeding.all()) != 1 {
		t.Errorf("speeding got %d events, want 1", len(speeding.all()))
	}
	if len(never.all()) != 0 {
		t.Errorf("`!speed` fired on a speed event")
	}
}

// Partial state lives in the bus: a dispatcher restarted between the two
// halves of a match fires it once.
func TestSensorStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	fines := newRecorder(t, nil)
	snap := sensorSnap(multiSensor("radar", &config.Correlation{Key: "event.subject", Window: "PT30S"},
		radarDeps, httpTrigger("fine", fines.URL())))

	d1, reg1 := newDispatcher(t, Config{Bus: bus})
	apply(t, d1, snap)
	publishOneByOne(t, bus, reg1, SensorGroup("radar", "fine"), flash("A1", "radar.plate.read", "1", `{}`))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d1.Close(ctx); err != nil {
		t.Fatal(err)
	}

	d2, _ := newDispatcher(t, Config{Bus: bus})
	apply(t, d2, snap)
	publish(t, bus, flash("B1", "radar.speed.measured", "1", `{}`))
	eventually(t, 5*time.Second, "the fine", func() bool { return len(fines.all()) == 1 })
	time.Sleep(200 * time.Millisecond)
	if got := firedSets(t, fines); !slices.Equal(got, []string{"plate=A1,speed=B1"}) {
		t.Errorf("fired %v", got)
	}
}

// Two dispatchers (replicas) on one Redis: every match fires once; a
// duplicate could only repeat an outgoing id.
func TestSensorTwoReplicasFireOnce(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	fines := newRecorder(t, nil)
	snap := sensorSnap(multiSensor("radar", &config.Correlation{Key: "event.subject", Window: "PT30S"},
		radarDeps, httpTrigger("fine", fines.URL())))
	for _, id := range []string{"replica-a", "replica-b"} {
		d, _ := newDispatcher(t, Config{Bus: bus, ReplicaID: id})
		apply(t, d, snap)
	}

	const flashes = 40
	var evs []*event.Event
	for i := range flashes {
		k := fmt.Sprint(i)
		evs = append(evs, flash("A"+k, "radar.plate.read", k, `{}`), flash("B"+k, "radar.speed.measured", k, `{}`))
	}
	// Publish from several goroutines so that the halves of a flash race.
	var wg sync.WaitGroup
	for part := range 4 {
		wg.Go(func() {
			for i := part; i < len(evs); i += 4 {
				publish(t, bus, evs[i])
			}
		})
	}
	wg.Wait()

	eventually(t, 10*time.Second, "a fine per flash", func() bool {
		ids := map[string]bool{}
		for _, r := range fines.all() {
			ids[r.ev.ID()] = true
		}
		return len(ids) == flashes
	})
	time.Sleep(300 * time.Millisecond)
	bySubject := map[string]map[string]bool{}
	for _, r := range fines.all() {
		k := r.ev.Subject()
		if bySubject[k] == nil {
			bySubject[k] = map[string]bool{}
		}
		bySubject[k][r.ev.ID()] = true
		if want := "plate=A" + k + ",speed=B" + k; usedIDs(t, r) != want {
			t.Errorf("flash %s fired with %s", k, usedIDs(t, r))
		}
	}
	for k, ids := range bySubject {
		if len(ids) != 1 {
			t.Errorf("flash %s fired with %d different ids", k, len(ids))
		}
	}
	if n := len(fines.all()); n != flashes {
		t.Logf("%d deliveries for %d flashes (duplicates share their id)", n, flashes)
	}
}

// Parameters set the URL, a header, a body field and the event's
// attributes, from CEL over the dependencies or from literals.
func TestSensorParameters(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, _ := newDispatcher(t, Config{Bus: bus})
	fines := newRecorder(t, nil)
	lit := func(s string) *string { return &s }
	tr := config.SensorTrigger{Name: "fine", HTTP: &config.HTTPTarget{URL: fines.URL() + "fines",
		Headers: map[string]string{"X-Static": "yes"}},
		Parameters: []config.Parameter{
			{Src: `"/" + plate.data.text`, Dest: "http.url", Operation: "append"},
			{Src: `speed.data.kmh`, Dest: "http.headers.X-Kmh"},
			{Src: `speed.data.kmh - 50`, Dest: "body.excess"},
			{Value: lit("x"), Dest: "body.plate.data.tags", Operation: "append"},
			{Value: lit("com.example.fine"), Dest: "event.type"},
			{Value: lit("flash-"), Dest: "event.subject", Operation: "prepend"},
		}}
	apply(t, d, sensorSnap(multiSensor("radar", &config.Correlation{Key: "event.subject"}, radarDeps, tr)))
	publish(t, bus, flash("A1", "radar.plate.read", "7", `{"text":"KA-1","tags":["a"]}`),
		flash("B1", "radar.speed.measured", "7", `{"kmh":91}`))
	eventually(t, 5*time.Second, "the fine", func() bool { return len(fines.all()) == 1 })

	r := fines.all()[0]
	if r.ev.Type() != "com.example.fine" || r.ev.Subject() != "flash-7" {
		t.Errorf("attributes: type %q subject %q", r.ev.Type(), r.ev.Subject())
	}
	if r.header.Get("X-Kmh") != "91" || r.header.Get("X-Static") != "yes" {
		t.Errorf("headers: %v", r.header)
	}
	var data struct {
		Speed  struct{ ID string } `json:"speed"`
		Excess int                 `json:"excess"`
		Plate  struct {
			Data struct {
				Tags []string `json:"tags"`
			} `json:"data"`
		} `json:"plate"`
	}
	if err := json.Unmarshal(r.ev.Data(), &data); err != nil {
		t.Fatal(err)
	}
	if data.Speed.ID != "B1" || data.Excess != 41 || !slices.Equal(data.Plate.Data.Tags, []string{"a", "x"}) {
		t.Errorf("data: %s", r.ev.Data())
	}
	if r.path != "/fines/KA-1" {
		t.Errorf("path = %q, want /fines/KA-1", r.path)
	}
}

// A fire whose target keeps failing goes to the dead letters as the fired
// event, and the state is settled so that nothing fires again.
func TestSensorFireDeadLettered(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, _ := newDispatcher(t, Config{Bus: bus})
	down := newRecorder(t, func(*event.Event, int) response { return response{status: http.StatusInternalServerError} })
	apply(t, d, sensorSnap(multiSensor("radar", &config.Correlation{Key: "event.subject"}, radarDeps,
		httpTrigger("fine", down.URL()))))
	group := SensorGroup("radar", "fine")

	publish(t, bus, flash("A1", "radar.plate.read", "1", `{}`), flash("B1", "radar.speed.measured", "1", `{}`))
	eventually(t, 5*time.Second, "a dead letter", func() bool { return len(deadLetters(t, bus, group)) == 1 })
	dl := deadLetters(t, bus, group)[0]
	ev, err := cloudevent.Unmarshal(dl.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type() != FiredType || dl.Attempts != 3 || dl.Code != http.StatusInternalServerError {
		t.Errorf("dead letter: type %s, %d attempts, code %d", ev.Type(), dl.Attempts, dl.Code)
	}
	if len(down.of(ev.ID())) != 3 {
		t.Errorf("attempts at the target: %d, want 3", len(down.of(ev.ID())))
	}
	store := broker.StateStore(bus)
	eventually(t, 5*time.Second, "the fire settled", func() bool {
		e, err := store.GetState(context.Background(), topic, group, "1")
		if err != nil || e.Value == nil {
			return false
		}
		var st stateEntry
		return json.Unmarshal(e.Value, &st) == nil && len(st.Firing) == 0 && len(st.Held) == 0
	})
}

// A message that comes back after its fire was recorded but before it was
// settled (a crash in between) delivers that fire again with the same id.
func TestSensorResumesPendingFire(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	fines := newRecorder(t, nil)
	group := SensorGroup("radar", "fine")

	a1 := flash("A1", "radar.plate.read", "1", `{}`)
	b1 := flash("B1", "radar.speed.measured", "1", `{}`)
	now := time.Now()
	ha, _ := newHeldEvent(a1, now)
	hb, _ := newHeldEvent(b1, now)
	f := &firing{By: hb.eventRef, Events: map[string]*heldEvent{"plate": ha, "speed": hb}}
	f.ID = fireID("fine", f.Events)
	st := stateEntry{Firing: []*firing{f}, Used: []eventRef{ha.eventRef, hb.eventRef}}
	b, _ := json.Marshal(st)
	if _, err := bus.CompareAndSwapState(context.Background(), topic, group, "1", 0, b, 0); err != nil {
		t.Fatal(err)
	}

	d, _ := newDispatcher(t, Config{Bus: bus})
	apply(t, d, sensorSnap(multiSensor("radar", &config.Correlation{Key: "event.subject"}, radarDeps,
		httpTrigger("fine", fines.URL()))))
	publish(t, bus, a1, b1) // as if redelivered after the crash
	eventually(t, 5*time.Second, "the pending fire", func() bool { return len(fines.all()) == 1 })
	time.Sleep(200 * time.Millisecond)
	if got := fines.all(); len(got) != 1 || got[0].ev.ID() != f.ID {
		t.Fatalf("deliveries %v, want the pending fire %s once", fines.ids(), f.ID)
	}
}

// conditionsReset clears held events on its schedule.
func TestSensorConditionsReset(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	d, reg := newDispatcher(t, Config{Bus: bus})
	sub := newRecorder(t, nil)
	tr := httpTrigger("fine", sub.URL())
	tr.ConditionsReset = &config.ConditionsReset{Cron: "@every 1s"}
	apply(t, d, sensorSnap(multiSensor("radar", nil, radarDeps, tr)))
	group := SensorGroup("radar", "fine")

	publishOneByOne(t, bus, reg, group, flash("A1", "radar.plate.read", "1", `{}`))
	time.Sleep(1300 * time.Millisecond) // at least one reset
	publishOneByOne(t, bus, reg, group, flash("B1", "radar.speed.measured", "1", `{}`))
	time.Sleep(200 * time.Millisecond)
	if n := len(sub.all()); n != 0 {
		t.Fatalf("fired across a reset: %v", firedSets(t, sub))
	}
}
