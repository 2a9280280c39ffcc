// Package filter decides which events reach a trigger: Knative Trigger
// filters (spec.filter.attributes and the spec.filters dialects) and CEL
// expressions.
//
// The "any value" rule of spec.filter.attributes: a filter value of ""
// matches an event on which the attribute is set to a non-empty value. An
// optional context attribute that is unset (such as subject) and an
// extension that is absent therefore behave the same: the event does not
// match, and neither does an extension set to "". Every other comparison is
// exact on the attribute's string form. Extension values are compared as
// strings (the ingress stores every extension as a string), so binary and
// structured events filter alike.
package filter

import (
	"context"
	"errors"
	"fmt"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cetypes "github.com/cloudevents/sdk-go/v2/types"
	"go.uber.org/zap"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/eventfilter"
	"knative.dev/eventing/pkg/eventfilter/attributes"
	"knative.dev/eventing/pkg/eventfilter/subscriptionsapi"
	"knative.dev/pkg/logging"

	"github.com/signalbox-dev/signalbox/dispatch/celexpr"
)

// Filter decides whether an event goes to a trigger. Implementations are
// safe for concurrent use.
type Filter interface {
	// Match reports whether e passes. An error means the filter could not be
	// evaluated on e (a CEL type error, a missing field); the caller treats it
	// as no match and counts it.
	Match(e *event.Event) (bool, error)

	// Close releases what the filter holds. Match must not be called after
	// Close.
	Close()
}

// ErrPanic wraps a panic raised inside a filter implementation, which Match
// turns into an error so one bad event cannot stop a trigger.
var ErrPanic = errors.New("filter: evaluation panicked")

// knativeCtx carries a no-op logger into Knative's filters. Without one they
// fall back to a process-wide development logger, and their per-event debug
// lines would bypass signalbox's logger.
var knativeCtx = logging.WithLogger(context.Background(), zap.NewNop().Sugar())

// Validate checks a Trigger's filters the way Knative's admission webhook
// does and additionally builds each one, so that a filter Knative would skip
// at run time is refused instead. Errors name the field.
func Validate(spec *eventingv1.TriggerSpec) error {
	f, err := ForTrigger(spec)
	if err != nil {
		return err
	}
	f.Close()
	return nil
}

// ForTrigger builds the filter of a Knative Trigger: a non-empty spec.filters
// (implicitly all of them) replaces spec.filter.attributes; a trigger with
// neither matches every event. The caller must Close the filter when the
// trigger is replaced or removed.
func ForTrigger(spec *eventingv1.TriggerSpec) (Filter, error) {
	if len(spec.Filters) > 0 {
		for i := range spec.Filters {
			// Knative's messages for some problems carry no field path; prefix
			// the element so the user can find it.
			if fe := eventingv1.ValidateSubscriptionAPIFilter(knativeCtx, &spec.Filters[i]); fe != nil {
				return nil, fmt.Errorf("spec.filters[%d]: %w", i, fe)
			}
		}
		fs, err := buildList(spec.Filters, "spec.filters")
		if err != nil {
			return nil, err
		}
		return &knative{f: allOf(fs)}, nil
	}
	if spec.Filter != nil && len(spec.Filter.Attributes) > 0 {
		if fe := eventingv1.ValidateAttributeFilters(spec.Filter); fe != nil {
			return nil, fmt.Errorf("invalid filter: %w", fe.ViaField("spec", "filter"))
		}
		attrs := make(map[string]string, len(spec.Filter.Attributes))
		var anyValue []string
		for k, v := range spec.Filter.Attributes {
			attrs[k] = v
			if v == eventingv1.TriggerAnyFilter {
				anyValue = append(anyValue, k)
			}
		}
		return &knative{f: attributeFilter{anyValue: anyValue, f: attributes.NewAttributesFilter(attrs)}}, nil
	}
	return All(), nil
}

// buildList builds each filter of a list, closing the ones already built if
// a later one fails.
func buildList(list []eventingv1.SubscriptionsAPIFilter, path string) ([]eventfilter.Filter, error) {
	out := make([]eventfilter.Filter, 0, len(list))
	for i, sf := range list {
		f, err := build(sf, fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			for _, b := range out {
				b.Cleanup()
			}
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// build materialises one SubscriptionsAPIFilter. Knative's own helper skips
// a dialect it cannot build; here that is an error. The leaves are Knative's;
// all, any and not are this package's, because Knative's all and any reorder
// their children from a goroutine that races with Cleanup.
func build(sf eventingv1.SubscriptionsAPIFilter, path string) (f eventfilter.Filter, err error) {
	defer func() {
		// The CESQL parser has panicked on some inputs; refuse the expression.
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("%s: invalid filter: %v", path, r)
		}
	}()
	switch {
	case len(sf.Exact) > 0:
		f, err = subscriptionsapi.NewExactFilter(sf.Exact)
	case len(sf.Prefix) > 0:
		f, err = subscriptionsapi.NewPrefixFilter(sf.Prefix)
	case len(sf.Suffix) > 0:
		f, err = subscriptionsapi.NewSuffixFilter(sf.Suffix)
	case len(sf.All) > 0:
		var fs []eventfilter.Filter
		if fs, err = buildList(sf.All, path+".all"); err == nil {
			f = allOf(fs)
		}
	case len(sf.Any) > 0:
		var fs []eventfilter.Filter
		if fs, err = buildList(sf.Any, path+".any"); err == nil {
			f = anyOf(fs)
		}
	case sf.Not != nil:
		var inner eventfilter.Filter
		if inner, err = build(*sf.Not, path+".not"); err == nil {
			f = notOf{inner}
		}
	case sf.CESQL != "":
		f, err = subscriptionsapi.NewCESQLFilter(sf.CESQL)
	default:
		return nil, fmt.Errorf("%s: empty filter: set one of exact, prefix, suffix, all, any, not, cesql", path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// allOf fails as soon as one child fails, as Knative's all filter does; with
// no failure its result is the last child's.
type allOf []eventfilter.Filter

func (fs allOf) Filter(ctx context.Context, e cloudevents.Event) eventfilter.FilterResult {
	res := eventfilter.NoFilter
	for _, f := range fs {
		if res = f.Filter(ctx, e); res == eventfilter.FailFilter {
			return res
		}
	}
	return res
}

func (fs allOf) Cleanup() {
	for _, f := range fs {
		f.Cleanup()
	}
}

// anyOf passes as soon as one child passes, as Knative's any filter does;
// with no pass its result is the last child's.
type anyOf []eventfilter.Filter

func (fs anyOf) Filter(ctx context.Context, e cloudevents.Event) eventfilter.FilterResult {
	res := eventfilter.NoFilter
	for _, f := range fs {
		if res = f.Filter(ctx, e); res == eventfilter.PassFilter {
			return res
		}
	}
	return res
}

func (fs anyOf) Cleanup() {
	for _, f := range fs {
		f.Cleanup()
	}
}

// notOf inverts pass and fail and keeps "no filter".
type notOf struct{ f eventfilter.Filter }

func (n notOf) Filter(ctx context.Context, e cloudevents.Event) eventfilter.FilterResult {
	switch n.f.Filter(ctx, e) {
	case eventfilter.PassFilter:
		return eventfilter.FailFilter
	case eventfilter.FailFilter:
		return eventfilter.PassFilter
	}
	return eventfilter.NoFilter
}

func (n notOf) Cleanup() { n.f.Cleanup() }

// attributeFilter is Knative's attribute filter with the "any value" rule
// applied to every attribute alike: Knative reads an unset time as the zero
// time, which is not empty, so `time: ""` would match events without a time.
type attributeFilter struct {
	anyValue []string // attributes filtered with ""
	f        eventfilter.Filter
}

func (a attributeFilter) Filter(ctx context.Context, e cloudevents.Event) eventfilter.FilterResult {
	for _, name := range a.anyValue {
		if name == "time" && e.Time().IsZero() {
			return eventfilter.FailFilter
		}
	}
	return a.f.Filter(ctx, e)
}

func (a attributeFilter) Cleanup() { a.f.Cleanup() }

// knative adapts a Knative eventfilter.Filter.
type knative struct {
	f eventfilter.Filter
}

func (k *knative) Match(e *event.Event) (ok bool, err error) {
	defer func() {
		// Knative's CESQL filter asserts that an expression yields a bool; an
		// expression that yields something else must not stop the trigger.
		if r := recover(); r != nil {
			ok, err = false, fmt.Errorf("%w: %v", ErrPanic, r)
		}
	}()
	return k.f.Filter(knativeCtx, *stringExtensions(e)) != eventfilter.FailFilter, nil
}

func (k *knative) Close() { k.f.Cleanup() }

// stringExtensions returns e, or a copy of it whose extension values are all
// strings. Knative's attribute filter compares values as interfaces, so an
// int32 extension would never equal the filter's string.
func stringExtensions(e *event.Event) *event.Event {
	var c *event.Event
	for name, v := range e.Extensions() {
		if _, ok := v.(string); ok {
			continue
		}
		if c == nil {
			cp := e.Clone()
			c = &cp
		}
		s, err := cetypes.Format(v)
		if err != nil {
			s = fmt.Sprint(v)
		}
		_ = c.Context.SetExtension(name, s)
	}
	if c == nil {
		return e
	}
	return c
}

// CEL returns a filter that evaluates a compiled CEL expression, as a Sensor
// dependency does.
func CEL(x *celexpr.Expr) Filter { return celFilter{x} }

type celFilter struct{ x *celexpr.Expr }

func (c celFilter) Match(e *event.Event) (bool, error) { return c.x.Match(e) }
func (c celFilter) Close()                             {}

// All returns a filter that matches every event.
func All() Filter { return allFilter{} }

type allFilter struct{}

func (allFilter) Match(*event.Event) (bool, error) { return true, nil }
func (allFilter) Close()                           {}

// None returns a filter that matches no event.
func None() Filter { return noneFilter{} }

type noneFilter struct{}

func (noneFilter) Match(*event.Event) (bool, error) { return false, nil }
func (noneFilter) Close()                           {}
