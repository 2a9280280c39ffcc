package celexpr

import (
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"
)

// Conditions is a compiled Sensor trigger condition: a boolean expression
// over dependency names such as `plate && (speed || !manual)`, where each
// name is true while an event of that dependency is held. It is immutable
// and safe for concurrent use.
type Conditions struct {
	src  string
	deps []string
	prog cel.Program
}

// CompileConditions compiles a condition over the dependency names deps. An
// empty (or blank) expr means every dependency. A name not in deps, or a
// result that is not a bool, is an error.
func CompileConditions(expr string, deps []string) (*Conditions, error) {
	if strings.TrimSpace(expr) == "" {
		expr = strings.Join(deps, " && ")
	}
	opts := make([]cel.EnvOption, 0, len(deps))
	for _, d := range deps {
		opts = append(opts, cel.Variable(d, cel.BoolType))
	}
	e, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("conditions %q: %w", expr, err)
	}
	ast, iss := e.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("conditions %q: %w", expr, iss.Err())
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("conditions %q: yields %s, want bool", expr, ast.OutputType())
	}
	prog, err := e.Program(ast, cel.CostLimit(DefaultCostLimit))
	if err != nil {
		return nil, fmt.Errorf("conditions %q: %w", expr, err)
	}
	return &Conditions{src: expr, deps: deps, prog: prog}, nil
}

// String returns the source text of the condition.
func (c *Conditions) String() string { return c.src }

// Eval evaluates the condition; held reports whether an event of a
// dependency is held.
func (c *Conditions) Eval(held func(dep string) bool) (bool, error) {
	vars := make(map[string]any, len(c.deps))
	for _, d := range c.deps {
		vars[d] = held(d)
	}
	out, _, err := c.prog.Eval(vars)
	if err != nil {
		return false, fmt.Errorf("conditions %q: %w", c.src, err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("conditions %q: %w", c.src, ErrNotBool)
	}
	return b, nil
}
