// Package cloudevent reads, validates, stores and writes CloudEvents the way
// every part of signalbox needs them: the ingress parses HTTP requests, the
// dispatcher writes events to subscribers and parses their replies, and both
// store events in the bus with the same compact codec.
//
// Events are github.com/cloudevents/sdk-go/v2/event values. After
// PrepareIngress every extension value is a string, so binary-mode and
// structured-mode events filter alike.
package cloudevent

import (
	"errors"
	"fmt"
	"net/http"
)

// Extension attributes signalbox reads or sets.
const (
	// ExtTTL is Knative's hop counter; it stops reply loops.
	ExtTTL = "knativebrokerttl"
	// ExtArrivalTime is set by the ingress to the time the event was accepted.
	ExtArrivalTime = "knativearrivaltime"
	// ExtErrorDest, ExtErrorCode and ExtErrorData describe why an event was
	// sent to a dead-letter sink.
	ExtErrorDest = "knativeerrordest"
	ExtErrorCode = "knativeerrorcode"
	ExtErrorData = "knativeerrordata"
)

// DefaultTTL is the TTL given to an event that arrives without one.
const DefaultTTL = 255

// Media types of the CloudEvents HTTP binding.
const (
	MediaStructuredJSON = "application/cloudevents+json"
	MediaBatchJSON      = "application/cloudevents-batch+json"
)

// ErrTTLExpired is returned by PrepareIngress for an event whose TTL is used
// up: it has travelled through too many replies.
var ErrTTLExpired = errors.New("knativebrokerttl is exhausted")

// Error is a problem with a CloudEvent in an HTTP message. Status is the HTTP
// status the message deserves (400, 413 or 415).
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

func badRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Msg: fmt.Sprintf(format, args...)}
}
