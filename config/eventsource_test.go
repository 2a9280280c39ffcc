package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// secretFile writes value to a fresh file and returns its path.
func secretFile(t *testing.T, value string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadEventSources(t *testing.T) {
	t.Setenv("SB_TEST_SLACK", "slack-signing")
	gh := secretFile(t, "gh-secret\n")
	doc := fmt.Sprintf(`
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: repo1}
spec:
  github: {secretFrom: 'file:%s', allowSHA1: true}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: app, namespace: chat}
spec:
  broker: events
  maxPayloadSize: 65536
  dedupeWindow: PT10M
  filter: 'event.type.startsWith("dev.signalbox.slack.event.")'
  slack: {secretFrom: 'env:SB_TEST_SLACK', tolerance: PT1M}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: hook}
spec:
  webhook:
    headers: {X-Request-Id: requestid}
    hmac: {secretFrom: 'file:%s', header: X-Sig}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: gl}
spec: {gitlab: {}}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: bb}
spec: {bitbucket: {flavor: server}}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: pay}
spec: {stripe: {secretFrom: 'file:%s'}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: events, namespace: chat}
`, gh, gh, gh)
	snap, err := LoadBytes("sources.yaml", []byte(yamlDoc(doc)+defaultBroker))
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.EventSources) != 6 {
		t.Fatalf("loaded %d sources", len(snap.EventSources))
	}
	byName := map[string]EventSource{}
	for _, es := range snap.EventSources {
		byName[es.Name()] = es
	}

	repo := byName["repo1"]
	if repo.Provider() != ProviderGitHub || repo.Namespace() != "default" || repo.Spec.Broker != "default" ||
		string(repo.Spec.GitHub.Secret.Reveal()) != "gh-secret" || !repo.Spec.GitHub.AllowSHA1 {
		t.Errorf("repo1 = %+v", repo)
	}
	if repo.Spec.MaxPayloadSize != DefaultMaxPayloadSize || repo.Spec.DedupeWindowDuration != time.Hour {
		t.Errorf("repo1 defaults: maxPayloadSize %d, dedupe window %v", repo.Spec.MaxPayloadSize,
			repo.Spec.DedupeWindowDuration)
	}
	if repo.Origin.File != "sources.yaml" || repo.Origin.Line != 1 {
		t.Errorf("origin = %+v", repo.Origin)
	}

	app := byName["app"]
	if app.Provider() != ProviderSlack || string(app.Spec.Slack.Secret.Reveal()) != "slack-signing" ||
		app.Spec.Slack.ToleranceDuration != time.Minute || app.Spec.DedupeWindowDuration != 10*time.Minute ||
		app.Spec.MaxPayloadSize != 65536 {
		t.Errorf("app = %+v", app.Spec)
	}
	if hook := byName["hook"].Spec.Webhook; hook.HMAC.Algorithm != "sha256" || hook.HMAC.Encoding != "hex" ||
		hook.EventType != "dev.signalbox.webhook.received" {
		t.Errorf("webhook defaults = %+v", hook)
	}
	if gl := byName["gl"].Spec.GitLab; !gl.Secret.IsZero() {
		t.Error("gitlab without secretFrom has a secret")
	}
	if b := byName["bb"].Spec.Bitbucket; b.Flavor != BitbucketServer {
		t.Errorf("bitbucket flavor = %q", b.Flavor)
	}
	if st := byName["pay"].Spec.Stripe; st.ToleranceDuration != 5*time.Minute {
		t.Errorf("stripe tolerance = %v", st.ToleranceDuration)
	}
}

func TestLoadEventSourceErrors(t *testing.T) {
	empty := secretFile(t, "\n")
	missing := filepath.Join(t.TempDir(), "absent")
	tests := []struct {
		name string
		yaml string
		want []wantErr
	}{{
		name: "secrets",
		yaml: fmt.Sprintf(`
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: a}
spec: {github: {}}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: b}
spec: {stripe: {secretFrom: 'env:SB_TEST_SURELY_UNSET'}}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: c}
spec: {slack: {secretFrom: 'file:%s'}}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: d}
spec: {gitlab: {secretFrom: 'file:%s'}}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: e}
spec: {github: {secretFrom: 'hunter2-literal'}}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: f}
spec: {github: {secret: 'hunter3-literal'}}
`, missing, empty),
		want: []wantErr{
			{4, "spec.github.secretFrom", "missing field: a secret is required", "EventSource default/a"},
			{9, "spec.stripe.secretFrom", "environment variable SB_TEST_SURELY_UNSET is not set", "EventSource default/b"},
			{14, "spec.slack.secretFrom", "cannot read secret file " + missing + ": no such file or directory", ""},
			{19, "spec.gitlab.secretFrom", "secret file " + empty + " is empty", ""},
			{24, "spec.github.secretFrom", `must be "env:NAME" or "file:/path"`, ""},
			{29, "spec.github.secret", "secrets are never written inline", ""},
		},
	}, {
		name: "kinds",
		yaml: `
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: none}
spec: {broker: default}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: two}
spec: {gitlab: {}, bitbucket: {}}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: cron}
spec: {calendar: {schedule: '* * * * *'}}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: typo}
spec: {gitlab: {secretFrm: 'env:X'}}
`,
		want: []wantErr{
			{4, "spec", "exactly one source kind is required (supported kinds: webhook, github, gitlab, bitbucket, slack, stripe)", ""},
			{9, "spec.bitbucket", "only one source kind is allowed per EventSource, got gitlab and bitbucket", ""},
			{14, "spec.calendar", `event source kind "calendar" is not supported yet`, ""},
			{19, "spec.gitlab.secretFrm", `unknown field "secretFrm" (did you mean "secretFrom"?)`, ""},
		},
	}, {
		name: "fields",
		yaml: `
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: Bad_Name}
spec:
  broker: missing
  maxPayloadSize: -1
  filter: 'data.x >'
  dedupeWindow: 1h
  bitbucket: {flavor: onprem}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: hook}
spec:
  maxPayloadSize: 1073741824
  webhook:
    idHeader: 'X Id'
    bearerToken: {secretFrom: 'env:HOME'}
    hmac: {secretFrom: 'env:HOME', algorithm: md5, encoding: base32}
    headers: {Authorization: auth, X-Ok: 'Bad-Name', X-Id: id, X-Two: knativebrokerttl}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: slow}
spec: {slack: {secretFrom: 'env:HOME', tolerance: PT0S}}
`,
		want: []wantErr{
			{3, "metadata.name", `invalid name "Bad_Name"`, ""},
			{5, "spec.broker", `broker "missing" is not defined in namespace "default"`, ""},
			{6, "spec.maxPayloadSize", "must be between 1 and 67108864 bytes, got -1", ""},
			{7, "spec.filter", "Syntax error", ""},
			{8, "spec.dedupeWindow", `invalid ISO-8601 duration "1h"`, ""},
			{9, "spec.bitbucket.flavor", `must be "cloud" or "server", got "onprem"`, ""},
			{15, "spec.maxPayloadSize", "must be between 1 and 67108864 bytes", "EventSource default/hook"},
			{17, "spec.webhook.idHeader", `invalid header name "X Id"`, ""},
			{19, "spec.webhook.hmac", "set at most one of bearerToken and hmac", ""},
			{19, "spec.webhook.hmac.header", "missing field", ""},
			{19, "spec.webhook.hmac.algorithm", `unknown algorithm "md5"`, ""},
			{19, "spec.webhook.hmac.encoding", `unknown encoding "base32"`, ""},
			{20, "spec.webhook.headers[Authorization]", "carries credentials", ""},
			{20, "spec.webhook.headers[X-Id]", `extension name "id" is reserved`, ""},
			{20, "spec.webhook.headers[X-Ok]", `invalid extension name "Bad-Name"`, ""},
			{20, "spec.webhook.headers[X-Two]", `extension name "knativebrokerttl" is reserved`, ""},
			{25, "spec.slack.tolerance", "must be greater than zero", ""},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadBytes("sources.yaml", []byte(yamlDoc(tt.yaml)+defaultBroker))
			assertErrors(t, err, "sources.yaml", tt.want)
			if err != nil && strings.Contains(err.Error(), "hunter") {
				t.Errorf("an error echoes what may be a secret: %v", err)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	const value = "s3cr3t-value"
	src := GitHubSource{SecretRef: SecretRef{SecretFrom: "env:X", Secret: NewSecret([]byte(value))}}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "secret", src.Secret, "source", src)
	j, _ := json.Marshal(src)
	for _, out := range []string{
		fmt.Sprint(src.Secret), fmt.Sprintf("%v %+v %#v %s %q %x", src, src, src, src.Secret, src.Secret, src.Secret),
		string(j), logs.String(),
	} {
		if strings.Contains(out, value) || strings.Contains(out, fmt.Sprintf("%x", value)) {
			t.Errorf("secret printed: %s", out)
		}
	}
	if string(src.Secret.Reveal()) != value {
		t.Error("Reveal lost the value")
	}
}

func TestReadSecret(t *testing.T) {
	t.Setenv("SB_TEST_EMPTY", "")
	t.Setenv("SB_TEST_SET", " spaced ")
	crlf := secretFile(t, "line\r\n")
	two := secretFile(t, "a\n\n")
	tests := []struct {
		ref, want string
		ok        bool
	}{
		{"env:SB_TEST_SET", " spaced ", true},
		{"env:SB_TEST_EMPTY", "", false},
		{"env:", "", false},
		{"file:" + crlf, "line", true},
		{"file:" + two, "a\n", true},
		{"vault:x", "", false},
		{"file:/dev/zero", "", false},
		{"file:" + os.TempDir(), "", false},
		{"plain", "", false},
	}
	for _, tt := range tests {
		got, err := ReadSecret(tt.ref)
		if (err == nil) != tt.ok || string(got) != tt.want {
			t.Errorf("ReadSecret(%q) = %q, %v", tt.ref, got, err)
		}
	}
}
