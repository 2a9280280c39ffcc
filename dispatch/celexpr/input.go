package celexpr

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	cetypes "github.com/cloudevents/sdk-go/v2/types"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
)

// Input is one event prepared for evaluation. The `event` map is built when
// the Input is made; `data` is decoded on first use, so expressions that
// look only at attributes never pay for parsing the payload. An Input is
// safe for concurrent use by several expressions.
type Input struct {
	event ref.Val

	raw      []byte
	dataType string
	once     sync.Once
	data     ref.Val
}

var _ interpreter.Activation = (*Input)(nil)

// NewInput prepares e for evaluation. The Input keeps a reference to the
// event's data; the caller must not modify it while the Input is in use.
func NewInput(e *event.Event) *Input {
	return &Input{
		event:    types.DefaultTypeAdapter.NativeToValue(eventMap(e)),
		raw:      e.Data(),
		dataType: e.DataContentType(),
	}
}

// ResolveName implements interpreter.Activation.
func (in *Input) ResolveName(name string) (any, bool) {
	switch name {
	case VarEvent:
		return in.event, true
	case VarData:
		in.once.Do(func() {
			in.data = types.DefaultTypeAdapter.NativeToValue(decodeData(in.raw, in.dataType))
		})
		return in.data, true
	}
	return nil, false
}

// Parent implements interpreter.Activation; an Input has none.
func (in *Input) Parent() interpreter.Activation { return nil }

// eventMap lists the attributes an event has. Optional attributes that are
// unset are left out, so `has(event.subject)` tells whether a subject is set.
func eventMap(e *event.Event) map[string]any {
	exts := e.Extensions()
	m := make(map[string]any, 8+len(exts))
	m["id"] = e.ID()
	m["source"] = e.Source()
	m["specversion"] = e.SpecVersion()
	m["type"] = e.Type()
	setNonEmpty(m, "subject", e.Subject())
	setNonEmpty(m, "datacontenttype", e.DataContentType())
	setNonEmpty(m, "dataschema", e.DataSchema())
	if t := e.Time(); !t.IsZero() {
		m["time"] = t
	}
	for name, v := range exts {
		m[name] = extensionValue(v)
	}
	return m
}

func setNonEmpty(m map[string]any, k, v string) {
	if v != "" {
		m[k] = v
	}
}

// extensionValue maps an extension value onto a CEL-friendly Go value. The
// ingress stores every extension as a string; other types only appear in
// events built in-process.
func extensionValue(v any) any {
	switch x := v.(type) {
	case string, bool, []byte:
		return x
	case int32:
		return int64(x)
	}
	s, err := cetypes.Format(v)
	if err != nil {
		return nil
	}
	return s
}

// decodeData turns an event's data into the value `data` is bound to: JSON
// for JSON media types (and for data without a media type that parses as
// JSON), a string for text, bytes otherwise, and null when there is no data.
// A JSON media type whose data does not parse falls back to text or bytes
// rather than failing every expression that does not even look at data.
func decodeData(b []byte, contentType string) any {
	if len(b) == 0 {
		return nil
	}
	mt := mediaType(contentType)
	if isJSONMedia(mt) {
		if v, err := DecodeJSON(b); err == nil {
			return v
		}
	}
	if isTextMedia(mt) && utf8.Valid(b) {
		return string(b)
	}
	return b
}

func mediaType(ct string) string {
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(ct))
	}
	return mt
}

func isJSONMedia(mt string) bool {
	return mt == "" || mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

func isTextMedia(mt string) bool {
	return mt == "" || strings.HasPrefix(mt, "text/") || mt == "application/xml" ||
		strings.HasSuffix(mt, "+xml") || strings.HasSuffix(mt, "+json") || mt == "application/json"
}

// errTrailing reports bytes after the first JSON value.
var errTrailing = errors.New("celexpr: data after the JSON value")

// DecodeJSON decodes one JSON value into maps, slices, strings, bools, nil,
// int64 for integral numbers that fit in an int64 and float64 for every other
// number. Unlike encoding/json's default, a large id such as
// 9007199254740993 keeps its exact value.
func DecodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errTrailing
	}
	return convertNumbers(v), nil
}

// convertNumbers replaces json.Number values in place.
func convertNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return n
		}
		// Out-of-range values come back as ±Inf with an error; the infinity
		// is the closest double and compares as users expect.
		f, _ := strconv.ParseFloat(string(x), 64)
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = convertNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = convertNumbers(e)
		}
	}
	return v
}
