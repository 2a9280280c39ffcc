package stripe

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/adapters"
	"github.com/signalbox-dev/signalbox/adapters/adapterstest"
	"github.com/signalbox-dev/signalbox/config"
)

const secret = "whsec_test"

var now = time.Unix(1_764_512_400, 0)

func newSource(t testing.TB) *Source {
	t.Helper()
	es := config.EventSource{Metadata: config.ObjectMeta{Name: "payments", Namespace: "shop"}}
	es.Spec.Stripe = &config.StripeSource{ToleranceDuration: 300 * time.Second}
	es.Spec.Stripe.Secret = config.NewSecret([]byte(secret))
	s, err := New(es)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func request(sig, body string) *adapters.Request {
	h := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	if sig != "" {
		h.Set(HeaderSignature, sig)
	}
	return &adapters.Request{Header: h, Body: []byte(body), Now: now}
}

// TestRotationAndRawBody is BR-06: the HMAC is over the exact bytes, and
// any one of several v1 signatures may match.
func TestRotationAndRawBody(t *testing.T) {
	body := adapterstest.ReadFile(t, "testdata/br06.json")
	minified := `{"type":"payment_intent.succeeded","id":"evt_1","data":{"object":{"amount":2000,"description":"Café"}}}`
	ts := strconv.FormatInt(now.Unix(), 10)
	good := adapterstest.StripeV1(secret, now.Unix(), body)
	zeros := strings.Repeat("0", 64)
	tests := []struct {
		name, sig string
		ok        bool
	}{
		{"a: one good v1", "t=" + ts + ",v1=" + good, true},
		{"b: zeros then good", "t=" + ts + ",v1=" + zeros + ",v1=" + good, true},
		{"c: good then zeros", "t=" + ts + ",v1=" + good + ",v1=" + zeros, true},
		{"with a v0 and spaces", "t=" + ts + ", v1=" + good + ", v0=" + zeros, true},
		{"d: HMAC over the minified body", "t=" + ts + ",v1=" + adapterstest.StripeV1(secret, now.Unix(), minified), false},
		{"e: v0 only", "t=" + ts + ",v0=" + good, false},
		{"no timestamp", "v1=" + good, false},
		{"two timestamps", "t=" + ts + ",t=" + ts + ",v1=" + good, false},
		{"empty v1", "t=" + ts + ",v1=", false},
		{"stale", "t=" + strconv.FormatInt(now.Unix()-301, 10) + ",v1=" +
			adapterstest.StripeV1(secret, now.Unix()-301, body), false},
		{"future", "t=" + strconv.FormatInt(now.Unix()+301, 10) + ",v1=" +
			adapterstest.StripeV1(secret, now.Unix()+301, body), false},
		{"old timestamp with the current signature", "t=" + strconv.FormatInt(now.Unix()-1, 10) + ",v1=" + good, false},
		{"missing header", "", false},
		{"other secret", "t=" + ts + ",v1=" + adapterstest.StripeV1("whsec_other", now.Unix(), body), false},
	}
	s := newSource(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := s.Handle(request(tt.sig, body))
			if !tt.ok {
				var ae *adapters.Error
				if !errors.As(err, &ae) || ae.Status != 401 {
					t.Fatalf("Handle = %+v, %v; want 401", res, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			e := res.Events[0]
			if e.ID() != "evt_1" || res.DeliveryID != "evt_1" || e.Type() != "dev.signalbox.stripe.payment_intent.succeeded" {
				t.Errorf("id/type = %q %q", e.ID(), e.Type())
			}
			if string(e.Data()) != body {
				t.Errorf("data = %s, want the body byte for byte", e.Data())
			}
			var data struct {
				Data struct {
					Object struct {
						Description string `json:"description"`
					} `json:"object"`
				} `json:"data"`
			}
			if err := json.Unmarshal(e.Data(), &data); err != nil || data.Data.Object.Description != "Café" {
				t.Errorf("description = %q (%v)", data.Data.Object.Description, err)
			}
		})
	}
}

func TestEventAttributes(t *testing.T) {
	body := adapterstest.ReadFile(t, "testdata/payment_intent.json")
	res, err := newSource(t).Handle(request(adapterstest.StripeSignature(secret, now, body), body))
	if err != nil {
		t.Fatal(err)
	}
	e := res.Events[0]
	if e.ID() != "evt_3QwErTyUiOp1234" || e.Subject() != "pi_3QwErTyUiOp5678" || e.Source() != "/shop/eventsources/payments" {
		t.Errorf("id/subject/source = %q %q %q", e.ID(), e.Subject(), e.Source())
	}
	if _, ok := e.Extensions()[ExtAccount]; ok {
		t.Error("stripeaccount set on an event without an account")
	}

	connect := `{"id":"evt_2","type":"account.updated","account":"acct_1Abc","data":{"object":{"id":"acct_1Abc"}}}`
	res, err = newSource(t).Handle(request(adapterstest.StripeSignature(secret, now, connect), connect))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Events[0].Extensions()[ExtAccount]; got != "acct_1Abc" {
		t.Errorf("stripeaccount = %v", got)
	}
}

func TestBadEvents(t *testing.T) {
	for _, body := range []string{`{"type":"x"}`, `{"id":"evt_1"}`, `{"id":"evt_1","type":"a b"}`, `[]`} {
		_, err := newSource(t).Handle(request(adapterstest.StripeSignature(secret, now, body), body))
		var ae *adapters.Error
		if !errors.As(err, &ae) || ae.Status != 400 {
			t.Errorf("%s: err = %v, want 400", body, err)
		}
	}
}

func TestParseSignatureLimits(t *testing.T) {
	h := "t=1" + strings.Repeat(",v1="+strings.Repeat("a", 64), maxSignatures+1)
	if _, err := ParseSignature(h); err == nil {
		t.Error("accepted more than maxSignatures signatures")
	}
}

func FuzzParseSignature(f *testing.F) {
	f.Add("t=1764512400,v1=" + strings.Repeat("ab", 32) + ",v0=00")
	f.Add("t=,v1=")
	f.Add(",,,=")
	f.Fuzz(func(t *testing.T, header string) {
		sig, err := ParseSignature(header)
		if err != nil {
			return
		}
		if sig.Timestamp == "" || len(sig.V1) == 0 || len(sig.V1) > maxSignatures {
			t.Fatalf("accepted %q as %+v", header, sig)
		}
	})
}

func FuzzVerify(f *testing.F) {
	body := adapterstest.ReadFile(f, "testdata/br06.json")
	f.Add(adapterstest.StripeSignature(secret, now, body), body)
	f.Add("t=0,v1=00", "{}")
	f.Fuzz(func(t *testing.T, header, body string) {
		if err := Verify(header, []byte(body), []byte(secret), now, 300*time.Second); err != nil {
			return
		}
		sig, err := ParseSignature(header)
		if err != nil {
			t.Fatal(err)
		}
		want := adapterstest.HexHMAC256(secret, sig.Timestamp, ".", body)
		if !strings.Contains(strings.ToLower(header), want) {
			t.Fatalf("accepted %q", header)
		}
	})
}
