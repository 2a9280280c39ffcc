// Package celexpr compiles and evaluates the CEL expressions that select
// events: a Sensor dependency's filter and anything else that decides on a
// single event.
//
// An expression sees two variables. `event` is a map of the event's context
// attributes (id, source, specversion, type, and, when set, subject, time as a
// timestamp, datacontenttype, dataschema) and of every extension by name.
// `data` is the event's data: decoded JSON when the data is JSON, otherwise a
// string for text and bytes for everything else, and null when the event has
// no data. JSON numbers that are integral and fit in an int64 become CEL ints
// so large ids compare exactly; all others become doubles. Comparisons work
// across int, uint and double; arithmetic does not mix them.
package celexpr

import (
	"errors"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
)

// Names of the variables an expression sees.
const (
	VarEvent = "event"
	VarData  = "data"
)

// DefaultCostLimit bounds the work one evaluation may do, in CEL's abstract
// cost units (roughly one per operation and per element visited); it is
// tens of milliseconds of CPU. It stops an expression that walks a large payload
// many times from stalling a trigger, and is far above what a filter that
// looks at each field a few times needs.
const DefaultCostLimit = 100_000

// ErrNotBool is returned by Eval when an expression whose type is only known
// at run time (for example `data.flag`) yields something other than a bool.
var ErrNotBool = errors.New("celexpr: expression did not yield a bool")

// env is shared by every compiled expression: building an environment is far
// more expensive than compiling against one, and an Env is safe for
// concurrent use.
var env = mustEnv()

func mustEnv() *cel.Env {
	e, err := cel.NewEnv(
		cel.Variable(VarEvent, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(VarData, cel.DynType),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		cel.DefaultUTCTimeZone(true),
	)
	if err != nil {
		panic(fmt.Sprintf("celexpr: building the CEL environment: %v", err))
	}
	return e
}

// Expr is a compiled filter expression. It is immutable and safe for
// concurrent use.
type Expr struct {
	src  string
	prog cel.Program
}

// Compile parses and type-checks expr. The expression must yield a bool; one
// whose type is only known at run time (dyn) is accepted and checked on each
// evaluation. Errors name the position of the problem in expr.
func Compile(expr string) (*Expr, error) {
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("compile CEL %q: %w", expr, iss.Err())
	}
	if out := ast.OutputType(); !out.IsExactType(types.BoolType) && !out.IsExactType(types.DynType) {
		return nil, fmt.Errorf("compile CEL %q: expression yields %s, want bool", expr, out)
	}
	prog, err := env.Program(ast,
		cel.CostLimit(DefaultCostLimit),
		cel.EvalOptions(cel.OptOptimize),
	)
	if err != nil {
		return nil, fmt.Errorf("compile CEL %q: %w", expr, err)
	}
	return &Expr{src: expr, prog: prog}, nil
}

// String returns the source text of the expression.
func (x *Expr) String() string { return x.src }

// Match evaluates the expression on e. A missing field, a type error or an
// exceeded cost limit is returned as an error; callers treat it as no match.
// Match never panics on any event.
func (x *Expr) Match(e *event.Event) (bool, error) {
	return x.Eval(NewInput(e))
}

// Eval evaluates the expression on an input built once by NewInput, so that
// several expressions over one event decode its data once.
func (x *Expr) Eval(in *Input) (bool, error) {
	out, _, err := x.prog.Eval(in)
	if err != nil {
		return false, fmt.Errorf("evaluate CEL %q: %w", x.src, err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("evaluate CEL %q: got %s: %w", x.src, out.Type(), ErrNotBool)
	}
	return b, nil
}
