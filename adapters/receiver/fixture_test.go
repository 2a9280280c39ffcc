package receiver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/signalbox-dev/signalbox/adapters/receiver"
	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/broker/redisbus"
	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/config"
	"github.com/signalbox-dev/signalbox/gateway"
	"github.com/signalbox-dev/signalbox/internal/redistest"
)

// Secrets of the sources in sourcesYAML.
const (
	githubSecret    = "gh-secret-7f3a"
	gitlabSecret    = "gl-token-19c2"
	bitbucketSecret = "bb-secret-55d0"
	slackSecret     = "8f742231b10e8888abcd99yyyzzz85a5"
	stripeSecret    = "whsec_test"
	hmacSecret      = "generic-hmac-key"
	bearerToken     = "generic-bearer-token"
)

// sourcesYAML configures one source of each kind; %[1]s is the directory
// holding the secret files.
const sourcesYAML = `
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: ci, namespace: ops}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: repo1}
spec:
  github: {secretFrom: 'file:%[1]s/github'}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: repo-main}
spec:
  broker: default
  filter: 'data.ref == "refs/heads/main"'
  github: {secretFrom: 'file:%[1]s/github'}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: gl, namespace: ops}
spec:
  broker: ci
  gitlab: {secretFrom: 'file:%[1]s/gitlab'}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: bbs}
spec:
  bitbucket: {flavor: server, secretFrom: 'file:%[1]s/bitbucket'}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: bbc}
spec:
  bitbucket: {}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: app1}
spec:
  slack: {secretFrom: 'file:%[1]s/slack'}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: payments}
spec:
  stripe: {secretFrom: 'file:%[1]s/stripe', tolerance: PT300S}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: start}
spec:
  maxPayloadSize: 1048576
  webhook: {}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: tiny}
spec:
  maxPayloadSize: 8
  webhook: {}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: signed}
spec:
  webhook:
    idHeader: X-Delivery
    headers: {X-Build-Id: buildid}
    hmac: {secretFrom: 'file:%[1]s/hmac', header: X-Signature, prefix: 'sha256='}
---
apiVersion: signalbox.dev/v1alpha1
kind: EventSource
metadata: {name: bearer}
spec:
  dedupeWindow: PT0S
  webhook:
    idHeader: X-Delivery
    bearerToken: {secretFrom: 'file:%[1]s/bearer'}
`

// fixture is a receiver mounted in a gateway, in front of a real Redis.
type fixture struct {
	url   string
	redis *redistest.Server
	bus   *redisbus.Bus
	rc    *receiver.Receiver
	reg   *prometheus.Registry
	logs  *lockedBuffer
	snap  *config.Snapshot
	subs  map[string]broker.Subscription
}

type fixtureOptions struct {
	bus redisbus.Config
}

func newFixture(t *testing.T, opts fixtureOptions) *fixture {
	t.Helper()
	dir := t.TempDir()
	for name, v := range map[string]string{"github": githubSecret, "gitlab": gitlabSecret, "bitbucket": bitbucketSecret,
		"slack": slackSecret, "stripe": stripeSecret, "hmac": hmacSecret, "bearer": bearerToken} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := config.LoadBytes("sources.yaml", []byte(fmt.Sprintf(sourcesYAML, dir)))
	if err != nil {
		t.Fatal(err)
	}

	f := &fixture{redis: redistest.Start(t), reg: prometheus.NewRegistry(), logs: &lockedBuffer{}, snap: snap,
		subs: map[string]broker.Subscription{}}
	opts.bus.URL = f.redis.URL()
	if f.bus, err = redisbus.New(context.Background(), opts.bus); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.bus.Close() })
	// Groups first, so that they see everything posted by the test.
	for _, topic := range []string{"default/default", "ops/ci"} {
		sub, err := f.bus.Subscribe(context.Background(), topic, "test", broker.SubscribeConfig{Consumer: "c"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sub.Close() })
		f.subs[topic] = sub
	}

	logger := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.rc, err = receiver.New(receiver.Config{Bus: f.bus, Logger: logger, Registerer: f.reg,
		PublishTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.rc.Apply(snap); err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Bus: f.bus, Webhooks: f.rc, Registry: f.reg, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(gw.Handler())
	t.Cleanup(hs.Close)
	f.url = hs.URL + "/webhooks"
	return f
}

// response is what post got back.
type response struct {
	status int
	header http.Header
	body   string
}

// post sends body to /webhooks/{path} with the headers given as pairs.
func (f *fixture) post(t *testing.T, path, body string, kv ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.url+"/"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Add(kv[i], kv[i+1])
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// stored returns and acknowledges the events stored in topic since the last
// call, waiting up to wait for the first one.
func (f *fixture) stored(t *testing.T, topic string, wait time.Duration) []*event.Event {
	t.Helper()
	sub := f.subs[topic]
	var out []*event.Event
	for {
		msgs, err := sub.Fetch(context.Background(), 500, wait)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			return out
		}
		ids := make([]string, len(msgs))
		for i, m := range msgs {
			e, err := cloudevent.Unmarshal(m.Payload)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
			ids[i] = m.ID
		}
		if err := sub.Ack(context.Background(), ids...); err != nil {
			t.Fatal(err)
		}
		wait = 50 * time.Millisecond
	}
}

// metric returns the value of a counter series, 0 when absent.
func (f *fixture) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
	series:
		for _, m := range fam.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
