// Package kubernetes acts on Kubernetes objects for a Sensor trigger's
// kubernetes target: it creates, updates, patches or deletes the object of a
// manifest (a batch/v1 Job, an Argo Workflow, a ConfigMap, any kind the API
// server serves) once per event, through client-go's dynamic client.
//
// Objects created, updated or patched carry the labels LabelSensor,
// LabelTrigger and LabelEventID and the annotations AnnotationEventID and
// AnnotationEventSource. With Config.DeterministicName the object's name is
// derived from the event, so a redelivered event finds the object it created
// the first time instead of creating a second one.
//
// Outcomes of one attempt:
//
//   - the operation succeeded: success. Create answering AlreadyExists and
//     delete answering NotFound are successes too: the object is as the
//     event asked.
//   - Conflict, NotFound (a namespace or object that may yet appear),
//     TooManyRequests, server timeouts and every 5xx: retryable, with the
//     server's suggested delay (Retry-After) as RetryAfter.
//   - Forbidden, Invalid, BadRequest, Unauthorized and every other 4xx, and a
//     kind the server does not serve: permanent, with the API server's
//     message.
//   - no response (transport error, timeout): retryable.
//
// client-go's own retries on Retry-After are disabled: each Send is one
// attempt, and the dispatcher schedules the next.
package kubernetes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/signalbox-dev/signalbox/functions"
)

// Operations accepted in Config.Operation.
const (
	// Create creates the object (the default).
	Create = "create"
	// Update replaces the object, creating it when it does not exist.
	Update = "update"
	// Patch patches the object with the manifest (see Config.PatchStrategy).
	Patch = "patch"
	// Delete deletes the object and, in the background, what it owns (a
	// Job's pods).
	Delete = "delete"
)

// Patch strategies accepted in Config.PatchStrategy.
const (
	// MergePatch is a JSON merge patch, RFC 7386 (the default): maps merge,
	// lists are replaced, null deletes.
	MergePatch = "merge"
	// StrategicMergePatch merges lists by their keys; built-in kinds only.
	StrategicMergePatch = "strategic"
	// ApplyPatch is server-side apply by the field manager FieldManager,
	// taking over fields other managers set.
	ApplyPatch = "apply"
)

// FieldManager names signalbox in the managed fields of the objects it
// writes.
const FieldManager = "signalbox"

// Labels and annotations set on the objects a target creates, updates or
// patches, so that they can be found by sensor, trigger and event.
const (
	LabelSensor  = "signalbox.dev/sensor"
	LabelTrigger = "signalbox.dev/trigger"
	// LabelEventID holds the event id when it is a valid label value, else
	// the first 40 hex digits of its SHA-256.
	LabelEventID = "signalbox.dev/event-id"
	// AnnotationEventID and AnnotationEventSource hold the event's id and
	// source unabridged.
	AnnotationEventID     = "signalbox.dev/event-id"
	AnnotationEventSource = "signalbox.dev/event-source"
)

// Defaults applied to a RESTConfig that sets no rate limit: client-go's own
// (5 requests per second) would throttle a busy trigger.
const (
	DefaultQPS   = 50
	DefaultBurst = 100
)

// Config configures one Kubernetes target.
type Config struct {
	// Operation is Create (empty means this), Update, Patch or Delete.
	Operation string
	// Manifest is the object, in YAML or JSON: one document with apiVersion
	// and kind. Required. Update, Patch and Delete need metadata.name (or
	// DeterministicName).
	Manifest string
	// Namespace is the namespace of a namespaced object whose manifest names
	// none; empty means "default". Ignored for cluster-scoped kinds.
	Namespace string
	// Sensor and Trigger name the Sensor and its trigger; they go into
	// LabelSensor and LabelTrigger and into deterministic names. Required.
	Sensor, Trigger string
	// DeterministicName names the object after the event: the manifest's
	// generateName (else its name and a dash, else "{sensor}-{trigger}-")
	// followed by 16 hex digits of a hash of the sensor, trigger, event
	// source and event id. A redelivered event then meets AlreadyExists
	// instead of creating a second object.
	DeterministicName bool
	// PatchStrategy is MergePatch (empty means this), StrategicMergePatch or
	// ApplyPatch; only for Patch.
	PatchStrategy string
	// RESTConfig reaches the API server (see LoadRESTConfig). Required. It
	// is copied; a zero QPS becomes DefaultQPS and DefaultBurst.
	RESTConfig *rest.Config
}

func (c *Config) validate() (*unstructured.Unstructured, error) {
	switch c.Operation {
	case "", Create, Update, Patch, Delete:
	default:
		return nil, fmt.Errorf("kubernetes: Operation: want create, update, patch or delete, got %q", c.Operation)
	}
	switch c.PatchStrategy {
	case "", MergePatch, StrategicMergePatch, ApplyPatch:
	default:
		return nil, fmt.Errorf("kubernetes: PatchStrategy: want merge, strategic or apply, got %q", c.PatchStrategy)
	}
	if c.PatchStrategy != "" && c.Operation != Patch {
		return nil, errors.New("kubernetes: PatchStrategy: only for the patch operation")
	}
	if c.Sensor == "" {
		return nil, errors.New("kubernetes: Sensor: required")
	}
	if c.Trigger == "" {
		return nil, errors.New("kubernetes: Trigger: required")
	}
	if c.RESTConfig == nil {
		return nil, errors.New("kubernetes: RESTConfig: required")
	}
	obj, err := ParseManifest(c.Manifest)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: Manifest: %w", err)
	}
	return obj, nil
}

// ParseManifest reads one object from YAML or JSON. It must have apiVersion
// and kind; numbers become int64 where integral, as client-go expects.
func ParseManifest(manifest string) (*unstructured.Unstructured, error) {
	dec := k8syaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty")
		}
		return nil, err
	}
	var more json.RawMessage
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, errors.New("want one object, found several documents")
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(raw); err != nil {
		return nil, err
	}
	if obj.GetAPIVersion() == "" || obj.GetKind() == "" {
		return nil, errors.New("apiVersion and kind are required")
	}
	if obj.IsList() {
		return nil, errors.New("want one object, got a list")
	}
	return obj, nil
}

// Target acts on the object of one manifest. It is safe for concurrent use.
// The dispatcher sends a manifest with parameters applied through
// Manifest, ApplyParameter and WithManifest.
type Target struct {
	op        string
	patchType types.PatchType
	manifest  *unstructured.Unstructured
	namespace string
	sensor    string
	trigger   string
	detName   bool
	dest      string
	secrets   []string
	dyn       dynamic.Interface
	mapper    *restmapper.DeferredDiscoveryRESTMapper
	log       *slog.Logger

	resetMu    sync.Mutex
	lastReset  time.Time
	resetEvery time.Duration
}

var _ functions.Target = (*Target)(nil)

// New returns a target for cfg, or an error naming the invalid field. It
// makes no request: the API server's kinds are discovered at the first Send.
func New(cfg Config, log *slog.Logger) (*Target, error) {
	obj, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rc := rest.CopyConfig(cfg.RESTConfig)
	if rc.QPS == 0 {
		rc.QPS, rc.Burst = DefaultQPS, DefaultBurst
	}
	if rc.WarningHandler == nil && rc.WarningHandlerWithContext == nil {
		rc.WarningHandler = &warningLogger{log: log, seen: map[string]bool{}}
	}
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return retryAfterCatcher{next: rt} })

	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: RESTConfig: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: RESTConfig: %w", err)
	}

	t := &Target{
		op:        cfg.Operation,
		manifest:  obj,
		namespace: cfg.Namespace,
		sensor:    cfg.Sensor,
		trigger:   cfg.Trigger,
		detName:   cfg.DeterministicName,
		secrets:   nonEmpty(cfg.RESTConfig.BearerToken, cfg.RESTConfig.Password),
		dyn:       dyn,
		mapper:    restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
		log:       log,

		resetEvery: 10 * time.Second,
	}
	if t.op == "" {
		t.op = Create
	}
	if t.namespace == "" {
		t.namespace = metav1.NamespaceDefault
	}
	switch cfg.PatchStrategy {
	case "", MergePatch:
		t.patchType = types.MergePatchType
	case StrategicMergePatch:
		t.patchType = types.StrategicMergePatchType
	case ApplyPatch:
		t.patchType = types.ApplyPatchType
	}
	name := obj.GetName()
	if name == "" {
		name = obj.GetGenerateName()
	}
	ns := obj.GetNamespace()
	if ns == "" {
		ns = t.namespace
	}
	t.dest = fmt.Sprintf("kubernetes:%s:%s/%s:%s/%s", t.op, obj.GetAPIVersion(), obj.GetKind(), ns, name)
	return t, nil
}

// Destination names the operation and the manifest's object:
// kubernetes:{operation}:{apiVersion}/{kind}:{namespace}/{name or generateName}.
func (t *Target) Destination() string { return t.dest }

// Manifest returns a deep copy of the configured manifest's content, for a
// caller that applies parameters to it (ApplyParameter) and sends it with
// WithManifest.
func (t *Target) Manifest() map[string]any {
	return t.manifest.DeepCopy().Object
}

// Send applies the operation to the configured manifest for e.
func (t *Target) Send(ctx context.Context, e *event.Event) functions.Outcome {
	return t.send(ctx, e, t.Manifest())
}

// WithManifest returns a target that acts as t does on manifest instead of
// the configured manifest: the target of one event whose parameters were
// applied. manifest is copied now, and the copy again at each attempt, so
// the caller may reuse it. A manifest that is not a JSON object makes every
// attempt permanent.
func (t *Target) WithManifest(manifest map[string]any) functions.Target {
	b, err := json.Marshal(manifest)
	if err != nil {
		return &manifestTarget{t: t, err: fmt.Errorf("manifest: %w", err)}
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(b); err != nil {
		return &manifestTarget{t: t, err: fmt.Errorf("manifest: %w", err)}
	}
	return &manifestTarget{t: t, obj: obj}
}

// manifestTarget is a Target with a manifest of its own.
type manifestTarget struct {
	t   *Target
	obj *unstructured.Unstructured
	err error
}

func (m *manifestTarget) Destination() string { return m.t.dest }

func (m *manifestTarget) Send(ctx context.Context, e *event.Event) functions.Outcome {
	if m.err != nil {
		return permanent(m.err)
	}
	return m.t.send(ctx, e, m.obj.DeepCopy().Object)
}

// send applies the operation to manifest, which it owns and modifies, for e.
func (t *Target) send(ctx context.Context, e *event.Event, manifest map[string]any) functions.Outcome {
	obj := &unstructured.Unstructured{Object: manifest}
	gvk := obj.GroupVersionKind()
	if gvk.Kind == "" || gvk.Version == "" {
		return permanent(errors.New("manifest has no apiVersion or kind"))
	}
	if t.op != Delete {
		t.label(obj, e)
	}
	if t.detName {
		obj.SetName(t.objectName(obj, e))
		obj.SetGenerateName("")
	}
	if obj.GetName() == "" && (t.op != Create || obj.GetGenerateName() == "") {
		return permanent(fmt.Errorf("%s needs metadata.name", t.op))
	}

	mapping, err := t.mapping(gvk)
	if err != nil {
		return t.failure(ctx, err, nil)
	}
	var ri dynamic.ResourceInterface = t.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		if obj.GetNamespace() == "" {
			obj.SetNamespace(t.namespace)
		}
		ri = t.dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
	} else {
		obj.SetNamespace("")
	}

	rec := &attempt{}
	ctx = context.WithValue(ctx, attemptKey{}, rec)
	status, res, err := t.do(ctx, ri, obj)
	if err != nil {
		return t.failure(ctx, err, rec)
	}
	t.log.Debug("kubernetes object "+res, "destination", t.dest, "event_id", e.ID(),
		"kind", gvk.Kind, "namespace", obj.GetNamespace(), "name", obj.GetName())
	return functions.Outcome{Result: functions.Success, Status: status}
}

// do runs the operation; it returns the status to report and what happened.
func (t *Target) do(ctx context.Context, ri dynamic.ResourceInterface, obj *unstructured.Unstructured) (int, string, error) {
	switch t.op {
	case Create:
		named := obj.GetName() != ""
		created, err := ri.Create(ctx, obj, metav1.CreateOptions{FieldManager: FieldManager})
		// With a name, AlreadyExists means this event's object is there
		// (a redelivery); with generateName, a collision of random names,
		// which failure classifies as retryable.
		if named && apierrors.IsAlreadyExists(err) {
			return http.StatusOK, "already exists", nil
		}
		if err == nil {
			obj.SetName(created.GetName())
		}
		return http.StatusCreated, "created", err
	case Update:
		current, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = ri.Create(ctx, obj, metav1.CreateOptions{FieldManager: FieldManager})
			return http.StatusCreated, "created", err
		}
		if err != nil {
			return 0, "", err
		}
		// Replacing what was read: a concurrent writer makes this a
		// Conflict, retried with a fresh read.
		obj.SetResourceVersion(current.GetResourceVersion())
		_, err = ri.Update(ctx, obj, metav1.UpdateOptions{FieldManager: FieldManager})
		return http.StatusOK, "updated", err
	case Patch:
		data, err := json.Marshal(obj.Object)
		if err != nil {
			return 0, "", err
		}
		opts := metav1.PatchOptions{FieldManager: FieldManager}
		if t.patchType == types.ApplyPatchType {
			force := true
			opts.Force = &force
		}
		_, err = ri.Patch(ctx, obj.GetName(), t.patchType, data, opts)
		return http.StatusOK, "patched", err
	default: // Delete
		background := metav1.DeletePropagationBackground
		err := ri.Delete(ctx, obj.GetName(), metav1.DeleteOptions{PropagationPolicy: &background})
		if apierrors.IsNotFound(err) {
			return http.StatusOK, "already deleted", nil
		}
		return http.StatusOK, "deleted", err
	}
}

// mapping finds the resource of a kind. A kind unknown to the cached
// discovery is looked up afresh, at most every ten seconds, since a CRD may
// have been installed since.
func (t *Target) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := t.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err == nil || !meta.IsNoMatchError(err) {
		return m, err
	}
	t.resetMu.Lock()
	stale := time.Since(t.lastReset) >= t.resetEvery
	if stale {
		t.lastReset = time.Now()
		t.mapper.Reset()
	}
	t.resetMu.Unlock()
	if !stale {
		return nil, err
	}
	return t.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
}

// label sets the labels and annotations that tie the object to its sensor,
// trigger and event.
func (t *Target) label(obj *unstructured.Unstructured, e *event.Event) {
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelSensor] = labelValue(t.sensor)
	labels[LabelTrigger] = labelValue(t.trigger)
	labels[LabelEventID] = labelValue(e.ID())
	obj.SetLabels(labels)

	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationEventID] = e.ID()
	ann[AnnotationEventSource] = e.Source()
	obj.SetAnnotations(ann)
}

var labelValueRE = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)

// labelValue returns v when it is a valid label value, else 40 hex digits of
// its SHA-256 (a label value holds at most 63 characters).
func labelValue(v string) string {
	if len(v) <= 63 && labelValueRE.MatchString(v) {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])[:40]
}

// objectName derives the object's name from the event: a prefix from the
// manifest and a hash of what identifies the delivery.
func (t *Target) objectName(obj *unstructured.Unstructured, e *event.Event) string {
	prefix := obj.GetGenerateName()
	if prefix == "" && obj.GetName() != "" {
		prefix = obj.GetName() + "-"
	}
	if prefix == "" {
		prefix = t.sensor + "-" + t.trigger + "-"
	}
	return DeterministicName(prefix, t.sensor, t.trigger, e.Source(), e.ID())
}

// DeterministicName returns prefix followed by 16 hex digits of a hash of
// sensor, trigger, source and id, as a DNS-1123 label (at most 63
// characters: lower-case alphanumerics and '-'). The prefix is lower-cased,
// its other characters become '-', and it is shortened to fit. The same
// arguments always give the same name.
func DeterministicName(prefix, sensor, trigger, source, id string) string {
	h := sha256.New()
	for _, s := range []string{sensor, trigger, source, id} {
		// Length-prefixed, so that no two argument lists hash alike.
		fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	suffix := hex.EncodeToString(h.Sum(nil))[:16]

	var b strings.Builder
	for _, r := range strings.ToLower(prefix) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	p := strings.TrimLeft(b.String(), "-")
	if len(p) > 63-len(suffix) {
		p = p[:63-len(suffix)]
	}
	return p + suffix
}

// failure classifies an error of the API server or of the way to it.
func (t *Target) failure(ctx context.Context, err error, rec *attempt) functions.Outcome {
	if meta.IsNoMatchError(err) {
		return permanent(fmt.Errorf("%s: the API server serves no such kind: %w", t.dest, err))
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		if c := context.Cause(ctx); c != nil && !errors.Is(err, c) {
			err = fmt.Errorf("%w (%w)", err, c)
		}
		return functions.Outcome{Result: functions.Retryable, Status: functions.NoResponse,
			Err: t.redact(fmt.Errorf("%s: %w", t.dest, err))}
	}

	st := status.Status()
	code := int(st.Code)
	out := functions.Outcome{Result: functions.Permanent, Status: code,
		Err: t.redact(fmt.Errorf("%s: %w", t.dest, err))}
	if b, jerr := json.Marshal(st); jerr == nil {
		out.Body = []byte(t.redactString(string(b)))
		if len(out.Body) > functions.MaxBodyExcerpt {
			out.Body = out.Body[:functions.MaxBodyExcerpt]
		}
	}
	switch {
	// AlreadyExists reaches here from an update that raced another writer's
	// create (the next attempt updates) or a generated name that collided.
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err), apierrors.IsNotFound(err), apierrors.IsTooManyRequests(err),
		apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), code == http.StatusRequestTimeout, code >= 500:
		out.Result = functions.Retryable
	}
	if out.Result == functions.Retryable {
		if secs, ok := apierrors.SuggestsClientDelay(err); ok && secs > 0 {
			out.RetryAfter = time.Duration(secs) * time.Second
		} else if rec != nil {
			out.RetryAfter, _ = functions.ParseRetryAfter(rec.retryAfter(), time.Now())
		}
	}
	return out
}

func permanent(err error) functions.Outcome {
	return functions.Outcome{Result: functions.Permanent, Status: functions.NoResponse, Err: err}
}

// redact keeps credentials out of errors; it gives up the error's chain
// only in the unlikely case that one appears in it.
func (t *Target) redact(err error) error {
	msg := err.Error()
	if clean := t.redactString(msg); clean != msg {
		return errors.New(clean)
	}
	return err
}

func (t *Target) redactString(s string) string {
	for _, sec := range t.secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return s
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// attempt records, for one Send, the Retry-After header that
// retryAfterCatcher took out of a response.
type attempt struct {
	mu    sync.Mutex
	value string
}

func (a *attempt) set(v string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.value = v
}

func (a *attempt) retryAfter() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.value
}

type attemptKey struct{}

// retryAfterCatcher removes Retry-After from responses, recording it in the
// request's attempt: client-go would otherwise sleep and retry inside one
// attempt (up to ten times), out of the dispatcher's sight.
type retryAfterCatcher struct {
	next http.RoundTripper
}

func (c retryAfterCatcher) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err != nil || resp.Header.Get("Retry-After") == "" {
		return resp, err
	}
	if rec, ok := req.Context().Value(attemptKey{}).(*attempt); ok {
		rec.set(resp.Header.Get("Retry-After"))
	}
	resp.Header.Del("Retry-After")
	return resp, nil
}

// warningLogger logs each distinct warning of the API server (a deprecated
// apiVersion, an unknown field) once, at warn level.
type warningLogger struct {
	log  *slog.Logger
	mu   sync.Mutex
	seen map[string]bool
}

func (w *warningLogger) HandleWarningHeader(code int, agent, text string) {
	if code != 299 || text == "" {
		return
	}
	w.mu.Lock()
	first := !w.seen[text] && len(w.seen) < 100
	if first {
		w.seen[text] = true
	}
	w.mu.Unlock()
	if first {
		w.log.Warn("kubernetes API server warning", "warning", text)
	}
}
