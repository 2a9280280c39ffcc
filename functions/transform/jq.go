package transform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/itchyny/gojq"
)

// jqProgram is a compiled jq program; gojq's *Code is safe for concurrent
// runs.
type jqProgram struct {
	code *gojq.Code
}

// compileJQ parses and compiles src. gojq refuses input/inputs without an
// input iterator and modules without a module loader, so leaving both unset
// is what keeps programs to their one input; the environment loader returns
// nothing so that $ENV and env are empty.
func compileJQ(src string) (*jqProgram, error) {
	q, err := gojq.Parse(src)
	if err != nil {
		ce := &CompileError{Kind: KindJQ, Msg: err.Error()}
		var pe *gojq.ParseError
		if errors.As(err, &pe) {
			start := max(0, min(pe.Offset-len(pe.Token), len(src)))
			ce.Line, ce.Column = position(src, start)
		}
		return nil, ce
	}

	code, err := gojq.Compile(q, gojq.WithEnvironLoader(func() []string { return nil }))
	if err != nil {
		return nil, &CompileError{Kind: KindJQ, Msg: err.Error()}
	}
	return &jqProgram{code: code}, nil
}

// position returns the 1-based line and column (in characters) of byte
// offset off in src.
func position(src string, off int) (line, col int) {
	before := src[:off]
	line = strings.Count(before, "\n") + 1
	lineStart := strings.LastIndexByte(before, '\n') + 1
	return line, utf8.RuneCountInString(before[lineStart:]) + 1
}

// apply runs the program on input until it ends, fails or a limit is hit.
func (p *jqProgram) apply(ctx context.Context, input []byte, limits Limits) ([][]byte, error) {
	v, err := decodeJQInput(input)
	if err != nil {
		return nil, err
	}

	var outs [][]byte
	remaining := limits.MaxOutputBytes
	iter := p.code.RunWithContext(ctx, v)
	for {
		v, ok := iter.Next()
		if !ok {
			return outs, nil
		}
		if err, ok := v.(error); ok {
			var he *gojq.HaltError
			if errors.As(err, &he) && he.Value() == nil && ctx.Err() == nil {
				return outs, nil // halt: end with what was produced, as jq exits 0
			}
			return nil, runErrorJQ(ctx, err, limits)
		}
		if len(outs) == limits.MaxOutputs {
			return nil, fmt.Errorf("%w: more than %d values", ErrOutputTooLarge, limits.MaxOutputs)
		}

		w := jsonWriter{max: remaining}
		if err := w.jq(v, 0); err != nil {
			if errors.Is(err, ErrOutputTooLarge) {
				return nil, fmt.Errorf("%w: more than %d bytes", ErrOutputTooLarge, limits.MaxOutputBytes)
			}
			return nil, &RuntimeError{Kind: KindJQ, Msg: err.Error()}
		}
		remaining -= len(w.buf)
		outs = append(outs, w.buf)
	}
}

// runErrorJQ classifies an error value the iterator yielded.
func runErrorJQ(ctx context.Context, err error, limits Limits) error {
	if ctx.Err() != nil {
		return stopError(ctx, limits.Timeout)
	}
	return &RuntimeError{Kind: KindJQ, Msg: err.Error()}
}

// decodeJQInput decodes one JSON value into the types gojq computes with:
// integers that fit an int stay int, larger integers become *big.Int, and
// other numbers become float64, so that ids past 2^53 are not rounded.
func decodeJQInput(input []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("transform: decode input: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("transform: decode input: data after the first JSON value")
	}
	return jqNumbers(v), nil
}

// jqNumbers replaces the json.Numbers in v, in place.
func jqNumbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		return jqNumber(string(v))
	case []any:
		for i, e := range v {
			v[i] = jqNumbers(e)
		}
	case map[string]any:
		for k, e := range v {
			v[k] = jqNumbers(e)
		}
	}
	return v
}

// jqNumber converts the text of a JSON number.
func jqNumber(s string) any {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.Atoi(s); err == nil {
			return i
		}
		if b, ok := new(big.Int).SetString(s, 10); ok {
			return b
		}
	}
	// ParseFloat reports a range error with ±Inf or 0; jq itself rounds
	// such numbers the same way.
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// jq appends a value gojq produced. NaN is written as null and infinities as
// ±math.MaxFloat64, as the jq command does; object keys are sorted.
func (w *jsonWriter) jq(v any, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("output nested deeper than %d", maxDepth)
	}
	switch v := v.(type) {
	case nil:
		return w.raw("null")
	case bool:
		if v {
			return w.raw("true")
		}
		return w.raw("false")
	case int:
		return w.raw(strconv.Itoa(v))
	case float64:
		switch {
		case math.IsNaN(v):
			return w.raw("null")
		case math.IsInf(v, 1):
			v = math.MaxFloat64
		case math.IsInf(v, -1):
			v = -math.MaxFloat64
		}
		return w.float(v)
	case *big.Int:
		// BitLen/3 under-estimates the digit count; refuse before
		// formatting a number that cannot fit.
		if v.BitLen()/4 > w.max-len(w.buf) {
			return w.errTooLarge()
		}
		return w.raw(v.String())
	case json.Number:
		return w.raw(v.String())
	case string:
		return w.str(v)
	case []any:
		if err := w.byte1('['); err != nil {
			return err
		}
		for i, e := range v {
			if i > 0 {
				if err := w.byte1(','); err != nil {
					return err
				}
			}
			if err := w.jq(e, depth+1); err != nil {
				return err
			}
		}
		return w.byte1(']')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if err := w.byte1('{'); err != nil {
			return err
		}
		for i, k := range keys {
			if i > 0 {
				if err := w.byte1(','); err != nil {
					return err
				}
			}
			if err := w.str(k); err != nil {
				return err
			}
			if err := w.byte1(':'); err != nil {
				return err
			}
			if err := w.jq(v[k], depth+1); err != nil {
				return err
			}
		}
		return w.byte1('}')
	}
	return fmt.Errorf("cannot encode %T as JSON", v)
}
