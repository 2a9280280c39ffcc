package webhook

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/adapters"
	"github.com/signalbox-dev/signalbox/adapters/adapterstest"
	"github.com/signalbox-dev/signalbox/config"
)

func source(t testing.TB, w *config.WebhookSource) *Source {
	t.Helper()
	es := config.EventSource{Metadata: config.ObjectMeta{Name: "start", Namespace: "generic"}}
	es.Spec.Webhook = w
	s, err := New(es)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func secretRef(v string) config.SecretRef {
	return config.SecretRef{SecretFrom: "env:X", Secret: config.NewSecret([]byte(v))}
}

func request(body string, kv ...string) *adapters.Request {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return &adapters.Request{Header: h, Body: []byte(body), Now: time.Now()}
}

func TestBodies(t *testing.T) {
	tests := []struct {
		name, contentType, body string
		wantCT, wantData        string
	}{
		{"JSON kept byte for byte", "application/json", `{"b": 1,  "a":[]}`, "application/json", `{"b": 1,  "a":[]}`},
		{"JSON with parameters", "application/json; charset=utf-8", `[1]`, "application/json; charset=utf-8", `[1]`},
		{"vendor JSON", "application/vnd.acme+json", `{}`, "application/vnd.acme+json", `{}`},
		{"form becomes an object", "application/x-www-form-urlencoded", "a=1&b=x&b=y",
			"application/json", `{"a":"1","b":["x","y"]}`},
		{"text", "text/plain", "hello", "text/plain", "hello"},
		{"raw without a type", "", "\x00\x01", "application/octet-stream", "\x00\x01"},
		{"multipart kept as is", "multipart/form-data; boundary=x", "--x\r\n\r\nv\r\n--x--",
			"multipart/form-data; boundary=x", "--x\r\n\r\nv\r\n--x--"},
		{"empty", "application/json", "", "", ""},
	}
	s := source(t, &config.WebhookSource{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := s.Handle(request(tt.body, "Content-Type", tt.contentType))
			if err != nil {
				t.Fatal(err)
			}
			e := res.Events[0]
			if e.DataContentType() != tt.wantCT || string(e.Data()) != tt.wantData {
				t.Errorf("data = %q (%q), want %q (%q)", e.Data(), e.DataContentType(), tt.wantData, tt.wantCT)
			}
			if e.Type() != DefaultType || e.Source() != "/generic/eventsources/start" || res.DeliveryID != "" {
				t.Errorf("type/source/delivery = %q %q %q", e.Type(), e.Source(), res.DeliveryID)
			}
			if err := e.Validate(); err != nil {
				t.Error(err)
			}
		})
	}

	for _, bad := range []struct{ ct, body string }{
		{"application/json", `{"a":`},
		{"application/x-www-form-urlencoded", "a=%zz"},
	} {
		_, err := s.Handle(request(bad.body, "Content-Type", bad.ct))
		var ae *adapters.Error
		if !errors.As(err, &ae) || ae.Status != 400 {
			t.Errorf("%s %q: err = %v, want 400", bad.ct, bad.body, err)
		}
	}
}

// TestDistinctIDs is part of BR-15: identical requests are distinct events.
func TestDistinctIDs(t *testing.T) {
	s := source(t, &config.WebhookSource{})
	a, _ := s.Handle(request(`{}`, "Content-Type", "application/json"))
	b, _ := s.Handle(request(`{}`, "Content-Type", "application/json"))
	if a.Events[0].ID() == b.Events[0].ID() {
		t.Error("two requests got the same id")
	}
}

func TestIDHeaderAndExtensions(t *testing.T) {
	s := source(t, &config.WebhookSource{
		EventType: "com.example.build.finished", EventSource: "https://ci.example.com", IDHeader: "X-Delivery",
		Headers: map[string]string{"X-Build-Id": "buildid", "X-Tags": "tags", "X-Absent": "absent"},
	})
	res, err := s.Handle(request(`{"ok":true}`, "Content-Type", "application/json", "X-Delivery", "d-17",
		"X-Build-Id", "b-9", "X-Tags", "a", "X-Tags", "b"))
	if err != nil {
		t.Fatal(err)
	}
	e := res.Events[0]
	if e.ID() != "d-17" || res.DeliveryID != "d-17" || e.Type() != "com.example.build.finished" ||
		e.Source() != "https://ci.example.com" {
		t.Errorf("id/type/source = %q %q %q", e.ID(), e.Type(), e.Source())
	}
	ext := e.Extensions()
	if ext["buildid"] != "b-9" || ext["tags"] != "a,b" || ext["absent"] != nil {
		t.Errorf("extensions = %v", ext)
	}
	if string(e.Data()) != `{"ok":true}` {
		t.Errorf("headers leaked into the data: %s", e.Data())
	}

	if _, err := s.Handle(request(`{}`, "X-Build-Id", "\xff")); err == nil {
		t.Error("accepted a header that is not UTF-8")
	}
}

func TestAuthentication(t *testing.T) {
	bearer := source(t, &config.WebhookSource{BearerToken: &config.SecretRef{Secret: config.NewSecret([]byte("tok-123"))}})
	hexMAC := source(t, &config.WebhookSource{HMAC: &config.WebhookHMAC{SecretRef: secretRef("k"),
		Header: "X-Signature", Prefix: "sha256=", Algorithm: "sha256", Encoding: "hex"}})
	b64MAC := source(t, &config.WebhookSource{HMAC: &config.WebhookHMAC{SecretRef: secretRef("k"),
		Header: "X-Sig", Algorithm: "sha512", Encoding: "base64"}})
	body := `{"seq":1}`
	m := hmac.New(sha512.New, []byte("k"))
	m.Write([]byte(body))
	sig512 := base64.StdEncoding.EncodeToString(m.Sum(nil))

	tests := []struct {
		name string
		src  *Source
		req  *adapters.Request
		ok   bool
	}{
		{"bearer", bearer, request(body, "Authorization", "Bearer tok-123"), true},
		{"bearer lower-case scheme", bearer, request(body, "Authorization", "bearer tok-123"), true},
		{"no bearer", bearer, request(body), false},
		{"empty bearer", bearer, request(body, "Authorization", "Bearer "), false},
		{"wrong bearer", bearer, request(body, "Authorization", "Bearer tok-124"), false},
		{"basic", bearer, request(body, "Authorization", "Basic dG9rLTEyMw=="), false},
		{"hex hmac", hexMAC, request(body, "X-Signature", "sha256="+adapterstest.HexHMAC256("k", body)), true},
		{"hex hmac without prefix", hexMAC, request(body, "X-Signature", adapterstest.HexHMAC256("k", body)), false},
		{"empty hmac", hexMAC, request(body, "X-Signature", "sha256="), false},
		{"no hmac", hexMAC, request(body), false},
		{"wrong hmac", hexMAC, request(body, "X-Signature", "sha256="+adapterstest.HexHMAC256("j", body)), false},
		{"base64 sha512", b64MAC, request(body, "X-Sig", sig512), true},
		{"base64 of a sha256", b64MAC, request(body, "X-Sig", base64.StdEncoding.EncodeToString(make([]byte, 32))), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.src.Handle(tt.req)
			if tt.ok && err != nil {
				t.Fatal(err)
			}
			var ae *adapters.Error
			if !tt.ok && (!errors.As(err, &ae) || ae.Status != 401) {
				t.Fatalf("err = %v, want 401", err)
			}
		})
	}
}

func FuzzData(f *testing.F) {
	f.Add("application/json", `{"a":1}`)
	f.Add("application/x-www-form-urlencoded", "a=1&a=2")
	f.Add("text/plain; charset=\xff", "x")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, contentType, body string) {
		ct, data, err := Data(contentType, []byte(body))
		if err != nil {
			return
		}
		if adapters.IsJSON(adapters.MediaType(ct)) && !json.Valid(data) {
			t.Fatalf("JSON data %q is not valid", data)
		}
		if len(body) > 0 && len(data) == 0 {
			t.Fatalf("lost the body %q", body)
		}
	})
}

func FuzzHMACHeader(f *testing.F) {
	f.Add("sha256=" + adapterstest.HexHMAC256("k", "{}"))
	f.Add("sha256=")
	f.Add("")
	s := source(f, &config.WebhookSource{HMAC: &config.WebhookHMAC{SecretRef: secretRef("k"),
		Header: "X-Signature", Prefix: "sha256=", Algorithm: "sha256", Encoding: "hex"}})
	want := "sha256=" + adapterstest.HexHMAC256("k", "{}")
	f.Fuzz(func(t *testing.T, sig string) {
		if _, err := s.Handle(request("{}", "X-Signature", sig)); err != nil {
			return
		}
		if !strings.HasPrefix(sig, "sha256=") || !strings.EqualFold(sig, want) {
			t.Fatalf("accepted %q", sig)
		}
	})
}
