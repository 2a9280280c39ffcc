// Package github receives GitHub webhooks (repository, organization and app
// hooks) and emits the CloudEvents Knative's GitHubSource emits for them:
// type dev.knative.source.github.<event>, source the repository's URL, id
// the X-GitHub-Delivery header and a subject that depends on the event.
package github

import (
	"crypto/hmac"
	"crypto/sha1" // GitHub's legacy signature, accepted only when configured
	"crypto/sha256"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/adapters"
	"github.com/signalbox-dev/signalbox/config"
)

// TypePrefix starts the type of every event: the event name follows.
const TypePrefix = "dev.knative.source.github."

// Headers GitHub sends with every delivery.
const (
	HeaderEvent        = "X-GitHub-Event"
	HeaderDelivery     = "X-GitHub-Delivery"
	HeaderSignature256 = "X-Hub-Signature-256"
	HeaderSignatureSHA = "X-Hub-Signature"
)

// Source verifies and converts the deliveries of one GitHub webhook.
type Source struct {
	secret    []byte
	allowSHA1 bool
}

var _ adapters.Source = (*Source)(nil)

// New returns the Source for an EventSource with a github block, which must
// carry a secret.
func New(src config.EventSource) (*Source, error) {
	g := src.Spec.GitHub
	if g == nil {
		return nil, errors.New("github: the EventSource has no github block")
	}
	if g.Secret.IsZero() {
		return nil, errors.New("github: a secret is required")
	}
	return &Source{secret: g.Secret.Reveal(), allowSHA1: g.AllowSHA1}, nil
}

// Handle checks the signature over the raw body, then builds one event. The
// body is JSON, or a form whose payload field holds the JSON, as GitHub sends
// it for hooks set to application/x-www-form-urlencoded.
func (s *Source) Handle(req *adapters.Request) (*adapters.Result, error) {
	if err := s.verify(req.Header, req.Body); err != nil {
		return nil, err
	}
	name := req.Header.Get(HeaderEvent)
	if name == "" {
		return nil, adapters.BadRequest("missing %s header", HeaderEvent)
	}
	if !adapters.TypeSuffix(name) {
		return nil, adapters.BadRequest("invalid %s header", HeaderEvent)
	}
	delivery := req.Header.Get(HeaderDelivery)
	if delivery == "" {
		return nil, adapters.BadRequest("missing %s header", HeaderDelivery)
	}

	payload, err := Payload(req.Header, req.Body)
	if err != nil {
		return nil, err
	}
	obj, err := adapters.ParseObject(payload)
	if err != nil {
		return nil, adapters.BadRequest("%v", err)
	}

	e := adapters.NewEvent(delivery, TypePrefix+name, eventSource(obj))
	if subj := Subject(name, obj); subj != "" {
		e.SetSubject(subj)
	}
	setExtensions(e, obj)
	adapters.SetData(e, adapters.MediaJSON, payload)
	return &adapters.Result{Events: []*event.Event{e}, DeliveryID: delivery}, nil
}

// verify checks X-Hub-Signature-256, or the SHA-1 X-Hub-Signature when that
// is allowed and the SHA-256 header is absent. A missing or empty signature
// is refused like a wrong one.
func (s *Source) verify(h http.Header, body []byte) error {
	sig256 := h.Get(HeaderSignature256)
	if sig256 == "" && s.allowSHA1 && h.Get(HeaderSignatureSHA) != "" {
		digest, err := adapters.ParseHexDigest(h.Get(HeaderSignatureSHA), "sha1=", sha1.Size)
		if err != nil {
			return adapters.Unauthorized("%s header: %v", HeaderSignatureSHA, err)
		}
		if !hmac.Equal(digest, adapters.HMAC(sha1.New, s.secret, body)) {
			return adapters.Unauthorized("%s does not match the body", HeaderSignatureSHA)
		}
		return nil
	}
	digest, err := adapters.ParseHexDigest(sig256, "sha256=", sha256.Size)
	if err != nil {
		return adapters.Unauthorized("%s header: %v", HeaderSignature256, err)
	}
	if !hmac.Equal(digest, adapters.HMAC(sha256.New, s.secret, body)) {
		return adapters.Unauthorized("%s does not match the body", HeaderSignature256)
	}
	return nil
}

// Payload returns the JSON document of a delivery: the body itself, or the
// payload field of a form-encoded body.
func Payload(h http.Header, body []byte) ([]byte, error) {
	switch mt := adapters.MediaType(h.Get("Content-Type")); {
	case mt == "" || adapters.IsJSON(mt):
		return body, nil
	case mt == adapters.MediaForm:
		form, err := adapters.ParseForm(body)
		if err != nil {
			return nil, adapters.BadRequest("%v", err)
		}
		if !form.Has("payload") {
			return nil, adapters.BadRequest("form body has no payload field")
		}
		return []byte(form.Get("payload")), nil
	default:
		return nil, adapters.UnsupportedMediaType(
			"content type %q: GitHub sends application/json or application/x-www-form-urlencoded", mt)
	}
}

// eventSource is the repository's URL, as Knative's source for the
// repository's hook would have it; for organization and app events, the
// account's URL on the same host.
func eventSource(obj adapters.Object) string {
	if u := obj.String("repository.html_url"); u != "" {
		return u
	}
	base := "https://github.com"
	// sender is in nearly every payload and names the GitHub host, which
	// matters for GitHub Enterprise Server.
	if u, err := url.Parse(obj.String("sender.html_url")); err == nil && u.Scheme != "" && u.Host != "" {
		base = u.Scheme + "://" + u.Host
	}
	for _, path := range []string{"organization.login", "installation.account.login"} {
		if login := obj.String(path); login != "" {
			return base + "/" + login
		}
	}
	return base
}

// subjectRule says where an event's subject is in its payload.
type subjectRule struct {
	path string
	// lastSegment keeps only what follows the last "/" of a URL:
	// "a10867b14bb7...000000000000" of a push's compare URL.
	lastSegment bool
}

// subjects follows Knative's GitHub source, event by event.
var subjects = map[string]subjectRule{
	"check_run":                      {path: "check_run.id"},
	"check_suite":                    {path: "check_suite.id"},
	"commit_comment":                 {path: "comment.html_url", lastSegment: true},
	"create":                         {path: "ref_type"},
	"delete":                         {path: "ref_type"},
	"deployment":                     {path: "deployment.id"},
	"deployment_status":              {path: "deployment.id"},
	"fork":                           {path: "forkee.id"},
	"installation":                   {path: "installation.id"},
	"installation_repositories":      {path: "installation.id"},
	"integration_installation":       {path: "installation.id"},
	"issue_comment":                  {path: "comment.html_url", lastSegment: true},
	"issues":                         {path: "issue.number"},
	"label":                          {path: "label.name"},
	"member":                         {path: "member.id"},
	"membership":                     {path: "member.id"},
	"milestone":                      {path: "milestone.number"},
	"organization":                   {path: "action"},
	"org_block":                      {path: "action"},
	"page_build":                     {path: "id"},
	"ping":                           {path: "hook_id"},
	"project":                        {path: "action"},
	"project_card":                   {path: "action"},
	"project_column":                 {path: "action"},
	"public":                         {path: "repository.id"},
	"pull_request":                   {path: "pull_request.number"},
	"pull_request_review":            {path: "review.id"},
	"pull_request_review_comment":    {path: "comment.id"},
	"push":                           {path: "compare", lastSegment: true},
	"release":                        {path: "release.tag_name"},
	"repository":                     {path: "repository.id"},
	"repository_vulnerability_alert": {path: "alert.id"},
	"security_advisory":              {path: "security_advisory.ghsa_id"},
	"status":                         {path: "sha"},
	"team":                           {path: "team.id"},
	"team_add":                       {path: "repository.id"},
	"watch":                          {path: "repository.id"},
}

// Subject returns the subject of an event of the named kind, or "" when the
// event has none.
func Subject(name string, obj adapters.Object) string {
	if name == "gollum" {
		// The wiki pages changed, by name.
		pages, _ := obj.Lookup("pages").([]any)
		var names []string
		for _, p := range pages {
			if page, ok := p.(map[string]any); ok {
				if n := adapters.Object(page).String("page_name"); n != "" {
					names = append(names, n)
				}
			}
		}
		return strings.Join(names, ",")
	}
	rule, ok := subjects[name]
	if !ok {
		return ""
	}
	v := obj.String(rule.path)
	if rule.lastSegment {
		if i := strings.LastIndexByte(v, '/'); i >= 0 {
			return v[i+1:]
		}
		return ""
	}
	return v
}

// setExtensions adds the extensions Knative's source sets on most events,
// so Triggers written for it (on action, for example) keep matching.
func setExtensions(e *event.Event, obj adapters.Object) {
	owner := obj.String("repository.owner.login")
	if owner == "" {
		owner = obj.String("organization.login")
	}
	for name, v := range map[string]string{
		"owner":      owner,
		"repository": obj.String("repository.name"),
		"sender":     obj.String("sender.login"),
		"action":     obj.String("action"),
	} {
		if v != "" {
			e.SetExtension(name, v)
		}
	}
}
