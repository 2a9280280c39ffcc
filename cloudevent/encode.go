package cloudevent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// Attribute is one context attribute or extension in string form.
type Attribute struct {
	Name, Value string
}

// Attributes returns every attribute of the event except data, in string
// form, context attributes first (specversion leading) and extensions after
// in no particular order.
func Attributes(e *event.Event) []Attribute {
	ctx := e.Context
	out := make([]Attribute, 0, 8+len(ctx.GetExtensions()))
	add := func(name, v string) {
		if v != "" {
			out = append(out, Attribute{name, v})
		}
	}
	add("specversion", ctx.GetSpecVersion())
	add("id", ctx.GetID())
	add("source", ctx.GetSource())
	add("type", ctx.GetType())
	add("subject", ctx.GetSubject())
	if t := ctx.GetTime(); !t.IsZero() {
		add("time", types.FormatTime(t))
	}
	if ctx.GetSpecVersion() == V03 {
		add("schemaurl", ctx.GetDataSchema())
	} else {
		add("dataschema", ctx.GetDataSchema())
	}
	add("datacontenttype", ctx.GetDataContentType())
	if ctx.GetSpecVersion() == V03 {
		add("datacontentencoding", ctx.DeprecatedGetDataContentEncoding())
	}
	for name, v := range ctx.GetExtensions() {
		s, err := types.Format(v)
		if err != nil {
			s = fmt.Sprint(v)
		}
		out = append(out, Attribute{name, s})
	}
	return out
}

// WriteBinary sets the ce- headers and Content-Type of h for the event in
// binary mode, percent-encoding header values as the HTTP binding requires.
// The caller sends e.Data() as the body.
func WriteBinary(h http.Header, e *event.Event) {
	for _, a := range Attributes(e) {
		if a.Name == "datacontenttype" {
			h.Set("Content-Type", a.Value)
			continue
		}
		h["Ce-"+canonicalSuffix(a.Name)] = []string{percentEncode(a.Value)}
	}
}

// canonicalSuffix upper-cases the first letter so header keys are canonical
// (Ce-Id, Ce-Knativebrokerttl) without a call to CanonicalHeaderKey.
func canonicalSuffix(name string) string {
	if name == "" || name[0] < 'a' || name[0] > 'z' {
		return name
	}
	return string(name[0]-'a'+'A') + name[1:]
}

// MarshalStructured encodes the event in the JSON structured format.
func MarshalStructured(e *event.Event) ([]byte, error) {
	return json.Marshal(e)
}

// NewRequest builds an HTTP request that carries the event in binary mode,
// or in the JSON structured format when structured is true.
func NewRequest(ctx context.Context, method, url string, e *event.Event, structured bool) (*http.Request, error) {
	var body []byte
	if structured {
		b, err := MarshalStructured(e)
		if err != nil {
			return nil, fmt.Errorf("encode structured event: %w", err)
		}
		body = b
	} else {
		body = e.Data()
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if structured {
		req.Header.Set("Content-Type", MediaStructuredJSON)
	} else {
		WriteBinary(req.Header, e)
	}
	return req, nil
}

// percentEncode encodes a header value as the CloudEvents HTTP binding asks:
// space, double quote, percent and every byte outside printable ASCII become
// %XX (UTF-8 bytes of non-ASCII characters included).
func percentEncode(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if needsEscape(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c) {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func needsEscape(c byte) bool {
	return c <= ' ' || c >= 0x7f || c == '"' || c == '%'
}

// percentDecode decodes %XX sequences in a header value and refuses results
// that are not valid UTF-8.
func percentDecode(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 {
		if !utf8.ValidString(s) {
			return "", fmt.Errorf("value is not valid UTF-8")
		}
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return "", fmt.Errorf("invalid percent-encoding in %q", s)
		}
		b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
		i += 2
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("percent-decoded value is not valid UTF-8")
	}
	return string(b), nil
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
