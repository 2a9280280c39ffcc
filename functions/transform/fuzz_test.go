package transform

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// addSeeds adds the JSON files of testdata and a few edge cases to f.
func addSeeds(f *testing.F) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{`{}`, `[]`, `null`, `0`, `-0`, `1e400`, `9007199254740993`, `0.1`, `"\ud800"`,
		`[[[[]]]]`, `{"a":{"a":{}},"a":1}`, `{"1":1}`, `"\u0000<>&"`, `1.0`, `-1.5E-10`, `{"x":`, `[1,]`, `{} x`} {
		f.Add([]byte(s))
	}
}

// FuzzJQInput runs `.` on arbitrary input: valid JSON must come back equal
// under jq's number rules (integers exact, other numbers as float64, overflow
// clamped), and anything else must be refused without a panic.
func FuzzJQInput(f *testing.F) {
	addSeeds(f)
	tr, err := Compile(Spec{JQ: "."}, Limits{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		out, err := tr.Apply(context.Background(), input)
		if !validJSON(input) {
			if err == nil {
				t.Fatalf("Apply(%q) = %q, want an error", input, out)
			}
			return
		}
		if err != nil || len(out) != 1 {
			t.Fatalf("Apply(%q) = %q, %v", input, out, err)
		}
		if !json.Valid(out[0]) {
			t.Fatalf("output %q is not JSON", out[0])
		}
		if why := jsonDiff(out[0], input, jqNumbersEqual); why != "" {
			t.Fatalf("Apply(%q) = %s: %s", input, out[0], why)
		}
	})
}

// FuzzLuaRoundTrip sends arbitrary input through the identity script: valid
// JSON must come back exactly equal, numbers included.
func FuzzLuaRoundTrip(f *testing.F) {
	addSeeds(f)
	tr, err := Compile(Spec{Lua: "function transform(x) return x end"}, Limits{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		out, err := tr.Apply(context.Background(), input)
		if !validJSON(input) {
			if err == nil {
				t.Fatalf("Apply(%q) = %q, want an error", input, out)
			}
			return
		}
		if err != nil || len(out) != 1 {
			t.Fatalf("Apply(%q) = %q, %v", input, out, err)
		}
		if why := jsonDiff(out[0], input, exactNumbersEqual); why != "" {
			t.Fatalf("Apply(%q) = %s: %s", input, out[0], why)
		}
	})
}

// validJSON reports whether b is one JSON value that encoding/json decodes
// (within its nesting limit).
func validJSON(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	return json.Valid(b) && dec.Decode(&v) == nil
}

// jsonEqual reports whether a and b are the same JSON value, numbers
// compared exactly.
func jsonEqual(a, b string) bool {
	return jsonDiff([]byte(a), []byte(b), exactNumbersEqual) == ""
}

// jsonDiff decodes got and want and describes the first difference, or
// returns "" when they are equal; numbers are compared with eq.
func jsonDiff(got, want []byte, eq func(got, want string) bool) string {
	decode := func(b []byte) (any, error) {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		err := dec.Decode(&v)
		return v, err
	}
	g, err := decode(got)
	if err != nil {
		return "got: " + err.Error()
	}
	w, err := decode(want)
	if err != nil {
		return "want: " + err.Error()
	}
	return valueDiff(g, w, eq, "$")
}

func valueDiff(got, want any, eq func(got, want string) bool, path string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok || len(g) != len(w) {
			return path + ": not the same object"
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				return path + ": missing key " + strconv.Quote(k)
			}
			if d := valueDiff(gv, wv, eq, path+"."+k); d != "" {
				return d
			}
		}
		return ""
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return path + ": not the same array"
		}
		for i := range w {
			if d := valueDiff(g[i], w[i], eq, path+"["+strconv.Itoa(i)+"]"); d != "" {
				return d
			}
		}
		return ""
	case json.Number:
		g, ok := got.(json.Number)
		if !ok || !eq(string(g), string(w)) {
			return path + ": number differs"
		}
		return ""
	}
	if got != want {
		return path + ": value differs"
	}
	return ""
}

// exactNumbersEqual compares two decimal numbers by value, to 2048 bits.
func exactNumbersEqual(got, want string) bool {
	if got == want {
		return true
	}
	g, _, err1 := big.ParseFloat(got, 10, 2048, big.ToNearestEven)
	w, _, err2 := big.ParseFloat(want, 10, 2048, big.ToNearestEven)
	return err1 == nil && err2 == nil && g.Cmp(w) == 0
}

// jqNumbersEqual compares as gojq computes: integers exactly, anything with
// a fraction or exponent as a float64, out of range clamped like jq.
func jqNumbersEqual(got, want string) bool {
	if !strings.ContainsAny(want, ".eE") {
		return exactNumbersEqual(got, want)
	}
	g, _ := strconv.ParseFloat(got, 64)
	w, _ := strconv.ParseFloat(want, 64)
	if math.IsInf(w, 0) {
		w = math.Copysign(math.MaxFloat64, w)
	}
	return g == w
}
