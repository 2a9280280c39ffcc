// Package bitbucket receives Bitbucket Cloud and Bitbucket Server (Data
// Center) webhooks.
//
// Bitbucket Cloud events get the type Knative's BitBucketSource gave them,
// dev.knative.source.bitbucket.<X-Event-Key> (dev.knative.source.bitbucket.
// repo:push), the id of X-Request-UUID and the repository's URL as source.
// Knative had no source for Bitbucket Server, whose events get the type
// dev.signalbox.bitbucketserver.<X-Event-Key>, the id of X-Request-Id, the
// configured source's path as source and "<project key>/<repository slug>" as
// subject. Its "Test connection" request (diagnostics:ping) is answered and
// not forwarded.
package bitbucket

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/adapters"
	"github.com/signalbox-dev/signalbox/config"
)

// Type prefixes of the two flavors.
const (
	TypePrefixCloud  = "dev.knative.source.bitbucket."
	TypePrefixServer = "dev.signalbox.bitbucketserver."
)

// Headers Bitbucket sends.
const (
	HeaderEventKey  = "X-Event-Key"
	HeaderSignature = "X-Hub-Signature"
	// HeaderRequestUUID identifies a Bitbucket Cloud delivery; retries repeat it.
	HeaderRequestUUID = "X-Request-UUID"
	// HeaderHookUUID identifies the Bitbucket Cloud webhook that sent it.
	HeaderHookUUID = "X-Hook-UUID"
	// HeaderRequestID identifies a Bitbucket Server delivery.
	HeaderRequestID = "X-Request-Id"
)

// ExtHookUUID carries X-Hook-UUID on Bitbucket Cloud events.
const ExtHookUUID = "bitbuckethookuuid"

// pingKey is Bitbucket Server's "Test connection" event.
const pingKey = "diagnostics:ping"

// Source verifies and converts the deliveries of one Bitbucket webhook.
type Source struct {
	server        bool
	secret        []byte // empty: no signature check
	defaultSource string
}

var _ adapters.Source = (*Source)(nil)

// New returns the Source for an EventSource with a bitbucket block.
func New(src config.EventSource) (*Source, error) {
	b := src.Spec.Bitbucket
	if b == nil {
		return nil, errors.New("bitbucket: the EventSource has no bitbucket block")
	}
	return &Source{
		server:        b.Flavor == config.BitbucketServer,
		secret:        b.Secret.Reveal(),
		defaultSource: adapters.DefaultSource(src.Namespace(), src.Name()),
	}, nil
}

// Handle checks X-Hub-Signature when a secret is configured, then builds one
// event from the JSON body.
func (s *Source) Handle(req *adapters.Request) (*adapters.Result, error) {
	if len(s.secret) > 0 {
		digest, err := adapters.ParseHexDigest(req.Header.Get(HeaderSignature), "sha256=", sha256.Size)
		if err != nil {
			return nil, adapters.Unauthorized("%s header: %v", HeaderSignature, err)
		}
		if !hmac.Equal(digest, adapters.HMAC(sha256.New, s.secret, req.Body)) {
			return nil, adapters.Unauthorized("%s does not match the body", HeaderSignature)
		}
	}
	key := req.Header.Get(HeaderEventKey)
	if key == "" {
		return nil, adapters.BadRequest("missing %s header", HeaderEventKey)
	}
	if !adapters.TypeSuffix(key) {
		return nil, adapters.BadRequest("invalid %s header", HeaderEventKey)
	}
	if s.server && key == pingKey {
		return &adapters.Result{Response: &adapters.Response{Status: 200}}, nil
	}
	if mt := adapters.MediaType(req.Header.Get("Content-Type")); mt != "" && !adapters.IsJSON(mt) {
		return nil, adapters.UnsupportedMediaType("content type %q: Bitbucket sends application/json", mt)
	}
	obj, err := adapters.ParseObject(req.Body)
	if err != nil {
		return nil, adapters.BadRequest("%v", err)
	}
	if s.server {
		return s.serverEvent(req, key, obj), nil
	}
	return s.cloudEvent(req, key, obj), nil
}

func (s *Source) cloudEvent(req *adapters.Request, key string, obj adapters.Object) *adapters.Result {
	delivery := req.Header.Get(HeaderRequestUUID)
	id := delivery
	if id == "" {
		id = adapters.NewID()
	}
	src := obj.String("repository.links.html.href")
	if src == "" {
		src = s.defaultSource
	}
	e := adapters.NewEvent(id, TypePrefixCloud+key, src)
	if hook := req.Header.Get(HeaderHookUUID); hook != "" {
		e.SetExtension(ExtHookUUID, hook)
	}
	adapters.SetData(e, adapters.MediaJSON, req.Body)
	return &adapters.Result{Events: []*event.Event{e}, DeliveryID: delivery}
}

func (s *Source) serverEvent(req *adapters.Request, key string, obj adapters.Object) *adapters.Result {
	delivery := req.Header.Get(HeaderRequestID)
	id := delivery
	if id == "" {
		id = adapters.NewID()
	}
	e := adapters.NewEvent(id, TypePrefixServer+key, s.defaultSource)
	project, slug := obj.String("repository.project.key"), obj.String("repository.slug")
	if project == "" {
		// Pull request events carry the repository inside the target ref.
		project = obj.String("pullRequest.toRef.repository.project.key")
		slug = obj.String("pullRequest.toRef.repository.slug")
	}
	if project != "" && slug != "" {
		e.SetSubject(project + "/" + slug)
	}
	adapters.SetData(e, adapters.MediaJSON, req.Body)
	return &adapters.Result{Events: []*event.Event{e}, DeliveryID: delivery}
}
