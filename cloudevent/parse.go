package cloudevent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// Mode is how an HTTP message carries its CloudEvents.
type Mode int

// Modes of the CloudEvents HTTP binding.
const (
	ModeNone       Mode = iota // not a CloudEvent
	ModeBinary                 // attributes in ce- headers, data in the body
	ModeStructured             // one event as application/cloudevents+json
	ModeBatch                  // application/cloudevents-batch+json
)

// ModeOf tells how the message with header h carries CloudEvents. A message
// with a structured content type of an unknown format is ModeStructured (and
// Parse refuses it with 415).
func ModeOf(h http.Header) Mode {
	mt := mediaType(h.Get("Content-Type"))
	switch {
	case mt == MediaBatchJSON:
		return ModeBatch
	case strings.HasPrefix(mt, "application/cloudevents"):
		return ModeStructured
	case h.Get("Ce-Specversion") != "":
		return ModeBinary
	}
	return ModeNone
}

// IsCloudEvent reports whether an HTTP message with header h claims to carry
// a CloudEvent in any mode.
func IsCloudEvent(h http.Header) bool { return ModeOf(h) != ModeNone }

// Parse reads the CloudEvents of an HTTP message (binary, structured or
// batched mode) and validates each one. Any invalid event fails the whole
// message with an *Error naming the problem. The events share no memory with
// body except for data, which aliases it.
func Parse(h http.Header, body []byte) ([]*event.Event, error) {
	switch ModeOf(h) {
	case ModeBinary:
		e, err := parseBinary(h, body)
		if err != nil {
			return nil, err
		}
		return []*event.Event{e}, nil
	case ModeStructured:
		if mt := mediaType(h.Get("Content-Type")); mt != MediaStructuredJSON {
			return nil, &Error{Status: http.StatusUnsupportedMediaType,
				Msg: "unsupported structured format " + mt + ": use " + MediaStructuredJSON}
		}
		e, err := ParseStructured(body)
		if err != nil {
			return nil, err
		}
		return []*event.Event{e}, nil
	case ModeBatch:
		return parseBatch(body)
	}
	return nil, badRequest("not a CloudEvent: no ce-specversion header and Content-Type %q is not %s or %s",
		h.Get("Content-Type"), MediaStructuredJSON, MediaBatchJSON)
}

func mediaType(ct string) string {
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(strings.SplitN(ct, ";", 2)[0]))
	}
	return mt
}

func parseBinary(h http.Header, body []byte) (*event.Event, error) {
	sv, err := headerValue(h, "Ce-Specversion", "specversion")
	if err != nil {
		return nil, err
	}
	if sv != V1 && sv != V03 {
		return nil, badRequest("unsupported specversion %q: use \"1.0\" or \"0.3\"", sv)
	}
	e := event.New(sv)
	for key, vals := range h {
		if len(key) <= 3 || !strings.EqualFold(key[:3], "ce-") || len(vals) == 0 {
			continue
		}
		name := strings.ToLower(key[3:])
		if name == "specversion" {
			continue
		}
		v, err := percentDecode(vals[0])
		if err != nil {
			return nil, badRequest("header %s: %v", key, err)
		}
		if err := setAttribute(&e, name, v); err != nil {
			return nil, err
		}
	}
	if ct := h.Get("Content-Type"); ct != "" {
		e.SetDataContentType(ct)
	}
	if len(body) > 0 {
		e.DataEncoded = body
	}
	if err := Validate(&e); err != nil {
		return nil, err
	}
	return &e, nil
}

func headerValue(h http.Header, key, attr string) (string, error) {
	v, err := percentDecode(h.Get(key))
	if err != nil {
		return "", badRequest("header %s: %v", key, err)
	}
	if v == "" {
		return "", badRequest("missing required attribute %q", attr)
	}
	return v, nil
}

// setAttribute sets a context attribute or extension from its string form.
func setAttribute(e *event.Event, name, v string) error {
	switch name {
	case "id":
		e.SetID(v)
	case "source":
		e.SetSource(v)
	case "type":
		e.SetType(v)
	case "subject":
		e.SetSubject(v)
	case "datacontenttype":
		e.SetDataContentType(v)
	case "time":
		t, err := types.ParseTime(v)
		if err != nil {
			return badRequest("attribute \"time\" is not an RFC 3339 timestamp: %q", v)
		}
		e.SetTime(t)
	case "dataschema", "schemaurl":
		if contextAttributes[e.SpecVersion()][name] {
			e.SetDataSchema(v)
			return nil
		}
		return setExtension(e, name, v)
	case "datacontentencoding":
		if e.SpecVersion() == V03 {
			e.SetDataContentEncoding(v)
			return nil
		}
		return setExtension(e, name, v)
	default:
		return setExtension(e, name, v)
	}
	return nil
}

func setExtension(e *event.Event, name string, v any) error {
	if !ValidExtensionName(name) {
		return badRequest("invalid extension name %q: names are lower-case letters and digits", name)
	}
	if err := e.Context.SetExtension(name, v); err != nil {
		return badRequest("extension %q: %v", name, err)
	}
	return nil
}

// ParseStructured reads one event in the JSON structured format and
// validates it.
func ParseStructured(body []byte) (*event.Event, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, badRequest("body is not a JSON CloudEvent: %v", err)
	}
	return fromFields(fields)
}

func parseBatch(body []byte) ([]*event.Event, error) {
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(body, &items); err != nil {
		return nil, badRequest("body is not a JSON array of CloudEvents: %v", err)
	}
	if len(items) == 0 {
		return nil, badRequest("empty batch")
	}
	out := make([]*event.Event, 0, len(items))
	for i, f := range items {
		e, err := fromFields(f)
		if err != nil {
			var ce *Error
			if errors.As(err, &ce) {
				return nil, &Error{Status: ce.Status, Msg: fmt.Sprintf("batch event %d: %s", i, ce.Msg)}
			}
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func fromFields(fields map[string]json.RawMessage) (*event.Event, error) {
	if fields == nil {
		return nil, badRequest("body is not a JSON object")
	}
	var sv string
	if raw, ok := fields["specversion"]; !ok {
		return nil, badRequest("missing required attribute \"specversion\"")
	} else if err := json.Unmarshal(raw, &sv); err != nil {
		return nil, badRequest("attribute \"specversion\" is not a string")
	}
	if sv != V1 && sv != V03 {
		return nil, badRequest("unsupported specversion %q: use \"1.0\" or \"0.3\"", sv)
	}
	e := event.New(sv)
	data, hasData := fields["data"]
	data64, hasData64 := fields["data_base64"]
	if hasData && hasData64 {
		return nil, badRequest("an event has either \"data\" or \"data_base64\", not both")
	}
	for name, raw := range fields {
		switch name {
		case "specversion", "data", "data_base64":
			continue
		}
		if bytes.Equal(raw, []byte("null")) {
			continue
		}
		if contextAttributes[sv][name] {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, badRequest("attribute %q must be a string", name)
			}
			if err := setAttribute(&e, name, s); err != nil {
				return nil, err
			}
			continue
		}
		if !ValidExtensionName(name) {
			return nil, badRequest("invalid extension name %q: names are lower-case letters and digits", name)
		}
		v, err := extensionValue(raw)
		if err != nil {
			return nil, badRequest("extension %q: %v", name, err)
		}
		if err := setExtension(&e, name, v); err != nil {
			return nil, err
		}
	}
	switch {
	case hasData64:
		var s string
		if err := json.Unmarshal(data64, &s); err != nil {
			return nil, badRequest("\"data_base64\" must be a base64 string")
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, badRequest("\"data_base64\" is not valid base64: %v", err)
		}
		e.DataEncoded, e.DataBase64 = b, true
	case hasData && !bytes.Equal(data, []byte("null")):
		if err := setStructuredData(&e, data); err != nil {
			return nil, err
		}
	}
	if err := Validate(&e); err != nil {
		return nil, err
	}
	return &e, nil
}

// setStructuredData stores the "data" member: JSON media types keep the JSON
// text; other media types carry a JSON string holding the data (or, for 0.3
// with datacontentencoding base64, the base64 text of it).
func setStructuredData(e *event.Event, data json.RawMessage) error {
	if e.SpecVersion() == V03 && strings.EqualFold(e.DeprecatedDataContentEncoding(), "base64") {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return badRequest("\"data\" must be a base64 string when datacontentencoding is base64")
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return badRequest("\"data\" is not valid base64: %v", err)
		}
		e.DataEncoded = b
		e.SetDataContentEncoding("")
		return nil
	}
	if isJSONMedia(e.DataMediaType()) {
		e.DataEncoded = []byte(data)
		if e.DataContentType() == "" {
			e.SetDataContentType("application/json")
		}
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		// A JSON value with a non-JSON media type: keep the JSON text.
		e.DataEncoded = []byte(data)
		return nil
	}
	e.DataEncoded = []byte(s)
	return nil
}

func isJSONMedia(mt string) bool {
	return mt == "" || mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// extensionValue converts a JSON extension value to its canonical string.
func extensionValue(raw json.RawMessage) (string, error) {
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return "", err
	}
	switch x := v.(type) {
	case string:
		if !utf8.ValidString(x) {
			return "", errors.New("not valid UTF-8")
		}
		return x, nil
	case bool:
		return types.FormatBool(x), nil
	case json.Number:
		return x.String(), nil
	}
	return "", errors.New("must be a string, number or boolean")
}

// PrepareIngress readies a parsed event for the bus: it normalises extension
// values to strings, validates the event, applies the TTL and stamps
// knativearrivaltime with now. An event without an integer knativebrokerttl
// gets DefaultTTL; one with a TTL of 0 or less is refused with ErrTTLExpired;
// any other is stored with its TTL decremented. A TTL of n thus allows n
// deliveries along a chain of replies: replies inherit the TTL of the event
// they answer.
func PrepareIngress(e *event.Event, now time.Time) error {
	for name, v := range e.Extensions() {
		if _, ok := v.(string); ok {
			continue
		}
		s, err := types.Format(v)
		if err != nil {
			return badRequest("extension %q: %v", name, err)
		}
		if err := e.Context.SetExtension(name, s); err != nil {
			return badRequest("extension %q: %v", name, err)
		}
	}
	if err := Validate(e); err != nil {
		return err
	}
	ttl, ok := TTL(e)
	switch {
	case !ok:
		ttl = DefaultTTL
	case ttl <= 0:
		return ErrTTLExpired
	default:
		ttl--
	}
	SetTTL(e, ttl)
	_ = e.Context.SetExtension(ExtArrivalTime, now.UTC().Format(time.RFC3339Nano))
	return nil
}

// TTL returns the event's knativebrokerttl and whether it has a valid one.
func TTL(e *event.Event) (int, bool) {
	v, ok := e.Extensions()[ExtTTL]
	if !ok {
		return 0, false
	}
	s, err := types.Format(v)
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, false
	}
	return n, true
}

// SetTTL sets the event's knativebrokerttl.
func SetTTL(e *event.Event, ttl int) {
	_ = e.Context.SetExtension(ExtTTL, strconv.Itoa(ttl))
}
