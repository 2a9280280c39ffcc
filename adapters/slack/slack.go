// Package slack receives what a Slack app's Request URLs get: Events API
// callbacks (JSON), slash commands and interactive payloads (both
// form-encoded), all signed with the app's signing secret.
//
// Knative has no Slack source, so the types are signalbox's own:
//
//	dev.signalbox.slack.event.<event.type>          Events API (event_callback)
//	dev.signalbox.slack.<type>                      other Events API envelopes (app_rate_limited, ...)
//	dev.signalbox.slack.command                     slash commands; subject: the command
//	dev.signalbox.slack.interaction.<payload.type>  interactive components, shortcuts, modals
//
// The Events API url_verification handshake is answered with its challenge
// and not forwarded; so is the ssl_check of slash commands. Every accepted
// request is answered 200 with an empty body, which Slack shows as nothing.
package slack

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/adapters"
	"github.com/signalbox-dev/signalbox/config"
)

// TypePrefix starts the type of every event.
const TypePrefix = "dev.signalbox.slack."

// Headers Slack signs requests with.
const (
	HeaderSignature = "X-Slack-Signature"
	HeaderTimestamp = "X-Slack-Request-Timestamp"
)

// ok is Slack's answer to every accepted request: a 200 with no body, so a
// slash command posts nothing back to the channel.
var ok = &adapters.Response{Status: 200}

// Source verifies and converts the requests of one Slack app.
type Source struct {
	secret        []byte
	tolerance     time.Duration
	defaultSource string
}

var _ adapters.Source = (*Source)(nil)

// New returns the Source for an EventSource with a slack block, which must
// carry the signing secret.
func New(src config.EventSource) (*Source, error) {
	sl := src.Spec.Slack
	if sl == nil {
		return nil, errors.New("slack: the EventSource has no slack block")
	}
	if sl.Secret.IsZero() {
		return nil, errors.New("slack: a signing secret is required")
	}
	tol := sl.ToleranceDuration
	if tol <= 0 {
		tol = 5 * time.Minute
	}
	return &Source{secret: sl.Secret.Reveal(), tolerance: tol,
		defaultSource: adapters.DefaultSource(src.Namespace(), src.Name())}, nil
}

// Handle checks the v0 signature and its timestamp, then answers the
// handshakes or builds one event.
func (s *Source) Handle(req *adapters.Request) (*adapters.Result, error) {
	if err := Verify(req.Header.Get(HeaderSignature), req.Header.Get(HeaderTimestamp), req.Body,
		s.secret, req.Now, s.tolerance); err != nil {
		return nil, err
	}
	switch mt := adapters.MediaType(req.Header.Get("Content-Type")); {
	case adapters.IsJSON(mt):
		return s.eventsAPI(req.Body)
	case mt == adapters.MediaForm:
		return s.form(req.Body)
	default:
		return nil, adapters.UnsupportedMediaType(
			"content type %q: Slack sends application/json or application/x-www-form-urlencoded", mt)
	}
}

// Verify checks a Slack request signature: "v0=" and the hex HMAC-SHA256 of
// "v0:{timestamp}:{body}", with a timestamp within tolerance of now.
func Verify(signature, timestamp string, body, secret []byte, now time.Time, tolerance time.Duration) error {
	if timestamp == "" {
		return adapters.Unauthorized("missing %s header", HeaderTimestamp)
	}
	digest, err := adapters.ParseHexDigest(signature, "v0=", sha256.Size)
	if err != nil {
		return adapters.Unauthorized("%s header: %v", HeaderSignature, err)
	}
	if err := adapters.CheckTimestamp(timestamp, now, tolerance); err != nil {
		return adapters.Unauthorized("%s: %v", HeaderTimestamp, err)
	}
	want := adapters.HMAC(sha256.New, secret, []byte("v0:"+timestamp+":"), body)
	if !hmac.Equal(digest, want) {
		return adapters.Unauthorized("%s does not match the request", HeaderSignature)
	}
	return nil
}

// eventsAPI handles an Events API request.
func (s *Source) eventsAPI(body []byte) (*adapters.Result, error) {
	obj, err := adapters.ParseObject(body)
	if err != nil {
		return nil, adapters.BadRequest("%v", err)
	}
	kind := obj.String("type")
	switch {
	case kind == "url_verification":
		challenge, _ := obj.Lookup("challenge").(string)
		if challenge == "" {
			return nil, adapters.BadRequest("url_verification without a challenge")
		}
		return &adapters.Result{Response: &adapters.Response{
			Status: 200, ContentType: "text/plain; charset=utf-8", Body: []byte(challenge),
		}}, nil
	case kind == "event_callback":
		inner := obj.String("event.type")
		if !adapters.TypeSuffix(inner) {
			return nil, adapters.BadRequest("event_callback without a valid event.type")
		}
		// event_id is the same on every retry of a callback.
		delivery := obj.String("event_id")
		e := s.event(delivery, TypePrefix+"event."+inner, body)
		if ch := obj.String("event.channel"); ch != "" {
			e.SetSubject(ch)
		}
		return &adapters.Result{Events: []*event.Event{e}, DeliveryID: delivery, Response: ok}, nil
	case adapters.TypeSuffix(kind):
		return &adapters.Result{Events: []*event.Event{s.event("", TypePrefix+kind, body)}, Response: ok}, nil
	}
	return nil, adapters.BadRequest("Events API request without a valid type")
}

// form handles a slash command or an interactive payload.
func (s *Source) form(body []byte) (*adapters.Result, error) {
	fields, err := adapters.ParseForm(body)
	if err != nil {
		return nil, adapters.BadRequest("%v", err)
	}
	switch {
	case fields.Has("payload"):
		payload := []byte(fields.Get("payload"))
		obj, err := adapters.ParseObject(payload)
		if err != nil {
			return nil, adapters.BadRequest("interactive payload: %v", err)
		}
		kind := obj.String("type")
		if !adapters.TypeSuffix(kind) {
			return nil, adapters.BadRequest("interactive payload without a valid type")
		}
		delivery := obj.String("trigger_id")
		e := s.event(delivery, TypePrefix+"interaction."+kind, payload)
		if id := obj.String("callback_id"); id != "" {
			e.SetSubject(id)
		} else if id := obj.String("view.callback_id"); id != "" {
			e.SetSubject(id)
		}
		return &adapters.Result{Events: []*event.Event{e}, DeliveryID: delivery, Response: ok}, nil
	case fields.Get("ssl_check") == "1":
		return &adapters.Result{Response: ok}, nil
	case fields.Get("command") != "":
		delivery := fields.Get("trigger_id")
		e := s.event(delivery, TypePrefix+"command", adapters.FormJSON(fields))
		e.SetSubject(fields.Get("command"))
		return &adapters.Result{Events: []*event.Event{e}, DeliveryID: delivery, Response: ok}, nil
	}
	return nil, adapters.BadRequest("form body is neither a slash command nor an interactive payload")
}

// event builds an event with JSON data, with id as its id, or a random one.
func (s *Source) event(id, typ string, data []byte) *event.Event {
	if id == "" {
		id = adapters.NewID()
	}
	e := adapters.NewEvent(id, typ, s.defaultSource)
	adapters.SetData(e, adapters.MediaJSON, data)
	return e
}
