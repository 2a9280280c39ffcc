package dispatch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/robfig/cron/v3"
	duckv1 "knative.dev/eventing/pkg/apis/duck/v1"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/config"
	"github.com/signalbox-dev/signalbox/dispatch/celexpr"
	"github.com/signalbox-dev/signalbox/dispatch/delivery"
	"github.com/signalbox-dev/signalbox/functions"
	"github.com/signalbox-dev/signalbox/functions/httptarget"
	"github.com/signalbox-dev/signalbox/functions/kubernetes"
)

// FiredType is the type of the events a Sensor trigger sends when it does not
// forward an event unchanged.
const FiredType = "dev.signalbox.sensor.fired"

// Why a fire cannot be built: the event set is dead-lettered with the error.
var (
	errTransform = errors.New("transform failed")
	errParameter = errors.New("parameter failed")
)

// sensorSpec is what a worker needs to run one Sensor trigger.
//
// A trigger whose conditions name a single dependency is stateless: each
// event that dependency matches fires at once, forwarded unchanged when
// there is no transform. Any other trigger holds matched events in the bus's
// StateStore (see correlate.go) until its conditions hold.
type sensorSpec struct {
	sensor, trigger string
	source          string // of fired events: /{namespace}/sensors/{sensor}/{trigger}

	deps      []dependency // those the conditions name, in order of first use
	allDeps   []string     // every dependency of the sensor: the variables of parameters
	cond      *celexpr.Conditions
	stateless bool
	forward   bool // stateless without transform
	never     bool // stateless, but the conditions are false with the dependency held (`!dep`)

	key    *celexpr.Value // nil without correlation.key
	window time.Duration  // 0: held events never expire
	reset  cron.Schedule  // nil without conditionsReset

	transform transformer // nil: the data is the input object
	params    []parameter

	// store and the group name (the namespace of this trigger's entries)
	// hold the correlation state; nil for stateless triggers.
	store broker.StateStore

	http   httptarget.Config  // an HTTP trigger's target, for targets that parameters change
	kube   *kubernetes.Target // a kubernetes trigger's target, whose manifest parameters change
	target functions.Target
}

// dependency is one named selector a trigger's conditions use.
type dependency struct {
	name   string
	filter *celexpr.Expr
}

// parameter is a compiled config.Parameter.
type parameter struct {
	src   *celexpr.VarsExpr // nil when value is literal
	value string
	dest  config.ParamDest
	op    string
	text  string // the dest as written, for errors
}

// sensorSpec builds the spec of one Sensor trigger; nil without error when
// its broker is not configured.
func (d *Dispatcher) sensorSpec(sn *config.Sensor, st *config.SensorTrigger,
	brokers map[string]*config.Broker) (*spec, error) {
	topic := sn.Namespace() + "/" + sn.Spec.Broker
	desc := fmt.Sprintf("sensor %s/%s trigger %s", sn.Namespace(), sn.Name(), st.Name)
	b, ok := brokers[topic]
	if !ok {
		d.log.Warn("sensor's broker is not configured; sensor trigger not run",
			"broker", topic, "trigger", SensorGroup(sn.Name(), st.Name))
		return nil, nil
	}
	var brokerDelivery *duckv1.DeliverySpec
	if b.Object != nil {
		brokerDelivery = b.Object.Spec.Delivery
	}

	s := &spec{
		key:  groupKey{topic: topic, group: SensorGroup(sn.Name(), st.Name)},
		desc: desc,
	}
	fail := func(err error) (*spec, error) { return nil, fmt.Errorf("dispatch: %s: %w", desc, err) }
	var err error
	if s.fingerprint, err = fingerprint(sn.Spec.Dependencies, sn.Spec.Correlation, st, brokerDelivery,
		secretDigest(st)); err != nil {
		return fail(err)
	}
	if s.policy, err = delivery.Resolve(brokerDelivery, st.Delivery); err != nil {
		return fail(err)
	}
	ss := &sensorSpec{
		sensor:  sn.Name(),
		trigger: st.Name,
		source:  "/" + sn.Namespace() + "/sensors/" + sn.Name() + "/" + st.Name,
	}
	if err := d.buildTarget(sn, st, ss, s.policy.Structured); err != nil {
		return fail(err)
	}
	s.target = ss.target
	if s.sink, err = d.sinkTarget(s.policy); err != nil {
		return fail(err)
	}
	if err := ss.compile(sn, st); err != nil {
		return fail(err)
	}
	if !ss.stateless {
		store, ok := d.cfg.Bus.(broker.StateStore)
		if !ok {
			return fail(fmt.Errorf("conditions over several dependencies need a bus with a state store, "+
				"and %T has none: %w", d.cfg.Bus, ErrUnsupported))
		}
		ss.store = store
	}
	s.sensor = ss

	if fires, err := ss.cond.Eval(func(string) bool { return true }); err == nil && !fires {
		d.log.Warn("sensor trigger's conditions do not hold with every dependency present; check them",
			"broker", topic, "trigger", s.key.group, "conditions", ss.cond.String())
	}
	return s, nil
}

// compile builds everything the trigger evaluates from the configuration.
func (ss *sensorSpec) compile(sn *config.Sensor, st *config.SensorTrigger) error {
	all := make([]string, 0, len(sn.Spec.Dependencies))
	for _, dep := range sn.Spec.Dependencies {
		all = append(all, dep.Name)
	}
	ss.allDeps = all
	used, err := config.ConditionDependencies(st.Conditions, all)
	if err != nil {
		return fmt.Errorf("conditions: %w", err)
	}
	if ss.cond, err = celexpr.CompileConditions(st.Conditions, all); err != nil {
		return fmt.Errorf("conditions: %w", err)
	}
	for _, dep := range sn.Spec.Dependencies {
		if !slices.Contains(used, dep.Name) {
			continue // an event only it matches cannot change what this trigger does
		}
		x, err := celexpr.Compile(dep.Filter)
		if err != nil {
			return fmt.Errorf("dependency %s: filter: %w", dep.Name, err)
		}
		ss.deps = append(ss.deps, dependency{name: dep.Name, filter: x})
	}
	ss.stateless = len(used) == 1
	ss.forward = ss.stateless && st.Transform == nil
	if ss.stateless {
		ok, err := ss.cond.Eval(func(dep string) bool { return dep == used[0] })
		ss.never = err != nil || !ok
	}

	if c := sn.Spec.Correlation; c != nil {
		if c.Key != "" {
			if ss.key, err = celexpr.CompileValue(c.Key); err != nil {
				return fmt.Errorf("correlation.key: %w", err)
			}
		}
		if ss.window, err = c.WindowDuration(); err != nil {
			return fmt.Errorf("correlation.window: %w", err)
		}
	}
	if st.ConditionsReset != nil {
		if ss.reset, err = st.ConditionsReset.Schedule(); err != nil {
			return fmt.Errorf("conditionsReset: %w", err)
		}
	}
	if st.Transform != nil {
		if ss.transform, err = compileTransform(st.Transform); err != nil {
			return err
		}
	}
	for i, p := range st.Parameters {
		cp := parameter{op: p.Operation, text: p.Dest}
		if cp.op == "" {
			cp.op = config.OperationOverwrite
		}
		if cp.dest, err = config.ParseParamDest(p.Dest); err != nil {
			return fmt.Errorf("parameters[%d].dest: %w", i, err)
		}
		if want := cp.dest.TargetKind(); want != "" && want != st.TargetKind() {
			return fmt.Errorf("parameters[%d].dest: %q is only for %s targets", i, p.Dest, want)
		}
		switch {
		case p.Value != nil:
			cp.value = *p.Value
		case p.Src != "":
			if cp.src, err = celexpr.CompileVars(p.Src, all); err != nil {
				return fmt.Errorf("parameters[%d].src: %w", i, err)
			}
		default:
			return fmt.Errorf("parameters[%d]: src or value is required", i)
		}
		ss.params = append(ss.params, cp)
	}
	return nil
}

// match evaluates the trigger's dependency filters on an event and returns
// the names of those that match. errs counts filters that could not be
// evaluated (they do not match).
func (ss *sensorSpec) match(in *celexpr.Input) (names []string, errs int, lastErr error) {
	for _, dep := range ss.deps {
		ok, err := dep.filter.Eval(in)
		if err != nil {
			errs++
			lastErr = err
		}
		if ok {
			names = append(names, dep.name)
		}
	}
	return names, errs, lastErr
}

// correlationKey computes an event's key; "" without correlation.key.
func (ss *sensorSpec) correlationKey(in *celexpr.Input) (string, error) {
	if ss.key == nil {
		return "", nil
	}
	v, err := ss.key.Eval(in)
	if err != nil {
		return "", err
	}
	return keyString(v)
}

// keyString is the string form keys are compared by: strings as they are,
// numbers in their shortest decimal form (so 1 and 1.0 are one key),
// booleans as true and false.
func keyString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(x), nil
	case nil:
		return "", errors.New("correlation key is null")
	}
	return "", fmt.Errorf("correlation key is a %T, want a string, number or bool", v)
}

// outgoing is one event to deliver and where to.
type outgoing struct {
	ev     *event.Event
	target functions.Target
	// raw is the stored payload when ev is the fetched event unchanged, so
	// that its dead letter is byte for byte what was published.
	raw []byte
}

// payload returns what a dead letter of o stores.
func (o outgoing) payload() ([]byte, error) {
	if o.raw != nil {
		return o.raw, nil
	}
	return cloudevent.Marshal(o.ev)
}

// fireInput is a set of events that fire a trigger together.
type fireInput struct {
	id     string                // the outgoing event id; see fireID
	key    string                // the correlation key; "" without one
	keyed  bool                  // whether the sensor has a correlation key
	events map[string]*heldEvent // by dependency name
}

// fireID derives the id of a fired event from the trigger and the events
// used, so that firing the same set again (after a crash) repeats the id and
// subscribers dedupe it.
func fireID(trigger string, events map[string]*heldEvent) string {
	h := sha256.New()
	h.Write([]byte(trigger))
	for _, dep := range slices.Sorted(maps.Keys(events)) {
		e := events[dep]
		for _, s := range []string{dep, e.Source, e.ID} {
			h.Write([]byte{0})
			h.Write([]byte(s))
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// input is the object transforms and parameters see: each dependency's
// event in CloudEvents JSON form, keyed by dependency name.
func (f *fireInput) input() ([]byte, error) {
	obj := make(map[string]json.RawMessage, len(f.events))
	for dep, e := range f.events {
		obj[dep] = e.Event
	}
	return json.Marshal(obj)
}

// build turns a fire into the events to deliver: the transform's outputs
// (one event each, none when it yields nothing), or the input object, with
// the parameters applied. An error wraps errTransform or errParameter; the
// caller dead-letters the event set with it. orig is the fetched event when
// a stateless trigger forwards it.
func (ss *sensorSpec) build(ctx context.Context, f *fireInput, orig *event.Event, raw []byte) ([]outgoing, error) {
	vars, err := ss.paramVars(f)
	if err != nil {
		return nil, err
	}
	if ss.forward {
		if len(ss.params) == 0 {
			return []outgoing{{ev: orig, target: ss.target, raw: raw}}, nil
		}
		ev := orig.Clone()
		o, err := ss.applyParams(&ev, vars)
		if err != nil {
			return nil, err
		}
		return []outgoing{o}, nil
	}

	in, err := f.input()
	if err != nil {
		return nil, fmt.Errorf("%w: encode the input object: %v", errTransform, err)
	}
	datas := [][]byte{in}
	if ss.transform != nil {
		if datas, err = ss.transform.Apply(ctx, in); err != nil {
			return nil, fmt.Errorf("%w: %w", errTransform, err)
		}
	}
	outs := make([]outgoing, 0, len(datas))
	for i, data := range datas {
		ev := ss.firedEvent(f, data)
		if len(datas) > 1 {
			ev.SetID(f.id + "-" + strconv.Itoa(i))
		}
		o, err := ss.applyParams(ev, vars)
		if err != nil {
			return nil, err
		}
		outs = append(outs, o)
	}
	return outs, nil
}

// firedEvent is a new event carrying data for the fire f.
func (ss *sensorSpec) firedEvent(f *fireInput, data []byte) *event.Event {
	ev := event.New(event.CloudEventsVersionV1)
	ev.SetID(f.id)
	ev.SetSource(ss.source)
	ev.SetType(FiredType)
	if f.keyed {
		ev.SetSubject(f.key)
	}
	// The latest arrival of the events used: the same on every replica and
	// after a restart, unlike the time of firing.
	var latest int64
	ttl := -1
	for _, e := range f.events {
		latest = max(latest, e.Arrival)
		if e.TTL > 0 && (ttl < 0 || e.TTL < ttl) {
			ttl = e.TTL
		}
	}
	if latest > 0 {
		ev.SetTime(time.Unix(0, latest).UTC())
	}
	ev.SetDataContentType(event.ApplicationJSON)
	ev.DataEncoded = data
	if ttl > 0 {
		// Replies to the fired event inherit the smallest TTL of the events
		// it came from, so a reply loop through a sensor still ends.
		cloudevent.SetTTL(&ev, ttl)
	}
	return &ev
}

// paramVars decodes the input events once for the parameters' expressions.
// Dependencies that did not take part are null, so that an expression can
// test for them (`speed != null ? ... : ...`).
func (ss *sensorSpec) paramVars(f *fireInput) (map[string]any, error) {
	if len(ss.params) == 0 {
		return nil, nil
	}
	vars := make(map[string]any, len(ss.allDeps))
	for _, dep := range ss.allDeps {
		vars[dep] = nil
	}
	for dep, e := range f.events {
		v, err := celexpr.DecodeJSON(e.Event)
		if err != nil {
			return nil, fmt.Errorf("%w: decode the event of %s: %v", errParameter, dep, err)
		}
		vars[dep] = v
	}
	return vars, nil
}

// applyParams applies the parameters, in order, to ev and to the request it
// goes out with.
func (ss *sensorSpec) applyParams(ev *event.Event, vars map[string]any) (outgoing, error) {
	if len(ss.params) == 0 {
		return outgoing{ev: ev, target: ss.target}, nil
	}
	cfg := ss.http
	cfg.Headers = maps.Clone(cfg.Headers)
	if cfg.Headers == nil {
		cfg.Headers = map[string]string{}
	}
	retarget := false
	var manifest map[string]any // the kubernetes target's, once a parameter changes it
	var data any
	dataDecoded := false
	for _, p := range ss.params {
		v := any(p.value)
		if p.src != nil {
			var err error
			if v, err = p.src.Eval(vars); err != nil {
				return outgoing{}, fmt.Errorf("%w: %s: %v", errParameter, p.text, err)
			}
		}
		switch p.dest.Kind {
		case config.DestURL:
			cfg.URL = combine(p.op, cfg.URL, text(v))
			retarget = true
		case config.DestHeader:
			cfg.Headers[p.dest.Header] = combine(p.op, cfg.Headers[p.dest.Header], text(v))
			retarget = true
		case config.DestKubernetes:
			if ss.kube == nil {
				return outgoing{}, fmt.Errorf("%w: %s: only kubernetes targets have a manifest", errParameter, p.text)
			}
			if manifest == nil {
				manifest = ss.kube.Manifest()
			}
			if err := kubernetes.ApplyParameter(manifest, p.dest.Field, v, p.op); err != nil {
				return outgoing{}, fmt.Errorf("%w: %s: %v", errParameter, p.text, err)
			}
		case config.DestEventType:
			ev.SetType(combine(p.op, ev.Type(), text(v)))
		case config.DestEventSource:
			ev.SetSource(combine(p.op, ev.Source(), text(v)))
		case config.DestEventSubject:
			ev.SetSubject(combine(p.op, ev.Subject(), text(v)))
		case config.DestBody:
			if !dataDecoded {
				var err error
				if data, err = decodeData(ev); err != nil {
					return outgoing{}, fmt.Errorf("%w: %s: %v", errParameter, p.text, err)
				}
				dataDecoded = true
			}
			var err error
			if data, err = setPath(data, p.dest.Path, v, p.op); err != nil {
				return outgoing{}, fmt.Errorf("%w: %s: %v", errParameter, p.text, err)
			}
		}
	}
	if dataDecoded {
		b, err := json.Marshal(data)
		if err != nil {
			return outgoing{}, fmt.Errorf("%w: encode the data: %v", errParameter, err)
		}
		ev.DataEncoded = b
		ev.SetDataContentType(event.ApplicationJSON)
	}
	if err := ev.Validate(); err != nil {
		return outgoing{}, fmt.Errorf("%w: the event is no longer valid: %v", errParameter, err)
	}
	o := outgoing{ev: ev, target: ss.target}
	if retarget {
		t, err := httptarget.New(cfg)
		if err != nil {
			return outgoing{}, fmt.Errorf("%w: %v", errParameter, err)
		}
		o.target = t
	}
	if manifest != nil {
		o.target = ss.kube.WithManifest(manifest)
	}
	return o, nil
}

// decodeData reads an event's data as JSON, keeping numbers exact; no data
// is null.
func decodeData(ev *event.Event) (any, error) {
	b := ev.Data()
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("the data is not JSON: %v", err)
	}
	return v, nil
}

// text is the string form of a parameter value in a URL, a header or an
// attribute: strings as they are, anything else as JSON.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// combine applies an operation to strings.
func combine(op, old, v string) string {
	switch op {
	case config.OperationAppend:
		return old + v
	case config.OperationPrepend:
		return v + old
	}
	return v
}

// setPath sets the value at path inside data (creating objects on the way)
// and returns the new data. append and prepend add to an array, join
// strings, and otherwise join the values' text forms.
func setPath(data any, path []string, v any, op string) (any, error) {
	if len(path) == 0 {
		return merge(data, v, op, data != nil), nil
	}
	switch c := data.(type) {
	case nil:
		child, err := setPath(nil, path[1:], v, op)
		return map[string]any{path[0]: child}, err
	case map[string]any:
		old, exists := c[path[0]]
		if len(path) == 1 {
			c[path[0]] = merge(old, v, op, exists)
			return c, nil
		}
		child, err := setPath(old, path[1:], v, op)
		if err != nil {
			return nil, err
		}
		c[path[0]] = child
		return c, nil
	case []any:
		i, err := strconv.Atoi(path[0])
		if err != nil || i < 0 || i >= len(c) {
			return nil, fmt.Errorf("%q is not an index of an array of %d", path[0], len(c))
		}
		if len(path) == 1 {
			c[i] = merge(c[i], v, op, true)
			return c, nil
		}
		child, err := setPath(c[i], path[1:], v, op)
		if err != nil {
			return nil, err
		}
		c[i] = child
		return c, nil
	}
	return nil, fmt.Errorf("cannot set field %q inside a %s", path[0], jsonKind(data))
}

// merge combines an existing value with a parameter's value.
func merge(old, v any, op string, exists bool) any {
	if op == config.OperationOverwrite || !exists || old == nil {
		return v
	}
	if arr, ok := old.([]any); ok {
		add := []any{v}
		if va, ok := v.([]any); ok {
			add = va
		}
		if op == config.OperationAppend {
			return append(arr, add...)
		}
		return append(add, arr...)
	}
	return combine(op, text(old), text(v))
}

func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number, float64, int64:
		return "number"
	}
	return fmt.Sprintf("%T", v)
}
