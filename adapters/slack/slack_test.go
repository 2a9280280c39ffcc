package slack

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

const secret = "8f742231b10e8888abcd99yyyzzz85a5"

var now = time.Unix(1_764_512_400, 0)

func newSource(t testing.TB) *Source {
	t.Helper()
	es := config.EventSource{Metadata: config.ObjectMeta{Name: "app1", Namespace: "slack"}}
	es.Spec.Slack = &config.SlackSource{ToleranceDuration: 5 * time.Minute}
	es.Spec.Slack.Secret = config.NewSecret([]byte(secret))
	s, err := New(es)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// request is a request signed at ts with sig (computed when "").
func request(contentType, body string, ts int64, sig string) *adapters.Request {
	if sig == "" {
		sig = adapterstest.SlackSignature(secret, ts, body)
	}
	h := http.Header{"Content-Type": {contentType}, HeaderSignature: {sig},
		HeaderTimestamp: {strconv.FormatInt(ts, 10)}}
	return &adapters.Request{Header: h, Body: []byte(body), Now: now}
}

func TestHandshakes(t *testing.T) {
	s := newSource(t)
	body := adapterstest.ReadFile(t, "testdata/url_verification.json")
	res, err := s.Handle(request("application/json", body, now.Unix(), ""))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != 0 || res.Response == nil || res.Response.Status != 200 ||
		string(res.Response.Body) != "CHALLENGE_abc123XYZ" || !strings.HasPrefix(res.Response.ContentType, "text/plain") {
		t.Errorf("url_verification: %+v", res.Response)
	}

	res, err = s.Handle(request(adapters.MediaForm, "ssl_check=1&token=x", now.Unix(), ""))
	if err != nil || len(res.Events) != 0 || res.Response.Status != 200 {
		t.Errorf("ssl_check: %+v, %v", res, err)
	}
}

func TestEvents(t *testing.T) {
	mention := adapterstest.ReadFile(t, "testdata/app_mention.json")
	command := adapterstest.ReadFile(t, "testdata/command.form")
	actions := adapterstest.ReadFile(t, "testdata/block_actions.form")
	tests := []struct {
		name, contentType, body string
		wantType, wantSubject   string
		wantID                  string
		wantData                func(map[string]any) bool
	}{{
		name: "app mention", contentType: "application/json", body: mention,
		wantType: "dev.signalbox.slack.event.app_mention", wantSubject: "C0LAN2Q65", wantID: "Ev0LAN670R",
		wantData: func(m map[string]any) bool { return m["event_id"] == "Ev0LAN670R" },
	}, {
		name: "rate limited", contentType: "application/json",
		body:     `{"token":"x","type":"app_rate_limited","team_id":"T1","minute_rate_limited":1518467820,"api_app_id":"A1"}`,
		wantType: "dev.signalbox.slack.app_rate_limited",
	}, {
		name: "slash command", contentType: adapters.MediaForm, body: command,
		wantType: "dev.signalbox.slack.command", wantSubject: "/deploy",
		wantID: "13345224609.738474920.8088930838d88f008e0",
		wantData: func(m map[string]any) bool {
			return m["command"] == "/deploy" && m["text"] == "relay v1.4.0" && m["team_id"] == "T0SIGNALS"
		},
	}, {
		name: "block actions", contentType: "application/x-www-form-urlencoded; charset=utf-8", body: actions,
		wantType: "dev.signalbox.slack.interaction.block_actions", wantID: "12466734323.1395872398",
		wantData: func(m map[string]any) bool { return m["type"] == "block_actions" },
	}}
	s := newSource(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := s.Handle(request(tt.contentType, tt.body, now.Unix()-60, ""))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Events) != 1 || res.Response == nil || res.Response.Status != 200 || len(res.Response.Body) != 0 {
				t.Fatalf("result = %+v", res)
			}
			e := res.Events[0]
			if e.Type() != tt.wantType || e.Subject() != tt.wantSubject || e.Source() != "/slack/eventsources/app1" {
				t.Errorf("type/subject/source = %q %q %q", e.Type(), e.Subject(), e.Source())
			}
			if tt.wantID != "" && (e.ID() != tt.wantID || res.DeliveryID != tt.wantID) {
				t.Errorf("id = %q, delivery = %q, want %q", e.ID(), res.DeliveryID, tt.wantID)
			}
			var data map[string]any
			if err := json.Unmarshal(e.Data(), &data); err != nil || e.DataContentType() != "application/json" {
				t.Fatalf("data %q (%s): %v", e.Data(), e.DataContentType(), err)
			}
			if tt.wantData != nil && !tt.wantData(data) {
				t.Errorf("data = %v", data)
			}
		})
	}
}

func TestRefuses(t *testing.T) {
	body := adapterstest.ReadFile(t, "testdata/url_verification.json")
	stale := now.Add(-10 * time.Minute).Unix()
	tests := []struct {
		name string
		req  *adapters.Request
	}{
		{"BR-08 wrong signature", request("application/json", body, now.Unix(),
			adapterstest.SlackSignature("other", now.Unix(), body))},
		{"BR-08 ten minutes old", request("application/json", body, stale, "")},
		{"from the future", request("application/json", body, now.Add(6*time.Minute).Unix(), "")},
		{"empty signature", request("application/json", body, now.Unix(), "v0=")},
		{"signature for another timestamp", request("application/json", body, now.Unix(),
			adapterstest.SlackSignature(secret, now.Unix()-1, body))},
		{"no timestamp", func() *adapters.Request {
			r := request("application/json", body, now.Unix(), "")
			r.Header.Del(HeaderTimestamp)
			return r
		}()},
		{"no signature", func() *adapters.Request {
			r := request("application/json", body, now.Unix(), "")
			r.Header.Del(HeaderSignature)
			return r
		}()},
	}
	s := newSource(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := s.Handle(tt.req)
			var ae *adapters.Error
			if !errors.As(err, &ae) || ae.Status != 401 {
				t.Fatalf("Handle = %+v, %v; want 401", res, err)
			}
			if strings.Contains(ae.Msg, "CHALLENGE") {
				t.Error("challenge echoed on a refused request")
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	s := newSource(t)
	for _, tc := range []struct{ ct, body string }{
		{"application/json", `{"type":"url_verification"}`},
		{"application/json", `{"type":"event_callback","event":{}}`},
		{"application/json", `[]`},
		{adapters.MediaForm, "text=hi"},
		{adapters.MediaForm, "payload=%7B%7D"},
		{"text/plain", "hello"},
	} {
		_, err := s.Handle(request(tc.ct, tc.body, now.Unix(), ""))
		var ae *adapters.Error
		if !errors.As(err, &ae) || ae.Status/100 != 4 || ae.Status == 401 {
			t.Errorf("%s %q: err = %v, want a 4xx other than 401", tc.ct, tc.body, err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	body := `{"type":"url_verification","challenge":"x"}`
	f.Add(adapterstest.SlackSignature(secret, now.Unix(), body), strconv.FormatInt(now.Unix(), 10), body)
	f.Add("v0=", "", "")
	f.Add("v1=00", "-1", "{}")
	f.Fuzz(func(t *testing.T, sig, ts, body string) {
		if err := Verify(sig, ts, []byte(body), []byte(secret), now, 5*time.Minute); err != nil {
			return
		}
		if !strings.EqualFold(sig, "v0="+adapterstest.HexHMAC256(secret, "v0:", ts, ":", body)) {
			t.Fatalf("accepted %q at %q", sig, ts)
		}
	})
}

func FuzzHandle(f *testing.F) {
	f.Add("application/json", adapterstest.ReadFile(f, "testdata/app_mention.json"))
	f.Add(adapters.MediaForm, adapterstest.ReadFile(f, "testdata/command.form"))
	f.Add(adapters.MediaForm, adapterstest.ReadFile(f, "testdata/block_actions.form"))
	f.Add("application/json", `{"type":"url_verification","challenge":""}`)
	s := newSource(f)
	f.Fuzz(func(t *testing.T, contentType, body string) {
		res, err := s.Handle(request(contentType, body, now.Unix(), ""))
		if err != nil {
			return
		}
		for _, e := range res.Events {
			if err := e.Validate(); err != nil || !json.Valid(e.Data()) {
				t.Fatalf("event %v: %v", e, err)
			}
		}
	})
}
