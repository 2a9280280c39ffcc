package transform

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// decode reads one JSON value into Lua values, keeping the order of object
// keys (so that an identity script writes them back in the same order) and
// marking every table it makes as an array or an object.
func (r *luaRun) decode(input []byte) (lua.LValue, error) {
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.UseNumber()
	v, err := r.decodeValue(dec, 0)
	if err != nil {
		return nil, fmt.Errorf("transform: decode input: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("transform: decode input: data after the first JSON value")
	}
	return v, nil
}

func (r *luaRun) decodeValue(dec *json.Decoder, depth int) (lua.LValue, error) {
	tok, err := dec.Token()
	if err == io.EOF {
		return nil, io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, err
	}

	switch tok := tok.(type) {
	case nil:
		return r.null, nil
	case bool:
		return lua.LBool(tok), nil
	case string:
		return lua.LString(tok), nil
	case json.Number:
		if f, ok := exactFloat(string(tok)); ok {
			return lua.LNumber(f), nil
		}
		return r.newNumber(string(tok)), nil
	case json.Delim:
		if depth >= maxDepth {
			return nil, fmt.Errorf("nested deeper than %d", maxDepth)
		}
		tb := r.L.CreateTable(0, 0)
		r.shapes[tb] = tok == '['
		for dec.More() {
			key := ""
			if tok == '{' {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, _ = k.(string)
			}
			v, err := r.decodeValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			if tok == '[' {
				tb.Append(v) // never nil: null is json.null
			} else {
				tb.RawSetString(key, v)
			}
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
		return tb, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

// exactFloat returns the float64 of JSON number s and whether it is exactly
// s's value: s, written as the shortest decimal of that float64, is the same
// number. Integers of up to 15 digits always are; the rest are compared as
// decimals.
func exactFloat(s string) (float64, bool) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false // out of range
	}
	if len(s) <= 15 && !strings.ContainsAny(s, ".eE") {
		return f, true
	}
	return f, sameDecimal(s, strconv.FormatFloat(f, 'e', -1, 64))
}

// sameDecimal reports whether decimal numbers a and b (JSON numbers, or Go's
// 'e' format) have the same value. Zeroes are equal whatever their sign.
func sameDecimal(a, b string) bool {
	an, ad, ae, aok := decimal(a)
	bn, bd, be, bok := decimal(b)
	return aok && bok && an == bn && ad == bd && ae == be
}

// decimal splits a decimal number into its sign, its significant digits
// without leading or trailing zeroes, and the power of ten of the last digit.
// ok is false when the exponent is too large to compare.
func decimal(s string) (neg bool, digits string, exp int, ok bool) {
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	}
	mant, expText, hasExp := strings.Cut(strings.ToLower(s), "e")
	if hasExp {
		e, err := strconv.Atoi(expText)
		if err != nil || e > 1<<30 || e < -(1<<30) {
			return false, "", 0, false
		}
		exp = e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits = strings.TrimLeft(intPart+frac, "0")
	exp -= len(frac)
	trimmed := strings.TrimRight(digits, "0")
	exp += len(digits) - len(trimmed)
	if trimmed == "" {
		return false, "", 0, true
	}
	return neg, trimmed, exp, true
}

// encode appends v as JSON, following the rules in the package comment.
func (r *luaRun) encode(w *jsonWriter, v lua.LValue, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("nested deeper than %d", maxDepth)
	}
	switch v := v.(type) {
	case *lua.LNilType:
		return w.raw("null")
	case lua.LBool:
		if v {
			return w.raw("true")
		}
		return w.raw("false")
	case lua.LNumber:
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("cannot encode %v as JSON", v)
		}
		return w.float(f)
	case lua.LString:
		return w.str(string(v))
	case *lua.LUserData:
		if v == r.null {
			return w.raw("null")
		}
		if n, ok := v.Value.(jsonNumber); ok {
			return w.raw(string(n))
		}
	case *lua.LTable:
		if r.visiting[v] {
			return errors.New("cannot encode a table that contains itself")
		}
		r.visiting[v] = true
		defer delete(r.visiting, v)

		isArray, marked := r.shapes[v]
		if !marked {
			isArray = isSequence(v)
		}
		if isArray {
			return r.encodeArray(w, v, depth)
		}
		return r.encodeObject(w, v, depth)
	}
	return fmt.Errorf("cannot encode a %s value as JSON", v.Type())
}

// isSequence reports whether tb's keys are exactly 1..n for some n >= 1.
func isSequence(tb *lua.LTable) bool {
	n, top := 0, 0
	for k, _ := tb.Next(lua.LNil); k != lua.LNil; k, _ = tb.Next(k) {
		i, ok := arrayIndex(k)
		if !ok {
			return false
		}
		n++
		top = max(top, i)
	}
	return n > 0 && top == n
}

// arrayIndex returns k as a positive integer index.
func arrayIndex(k lua.LValue) (int, bool) {
	n, ok := k.(lua.LNumber)
	if !ok || n < 1 || n > math.MaxInt32 || n != lua.LNumber(int(n)) {
		return 0, false
	}
	return int(n), true
}

func (r *luaRun) encodeArray(w *jsonWriter, tb *lua.LTable, depth int) error {
	top := 0
	for k, _ := tb.Next(lua.LNil); k != lua.LNil; k, _ = tb.Next(k) {
		i, ok := arrayIndex(k)
		if !ok {
			return fmt.Errorf("cannot encode key %s of an array as JSON", k)
		}
		top = max(top, i)
	}

	if err := w.byte1('['); err != nil {
		return err
	}
	for i := 1; i <= top; i++ {
		if i > 1 {
			if err := w.byte1(','); err != nil {
				return err
			}
		}
		if err := r.encode(w, tb.RawGetInt(i), depth+1); err != nil {
			return err
		}
	}
	return w.byte1(']')
}

func (r *luaRun) encodeObject(w *jsonWriter, tb *lua.LTable, depth int) error {
	if err := w.byte1('{'); err != nil {
		return err
	}
	first := true
	for k, v := tb.Next(lua.LNil); k != lua.LNil; k, v = tb.Next(k) {
		var key string
		switch k := k.(type) {
		case lua.LString:
			key = string(k)
		case lua.LNumber:
			key = k.String()
		default:
			return fmt.Errorf("cannot encode a %s key as JSON", k.Type())
		}
		if !first {
			if err := w.byte1(','); err != nil {
				return err
			}
		}
		first = false
		if err := w.str(key); err != nil {
			return err
		}
		if err := w.byte1(':'); err != nil {
			return err
		}
		if err := r.encode(w, v, depth+1); err != nil {
			return err
		}
	}
	return w.byte1('}')
}
