package transform

import (
	"context"
	"errors"
	"fmt"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

// luaChunkName prefixes the line numbers in Lua error messages.
const luaChunkName = "script"

// Sizes of each interpreter. The value stack holds at most luaRegistryMax
// values (16 bytes each, so 1 MiB), which bounds unpack, select and deep
// argument lists; it grows by whole steps because each growth copies it. The
// call stack bounds recursion, through Go functions too.
const (
	luaCallStackSize    = 200
	luaRegistryInitial  = 256
	luaRegistryGrowStep = 8 * 1024
	luaRegistryMax      = 64 * 1024
)

// luaSlotBytes is what one table slot is charged when a value list is copied
// into a table or an array part is extended: an interface value is 16
// bytes, and gopher-lua appends one value at a time, so the copies left
// behind by growing the array add as much again before they are collected.
const luaSlotBytes = 32

// luaGlobals are the globals a script sees; everything else the base library
// defines is removed.
var luaGlobals = map[string]bool{
	"_G": true, "_VERSION": true, "assert": true, "error": true, "getmetatable": true,
	"ipairs": true, "next": true, "pairs": true, "pcall": true, "print": true,
	"rawequal": true, "rawget": true, "rawset": true, "select": true, "setmetatable": true,
	"tonumber": true, "tostring": true, "type": true, "unpack": true, "xpcall": true,
	"string": true, "table": true, "math": true,
}

// luaProgram is a compiled script. A *lua.FunctionProto is immutable once
// compiled and may be loaded into many interpreters at once.
type luaProgram struct {
	proto *lua.FunctionProto
}

// compileLua parses, rewrites (see lua_rewrite.go) and compiles src, then runs
// its top level once to check that it defines transform.
func compileLua(src string, limits Limits) (*luaProgram, error) {
	chunk, err := parse.Parse(strings.NewReader(src), luaChunkName)
	if err != nil {
		ce := &CompileError{Kind: KindLua, Msg: strings.TrimSpace(err.Error())}
		var pe *parse.Error
		if errors.As(err, &pe) {
			ce.Msg = pe.Message
			if pe.Token != "" {
				ce.Msg += " near '" + pe.Token + "'"
			}
			if pe.Pos.Line == parse.EOF {
				ce.Msg += " at the end of the script"
			} else {
				ce.Line, ce.Column = pe.Pos.Line, pe.Pos.Column
			}
		}
		return nil, ce
	}
	if chunk == nil && strings.TrimSpace(src) != "" {
		// parse.Parse returns neither statements nor an error when the
		// parser panics with something other than an error.
		return nil, &CompileError{Kind: KindLua, Msg: "cannot parse the script"}
	}

	proto, err := lua.Compile(rewriteChunk(chunk), luaChunkName)
	if err != nil {
		ce := &CompileError{Kind: KindLua, Msg: err.Error()}
		var le *lua.CompileError
		if errors.As(err, &le) {
			ce.Line, ce.Msg = le.Line, le.Message
		}
		return nil, ce
	}

	p := &luaProgram{proto: proto}
	ctx, cancel := context.WithTimeoutCause(context.Background(), limits.Timeout, ErrTimeout)
	defer cancel()
	r := newLuaRun(ctx, limits)
	defer r.L.Close()
	if _, err := r.load(p.proto); err != nil {
		var re *RuntimeError
		if errors.As(err, &re) {
			return nil, &CompileError{Kind: KindLua, Msg: re.Msg}
		}
		return nil, &CompileError{Kind: KindLua, Msg: "top level: " + err.Error()}
	}
	return p, nil
}

// apply runs the script on input in a fresh interpreter.
func (p *luaProgram) apply(ctx context.Context, input []byte, limits Limits) ([][]byte, error) {
	r := newLuaRun(ctx, limits)
	defer r.L.Close()

	in, err := r.decode(input)
	if err != nil {
		return nil, err
	}
	fn, err := r.load(p.proto)
	if err != nil {
		return nil, err
	}

	L := r.L
	L.Push(fn)
	L.Push(in)
	if err := L.PCall(1, 1, nil); err != nil {
		return nil, r.runError(err)
	}
	ret := L.Get(-1)
	L.Pop(1)
	if ret == lua.LNil {
		return nil, nil
	}

	w := jsonWriter{max: limits.MaxOutputBytes}
	if err := r.encode(&w, ret, 0); err != nil {
		if errors.Is(err, ErrOutputTooLarge) {
			return nil, err
		}
		return nil, &RuntimeError{Kind: KindLua, Msg: "result: " + err.Error()}
	}
	return [][]byte{w.buf}, nil
}

// luaRun is one interpreter and the bookkeeping of one Apply. It is used by
// one goroutine.
type luaRun struct {
	L      *lua.LState
	ctx    context.Context // the Apply's context, for its cause
	limits Limits
	budget *luaBudget

	null     *lua.LUserData        // json.null
	numberMT *lua.LTable           // metatable of json.number values
	shapes   map[*lua.LTable]bool  // tables known to be arrays (true) or objects
	visiting map[*lua.LTable]bool  // tables being encoded, to refuse cycles
	helpers  map[string]lua.LValue // the functions the rewrite calls
}

// newLuaRun builds a sandboxed interpreter that polls a budget wrapping ctx.
func newLuaRun(ctx context.Context, limits Limits) *luaRun {
	L := lua.NewState(lua.Options{
		SkipOpenLibs:        true,
		CallStackSize:       luaCallStackSize,
		RegistrySize:        luaRegistryInitial,
		RegistryGrowStep:    luaRegistryGrowStep,
		RegistryMaxSize:     luaRegistryMax,
		MinimizeStackMemory: true,
	})
	r := &luaRun{
		L:        L,
		ctx:      ctx,
		limits:   limits,
		budget:   newLuaBudget(ctx, limits),
		shapes:   make(map[*lua.LTable]bool),
		visiting: make(map[*lua.LTable]bool),
	}
	L.SetContext(r.budget)

	libs := []struct {
		name string
		open lua.LGFunction
	}{
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	}
	for _, lib := range libs {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}

	globals := L.G.Global
	var drop []lua.LValue
	globals.ForEach(func(k, _ lua.LValue) {
		if s, ok := k.(lua.LString); !ok || !luaGlobals[string(s)] {
			drop = append(drop, k)
		}
	})
	for _, k := range drop {
		globals.RawSet(k, lua.LNil)
	}

	r.installJSON()
	r.installBudgeted()
	return r
}

// load runs the script's top level and returns its transform function.
func (r *luaRun) load(proto *lua.FunctionProto) (*lua.LFunction, error) {
	L := r.L
	for name, fn := range r.helpers {
		L.SetGlobal(name, fn)
	}
	L.Push(L.NewFunctionFromProto(proto))
	if err := L.PCall(0, 0, nil); err != nil {
		return nil, r.runError(err)
	}
	for name := range r.helpers {
		L.SetGlobal(name, lua.LNil)
	}
	fn, ok := L.GetGlobal("transform").(*lua.LFunction)
	if !ok {
		return nil, &RuntimeError{Kind: KindLua, Msg: "the script does not define function transform"}
	}
	return fn, nil
}

// runError classifies an error from a protected call: a spent budget, the
// end of the Apply's context, or the script's own error.
func (r *luaRun) runError(err error) error {
	if r.budget.exceeded != nil {
		return r.budget.exceeded
	}
	if r.ctx.Err() != nil {
		return stopError(r.ctx, r.limits.Timeout)
	}
	msg := err.Error()
	var ae *lua.ApiError
	if errors.As(err, &ae) && ae.Object != nil {
		msg = ae.Object.String()
	}
	return &RuntimeError{Kind: KindLua, Msg: msg}
}

// luaBudget is the context gopher-lua polls before every instruction (its
// only hook into the interpreter loop): Done counts instructions, and a
// budget that runs out, here or in a helper, makes Done return a closed
// channel, so the interpreter raises Err at the next instruction. A script
// that catches that error with pcall is stopped again at its next
// instruction. Only the interpreter's goroutine calls Done.
type luaBudget struct {
	context.Context
	instructions int // left
	memory       int // bytes left
	exceeded     error
	closed       chan struct{}
}

func newLuaBudget(ctx context.Context, limits Limits) *luaBudget {
	return &luaBudget{
		Context:      ctx,
		instructions: limits.LuaMaxInstructions,
		memory:       limits.LuaMaxMemoryBytes,
	}
}

// Done implements context.Context.
func (b *luaBudget) Done() <-chan struct{} {
	b.instructions--
	if b.instructions < 0 && b.exceeded == nil {
		b.exceed("instruction budget spent")
	}
	if b.exceeded != nil {
		return b.closed
	}
	return b.Context.Done()
}

// Err implements context.Context.
func (b *luaBudget) Err() error {
	if b.exceeded != nil {
		return b.exceeded
	}
	return b.Context.Err()
}

func (b *luaBudget) exceed(what string) {
	b.exceeded = fmt.Errorf("%w: lua %s", ErrBudget, what)
	b.closed = make(chan struct{})
	close(b.closed)
}

// charge takes n bytes from the memory budget, or raises a Lua error when
// they are not there.
func (r *luaRun) charge(n int) {
	b := r.budget
	if n >= 0 && n <= b.memory && b.exceeded == nil {
		b.memory -= n
		return
	}
	if b.exceeded == nil {
		b.exceed(fmt.Sprintf("memory budget of %d bytes spent", r.limits.LuaMaxMemoryBytes))
	}
	r.L.RaiseError("%s", b.exceeded.Error())
}

// chargeProduct charges a*b bytes without overflowing; a negative factor
// (string.rep with a negative count) charges nothing.
func (r *luaRun) chargeProduct(a, b int) {
	if a <= 0 || b <= 0 {
		return
	}
	if a > r.budget.memory/b {
		r.charge(-1)
	}
	r.charge(a * b)
}

// chargeGap charges the nil slots that setting integer key k of tb appends
// to its array part.
func (r *luaRun) chargeGap(tb *lua.LTable, k lua.LValue) {
	n, ok := k.(lua.LNumber)
	if !ok || n < 2 || n >= lua.LNumber(lua.MaxArrayIndex) || n != lua.LNumber(int(n)) {
		return
	}
	length := 0
	if tb != nil {
		length = tb.Len()
	}
	if gap := int(n) - 1 - length; gap > 0 {
		r.chargeProduct(gap, luaSlotBytes)
	}
}
