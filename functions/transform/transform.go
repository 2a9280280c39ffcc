// Package transform turns the input of a Sensor trigger into the data of the
// events it sends, with a jq program (github.com/itchyny/gojq) or a sandboxed
// Lua script (github.com/yuin/gopher-lua).
//
// A program is compiled once, when the configuration is loaded, and then
// applied to each firing. Input and output are JSON bytes so that numbers stay
// exact: a jq program sees integers as exact integers of any size, and a Lua
// script sees large or long numbers as exact values (see the Lua mapping
// below). Every Apply runs under a time limit and an output size limit; Lua
// scripts also run under an instruction budget and an allocation budget.
//
// # jq
//
// The program is applied to the input value. Each value it yields becomes one
// outgoing event; a program that yields nothing sends nothing. `input`,
// `inputs` and modules are not available and `$ENV` is empty. `halt` ends the
// program with the values produced so far; `halt_error` and `error` fail it.
//
// # Lua
//
// The script defines a global function transform(input) that returns the
// value to send; returning nil (or nothing) sends nothing. Only the first
// return value is used. The script's top level runs again before each call, in
// a fresh interpreter, so no state survives between calls.
//
// JSON values map to Lua values as follows:
//
//   - objects and arrays become tables; the tables decoded from JSON remember
//     which they were, so `{}` stays an object and `[]` stays an array.
//   - null becomes json.null, a unique value that is present in its table;
//     test for it with `v == json.null`. Assigning nil removes a key, and
//     json.null is how a script writes null.
//   - strings and booleans become Lua strings and booleans.
//   - a number becomes a Lua number when a float64 holds its exact value
//     (every integer up to 2^53, and every decimal that is the shortest form
//     of a float64, such as 0.1). Other numbers (9007199254740993,
//     3.14159265358979323846, 1e400) become a json.number value that keeps
//     the exact text: it is written back unchanged, tostring returns its
//     text, `..` concatenates its text, `==` compares exact values between
//     two of them, and tonumber or arithmetic turn it into a Lua number,
//     which may round (order comparisons need tonumber first). type()
//     says "userdata".
//
// When a table is written back as JSON: a table decoded from an array, or
// marked with json.array(t), is an array (its keys must be positive integers;
// missing elements are written as null); a table decoded from an object, or
// marked with json.object(t), is an object (number keys are written as their
// decimal text); any other table is an array when its keys are exactly 1..n
// (n >= 1) and an object otherwise, so an empty table the script made is
// `{}`. A table that contains itself, a function or a NaN fails the call.
//
// The sandbox offers the base functions without load, loadstring, dofile,
// loadfile, require, module, collectgarbage, getfenv, setfenv and newproxy
// (print discards its arguments), plus the string, table and math libraries
// and the json table. os, io, package, debug and coroutine do not exist.
package transform

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Kind names the language of a transform.
type Kind string

// Kinds of transform.
const (
	// KindJQ is a jq program run by gojq.
	KindJQ Kind = "jq"
	// KindLua is a Lua 5.1 script run by gopher-lua.
	KindLua Kind = "lua"
)

// Spec is a transform as configured. Exactly one field is set.
type Spec struct {
	// JQ is a jq program applied to the input value.
	JQ string `json:"jq,omitempty" yaml:"jq,omitempty"`
	// Lua is a Lua script that defines function transform(input).
	Lua string `json:"lua,omitempty" yaml:"lua,omitempty"`
}

// Kind returns the language of s, or an error naming the fields when not
// exactly one of them is set.
func (s Spec) Kind() (Kind, error) {
	switch {
	case s.JQ != "" && s.Lua != "":
		return "", errors.New("transform: set only one of jq and lua")
	case s.JQ != "":
		return KindJQ, nil
	case s.Lua != "":
		return KindLua, nil
	}
	return "", errors.New("transform: one of jq and lua is required")
}

// Defaults for the zero fields of Limits.
const (
	DefaultTimeout            = time.Second
	DefaultMaxOutputBytes     = 1 << 20
	DefaultMaxOutputs         = 1000
	DefaultLuaMaxInstructions = 1_000_000
	DefaultLuaMaxMemoryBytes  = 64 << 20
)

// Limits bounds one Apply. A zero field takes its default; a negative field
// is an error.
type Limits struct {
	// Timeout is the wall-clock limit of one Apply (default 1s). It is
	// checked between operations of the program: a single builtin call (a
	// pattern match, a big-number multiplication) runs to its end.
	Timeout time.Duration
	// MaxOutputBytes bounds the total size of the JSON values one Apply
	// returns (default 1 MiB).
	MaxOutputBytes int
	// MaxOutputs bounds the number of values a jq program may yield in one
	// Apply (default 1000); a Lua script yields at most one.
	MaxOutputs int
	// LuaMaxInstructions bounds the Lua virtual-machine instructions one
	// Apply executes, the script's top level included (default 1,000,000:
	// 15 to 150 ms of work). It is also what bounds the small allocations
	// that are not charged to LuaMaxMemoryBytes (a new table or closure, a
	// new key in a table): at most about 140 bytes per instruction in the
	// worst loops measured, so about 140 MB at the default.
	LuaMaxInstructions int
	// LuaMaxMemoryBytes bounds the bytes one Apply may allocate through
	// operations whose size depends on data: building strings (`..`,
	// string.rep, string.format, string.gsub, table.concat and the other
	// string functions that copy), copying value lists into tables
	// (`{...}`, `{f()}`) and growing a table's array part past its end
	// (`t[1000000] = x`), each table slot counted as 32 bytes. The count is
	// cumulative: memory the script drops is not given back. Default 64 MiB.
	LuaMaxMemoryBytes int
}

// withDefaults validates l and fills in its zero fields.
func (l Limits) withDefaults() (Limits, error) {
	fields := []struct {
		name string
		val  int64
	}{
		{"timeout", int64(l.Timeout)},
		{"maxOutputBytes", int64(l.MaxOutputBytes)},
		{"maxOutputs", int64(l.MaxOutputs)},
		{"luaMaxInstructions", int64(l.LuaMaxInstructions)},
		{"luaMaxMemoryBytes", int64(l.LuaMaxMemoryBytes)},
	}
	for _, f := range fields {
		if f.val < 0 {
			return l, fmt.Errorf("transform: limits.%s must not be negative", f.name)
		}
	}

	if l.Timeout == 0 {
		l.Timeout = DefaultTimeout
	}
	if l.MaxOutputBytes == 0 {
		l.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if l.MaxOutputs == 0 {
		l.MaxOutputs = DefaultMaxOutputs
	}
	if l.LuaMaxInstructions == 0 {
		l.LuaMaxInstructions = DefaultLuaMaxInstructions
	}
	if l.LuaMaxMemoryBytes == 0 {
		l.LuaMaxMemoryBytes = DefaultLuaMaxMemoryBytes
	}
	return l, nil
}

// Errors of Apply that a caller decides on with errors.Is. Each is returned
// wrapped, with text that says what ran out.
var (
	// ErrTimeout: the program ran past Limits.Timeout.
	ErrTimeout = errors.New("transform: time limit exceeded")
	// ErrBudget: a Lua script used up its instruction or memory budget.
	// Overflowing the call stack or the value stack is a *RuntimeError:
	// the same input overflows them again.
	ErrBudget = errors.New("transform: resource budget exceeded")
	// ErrOutputTooLarge: the output exceeded Limits.MaxOutputBytes, or a jq
	// program yielded more than Limits.MaxOutputs values.
	ErrOutputTooLarge = errors.New("transform: output too large")
)

// CompileError is a program that Compile refuses: a syntax error, an unknown
// function, a Lua script that defines no transform function.
type CompileError struct {
	// Kind is the language of the program.
	Kind Kind
	// Line and Column locate the error in the program, counting from 1;
	// zero when unknown. Column counts characters.
	Line, Column int
	// Msg describes the error.
	Msg string
}

// Error returns the kind, the position when known and the message, such as
// `jq: line 1, column 9: unexpected token ")"`.
func (e *CompileError) Error() string {
	switch {
	case e.Line > 0 && e.Column > 0:
		return string(e.Kind) + ": line " + strconv.Itoa(e.Line) + ", column " + strconv.Itoa(e.Column) + ": " + e.Msg
	case e.Line > 0:
		return string(e.Kind) + ": line " + strconv.Itoa(e.Line) + ": " + e.Msg
	}
	return string(e.Kind) + ": " + e.Msg
}

// RuntimeError is a program that failed on an input: a jq type error or
// error(...) call, a Lua error, an output that is not JSON. Retrying with the
// same input fails the same way.
type RuntimeError struct {
	// Kind is the language of the program.
	Kind Kind
	// Msg is the program's error message; for Lua it starts with
	// "script:<line>:" when the line is known.
	Msg string
}

// Error returns the kind and the message.
func (e *RuntimeError) Error() string { return string(e.Kind) + ": " + e.Msg }

// Transform is a compiled program. It is safe for concurrent use; Apply
// shares nothing between calls.
type Transform struct {
	kind   Kind
	limits Limits
	jq     *jqProgram
	lua    *luaProgram
}

// Compile compiles spec under limits. A program error is a *CompileError; a
// bad spec or negative limit is a plain error naming the field. A Lua
// script's top level runs once here, under the limits, to check that it
// defines transform.
func Compile(spec Spec, limits Limits) (*Transform, error) {
	kind, err := spec.Kind()
	if err != nil {
		return nil, err
	}
	limits, err = limits.withDefaults()
	if err != nil {
		return nil, err
	}

	t := &Transform{kind: kind, limits: limits}
	switch kind {
	case KindJQ:
		t.jq, err = compileJQ(spec.JQ)
	case KindLua:
		t.lua, err = compileLua(spec.Lua, limits)
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Kind returns the language of t.
func (t *Transform) Kind() Kind { return t.kind }

// Limits returns the limits t applies, defaults filled in.
func (t *Transform) Limits() Limits { return t.limits }

// Apply runs t on input, one JSON value (for a Sensor, the object keyed by
// dependency name), and returns the JSON values to send, one per outgoing
// event, in order. An empty result with a nil error means the program chose
// to send nothing.
//
// Errors: ErrTimeout, ErrBudget and ErrOutputTooLarge (wrapped) for limits,
// *RuntimeError for a failing program, and a plain error for input that is
// not JSON. When ctx ends first, the error wraps context.Cause(ctx), so a
// caller can tell its own shutdown from the program's timeout. Apply returns
// no values with an error: outputs are all or nothing.
func (t *Transform) Apply(ctx context.Context, input []byte) ([][]byte, error) {
	runCtx, cancel := context.WithTimeoutCause(ctx, t.limits.Timeout, ErrTimeout)
	defer cancel()

	if t.kind == KindJQ {
		return t.jq.apply(runCtx, input, t.limits)
	}
	return t.lua.apply(runCtx, input, t.limits)
}

// stopError returns why runCtx ended: ErrTimeout for the transform's own
// limit, or the cause the caller's context gave.
func stopError(runCtx context.Context, timeout time.Duration) error {
	cause := context.Cause(runCtx)
	if errors.Is(cause, ErrTimeout) {
		return fmt.Errorf("%w: %s", ErrTimeout, timeout)
	}
	return fmt.Errorf("transform: stopped: %w", cause)
}
