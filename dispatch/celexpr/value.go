package celexpr

import (
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
)

// maxNativeDepth bounds how deeply nested a value converted by Native may be;
// CEL cannot build cycles, but a hostile payload can be deep.
const maxNativeDepth = 100

// ErrUnsupportedValue is returned when an expression yields a value that has
// no JSON form, such as a type or an optional without a value.
var ErrUnsupportedValue = errors.New("celexpr: value has no JSON form")

// Value is a compiled expression that computes a value rather than a
// decision, such as a Sensor's correlation key over `event` and `data`. It
// is immutable and safe for concurrent use.
type Value struct {
	src  string
	prog cel.Program
}

// CompileValue parses and type-checks expr in the environment filters use
// (`event` and `data`). Any result type is accepted.
func CompileValue(expr string) (*Value, error) {
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("compile CEL %q: %w", expr, iss.Err())
	}
	prog, err := env.Program(ast, cel.CostLimit(DefaultCostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("compile CEL %q: %w", expr, err)
	}
	return &Value{src: expr, prog: prog}, nil
}

// String returns the source text of the expression.
func (v *Value) String() string { return v.src }

// Eval evaluates the expression on in and returns its result as a JSON-like
// Go value (see Native). A missing field, a type error or an exceeded cost
// limit is an error.
func (v *Value) Eval(in *Input) (any, error) {
	out, _, err := v.prog.Eval(in)
	if err != nil {
		return nil, fmt.Errorf("evaluate CEL %q: %w", v.src, err)
	}
	n, err := Native(out)
	if err != nil {
		return nil, fmt.Errorf("evaluate CEL %q: %w", v.src, err)
	}
	return n, nil
}

// VarsExpr is a compiled expression over named variables of any type, such
// as a Sensor trigger parameter over the events of its dependencies (each a
// variable named after its dependency). It is immutable and safe for
// concurrent use.
type VarsExpr struct {
	src  string
	vars []string
	prog cel.Program
}

// CompileVars compiles expr with one dynamically typed variable per name in
// vars. Any result type is accepted.
func CompileVars(expr string, vars []string) (*VarsExpr, error) {
	opts := []cel.EnvOption{
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		cel.DefaultUTCTimeZone(true),
	}
	for _, name := range vars {
		opts = append(opts, cel.Variable(name, cel.DynType))
	}
	e, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("compile CEL %q: %w", expr, err)
	}
	ast, iss := e.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("compile CEL %q: %w", expr, iss.Err())
	}
	prog, err := e.Program(ast, cel.CostLimit(DefaultCostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("compile CEL %q: %w", expr, err)
	}
	return &VarsExpr{src: expr, vars: vars, prog: prog}, nil
}

// String returns the source text of the expression.
func (x *VarsExpr) String() string { return x.src }

// Eval evaluates the expression with the given variables, whose values are
// JSON-like Go values as DecodeJSON returns them. A variable left out of
// vars is unbound and using it is an error; bind a variable that may be
// absent to nil instead, so that expressions can test it against null.
func (x *VarsExpr) Eval(vars map[string]any) (any, error) {
	out, _, err := x.prog.Eval(vars)
	if err != nil {
		return nil, fmt.Errorf("evaluate CEL %q: %w", x.src, err)
	}
	n, err := Native(out)
	if err != nil {
		return nil, fmt.Errorf("evaluate CEL %q: %w", x.src, err)
	}
	return n, nil
}

// Native converts a CEL value to what encoding/json would produce for it:
// maps with string keys, slices, strings, bools, nil, int64, uint64 and
// float64. Bytes become base64 strings, timestamps RFC 3339 strings and
// durations Go duration strings.
func Native(v ref.Val) (any, error) { return native(v, 0) }

func native(v ref.Val, depth int) (any, error) {
	if depth > maxNativeDepth {
		return nil, fmt.Errorf("value nested more than %d levels deep: %w", maxNativeDepth, ErrUnsupportedValue)
	}
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(x), nil
	case types.Int:
		return int64(x), nil
	case types.Uint:
		return uint64(x), nil
	case types.Double:
		return float64(x), nil
	case types.String:
		return string(x), nil
	case types.Bytes:
		return base64.StdEncoding.EncodeToString(x), nil
	case types.Timestamp:
		return x.Time.UTC().Format(time.RFC3339Nano), nil
	case types.Duration:
		return x.Duration.String(), nil
	case *types.Err:
		return nil, x
	}
	if m, ok := v.(traits.Mapper); ok {
		out := map[string]any{}
		for it := m.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			ks, ok := k.(types.String)
			if !ok {
				return nil, fmt.Errorf("map key of type %s: %w", k.Type(), ErrUnsupportedValue)
			}
			e, err := native(m.Get(k), depth+1)
			if err != nil {
				return nil, err
			}
			out[string(ks)] = e
		}
		return out, nil
	}
	if l, ok := v.(traits.Lister); ok {
		n, _ := l.Size().(types.Int)
		out := make([]any, 0, int(n))
		for i := types.Int(0); i < n; i++ {
			e, err := native(l.Get(i), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	}
	return nil, fmt.Errorf("value of type %s: %w", v.Type(), ErrUnsupportedValue)
}
