package gitlab

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/adapters"
	"github.com/signalbox-dev/signalbox/adapters/adapterstest"
	"github.com/signalbox-dev/signalbox/config"
)

const secret = "glsecret-token"

func newSource(t testing.TB, secret string) *Source {
	t.Helper()
	es := config.EventSource{Metadata: config.ObjectMeta{Name: "gl", Namespace: "ci"}}
	es.Spec.GitLab = &config.GitLabSource{}
	es.Spec.GitLab.Secret = config.NewSecret([]byte(secret))
	s, err := New(es)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func request(kv ...string) *adapters.Request {
	h := http.Header{"Content-Type": {"application/json"}}
	for i := 0; i+1 < len(kv)-1; i += 2 {
		h[http.CanonicalHeaderKey(kv[i])] = []string{kv[i+1]}
	}
	return &adapters.Request{Header: h, Body: []byte(kv[len(kv)-1]), Now: time.Now()}
}

func TestHandleEvents(t *testing.T) {
	push := adapterstest.ReadFile(t, "testdata/push.json")
	mr := adapterstest.ReadFile(t, "testdata/merge_request.json")
	tests := []struct {
		name                   string
		req                    *adapters.Request
		wantType, wantSource   string
		wantID, wantDeliveryID string
	}{{
		name: "push",
		req: request(HeaderToken, secret, HeaderEvent, "Push Hook",
			HeaderEventUUID, "13792a34-cac6-4fda-95a8-c58e00a3954e", push),
		wantType: "dev.knative.sources.gitlab.push", wantSource: "https://gitlab.example.com/platform/signals",
		wantID: "13792a34-cac6-4fda-95a8-c58e00a3954e", wantDeliveryID: "13792a34-cac6-4fda-95a8-c58e00a3954e",
	}, {
		name: "merge request with only an idempotency key",
		req: request(HeaderToken, secret, HeaderEvent, "Merge Request Hook",
			HeaderIdempotencyKey, "f1b0e6a4-1f0c-4a8e-bb0b-0b1e0c9d2a11", mr),
		wantType: "dev.knative.sources.gitlab.merge_request", wantSource: "https://gitlab.example.com/platform/signals",
		wantID: "f1b0e6a4-1f0c-4a8e-bb0b-0b1e0c9d2a11", wantDeliveryID: "f1b0e6a4-1f0c-4a8e-bb0b-0b1e0c9d2a11",
	}, {
		name:     "system hook without a project",
		req:      request(HeaderToken, secret, HeaderEvent, "System Hook", `{"event_name":"user_create"}`),
		wantType: "dev.knative.sources.gitlab.system", wantSource: "/ci/eventsources/gl",
	}}
	s := newSource(t, secret)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := s.Handle(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			e := res.Events[0]
			if e.Type() != tt.wantType || e.Source() != tt.wantSource || res.DeliveryID != tt.wantDeliveryID {
				t.Errorf("type/source/delivery = %q %q %q", e.Type(), e.Source(), res.DeliveryID)
			}
			if tt.wantID != "" && e.ID() != tt.wantID || e.ID() == "" {
				t.Errorf("id = %q, want %q", e.ID(), tt.wantID)
			}
			if e.Extensions()[ExtEvent] != tt.req.Header.Get(HeaderEvent) {
				t.Errorf("%s = %v", ExtEvent, e.Extensions()[ExtEvent])
			}
			if string(e.Data()) != string(tt.req.Body) {
				t.Error("data differs from the body")
			}
			if err := e.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestHandleRefuses(t *testing.T) {
	push := `{"object_kind":"push"}`
	tests := []struct {
		name   string
		req    *adapters.Request
		status int
	}{
		{"BR-05 no token", request(HeaderEvent, "Push Hook", push), 401},
		{"BR-05 empty token", request(HeaderToken, "", HeaderEvent, "Push Hook", push), 401},
		{"wrong token", request(HeaderToken, secret+"x", HeaderEvent, "Push Hook", push), 401},
		{"prefix of the token", request(HeaderToken, secret[:5], HeaderEvent, "Push Hook", push), 401},
		{"no event header", request(HeaderToken, secret, push), 400},
		{"event header not a hook", request(HeaderToken, secret, HeaderEvent, "Push", push), 400},
		{"not JSON", request(HeaderToken, secret, HeaderEvent, "Push Hook", "push"), 400},
	}
	s := newSource(t, secret)
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

func TestHandleWithoutSecret(t *testing.T) {
	res, err := newSource(t, "").Handle(request(HeaderEvent, "Tag Push Hook", `{"object_kind":"tag_push"}`))
	if err != nil {
		t.Fatal(err)
	}
	if e := res.Events[0]; e.Type() != "dev.knative.sources.gitlab.tag_push" || res.DeliveryID != "" {
		t.Errorf("type %q, delivery %q", e.Type(), res.DeliveryID)
	}
}

func TestEventKind(t *testing.T) {
	for header, want := range map[string]string{
		"Push Hook": "push", "Tag Push Hook": "tag_push", "Merge Request Hook": "merge_request",
		"Job Hook": "job", "Confidential Note Hook": "confidential_note", "Hook": "", " Hook": "",
		"Push  Hook": "", "Push Hook ": "", "Pü Hook": "",
	} {
		got, ok := EventKind(header)
		if got != want || ok != (want != "") {
			t.Errorf("EventKind(%q) = %q, %v; want %q", header, got, ok, want)
		}
	}
}

func FuzzHandle(f *testing.F) {
	f.Add(secret, "Push Hook", adapterstest.ReadFile(f, "testdata/push.json"))
	f.Add("", "Note Hook", "{}")
	f.Add(secret, "x Hook", "[]")
	s := newSource(f, secret)
	f.Fuzz(func(t *testing.T, token, event, body string) {
		res, err := s.Handle(request(HeaderToken, token, HeaderEvent, event, body))
		if err != nil {
			return
		}
		if token != secret {
			t.Fatalf("accepted token %q", token)
		}
		if err := res.Events[0].Validate(); err != nil {
			t.Fatalf("invalid event: %v", err)
		}
	})
}
