package transform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestLuaBR16 is field case BR-16: a Lua round trip must keep [] an array,
// {} an object and null present.
func TestLuaBR16(t *testing.T) {
	t.Parallel()
	event := `{"specversion":"1.0","id":"e-1","source":"/s","type":"t",` +
		`"data":{"name":"x","info":{},"list":[],"tags":["a"],"note":null,"nested":{"arr":[[]]}}}`
	wantData := `{"name":"x","info":{},"list":[],"tags":["a"],"note":null,"nested":{"arr":[[]]},"age":111}`

	got, err := apply(t, Spec{Lua: "function transform(ev) ev.data.age = 111; return ev end"}, Limits{}, event)
	if err != nil || len(got) != 1 {
		t.Fatalf("Apply = %q, %v", got, err)
	}
	var ev struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(got[0]), &ev); err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(string(ev.Data), wantData) {
		t.Errorf("data = %s, want %s", ev.Data, wantData)
	}
	// Key order is kept too, with the new key last.
	if string(ev.Data) != wantData {
		t.Errorf("data = %s, want exactly %s", ev.Data, wantData)
	}

	got, err = apply(t, Spec{Lua: "function transform(ev) return ev end"}, Limits{}, event)
	if err != nil || len(got) != 1 || !jsonEqual(got[0], event) {
		t.Errorf("identity = %q, %v; want %s", got, err, event)
	}
}

// TestLuaIdentity sends a document with every JSON shape through `return
// input` and expects it back byte for byte (compacted).
func TestLuaIdentity(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"varied.json", "sensor_input.json"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			doc := readTestdata(t, name)
			got, err := apply(t, Spec{Lua: "function transform(x) return x end"}, Limits{}, doc)
			if err != nil || len(got) != 1 {
				t.Fatalf("Apply = %q, %v", got, err)
			}
			if !jsonEqual(got[0], doc) {
				t.Errorf("identity is not JSON-equal:\n got %s\nwant %s", got[0], doc)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, []byte(doc)); err != nil {
				t.Fatal(err)
			}
			if name == "varied.json" && got[0] != compact.String() {
				t.Errorf("identity changed the text:\n got %s\nwant %s", got[0], compact.String())
			}
		})
	}
}

func TestLuaMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script string // body of transform(x)
		input  string
		want   string // "" for no output
	}{
		{name: "field", script: "return x.speed.data.kmh", input: readTestdata(t, "sensor_input.json"), want: "87.5"},
		{name: "two dependencies", script: "return {plate = x.plate.data.text, kmh = x.speed.data.kmh}",
			input: readTestdata(t, "sensor_input.json"), want: `{"plate":"A-123-BC","kmh":87.5}`},
		{name: "nil sends nothing", script: "return nil", input: `{}`, want: ""},
		{name: "no return sends nothing", script: "local y = 1", input: `{}`, want: ""},
		{name: "null value", script: "return json.null", input: `{}`, want: "null"},
		{name: "null is present and comparable", script: "return {x.a == json.null, x.b == nil, tostring(x.a)}",
			input: `{"a":null}`, want: `[true,true,"null"]`},
		{name: "sequence is an array", script: "return {1, 'two', json.null, false}", input: `{}`,
			want: `[1,"two",null,false]`},
		{name: "new empty table is an object", script: "return {}", input: `{}`, want: `{}`},
		{name: "json.array", script: "return {a = json.array(), b = json.array({1, 2})}", input: `{}`,
			want: `{"a":[],"b":[1,2]}`},
		{name: "json.object", script: "return json.object({1, 2})", input: `{}`, want: `{"1":1,"2":2}`},
		{name: "holes make an object", script: "return {[1] = 'a', [3] = 'c'}", input: `{}`, want: `{"1":"a","3":"c"}`},
		{name: "decoded array keeps holes as null", script: "x[2] = nil; return x", input: `[1,2,3]`, want: `[1,null,3]`},
		{name: "decoded array emptied stays an array", script: "x[1] = nil; return x", input: `[1]`, want: `[]`},
		{name: "decoded object emptied stays an object", script: "x.a = nil; return x", input: `{"a":1}`, want: `{}`},
		{name: "append to decoded array", script: "x[#x + 1] = 'c'; table.insert(x, 'd'); return x", input: `["a","b"]`,
			want: `["a","b","c","d"]`},
		{name: "integers stay integers", script: "return {x.n * 2, x.n / 4, 2^53}", input: `{"n":6}`,
			want: `[12,1.5,9007199254740992]`},
		{name: "string escapes", script: "return 'a\"b\\\\c\\n\\1'", input: `{}`, want: `"a\"b\\c\n\u0001"`},
		{name: "concat", script: "return x.a .. '-' .. 1 .. '-' .. 2.5", input: `{"a":"p"}`, want: `"p-1-2.5"`},
		{name: "concat metamethod", script: "local t = setmetatable({}, {__concat = function(a, b) return 'meta' end})" +
			" return t .. 'x'", input: `{}`, want: `"meta"`},
		{name: "multiple assignment", script: "local t, u = {}, {} t[1], u.k, t[2] = 'a', 'b', 'c' return {t, u}",
			input: `{}`, want: `[["a","c"],{"k":"b"}]`},
		{name: "multiple assignment from call", script: "local t = {} local function two() return 1, 2 end" +
			" t[1], t[2] = two() return t", input: `{}`, want: `[1,2]`},
		{name: "index assignment through __newindex", script: "local log = {} local t = setmetatable({}, " +
			"{__newindex = function(_, k, v) log[#log + 1] = k end}) t[5] = 1 return log", input: `{}`, want: `[5]`},
		{name: "constructor keys", script: "local k = 2 return {[k] = 'b', [1] = 'a'}", input: `{}`, want: `["a","b"]`},
		{name: "varargs in constructor", script: "local function f(...) return {...} end return f(1, 2, 3)",
			input: `{}`, want: `[1,2,3]`},
		{name: "call results in constructor", script: "return {string.byte('abc', 1, -1)}", input: `{}`, want: `[97,98,99]`},
		{name: "string functions", script: "return {('ab'):rep(3), string.format('%5.2f|%q', 3.14159, 'a\"'), " +
			"(string.gsub('hello', 'l', 'L')), (string.gsub('abc', '%w', {a = '1'})), " +
			"(string.gsub('abc', '%w', function(c) return c:upper() end)), table.concat({1, 'b', 3}, ','), " +
			"string.char(104, 105), ('Ab'):upper(), ('Ab'):lower(), ('ab'):reverse()}", input: `{}`,
			want: `["ababab"," 3.14|\"a\\\"\"","heLLo","1bc","ABC","1,b,3","hi","AB","ab","ba"]`},
		{name: "print is silent", script: "print('secret') return 1", input: `{}`, want: `1`},
		{name: "swap evaluates values first", script: "x[1], x[2] = x[2], x[1] return x", input: `[1,2]`, want: `[2,1]`},
		{name: "concat in closures and methods", script: "local p = 'a' local function f(s) return p .. s end " +
			"return (f('b') .. 'c'):upper() .. #('x' .. 'yz')", input: `{}`, want: `"ABC3"`},
		{name: "concat of a call keeps one value", script: "local function two() return 'a', 'b' end " +
			"return {'<' .. two(), two() .. '>'}", input: `{}`, want: `["<a","a>"]`},
		{name: "index assignment with call key and value", script: "local t = {} local function two() return 1, 2 end " +
			"t[two()] = two() return t", input: `{}`, want: `[1]`},
		{name: "negative and zero rep", script: "return {('x'):rep(-1), ('x'):rep(0)}", input: `{}`, want: `["",""]`},
		{name: "goto and nested functions", script: "local n = 0 ::top:: n = n + 1 if n < 3 then goto top end " +
			"local t = {} t[n] = function() end t[n] = n .. '' return t", input: `{}`, want: `{"3":"3"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := apply(t, Spec{Lua: "function transform(x)\n" + tt.script + "\nend"}, Limits{}, tt.input)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if tt.want == "" {
				if len(got) != 0 {
					t.Errorf("Apply = %q, want nothing", got)
				}
				return
			}
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("Apply = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLuaBigNumbers checks the numbers a float64 cannot hold exactly.
func TestLuaBigNumbers(t *testing.T) {
	t.Parallel()
	input := `{"id":9007199254740993,"same":9007199254740993.0,"other":9007199254740995,"small":9007199254740992,` +
		`"pi":3.14159265358979323846,"inf":1e400}`
	script := `function transform(x)
  return {
    id = x.id,
    kind = type(x.id),
    small = type(x.small),
    text = tostring(x.id),
    joined = "id-" .. x.id,
    eq = x.id == x.same,
    ne = x.id == x.other,
    float = tonumber(x.id),
    sum = x.id + 0,
    pi = x.pi,
    inf = x.inf,
  }
end`
	got, err := apply(t, Spec{Lua: script}, Limits{}, input)
	if err != nil || len(got) != 1 {
		t.Fatalf("Apply = %q, %v", got, err)
	}
	want := `{"id":9007199254740993,"kind":"userdata","small":"number","text":"9007199254740993",` +
		`"joined":"id-9007199254740993","eq":true,"ne":false,"float":9007199254740992,"sum":9007199254740992,` +
		`"pi":3.14159265358979323846,"inf":1e400}`
	if got[0] != want {
		t.Errorf("Apply =\n%s\nwant\n%s", got[0], want)
	}
}

func TestLuaSandbox(t *testing.T) {
	t.Parallel()
	absent := []string{"os", "io", "package", "debug", "coroutine", "require", "module", "load", "loadstring",
		"dofile", "loadfile", "collectgarbage", "getfenv", "setfenv", "newproxy", "_printregs", "channel",
		"string.dump"}
	var b strings.Builder
	b.WriteString("function transform(x)\n  return {\n")
	for _, name := range absent {
		b.WriteString("    type(" + name + "),\n")
	}
	b.WriteString("  }\nend")
	got, err := apply(t, Spec{Lua: b.String()}, Limits{}, `{}`)
	if err != nil || len(got) != 1 {
		t.Fatalf("Apply = %q, %v", got, err)
	}
	want := "[" + strings.TrimSuffix(strings.Repeat(`"nil",`, len(absent)), ",") + "]"
	if got[0] != want {
		t.Errorf("types of %v = %s, want all nil", absent, got[0])
	}

	calls := []string{`os.execute("true")`, `io.open("/etc/passwd")`, `require("os")`, `load("return 1")`,
		`loadstring("return 1")`, `dofile("/etc/passwd")`}
	for _, call := range calls {
		t.Run(call, func(t *testing.T) {
			t.Parallel()
			_, err := apply(t, Spec{Lua: "function transform(x)\n  return " + call + "\nend"}, Limits{}, `{}`)
			var re *RuntimeError
			if !errors.As(err, &re) || !strings.Contains(re.Msg, "script:2:") {
				t.Errorf("Apply error = %v, want a *RuntimeError at script:2", err)
			}
		})
	}
}

func TestLuaRuntimeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		script    string // body of transform(x), from line 2
		wantInErr string
	}{
		{name: "error call", script: `error("no plate")`, wantInErr: "script:2: no plate"},
		{name: "index nil", script: "local a = x.missing\nreturn a.b", wantInErr: "script:3:"},
		{name: "bad concat", script: `return "a" .. {}`, wantInErr: "script:2: attempt to concatenate a table value"},
		{name: "function result", script: `return {f = print}`, wantInErr: "cannot encode a function"},
		{name: "cycle", script: `local t = {} t.self = t return t`, wantInErr: "contains itself"},
		{name: "nan", script: `return 0/0`, wantInErr: "NaN"},
		{name: "string key in array", script: `local a = json.array({1}) a.k = 1 return a`, wantInErr: "key k"},
		{name: "boolean key", script: `return {[true] = 1}`, wantInErr: "boolean key"},
		{name: "deep recursion", script: `local function f() return 1 + f() end return f()`, wantInErr: "stack overflow"},
		{name: "long format width", script: `return string.format("%100d", 1)`, wantInErr: "width too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := apply(t, Spec{Lua: "function transform(x)\n" + tt.script + "\nend"}, Limits{}, `{"a":1}`)
			var re *RuntimeError
			if !errors.As(err, &re) || got != nil {
				t.Fatalf("Apply = %q, %v; want a *RuntimeError", got, err)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantInErr)
			}
		})
	}
}

func TestLuaOutputTooLarge(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"string": `return string.rep("x", 5000)`,
		"array":  `local t = {} for i = 1, 5000 do t[i] = i end return t`,
		"sparse": `local t = json.array() t[2000000000] = 1 return t`,
	}
	for name, script := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := apply(t, Spec{Lua: "function transform(x) " + script + " end"}, Limits{MaxOutputBytes: 4096}, `{}`)
			if !errors.Is(err, ErrOutputTooLarge) {
				t.Errorf("Apply error = %v, want ErrOutputTooLarge", err)
			}
		})
	}
}

// TestLuaStopped runs scripts that loop or allocate without end. Each must be
// stopped with ErrBudget or ErrTimeout, having allocated well under the
// bound the package documents. The test is not parallel: it reads the
// process's allocation counter, and parallel tests only start once the
// sequential ones are done.
func TestLuaStopped(t *testing.T) {
	// For scripts whose every step is slow (appending 100,000 nils, copying
	// a megabyte), a smaller memory budget and a long timeout make sure it
	// is the budget that stops them, quickly.
	slow := Limits{Timeout: time.Minute, LuaMaxMemoryBytes: 8 << 20}
	tests := []struct {
		name   string
		script string // body of transform(x)
		limits Limits
		want   error
	}{
		{name: "infinite loop", script: "while true do end", want: ErrBudget},
		{name: "infinite loop timeout", script: "while true do end",
			limits: Limits{Timeout: 30 * time.Millisecond, LuaMaxInstructions: 1 << 40}, want: ErrTimeout},
		{name: "loop catching errors", script: "while true do pcall(function() while true do end end) end",
			want: ErrBudget},
		{name: "tail recursion", script: "local function f() return f() end return f()", want: ErrBudget},
		{name: "string doubling", script: `local s = "x" while true do s = s .. s end`, want: ErrBudget},
		{name: "string doubling wide", script: `local s = "x" while true do s = s .. s .. s .. s .. s .. s end`,
			want: ErrBudget},
		{name: "rep into table", script: `local t = {} while true do t[#t+1] = string.rep("x", 1e6) end`,
			want: ErrBudget},
		{name: "rep huge", script: `return string.rep("x", 1e12)`, want: ErrBudget},
		{name: "rep method", script: `local s = "xy" return s:rep(1e10)`, want: ErrBudget},
		{name: "sparse index", script: `local t = {} t[60000000] = 1`, want: ErrBudget},
		{name: "sparse index in loop", script: `local keep = {} for i = 1, 1e6 do local t = {} t[1e5] = 1 keep[i] = t end`,
			limits: slow, want: ErrBudget},
		{name: "sparse constructor", script: `local keep = {} for i = 1, 1e6 do keep[i] = {[1e5] = 1} end`,
			limits: slow, want: ErrBudget},
		{name: "sparse rawset", script: `rawset({}, 60000000, 1)`, want: ErrBudget},
		{name: "sparse insert", script: `table.insert({}, 60000000, 1)`, want: ErrBudget},
		{name: "varargs copied", script: `local function f(...) local k = {} while true do k[#k+1] = {...} end end ` +
			`return f(string.byte(string.rep("x", 20000), 1, -1))`, want: ErrBudget},
		{name: "gsub expansion", script: `return string.gsub(string.rep("x", 1e5), "", string.rep("y", 1e4))`,
			want: ErrBudget},
		{name: "gsub function expansion", script: `local big = string.rep("y", 1e5) ` +
			`return string.gsub(string.rep("x", 1e5), ".", function() return big end)`, want: ErrBudget},
		{name: "table.concat", script: `local t = {} for i = 1, 20 do t[i] = string.rep("x", 1e6) end ` +
			`while true do local s = table.concat(t) end`, want: ErrBudget},
		{name: "format", script: `local s = string.rep("x", 1e6) while true do local f = string.format("%s%s", s, s) end`,
			want: ErrBudget},
		{name: "upper", script: `local s = string.rep("x", 1e6) local k = {} while true do k[#k+1] = s:upper() end`,
			limits: slow, want: ErrBudget},
		{name: "tables", script: `local keep = {} while true do keep[#keep+1] = {a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8} end`,
			want: ErrBudget},
		{name: "closures", script: `local keep = {} while true do keep[#keep+1] = function() end end`, want: ErrBudget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "function transform(x) " + tt.script + " end"
			limits := tt.limits
			if limits.Timeout == 0 {
				limits.Timeout = time.Minute // the budget, not the clock, must stop these
			}
			tr, err := Compile(Spec{Lua: src}, limits)
			if err != nil {
				t.Fatal(err)
			}

			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			out, err := tr.Apply(context.Background(), []byte(`{}`))
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)

			if !errors.Is(err, tt.want) || out != nil {
				t.Fatalf("Apply = %q, %v; want %v", out, err, tt.want)
			}
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("stopped after %v, %d MiB allocated: %v", elapsed.Round(time.Millisecond), allocated>>20, err)
			if allocated > 300<<20 {
				t.Errorf("allocated %d MiB before being stopped, want at most 300", allocated>>20)
			}
		})
	}
}
