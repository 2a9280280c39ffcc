package config

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/util/validation"
	duckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	"knative.dev/eventing/pkg/apis/feature"
	"knative.dev/pkg/apis"
	pkgduckv1 "knative.dev/pkg/apis/duck/v1"
	"knative.dev/pkg/logging"

	"github.com/signalbox-dev/signalbox/dispatch/filter"
)

// validationContext is what Knative's Validate methods read their feature
// flags from. signalbox implements per-attempt timeouts and Retry-After, so
// those fields must not be refused. New trigger filters are always validated
// in the Knative release we use; the flag is kept for older ones.
var validationContext = func() context.Context {
	ctx := feature.ToContext(context.Background(), feature.Flags{
		feature.DeliveryTimeout:    feature.Enabled,
		feature.DeliveryRetryAfter: feature.Enabled,
		"new-trigger-filters":      feature.Enabled,
	})
	// Without a logger in the context Knative builds a production one and
	// writes to stderr when the CESQL parser panics.
	return logging.WithLogger(ctx, zap.NewNop().Sugar())
}()

// brokerClassAnnotation is required by Knative's Broker validation. Its value
// picks an implementation in a cluster and means nothing to signalbox.
const brokerClassAnnotation = eventingv1.BrokerClassAnnotationKey

// checker collects the problems of one object, with the decoder that knows
// its lines.
type checker struct {
	*decoder
	// owned lists fields that signalbox checks itself, more strictly than
	// Knative or with better messages; Knative's errors there are dropped so
	// each problem is reported once.
	owned []string
	// decodeErrs counts the problems recorded up to the end of decoding.
	decodeErrs int
}

// decodeObject decodes root into out and notes where decoding's problems
// end, so that echoes of them from later checks can be dropped.
func (c *checker) decodeObject(root *yaml.Node, out any) bool {
	ok := c.decode(root, out)
	c.decodeErrs = len(c.errs)
	return ok
}

// own marks path as checked by signalbox: Knative errors at path or below
// it are not reported.
func (c *checker) own(path string) { c.owned = append(c.owned, path) }

func (c *checker) isOwned(path string) bool {
	for _, p := range c.owned {
		if within(path, p) {
			return true
		}
	}
	return false
}

// knative reports the errors of a Knative Validate call, each at the line of
// its field, except where signalbox checks the field itself.
func (c *checker) knative(fe *apis.FieldError) { c.fieldErrors(fe, true) }

// fieldErrors reports Knative field errors, each at the line of its field,
// dropping those in owned fields if skipOwned. Warnings are not problems and
// are dropped too.
func (c *checker) fieldErrors(fe *apis.FieldError, skipOwned bool) {
	fe = fe.Filter(apis.ErrorLevel)
	if fe == nil {
		return
	}
	seen := map[string]bool{}
	for _, e := range fe.WrappedErrors() {
		msg := e.Message
		if e.Details != "" {
			msg += ": " + e.Details
		}
		msg = strings.TrimRight(msg, ": ") // the CESQL parser's messages end in ": "
		paths := e.Paths
		if len(paths) == 0 {
			paths = []string{""}
		}
		for _, p := range paths {
			if skipOwned && c.isOwned(p) || seen[p+"\x00"+msg] {
				continue
			}
			seen[p+"\x00"+msg] = true
			c.errorf(0, p, "%s", msg)
		}
	}
}

// destination checks a Knative Destination as signalbox can use it: outside
// a cluster nothing resolves a ref, so a uri is required.
func (c *checker) destination(d *pkgduckv1.Destination, path string) {
	c.own(path)
	switch {
	case d.Ref != nil:
		c.errorf(0, path+".ref", "a ref can only be resolved inside a Kubernetes cluster; use uri")
	case d.URI == nil:
		c.errorf(0, path+".uri", "missing field: a uri is required")
	default:
		c.httpURL(d.URI.String(), path+".uri")
	}
	if d.CACerts != nil && !validCACerts(*d.CACerts) {
		c.errorf(0, path+".CACerts", "must hold one or more PEM-encoded certificates")
	}
}

// validCACerts reports whether s is a non-empty sequence of PEM certificates
// and nothing else.
func validCACerts(s string) bool {
	rest := []byte(strings.TrimSpace(s))
	if len(rest) == 0 {
		return false
	}
	for len(rest) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil || block.Type != "CERTIFICATE" {
			return false
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return false
		}
		rest = bytes.TrimSpace(rest)
	}
	return true
}

// httpURL checks that s is an absolute http or https URL with a host.
func (c *checker) httpURL(s, path string) {
	u, err := url.Parse(s)
	switch {
	case s == "":
		c.errorf(0, path, "missing field: a URL is required")
	case err != nil:
		c.errorf(0, path, "invalid URL %q: %v", s, err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		c.errorf(0, path, "must be an absolute http or https URL, got %q", s)
	}
}

// delivery checks a DeliverySpec with Knative's rules and signalbox's: a
// dead-letter sink needs a uri, and durations are parsed at full precision
// (Knative's parser drops digits after the first decimal, so it would call
// PT0.05S zero and refuse it as a timeout).
func (c *checker) delivery(ds *duckv1.DeliverySpec, path string) {
	if ds == nil {
		return
	}
	durations := []struct {
		name  string
		value *string
		check func(v int64) string
	}{
		{"timeout", ds.Timeout, positive},
		{"backoffDelay", ds.BackoffDelay, nonNegative},
		{"retryAfterMax", ds.RetryAfterMax, nonNegative},
	}
	for _, f := range durations {
		p := path + "." + f.name
		c.own(p)
		if f.value == nil {
			continue
		}
		d, err := ParseDuration(*f.value)
		if err != nil {
			c.errorf(0, p, "%v", err)
			continue
		}
		if msg := f.check(int64(d)); msg != "" {
			c.errorf(0, p, "%s, got %q", msg, *f.value)
		}
	}
	if ds.DeadLetterSink != nil {
		c.destination(ds.DeadLetterSink, path+".deadLetterSink")
	}
	c.knative(ds.Validate(validationContext).ViaField(strings.Split(path, ".")...))
}

func positive(v int64) string {
	if v <= 0 {
		return "must be greater than zero"
	}
	return ""
}

func nonNegative(v int64) string {
	if v < 0 {
		return "must not be negative"
	}
	return ""
}

// metadata checks an object's name and namespace. Names end up in URLs and in
// the bus's keys, so they follow Kubernetes' rules: DNS-1123 labels where
// label is true, subdomains otherwise.
func (c *checker) metadata(name, namespace string, label bool) {
	switch {
	case name == "":
		c.errorf(0, "metadata.name", "missing field: a name is required")
	case label:
		c.dnsErrors("metadata.name", name, validation.IsDNS1123Label(name))
	default:
		c.dnsErrors("metadata.name", name, validation.IsDNS1123Subdomain(name))
	}
	if namespace != "" {
		c.dnsErrors("metadata.namespace", namespace, validation.IsDNS1123Label(namespace))
	}
}

func (c *checker) dnsErrors(path, value string, problems []string) {
	if len(problems) > 0 {
		c.errorf(0, path, "invalid name %q: %s", value, strings.Join(problems, "; "))
	}
}

// checkBroker applies the defaults a user relies on and validates a Broker.
func checkBroker(c *checker, b *eventingv1.Broker) {
	if b.Namespace == "" {
		b.Namespace = "default"
	}
	c.metadata(b.Name, b.Namespace, false)
	if b.Spec.Delivery != nil {
		c.delivery(b.Spec.Delivery, "spec.delivery")
	}

	// Validate a copy: the class annotation only matters to Knative, and the
	// delivery was validated above with better positions.
	v := b.DeepCopy()
	if v.Annotations[brokerClassAnnotation] == "" {
		if v.Annotations == nil {
			v.Annotations = map[string]string{}
		}
		v.Annotations[brokerClassAnnotation] = "signalbox"
	}
	v.Spec.Delivery = nil
	c.knative(v.Validate(validationContext))
}

// checkTrigger applies the defaults a user relies on and validates a Trigger.
func checkTrigger(c *checker, t *eventingv1.Trigger) {
	if t.Namespace == "" {
		t.Namespace = "default"
	}
	if t.Spec.Broker == "" && t.Spec.BrokerRef == nil {
		t.Spec.Broker = "default"
	}
	c.metadata(t.Name, t.Namespace, false)

	if t.Spec.BrokerRef != nil {
		c.own("spec.brokerRef")
		c.errorf(0, "spec.brokerRef", "brokerRef is not supported; name the broker with spec.broker")
	}
	c.destination(&t.Spec.Subscriber, "spec.subscriber")
	c.delivery(t.Spec.Delivery, "spec.delivery")
	before := len(c.errs)
	c.own("spec.filter")
	if t.Spec.Filter != nil {
		c.attributeNames(t.Spec.Filter.Attributes, "spec.filter.attributes")
	}
	c.own("spec.filters")
	for i := range t.Spec.Filters {
		c.filter(&t.Spec.Filters[i], fmt.Sprintf("spec.filters[%d]", i))
	}
	// Build the filter the dispatcher will run, so that a config that
	// validates also runs; its errors name their own field.
	if len(c.errs) == before {
		if err := filter.Validate(&t.Spec); err != nil {
			c.errorf(0, "spec.filters", "%v", err)
		}
	}

	// Knative's list validation misplaces the index of all but the last
	// filter and drops the position of "multiple dialects" entirely, so the
	// filters are walked above with Knative's per-filter rules instead.
	v := t.DeepCopy()
	v.Spec.Filters = nil
	v.Spec.Delivery = nil
	c.knative(v.Validate(validationContext))
}

// attributeNames checks CloudEvents attribute names with Knative's rule, one
// key at a time so that a key is reported at its own line.
func (c *checker) attributeNames(attrs map[string]string, path string) {
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		fe := eventingv1.ValidateAttributesNames(map[string]string{k: ""})
		for _, e := range fe.WrappedErrors() {
			msg := e.Message
			if e.Details != "" {
				msg += ": " + e.Details
			}
			c.errorf(0, keyPath(path, k, false), "%s", msg)
		}
	}
}

// filter validates one Subscriptions API filter and its nested filters with
// Knative's rules, keeping each error's position exact.
func (c *checker) filter(f *eventingv1.SubscriptionsAPIFilter, path string) {
	ctx := validationContext
	if err := eventingv1.ValidateOneOf(f); err != nil {
		c.errorf(0, path, "%s", err.Message)
	}
	for dialect, attrs := range map[string]map[string]string{"exact": f.Exact, "prefix": f.Prefix, "suffix": f.Suffix} {
		c.attributeNames(attrs, path+"."+dialect)
		// Knative's filters refuse empty values when they are built; refuse
		// them here so a config that validates also runs.
		for _, k := range slices.Sorted(maps.Keys(attrs)) {
			if attrs[k] == "" {
				c.errorf(0, keyPath(path+"."+dialect, k, false),
					"value must not be empty (to require that an attribute is present, use spec.filter.attributes with \"\")")
			}
		}
	}
	if fe := eventingv1.ValidateCESQLExpression(ctx, f.CESQL); fe != nil {
		if fe.Details == "" {
			// The parser panicked (Knative recovers) and gave no reason.
			fe.Details = "not a complete CESQL expression, as in \"type = 'com.example.a' AND myext = 'v'\""
		}
		c.fieldErrors(fe.ViaField(path+".cesql"), false)
	}
	for i := range f.All {
		c.filter(&f.All[i], fmt.Sprintf("%s.all[%d]", path, i))
	}
	for i := range f.Any {
		c.filter(&f.Any[i], fmt.Sprintf("%s.any[%d]", path, i))
	}
	if f.Not != nil {
		c.filter(f.Not, path+".not")
	}
}
