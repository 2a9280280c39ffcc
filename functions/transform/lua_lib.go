package transform

import (
	"math"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// installBudgeted replaces the library functions whose allocation depends on
// data with versions that charge the memory budget first, and builds the
// helpers the rewritten script calls.
func (r *luaRun) installBudgeted() {
	L := r.L
	r.helpers = map[string]lua.LValue{
		hiddenConcat:   L.NewFunction(r.concat),
		hiddenSetIndex: L.NewFunction(r.setIndex),
		hiddenCheckKey: L.NewFunction(r.checkKey),
		hiddenCharge:   L.NewFunction(r.chargeValues),
	}

	L.SetGlobal("print", L.NewFunction(func(*lua.LState) int { return 0 }))
	base := L.G.Global
	wrap(L, base, "rawset", func(L *lua.LState, orig lua.LGFunction) int {
		r.chargeGap(L.CheckTable(1), L.Get(2))
		return orig(L)
	})
	wrap(L, base, "tonumber", func(L *lua.LState, orig lua.LGFunction) int {
		if ud, ok := L.Get(1).(*lua.LUserData); ok && L.GetTop() == 1 {
			if n, ok := r.number(ud); ok {
				L.Push(lua.LNumber(n))
				return 1
			}
		}
		return orig(L)
	})

	str := L.GetGlobal(lua.StringLibName).(*lua.LTable)
	str.RawSetString("dump", lua.LNil)
	wrap(L, str, "rep", func(L *lua.LState, orig lua.LGFunction) int {
		r.chargeProduct(len(L.CheckString(1)), L.CheckInt(2))
		return orig(L)
	})
	for _, name := range []string{"upper", "lower", "reverse"} {
		wrap(L, str, name, func(L *lua.LState, orig lua.LGFunction) int {
			r.charge(len(L.CheckString(1)))
			return orig(L)
		})
	}
	wrap(L, str, "char", func(L *lua.LState, orig lua.LGFunction) int {
		r.charge(L.GetTop())
		return orig(L)
	})
	wrap(L, str, "format", r.format)
	wrap(L, str, "gsub", r.gsub)

	tab := L.GetGlobal(lua.TabLibName).(*lua.LTable)
	wrap(L, tab, "concat", r.tableConcat)
	wrap(L, tab, "insert", func(L *lua.LState, orig lua.LGFunction) int {
		if L.GetTop() >= 3 {
			r.chargeGap(L.CheckTable(1), L.Get(2))
		}
		return orig(L)
	})
}

// wrap replaces the Go function tb[name] with f, which may call the
// original.
func wrap(L *lua.LState, tb *lua.LTable, name string, f func(*lua.LState, lua.LGFunction) int) {
	orig := tb.RawGetString(name).(*lua.LFunction).GFunction
	tb.RawSetString(name, L.NewFunction(func(L *lua.LState) int { return f(L, orig) }))
}

// concat implements `..` over its arguments as the interpreter does, right
// to left: runs of strings and numbers are joined at once, anything else goes
// through a __concat metamethod. json.number values join as their text.
func (r *luaRun) concat(L *lua.LState) int {
	n := L.GetTop()
	rhs := L.Get(n)
	for i := n - 1; i >= 1; {
		lhs := L.Get(i)
		_, ok1 := r.concatText(lhs)
		_, ok2 := r.concatText(rhs)
		if !ok1 || !ok2 {
			rhs = r.concatMeta(lhs, rhs)
			i--
			continue
		}

		first := i
		for first > 1 {
			if _, ok := r.concatText(L.Get(first - 1)); !ok {
				break
			}
			first--
		}
		parts := make([]string, 0, i-first+2)
		size := 0
		for j := first; j <= i; j++ {
			s, _ := r.concatText(L.Get(j))
			parts = append(parts, s)
			size += len(s)
		}
		s, _ := r.concatText(rhs)
		parts = append(parts, s)
		r.charge(size + len(s))
		rhs = lua.LString(strings.Join(parts, ""))
		i = first - 1
	}
	L.Push(rhs)
	return 1
}

func (r *luaRun) concatText(v lua.LValue) (string, bool) {
	switch v := v.(type) {
	case lua.LString:
		return string(v), true
	case lua.LNumber:
		return v.String(), true
	case *lua.LUserData:
		if n, ok := v.Value.(jsonNumber); ok {
			return string(n), true
		}
	}
	return "", false
}

func (r *luaRun) concatMeta(lhs, rhs lua.LValue) lua.LValue {
	L := r.L
	mm := L.GetMetaField(lhs, "__concat")
	if mm == lua.LNil {
		mm = L.GetMetaField(rhs, "__concat")
	}
	if mm.Type() != lua.LTFunction {
		bad := lhs
		if _, ok := r.concatText(lhs); ok {
			bad = rhs
		}
		L.RaiseError("attempt to concatenate a %s value", bad.Type())
	}
	L.Push(mm)
	L.Push(lhs)
	L.Push(rhs)
	L.Call(2, 1)
	v := L.Get(-1)
	L.Pop(1)
	return v
}

// setIndex implements `t[k] = v` for keys that are not constant strings.
func (r *luaRun) setIndex(L *lua.LState) int {
	obj, key, val := L.Get(1), L.Get(2), L.Get(3)
	if tb, ok := obj.(*lua.LTable); ok {
		r.chargeGap(tb, key)
	}
	L.SetTable(obj, key, val)
	return 0
}

// checkKey charges the key of a `{[k] = v}` field as if the new table were
// empty and returns it.
func (r *luaRun) checkKey(L *lua.LState) int {
	r.chargeGap(nil, L.Get(1))
	return 1
}

// chargeValues charges a value list that a table constructor is about to
// copy and returns it unchanged.
func (r *luaRun) chargeValues(L *lua.LState) int {
	n := L.GetTop()
	r.chargeProduct(n, luaSlotBytes)
	return n
}

// format charges string.format before it runs. Like C Lua, it refuses a
// width or precision of more than two digits, so that the result is bounded
// by the format and the arguments.
func (r *luaRun) format(L *lua.LState, orig lua.LGFunction) int {
	f := L.CheckString(1)
	size := len(f)
	arg := 2
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			continue
		}
		i++
		if i < len(f) && f[i] == '%' {
			continue
		}
		for i < len(f) && strings.IndexByte("-+ #0", f[i]) >= 0 {
			i++
		}
		for _, part := range []string{"width", "precision"} {
			digits := 0
			for i < len(f) && f[i] >= '0' && f[i] <= '9' {
				i++
				digits++
			}
			if digits > 2 {
				L.RaiseError("invalid format (%s too long)", part)
			}
			if part == "width" && i < len(f) && f[i] == '.' {
				i++
			} else {
				break
			}
		}
		size += 99 + 2
		if s, ok := L.Get(arg).(lua.LString); ok {
			size += 2 * len(s) // %q may escape
		} else {
			size += 64
		}
		arg++
	}
	r.charge(size)
	return orig(L)
}

// gsub charges string.gsub before it runs. With a string replacement the
// result is bounded in advance: each match adds at most the replacement's
// length, and since matches do not overlap, each %0-%9 in it adds at most
// the subject's length over all matches. A table or function replacement is
// wrapped so that each value it supplies is charged as it comes.
func (r *luaRun) gsub(L *lua.LState, orig lua.LGFunction) int {
	s := L.CheckString(1)
	L.CheckString(2)
	maxMatches := len(s) + 1
	if L.GetTop() >= 4 {
		maxMatches = max(0, min(maxMatches, L.CheckInt(4)))
	}

	switch repl := L.Get(3).(type) {
	case lua.LString, lua.LNumber:
		text := lua.LVAsString(repl)
		refs := strings.Count(text, "%")
		r.charge(len(s))
		r.chargeProduct(maxMatches, len(text))
		r.chargeProduct(refs, len(s))
	case *lua.LTable:
		r.charge(len(s))
		L.Replace(3, L.NewFunction(func(L *lua.LState) int {
			v := L.GetTable(repl, L.Get(1))
			r.chargeReplacement(v)
			L.Push(v)
			return 1
		}))
	case *lua.LFunction:
		r.charge(len(s))
		L.Replace(3, L.NewFunction(func(L *lua.LState) int {
			nargs := L.GetTop()
			L.Push(repl)
			for i := 1; i <= nargs; i++ {
				L.Push(L.Get(i))
			}
			L.Call(nargs, 1)
			v := L.Get(-1)
			r.chargeReplacement(v)
			return 1
		}))
	}
	return orig(L)
}

func (r *luaRun) chargeReplacement(v lua.LValue) {
	switch v := v.(type) {
	case lua.LString:
		r.charge(len(v))
	case lua.LNumber:
		r.charge(len(v.String()))
	}
}

// tableConcat charges table.concat by adding up the lengths it will join;
// it stops at the first value that is not a string or number, where the
// original raises its error.
func (r *luaRun) tableConcat(L *lua.LState, orig lua.LGFunction) int {
	tb := L.CheckTable(1)
	sep := L.OptString(2, "")
	i, j := L.OptInt(3, 1), L.OptInt(4, tb.Len())
	size := 0
	for k := i; k <= j && size <= r.budget.memory; k++ {
		v := tb.RawGetInt(k)
		if v.Type() != lua.LTString && v.Type() != lua.LTNumber {
			break // the original reports the bad value
		}
		size += len(lua.LVAsString(v)) + len(sep)
		if k == math.MaxInt {
			break
		}
	}
	r.charge(size)
	return orig(L)
}

// jsonNumber is the exact text of a JSON number that a float64 cannot hold;
// it is the Value of a json.number userdata.
type jsonNumber string

// installJSON defines the json table: json.null, json.array(t) and
// json.object(t), and the metatable of json.number values.
func (r *luaRun) installJSON() {
	L := r.L
	nullMT := L.CreateTable(0, 2)
	nullMT.RawSetString("__tostring", L.NewFunction(func(L *lua.LState) int {
		L.Push(lua.LString("null"))
		return 1
	}))
	nullMT.RawSetString("__metatable", lua.LString("json.null"))
	r.null = L.NewUserData()
	r.null.Metatable = nullMT

	r.numberMT = L.CreateTable(0, 12)
	r.numberMT.RawSetString("__metatable", lua.LString("json.number"))
	r.numberMT.RawSetString("__tostring", L.NewFunction(func(L *lua.LState) int {
		s, _ := r.concatText(L.Get(1))
		L.Push(lua.LString(s))
		return 1
	}))
	r.numberMT.RawSetString("__eq", L.NewFunction(func(L *lua.LState) int {
		a, ok1 := L.Get(1).(*lua.LUserData)
		b, ok2 := L.Get(2).(*lua.LUserData)
		eq := false
		if ok1 && ok2 {
			x, ok1 := a.Value.(jsonNumber)
			y, ok2 := b.Value.(jsonNumber)
			eq = ok1 && ok2 && sameDecimal(string(x), string(y))
		}
		L.Push(lua.LBool(eq))
		return 1
	}))
	arith := map[string]func(a, b float64) float64{
		"__add": func(a, b float64) float64 { return a + b },
		"__sub": func(a, b float64) float64 { return a - b },
		"__mul": func(a, b float64) float64 { return a * b },
		"__div": func(a, b float64) float64 { return a / b },
		"__mod": func(a, b float64) float64 { return a - math.Floor(a/b)*b },
		"__pow": math.Pow,
		"__unm": func(a, _ float64) float64 { return -a },
	}
	for event, op := range arith {
		r.numberMT.RawSetString(event, L.NewFunction(func(L *lua.LState) int {
			a, ok1 := r.number(L.Get(1))
			b, ok2 := r.number(L.Get(2))
			if event == "__unm" {
				b, ok2 = 0, true
			}
			if !ok1 || !ok2 {
				L.RaiseError("attempt to perform arithmetic on a non-number value")
			}
			L.Push(lua.LNumber(op(a, b)))
			return 1
		}))
	}

	json := L.CreateTable(0, 3)
	json.RawSetString("null", r.null)
	json.RawSetString("array", L.NewFunction(r.mark(true)))
	json.RawSetString("object", L.NewFunction(r.mark(false)))
	L.SetGlobal("json", json)
}

// number returns v as a float64 when it is a number or a json.number,
// rounding the latter to the nearest float64 (or to ±Inf).
func (r *luaRun) number(v lua.LValue) (float64, bool) {
	switch v := v.(type) {
	case lua.LNumber:
		return float64(v), true
	case *lua.LUserData:
		if n, ok := v.Value.(jsonNumber); ok {
			f, _ := strconv.ParseFloat(string(n), 64)
			return f, true
		}
	}
	return 0, false
}

// newNumber returns a json.number holding text s.
func (r *luaRun) newNumber(s string) *lua.LUserData {
	ud := r.L.NewUserData()
	ud.Value = jsonNumber(s)
	ud.Metatable = r.numberMT
	return ud
}

// mark returns json.array (isArray) or json.object: it marks its table
// argument, or a new table, and returns it.
func (r *luaRun) mark(isArray bool) lua.LGFunction {
	return func(L *lua.LState) int {
		tb := L.OptTable(1, nil)
		if tb == nil {
			tb = L.CreateTable(0, 0)
		}
		r.shapes[tb] = isArray
		L.Push(tb)
		return 1
	}
}
