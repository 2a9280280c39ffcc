// Package gitlab receives GitLab webhooks and emits the CloudEvents Knative's
// GitLabSource emits for them: type dev.knative.sources.gitlab.<event>,
// where <event> is the X-Gitlab-Event header in snake case without " Hook"
// ("Merge Request Hook" → merge_request), source the project's URL, and the
// extension comgitlabevent holding the header as sent.
package gitlab

import (
	"errors"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/adapters"
	"github.com/signalbox-dev/signalbox/config"
)

// TypePrefix starts the type of every event.
const TypePrefix = "dev.knative.sources.gitlab."

// Headers GitLab sends.
const (
	HeaderToken = "X-Gitlab-Token"
	HeaderEvent = "X-Gitlab-Event"
	// HeaderEventUUID identifies the event; retries of a delivery repeat it.
	HeaderEventUUID = "X-Gitlab-Event-UUID"
	// HeaderIdempotencyKey is sent by recent GitLab releases and is also
	// stable across retries.
	HeaderIdempotencyKey = "Idempotency-Key"
)

// ExtEvent is the extension carrying the X-Gitlab-Event header.
const ExtEvent = "comgitlabevent"

// Source verifies and converts the deliveries of one GitLab webhook.
type Source struct {
	secret        []byte // empty: no token check
	defaultSource string
}

var _ adapters.Source = (*Source)(nil)

// New returns the Source for an EventSource with a gitlab block. Without a
// secret every request is accepted.
func New(src config.EventSource) (*Source, error) {
	g := src.Spec.GitLab
	if g == nil {
		return nil, errors.New("gitlab: the EventSource has no gitlab block")
	}
	return &Source{
		secret:        g.Secret.Reveal(),
		defaultSource: adapters.DefaultSource(src.Namespace(), src.Name()),
	}, nil
}

// Handle checks X-Gitlab-Token when a secret is configured, then builds one
// event from the JSON body.
func (s *Source) Handle(req *adapters.Request) (*adapters.Result, error) {
	if len(s.secret) > 0 {
		tok := req.Header.Get(HeaderToken)
		if tok == "" {
			return nil, adapters.Unauthorized("missing %s header", HeaderToken)
		}
		if !adapters.EqualSecret([]byte(tok), s.secret) {
			return nil, adapters.Unauthorized("%s does not match", HeaderToken)
		}
	}
	header := req.Header.Get(HeaderEvent)
	kind, ok := EventKind(header)
	if !ok {
		return nil, adapters.BadRequest("%s header %q is not a GitLab event name", HeaderEvent, header)
	}
	if mt := adapters.MediaType(req.Header.Get("Content-Type")); mt != "" && !adapters.IsJSON(mt) {
		return nil, adapters.UnsupportedMediaType("content type %q: GitLab sends application/json", mt)
	}
	obj, err := adapters.ParseObject(req.Body)
	if err != nil {
		return nil, adapters.BadRequest("%v", err)
	}

	id := req.Header.Get(HeaderEventUUID)
	if id == "" {
		id = req.Header.Get(HeaderIdempotencyKey)
	}
	delivery := id
	if id == "" {
		id = adapters.NewID()
	}
	src := obj.String("project.web_url")
	if src == "" {
		src = obj.String("repository.homepage")
	}
	if src == "" {
		src = s.defaultSource
	}

	e := adapters.NewEvent(id, TypePrefix+kind, src)
	e.SetExtension(ExtEvent, header)
	adapters.SetData(e, adapters.MediaJSON, req.Body)
	return &adapters.Result{Events: []*event.Event{e}, DeliveryID: delivery}, nil
}

// EventKind turns an X-Gitlab-Event header into the event part of the type:
// "Push Hook" → "push", "Tag Push Hook" → "tag_push". ok is false for a
// header that is not "<words> Hook".
func EventKind(header string) (kind string, ok bool) {
	words, ok := strings.CutSuffix(header, " Hook")
	if !ok || words == "" || strings.TrimSpace(words) != words || strings.Contains(words, "  ") {
		return "", false
	}
	kind = strings.ToLower(strings.ReplaceAll(words, " ", "_"))
	if !adapters.TypeSuffix(kind) {
		return "", false
	}
	return kind, true
}
