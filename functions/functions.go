// Package functions defines the contract between the dispatcher and the
// targets a trigger delivers to (HTTP, and later Lambda, OpenWhisk,
// Kubernetes). A target makes one attempt and classifies its outcome; the
// dispatcher alone counts attempts, backs off, and dead-letters.
package functions

import (
	"context"
	"encoding/base64"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Target delivers events to one destination. Implementations are safe for
// concurrent use.
type Target interface {
	// Send makes exactly one delivery attempt of e and classifies it. ctx
	// carries the attempt's deadline; when ctx ends first the outcome is
	// Retryable with Status NoResponse. Send must not modify e.
	Send(ctx context.Context, e *event.Event) Outcome

	// Destination names the target for logs and for the knativeerrordest
	// extension of dead letters (for HTTP, the URL).
	Destination() string
}

// Result classifies an attempt.
type Result int

// Results of an attempt.
const (
	// Success: the target accepted the event.
	Success Result = iota
	// Retryable: the attempt failed in a way another attempt may not.
	Retryable
	// Permanent: the target refused the event; retrying cannot help.
	Permanent
)

// String returns the result as metrics and logs spell it: success,
// retryable or permanent.
func (r Result) String() string {
	switch r {
	case Success:
		return "success"
	case Retryable:
		return "retryable"
	case Permanent:
		return "permanent"
	}
	return "result(" + strconv.Itoa(int(r)) + ")"
}

// NoResponse is the Status of an attempt that got no response (a transport
// error or a timeout).
const NoResponse = -1

// MaxBodyExcerpt is the most response-body bytes an Outcome keeps. Its
// base64 form, the knativeerrordata extension, is then at most 1024
// characters.
const MaxBodyExcerpt = 768

// Outcome is the result of one attempt.
type Outcome struct {
	// Result classifies the attempt.
	Result Result
	// Status is the response's status code (for HTTP) or NoResponse.
	Status int
	// RetryAfter is the wait the target asked for before the next attempt
	// (HTTP Retry-After on 429 and 503); zero when it asked for none.
	RetryAfter time.Duration
	// Replies are the CloudEvents a successful attempt answered with.
	Replies []*event.Event
	// ReplyErr is set when a successful attempt answered with something that
	// claims to be a CloudEvent but is not a valid one. The delivery still
	// succeeded: the target accepted the event.
	ReplyErr error
	// Body is up to MaxBodyExcerpt bytes of a failed attempt's response body.
	Body []byte
	// Err describes a failure; nil on Success.
	Err error
}

// ErrorData returns the knativeerrordata value for the outcome: the base64
// of Body, empty when there is none.
func (o Outcome) ErrorData() string {
	b := o.Body
	if len(b) > MaxBodyExcerpt {
		b = b[:MaxBodyExcerpt]
	}
	return base64.StdEncoding.EncodeToString(b)
}

// ParseRetryAfter reads a Retry-After header value, delta-seconds or an HTTP
// date, as a wait from now. It reports false for an empty or malformed value;
// a date in the past is a zero wait.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(math.MaxInt64/time.Second) {
			return math.MaxInt64, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
