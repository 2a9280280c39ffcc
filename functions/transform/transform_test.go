package transform

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// apply compiles spec with limits and applies it to input, failing the test
// on a compile error.
func apply(t *testing.T, spec Spec, limits Limits, input string) ([]string, error) {
	t.Helper()
	tr, err := Compile(spec, limits)
	if err != nil {
		t.Fatalf("Compile(%+v): %v", spec, err)
	}
	out, err := tr.Apply(context.Background(), []byte(input))
	var got []string
	for _, o := range out {
		got = append(got, string(o))
	}
	return got, err
}

func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		spec      Spec
		limits    Limits
		wantLine  int // 0: not a *CompileError, or no position
		wantCol   int
		wantInErr string
	}{
		{name: "neither", spec: Spec{}, wantInErr: "one of jq and lua is required"},
		{name: "both", spec: Spec{JQ: ".", Lua: "function transform(x) end"}, wantInErr: "only one of jq and lua"},
		{name: "negative timeout", spec: Spec{JQ: "."}, limits: Limits{Timeout: -1}, wantInErr: "limits.timeout"},
		{name: "negative lua memory", spec: Spec{JQ: "."}, limits: Limits{LuaMaxMemoryBytes: -1},
			wantInErr: "limits.luaMaxMemoryBytes"},
		{name: "jq syntax", spec: Spec{JQ: "{a: 1,\n  b: )}"}, wantLine: 2, wantCol: 6, wantInErr: `unexpected token ")"`},
		{name: "jq unknown function", spec: Spec{JQ: ".a | nosuch"}, wantInErr: "nosuch/0"},
		{name: "jq input", spec: Spec{JQ: "input"}, wantInErr: "not allowed"},
		{name: "jq inputs", spec: Spec{JQ: "[inputs]"}, wantInErr: "not allowed"},
		{name: "jq module", spec: Spec{JQ: `import "x" as x; .`}, wantInErr: "module"},
		{name: "jq debug", spec: Spec{JQ: `debug`}, wantInErr: "debug"},
		{name: "lua syntax", spec: Spec{Lua: "function transform(x)\n  return x +\nend"}, wantLine: 3, wantCol: 3,
			wantInErr: "near 'end'"},
		{name: "lua no transform", spec: Spec{Lua: "x = 1"}, wantInErr: "does not define function transform"},
		{name: "lua transform not a function", spec: Spec{Lua: "transform = 1"}, wantInErr: "does not define"},
		{name: "lua top-level error", spec: Spec{Lua: "\nerror('setup failed')"}, wantInErr: "script:2: setup failed"},
		// A generous timeout: on a loaded machine under -race the budgets,
		// not the clock, must be what stops these.
		{name: "lua top-level loop", spec: Spec{Lua: "while true do end"}, limits: Limits{Timeout: time.Minute},
			wantInErr: "budget"},
		{name: "lua top-level allocation", spec: Spec{Lua: `local s = "x" while true do s = s .. s end`},
			limits: Limits{Timeout: time.Minute}, wantInErr: "memory budget"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr, err := Compile(tt.spec, tt.limits)
			if err == nil {
				t.Fatalf("Compile = %v, want an error", tr)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantInErr)
			}
			var ce *CompileError
			if tt.wantLine != 0 {
				if !errors.As(err, &ce) {
					t.Fatalf("error %T is not a *CompileError", err)
				}
				if ce.Line != tt.wantLine || ce.Column != tt.wantCol {
					t.Errorf("position = %d:%d, want %d:%d", ce.Line, ce.Column, tt.wantLine, tt.wantCol)
				}
			}
		})
	}
}

func TestJQ(t *testing.T) {
	t.Parallel()
	sensor := readTestdata(t, "sensor_input.json")
	tests := []struct {
		name    string
		program string
		input   string
		want    []string
	}{
		{name: "field", program: ".speed.data.kmh", input: sensor, want: []string{"87.5"}},
		{name: "two dependencies", program: "{plate: .plate.data.text, kmh: .speed.data.kmh}", input: sensor,
			want: []string{`{"kmh":87.5,"plate":"A-123-BC"}`}},
		{name: "extension and attributes", program: "[.speed.tenant, .plate.subject == .speed.subject]", input: sensor,
			want: []string{`["city",true]`}},
		{name: "no output", program: "select(.speed.data.kmh > 100)", input: sensor, want: nil},
		{name: "empty", program: "empty", input: `{}`, want: nil},
		{name: "several outputs", program: ".speed.data.limits[] | {limit: .}", input: sensor,
			want: []string{`{"limit":50}`, `{"limit":70}`}},
		{name: "big integer kept", program: ".id", input: `{"id": 9007199254740993}`, want: []string{"9007199254740993"}},
		{name: "big integer in data", program: ".plate.data.frame", input: sensor, want: []string{"9007199254740993"}},
		{name: "huge integer kept", program: ".", input: `123456789012345678901234567890`,
			want: []string{"123456789012345678901234567890"}},
		{name: "big integer arithmetic exact", program: ". + 1", input: `9007199254740993`,
			want: []string{"9007199254740994"}},
		{name: "float", program: ".", input: `[0.1, 1.5e-7, 1e300, -0.0]`, want: []string{`[0.1,1.5e-7,1e+300,-0]`}},
		{name: "overflowing number clamps like jq", program: ".", input: `1e400`,
			want: []string{"1.7976931348623157e+308"}},
		{name: "null and strings", program: ".", input: `{"a":null,"s":"q\"<>&\u0001"}`,
			want: []string{`{"a":null,"s":"q\"<>&\u0001"}`}},
		{name: "env is empty", program: "[$ENV, env]", input: `null`, want: []string{`[{},{}]`}},
		{name: "halt keeps earlier values", program: "1, halt, 2", input: `null`, want: []string{"1"}},
		{name: "nan is null", program: "nan", input: `null`, want: []string{"null"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := apply(t, Spec{JQ: tt.program}, Limits{}, tt.input)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") || len(got) != len(tt.want) {
				t.Errorf("Apply = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestJQErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		program   string
		limits    Limits
		input     string
		want      error // a sentinel, or nil
		wantInErr string
		notJQ     bool // the error is about the input, not a *RuntimeError
	}{
		{name: "type error", program: ".a + 1", input: `{"a":"x"}`, wantInErr: "cannot add"},
		{name: "error call", program: `error("no plate")`, input: `{}`, wantInErr: "no plate"},
		{name: "halt_error", program: `"bye" | halt_error`, input: `{}`, wantInErr: "bye"},
		{name: "error after outputs", program: `1, 2, error("late")`, input: `{}`, wantInErr: "late"},
		{name: "timeout recursion", program: "def f: f; f", limits: Limits{Timeout: 20 * time.Millisecond},
			input: `{}`, want: ErrTimeout},
		{name: "timeout loop", program: "last(repeat(1))", limits: Limits{Timeout: 20 * time.Millisecond},
			input: `{}`, want: ErrTimeout},
		{name: "output too large", program: "[range(100000)]", limits: Limits{MaxOutputBytes: 1000},
			input: `{}`, want: ErrOutputTooLarge},
		{name: "outputs add up", program: "range(30) | tostring * 100", limits: Limits{MaxOutputBytes: 2000},
			input: `{}`, want: ErrOutputTooLarge},
		{name: "string too large", program: `"x" * 5000`, limits: Limits{MaxOutputBytes: 4096},
			input: `{}`, want: ErrOutputTooLarge},
		{name: "too many outputs", program: "range(1001)", input: `{}`, want: ErrOutputTooLarge},
		{name: "fewer outputs allowed", program: "range(3)", limits: Limits{MaxOutputs: 2}, input: `{}`,
			want: ErrOutputTooLarge},
		{name: "input not json", program: ".", input: `{"a":`, wantInErr: "decode input", notJQ: true},
		{name: "input with trailing data", program: ".", input: `{} {}`, wantInErr: "after the first JSON value",
			notJQ: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.limits.Timeout == 0 {
				// Only the timeout cases may be stopped by the clock, even on
				// a loaded machine under -race.
				tt.limits.Timeout = time.Minute
			}
			got, err := apply(t, Spec{JQ: tt.program}, tt.limits, tt.input)
			if err == nil || got != nil {
				t.Fatalf("Apply = %q, %v; want no values and an error", got, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %q is not %q", err, tt.want)
			}
			if tt.wantInErr != "" && !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantInErr)
			}
			var re *RuntimeError
			if tt.want == nil && !tt.notJQ && !errors.As(err, &re) {
				t.Errorf("error %T is not a *RuntimeError", err)
			}
		})
	}
}

// TestCallerCancel checks that a caller's shutdown is not reported as the
// program's timeout, for both languages.
func TestCallerCancel(t *testing.T) {
	t.Parallel()
	specs := map[string]Spec{
		"jq":  {JQ: "last(repeat(1))"},
		"lua": {Lua: "function transform(x) while true do end end"},
	}
	for name, spec := range specs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tr, err := Compile(spec, Limits{Timeout: time.Minute, LuaMaxInstructions: 1 << 40})
			if err != nil {
				t.Fatal(err)
			}
			shutdown := errors.New("shutting down")
			ctx, cancel := context.WithCancelCause(context.Background())
			time.AfterFunc(20*time.Millisecond, func() { cancel(shutdown) })
			t.Cleanup(func() { cancel(nil) })

			_, err = tr.Apply(ctx, []byte(`{}`))
			if !errors.Is(err, shutdown) || errors.Is(err, ErrTimeout) {
				t.Errorf("Apply error = %v, want the caller's cause and not ErrTimeout", err)
			}
		})
	}
}

// TestConcurrentApply shares one Transform between goroutines (run with
// -race).
func TestConcurrentApply(t *testing.T) {
	t.Parallel()
	specs := map[string]Spec{
		"jq":  {JQ: "{plate: .plate.data.text, frame: .plate.data.frame}"},
		"lua": {Lua: "function transform(x) return {plate = x.plate.data.text, frame = x.plate.data.frame} end"},
	}
	input := []byte(readTestdata(t, "sensor_input.json"))
	for name, spec := range specs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tr, err := Compile(spec, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for range 8 {
				wg.Go(func() {
					for range 20 {
						out, err := tr.Apply(context.Background(), input)
						if err != nil {
							errs <- err
							return
						}
						if len(out) != 1 || !jsonEqual(string(out[0]), `{"plate":"A-123-BC","frame":9007199254740993}`) {
							errs <- errors.New("unexpected output " + string(out[0]))
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
