package github

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/adapters"
	"github.com/signalbox-dev/signalbox/adapters/adapterstest"
	"github.com/signalbox-dev/signalbox/config"
)

const secret = "It's a Secret to Everybody"

func newSource(t testing.TB, allowSHA1 bool) *Source {
	t.Helper()
	es := config.EventSource{Metadata: config.ObjectMeta{Name: "repo1", Namespace: "default"}}
	es.Spec.GitHub = &config.GitHubSource{AllowSHA1: allowSHA1}
	es.Spec.GitHub.Secret = config.NewSecret([]byte(secret))
	s, err := New(es)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func request(event, delivery, contentType, body string, sig map[string]string) *adapters.Request {
	h := http.Header{}
	if event != "" {
		h.Set(HeaderEvent, event)
	}
	if delivery != "" {
		h.Set(HeaderDelivery, delivery)
	}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	for k, v := range sig {
		h[http.CanonicalHeaderKey(k)] = []string{v}
	}
	return &adapters.Request{Header: h, Body: []byte(body), Now: time.Now()}
}

func signed(body string) map[string]string {
	return map[string]string{HeaderSignature256: adapterstest.GitHubSignature256(secret, body)}
}

func TestHandleEvents(t *testing.T) {
	push := adapterstest.ReadFile(t, "testdata/push.json")
	pushForm := "payload=" + url.QueryEscape(push)
	br03 := `payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%2C%22repository%22%3A%7B%22full_name%22%3A%22org%2Frepo%22%7D%7D`
	tests := []struct {
		name, event, contentType, body string
		wantType, wantSource, wantSub  string
		wantData                       string
		wantExt                        map[string]string
	}{{
		name: "push as JSON", event: "push", contentType: "application/json", body: push,
		wantType: "dev.knative.source.github.push", wantSource: "https://github.com/octo-org/hello-signals",
		wantSub: "6113728f27ae...0d1a26e67d8f", wantData: push,
		wantExt: map[string]string{"owner": "octo-org", "repository": "hello-signals", "sender": "mona"},
	}, {
		name: "push as a form", event: "push", contentType: "application/x-www-form-urlencoded", body: pushForm,
		wantType: "dev.knative.source.github.push", wantSource: "https://github.com/octo-org/hello-signals",
		wantSub: "6113728f27ae...0d1a26e67d8f", wantData: push,
	}, {
		name: "BR-03 form without repository URL", event: "push", contentType: "application/x-www-form-urlencoded",
		body: br03, wantType: "dev.knative.source.github.push", wantSource: "https://github.com",
		wantData: `{"ref":"refs/heads/main","repository":{"full_name":"org/repo"}}`,
	}, {
		name: "BR-04 ping", event: "ping", contentType: "application/json",
		body:     adapterstest.ReadFile(t, "testdata/ping.json"),
		wantType: "dev.knative.source.github.ping", wantSource: "https://github.com/octo-org/hello-signals",
		wantSub: "123",
	}, {
		name: "release", event: "release", contentType: "application/json",
		body:     adapterstest.ReadFile(t, "testdata/release.json"),
		wantType: "dev.knative.source.github.release", wantSource: "https://github.com/octo-org/hello-signals",
		wantSub: "v1.4.0", wantExt: map[string]string{"action": "published"},
	}, {
		name: "pull request", event: "pull_request", contentType: "application/json; charset=utf-8",
		body:     adapterstest.ReadFile(t, "testdata/pull_request.json"),
		wantType: "dev.knative.source.github.pull_request", wantSource: "https://github.com/octo-org/hello-signals",
		wantSub: "42", wantExt: map[string]string{"action": "opened"},
	}, {
		name: "organization event on GitHub Enterprise", event: "member", contentType: "application/json",
		body:     `{"action":"added","member":{"id":7},"organization":{"login":"corp"},"sender":{"login":"a","html_url":"https://ghe.example.com/a"}}`,
		wantType: "dev.knative.source.github.member", wantSource: "https://ghe.example.com/corp", wantSub: "7",
		wantExt: map[string]string{"owner": "corp", "sender": "a", "action": "added"},
	}, {
		name: "event without a subject rule", event: "workflow_dispatch", contentType: "application/json",
		body:     `{"inputs":{},"ref":"refs/heads/main","repository":{"html_url":"https://github.com/o/r"}}`,
		wantType: "dev.knative.source.github.workflow_dispatch", wantSource: "https://github.com/o/r",
	}}
	s := newSource(t, false)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := s.Handle(request(tt.event, "72d3162e-cc78-11e3-81ab-4c9367dc0958", tt.contentType, tt.body,
				signed(tt.body)))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Events) != 1 || res.DeliveryID != "72d3162e-cc78-11e3-81ab-4c9367dc0958" {
				t.Fatalf("result = %+v", res)
			}
			e := res.Events[0]
			if e.ID() != res.DeliveryID || e.Type() != tt.wantType || e.Source() != tt.wantSource ||
				e.Subject() != tt.wantSub {
				t.Errorf("id/type/source/subject = %q %q %q %q", e.ID(), e.Type(), e.Source(), e.Subject())
			}
			if e.DataContentType() != "application/json" {
				t.Errorf("datacontenttype = %q", e.DataContentType())
			}
			if tt.wantData != "" && string(e.Data()) != tt.wantData {
				t.Errorf("data = %s", e.Data())
			}
			for k, v := range tt.wantExt {
				if got := e.Extensions()[k]; got != v {
					t.Errorf("extension %s = %v, want %q", k, got, v)
				}
			}
			if err := e.Validate(); err != nil {
				t.Errorf("invalid event: %v", err)
			}
		})
	}
}

func TestHandleRefuses(t *testing.T) {
	body := `{"ref":"refs/heads/main"}`
	sha1Only := map[string]string{HeaderSignatureSHA: adapterstest.GitHubSignatureSHA1(secret, body)}
	tests := []struct {
		name        string
		allowSHA1   bool
		event       string
		contentType string
		body        string
		sig         map[string]string
		status      int
	}{
		{"BR-05 unsigned", false, "push", "application/json", body, nil, 401},
		{"BR-05 empty digest", false, "push", "application/json", body, map[string]string{HeaderSignature256: "sha256="}, 401},
		{"empty header", false, "push", "application/json", body, map[string]string{HeaderSignature256: ""}, 401},
		{"BR-05 legacy SHA-1 only", false, "push", "application/json", body, sha1Only, 401},
		{"wrong secret", false, "push", "application/json", body,
			map[string]string{HeaderSignature256: adapterstest.GitHubSignature256("other", body)}, 401},
		{"signature of another body", false, "push", "application/json", body + " ", signed(body), 401},
		{"BR-03 HMAC over the decoded JSON", false, "push", adapters.MediaForm, "payload=" + url.QueryEscape(body),
			signed(body), 401},
		{"sha1 prefix in the sha256 header", false, "push", "application/json", body,
			map[string]string{HeaderSignature256: strings.Replace(signed(body)[HeaderSignature256], "sha256", "sha1", 1)}, 401},
		{"SHA-1 allowed but wrong", true, "push", "application/json", body,
			map[string]string{HeaderSignatureSHA: adapterstest.GitHubSignatureSHA1("other", body)}, 401},
		{"SHA-256 wins over a good SHA-1", true, "push", "application/json", body, map[string]string{
			HeaderSignatureSHA: adapterstest.GitHubSignatureSHA1(secret, body), HeaderSignature256: "sha256=00"}, 401},
		{"no event header", false, "", "application/json", body, signed(body), 400},
		{"event header with a space", false, "pu sh", "application/json", body, signed(body), 400},
		{"not JSON", false, "push", "application/json", "ref=main", signed("ref=main"), 400},
		{"form without payload", false, "push", adapters.MediaForm, "ref=main", signed("ref=main"), 400},
		{"XML", false, "push", "application/xml", "<push/>", signed("<push/>"), 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := newSource(t, tt.allowSHA1).Handle(request(tt.event, "d-1", tt.contentType, tt.body, tt.sig))
			var ae *adapters.Error
			if !errors.As(err, &ae) || ae.Status != tt.status {
				t.Fatalf("Handle = %+v, %v; want status %d", res, err, tt.status)
			}
			if strings.Contains(ae.Msg, secret) || strings.Contains(ae.Msg, adapterstest.HexHMAC256(secret, tt.body)) {
				t.Errorf("message reveals the secret or the expected signature: %s", ae.Msg)
			}
		})
	}
}

func TestHandleSHA1WhenAllowed(t *testing.T) {
	body := `{"ref":"refs/heads/main"}`
	res, err := newSource(t, true).Handle(request("push", "d-1", "application/json", body,
		map[string]string{HeaderSignatureSHA: adapterstest.GitHubSignatureSHA1(secret, body)}))
	if err != nil || len(res.Events) != 1 {
		t.Fatalf("Handle = %+v, %v", res, err)
	}
}

func TestNewRequiresSecret(t *testing.T) {
	es := config.EventSource{}
	es.Spec.GitHub = &config.GitHubSource{}
	if _, err := New(es); err == nil {
		t.Error("New accepted a source without a secret")
	}
}

func TestSubjects(t *testing.T) {
	tests := []struct{ name, payload, want string }{
		{"issue_comment", `{"comment":{"html_url":"https://github.com/o/r/issues/2#issuecomment-393304133"}}`,
			"2#issuecomment-393304133"},
		{"gollum", `{"pages":[{"page_name":"Home"},{"page_name":"Main"}]}`, "Home,Main"},
		{"check_run", `{"check_run":{"id":128620228}}`, "128620228"},
		{"create", `{"ref_type":"tag"}`, "tag"},
		{"push", `{"compare":""}`, ""},
		{"unknown_event", `{"id":1}`, ""},
	}
	for _, tt := range tests {
		obj, err := adapters.ParseObject([]byte(tt.payload))
		if err != nil {
			t.Fatal(err)
		}
		if got := Subject(tt.name, obj); got != tt.want {
			t.Errorf("Subject(%s) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// FuzzHandle checks that no request makes Handle panic and that whatever it
// accepts was signed with the secret.
func FuzzHandle(f *testing.F) {
	push := adapterstest.ReadFile(f, "testdata/push.json")
	for _, seed := range []struct{ ct, body, sig string }{
		{"application/json", push, adapterstest.GitHubSignature256(secret, push)},
		{adapters.MediaForm, "payload=" + url.QueryEscape(push), ""},
		{"application/json", `{"a":1}`, "sha256="},
		{"text/plain", "x", "sha256=zz"},
	} {
		f.Add(seed.ct, seed.body, seed.sig, "push")
	}
	s := newSource(f, false)
	f.Fuzz(func(t *testing.T, contentType, body, sig, event string) {
		req := request(event, "d", contentType, body, map[string]string{HeaderSignature256: sig})
		res, err := s.Handle(req)
		if err != nil {
			return
		}
		if sig != adapterstest.GitHubSignature256(secret, body) &&
			!strings.EqualFold(sig, adapterstest.GitHubSignature256(secret, body)) {
			t.Fatalf("accepted a request with signature %q", sig)
		}
		if len(res.Events) != 1 || !json.Valid(res.Events[0].Data()) {
			t.Fatalf("accepted request gave %+v", res)
		}
	})
}

// FuzzPayload checks the decoding of JSON and form bodies alone.
func FuzzPayload(f *testing.F) {
	f.Add(adapters.MediaForm, "payload=%7B%7D")
	f.Add("application/json", "{}")
	f.Add(adapters.MediaForm, "payload")
	f.Add("multipart/form-data; boundary=x", "--x--")
	f.Fuzz(func(t *testing.T, contentType, body string) {
		h := http.Header{"Content-Type": {contentType}}
		p, err := Payload(h, []byte(body))
		if err == nil && p == nil && body != "" && adapters.MediaType(contentType) != adapters.MediaForm {
			t.Fatalf("no payload for %q", body)
		}
	})
}
