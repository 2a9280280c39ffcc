package cloudevent

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

func binaryHeader(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestParseRefusesMalformedEvents(t *testing.T) {
	valid := []string{"Ce-Specversion", "1.0", "Ce-Id", "m-1", "Ce-Source", "/s", "Ce-Type", "com.example.t",
		"Content-Type", "application/json"}
	without := func(key string) []string {
		var out []string
		for i := 0; i < len(valid); i += 2 {
			if valid[i] != key {
				out = append(out, valid[i], valid[i+1])
			}
		}
		return out
	}
	tests := []struct {
		name   string
		header http.Header
		body   string
		status int
		want   string // substring of the error message
	}{
		{"binary missing source", binaryHeader(without("Ce-Source")...), "{}", 400, `"source"`},
		{"binary missing id", binaryHeader(without("Ce-Id")...), "{}", 400, `"id"`},
		{"binary missing type", binaryHeader(without("Ce-Type")...), "{}", 400, `"type"`},
		{"binary without specversion", binaryHeader(without("Ce-Specversion")...), "{}", 400, "ce-specversion"},
		{"binary unknown specversion", binaryHeader(append(without("Ce-Specversion"), "Ce-Specversion", "9.9")...),
			"{}", 400, `"9.9"`},
		{"binary bad extension name", binaryHeader(append(valid, "Ce-My_ext", "v")...), "{}", 400, "my_ext"},
		{"binary bad percent-encoding", binaryHeader(append(valid, "Ce-Subject", "a%zz")...), "", 400, "percent"},
		{"binary invalid utf-8 after decoding", binaryHeader(append(valid, "Ce-Subject", "a%ff%fe")...), "", 400, "UTF-8"},
		{"binary bad time", binaryHeader(append(valid, "Ce-Time", "yesterday")...), "", 400, "time"},
		{"structured missing id", binaryHeader("Content-Type", MediaStructuredJSON),
			`{"specversion":"1.0","type":"t","source":"/s"}`, 400, `"id"`},
		{"structured bad json", binaryHeader("Content-Type", MediaStructuredJSON), `{"specversion":`, 400, "JSON"},
		{"structured unknown specversion", binaryHeader("Content-Type", MediaStructuredJSON),
			`{"specversion":"2.0","id":"1","type":"t","source":"/s"}`, 400, `"2.0"`},
		{"structured upper-case extension", binaryHeader("Content-Type", MediaStructuredJSON),
			`{"specversion":"1.0","id":"1","type":"t","source":"/s","myExt":"v"}`, 400, "myExt"},
		{"structured data and data_base64", binaryHeader("Content-Type", MediaStructuredJSON),
			`{"specversion":"1.0","id":"1","type":"t","source":"/s","data":1,"data_base64":"AA=="}`, 400, "data_base64"},
		{"structured object extension", binaryHeader("Content-Type", MediaStructuredJSON),
			`{"specversion":"1.0","id":"1","type":"t","source":"/s","ext":{"a":1}}`, 400, "ext"},
		{"structured unknown format", binaryHeader("Content-Type", "application/cloudevents+xml"), "<e/>", 415, "xml"},
		{"batch empty", binaryHeader("Content-Type", MediaBatchJSON), `[]`, 400, "empty"},
		{"batch with one bad event", binaryHeader("Content-Type", MediaBatchJSON),
			`[{"specversion":"1.0","id":"1","type":"t","source":"/s"},{"specversion":"1.0","id":"2","type":"t"}]`,
			400, "batch event 1"},
		{"plain text, no ce headers", binaryHeader("Content-Type", "text/plain"), "hello", 400, "not a CloudEvent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, err := Parse(tt.header, []byte(tt.body))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse = %v, %v; want *Error", events, err)
			}
			if ce.Status != tt.status || !strings.Contains(ce.Msg, tt.want) {
				t.Fatalf("error = %d %q; want %d containing %q", ce.Status, ce.Msg, tt.status, tt.want)
			}
		})
	}
}

func TestParseAcceptsEveryMode(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		body   string
		check  func(t *testing.T, events []*event.Event)
	}{
		{
			name: "binary with percent-encoded extension",
			header: binaryHeader("Ce-Specversion", "1.0", "Ce-Id", "b-1", "Ce-Source", "/s", "Ce-Type", "t",
				"Ce-Myext", "caf%C3%A9%20%22x%22%25", "Ce-Subject", "a b", "Content-Type", "text/plain"),
			body: "hello",
			check: func(t *testing.T, events []*event.Event) {
				e := events[0]
				if got := e.Extensions()["myext"]; got != `café "x"%` {
					t.Errorf("myext = %q", got)
				}
				if e.Subject() != "a b" || string(e.Data()) != "hello" || e.DataContentType() != "text/plain" {
					t.Errorf("event = %v", e)
				}
			},
		},
		{
			name:   "structured with numeric extension and json data",
			header: binaryHeader("Content-Type", MediaStructuredJSON+"; charset=utf-8"),
			body:   `{"specversion":"1.0","id":"s-1","type":"t","source":"/s","count":42,"data":{"a":[1,2]}}`,
			check: func(t *testing.T, events []*event.Event) {
				e := events[0]
				if got := e.Extensions()["count"]; got != "42" {
					t.Errorf("count = %#v, want the string 42", got)
				}
				if string(e.Data()) != `{"a":[1,2]}` || e.DataContentType() != "application/json" {
					t.Errorf("data = %s (%s)", e.Data(), e.DataContentType())
				}
			},
		},
		{
			name:   "structured with data_base64",
			header: binaryHeader("Content-Type", MediaStructuredJSON),
			body:   `{"specversion":"1.0","id":"s-2","type":"t","source":"/s","datacontenttype":"application/octet-stream","data_base64":"AAEC"}`,
			check: func(t *testing.T, events []*event.Event) {
				if !bytes.Equal(events[0].Data(), []byte{0, 1, 2}) {
					t.Errorf("data = %v", events[0].Data())
				}
			},
		},
		{
			name:   "structured 0.3",
			header: binaryHeader("Content-Type", MediaStructuredJSON),
			body:   `{"specversion":"0.3","id":"o-1","type":"t","source":"/s","schemaurl":"http://x/s","data":"hi","datacontenttype":"text/plain"}`,
			check: func(t *testing.T, events []*event.Event) {
				e := events[0]
				if e.SpecVersion() != "0.3" || string(e.Data()) != "hi" || e.DataSchema() != "http://x/s" {
					t.Errorf("event = %v", e)
				}
			},
		},
		{
			name:   "batch keeps order",
			header: binaryHeader("Content-Type", MediaBatchJSON),
			body:   `[{"specversion":"1.0","id":"1","type":"t","source":"/s"},{"specversion":"1.0","id":"2","type":"t","source":"/s"}]`,
			check: func(t *testing.T, events []*event.Event) {
				if len(events) != 2 || events[0].ID() != "1" || events[1].ID() != "2" {
					t.Errorf("events = %v", events)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, err := Parse(tt.header, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, events)
		})
	}
}

func TestPrepareIngressTTL(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	tests := []struct {
		name    string
		ttl     any // nil: absent
		want    string
		wantErr error
	}{
		{"absent gets the default", nil, "255", nil},
		{"not an integer gets the default", "many", "255", nil},
		{"decremented", "10", "9", nil},
		{"integer extension decremented", int32(3), "2", nil},
		{"one allows a last delivery", "1", "0", nil},
		{"negative is refused", "-3", "", ErrTTLExpired},
		{"zero is refused", "0", "", ErrTTLExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := event.New()
			e.SetID("1")
			e.SetSource("/s")
			e.SetType("t")
			if tt.ttl != nil {
				e.SetExtension(ExtTTL, tt.ttl)
			}
			err := PrepareIngress(&e, now)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got := e.Extensions()[ExtTTL]; got != tt.want {
				t.Errorf("ttl = %#v, want %q", got, tt.want)
			}
			if got := e.Extensions()[ExtArrivalTime]; got != "2026-01-02T03:04:05.000000006Z" {
				t.Errorf("arrival = %v", got)
			}
		})
	}
}

func TestCodecRoundTrip(t *testing.T) {
	header := binaryHeader("Ce-Specversion", "1.0", "Ce-Id", "r-1", "Ce-Source", "/s", "Ce-Type", "t",
		"Ce-Subject", "sub", "Ce-Time", "2026-01-02T03:04:05.123456789Z", "Ce-Dataschema", "http://s/x",
		"Ce-Ext", "%E2%9C%93", "Content-Type", "application/octet-stream")
	events, err := Parse(header, []byte{0, 1, 2, 255})
	if err != nil {
		t.Fatal(err)
	}
	in := events[0]
	b, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if in.String() != out.String() {
		t.Fatalf("round trip changed the event:\n%s\n---\n%s", in, out)
	}
	for i := range b {
		if _, err := Unmarshal(b[:i]); err == nil && i < len(b)-4 {
			t.Fatalf("truncated payload of %d bytes decoded without error", i)
		}
	}
}

func TestWriteBinaryRoundTrip(t *testing.T) {
	e := event.New()
	e.SetID("w-1")
	e.SetSource("/s")
	e.SetType("t")
	e.SetSubject(`a "quoted" 100% ünïcode value`)
	e.SetExtension("ext", "tab\there")
	_ = e.SetData("application/json", map[string]int{"n": 1})
	h := http.Header{}
	WriteBinary(h, &e)
	if got := h.Get("Ce-Subject"); got != "a%20%22quoted%22%20100%25%20%C3%BCn%C3%AFcode%20value" {
		t.Errorf("Ce-Subject = %q", got)
	}
	events, err := Parse(h, e.Data())
	if err != nil {
		t.Fatal(err)
	}
	if events[0].String() != e.String() {
		t.Fatalf("binary round trip changed the event:\n%s\n---\n%s", &e, events[0])
	}
}

func FuzzParse(f *testing.F) {
	f.Add("1.0", "id", "/s", "t", "a%20b", "application/json", []byte(`{"a":1}`))
	f.Add("", "", "", "", "", MediaStructuredJSON, []byte(`{"specversion":"1.0","id":"1","type":"t","source":"/s","data_base64":"AA=="}`))
	f.Add("", "", "", "", "", MediaBatchJSON, []byte(`[{"specversion":"0.3","id":"1","type":"t","source":"/s","datacontentencoding":"base64","data":"AA=="}]`))
	f.Fuzz(func(t *testing.T, sv, id, source, typ, ext, ct string, body []byte) {
		h := http.Header{}
		for k, v := range map[string]string{"Ce-Specversion": sv, "Ce-Id": id, "Ce-Source": source,
			"Ce-Type": typ, "Ce-Ext": ext, "Content-Type": ct} {
			if v != "" {
				h.Set(k, v)
			}
		}
		events, err := Parse(h, body)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.Status < 400 || ce.Status > 499 {
				t.Fatalf("error %v is not a 4xx *Error", err)
			}
			return
		}
		for _, e := range events {
			if err := PrepareIngress(e, time.Now()); err != nil && !errors.Is(err, ErrTTLExpired) {
				t.Fatalf("parsed event fails PrepareIngress: %v", err)
			}
			b, err := Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Unmarshal(b)
			if err != nil {
				t.Fatalf("stored event does not decode: %v", err)
			}
			if back.String() != e.String() {
				t.Fatalf("codec changed the event:\n%s\n---\n%s", e, back)
			}
		}
	})
}

func FuzzUnmarshal(f *testing.F) {
	e := event.New()
	e.SetID("1")
	e.SetSource("/s")
	e.SetType("t")
	b, _ := Marshal(&e)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = Unmarshal(b) // must not panic
	})
}
