package config

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem found while loading configuration. Every field but Msg
// may be empty when it is not known: a file that cannot be read has no line, a
// YAML syntax error has no object, a problem with a whole object has no field.
type Error struct {
	// File is the path of the file the problem is in, as given to Load or
	// found in a directory given to Load.
	File string
	// Line is the 1-based line of the offending node; 0 when unknown.
	Line int
	// Object names the object, as "Kind namespace/name" ("Trigger
	// default/orders"); empty when the problem precedes the object.
	Object string
	// Field is the dotted path of the offending field
	// ("spec.delivery.backoffDelay", "spec.filters[1].cesql",
	// "metadata.annotations[key]"); empty for the object as a whole.
	Field string
	// Msg says what is wrong, in lower case.
	Msg string
	// Err is the underlying cause, if any (for example an fs error); it is
	// what Unwrap returns, so errors.Is(err, fs.ErrNotExist) works.
	Err error
}

// Error formats the problem as "file:line: Object: field: msg", leaving out
// the parts that are empty.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Object != "" {
		b.WriteString(e.Object)
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying cause, or nil.
func (e *Error) Unwrap() error { return e.Err }

// ErrorList is every problem found in one load, sorted by file and line. The
// loader returns a non-empty ErrorList as its error, so callers can print one
// line per problem with errors.As.
type ErrorList []*Error

// Error joins the problems, one per line.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems as a slice of errors, for errors.Is and
// errors.As.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// errOrNil sorts the list and returns it as an error, or nil when it is
// empty; a nil ErrorList inside a non-nil error interface would be a trap.
func (l ErrorList) errOrNil() error {
	if len(l) == 0 {
		return nil
	}
	slices.SortStableFunc(l, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
	return l
}
