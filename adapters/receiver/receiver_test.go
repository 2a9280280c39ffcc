package receiver_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/adapters/adapterstest"
	"github.com/signalbox-dev/signalbox/broker/redisbus"
	"github.com/signalbox-dev/signalbox/config"
)

const defaultTopic = "default/default"

// want describes the one event a request must store.
type want struct {
	topic, typ, source, id, subject string
}

// TestProviders sends each provider a correctly signed delivery in its real
// shape, then the same delivery unsigned, wrongly signed, with an empty
// signature and (where the provider signs a timestamp) a stale one: the
// first is stored as the documented CloudEvent, the others get 401 and
// store nothing.
func TestProviders(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOptions{})
	now := time.Now()
	stale := now.Add(-10 * time.Minute)
	ts := func(tm time.Time) string { return strconv.FormatInt(tm.Unix(), 10) }

	push := adapterstest.ReadFile(t, "../github/testdata/push.json")
	glPush := adapterstest.ReadFile(t, "../gitlab/testdata/push.json")
	bbServer := adapterstest.ReadFile(t, "../bitbucket/testdata/server_refs_changed.json")
	bbCloud := adapterstest.ReadFile(t, "../bitbucket/testdata/cloud_push.json")
	mention := adapterstest.ReadFile(t, "../slack/testdata/app_mention.json")
	command := adapterstest.ReadFile(t, "../slack/testdata/command.form")
	intent := adapterstest.ReadFile(t, "../stripe/testdata/payment_intent.json")
	generic := `{"build":17,"status":"green"}`

	type attempt struct {
		name    string
		headers []string
		status  int
	}
	tests := []struct {
		name, path, body string
		headers          []string // common to every attempt
		good             []string // the valid signature headers
		want             want
		bad              []attempt
	}{{
		name: "github push", path: "default/repo1", body: push,
		headers: []string{"Content-Type", "application/json", "X-GitHub-Event", "push",
			"X-GitHub-Delivery", "7b2f0c1a-cd2b-11f0-8e3c-5f0a7f8d9e10", "User-Agent", "GitHub-Hookshot/1"},
		good: []string{"X-Hub-Signature-256", adapterstest.GitHubSignature256(githubSecret, push)},
		want: want{defaultTopic, "dev.knative.source.github.push", "https://github.com/octo-org/hello-signals",
			"7b2f0c1a-cd2b-11f0-8e3c-5f0a7f8d9e10", "6113728f27ae...0d1a26e67d8f"},
		bad: []attempt{
			{"unsigned", nil, 401},
			{"wrong", []string{"X-Hub-Signature-256", adapterstest.GitHubSignature256("wrong", push)}, 401},
			{"empty", []string{"X-Hub-Signature-256", "sha256="}, 401},
			{"sha1 only", []string{"X-Hub-Signature", adapterstest.GitHubSignatureSHA1(githubSecret, push)}, 401},
		},
	}, {
		name: "gitlab push", path: "ops/gl", body: glPush,
		headers: []string{"Content-Type", "application/json", "X-Gitlab-Event", "Push Hook",
			"X-Gitlab-Event-UUID", "13792a34-cac6-4fda-95a8-c58e00a3954e"},
		good: []string{"X-Gitlab-Token", gitlabSecret},
		want: want{"ops/ci", "dev.knative.sources.gitlab.push", "https://gitlab.example.com/platform/signals",
			"13792a34-cac6-4fda-95a8-c58e00a3954e", ""},
		bad: []attempt{
			{"no token", nil, 401},
			{"empty token", []string{"X-Gitlab-Token", ""}, 401},
			{"wrong token", []string{"X-Gitlab-Token", "gl-token-19c3"}, 401},
		},
	}, {
		name: "bitbucket server", path: "default/bbs", body: bbServer,
		headers: []string{"Content-Type", "application/json; charset=UTF-8", "X-Event-Key", "repo:refs_changed",
			"X-Request-Id", "a4bd3ab1-d9a7-4a6c-9cb4-3d0d1e6d0f23"},
		good: []string{"X-Hub-Signature", adapterstest.BitbucketSignature(bitbucketSecret, bbServer)},
		want: want{defaultTopic, "dev.signalbox.bitbucketserver.repo:refs_changed", "/default/eventsources/bbs",
			"a4bd3ab1-d9a7-4a6c-9cb4-3d0d1e6d0f23", "SIG/relay"},
		bad: []attempt{
			{"unsigned", nil, 401},
			{"wrong", []string{"X-Hub-Signature", adapterstest.BitbucketSignature("x", bbServer)}, 401},
			{"empty", []string{"X-Hub-Signature", "sha256="}, 401},
		},
	}, {
		name: "bitbucket cloud without a secret", path: "default/bbc", body: bbCloud,
		headers: []string{"Content-Type", "application/json", "X-Event-Key", "repo:push",
			"X-Request-UUID", "3e1c5e46-5f6a-4b4e-9b1c-8b8b0f4b6a2d", "X-Hook-UUID", "{hook}"},
		want: want{defaultTopic, "dev.knative.source.bitbucket.repo:push", "https://bitbucket.org/teamsignals/relay",
			"3e1c5e46-5f6a-4b4e-9b1c-8b8b0f4b6a2d", ""},
	}, {
		name: "slack app mention", path: "default/app1", body: mention,
		headers: []string{"Content-Type", "application/json", "X-Slack-Request-Timestamp", ts(now)},
		good:    []string{"X-Slack-Signature", adapterstest.SlackSignature(slackSecret, now.Unix(), mention)},
		want:    want{defaultTopic, "dev.signalbox.slack.event.app_mention", "/default/eventsources/app1", "Ev0LAN670R", "C0LAN2Q65"},
		bad: []attempt{
			{"unsigned", nil, 401},
			{"wrong", []string{"X-Slack-Signature", adapterstest.SlackSignature("x", now.Unix(), mention)}, 401},
			{"empty", []string{"X-Slack-Signature", "v0="}, 401},
		},
	}, {
		name: "slack stale timestamp", path: "default/app1", body: mention,
		headers: []string{"Content-Type", "application/json", "X-Slack-Request-Timestamp", ts(stale),
			"X-Slack-Signature", adapterstest.SlackSignature(slackSecret, stale.Unix(), mention)},
		bad: []attempt{{"stale", nil, 401}},
	}, {
		name: "slack slash command", path: "default/app1", body: command,
		headers: []string{"Content-Type", "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp", ts(now)},
		good:    []string{"X-Slack-Signature", adapterstest.SlackSignature(slackSecret, now.Unix(), command)},
		want: want{defaultTopic, "dev.signalbox.slack.command", "/default/eventsources/app1",
			"13345224609.738474920.8088930838d88f008e0", "/deploy"},
	}, {
		name: "stripe", path: "default/payments", body: intent,
		headers: []string{"Content-Type", "application/json; charset=utf-8"},
		good:    []string{"Stripe-Signature", adapterstest.StripeSignature(stripeSecret, now, intent)},
		want: want{defaultTopic, "dev.signalbox.stripe.payment_intent.succeeded", "/default/eventsources/payments",
			"evt_3QwErTyUiOp1234", "pi_3QwErTyUiOp5678"},
		bad: []attempt{
			{"unsigned", nil, 401},
			{"wrong", []string{"Stripe-Signature", adapterstest.StripeSignature("whsec_x", now, intent)}, 401},
			{"empty", []string{"Stripe-Signature", "t=" + ts(now) + ",v1="}, 401},
			{"stale", []string{"Stripe-Signature", adapterstest.StripeSignature(stripeSecret, stale, intent)}, 401},
		},
	}, {
		name: "generic webhook with HMAC", path: "default/signed", body: generic,
		headers: []string{"Content-Type", "application/json", "X-Delivery", "build-17", "X-Build-Id", "17"},
		good:    []string{"X-Signature", "sha256=" + adapterstest.HexHMAC256(hmacSecret, generic)},
		want:    want{defaultTopic, "dev.signalbox.webhook.received", "/default/eventsources/signed", "build-17", ""},
		bad: []attempt{
			{"unsigned", nil, 401},
			{"wrong", []string{"X-Signature", "sha256=" + adapterstest.HexHMAC256("x", generic)}, 401},
			{"empty", []string{"X-Signature", "sha256="}, 401},
		},
	}, {
		name: "generic webhook with a bearer token", path: "default/bearer", body: generic,
		headers: []string{"Content-Type", "application/json", "X-Delivery", "build-18"},
		good:    []string{"Authorization", "Bearer " + bearerToken},
		want:    want{defaultTopic, "dev.signalbox.webhook.received", "/default/eventsources/bearer", "build-18", ""},
		bad: []attempt{
			{"no token", nil, 401},
			{"wrong", []string{"Authorization", "Bearer x" + bearerToken}, 401},
			{"empty", []string{"Authorization", "Bearer "}, 401},
		},
	}}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topic := tt.want.topic
			if topic == "" {
				topic = defaultTopic
			}
			for _, a := range tt.bad {
				r := f.post(t, tt.path, tt.body, append(slices.Clone(tt.headers), a.headers...)...)
				if r.status != a.status {
					t.Errorf("%s: status %d %s, want %d", a.name, r.status, r.body, a.status)
				}
				if strings.Contains(r.body, "secret") && strings.Contains(r.body, githubSecret) {
					t.Errorf("%s: answer reveals the secret", a.name)
				}
			}
			if got := f.stored(t, topic, 100*time.Millisecond); len(got) != 0 {
				t.Fatalf("refused requests stored %d events", len(got))
			}
			if tt.want.typ == "" {
				return
			}

			r := f.post(t, tt.path, tt.body, append(slices.Clone(tt.headers), tt.good...)...)
			if r.status/100 != 2 {
				t.Fatalf("signed request: %d %s", r.status, r.body)
			}
			got := f.stored(t, topic, 2*time.Second)
			if len(got) != 1 {
				t.Fatalf("stored %d events, want 1", len(got))
			}
			e := got[0]
			w := tt.want
			if e.Type() != w.typ || e.Source() != w.source || e.ID() != w.id || e.Subject() != w.subject {
				t.Errorf("type/source/id/subject = %q %q %q %q, want %q %q %q %q",
					e.Type(), e.Source(), e.ID(), e.Subject(), w.typ, w.source, w.id, w.subject)
			}
			if e.Extensions()["knativearrivaltime"] == nil || e.Extensions()["knativebrokerttl"] != "255" {
				t.Errorf("ingress extensions missing: %v", e.Extensions())
			}
			if !json.Valid(e.Data()) {
				t.Errorf("data is not JSON: %q", e.Data())
			}
		})
	}

	// Nothing at debug level, the requests' included, shows a secret or a
	// valid signature.
	logs := f.logs.String()
	for _, s := range []string{githubSecret, gitlabSecret, bitbucketSecret, slackSecret, stripeSecret, hmacSecret,
		bearerToken, adapterstest.HexHMAC256(githubSecret, push)} {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain %q", s)
		}
	}
	if !strings.Contains(logs, "webhook request") {
		t.Error("no debug line per request")
	}
}

// TestHandshakes is BR-04 and BR-08: GitHub's ping is accepted (stored as
// a ping, never as a push) and Slack's url_verification echoes the
// challenge at once without storing anything.
func TestHandshakes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOptions{})
	ping := adapterstest.ReadFile(t, "../github/testdata/ping.json")
	pingHeaders := []string{"Content-Type", "application/json", "X-GitHub-Event", "ping",
		"X-GitHub-Delivery", "0b9b7d60-cd2c-11f0-9a6e-2f5b3c1d4e5f", "X-GitHub-Hook-ID", "123"}

	r := f.post(t, "default/repo1", ping, append(slices.Clone(pingHeaders),
		"X-Hub-Signature-256", adapterstest.GitHubSignature256("wrong", ping))...)
	if r.status != 401 {
		t.Errorf("ping with a wrong signature: %d", r.status)
	}
	r = f.post(t, "default/repo1", ping, append(slices.Clone(pingHeaders),
		"X-Hub-Signature-256", adapterstest.GitHubSignature256(githubSecret, ping))...)
	if r.status != 200 && r.status != 202 {
		t.Fatalf("ping: %d %s", r.status, r.body)
	}
	got := f.stored(t, defaultTopic, 2*time.Second)
	if len(got) != 1 || got[0].Type() != "dev.knative.source.github.ping" || got[0].Subject() != "123" {
		t.Fatalf("ping stored as %v", got)
	}

	slack := adapterstest.ReadFile(t, "../slack/testdata/url_verification.json")
	now := time.Now()
	start := time.Now()
	r = f.post(t, "default/app1", slack, "Content-Type", "application/json",
		"X-Slack-Request-Timestamp", strconv.FormatInt(now.Unix(), 10),
		"X-Slack-Signature", adapterstest.SlackSignature(slackSecret, now.Unix(), slack))
	if r.status != 200 || r.body != "CHALLENGE_abc123XYZ" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Errorf("url_verification: %d %q %q", r.status, r.header.Get("Content-Type"), r.body)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("url_verification took %v", d)
	}
	for _, bad := range []struct {
		name string
		ts   time.Time
		key  string
	}{{"wrong signature", now, "wrong"}, {"ten minutes old", now.Add(-10 * time.Minute), slackSecret}} {
		r = f.post(t, "default/app1", slack, "Content-Type", "application/json",
			"X-Slack-Request-Timestamp", strconv.FormatInt(bad.ts.Unix(), 10),
			"X-Slack-Signature", adapterstest.SlackSignature(bad.key, bad.ts.Unix(), slack))
		if r.status != 401 || strings.Contains(r.body, "CHALLENGE") {
			t.Errorf("%s: %d %q", bad.name, r.status, r.body)
		}
	}

	bbPing := `{"test":true}`
	r = f.post(t, "default/bbs", bbPing, "Content-Type", "application/json", "X-Event-Key", "diagnostics:ping",
		"X-Hub-Signature", adapterstest.BitbucketSignature(bitbucketSecret, bbPing))
	if r.status != 200 {
		t.Errorf("bitbucket server ping: %d", r.status)
	}
	if got := f.stored(t, defaultTopic, 200*time.Millisecond); len(got) != 0 {
		t.Errorf("handshakes stored %d events", len(got))
	}
}

// TestFormEncodedGitHubAndFilter is BR-03: the form body is verified as
// sent, its payload becomes the event data, and the source's filter drops
// other branches with a 2xx.
func TestFormEncodedGitHubAndFilter(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOptions{})
	send := func(delivery, body string) response {
		return f.post(t, "default/repo-main", body, "Content-Type", "application/x-www-form-urlencoded",
			"X-GitHub-Event", "push", "X-GitHub-Delivery", delivery,
			"X-Hub-Signature-256", adapterstest.GitHubSignature256(githubSecret, body))
	}
	body := `payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%2C%22repository%22%3A%7B%22full_name%22%3A%22org%2Frepo%22%7D%7D`
	if r := send("11111111-2222-3333-4444-555555555555", body); r.status/100 != 2 {
		t.Fatalf("form push: %d %s", r.status, r.body)
	}
	got := f.stored(t, defaultTopic, 2*time.Second)
	if len(got) != 1 {
		t.Fatalf("stored %d events", len(got))
	}
	var data map[string]any
	if err := json.Unmarshal(got[0].Data(), &data); err != nil {
		t.Fatalf("data %q: %v", got[0].Data(), err)
	}
	if data["ref"] != "refs/heads/main" || got[0].DataContentType() != "application/json" {
		t.Errorf("data = %v (%s)", data, got[0].DataContentType())
	}

	other := "payload=" + url.QueryEscape(`{"ref":"refs/heads/dev"}`)
	if r := send("66666666-2222-3333-4444-555555555555", other); r.status != 200 || !strings.Contains(r.body, "filtered") {
		t.Errorf("filtered push: %d %s", r.status, r.body)
	}
	if got := f.stored(t, defaultTopic, 200*time.Millisecond); len(got) != 0 {
		t.Errorf("filtered push stored")
	}
	if n := f.metric(t, "signalbox_webhook_filtered_total", map[string]string{"source": "default/repo-main"}); n != 1 {
		t.Errorf("filtered_total = %v", n)
	}
}

// TestSizeLimits is BR-09: the configured limit holds for announced,
// chunked and form bodies alike, and a body under it arrives intact.
func TestSizeLimits(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOptions{})
	half := `{"blob":"` + strings.Repeat("a", 524000) + `"}`
	if r := f.post(t, "default/start", half, "Content-Type", "application/json"); r.status != 202 {
		t.Fatalf("512 KiB: %d %s", r.status, r.body)
	}
	got := f.stored(t, defaultTopic, 2*time.Second)
	if len(got) != 1 || sha256.Sum256(got[0].Data()) != sha256.Sum256([]byte(half)) {
		t.Fatalf("512 KiB body not stored intact (%d events)", len(got))
	}

	big := `{"blob":"` + strings.Repeat("a", 2<<20) + `"}`
	if r := f.post(t, "default/start", big, "Content-Type", "application/json"); r.status != 413 {
		t.Errorf("2 MiB: %d", r.status)
	}
	// An io.Reader without a length makes the client send it chunked.
	req, _ := http.NewRequest(http.MethodPost, f.url+"/default/start", io.MultiReader(strings.NewReader(big)))
	req.Header.Set("Content-Type", "application/json")
	if r := do(t, req); r.status != 413 || req.ContentLength != 0 {
		t.Errorf("2 MiB chunked: %d (content length %d)", r.status, req.ContentLength)
	}
	if r := f.post(t, "default/tiny", "a=123456789", "Content-Type", "application/x-www-form-urlencoded"); r.status != 413 {
		t.Errorf("form over 8 bytes: %d", r.status)
	}
	multipart := "--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n123456789\r\n--x--\r\n"
	if r := f.post(t, "default/tiny", multipart, "Content-Type", "multipart/form-data; boundary=x"); r.status != 413 {
		t.Errorf("multipart over 8 bytes: %d", r.status)
	}
	if r := f.post(t, "default/tiny", `{"a":1}`, "Content-Type", "application/json"); r.status != 202 {
		t.Errorf("7 bytes: %d", r.status)
	}
	if got := f.stored(t, defaultTopic, 2*time.Second); len(got) != 1 || string(got[0].Data()) != `{"a":1}` {
		t.Errorf("stored %v, want only the 7-byte body", got)
	}
}

// TestConcurrentDeliveries is BR-15: concurrent requests, identical bodies
// included, are each stored once with a distinct id.
func TestConcurrentDeliveries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOptions{})
	const n = 200
	var wg sync.WaitGroup
	statuses := make([]int, n+2)
	for i := range n + 2 {
		body := fmt.Sprintf(`{"seq":%d}`, i)
		if i >= n {
			body = `{}` // two identical bodies
		}
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, f.url+"/default/start", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for i, s := range statuses {
		if s != 202 {
			t.Fatalf("request %d: %d", i, s)
		}
	}
	got := f.stored(t, defaultTopic, 2*time.Second)
	ids, seqs := map[string]bool{}, map[float64]bool{}
	for _, e := range got {
		ids[e.ID()] = true
		var d map[string]float64
		_ = json.Unmarshal(e.Data(), &d)
		if s, ok := d["seq"]; ok {
			seqs[s] = true
		}
	}
	if len(got) != n+2 || len(ids) != n+2 || len(seqs) != n {
		t.Errorf("stored %d events, %d distinct ids, %d distinct seq values", len(got), len(ids), len(seqs))
	}

	release := adapterstest.ReadFile(t, "../github/testdata/release.json")
	for i := range 3 {
		wg.Go(func() {
			r := f.post(t, "default/repo1", release, "Content-Type", "application/json", "X-GitHub-Event", "release",
				"X-GitHub-Delivery", fmt.Sprintf("release-%d", i),
				"X-Hub-Signature-256", adapterstest.GitHubSignature256(githubSecret, release))
			if r.status != 202 {
				t.Errorf("release %d: %d", i, r.status)
			}
		})
	}
	wg.Wait()
	if got := f.stored(t, defaultTopic, 2*time.Second); len(got) != 3 {
		t.Errorf("3 releases stored %d events", len(got))
	}
}

// TestRedeliveries checks that a provider's retry of a stored delivery is
// answered 2xx without a second copy, even when the copies race, and that a
// source can turn deduplication off.
func TestRedeliveries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOptions{})
	intent := adapterstest.ReadFile(t, "../stripe/testdata/payment_intent.json")
	sign := func() string { return adapterstest.StripeSignature(stripeSecret, time.Now(), intent) }

	if r := f.post(t, "default/payments", intent, "Stripe-Signature", sign()); r.status != 202 {
		t.Fatalf("first delivery: %d %s", r.status, r.body)
	}
	if r := f.post(t, "default/payments", intent, "Stripe-Signature", sign()); r.status != 200 ||
		!strings.Contains(r.body, "duplicate") {
		t.Errorf("retry: %d %s", r.status, r.body)
	}
	// Authentication comes first: an unsigned copy is refused, not deduplicated.
	if r := f.post(t, "default/payments", intent); r.status != 401 {
		t.Errorf("unsigned retry: %d", r.status)
	}
	if got := f.stored(t, defaultTopic, time.Second); len(got) != 1 {
		t.Errorf("stored %d copies", len(got))
	}

	mention := adapterstest.ReadFile(t, "../slack/testdata/app_mention.json")
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			now := time.Now()
			r := f.post(t, "default/app1", mention, "Content-Type", "application/json",
				"X-Slack-Request-Timestamp", strconv.FormatInt(now.Unix(), 10), "X-Slack-Retry-Num", "1",
				"X-Slack-Signature", adapterstest.SlackSignature(slackSecret, now.Unix(), mention))
			if r.status != 200 || r.body != "" {
				t.Errorf("slack retry: %d %q", r.status, r.body)
			}
		})
	}
	wg.Wait()
	if got := f.stored(t, defaultTopic, time.Second); len(got) != 1 {
		t.Errorf("10 racing copies stored %d events", len(got))
	}
	dups := f.metric(t, "signalbox_webhook_duplicates_total", map[string]string{"source": "default/payments"}) +
		f.metric(t, "signalbox_webhook_duplicates_total", map[string]string{"source": "default/app1"})
	if dups != 10 {
		t.Errorf("duplicates_total = %v, want 10", dups)
	}

	// dedupeWindow: PT0S keeps every copy.
	for range 2 {
		r := f.post(t, "default/bearer", `{}`, "Content-Type", "application/json", "X-Delivery", "same",
			"Authorization", "Bearer "+bearerToken)
		if r.status != 202 {
			t.Errorf("bearer: %d", r.status)
		}
	}
	if got := f.stored(t, defaultTopic, time.Second); len(got) != 2 {
		t.Errorf("without deduplication stored %d copies, want 2", len(got))
	}
}

// TestBusFailures: 429 with Retry-After when the broker is full, 503 with
// Retry-After when the bus is down, and a delivery that failed is stored
// when the provider retries it.
func TestBusFailures(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOptions{bus: redisbus.Config{MaxLen: 2, TrimInterval: 10 * time.Millisecond}})
	post := func(seq int) response {
		return f.post(t, "default/start", fmt.Sprintf(`{"seq":%d}`, seq), "Content-Type", "application/json")
	}
	var r response
	for i := range 50 {
		if r = post(i); r.status == 429 {
			break
		}
		if r.status != 202 {
			t.Fatalf("post %d: %d %s", i, r.status, r.body)
		}
	}
	if r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Fatalf("full broker: %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	_ = f.stored(t, defaultTopic, time.Second) // acknowledging makes room again

	intent := adapterstest.ReadFile(t, "../stripe/testdata/payment_intent.json")
	sign := func() string { return adapterstest.StripeSignature(stripeSecret, time.Now(), intent) }
	f.redis.Kill()
	r = f.post(t, "default/payments", intent, "Stripe-Signature", sign())
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("bus down: %d %s, Retry-After %q", r.status, r.body, r.header.Get("Retry-After"))
	}
	f.redis.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r = f.post(t, "default/payments", intent, "Stripe-Signature", sign())
		if r.status == 202 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.status != 202 {
		t.Fatalf("retry after the bus came back: %d %s", r.status, r.body)
	}
	got := f.stored(t, defaultTopic, 2*time.Second)
	if len(got) != 1 || got[0].ID() != "evt_3QwErTyUiOp1234" {
		t.Errorf("stored %v after the retry", got)
	}
}

// TestRoutes covers paths that are not a source, other methods and a
// source removed by a new snapshot.
func TestRoutes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOptions{})
	if r := f.post(t, "default/nope", `{}`); r.status != 404 {
		t.Errorf("unknown source: %d", r.status)
	}
	if r := f.post(t, "default/start/extra", `{}`); r.status != 404 {
		t.Errorf("deeper path: %d", r.status)
	}
	req, _ := http.NewRequest(http.MethodGet, f.url+"/default/start", nil)
	if r := do(t, req); r.status != 405 || r.header.Get("Allow") != "POST" {
		t.Errorf("GET: %d, Allow %q", r.status, r.header.Get("Allow"))
	}

	next := *f.snap
	next.EventSources = slices.DeleteFunc(slices.Clone(next.EventSources),
		func(es config.EventSource) bool { return es.Name() == "start" })
	if err := f.rc.Apply(&next); err != nil {
		t.Fatal(err)
	}
	if r := f.post(t, "default/start", `{}`); r.status != 404 {
		t.Errorf("removed source: %d", r.status)
	}
	if r := f.post(t, "default/tiny", `{}`); r.status != 202 {
		t.Errorf("kept source: %d", r.status)
	}
	if n := f.metric(t, "signalbox_webhook_requests_total", map[string]string{"source": "unknown", "code": "404"}); n != 3 {
		t.Errorf("requests_total{source=unknown} = %v, want 3", n)
	}
	if n := f.metric(t, "signalbox_webhook_requests_total", map[string]string{"source": "default/tiny", "code": "202"}); n != 1 {
		t.Errorf("requests_total{source=default/tiny,code=202} = %v", n)
	}
}
