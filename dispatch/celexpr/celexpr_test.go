package celexpr

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

func newEvent(t testing.TB, contentType string, data []byte, exts map[string]any) *event.Event {
	t.Helper()
	e := event.New()
	e.SetID("e-1")
	e.SetSource("/s")
	e.SetType("t")
	if contentType != "" {
		e.SetDataContentType(contentType)
	}
	e.DataEncoded = data
	for k, v := range exts {
		e.SetExtension(k, v)
	}
	return &e
}

func TestCompileRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, expr, want string
	}{
		{"syntax", `event.type ==`, "Syntax error"},
		{"string result", `event.type + "x"`, "want bool"},
		{"int result", `1 + 2`, "want bool"},
		{"unknown variable", `foo == 1`, "undeclared reference"},
		{"unknown function", `nope(event.type)`, "undeclared reference"},
		{"empty", ``, "Syntax error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Compile(tc.expr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Compile(%q) error = %v, want it to contain %q", tc.expr, err, tc.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	const ts = "2024-05-01T10:00:00Z"
	tests := []struct {
		name     string
		expr     string
		ctype    string
		data     string
		exts     map[string]any
		subject  string
		want     bool
		wantErr  bool
		errorsIs error
	}{
		// Field case BR-10: an error in one branch of || does not hide a match
		// in the other, and a missing path is no match, not a crash.
		{name: "BR-10 f-1 matches", expr: `has(data.fizz.baz.buzz) || data.kind == "x"`,
			ctype: "application/json", data: `{"fizz":{"buzz":{"baz":"biz"}},"kind":"x"}`, want: true},
		{name: "BR-10 f-2 no match", expr: `has(data.fizz.baz.buzz) || data.kind == "x"`,
			ctype: "application/json", data: `{"fizz":{"buzz":{}},"kind":"y"}`, wantErr: true},
		{name: "BR-10 optional syntax", expr: `data.?fizz.?baz.?buzz.hasValue()`,
			ctype: "application/json", data: `{"fizz":{"buzz":{}},"kind":"y"}`, want: false},
		{name: "BR-10 S2 or", expr: `data.object_attributes.oldrev != "" || data.object_kind == "merge_request"`,
			ctype: "application/json", data: `{"object_kind":"merge_request","object_attributes":{}}`, want: true},

		{name: "big int exact", expr: `data.id == 9007199254740993`,
			ctype: "application/json", data: `{"id":9007199254740993}`, want: true},
		{name: "big int neighbour", expr: `data.id == 9007199254740993`,
			ctype: "application/json", data: `{"id":9007199254740992}`, want: false},
		{name: "double vs int literal", expr: `data.amount > 100`,
			ctype: "application/json", data: `{"amount":100.5}`, want: true},
		{name: "int equal not greater", expr: `data.amount > 100`,
			ctype: "application/json", data: `{"amount":100}`, want: false},
		{name: "int vs double literal", expr: `data.amount >= 100.5`,
			ctype: "application/json", data: `{"amount":101}`, want: true},
		{name: "integral double equals int", expr: `data.n == 1`,
			ctype: "application/json", data: `{"n":1.0}`, want: true},
		{name: "beyond int64 is double", expr: `type(data.n) == double`,
			ctype: "application/json", data: `{"n":9223372036854775808}`, want: true},
		{name: "mixed arithmetic is an error", expr: `data.qty * 1.1 > 1.0`,
			ctype: "application/json", data: `{"qty":3}`, wantErr: true},
		{name: "explicit conversion", expr: `double(data.qty) * 1.1 > 3.0`,
			ctype: "application/json", data: `{"qty":3}`, want: true},

		{name: "type", expr: `event.type == "t" && event.source == "/s" && event.id == "e-1"`, want: true},
		{name: "specversion", expr: `event.specversion == "1.0"`, want: true},
		{name: "time is a timestamp", expr: `event.time > timestamp("2024-01-01T00:00:00Z")`, want: true},
		{name: "extension", expr: `event.myext == "v"`, exts: map[string]any{"myext": "v"}, want: true},
		{name: "extension int normalised", expr: `event.n == 3`, exts: map[string]any{"n": int32(3)}, want: true},
		{name: "missing extension errors", expr: `event.myext == "v"`, wantErr: true},
		{name: "has missing extension", expr: `has(event.myext)`, want: false},
		{name: "has unset subject", expr: `has(event.subject)`, want: false},
		{name: "has set subject", expr: `has(event.subject) && event.subject == "orders"`, subject: "orders", want: true},
		{name: "datacontenttype", expr: `event.datacontenttype == "application/json"`,
			ctype: "application/json", data: `{}`, want: true},
		{name: "optional on event", expr: `event.?myext.orValue("none") == "none"`, want: true},

		{name: "text data is a string", expr: `data == "hello"`, ctype: "text/plain", data: "hello", want: true},
		{name: "text with charset", expr: `data.startsWith("he")`, ctype: "text/plain; charset=utf-8", data: "hello", want: true},
		{name: "binary data is bytes", expr: `data == b"\x00\x01"`, ctype: "application/octet-stream",
			data: "\x00\x01", want: true},
		{name: "no content type json", expr: `data.a == 1`, data: `{"a":1}`, want: true},
		{name: "no content type text", expr: `data == "plain words"`, data: `plain words`, want: true},
		{name: "invalid json falls back to string", expr: `data == "{nope"`, ctype: "application/json",
			data: `{nope`, want: true},
		{name: "cloudevents json suffix", expr: `data.a == "b"`, ctype: "application/vnd.x+json", data: `{"a":"b"}`, want: true},
		{name: "no data is null", expr: `data == null`, want: true},
		{name: "field of no data errors", expr: `data.kind == "x"`, wantErr: true},
		{name: "no data optional", expr: `!data.?kind.hasValue()`, want: true},
		{name: "json list", expr: `data.tags.exists(t, t == "a")`, ctype: "application/json",
			data: `{"tags":["b","a"]}`, want: true},
		{name: "json null field", expr: `data.note == null`, ctype: "application/json",
			data: `{"note":null}`, want: true},

		{name: "dyn non-bool", expr: `data.flag`, ctype: "application/json", data: `{"flag":1}`,
			wantErr: true, errorsIs: ErrNotBool},
		{name: "dyn bool", expr: `data.flag`, ctype: "application/json", data: `{"flag":true}`, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			x, err := Compile(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			var data []byte
			if tc.data != "" {
				data = []byte(tc.data)
			}
			e := newEvent(t, tc.ctype, data, tc.exts)
			if tc.subject != "" {
				e.SetSubject(tc.subject)
			}
			tm, _ := time.Parse(time.RFC3339, ts)
			e.SetTime(tm)

			got, err := x.Match(e)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Match error = %v, want error %v", err, tc.wantErr)
			}
			if tc.errorsIs != nil && !errors.Is(err, tc.errorsIs) {
				t.Fatalf("Match error = %v, want %v", err, tc.errorsIs)
			}
			if got != tc.want {
				t.Fatalf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCostLimit(t *testing.T) {
	t.Parallel()
	items := make([]int, 500)
	body, _ := json.Marshal(map[string]any{"l": items})
	x, err := Compile(`data.l.all(a, data.l.all(b, a + b >= 0))`)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ok, err := x.Match(newEvent(t, "application/json", body, nil))
	if err == nil || !strings.Contains(err.Error(), "cost limit") {
		t.Fatalf("Match = %v, %v; want a cost limit error", ok, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cost-limited evaluation took %v", d)
	}
}

func TestInputSharedAcrossExpressions(t *testing.T) {
	t.Parallel()
	a, _ := Compile(`data.k == "v"`)
	b, _ := Compile(`event.type == "t" && data.n == 2`)
	in := NewInput(newEvent(t, "application/json", []byte(`{"k":"v","n":2}`), nil))
	for _, x := range []*Expr{a, b, a} {
		if ok, err := x.Eval(in); !ok || err != nil {
			t.Fatalf("%s: Eval = %v, %v", x, ok, err)
		}
	}
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    any
		wantErr bool
	}{
		{in: `5`, want: int64(5)},
		{in: `-5`, want: int64(-5)},
		{in: `5.0`, want: 5.0},
		{in: `1e2`, want: 100.0},
		{in: `9223372036854775807`, want: int64(9223372036854775807)},
		{in: `9223372036854775808`, want: 9223372036854775808.0},
		{in: `"s"`, want: "s"},
		{in: `null`, want: nil},
		{in: `{} {}`, wantErr: true},
		{in: `{`, wantErr: true},
		{in: ``, wantErr: true},
	}
	for _, tc := range tests {
		got, err := DecodeJSON([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Fatalf("DecodeJSON(%q) error = %v", tc.in, err)
		}
		if !tc.wantErr && got != tc.want {
			t.Fatalf("DecodeJSON(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
	}
}

func FuzzDecodeJSON(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.json")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"id":9007199254740993,"a":[1,2.5,-3e400,{"b":null}]}`))
	f.Add([]byte(`[[[[]]]]`))
	expr, err := Compile(`has(data.a.b) || data.id == 1 || data == "x"`)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeJSON(b)
		if err == nil {
			checkNumbers(t, v)
		}
		if json.Valid(b) && err != nil {
			t.Fatalf("valid JSON %q refused: %v", b, err)
		}
		// Whatever the payload, evaluation returns; it never panics.
		_, _ = expr.Match(newEvent(t, "application/json", b, nil))
		_, _ = expr.Match(newEvent(t, "", b, nil))
	})
}

func checkNumbers(t *testing.T, v any) {
	switch x := v.(type) {
	case json.Number:
		t.Fatalf("json.Number %v left in decoded value", x)
	case map[string]any:
		for _, e := range x {
			checkNumbers(t, e)
		}
	case []any:
		for _, e := range x {
			checkNumbers(t, e)
		}
	case nil, bool, string, int64, float64:
	default:
		t.Fatalf("unexpected decoded type %T", v)
	}
}

func TestConditions(t *testing.T) {
	t.Parallel()
	deps := []string{"plate", "speed"}
	tests := []struct {
		expr    string
		held    map[string]bool
		want    bool
		wantErr bool
	}{
		{expr: "", held: map[string]bool{"plate": true, "speed": true}, want: true},
		{expr: "", held: map[string]bool{"plate": true}, want: false},
		{expr: "plate && speed", held: map[string]bool{"plate": true}, want: false},
		{expr: "plate || speed", held: map[string]bool{"speed": true}, want: true},
		{expr: "plate && !speed", held: map[string]bool{"plate": true}, want: true},
		{expr: "(plate)", held: map[string]bool{"plate": true}, want: true},
		{expr: "other", wantErr: true},
		{expr: "plate +", wantErr: true},
		{expr: "1 + 1", wantErr: true},
	}
	for _, tc := range tests {
		c, err := CompileConditions(tc.expr, deps)
		if (err != nil) != tc.wantErr {
			t.Fatalf("CompileConditions(%q) error = %v", tc.expr, err)
		}
		if err != nil {
			continue
		}
		got, err := c.Eval(func(d string) bool { return tc.held[d] })
		if err != nil || got != tc.want {
			t.Errorf("%q with %v = %v, %v; want %v", tc.expr, tc.held, got, err, tc.want)
		}
	}
}
