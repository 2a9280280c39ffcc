package config

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// Limits that keep a hostile or broken document from exhausting the stack or
// memory: aliases can make a small document expand exponentially.
const (
	maxDecodeNodes = 50_000
	maxDecodeDepth = 100
)

// decoder turns one YAML document into a Go value the way encoding/json would
// from the equivalent JSON, but strictly: it refuses fields the Go type does
// not have, duplicate keys and values of the wrong kind, and it records the
// line of every field so that later validation errors can point at it.
//
// It works in two steps: the YAML nodes are checked against the target type
// and converted to plain JSON values (maps, slices, strings, json.Number,
// bools), which encoding/json then decodes. Types with their own JSON decoding
// (URLs, times, quantities) are tried one by one during the first step so
// their errors also carry a line.
type decoder struct {
	file   string
	object string         // "Kind namespace/name", for errors
	root   int            // line of the object, used when a field has none
	lines  map[string]int // field path → line
	errs   []*Error
	// refused are the fields decoding refused (left out of the object).
	refused []string

	nodes     int
	exhausted bool
	active    []*yaml.Node // anchored nodes being expanded, to refuse cycles
}

func newDecoder(file, object string, root *yaml.Node) *decoder {
	d := &decoder{file: file, object: object, root: root.Line, lines: map[string]int{"": root.Line}}
	// Problems found before decoding (kind, name) still get their lines.
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		d.lines[k.Value] = k.Line
		if k.Value == "metadata" && v.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(v.Content); j += 2 {
				d.lines["metadata."+v.Content[j].Value] = v.Content[j].Line
			}
		}
	}
	return d
}

// errorf records a problem at the given field; line 0 looks the field up.
func (d *decoder) errorf(line int, field, format string, args ...any) {
	d.errs = append(d.errs, d.problem(line, field, format, args...))
}

// problem builds an *Error for this object without recording it.
func (d *decoder) problem(line int, field, format string, args ...any) *Error {
	if line == 0 {
		line = d.line(field)
	}
	return &Error{File: d.file, Line: line, Object: d.object, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// line returns the line of the field at path, or of its nearest ancestor
// present in the document: a missing field is reported where its parent is.
func (d *decoder) line(path string) int {
	for {
		if l, ok := d.lines[path]; ok {
			return l
		}
		if path == "" {
			return d.root
		}
		path = parentPath(path)
	}
}

// parentPath drops the last element of a field path: "a.b[k.x]" → "a.b",
// "a.b" → "a", "a" → "". Keys in brackets may contain dots.
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndex(path, "["); i >= 0 {
			return path[:i]
		}
	}
	depth := 0
	for i := len(path) - 1; i >= 0; i-- {
		switch path[i] {
		case ']':
			depth++
		case '[':
			depth--
		case '.':
			if depth == 0 {
				return path[:i]
			}
		}
	}
	return ""
}

func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// decode fills out, a pointer, from the mapping node n. Fields that were
// refused are left out and recorded as problems, so out may be partly filled;
// decode reports whether out is usable for further checks.
func (d *decoder) decode(n *yaml.Node, out any) bool {
	before := len(d.errs)
	v, _ := d.value(n, reflect.TypeOf(out).Elem(), "", 0)
	for _, e := range d.errs[before:] {
		d.refused = append(d.refused, e.Field)
	}
	if v == nil || d.exhausted {
		return false
	}
	data, err := json.Marshal(v)
	if err != nil {
		d.errorf(d.root, "", "cannot encode object: %v", err)
		return false
	}
	if err := json.Unmarshal(data, out); err != nil {
		// The first step should have caught everything; this is a backstop
		// for types whose JSON decoding is stricter than their shape.
		var te *json.UnmarshalTypeError
		field := ""
		if errors.As(err, &te) {
			field = te.Field
		}
		d.errorf(0, field, "%v", err)
		return false
	}
	return true
}

// related reports whether field is, contains or lies inside a field that
// decoding refused. Such a field was left out of the object, so what later
// checks say about it would only echo the first problem.
func (d *decoder) related(field string) bool {
	for _, r := range d.refused {
		if within(field, r) || within(r, field) {
			return true
		}
	}
	return false
}

// within reports whether path is base or a field below it.
func within(path, base string) bool {
	return base == "" || path == base || strings.HasPrefix(path, base+".") || strings.HasPrefix(path, base+"[")
}

var (
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decodesItself reports whether encoding/json hands values of t to a method
// of t rather than walking its structure.
func decodesItself(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(jsonUnmarshalerType) || p.Implements(textUnmarshalerType)
}

// value converts n to a JSON value shaped for type t. ok is false when n (or
// something inside it) was refused; the problem has been recorded.
func (d *decoder) value(n *yaml.Node, t reflect.Type, path string, depth int) (v any, ok bool) {
	n, release, ok := d.enter(n, path, depth)
	if !ok {
		return nil, false
	}
	defer release()

	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil, true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if decodesItself(t) {
		return d.selfDecoded(n, t, path, depth)
	}

	switch t.Kind() {
	case reflect.Interface:
		return d.generic(n, path, depth)
	case reflect.Struct:
		return d.structValue(n, t, path, depth)
	case reflect.Map:
		return d.mapping(n, t, path, depth)
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			// encoding/json reads []byte as a base64 string.
			return d.scalar(n, path, "a base64 string", func() (any, error) { return n.Value, nil })
		}
		return d.sequence(n, t, path, depth)
	case reflect.String:
		// Like Kubernetes' YAML reader, accept `version: 1` for a string.
		return d.scalar(n, path, "a string", func() (any, error) { return n.Value, nil })
	case reflect.Bool:
		return d.scalar(n, path, "a boolean", func() (any, error) {
			if n.ShortTag() != "!!bool" {
				return nil, errWrongKind
			}
			var b bool
			return b, n.Decode(&b)
		})
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return d.scalar(n, path, "an integer", func() (any, error) {
			var i int64
			if n.ShortTag() != "!!int" || n.Decode(&i) != nil {
				return nil, errWrongKind
			}
			if reflect.New(t).Elem().OverflowInt(i) {
				return nil, fmt.Errorf("%d is out of range for a %d-bit integer", i, t.Bits())
			}
			return json.Number(strconv.FormatInt(i, 10)), nil
		})
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return d.scalar(n, path, "a non-negative integer", func() (any, error) {
			var u uint64
			if n.ShortTag() != "!!int" || n.Decode(&u) != nil {
				return nil, errWrongKind
			}
			if reflect.New(t).Elem().OverflowUint(u) {
				return nil, fmt.Errorf("%d is out of range for a %d-bit integer", u, t.Bits())
			}
			return json.Number(strconv.FormatUint(u, 10)), nil
		})
	case reflect.Float32, reflect.Float64:
		return d.scalar(n, path, "a number", func() (any, error) {
			if tag := n.ShortTag(); tag != "!!int" && tag != "!!float" {
				return nil, errWrongKind
			}
			return jsonFloat(n)
		})
	default:
		d.errorf(n.Line, path, "cannot decode into a Go %s", t.Kind())
		return nil, false
	}
}

// errWrongKind makes scalar report "expected X, got Y".
var errWrongKind = errors.New("wrong kind")

// enter resolves aliases and enforces the size, depth and cycle limits. The
// returned release must be called when the caller is done with n.
func (d *decoder) enter(n *yaml.Node, path string, depth int) (*yaml.Node, func(), bool) {
	nop := func() {}
	if d.exhausted {
		return nil, nop, false
	}
	d.nodes++
	if d.nodes > maxDecodeNodes {
		d.exhausted = true
		d.errorf(n.Line, path, "document too large (more than %d nodes after expanding aliases)", maxDecodeNodes)
		return nil, nop, false
	}
	if depth > maxDecodeDepth {
		d.errorf(n.Line, path, "nested more than %d levels deep", maxDecodeDepth)
		return nil, nop, false
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			d.errorf(n.Line, path, "unknown alias %q", n.Value)
			return nil, nop, false
		}
		if slices.Contains(d.active, n.Alias) {
			d.errorf(n.Line, path, "alias *%s refers to a node that contains it", n.Value)
			return nil, nop, false
		}
		return d.enter(n.Alias, path, depth)
	}
	if n.Anchor == "" {
		return n, nop, true
	}
	// Anchored nodes being expanded are remembered so that an alias to one of
	// them from inside it is refused rather than followed forever.
	d.active = append(d.active, n)
	return n, func() { d.active = d.active[:len(d.active)-1] }, true
}

// scalar converts a scalar node with conv, reporting "expected <want>" when
// n is not a scalar or conv returns errWrongKind.
func (d *decoder) scalar(n *yaml.Node, path, want string, conv func() (any, error)) (any, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n.Line, path, "expected %s, got %s", want, describe(n))
		return nil, false
	}
	v, err := conv()
	if errors.Is(err, errWrongKind) {
		d.errorf(n.Line, path, "expected %s, got %s %q", want, describe(n), n.Value)
		return nil, false
	}
	if err != nil {
		d.errorf(n.Line, path, "%v", err)
		return nil, false
	}
	return v, true
}

// describe names the kind of a node for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.DocumentNode:
		return "a document"
	}
	switch n.ShortTag() {
	case "!!int":
		return "integer"
	case "!!float":
		return "number"
	case "!!bool":
		return "boolean"
	case "!!null":
		return "null"
	case "!!timestamp":
		return "timestamp"
	}
	return "string"
}

func jsonFloat(n *yaml.Node) (any, error) {
	var f float64
	if err := n.Decode(&f); err != nil {
		return nil, errWrongKind
	}
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, fmt.Errorf("%s is not a finite number", n.Value)
	}
	return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
}

// entry is one key/value pair of a mapping, after merge keys are expanded.
type entry struct {
	key   string
	line  int
	value *yaml.Node
}

// entries lists a mapping's pairs. Explicit keys win over keys merged in with
// `<<: *anchor`, as in YAML 1.1, which Kubernetes users rely on. A key given
// twice explicitly is refused: one of the two values would be silently lost.
func (d *decoder) entries(n *yaml.Node, path string, depth int) ([]entry, bool) {
	var explicit, merged []entry
	seen := map[string]int{}
	ok := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k.Line, path, "mapping keys must be strings, got %s", describe(k))
			ok = false
			continue
		}
		if k.ShortTag() == "!!merge" {
			m, mok := d.mergeEntries(v, path, depth)
			merged = append(merged, m...)
			ok = ok && mok
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorf(k.Line, keyPath(path, k.Value, true), "duplicate key %q (first at line %d)", k.Value, first)
			ok = false
			continue
		}
		seen[k.Value] = k.Line
		explicit = append(explicit, entry{key: k.Value, line: k.Line, value: v})
	}
	for _, e := range merged {
		if _, dup := seen[e.key]; !dup {
			seen[e.key] = e.line
			explicit = append(explicit, e)
		}
	}
	return explicit, ok
}

// mergeEntries expands the value of a `<<` key: a mapping or a list of them.
func (d *decoder) mergeEntries(v *yaml.Node, path string, depth int) ([]entry, bool) {
	v, release, ok := d.enter(v, path, depth+1)
	if !ok {
		return nil, false
	}
	defer release()
	switch v.Kind {
	case yaml.MappingNode:
		return d.entries(v, path, depth+1)
	case yaml.SequenceNode:
		var all []entry
		for _, item := range v.Content {
			item, release, ok := d.enter(item, path, depth+1)
			if !ok {
				return nil, false
			}
			if item.Kind != yaml.MappingNode {
				release()
				d.errorf(item.Line, path, "a merge key takes mappings, got %s", describe(item))
				return nil, false
			}
			es, ok := d.entries(item, path, depth+1)
			release()
			if !ok {
				return nil, false
			}
			all = append(all, es...)
		}
		return all, true
	}
	d.errorf(v.Line, path, "a merge key takes a mapping, got %s", describe(v))
	return nil, false
}

// keyPath extends path by a struct field (field.x) or a map key (map[x]),
// the notation Knative's field errors use.
func keyPath(path, key string, isField bool) string {
	if isField {
		return joinPath(path, key)
	}
	return path + "[" + key + "]"
}

// structValue checks a mapping against the JSON fields of struct type t.
func (d *decoder) structValue(n *yaml.Node, t reflect.Type, path string, depth int) (any, bool) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n.Line, path, "expected a mapping, got %s", describe(n))
		return nil, false
	}
	es, ok := d.entries(n, path, depth)
	fields := jsonFields(t)
	out := make(map[string]any, len(es))
	for _, e := range es {
		p := joinPath(path, e.key)
		d.lines[p] = e.line
		ft, known := fields[e.key]
		if !known {
			msg, suggestion := unknownFieldMsg(t, e.key, fields)
			d.errorf(e.line, p, "%s", msg)
			if suggestion != "" {
				// The user most likely meant that field: do not also
				// report it missing.
				d.refused = append(d.refused, joinPath(path, suggestion))
			}
			ok = false
			continue
		}
		v, vok := d.value(e.value, ft, p, depth+1)
		ok = ok && vok
		if v != nil || vok {
			out[e.key] = v // a partly refused mapping or list is kept
		}
	}
	return out, ok
}

// unknownFieldMsg explains an unknown field, with a hint for a near miss
// (returned as suggestion) or for a field that signalbox will support later.
func unknownFieldMsg(t reflect.Type, key string, fields map[string]reflect.Type) (msg, suggestion string) {
	if msg, ok := unsupportedFields[t][key]; ok {
		return msg, ""
	}
	best, bestDist := "", 3
	for name := range fields {
		if dist := editDistance(strings.ToLower(key), strings.ToLower(name)); dist < bestDist ||
			dist == bestDist && best != "" && name < best {
			best, bestDist = name, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown field %q (did you mean %q?)", key, best), best
	}
	return fmt.Sprintf("unknown field %q", key), ""
}

// editDistance is the Levenshtein distance between two short strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) mapping(n *yaml.Node, t reflect.Type, path string, depth int) (any, bool) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n.Line, path, "expected a mapping, got %s", describe(n))
		return nil, false
	}
	es, ok := d.entries(n, path, depth)
	out := make(map[string]any, len(es))
	for _, e := range es {
		p := keyPath(path, e.key, false)
		d.lines[p] = e.line
		v, vok := d.value(e.value, t.Elem(), p, depth+1)
		ok = ok && vok
		if v != nil || vok {
			out[e.key] = v
		}
	}
	return out, ok
}

func (d *decoder) sequence(n *yaml.Node, t reflect.Type, path string, depth int) (any, bool) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n.Line, path, "expected a list, got %s", describe(n))
		return nil, false
	}
	if t.Kind() == reflect.Array && len(n.Content) > t.Len() {
		d.errorf(n.Line, path, "at most %d items allowed, got %d", t.Len(), len(n.Content))
		return nil, false
	}
	out := make([]any, 0, len(n.Content))
	ok := true
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.lines[p] = item.Line
		v, vok := d.value(item, t.Elem(), p, depth+1)
		ok = ok && vok
		out = append(out, v)
	}
	return out, ok
}

// selfDecoded converts n without a type to guide it, then lets t's own
// decoding judge the result, so its error gets this node's line.
func (d *decoder) selfDecoded(n *yaml.Node, t reflect.Type, path string, depth int) (any, bool) {
	v, ok := d.generic(n, path, depth)
	if !ok {
		return nil, false
	}
	data, err := json.Marshal(v)
	if err == nil {
		err = json.Unmarshal(data, reflect.New(t).Interface())
	}
	if err != nil {
		d.errorf(n.Line, path, "invalid value: %v", err)
		return nil, false
	}
	return v, true
}

// generic converts n to JSON values following YAML's own typing.
func (d *decoder) generic(n *yaml.Node, path string, depth int) (any, bool) {
	switch n.Kind {
	case yaml.MappingNode:
		es, ok := d.entries(n, path, depth)
		out := make(map[string]any, len(es))
		for _, e := range es {
			p := keyPath(path, e.key, false)
			d.lines[p] = e.line
			v, vok := d.genericChild(e.value, p, depth+1)
			ok = ok && vok
			out[e.key] = v
		}
		return out, ok
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		ok := true
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = item.Line
			v, vok := d.genericChild(item, p, depth+1)
			ok = ok && vok
			out = append(out, v)
		}
		return out, ok
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, true
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err == nil {
				return b, true
			}
		case "!!int":
			var i int64
			if err := n.Decode(&i); err == nil {
				return json.Number(strconv.FormatInt(i, 10)), true
			}
			var u uint64
			if err := n.Decode(&u); err == nil {
				return json.Number(strconv.FormatUint(u, 10)), true
			}
		case "!!float":
			v, err := jsonFloat(n)
			if err != nil {
				d.errorf(n.Line, path, "%s is not a finite number", n.Value)
				return nil, false
			}
			return v, true
		}
		return n.Value, true
	}
	d.errorf(n.Line, path, "unexpected %s", describe(n))
	return nil, false
}

func (d *decoder) genericChild(n *yaml.Node, path string, depth int) (any, bool) {
	n, release, ok := d.enter(n, path, depth)
	if !ok {
		return nil, false
	}
	defer release()
	return d.generic(n, path, depth)
}

// jsonFields maps the JSON names of struct type t's fields (embedded structs'
// fields promoted, as encoding/json does) to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	fields := map[string]reflect.Type{}
	collectFields(t, fields, map[reflect.Type]bool{})
	fieldCache.Store(t, fields)
	return fields
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

func collectFields(t reflect.Type, fields map[string]reflect.Type, visiting map[reflect.Type]bool) {
	if visiting[t] {
		return
	}
	visiting[t] = true
	var embedded []reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if tag == "-" {
			continue
		}
		ft := f.Type
		if f.Anonymous && name == "" {
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	// Shallower fields win over promoted ones, as in encoding/json.
	for _, et := range embedded {
		promoted := map[string]reflect.Type{}
		collectFields(et, promoted, visiting)
		for name, ft := range promoted {
			if _, taken := fields[name]; !taken {
				fields[name] = ft
			}
		}
	}
}
