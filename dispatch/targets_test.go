package dispatch

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/config"
	"github.com/signalbox-dev/signalbox/functions/functionstest/kubetest"
)

// fakeFunction is a function platform's invoke endpoint: it records the
// requests to path and answers each with fail's verdict.
type fakeFunction struct {
	srv  *httptest.Server
	path string
	fail func(w http.ResponseWriter) // nil: succeed

	mu   sync.Mutex
	reqs []*http.Request
	body [][]byte
}

func newFakeFunction(t *testing.T, path string, ok func(http.ResponseWriter), fail func(http.ResponseWriter)) *fakeFunction {
	f := &fakeFunction{path: path, fail: fail}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != f.path {
			http.Error(w, `{"message":"no such path"}`, http.StatusNotFound)
			return
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, r)
		f.body = append(f.body, b)
		f.mu.Unlock()
		if f.fail != nil {
			f.fail(w)
			return
		}
		ok(w)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeFunction) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

// ids returns the CloudEvent ids of the payloads received.
func (f *fakeFunction) ids(t *testing.T) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, b := range f.body {
		var ev struct{ ID string }
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Errorf("payload is not a JSON CloudEvent: %v: %s", err, b)
		}
		ids = append(ids, ev.ID)
	}
	return ids
}

var plateDep = config.Dependency{Name: "plate", Filter: `event.type == "radar.plate.read"`}

// TestSensorFunctionTargets fires a sensor into a Lambda and an OpenWhisk
// endpoint: a working function gets the event once; a failing one is tried
// three times (retry 2) and the event is dead-lettered.
func TestSensorFunctionTargets(t *testing.T) {
	t.Parallel()
	jsonOK := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}
	tests := []struct {
		name    string
		path    string
		fail    func(http.ResponseWriter)
		trigger func(url string) config.SensorTrigger
	}{{
		name: "lambda",
		path: "/2015-03-31/functions/fines/invocations",
		fail: func(w http.ResponseWriter) {
			w.Header().Set("X-Amz-Function-Error", "Unhandled")
			_, _ = io.WriteString(w, `{"errorType":"Error","errorMessage":"boom"}`)
		},
		trigger: func(u string) config.SensorTrigger {
			return config.SensorTrigger{Lambda: &config.LambdaTarget{FunctionName: "fines", Region: "eu-west-1",
				Endpoint:  u,
				AccessKey: &config.SecretRef{Secret: config.NewSecret([]byte("AKIDEXAMPLE"))},
				SecretKey: &config.SecretRef{Secret: config.NewSecret([]byte("not-a-real-key"))},
			}}
		},
	}, {
		name: "openwhisk",
		path: "/api/v1/namespaces/_/actions/fine",
		fail: func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, `{"response":{"result":{"error":"boom"}}}`)
		},
		trigger: func(u string) config.SensorTrigger {
			return config.SensorTrigger{OpenWhisk: &config.OpenWhiskTarget{Host: u, Action: "fine",
				Auth: config.NewSecret([]byte("uuid:key"))}}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bus := newBus(t)
			d, _ := newDispatcher(t, Config{Bus: bus})
			good := newFakeFunction(t, tt.path, jsonOK, nil)
			bad := newFakeFunction(t, tt.path, jsonOK, tt.fail)
			okTrigger, badTrigger := tt.trigger(good.srv.URL), tt.trigger(bad.srv.URL)
			okTrigger.Name, badTrigger.Name = "ok", "bad"
			okTrigger.Delivery, badTrigger.Delivery = deliverySpec(2, "PT0.05S"), deliverySpec(2, "PT0.05S")
			apply(t, d, sensorSnap(sensor("radar", plateDep, okTrigger, badTrigger)))

			publish(t, bus, flash("P1", "radar.plate.read", "AB-123", `{"text":"AB-123"}`))
			eventually(t, 5*time.Second, "a dead letter", func() bool {
				return len(deadLetters(t, bus, SensorGroup("radar", "bad"))) == 1
			})
			eventually(t, 5*time.Second, "the good function invoked", func() bool { return good.count() == 1 })
			if ids := good.ids(t); len(ids) != 1 || ids[0] != "P1" {
				t.Errorf("good function got events %v, want [P1]", ids)
			}
			if n := bad.count(); n != 3 {
				t.Errorf("failing function invoked %d times, want 3", n)
			}
			dl := deadLetters(t, bus, SensorGroup("radar", "bad"))[0]
			ev, err := cloudevent.Unmarshal(dl.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if dl.Attempts != 3 || ev.ID() != "P1" {
				t.Errorf("dead letter: %d attempts, event %s, want 3 and P1", dl.Attempts, ev.ID())
			}
			time.Sleep(100 * time.Millisecond) // no late duplicate at the good function
			if n := good.count(); n != 1 {
				t.Errorf("good function invoked %d times, want 1", n)
			}
		})
	}
}

// TestSensorKubernetesTarget creates a ConfigMap per event on a real API
// server, named after the event and carrying its subject through a
// parameter; a user without permission gets Forbidden, which is permanent:
// one attempt, then a dead letter.
func TestSensorKubernetesTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	t.Parallel()
	srv := kubetest.Start(t)
	dir := t.TempDir()
	admin, err := srv.Kubeconfig(dir, srv.AdminToken, "default")
	if err != nil {
		t.Fatal(err)
	}
	rdir := t.TempDir()
	restricted, err := srv.Kubeconfig(rdir, srv.RestrictedToken, "default")
	if err != nil {
		t.Fatal(err)
	}
	trig := config.SensorTrigger{
		Name: "record",
		Kubernetes: &config.KubernetesTarget{DeterministicName: true,
			Manifest: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"plate-"},"data":{"k":"v"}}`},
		Parameters: []config.Parameter{{Src: "plate.subject", Dest: "kubernetes.data.subject"}},
		Delivery:   deliverySpec(2, "PT0.05S"),
	}

	bus := newBus(t)
	d, _ := newDispatcher(t, Config{Bus: bus, Kubeconfig: admin})
	apply(t, d, sensorSnap(sensor("radar", plateDep, trig)))
	publish(t, bus, flash("P1", "radar.plate.read", "AB-123", `{}`))

	client := apiClient(t, srv)
	var items []configMap
	eventually(t, 10*time.Second, "a ConfigMap", func() bool {
		items = listConfigMaps(t, client, srv, "signalbox.dev/sensor=radar")
		return len(items) == 1
	})
	if got := items[0].Data["subject"]; got != "AB-123" || items[0].Data["k"] != "v" {
		t.Errorf("ConfigMap data = %v, want subject AB-123 and k v", items[0].Data)
	}
	if !strings.HasPrefix(items[0].Metadata.Name, "plate-") {
		t.Errorf("ConfigMap name %q, want a deterministic plate-...", items[0].Metadata.Name)
	}

	// The restricted user may not create ConfigMaps: Forbidden is permanent.
	rbus := newBus(t)
	rd, _ := newDispatcher(t, Config{Bus: rbus, Kubeconfig: restricted})
	apply(t, rd, sensorSnap(sensor("radar2", plateDep, trig)))
	publish(t, rbus, flash("P2", "radar.plate.read", "CD-456", `{}`))
	eventually(t, 10*time.Second, "a dead letter", func() bool {
		return len(deadLetters(t, rbus, SensorGroup("radar2", "record"))) == 1
	})
	if dl := deadLetters(t, rbus, SensorGroup("radar2", "record"))[0]; dl.Attempts != 1 || dl.Code != http.StatusForbidden {
		t.Errorf("dead letter after %d attempts with code %d, want 1 attempt and 403", dl.Attempts, dl.Code)
	}
}

func apiClient(t *testing.T, srv *kubetest.Server) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(srv.CAPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

type configMap struct {
	Metadata struct{ Name string }
	Data     map[string]string
}

// listConfigMaps lists the ConfigMaps of namespace default that selector
// matches, as the administrator.
func listConfigMaps(t *testing.T, c *http.Client, srv *kubetest.Server, selector string) []configMap {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/namespaces/default/configmaps?labelSelector="+
		url.QueryEscape(selector), nil)
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct{ Items []configMap }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatalf("list ConfigMaps: %v", err)
	}
	return list.Items
}

// TestSecretDigest: secrets marshal as a placeholder, so the fingerprint
// holds their digest; a rotated secret restarts the trigger.
func TestSecretDigest(t *testing.T) {
	ow := func(auth string) *config.SensorTrigger {
		return &config.SensorTrigger{OpenWhisk: &config.OpenWhiskTarget{Auth: config.NewSecret([]byte(auth))}}
	}
	lam := func(key string) *config.SensorTrigger {
		return &config.SensorTrigger{Lambda: &config.LambdaTarget{
			AccessKey: &config.SecretRef{Secret: config.NewSecret([]byte("id"))},
			SecretKey: &config.SecretRef{Secret: config.NewSecret([]byte(key))}}}
	}
	tests := []struct {
		name string
		a, b *config.SensorTrigger
		same bool
	}{
		{"openwhisk same", ow("u:k"), ow("u:k"), true},
		{"openwhisk rotated", ow("u:k"), ow("u:k2"), false},
		{"lambda rotated", lam("k"), lam("k2"), false},
		{"no secrets", &config.SensorTrigger{}, &config.SensorTrigger{}, true},
	}
	for _, tt := range tests {
		if got := secretDigest(tt.a) == secretDigest(tt.b); got != tt.same {
			t.Errorf("%s: equal digests = %v, want %v", tt.name, got, tt.same)
		}
		if strings.Contains(secretDigest(tt.a), "u:k") {
			t.Errorf("%s: the digest holds the secret", tt.name)
		}
	}
}
