// Package webhook receives any HTTP POST and turns it into one CloudEvent.
//
// The event's data is the body: JSON bodies are kept byte for byte (and must
// parse), form-encoded bodies become a JSON object of their fields (a field
// given once is a string, one repeated a list of strings) so that filters can
// read them, and any other body is kept as is with its Content-Type. Selected
// request headers are copied into extension attributes, never into the data.
//
// A source may require a bearer token (Authorization: Bearer <token>) or an
// HMAC of the raw body in a header of its choosing.
package webhook

import (
	"crypto/hmac"
	"crypto/sha1" // some senders still sign with it; chosen per source
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/adapters"
	"github.com/signalbox-dev/signalbox/config"
)

// DefaultType is the type of events when the source sets none.
const DefaultType = "dev.signalbox.webhook.received"

// Source verifies and converts the requests of one generic webhook.
type Source struct {
	typ, source string
	idHeader    string
	headers     map[string]string // header → extension
	bearer      []byte
	mac         *macCheck
}

type macCheck struct {
	secret   []byte
	header   string
	newHash  func() hash.Hash
	prefix   string
	encoding string
}

var _ adapters.Source = (*Source)(nil)

var hashes = map[string]func() hash.Hash{"sha1": sha1.New, "sha256": sha256.New, "sha512": sha512.New}

// New returns the Source for an EventSource with a webhook block.
func New(src config.EventSource) (*Source, error) {
	w := src.Spec.Webhook
	if w == nil {
		return nil, errors.New("webhook: the EventSource has no webhook block")
	}
	s := &Source{
		typ:      w.EventType,
		source:   w.EventSource,
		idHeader: w.IDHeader,
		headers:  maps.Clone(w.Headers),
	}
	if s.typ == "" {
		s.typ = DefaultType
	}
	if s.source == "" {
		s.source = adapters.DefaultSource(src.Namespace(), src.Name())
	}
	if b := w.BearerToken; b != nil {
		if b.Secret.IsZero() {
			return nil, errors.New("webhook: bearerToken has no secret")
		}
		s.bearer = b.Secret.Reveal()
	}
	if h := w.HMAC; h != nil {
		alg := h.Algorithm
		if alg == "" {
			alg = "sha256"
		}
		newHash, ok := hashes[alg]
		if !ok {
			return nil, fmt.Errorf("webhook: unknown hmac algorithm %q", alg)
		}
		if h.Secret.IsZero() || h.Header == "" {
			return nil, errors.New("webhook: hmac needs a secret and a header")
		}
		s.mac = &macCheck{secret: h.Secret.Reveal(), header: h.Header, newHash: newHash, prefix: h.Prefix,
			encoding: h.Encoding}
	}
	return s, nil
}

// Handle authenticates the request when the source asks for it, then builds
// one event from the body.
func (s *Source) Handle(req *adapters.Request) (*adapters.Result, error) {
	if err := s.authenticate(req); err != nil {
		return nil, err
	}
	ct, data, err := Data(req.Header.Get("Content-Type"), req.Body)
	if err != nil {
		return nil, err
	}

	delivery := ""
	if s.idHeader != "" {
		delivery = req.Header.Get(s.idHeader)
	}
	id := delivery
	if id == "" {
		id = adapters.NewID()
	}
	e := adapters.NewEvent(id, s.typ, s.source)
	for _, header := range slices.Sorted(maps.Keys(s.headers)) {
		v := strings.Join(req.Header.Values(header), ",")
		if v == "" {
			continue
		}
		if !utf8.ValidString(v) {
			return nil, adapters.BadRequest("header %s is not valid UTF-8", header)
		}
		e.SetExtension(s.headers[header], v)
	}
	if len(data) > 0 {
		adapters.SetData(e, ct, data)
	}
	return &adapters.Result{Events: []*event.Event{e}, DeliveryID: delivery}, nil
}

func (s *Source) authenticate(req *adapters.Request) error {
	switch {
	case s.bearer != nil:
		auth := req.Header.Get("Authorization")
		scheme, token, _ := strings.Cut(auth, " ")
		token = strings.TrimSpace(token)
		if !strings.EqualFold(scheme, "Bearer") || token == "" {
			return adapters.Unauthorized("missing bearer token")
		}
		if !adapters.EqualSecret([]byte(token), s.bearer) {
			return adapters.Unauthorized("wrong bearer token")
		}
	case s.mac != nil:
		digest, err := s.mac.parse(req.Header.Get(s.mac.header))
		if err != nil {
			return adapters.Unauthorized("%s header: %v", s.mac.header, err)
		}
		if !hmac.Equal(digest, adapters.HMAC(s.mac.newHash, s.mac.secret, req.Body)) {
			return adapters.Unauthorized("%s does not match the body", s.mac.header)
		}
	}
	return nil
}

// parse decodes a signature header: the configured prefix, then the digest
// in hex or base64.
func (m *macCheck) parse(v string) ([]byte, error) {
	size := m.newHash().Size()
	if m.encoding != "base64" {
		return adapters.ParseHexDigest(v, m.prefix, size)
	}
	if v == "" {
		return nil, errors.New("missing")
	}
	digest, ok := strings.CutPrefix(v, m.prefix)
	if !ok {
		return nil, fmt.Errorf("does not start with %q", m.prefix)
	}
	if digest == "" {
		return nil, errors.New("empty digest")
	}
	b, err := base64.StdEncoding.DecodeString(digest)
	if err != nil {
		b, err = base64.URLEncoding.DecodeString(digest)
	}
	if err != nil || len(b) != size {
		return nil, errors.New("digest is not base64 of the right length")
	}
	return b, nil
}

// Data returns the event data for a body and its Content-Type: JSON kept as
// is (and checked), a form turned into a JSON object, anything else kept with
// its own media type (application/octet-stream when there is none). An empty
// body gives no data.
func Data(contentType string, body []byte) (string, []byte, error) {
	if len(body) == 0 {
		return "", nil, nil
	}
	if !utf8.ValidString(contentType) {
		return "", nil, adapters.BadRequest("Content-Type is not valid UTF-8")
	}
	mt := adapters.MediaType(contentType)
	switch {
	case adapters.IsJSON(mt):
		if !json.Valid(body) {
			return "", nil, adapters.BadRequest("body is not valid JSON")
		}
		return contentType, body, nil
	case mt == adapters.MediaForm:
		form, err := adapters.ParseForm(body)
		if err != nil {
			return "", nil, adapters.BadRequest("%v", err)
		}
		return adapters.MediaJSON, adapters.FormJSON(form), nil
	case contentType == "":
		return "application/octet-stream", body, nil
	}
	return contentType, body, nil
}
