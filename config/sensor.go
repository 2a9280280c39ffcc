package config

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/signalbox-dev/signalbox/dispatch/celexpr"
)

// unsupportedFields names fields of the Sensor schema that signalbox will
// accept later, so that using one says so instead of "unknown field".
var unsupportedFields = map[reflect.Type]map[string]string{
	reflect.TypeFor[SensorTrigger](): {
		"nats":  targetNotSupported("nats"),
		"kafka": targetNotSupported("kafka"),
	},
	reflect.TypeFor[OpenWhiskTarget](): {
		"auth": "secrets are never written inline: use authFrom: env:NAME or file:/path",
	},
}

// targetKinds are the sensor trigger targets this release implements.
var targetKinds = []string{TargetHTTP, TargetLambda, TargetOpenWhisk, TargetKubernetes}

func targetNotSupported(kind string) string {
	return fmt.Sprintf("target kind %q is not supported yet (supported target kinds: %s)",
		kind, strings.Join(targetKinds, ", "))
}

// httpMethods are the methods an HTTP target may use. CONNECT and TRACE make
// no sense for delivering an event.
var httpMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// identifier is what a dependency name must look like: it becomes a variable
// in condition expressions.
var identifier = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// reservedWords cannot name a dependency: CEL reserves them, so a condition
// using one would not mean the dependency.
var reservedWords = []string{
	"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
	"function", "if", "import", "let", "loop", "package", "namespace", "return", "var",
	"void", "while",
}

// checkSensor applies the defaults a user relies on and validates a Sensor.
func checkSensor(c *checker, s *Sensor) {
	if s.Metadata.Namespace == "" {
		s.Metadata.Namespace = "default"
	}
	c.metadata(s.Metadata.Name, s.Metadata.Namespace, true)
	if s.Spec.Broker == "" {
		c.errorf(0, "spec.broker", "missing field: the broker to read events from is required")
	}

	deps := c.dependencies(s.Spec.Dependencies)
	if s.Spec.Correlation != nil {
		c.correlation(s.Spec.Correlation, "spec.correlation")
	}
	if len(s.Spec.Triggers) == 0 {
		c.errorf(0, "spec.triggers", "missing field: at least one trigger is required")
	}
	names := map[string]string{}
	for i := range s.Spec.Triggers {
		path := fmt.Sprintf("spec.triggers[%d]", i)
		c.sensorTrigger(&s.Spec.Triggers[i], path, deps)
		name := s.Spec.Triggers[i].Name
		if first, dup := names[name]; dup && name != "" {
			c.errorf(0, path+".name", "duplicate trigger name %q (first at %s)", name, first)
		}
		names[name] = path
	}
}

// dependencies validates the dependency list and returns the valid names.
func (c *checker) dependencies(deps []Dependency) []string {
	if len(deps) == 0 {
		c.errorf(0, "spec.dependencies", "missing field: at least one dependency is required")
		return nil
	}

	var names []string
	for i, dep := range deps {
		path := fmt.Sprintf("spec.dependencies[%d]", i)
		switch {
		case dep.Name == "":
			c.errorf(0, path+".name", "missing field: a name is required")
		case !identifier.MatchString(dep.Name):
			c.errorf(0, path+".name",
				"invalid name %q: it is used in conditions, so it must match [a-zA-Z_][a-zA-Z0-9_]*", dep.Name)
		case slices.Contains(reservedWords, dep.Name):
			c.errorf(0, path+".name", "invalid name %q: it is a reserved word in conditions", dep.Name)
		case slices.Contains(names, dep.Name):
			c.errorf(0, path+".name", "duplicate dependency name %q", dep.Name)
		default:
			names = append(names, dep.Name)
		}

		if strings.TrimSpace(dep.Filter) == "" {
			c.errorf(0, path+".filter", "missing field: a CEL filter is required")
		} else if _, err := celexpr.Compile(dep.Filter); err != nil {
			c.errorf(0, path+".filter", "%s", oneLine(err.Error()))
		}
	}
	return names
}

func (c *checker) sensorTrigger(t *SensorTrigger, path string, deps []string) {
	if t.Name == "" {
		c.errorf(0, path+".name", "missing field: a name is required")
	} else {
		c.dnsErrors(path+".name", t.Name, validation.IsDNS1123Label(t.Name))
	}

	kind := c.target(t, path)

	if t.Conditions != "" {
		c.conditions(t.Conditions, path+".conditions", deps)
	}
	if t.ConditionsReset != nil {
		c.conditionsReset(t.ConditionsReset, path+".conditionsReset")
	}
	if t.Transform != nil {
		c.transform(t.Transform, path+".transform")
	}
	for i := range t.Parameters {
		c.parameter(&t.Parameters[i], fmt.Sprintf("%s.parameters[%d]", path, i), deps, kind)
	}
	c.delivery(t.Delivery, path+".delivery")
}

// correlation checks the key expression and the window.
func (c *checker) correlation(corr *Correlation, path string) {
	if corr.Key == "" && corr.Window == "" {
		c.errorf(0, path, "set key, window or both (or leave correlation out)")
	}
	if corr.Key != "" {
		if _, err := celexpr.CompileValue(corr.Key); err != nil {
			c.errorf(0, path+".key", "%s", oneLine(err.Error()))
		}
	}
	if corr.Window != "" {
		if d, err := ParseDuration(corr.Window); err != nil {
			c.errorf(0, path+".window", "%v", err)
		} else if d <= 0 {
			c.errorf(0, path+".window", "must be greater than zero, got %q", corr.Window)
		}
	}
}

// conditionsReset checks the schedule and its time zone.
func (c *checker) conditionsReset(r *ConditionsReset, path string) {
	if _, err := r.Schedule(); err != nil {
		var se *scheduleError
		if errors.As(err, &se) {
			c.errorf(0, path+"."+se.field, "%v", se.err)
			return
		}
		c.errorf(0, path, "%v", err)
	}
}

// transform checks that exactly one program is set and that it compiles.
func (c *checker) transform(t *Transform, path string) {
	switch {
	case t.JQ == "" && t.Lua == "":
		c.errorf(0, path, "set one of jq and lua")
		return
	case t.JQ != "" && t.Lua != "":
		c.errorf(0, path, "set only one of jq and lua")
		return
	}
	field := path + ".jq"
	if t.Lua != "" {
		field = path + ".lua"
	}
	if err := compileTransform(t); err != nil {
		c.errorf(0, field, "%s", oneLine(err.Error()))
	}
}

// parameter checks one trigger parameter: its source, its destination (which
// must suit the trigger's target kind; "" when that is unknown) and its
// operation.
func (c *checker) parameter(p *Parameter, path string, deps []string, kind string) {
	switch {
	case p.Src == "" && p.Value == nil:
		c.errorf(0, path+".src", "missing field: set src (a CEL expression) or value (a literal)")
	case p.Src != "" && p.Value != nil:
		c.errorf(0, path+".value", "set only one of src and value")
	case p.Src != "":
		if _, err := celexpr.CompileVars(p.Src, deps); err != nil {
			c.errorf(0, path+".src", "%s", oneLine(err.Error()))
		}
	}
	if d, err := ParseParamDest(p.Dest); err != nil {
		c.errorf(0, path+".dest", "%v", err)
	} else if want := d.TargetKind(); want != "" && kind != "" && want != kind {
		c.errorf(0, path+".dest", "destination %q is only for %s targets, and this trigger's target is %s",
			p.Dest, want, kind)
	}
	switch p.Operation {
	case "", OperationOverwrite, OperationAppend, OperationPrepend:
	default:
		c.errorf(0, path+".operation", "unknown operation %q (allowed: %s, %s, %s)", p.Operation,
			OperationOverwrite, OperationAppend, OperationPrepend)
	}
}

func (c *checker) httpTarget(h *HTTPTarget, path string) {
	c.httpURL(h.URL, path+".url")
	if h.Method == "" {
		h.Method = http.MethodPost
	}
	if m := strings.ToUpper(h.Method); slices.Contains(httpMethods, m) {
		h.Method = m
	} else {
		c.errorf(0, path+".method", "unknown HTTP method %q (allowed: %s)",
			h.Method, strings.Join(httpMethods, ", "))
	}
	for k := range h.Headers {
		if k == "" || strings.ContainsAny(k, " \t\r\n:") {
			c.errorf(0, keyPath(path+".headers", k, false), "invalid header name %q", k)
		}
	}
}

// conditions checks a boolean expression over dependency names: names,
// parentheses, !, && and ||.
func (c *checker) conditions(expr, path string, deps []string) {
	p := condParser{src: expr}
	names, err := p.parse()
	if err != nil {
		c.errorf(0, path, "invalid conditions %q: %v", expr, err)
		return
	}
	for _, n := range names {
		if !slices.Contains(deps, n) {
			c.errorf(0, path, "conditions name unknown dependency %q (dependencies: %s)", n, strings.Join(deps, ", "))
		}
	}
}

// condParser is a recursive-descent parser for conditions:
//
//	or    = and { "||" and }
//	and   = unary { "&&" unary }
//	unary = "!" unary | "(" or ")" | name
type condParser struct {
	src   string
	pos   int
	names []string
	depth int
}

func (p *condParser) parse() ([]string, error) {
	if err := p.or(); err != nil {
		return nil, err
	}
	p.space()
	if p.pos < len(p.src) {
		return nil, fmt.Errorf("unexpected %q at offset %d", p.src[p.pos:], p.pos)
	}
	return p.names, nil
}

func (p *condParser) space() {
	for p.pos < len(p.src) && strings.ContainsRune(" \t\r\n", rune(p.src[p.pos])) {
		p.pos++
	}
}

func (p *condParser) accept(tok string) bool {
	p.space()
	if strings.HasPrefix(p.src[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

func (p *condParser) or() error {
	if err := p.and(); err != nil {
		return err
	}
	for p.accept("||") {
		if err := p.and(); err != nil {
			return err
		}
	}
	return nil
}

func (p *condParser) and() error {
	if err := p.unary(); err != nil {
		return err
	}
	for p.accept("&&") {
		if err := p.unary(); err != nil {
			return err
		}
	}
	return nil
}

func (p *condParser) unary() error {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDecodeDepth {
		return fmt.Errorf("nested more than %d levels deep", maxDecodeDepth)
	}
	switch {
	case p.accept("!"):
		return p.unary()
	case p.accept("("):
		if err := p.or(); err != nil {
			return err
		}
		if !p.accept(")") {
			return fmt.Errorf(`missing ")" at offset %d`, p.pos)
		}
		return nil
	}
	start := p.pos
	for p.pos < len(p.src) && (p.src[p.pos] == '_' || isAlnum(p.src[p.pos])) {
		p.pos++
	}
	name := p.src[start:p.pos]
	if !identifier.MatchString(name) {
		if p.pos >= len(p.src) && name == "" {
			return fmt.Errorf("expected a dependency name at the end")
		}
		return fmt.Errorf("expected a dependency name at offset %d", start)
	}
	p.names = append(p.names, name)
	return nil
}

func isAlnum(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// oneLine keeps the message lines of a multi-line error (CEL draws a caret
// under the expression on lines starting with " |"), joined with "; ", so
// that one problem prints as one line.
func oneLine(msg string) string {
	var keep []string
	for _, l := range strings.Split(msg, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "|") {
			keep = append(keep, t)
		}
	}
	return strings.Join(keep, "; ")
}
