package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/adapters/adapterstest"
	"github.com/signalbox-dev/signalbox/internal/redistest"
)

// Secrets of the sources in webhookSourcesYAML.
const (
	e2eGitHubSecret    = "e2e-github-secret"
	e2eGitLabSecret    = "e2e-gitlab-token"
	e2eBitbucketSecret = "e2e-bitbucket-secret"
	e2eSlackSecret     = "e2e-slack-signing-secret"
	e2eStripeSecret    = "whsec_test"
)

// webhookSourcesYAML has one source per provider; %[1]s is the directory
// of the secret files.
const webhookSourcesYAML = `
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: repo1, namespace: default}
spec:
  broker: default
  github: {secretFrom: 'file:%[1]s/github'}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: repo-main, namespace: default}
spec:
  filter: 'data.ref == "refs/heads/main"'
  github: {secretFrom: 'file:%[1]s/github'}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: gl, namespace: default}
spec:
  gitlab: {secretFrom: 'file:%[1]s/gitlab'}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: bbs, namespace: default}
spec:
  bitbucket: {flavor: server, secretFrom: 'file:%[1]s/bitbucket'}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: app1, namespace: default}
spec:
  slack: {secretFrom: 'file:%[1]s/slack'}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: payments, namespace: default}
spec:
  stripe: {secretFrom: 'file:%[1]s/stripe', tolerance: PT300S}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: start, namespace: default}
spec:
  webhook: {}
`

// typeTrigger is a Knative Trigger delivering the events of one type.
func typeTrigger(name, typ, uri string) string {
	return fmt.Sprintf(`
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: %s, namespace: default}
spec:
  broker: default
  filter: {attributes: {type: '%s'}}
  subscriber: {uri: %s}
`, name, typ, uri)
}

// postHook posts body to a webhook URL with header pairs and returns the
// status and the answer.
func postHook(t *testing.T, url, body string, kv ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestWebhookSources runs the binary with a source of each provider and a
// Trigger per event type: signed deliveries in each provider's real shape
// reach the Trigger of their type, handshakes are answered as the provider
// expects, and refused requests reach no one.
func TestWebhookSources(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, v := range map[string]string{"github": e2eGitHubSecret, "gitlab": e2eGitLabSecret,
		"bitbucket": e2eBitbucketSecret, "slack": e2eSlackSecret, "stripe": e2eStripeSecret} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	push, ghPing, gitlab, bbServer, slack, stripe, generic, all := newRecorder(t, nil), newRecorder(t, nil),
		newRecorder(t, nil), newRecorder(t, nil), newRecorder(t, nil), newRecorder(t, nil), newRecorder(t, nil),
		newRecorder(t, nil)
	cfg := writeConfig(t, brokerYAML+fmt.Sprintf(webhookSourcesYAML, dir)+
		typeTrigger("gh-push", "dev.knative.source.github.push", push.URL)+
		typeTrigger("gh-ping", "dev.knative.source.github.ping", ghPing.URL)+
		typeTrigger("gl-push", "dev.knative.sources.gitlab.push", gitlab.URL)+
		typeTrigger("bb-refs", "dev.signalbox.bitbucketserver.repo:refs_changed", bbServer.URL)+
		typeTrigger("slack-mention", "dev.signalbox.slack.event.app_mention", slack.URL)+
		typeTrigger("stripe-paid", "dev.signalbox.stripe.payment_intent.succeeded", stripe.URL)+
		typeTrigger("generic", "dev.signalbox.webhook.received", generic.URL)+
		triggerYAML("all", all.URL))
	redis := redistest.Start(t)
	gw := startGateway(t, redis.URL(), cfg)
	hooks := gw.URL + "/webhooks/default/"
	stored := 0 // events accepted so far, which the catch-all trigger must get

	t.Run("github", func(t *testing.T) {
		pushJSON := adapterstest.ReadFile(t, "../adapters/github/testdata/push.json")
		form := "payload=" + url.QueryEscape(pushJSON)
		headers := []string{"Content-Type", "application/x-www-form-urlencoded", "X-GitHub-Event", "push",
			"X-GitHub-Delivery", "e2e-push-1"}
		for _, bad := range [][]string{
			nil,
			{"X-Hub-Signature-256", adapterstest.GitHubSignature256("wrong", form)},
			{"X-Hub-Signature-256", "sha256="},
			{"X-Hub-Signature-256", adapterstest.GitHubSignature256(e2eGitHubSecret, pushJSON)}, // over the JSON
		} {
			if code, body := postHook(t, hooks+"repo1", form, append(slices.Clone(headers), bad...)...); code != 401 {
				t.Errorf("bad signature %v: %d %s", bad, code, body)
			}
		}
		code, body := postHook(t, hooks+"repo1", form, append(slices.Clone(headers),
			"X-Hub-Signature-256", adapterstest.GitHubSignature256(e2eGitHubSecret, form))...)
		if code/100 != 2 {
			t.Fatalf("form-encoded push: %d %s", code, body)
		}
		stored++
		got := push.WaitFor(t, 1, 10*time.Second)[0]
		if e := got.Event; e == nil || e.ID() != "e2e-push-1" || e.Source() != "https://github.com/octo-org/hello-signals" ||
			e.Subject() != "6113728f27ae...0d1a26e67d8f" || string(e.Data()) != pushJSON {
			t.Errorf("push delivered as %+v", got.Event)
		}

		// BR-03 exactly: a form-encoded push through a source whose filter
		// keeps refs/heads/main.
		br03 := `payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%2C%22repository%22%3A%7B%22full_name%22%3A%22org%2Frepo%22%7D%7D`
		code, _ = postHook(t, hooks+"repo-main", br03, "Content-Type", "application/x-www-form-urlencoded",
			"X-GitHub-Event", "push", "X-GitHub-Delivery", "11111111-2222-3333-4444-555555555555",
			"X-Hub-Signature-256", adapterstest.GitHubSignature256(e2eGitHubSecret, br03))
		if code/100 != 2 {
			t.Fatalf("BR-03: %d", code)
		}
		stored++
		got = push.WaitFor(t, 2, 10*time.Second)[1]
		var data map[string]any
		if err := json.Unmarshal(got.Body, &data); err != nil || data["ref"] != "refs/heads/main" ||
			got.Event.DataContentType() != "application/json" {
			t.Errorf("BR-03 data = %q (%v)", got.Body, err)
		}

		// BR-04: ping is answered, reaches the catch-all as a ping and never
		// a push subscription.
		ping := adapterstest.ReadFile(t, "../adapters/github/testdata/ping.json")
		pingHeaders := []string{"Content-Type", "application/json", "X-GitHub-Event", "ping",
			"X-GitHub-Delivery", "e2e-ping-1", "X-GitHub-Hook-ID", "123"}
		if code, _ := postHook(t, hooks+"repo1", ping, append(slices.Clone(pingHeaders),
			"X-Hub-Signature-256", adapterstest.GitHubSignature256("wrong", ping))...); code != 401 {
			t.Errorf("ping with a wrong signature: %d", code)
		}
		if code, _ := postHook(t, hooks+"repo1", ping, append(slices.Clone(pingHeaders),
			"X-Hub-Signature-256", adapterstest.GitHubSignature256(e2eGitHubSecret, ping))...); code != 200 && code != 202 {
			t.Fatalf("ping: %d", code)
		}
		stored++
		ghPing.WaitFor(t, 1, 10*time.Second)
	})

	t.Run("stripe", func(t *testing.T) {
		// BR-06: raw-body HMAC and secret rotation.
		body := adapterstest.ReadFile(t, "../adapters/stripe/testdata/br06.json")
		now := time.Now().Unix()
		ts := strconv.FormatInt(now, 10)
		good := adapterstest.StripeV1(e2eStripeSecret, now, body)
		zeros := strings.Repeat("0", 64)
		minified := `{"type":"payment_intent.succeeded","id":"evt_1","data":{"object":{"amount":2000,"description":"Café"}}}`
		for _, c := range []struct {
			name, sig string
			ok        bool
		}{
			{"d: minified body", "t=" + ts + ",v1=" + adapterstest.StripeV1(e2eStripeSecret, now, minified), false},
			{"e: v0 only", "t=" + ts + ",v0=" + good, false},
			{"stale", adapterstest.StripeSignature(e2eStripeSecret, time.Now().Add(-10*time.Minute), body), false},
			{"a", "t=" + ts + ",v1=" + good, true},
			{"b", "t=" + ts + ",v1=" + zeros + ",v1=" + good, true},
			{"c", "t=" + ts + ",v1=" + good + ",v1=" + zeros, true},
		} {
			code, answer := postHook(t, hooks+"payments", body, "Content-Type", "application/json",
				"Stripe-Signature", c.sig)
			if c.ok != (code/100 == 2) || !c.ok && code != 401 {
				t.Errorf("request %s: %d %s", c.name, code, answer)
			}
		}
		stored++
		got := stripe.WaitFor(t, 1, 10*time.Second)[0]
		var ev struct {
			Data struct {
				Object struct {
					Description string `json:"description"`
				} `json:"object"`
			} `json:"data"`
		}
		if err := json.Unmarshal(got.Body, &ev); err != nil || ev.Data.Object.Description != "Café" ||
			got.Event.ID() != "evt_1" || string(got.Body) != body {
			t.Errorf("stripe event %q (%v)", got.Body, err)
		}
	})

	t.Run("slack", func(t *testing.T) {
		// BR-08: url_verification is answered with the challenge.
		verify := adapterstest.ReadFile(t, "../adapters/slack/testdata/url_verification.json")
		sign := func(tm time.Time, secret, body string) []string {
			return []string{"Content-Type", "application/json",
				"X-Slack-Request-Timestamp", strconv.FormatInt(tm.Unix(), 10),
				"X-Slack-Signature", adapterstest.SlackSignature(secret, tm.Unix(), body)}
		}
		start := time.Now()
		code, answer := postHook(t, hooks+"app1", verify, sign(time.Now(), e2eSlackSecret, verify)...)
		if code != 200 || answer != "CHALLENGE_abc123XYZ" || time.Since(start) > time.Second {
			t.Errorf("url_verification: %d %q after %v", code, answer, time.Since(start))
		}
		for _, bad := range [][]string{
			sign(time.Now(), "wrong", verify),
			sign(time.Now().Add(-10*time.Minute), e2eSlackSecret, verify),
		} {
			if code, answer := postHook(t, hooks+"app1", verify, bad...); code != 401 || strings.Contains(answer, "CHALLENGE") {
				t.Errorf("refused url_verification: %d %q", code, answer)
			}
		}
		mention := adapterstest.ReadFile(t, "../adapters/slack/testdata/app_mention.json")
		if code, answer := postHook(t, hooks+"app1", mention, sign(time.Now(), e2eSlackSecret, mention)...); code != 200 ||
			answer != "" {
			t.Fatalf("app_mention: %d %q", code, answer)
		}
		stored++
		if got := slack.WaitFor(t, 1, 10*time.Second)[0]; got.Event.ID() != "Ev0LAN670R" {
			t.Errorf("slack event %v", got.Event)
		}
	})

	t.Run("gitlab and bitbucket", func(t *testing.T) {
		gl := adapterstest.ReadFile(t, "../adapters/gitlab/testdata/push.json")
		glHeaders := []string{"Content-Type", "application/json", "X-Gitlab-Event", "Push Hook",
			"X-Gitlab-Event-UUID", "e2e-gl-1"}
		for _, token := range []string{"", "wrong"} {
			if code, _ := postHook(t, hooks+"gl", gl, append(slices.Clone(glHeaders), "X-Gitlab-Token", token)...); code != 401 {
				t.Errorf("gitlab token %q: %d", token, code)
			}
		}
		if code, _ := postHook(t, hooks+"gl", gl, append(glHeaders, "X-Gitlab-Token", e2eGitLabSecret)...); code != 202 {
			t.Fatalf("gitlab: %d", code)
		}
		stored++

		bb := adapterstest.ReadFile(t, "../adapters/bitbucket/testdata/server_refs_changed.json")
		bbHeaders := []string{"Content-Type", "application/json", "X-Event-Key", "repo:refs_changed",
			"X-Request-Id", "e2e-bb-1"}
		if code, _ := postHook(t, hooks+"bbs", bb, bbHeaders...); code != 401 {
			t.Errorf("unsigned bitbucket: %d", code)
		}
		if code, _ := postHook(t, hooks+"bbs", bb, append(bbHeaders,
			"X-Hub-Signature", adapterstest.BitbucketSignature(e2eBitbucketSecret, bb))...); code != 202 {
			t.Fatalf("bitbucket: %d", code)
		}
		stored++
		if got := gitlab.WaitFor(t, 1, 10*time.Second)[0]; got.Event.Source() != "https://gitlab.example.com/platform/signals" {
			t.Errorf("gitlab event %v", got.Event)
		}
		if got := bbServer.WaitFor(t, 1, 10*time.Second)[0]; got.Event.Subject() != "SIG/relay" {
			t.Errorf("bitbucket event %v", got.Event)
		}
	})

	t.Run("BR-15 concurrent generic webhooks", func(t *testing.T) {
		const n = 200
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failed []int
		for i := range n + 2 {
			body := fmt.Sprintf(`{"seq":%d}`, i)
			if i >= n {
				body = `{}`
			}
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodPost, hooks+"start", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode/100 != 2 {
					mu.Lock()
					failed = append(failed, i)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(failed) > 0 {
			t.Fatalf("requests %v failed", failed)
		}
		stored += n + 2
		got := generic.WaitFor(t, n+2, 20*time.Second)
		seqs, idSet := map[float64]bool{}, map[string]bool{}
		for _, g := range got {
			idSet[g.Event.ID()] = true
			var d map[string]float64
			if json.Unmarshal(g.Body, &d) == nil {
				if s, ok := d["seq"]; ok {
					seqs[s] = true
				}
			}
		}
		if len(seqs) != n || len(idSet) != n+2 {
			t.Errorf("%d distinct seq values, %d distinct ids", len(seqs), len(idSet))
		}
	})

	all.WaitFor(t, stored, 20*time.Second)
	if got := all.Quiet(t, stored, 300*time.Millisecond); len(got) != stored {
		t.Errorf("catch-all got %d events, want %d", len(got), stored)
	}
	push.Quiet(t, 2, 0)
	ghPing.Quiet(t, 1, 0)
	for _, secret := range []string{e2eGitHubSecret, e2eGitLabSecret, e2eBitbucketSecret, e2eSlackSecret} {
		if strings.Contains(gw.logs.String(), secret) {
			t.Errorf("the debug log contains a secret")
		}
	}
}

// TestValidateReportsEventSourceProblems runs `signalbox validate` on
// EventSources with a missing secret and an unknown field.
func TestValidateReportsEventSourceProblems(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, brokerYAML+`
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: repo1, namespace: default}
spec:
  github: {secretFrom: 'env:SIGNALBOX_E2E_SURELY_UNSET'}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: pay, namespace: default}
spec:
  stripe: {secretFrom: 'file:/nonexistent/whsec', tolerence: PT1M}
`)
	out, err := exec.Command(binary, "validate", cfg).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	for _, want := range []string{
		"signalbox.yaml:11: EventSource default/repo1: spec.github.secretFrom: environment variable SIGNALBOX_E2E_SURELY_UNSET is not set",
		"signalbox.yaml:17: EventSource default/pay: spec.stripe.secretFrom: cannot read secret file /nonexistent/whsec",
		`signalbox.yaml:17: EventSource default/pay: spec.stripe.tolerence: unknown field "tolerence" (did you mean "tolerance"?)`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
