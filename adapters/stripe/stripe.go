// Package stripe receives Stripe webhook events, signed with the endpoint's
// secret in the Stripe-Signature header.
//
// Knative has no Stripe source; an event gets the type
// dev.signalbox.stripe.<type> (dev.signalbox.stripe.payment_intent.succeeded),
// Stripe's event id (evt_...) as id, so Stripe's retries deduplicate, the
// configured source's path as source, the id of data.object as subject and,
// for Connect events, the account in the extension stripeaccount.
package stripe

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/adapters"
	"github.com/signalbox-dev/signalbox/config"
)

// TypePrefix starts the type of every event.
const TypePrefix = "dev.signalbox.stripe."

// HeaderSignature is the header Stripe signs requests with.
const HeaderSignature = "Stripe-Signature"

// ExtAccount carries the connected account of a Connect event.
const ExtAccount = "stripeaccount"

// maxSignatures bounds the v1 signatures checked per request: Stripe sends
// one per active secret, a handful at most during a rotation.
const maxSignatures = 8

// Source verifies and converts the deliveries of one Stripe endpoint.
type Source struct {
	secret        []byte
	tolerance     time.Duration
	defaultSource string
}

var _ adapters.Source = (*Source)(nil)

// New returns the Source for an EventSource with a stripe block, which must
// carry the endpoint's signing secret.
func New(src config.EventSource) (*Source, error) {
	st := src.Spec.Stripe
	if st == nil {
		return nil, errors.New("stripe: the EventSource has no stripe block")
	}
	if st.Secret.IsZero() {
		return nil, errors.New("stripe: a signing secret is required")
	}
	tol := st.ToleranceDuration
	if tol <= 0 {
		tol = 300 * time.Second
	}
	return &Source{secret: st.Secret.Reveal(), tolerance: tol,
		defaultSource: adapters.DefaultSource(src.Namespace(), src.Name())}, nil
}

// Handle checks Stripe-Signature against the raw body, then builds one
// event.
func (s *Source) Handle(req *adapters.Request) (*adapters.Result, error) {
	if err := Verify(req.Header.Get(HeaderSignature), req.Body, s.secret, req.Now, s.tolerance); err != nil {
		return nil, err
	}
	if mt := adapters.MediaType(req.Header.Get("Content-Type")); mt != "" && !adapters.IsJSON(mt) {
		return nil, adapters.UnsupportedMediaType("content type %q: Stripe sends application/json", mt)
	}
	obj, err := adapters.ParseObject(req.Body)
	if err != nil {
		return nil, adapters.BadRequest("%v", err)
	}
	id, kind := obj.String("id"), obj.String("type")
	if id == "" {
		return nil, adapters.BadRequest("event without an id")
	}
	if !adapters.TypeSuffix(kind) {
		return nil, adapters.BadRequest("event without a valid type")
	}

	e := adapters.NewEvent(id, TypePrefix+kind, s.defaultSource)
	if subj := obj.String("data.object.id"); subj != "" {
		e.SetSubject(subj)
	}
	if acct := obj.String("account"); acct != "" {
		e.SetExtension(ExtAccount, acct)
	}
	adapters.SetData(e, adapters.MediaJSON, req.Body)
	return &adapters.Result{Events: []*event.Event{e}, DeliveryID: id}, nil
}

// Signature is a parsed Stripe-Signature header.
type Signature struct {
	// Timestamp is the t= value, unix seconds as text.
	Timestamp string
	// V1 are the decoded v1= digests; other schemes are ignored.
	V1 [][]byte
}

// ParseSignature parses "t=<unix>,v1=<hex>[,v1=<hex>...][,v0=...]". It
// needs exactly one t and at least one well-formed v1; malformed v1 values
// next to good ones are skipped, as a rotation may list them in any order.
func ParseSignature(header string) (*Signature, error) {
	if header == "" {
		return nil, errors.New("missing")
	}
	var sig Signature
	seenT := false
	for item := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return nil, errors.New("malformed")
		}
		switch k {
		case "t":
			if seenT {
				return nil, errors.New("more than one timestamp")
			}
			seenT = true
			sig.Timestamp = v
		case "v1":
			if len(sig.V1) == maxSignatures {
				return nil, errors.New("too many v1 signatures")
			}
			if d, err := adapters.ParseHexDigest(v, "", sha256.Size); err == nil {
				sig.V1 = append(sig.V1, d)
			}
		}
	}
	if !seenT || sig.Timestamp == "" {
		return nil, errors.New("no timestamp")
	}
	if len(sig.V1) == 0 {
		return nil, errors.New("no v1 signature")
	}
	return &sig, nil
}

// Verify checks a Stripe-Signature header: its timestamp must be within
// tolerance of now and one of its v1 digests must be the HMAC-SHA256 of
// "{t}.{body}" under secret. Every v1 digest is compared, so a delivery
// signed with an old and a new secret during a rotation is accepted whatever
// their order.
func Verify(header string, body, secret []byte, now time.Time, tolerance time.Duration) error {
	sig, err := ParseSignature(header)
	if err != nil {
		return adapters.Unauthorized("%s header: %v", HeaderSignature, err)
	}
	if err := adapters.CheckTimestamp(sig.Timestamp, now, tolerance); err != nil {
		return adapters.Unauthorized("%s: %v", HeaderSignature, err)
	}
	want := adapters.HMAC(sha256.New, secret, []byte(sig.Timestamp+"."), body)
	match := false
	for _, d := range sig.V1 {
		match = hmac.Equal(d, want) || match
	}
	if !match {
		return adapters.Unauthorized("no %s v1 signature matches the body", HeaderSignature)
	}
	return nil
}
