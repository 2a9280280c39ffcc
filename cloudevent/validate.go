package cloudevent

import (
	"fmt"
	"net/url"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Spec versions accepted.
const (
	V1  = "1.0"
	V03 = "0.3"
)

// contextAttributes are the attribute names defined by the specs, per version;
// any other attribute is an extension.
var contextAttributes = map[string]map[string]bool{
	V1: {"specversion": true, "id": true, "source": true, "type": true, "subject": true, "time": true,
		"datacontenttype": true, "dataschema": true},
	V03: {"specversion": true, "id": true, "source": true, "type": true, "subject": true, "time": true,
		"datacontenttype": true, "schemaurl": true, "datacontentencoding": true},
}

// ValidExtensionName reports whether name is a legal extension attribute name:
// lower-case ASCII letters and digits only.
func ValidExtensionName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// Validate checks an event against the CloudEvents spec and signalbox's
// stricter rules: required attributes present, a known spec version, a
// source that is a URI reference, extension names of [a-z0-9]+ and valid
// UTF-8 in every string attribute. The error names the offending attribute.
func Validate(e *event.Event) error {
	if e.Context == nil {
		return badRequest("missing required attribute \"specversion\"")
	}
	sv := e.SpecVersion()
	if sv != V1 && sv != V03 {
		return badRequest("unsupported specversion %q: use \"1.0\" or \"0.3\"", sv)
	}
	for _, a := range []struct{ name, value string }{{"id", e.ID()}, {"source", e.Source()}, {"type", e.Type()}} {
		if a.value == "" {
			return badRequest("missing required attribute %q", a.name)
		}
		if !utf8.ValidString(a.value) {
			return badRequest("attribute %q is not valid UTF-8", a.name)
		}
	}
	if _, err := url.Parse(e.Source()); err != nil {
		return badRequest("attribute \"source\" is not a URI reference: %q", e.Source())
	}
	for name, v := range e.Extensions() {
		if !ValidExtensionName(name) {
			return badRequest("invalid extension name %q: names are lower-case letters and digits", name)
		}
		if contextAttributes[sv][name] {
			return badRequest("attribute %q is not valid for specversion %s", name, sv)
		}
		if s, ok := v.(string); ok && !utf8.ValidString(s) {
			return badRequest("extension %q is not valid UTF-8", name)
		}
	}
	if err := e.Validate(); err != nil {
		return badRequest("invalid event: %s", flatten(err))
	}
	return nil
}

// flatten turns the sdk's multi-line validation error into one line.
func flatten(err error) string {
	if ve, ok := err.(event.ValidationError); ok {
		s := ""
		for k, v := range ve {
			if s != "" {
				s += "; "
			}
			s += fmt.Sprintf("%s: %v", k, v)
		}
		return s
	}
	return err.Error()
}
