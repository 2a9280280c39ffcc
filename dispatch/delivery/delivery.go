// Package delivery resolves a trigger's delivery policy (Knative's
// spec.delivery) and computes the waits between attempts: backoff, jitter and
// Retry-After.
package delivery

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	duckv1 "knative.dev/eventing/pkg/apis/duck/v1"

	"github.com/signalbox-dev/signalbox/config"
)

// Defaults of a delivery policy.
const (
	// DefaultBrokerRetry is the retry count of a trigger whose broker has no
	// spec.delivery, as Knative's default broker configuration gives. A
	// delivery spec without retry means no retries.
	DefaultBrokerRetry = 10
	// DefaultBackoffDelay applies when backoffDelay is unset.
	DefaultBackoffDelay = 200 * time.Millisecond
	// DefaultTimeout bounds one attempt when timeout is unset.
	DefaultTimeout = 30 * time.Second
	// DefaultRetryAfterMax caps a Retry-After header when retryAfterMax is
	// unset.
	DefaultRetryAfterMax = time.Minute
)

// MaxJitter is the largest fraction of a backoff added at random, so that
// retries of many events failed at once do not arrive together.
const MaxJitter = 0.1

// BackoffPolicy is how the wait grows between retries.
type BackoffPolicy string

// Backoff policies, as spelt in spec.delivery.backoffPolicy.
const (
	Exponential BackoffPolicy = "exponential"
	Linear      BackoffPolicy = "linear"
)

// Policy is a resolved delivery policy. The zero value makes one attempt with
// no timeout and ignores Retry-After; use Resolve or Default.
type Policy struct {
	// Retry is the number of retries after the first attempt; an event gets
	// at most 1+Retry attempts.
	Retry int
	// Backoff is how the wait grows between retries.
	Backoff BackoffPolicy
	// BackoffDelay is the base wait: see Backoff.
	BackoffDelay time.Duration
	// Timeout bounds one attempt, response included; zero means no bound.
	Timeout time.Duration
	// RetryAfterMax caps the wait a Retry-After header on a 429 or 503 may
	// ask for; zero ignores the header.
	RetryAfterMax time.Duration
	// DeadLetterSink is the URL that receives an event after its last
	// attempt; empty means none (the bus's dead-letter log still keeps it).
	DeadLetterSink string
	// Structured sends events in the JSON structured format (format: json)
	// instead of binary mode.
	Structured bool
}

// Default is the policy of a trigger when neither it nor its broker has a
// spec.delivery.
func Default() Policy {
	return Policy{
		Retry:         DefaultBrokerRetry,
		Backoff:       Exponential,
		BackoffDelay:  DefaultBackoffDelay,
		Timeout:       DefaultTimeout,
		RetryAfterMax: DefaultRetryAfterMax,
	}
}

// Attempts returns the largest number of attempts an event gets: 1+Retry.
func (p Policy) Attempts() int { return 1 + p.Retry }

// Resolve returns the policy of a trigger: its own delivery when it has one,
// which replaces the broker's whole; otherwise the broker's; otherwise
// Default. Either spec may be nil. Errors name the object and the field.
func Resolve(broker, trigger *duckv1.DeliverySpec) (Policy, error) {
	switch {
	case trigger != nil:
		return fromSpec(trigger, "trigger spec.delivery")
	case broker != nil:
		return fromSpec(broker, "broker spec.delivery")
	}
	return Default(), nil
}

// FromSpec converts one delivery spec, applying the defaults of unset fields:
// retry 0, exponential backoff, backoffDelay PT0.2S, timeout PT30S,
// retryAfterMax PT1M, binary format. Durations are ISO-8601, read with
// config.ParseDuration at full precision (PT0.05S is 50ms). A nil spec gives
// Default. Each error
// names its field ("delivery.backoffDelay: ...").
func FromSpec(s *duckv1.DeliverySpec) (Policy, error) {
	return fromSpec(s, "delivery")
}

func fromSpec(s *duckv1.DeliverySpec, path string) (Policy, error) {
	if s == nil {
		return Default(), nil
	}
	p := Policy{
		Backoff:       Exponential,
		BackoffDelay:  DefaultBackoffDelay,
		Timeout:       DefaultTimeout,
		RetryAfterMax: DefaultRetryAfterMax,
	}
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", path, field, fmt.Sprintf(format, args...)))
	}
	if s.Retry != nil {
		if *s.Retry < 0 {
			fail("retry", "must not be negative, got %d", *s.Retry)
		}
		p.Retry = int(*s.Retry)
	}
	if s.BackoffPolicy != nil {
		switch b := BackoffPolicy(*s.BackoffPolicy); b {
		case Exponential, Linear:
			p.Backoff = b
		default:
			fail("backoffPolicy", "want linear or exponential, got %q", b)
		}
	}
	if s.BackoffDelay != nil {
		d, err := config.ParseDuration(*s.BackoffDelay)
		switch {
		case err != nil:
			fail("backoffDelay", "%v", err)
		case d < 0:
			fail("backoffDelay", "must not be negative, got %q", *s.BackoffDelay)
		}
		p.BackoffDelay = d
	}
	if s.Timeout != nil {
		d, err := config.ParseDuration(*s.Timeout)
		switch {
		case err != nil:
			fail("timeout", "%v", err)
		case d <= 0:
			fail("timeout", "must be longer than zero, got %q", *s.Timeout)
		}
		p.Timeout = d
	}
	if s.RetryAfterMax != nil {
		d, err := config.ParseDuration(*s.RetryAfterMax)
		switch {
		case err != nil:
			fail("retryAfterMax", "%v", err)
		case d < 0:
			fail("retryAfterMax", "must not be negative, got %q", *s.RetryAfterMax)
		}
		p.RetryAfterMax = d
	}
	if s.Format != nil {
		switch *s.Format {
		case duckv1.DeliveryFormatJson:
			p.Structured = true
		case duckv1.DeliveryFormatBinary:
		default:
			fail("format", "want json or binary, got %q", *s.Format)
		}
	}
	if dls := s.DeadLetterSink; dls != nil {
		switch {
		case dls.URI == nil && dls.Ref != nil:
			fail("deadLetterSink.ref", "references are resolved only in a cluster; set deadLetterSink.uri")
		case dls.URI == nil:
			fail("deadLetterSink", "set uri")
		case dls.URI.Host == "" || (dls.URI.Scheme != "http" && dls.URI.Scheme != "https"):
			fail("deadLetterSink.uri", "want an absolute http or https URL, got %q", dls.URI)
		default:
			p.DeadLetterSink = dls.URI.String()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// BackoffFor returns the wait before retry n (n = 1 for the first retry),
// without jitter: BackoffDelay×n for linear, BackoffDelay×2^(n-1) for
// exponential. It saturates rather than overflows.
func (p Policy) BackoffFor(n int) time.Duration {
	if n < 1 || p.BackoffDelay <= 0 {
		return 0
	}
	if p.Backoff == Linear {
		if time.Duration(n) > math.MaxInt64/p.BackoffDelay {
			return math.MaxInt64
		}
		return p.BackoffDelay * time.Duration(n)
	}
	shift := n - 1
	if shift >= 62 || p.BackoffDelay > math.MaxInt64>>shift {
		return math.MaxInt64
	}
	return p.BackoffDelay << shift
}

// Wait returns how long to wait before retry n after an attempt that asked
// for retryAfter (zero when it did not): the backoff plus up to MaxJitter of
// it at random, or the Retry-After capped at RetryAfterMax when that is
// longer. The backoff is a floor: the cap applies only to Retry-After, and
// RetryAfterMax zero ignores it.
func (p Policy) Wait(n int, retryAfter time.Duration) time.Duration {
	return p.wait(n, retryAfter, rand.Float64())
}

// wait is Wait with the random draw in [0, 1) given.
func (p Policy) wait(n int, retryAfter time.Duration, draw float64) time.Duration {
	b := p.BackoffFor(n)
	if j := time.Duration(float64(b) * MaxJitter * draw); b <= math.MaxInt64-j {
		b += j
	}
	if p.RetryAfterMax > 0 && retryAfter > 0 {
		return max(b, min(retryAfter, p.RetryAfterMax))
	}
	return b
}
