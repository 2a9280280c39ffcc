package config

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	_ "time/tzdata" // conditionsReset time zones must load on hosts without a zoneinfo database

	"github.com/robfig/cron/v3"
)

// Operations of a Parameter.
const (
	OperationOverwrite = "overwrite"
	OperationAppend    = "append"
	OperationPrepend   = "prepend"
)

// DestKind is what part of the outgoing request a Parameter sets.
type DestKind int

// Destinations of a Parameter.
const (
	DestURL          DestKind = iota + 1 // http.url
	DestHeader                           // http.headers.<Name>
	DestBody                             // body, body.<path>
	DestEventType                        // event.type
	DestEventSource                      // event.source
	DestEventSubject                     // event.subject
	DestKubernetes                       // kubernetes.<path>
)

// ParamDest is a parsed Parameter.Dest.
type ParamDest struct {
	Kind DestKind
	// Header is the canonical header name of a DestHeader.
	Header string
	// Path is the field path of a DestBody, empty for the whole data. A
	// segment that is a decimal number indexes an array when the value at
	// that point is one.
	Path []string
	// Field is the manifest path of a DestKubernetes, without the
	// "kubernetes." prefix, as kubernetes.ApplyParameter reads it.
	Field string
}

// TargetKind returns the target kind (TargetHTTP, TargetKubernetes) a
// destination applies to, or "" when it applies to every kind.
func (d ParamDest) TargetKind() string {
	switch d.Kind {
	case DestURL, DestHeader:
		return TargetHTTP
	case DestKubernetes:
		return TargetKubernetes
	}
	return ""
}

// ParseParamDest parses a Parameter's dest: http.url, http.headers.<Name>,
// body, body.<a.b.c>, event.type, event.source, event.subject or
// kubernetes.<path> (a field of the manifest, such as
// kubernetes.spec.template.spec.containers.0.args).
func ParseParamDest(dest string) (ParamDest, error) {
	switch {
	case dest == "":
		return ParamDest{}, fmt.Errorf("missing field: a destination is required (%s)", destForms)
	case dest == "http.url":
		return ParamDest{Kind: DestURL}, nil
	case strings.HasPrefix(dest, "http.headers."):
		name := strings.TrimPrefix(dest, "http.headers.")
		if err := checkHeaderName(name); err != nil {
			return ParamDest{}, err
		}
		return ParamDest{Kind: DestHeader, Header: http.CanonicalHeaderKey(name)}, nil
	case dest == "body":
		return ParamDest{Kind: DestBody}, nil
	case strings.HasPrefix(dest, "body."):
		path := strings.Split(strings.TrimPrefix(dest, "body."), ".")
		if slices.Contains(path, "") {
			return ParamDest{}, fmt.Errorf("invalid body path %q: a field name is empty", dest)
		}
		return ParamDest{Kind: DestBody, Path: path}, nil
	case dest == "event.type":
		return ParamDest{Kind: DestEventType}, nil
	case dest == "event.source":
		return ParamDest{Kind: DestEventSource}, nil
	case dest == "event.subject":
		return ParamDest{Kind: DestEventSubject}, nil
	case strings.HasPrefix(dest, "kubernetes."):
		field := strings.TrimPrefix(dest, "kubernetes.")
		if err := checkManifestPath(field); err != nil {
			return ParamDest{}, err
		}
		return ParamDest{Kind: DestKubernetes, Field: field}, nil
	}
	return ParamDest{}, fmt.Errorf("unknown destination %q (%s)", dest, destForms)
}

const destForms = "http.url, http.headers.<Name>, body, body.<path>, event.type, event.source, event.subject " +
	"or kubernetes.<path>"

// checkHeaderName refuses names that are not HTTP tokens and the headers that
// carry the CloudEvent itself.
func checkHeaderName(name string) error {
	if name == "" || strings.ContainsFunc(name, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r)
	}) {
		return fmt.Errorf("invalid header name %q", name)
	}
	if ck := http.CanonicalHeaderKey(name); ck == "Content-Type" || strings.HasPrefix(ck, "Ce-") {
		return fmt.Errorf("header %q carries the CloudEvent; set the event's attributes with event.type, "+
			"event.source or event.subject instead", name)
	}
	return nil
}

// cronParser reads five-field cron expressions and descriptors (@daily,
// @every 1h). Seconds are not accepted: a reset more often than once a
// minute would be a window.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// scheduleError names the field of a ConditionsReset that is wrong.
type scheduleError struct {
	field string
	err   error
}

func (e *scheduleError) Error() string { return e.field + ": " + e.err.Error() }
func (e *scheduleError) Unwrap() error { return e.err }

// Schedule parses the reset schedule in its time zone (UTC when Timezone is
// empty). The error names the field at fault.
func (r ConditionsReset) Schedule() (cron.Schedule, error) {
	loc := time.UTC
	if r.Timezone != "" {
		l, err := time.LoadLocation(r.Timezone)
		if err != nil || r.Timezone == "Local" {
			return nil, &scheduleError{"timezone", fmt.Errorf("unknown time zone %q (use an IANA name such as "+
				"Europe/Berlin)", r.Timezone)}
		}
		loc = l
	}
	spec := strings.TrimSpace(r.Cron)
	switch {
	case spec == "":
		return nil, &scheduleError{"cron", fmt.Errorf("missing field: a cron expression is required, as in \"0 0 * * *\"")}
	case strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ="):
		return nil, &scheduleError{"cron", fmt.Errorf("set the time zone with the timezone field, not in %q", spec)}
	}
	sched, err := cronParser.Parse(spec)
	if err != nil {
		return nil, &scheduleError{"cron", fmt.Errorf("invalid cron expression %q: %v", spec, err)}
	}
	if s, ok := sched.(*cron.SpecSchedule); ok {
		s.Location = loc
	}
	return sched, nil
}

// WindowDuration returns the parsed window, or 0 when there is none. The
// loader has checked it, so an error means the Correlation was built by
// hand.
func (c *Correlation) WindowDuration() (time.Duration, error) {
	if c == nil || c.Window == "" {
		return 0, nil
	}
	d, err := ParseDuration(c.Window)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, fmt.Errorf("window must be greater than zero, got %q", c.Window)
	}
	return d, nil
}

// ConditionDependencies returns the distinct dependency names a trigger's
// conditions use, in order of first use; for empty conditions, every name in
// deps.
func ConditionDependencies(conditions string, deps []string) ([]string, error) {
	if strings.TrimSpace(conditions) == "" {
		return slices.Clone(deps), nil
	}
	p := condParser{src: conditions}
	names, err := p.parse()
	if err != nil {
		return nil, fmt.Errorf("invalid conditions %q: %w", conditions, err)
	}
	var out []string
	for _, n := range names {
		if !slices.Contains(deps, n) {
			return nil, fmt.Errorf("conditions name unknown dependency %q", n)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}
