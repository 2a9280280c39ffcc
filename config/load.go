package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
)

// KindEventSource is the kind of event source objects. Their webhook kinds
// are loaded; the others are refused with a clear message.
const KindEventSource = "EventSource"

// kindVersions maps every kind the loader knows to its API version.
var kindVersions = map[string]string{
	KindBroker:      KnativeEventingV1,
	KindTrigger:     KnativeEventingV1,
	KindSensor:      SignalboxV1Alpha1,
	KindEventSource: SignalboxV1Alpha1,
}

// Load reads, validates and cross-checks the objects in paths. Each path is
// a YAML file (read whatever its name) or a directory, whose *.yaml and *.yml
// files are read in name order, not recursively; names starting with "." are
// skipped, which also skips the "..data" entries of a mounted Kubernetes
// ConfigMap while reading its files through their links. A file may hold
// several documents separated by "---"; empty documents are skipped.
//
// Load reports every problem it finds, not only the first: the error is then
// an ErrorList of *Error, each naming file, line, object and field, and the
// Snapshot is nil. Objects get the defaults users rely on: namespace
// "default", a Trigger's spec.broker "default", an HTTP target's method POST.
func Load(paths ...string) (*Snapshot, error) {
	s, _, err := load(paths)
	return s, err
}

// LoadBytes is Load for one file's content, named name in errors and origins.
func LoadBytes(name string, data []byte) (*Snapshot, error) {
	l := newLoader()
	l.file(name, data)
	return l.finish()
}

// load is Load that also returns a digest of every file name and content
// read, so the watcher can tell a real change from a touched file.
func load(paths []string) (*Snapshot, [sha256.Size]byte, error) {
	l := newLoader()
	if len(paths) == 0 {
		l.errs = append(l.errs, &Error{Msg: "no configuration paths given"})
	}
	for _, p := range paths {
		l.path(p)
	}
	var digest [sha256.Size]byte
	l.digest.Sum(digest[:0])
	s, err := l.finish()
	return s, digest, err
}

// loader accumulates the objects and problems of one load.
type loader struct {
	snap   Snapshot
	errs   ErrorList
	digest hash.Hash
	read   map[string]bool // files already read, by absolute path

	defined map[objectKey]Origin
	refs    []brokerRef
}

type objectKey struct{ kind, namespace, name string }

// brokerRef is an object's reference to a broker, checked once all files
// are read since the broker may be defined anywhere.
type brokerRef struct {
	checker   *checker
	namespace string
	broker    string
	defaulted bool
}

func newLoader() *loader {
	return &loader{digest: sha256.New(), read: map[string]bool{}, defined: map[objectKey]Origin{}}
}

func (l *loader) fail(file string, err error, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: file, Msg: fmt.Sprintf(format, args...), Err: err})
}

// path reads one path given to Load.
func (l *loader) path(p string) {
	info, err := os.Stat(p)
	if err != nil {
		l.fail(p, err, "cannot read: %v", unwrapPathError(err))
		return
	}
	if !info.IsDir() {
		l.readFile(p)
		return
	}

	entries, err := os.ReadDir(p)
	if err != nil {
		l.fail(p, err, "cannot read directory: %v", unwrapPathError(err))
		return
	}
	for _, e := range entries { // sorted by name
		name := e.Name()
		ext := strings.ToLower(filepath.Ext(name))
		if strings.HasPrefix(name, ".") || ext != ".yaml" && ext != ".yml" {
			continue
		}
		full := filepath.Join(p, name)
		// Stat follows links: ConfigMap files are links into "..data".
		if info, err := os.Stat(full); err == nil && info.IsDir() {
			continue
		}
		l.readFile(full)
	}
}

func (l *loader) readFile(name string) {
	key := name
	if abs, err := filepath.Abs(name); err == nil {
		key = abs
	}
	if l.read[key] {
		return
	}
	l.read[key] = true

	data, err := os.ReadFile(name)
	if err != nil {
		l.fail(name, err, "cannot read: %v", unwrapPathError(err))
		return
	}
	l.file(name, data)
}

// unwrapPathError drops the path from an *os.PathError: the Error already
// names the file.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// file decodes every document of one file.
func (l *loader) file(name string, data []byte) {
	var size [8]byte
	binary.BigEndian.PutUint64(size[:], uint64(len(name)))
	l.digest.Write(size[:])
	l.digest.Write([]byte(name))
	binary.BigEndian.PutUint64(size[:], uint64(len(data)))
	l.digest.Write(size[:])
	l.digest.Write(data)

	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			// The parser cannot resynchronise after a syntax error, so the
			// rest of the file is not read.
			l.errs = append(l.errs, syntaxError(name, err))
			return
		}
		l.document(name, &doc)
	}
}

var yamlLineError = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlParserProblems are the messages of yaml.v3's parser (as opposed to its
// scanner). For those it prints the 0-based line of the problem, or of the
// start of the mapping or list being parsed, where scanner errors get the
// 1-based line.
var yamlParserProblems = []string{
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"did not find expected node content",
	"did not find expected '-' indicator",
	"did not find expected key",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found undefined tag handle",
	"found duplicate %YAML directive",
	"found duplicate %TAG directive",
	"found incompatible YAML document",
}

// syntaxError turns a YAML syntax error into an *Error with its line.
func syntaxError(file string, err error) *Error {
	msg := err.Error()
	e := &Error{File: file, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: "), Err: err}
	if m := yamlLineError.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = "invalid YAML: " + m[2]
		if slices.Contains(yamlParserProblems, m[2]) {
			e.Line++
		}
	}
	return e
}

// document decodes, validates and records one object.
func (l *loader) document(file string, doc *yaml.Node) {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return // an empty document, or only comments
	}
	if root.Kind != yaml.MappingNode {
		l.errs = append(l.errs, &Error{File: file, Line: root.Line,
			Msg: fmt.Sprintf("expected an object (a YAML mapping), got %s", describe(root))})
		return
	}

	apiVersion := scalarAt(root, "apiVersion")
	kind := scalarAt(root, "kind")
	name := scalarAt(root, "metadata", "name")
	namespace := namespaceOr(scalarAt(root, "metadata", "namespace"))
	label := kind
	if name != "" {
		label = strings.TrimSpace(fmt.Sprintf("%s %s/%s", kind, namespace, name))
	}
	c := &checker{decoder: newDecoder(file, label, root)}
	origin := Origin{File: file, Line: root.Line}
	defer func() {
		// Drop what validation said about fields that decoding refused.
		for i, e := range c.errs {
			if i < c.decodeErrs || !c.related(e.Field) {
				l.errs = append(l.errs, e)
			}
		}
	}()

	if !c.knownKind(apiVersion, kind) {
		return
	}
	var obj any
	switch kind {
	case KindBroker:
		obj = new(eventingv1.Broker)
	case KindTrigger:
		obj = new(eventingv1.Trigger)
	case KindSensor:
		obj = new(Sensor)
	case KindEventSource:
		obj = new(EventSource)
	}
	ok := c.decodeObject(root, obj)
	// Define the name even when the object is broken, so that references to
	// it do not add errors of their own.
	l.define(c, objectKey{kind, namespace, name}, origin)
	if !ok {
		return
	}

	switch o := obj.(type) {
	case *eventingv1.Broker:
		checkBroker(c, o)
		l.snap.Brokers = append(l.snap.Brokers, Broker{Origin: origin, Object: o})
	case *eventingv1.Trigger:
		checkTrigger(c, o)
		l.snap.Triggers = append(l.snap.Triggers, Trigger{Origin: origin, Object: o})
		if o.Spec.BrokerRef == nil {
			l.refs = append(l.refs, brokerRef{c, o.Namespace, o.Spec.Broker, scalarAt(root, "spec", "broker") == ""})
		}
	case *Sensor:
		checkSensor(c, o)
		o.Origin = origin
		l.snap.Sensors = append(l.snap.Sensors, *o)
		if o.Spec.Broker != "" {
			l.refs = append(l.refs, brokerRef{c, o.Metadata.Namespace, o.Spec.Broker, false})
		}
	case *EventSource:
		checkEventSource(c, o)
		o.Origin = origin
		l.snap.EventSources = append(l.snap.EventSources, *o)
		l.refs = append(l.refs, brokerRef{c, o.Metadata.Namespace, o.Spec.Broker, scalarAt(root, "spec", "broker") == ""})
	}
}

// knownKind reports whether the loader handles apiVersion/kind, recording
// why not otherwise.
func (c *checker) knownKind(apiVersion, kind string) bool {
	if apiVersion == "" {
		c.errorf(0, "apiVersion", "missing field: apiVersion is required")
	}
	if kind == "" {
		c.errorf(0, "kind", "missing field: kind is required")
	}
	if apiVersion == "" || kind == "" {
		return false
	}

	want, known := kindVersions[kind]
	switch {
	case !known:
		c.errorf(0, "kind", "unknown kind %q (apiVersion %q); known kinds: %s", kind, apiVersion, knownKindsList())
		return false
	case apiVersion != want:
		c.errorf(0, "apiVersion", "unknown apiVersion %q for kind %s; want %s", apiVersion, kind, want)
		return false
	}
	return true
}

func knownKindsList() string {
	return fmt.Sprintf("%s and %s (%s), %s and %s (%s)",
		KindBroker, KindTrigger, KnativeEventingV1, KindSensor, KindEventSource, SignalboxV1Alpha1)
}

// define records an object's name, refusing a second object of the same
// kind and name in one namespace.
func (l *loader) define(c *checker, key objectKey, origin Origin) {
	if key.name == "" {
		return // reported by validation
	}
	if first, dup := l.defined[key]; dup {
		c.errorf(0, "metadata.name", "duplicate %s %q in namespace %q: also defined at %s:%d",
			key.kind, key.name, key.namespace, first.File, first.Line)
		return
	}
	l.defined[key] = origin
}

// finish checks references between objects and returns the snapshot, or
// every problem found.
func (l *loader) finish() (*Snapshot, error) {
	for _, r := range l.refs {
		if r.checker.related("spec.broker") {
			continue
		}
		if _, ok := l.defined[objectKey{KindBroker, r.namespace, r.broker}]; ok {
			continue
		}
		hint := ""
		if r.defaulted {
			hint = ` (spec.broker defaults to "default")`
		}
		l.errs = append(l.errs, r.checker.problem(0, "spec.broker", "broker %q is not defined in namespace %q%s",
			r.broker, r.namespace, hint))
	}
	if err := l.errs.errOrNil(); err != nil {
		return nil, err
	}
	s := l.snap
	return &s, nil
}

// scalarAt returns the text of the scalar at a path of mapping keys under n,
// or "" when there is none. It is used to name an object before decoding it.
func scalarAt(n *yaml.Node, keys ...string) string {
	for _, k := range keys {
		if n.Kind != yaml.MappingNode {
			return ""
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Kind == yaml.ScalarNode && n.Content[i].Value == k {
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			return ""
		}
		if next.Kind == yaml.AliasNode && next.Alias != nil {
			next = next.Alias
		}
		n = next
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		return ""
	}
	return n.Value
}
