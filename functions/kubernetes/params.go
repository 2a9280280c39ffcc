package kubernetes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Operations of ApplyParameter.
const (
	// Overwrite replaces what is at the destination (the default).
	Overwrite = "overwrite"
	// Append adds after what is at the destination.
	Append = "append"
	// Prepend adds before what is at the destination.
	Prepend = "prepend"
)

// ApplyParameter sets value at dest in manifest, as a Sensor trigger's
// parameter does; manifest is usually Target.Manifest(), sent with
// Target.WithManifest.
//
// dest is a dot-separated path, such as spec.template.spec.containers.0.args:
// a segment of digits indexes a list, and -1 (or the list's length) is one
// past its end; `\.` is a dot within a key
// (metadata.labels.app\.kubernetes\.io/name). Maps missing along the way are
// created, and a list where the missing segment is 0 or -1.
//
// op is Overwrite (empty means this), Append or Prepend, as for the other
// destinations of a parameter: Append and Prepend add the value (each element
// of a list value) at the end or start of a list at dest, set the value where
// dest holds nothing, and otherwise join the text forms of the two (strings
// as they are, other values as JSON) into a string.
//
// value is converted to JSON types first (integers become int64, as
// client-go expects); a value JSON cannot encode is an error. On error,
// manifest may be partly modified: start again from a fresh Manifest().
func ApplyParameter(manifest map[string]any, dest string, value any, op string) error {
	if manifest == nil {
		return errors.New("manifest is nil")
	}
	var combine func(old any, exists bool) (any, error)
	switch op {
	case "", Overwrite:
		combine = func(any, bool) (any, error) { return value, nil }
	case Append, Prepend:
		combine = func(old any, exists bool) (any, error) { return join(old, exists, value, op == Append) }
	default:
		return fmt.Errorf("operation: want overwrite, append or prepend, got %q", op)
	}
	segs, err := splitPath(dest)
	if err != nil {
		return fmt.Errorf("dest %q: %w", dest, err)
	}
	value, err = jsonValue(value)
	if err != nil {
		return fmt.Errorf("dest %q: value: %w", dest, err)
	}
	if _, err := put(manifest, true, segs, combine); err != nil {
		return fmt.Errorf("dest %q: %w", dest, err)
	}
	return nil
}

// splitPath splits a dot path into its segments; `\.` escapes a dot and
// `\\` a backslash.
func splitPath(p string) ([]string, error) {
	if p == "" {
		return nil, errors.New("empty path")
	}
	var segs []string
	var cur strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '\\' && i+1 < len(p) && (p[i+1] == '.' || p[i+1] == '\\'):
			cur.WriteByte(p[i+1])
			i++
		case c == '.':
			segs = append(segs, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	segs = append(segs, cur.String())
	for _, s := range segs {
		if s == "" {
			return nil, errors.New("empty segment")
		}
	}
	return segs, nil
}

// put returns node with combine applied at segs below it.
func put(node any, exists bool, segs []string, combine func(any, bool) (any, error)) (any, error) {
	if len(segs) == 0 {
		return combine(node, exists)
	}
	seg, rest := segs[0], segs[1:]
	if !exists || node == nil {
		if seg == "0" || seg == "-1" {
			node = []any{}
		} else {
			node = map[string]any{}
		}
	}
	switch n := node.(type) {
	case map[string]any:
		child, ok := n[seg]
		v, err := put(child, ok, rest, combine)
		if err != nil {
			return nil, err
		}
		n[seg] = v
		return n, nil
	case []any:
		i, err := strconv.Atoi(seg)
		if err != nil || i < -1 || i > len(n) {
			return nil, fmt.Errorf("%q is not an index of a list of %d", seg, len(n))
		}
		if i == -1 || i == len(n) {
			v, err := put(nil, false, rest, combine)
			if err != nil {
				return nil, err
			}
			return append(n, v), nil
		}
		v, err := put(n[i], true, rest, combine)
		if err != nil {
			return nil, err
		}
		n[i] = v
		return n, nil
	default:
		return nil, fmt.Errorf("cannot go into %q: the value there is a %s", seg, kindOf(node))
	}
}

// join appends or prepends value to old.
func join(old any, exists bool, value any, after bool) (any, error) {
	if !exists || old == nil {
		return value, nil
	}
	if o, ok := old.([]any); ok {
		add, ok := value.([]any)
		if !ok {
			add = []any{value}
		}
		if after {
			return append(o, add...), nil
		}
		return append(append([]any{}, add...), o...), nil
	}
	a, b := text(old), text(value)
	if after {
		return a + b, nil
	}
	return b + a, nil
}

// text is a value's form in a joined string: a string as it is, anything
// else as JSON.
func text(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v) // v came from JSON
	return string(b)
}

// jsonValue converts v to what JSON decoding gives, with integral numbers as
// int64 (float64 otherwise), the types unstructured objects hold.
func jsonValue(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		return nil, err
	}
	return numbers(out), nil
}

func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	}
	return v
}

func kindOf(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case int64, float64:
		return "number"
	case map[string]any:
		return "object"
	case []any:
		return "list"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}
