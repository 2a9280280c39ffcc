// Package adapters turns what outside systems send into CloudEvents.
//
// Each provider (a generic webhook, GitHub, GitLab, Bitbucket, Slack, Stripe)
// lives in its own package under adapters/ and implements Source: given one
// HTTP request and its raw body, it checks that the provider sent it, answers
// the provider's handshakes and builds the events the request carries.
// Package adapters/receiver serves every configured source at
// POST /webhooks/{namespace}/{name} and puts their events in the broker.
//
// This package also holds what the providers share: signature comparison in
// constant time, JSON and form decoding, and event construction.
package adapters

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Source verifies and converts the requests of one configured event source.
// Implementations are immutable after construction and safe for concurrent
// use.
type Source interface {
	// Handle authenticates req before looking at anything else in it, then
	// returns the events it carries, or a handshake answer, or an *Error
	// whose Status says how to answer. Handle never modifies req.
	Handle(req *Request) (*Result, error)
}

// Request is one delivery as a Source sees it.
type Request struct {
	// Header is the request's header; Source implementations read it only.
	Header http.Header
	// Body is the raw body, exactly as received: signatures are computed
	// over these bytes.
	Body []byte
	// Now is when the request arrived, for signature timestamp checks.
	Now time.Time
}

// Result is what a Source made of a request.
type Result struct {
	// Events are to be published, in order. Empty for a handshake.
	Events []*event.Event
	// DeliveryID identifies the delivery across the provider's retries; the
	// receiver answers a repeat of a stored delivery without storing it
	// again. Empty turns deduplication off for this request.
	DeliveryID string
	// Response, when set, is the answer to send once the events are stored
	// (or at once, for a handshake). Nil means the receiver's default.
	Response *Response
}

// Response is an HTTP answer chosen by a Source.
type Response struct {
	Status      int    // 0: the receiver's default status
	ContentType string // empty: no Content-Type header
	Body        []byte
}

// Error is a request a Source refuses, with the HTTP status to answer. Msg
// is sent to the caller: it never contains a secret or an expected
// signature.
type Error struct {
	Status int
	Msg    string
}

// Error returns Msg.
func (e *Error) Error() string { return e.Msg }

func newError(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Unauthorized is a request that failed authentication: 401.
func Unauthorized(format string, args ...any) *Error {
	return newError(http.StatusUnauthorized, format, args...)
}

// BadRequest is an authenticated request that cannot be understood: 400.
func BadRequest(format string, args ...any) *Error {
	return newError(http.StatusBadRequest, format, args...)
}

// UnsupportedMediaType is a body in a format the provider never sends: 415.
func UnsupportedMediaType(format string, args ...any) *Error {
	return newError(http.StatusUnsupportedMediaType, format, args...)
}

// DefaultSource is the source attribute of events from a configured source
// when its provider has nothing better: "/{namespace}/eventsources/{name}".
func DefaultSource(namespace, name string) string {
	return "/" + namespace + "/eventsources/" + name
}

// NewEvent returns a CloudEvents 1.0 event with the required attributes set.
func NewEvent(id, typ, source string) *event.Event {
	e := event.New(event.CloudEventsVersionV1)
	e.SetID(id)
	e.SetType(typ)
	e.SetSource(source)
	return &e
}

// SetData sets the event's data to b, kept as is, with its media type. The
// SDK's SetData would mark bytes as base64 data, which changes how
// structured deliveries carry them.
func SetData(e *event.Event, contentType string, b []byte) {
	if contentType != "" {
		e.SetDataContentType(contentType)
	}
	e.DataEncoded = b
	e.DataBase64 = false
}

// NewID returns a random UUID (version 4) for events whose provider gives
// them no id.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// HMAC returns the HMAC of msg under key with the hash newHash makes.
func HMAC(newHash func() hash.Hash, key []byte, msg ...[]byte) []byte {
	m := hmac.New(newHash, key)
	for _, part := range msg {
		m.Write(part)
	}
	return m.Sum(nil)
}

// EqualSecret reports whether a presented token equals the configured
// secret, in time that depends on neither's content nor length: both are
// hashed first, so a mismatch in length is not revealed either.
func EqualSecret(presented, secret []byte) bool {
	a := sha256.Sum256(presented)
	b := sha256.Sum256(secret)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1 && len(secret) > 0
}

// ParseHexDigest decodes a hex digest of size bytes that follows prefix in a
// signature header ("sha256=" in "sha256=9f86..."). Upper- and lower-case
// hex are accepted; anything else, including an empty digest, is an error.
func ParseHexDigest(header, prefix string, size int) ([]byte, error) {
	if header == "" {
		return nil, errors.New("missing")
	}
	digest, ok := strings.CutPrefix(header, prefix)
	if !ok {
		return nil, fmt.Errorf("does not start with %q", prefix)
	}
	if digest == "" {
		return nil, errors.New("empty digest")
	}
	if len(digest) != 2*size {
		return nil, fmt.Errorf("digest is %d characters, want %d", len(digest), 2*size)
	}
	b, err := hex.DecodeString(digest)
	if err != nil {
		return nil, errors.New("digest is not hex")
	}
	return b, nil
}

// CheckTimestamp checks a signature's unix timestamp (seconds, as text)
// against now: it must be no further than tolerance in the past or future.
// A stale timestamp means a replayed request.
func CheckTimestamp(ts string, now time.Time, tolerance time.Duration) error {
	// Only digits: a sign or spaces would be signed as sent yet read as the
	// same time, which is needless leeway.
	if strings.TrimLeft(ts, "0123456789") != "" {
		return errors.New("timestamp is not a number of seconds")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("timestamp is not a number of seconds")
	}
	// Compare in seconds so huge values cannot overflow a Duration.
	diff := now.Unix() - sec
	limit := int64(tolerance / time.Second)
	if diff > limit || diff < -limit {
		return fmt.Errorf("timestamp is %s away from now, more than the tolerance of %s",
			secondsText(diff), tolerance)
	}
	return nil
}

func secondsText(diff int64) string {
	if diff < 0 {
		diff = -diff
	}
	if diff > 1<<40 {
		return "far"
	}
	return (time.Duration(diff) * time.Second).String()
}

// MediaType returns the lower-case media type of a Content-Type header
// ("application/json" for "Application/JSON; charset=utf-8"), or "".
func MediaType(ct string) string {
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt, _, _ = strings.Cut(ct, ";")
		return strings.ToLower(strings.TrimSpace(mt))
	}
	return mt
}

// Media types webhook providers send.
const (
	MediaJSON = "application/json"
	MediaForm = "application/x-www-form-urlencoded"
)

// IsJSON reports whether mt is a JSON media type.
func IsJSON(mt string) bool {
	return mt == MediaJSON || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// Object is a decoded JSON object. Numbers are json.Number, so large ids
// keep every digit.
type Object map[string]any

// ParseObject decodes a body that must be exactly one JSON object.
func ParseObject(b []byte) (Object, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("body is not a JSON object: %w", err)
	}
	if m == nil {
		return nil, errors.New("body is not a JSON object: null")
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("body is not a JSON object: data after the object")
	}
	return Object(m), nil
}

// Lookup returns the value at a dotted path of object keys, such as
// "repository.owner.login", or nil when a step is missing or not an object.
func (o Object) Lookup(path string) any {
	var v any = map[string]any(o)
	for key := range strings.SplitSeq(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[key]
	}
	return v
}

// String returns the string or number at path as text, or "" when there is
// none; other kinds of values give "".
func (o Object) String(path string) string {
	switch v := o.Lookup(path).(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	}
	return ""
}

// FormJSON turns form fields into a JSON object: a field given once becomes
// a string, one given several times a list of strings. Field order is lost;
// keys are sorted, as encoding/json writes maps.
func FormJSON(v url.Values) []byte {
	m := make(map[string]any, len(v))
	for k, vals := range v {
		if len(vals) == 1 {
			m[k] = vals[0]
		} else {
			m[k] = vals
		}
	}
	b, _ := json.Marshal(m) // strings and lists of strings always encode
	return b
}

// ParseForm decodes an application/x-www-form-urlencoded body. Unlike
// net/http it refuses malformed bodies rather than dropping the bad parts.
func ParseForm(b []byte) (url.Values, error) {
	v, err := url.ParseQuery(string(b))
	if err != nil {
		return nil, errors.New("body is not valid form encoding")
	}
	return v, nil
}

// TypeSuffix reports whether s may end a CloudEvent type built from a
// provider's event name: letters, digits and _ . : - only, so that a type
// cannot carry spaces or control characters into filters and logs.
func TypeSuffix(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && strings.IndexByte("_.:-", c) < 0 {
			return false
		}
	}
	return true
}
