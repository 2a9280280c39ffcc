package bitbucket

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/adapters"
	"github.com/signalbox-dev/signalbox/adapters/adapterstest"
	"github.com/signalbox-dev/signalbox/config"
)

const secret = "bb-secret"

func newSource(t testing.TB, flavor, secret string) *Source {
	t.Helper()
	es := config.EventSource{Metadata: config.ObjectMeta{Name: "bb", Namespace: "default"}}
	es.Spec.Bitbucket = &config.BitbucketSource{Flavor: flavor}
	es.Spec.Bitbucket.Secret = config.NewSecret([]byte(secret))
	s, err := New(es)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func request(body string, kv ...string) *adapters.Request {
	h := http.Header{"Content-Type": {"application/json; charset=UTF-8"}}
	for i := 0; i+1 < len(kv); i += 2 {
		h[http.CanonicalHeaderKey(kv[i])] = []string{kv[i+1]}
	}
	return &adapters.Request{Header: h, Body: []byte(body), Now: time.Now()}
}

func TestHandleCloud(t *testing.T) {
	body := adapterstest.ReadFile(t, "testdata/cloud_push.json")
	for _, withSecret := range []bool{false, true} {
		sec, sig := "", ""
		if withSecret {
			sec, sig = secret, adapterstest.BitbucketSignature(secret, body)
		}
		res, err := newSource(t, "", sec).Handle(request(body, HeaderEventKey, "repo:push",
			HeaderRequestUUID, "3e1c5e46-5f6a-4b4e-9b1c-8b8b0f4b6a2d", HeaderHookUUID, "{hook-1}", HeaderSignature, sig))
		if err != nil {
			t.Fatal(err)
		}
		e := res.Events[0]
		if e.Type() != "dev.knative.source.bitbucket.repo:push" || e.Source() != "https://bitbucket.org/teamsignals/relay" ||
			e.ID() != "3e1c5e46-5f6a-4b4e-9b1c-8b8b0f4b6a2d" || res.DeliveryID != e.ID() {
			t.Errorf("type/source/id = %q %q %q", e.Type(), e.Source(), e.ID())
		}
		if e.Extensions()[ExtHookUUID] != "{hook-1}" {
			t.Errorf("extensions = %v", e.Extensions())
		}
		if err := e.Validate(); err != nil {
			t.Error(err)
		}
	}
}

func TestHandleServer(t *testing.T) {
	body := adapterstest.ReadFile(t, "testdata/server_refs_changed.json")
	s := newSource(t, config.BitbucketServer, secret)
	res, err := s.Handle(request(body, HeaderEventKey, "repo:refs_changed", HeaderRequestID, "a4bd3ab1-d9a7-4a6c-9cb4-3d0d1e6d0f23",
		HeaderSignature, adapterstest.BitbucketSignature(secret, body)))
	if err != nil {
		t.Fatal(err)
	}
	e := res.Events[0]
	if e.Type() != "dev.signalbox.bitbucketserver.repo:refs_changed" || e.Source() != "/default/eventsources/bb" ||
		e.Subject() != "SIG/relay" || e.ID() != "a4bd3ab1-d9a7-4a6c-9cb4-3d0d1e6d0f23" {
		t.Errorf("type/source/subject/id = %q %q %q %q", e.Type(), e.Source(), e.Subject(), e.ID())
	}

	ping := `{"test": true}`
	res, err = s.Handle(request(ping, HeaderEventKey, "diagnostics:ping",
		HeaderSignature, adapterstest.BitbucketSignature(secret, ping)))
	if err != nil || len(res.Events) != 0 || res.Response == nil || res.Response.Status != 200 {
		t.Errorf("ping: %+v, %v", res, err)
	}
}

func TestHandleRefuses(t *testing.T) {
	body := `{"eventKey":"repo:refs_changed","repository":{"slug":"r","project":{"key":"P"}}}`
	tests := []struct {
		name   string
		req    *adapters.Request
		status int
	}{
		{"BR-05 server without signature", request(body, HeaderEventKey, "repo:refs_changed"), 401},
		{"empty signature", request(body, HeaderEventKey, "repo:refs_changed", HeaderSignature, "sha256="), 401},
		{"wrong signature", request(body, HeaderEventKey, "repo:refs_changed",
			HeaderSignature, adapterstest.BitbucketSignature("other", body)), 401},
		{"unsigned ping", request(`{}`, HeaderEventKey, "diagnostics:ping"), 401},
		{"no event key", request(body, HeaderSignature, adapterstest.BitbucketSignature(secret, body)), 400},
		{"not JSON", request("x", HeaderEventKey, "repo:refs_changed",
			HeaderSignature, adapterstest.BitbucketSignature(secret, "x")), 400},
	}
	s := newSource(t, config.BitbucketServer, secret)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Handle(tt.req)
			var ae *adapters.Error
			if !errors.As(err, &ae) || ae.Status != tt.status {
				t.Fatalf("err = %v, want status %d", err, tt.status)
			}
		})
	}
}

func FuzzHandle(f *testing.F) {
	body := adapterstest.ReadFile(f, "testdata/server_refs_changed.json")
	f.Add(body, "repo:refs_changed", adapterstest.BitbucketSignature(secret, body), true)
	f.Add(`{}`, "pr:opened", "sha256=", false)
	f.Add(`[]`, "diagnostics:ping", "", true)
	server, cloud := newSource(f, config.BitbucketServer, secret), newSource(f, config.BitbucketCloud, secret)
	f.Fuzz(func(t *testing.T, body, key, sig string, isServer bool) {
		s := cloud
		if isServer {
			s = server
		}
		res, err := s.Handle(request(body, HeaderEventKey, key, HeaderSignature, sig))
		if err != nil {
			return
		}
		got, err := hex.DecodeString(strings.TrimPrefix(sig, "sha256="))
		if !strings.HasPrefix(sig, "sha256=") || err != nil ||
			!bytes.Equal(got, adapters.HMAC(sha256.New, []byte(secret), []byte(body))) {
			t.Fatalf("accepted signature %q", sig)
		}
		for _, e := range res.Events {
			if err := e.Validate(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
