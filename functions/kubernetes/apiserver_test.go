package kubernetes

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/signalbox-dev/signalbox/functions"
	"github.com/signalbox-dev/signalbox/functions/functionstest"
	"github.com/signalbox-dev/signalbox/functions/functionstest/kubetest"
)

var (
	jobsGVR       = schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}
	configMapsGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	crdGVR        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1",
		Resource: "customresourcedefinitions"}
)

// cluster is the API server shared by the subtests of TestAPIServer.
type cluster struct {
	srv   *kubetest.Server
	admin dynamic.Interface
	seq   atomic.Int64
}

func (c *cluster) restConfig(token string) *rest.Config {
	return &rest.Config{Host: c.srv.URL, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: c.srv.CAPEM}}
}

// unique returns a name no other subtest uses.
func (c *cluster) unique(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, c.seq.Add(1))
}

func (c *cluster) target(t *testing.T, cfg Config, log *slog.Logger) *Target {
	t.Helper()
	if cfg.RESTConfig == nil {
		cfg.RESTConfig = c.restConfig(c.srv.AdminToken)
	}
	if cfg.Sensor == "" {
		cfg.Sensor = c.unique("sensor")
	}
	if cfg.Trigger == "" {
		cfg.Trigger = "run"
	}
	tg, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func (c *cluster) list(t *testing.T, gvr schema.GroupVersionResource, ns, selector string) []unstructured.Unstructured {
	t.Helper()
	l, err := c.admin.Resource(gvr).Namespace(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func testEvent(id, subject string) *event.Event {
	e := event.New("1.0")
	e.SetID(id)
	e.SetSource("/shop")
	e.SetType("com.example.order.created")
	e.SetSubject(subject)
	_ = e.SetData("application/json", map[string]any{"order": 42})
	return &e
}

// TestAPIServer runs every test that needs a real API server against one
// kube-apiserver and etcd, started once (in about three seconds once the
// binaries are cached).
func TestAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	c := &cluster{srv: kubetest.Start(t)}
	admin, err := dynamic.NewForConfig(c.restConfig(c.srv.AdminToken))
	if err != nil {
		t.Fatal(err)
	}
	c.admin = admin

	t.Run("conformance", func(t *testing.T) { t.Parallel(); testConformance(t, c) })
	t.Run("job per event", func(t *testing.T) { t.Parallel(); testJobPerEvent(t, c) })
	t.Run("forbidden", func(t *testing.T) { t.Parallel(); testForbidden(t, c) })
	t.Run("invalid", func(t *testing.T) { t.Parallel(); testInvalid(t, c) })
	t.Run("operations", func(t *testing.T) { t.Parallel(); testOperations(t, c) })
	t.Run("missing namespace", func(t *testing.T) { t.Parallel(); testMissingNamespace(t, c) })
	t.Run("cluster scoped", func(t *testing.T) { t.Parallel(); testClusterScoped(t, c) })
	t.Run("custom resource", func(t *testing.T) { t.Parallel(); testCustomResource(t, c) })
	t.Run("one attempt per send", func(t *testing.T) { t.Parallel(); testOneAttempt(t, c) })
	t.Run("kubeconfig", func(t *testing.T) { t.Parallel(); testKubeconfig(t, c) })
}

// proxy puts a local server in front of the API server: intercept answers a
// request itself by returning true; everything else reaches the real server.
func (c *cluster) proxy(t *testing.T, intercept func(w http.ResponseWriter, r *http.Request) bool) string {
	t.Helper()
	u, err := url.Parse(c.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.srv.CAPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = tr
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if intercept == nil || !intercept(w, r) {
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(tr.CloseIdleConnections)
	return srv.URL
}

// hang holds a request until its client gives up or the test ends. The body
// is read first: only then does the server notice the client leaving.
func hang(t *testing.T, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	select {
	case <-r.Context().Done():
	case <-t.Context().Done():
	}
}

// testConformance runs the shared suite: success, permanent (RBAC Forbidden)
// and retryable (the namespace does not exist) come from the real API
// server; throttling and the hung request from the proxy in front of it,
// since a test cannot make a real server overloaded on cue.
func testConformance(t *testing.T, c *cluster) {
	const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: conformance-}\ndata: {k: v}\n"
	functionstest.Run(t, functionstest.Harness{
		NoReplies: true,
		// The first attempt also discovers the server's kinds.
		Timeout: 2 * time.Second,
		Start: func(t *testing.T, s functionstest.Scenario, log *slog.Logger) functionstest.Fixture {
			sensor := c.unique("conformance")
			rc := c.restConfig(c.srv.AdminToken)
			cfg := Config{Manifest: cm, Sensor: sensor, DeterministicName: true, RESTConfig: rc}
			switch s.Case {
			case functionstest.Retryable:
				cfg.Namespace = "no-such-namespace"
			case functionstest.Permanent:
				rc.BearerToken = c.srv.RestrictedToken
			case functionstest.RetryAfter:
				rc.Host = c.proxy(t, func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method != http.MethodPost {
						return false
					}
					w.Header().Set("Content-Type", "application/json")
					w.Header().Set("Retry-After", fmt.Sprint(int(s.RetryAfter.Seconds())))
					w.WriteHeader(http.StatusTooManyRequests)
					_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",` +
						`"message":"too many requests, please try again later","reason":"TooManyRequests",` +
						`"details":{"retryAfterSeconds":` + fmt.Sprint(int(s.RetryAfter.Seconds())) + `},"code":429}`))
					return true
				})
			case functionstest.Timeout:
				rc.Host = c.proxy(t, func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method != http.MethodPost {
						return false
					}
					hang(t, r)
					return true
				})
			}
			return functionstest.Fixture{
				Target: c.target(t, cfg, log),
				Received: func() []string {
					var ids []string
					for _, o := range c.list(t, configMapsGVR, "default", LabelSensor+"="+sensor) {
						ids = append(ids, o.GetAnnotations()[AnnotationEventID])
					}
					return ids
				},
				Secrets: []string{c.srv.AdminToken, c.srv.RestrictedToken},
			}
		},
	})
}

// testJobPerEvent: each event creates one Job whose container args end with
// the event's subject (set through ApplyParameter), labelled with the
// sensor, trigger and event; a redelivery creates no second Job.
func testJobPerEvent(t *testing.T, c *cluster) {
	var logs functionstest.LogBuffer
	tg := c.target(t, Config{Manifest: jobManifest, Trigger: "build", DeterministicName: true}, logs.Logger())
	send := func(e *event.Event) functions.Outcome {
		m := tg.Manifest()
		if err := ApplyParameter(m, "spec.template.spec.containers.0.args", e.Subject(), Append); err != nil {
			t.Fatal(err)
		}
		return tg.WithManifest(m).Send(context.Background(), e)
	}

	// A retry sends the same manifest again; a redelivery computes it again.
	first := testEvent("order-42", "orders/42")
	m := tg.Manifest()
	if err := ApplyParameter(m, "spec.template.spec.containers.0.args", first.Subject(), Append); err != nil {
		t.Fatal(err)
	}
	withParams := tg.WithManifest(m)
	for i := range 2 {
		if out := withParams.Send(context.Background(), first); out.Result != functions.Success || out.Err != nil {
			t.Fatalf("attempt %d: %+v", i+1, out)
		}
	}
	if out := send(first); out.Result != functions.Success || out.Err != nil {
		t.Fatalf("redelivery: %+v", out)
	}
	jobs := c.list(t, jobsGVR, "default", LabelSensor+"="+tg.sensor+","+LabelEventID+"=order-42")
	if len(jobs) != 1 {
		t.Fatalf("%d Jobs for one event sent twice, want 1", len(jobs))
	}
	job := jobs[0]
	wantName := DeterministicName("build-", tg.sensor, "build", "/shop", "order-42")
	if job.GetName() != wantName {
		t.Errorf("Job name %q, want %q", job.GetName(), wantName)
	}
	labels := job.GetLabels()
	if labels[LabelSensor] != tg.sensor || labels[LabelTrigger] != "build" || labels["app"] != "builder" {
		t.Errorf("Job labels %v", labels)
	}
	if a := job.GetAnnotations(); a[AnnotationEventID] != "order-42" || a[AnnotationEventSource] != "/shop" {
		t.Errorf("Job annotations %v", a)
	}
	containers, _, _ := unstructured.NestedSlice(job.Object, "spec", "template", "spec", "containers")
	args, _ := containers[0].(map[string]any)["args"].([]any)
	if !slices.Equal(args, []any{"subject", "orders/42"}) {
		t.Errorf("container args %v, want [subject orders/42]", args)
	}

	if out := send(testEvent("order-43", "orders/43")); out.Result != functions.Success {
		t.Fatalf("second event: %+v", out)
	}
	if n := len(c.list(t, jobsGVR, "default", LabelSensor+"="+tg.sensor)); n != 2 {
		t.Fatalf("%d Jobs after two events, want 2", n)
	}
	if !strings.Contains(logs.String(), "already exists") {
		t.Errorf("the redelivery was not logged as finding the Job: %s", logs.String())
	}
}

// testForbidden: a user RBAC does not allow to create Jobs gets a permanent
// outcome carrying the API server's message, and no token anywhere.
func testForbidden(t *testing.T, c *cluster) {
	var logs functionstest.LogBuffer
	tg := c.target(t, Config{Manifest: jobManifest, RESTConfig: c.restConfig(c.srv.RestrictedToken)}, logs.Logger())
	out := tg.Send(context.Background(), testEvent("e-1", "s"))
	want := `User "` + kubetest.RestrictedUser + `" cannot create resource "jobs" in API group "batch"`
	if out.Result != functions.Permanent || out.Status != http.StatusForbidden || !strings.Contains(out.Err.Error(), want) {
		t.Fatalf("Send = %+v, want permanent 403 with %q", out, want)
	}
	var status metav1.Status
	if err := json.Unmarshal(out.Body, &status); err != nil || !strings.Contains(status.Message, want) ||
		status.Reason != metav1.StatusReasonForbidden {
		t.Errorf("Body = %s, want the API server's Status", out.Body)
	}
	for _, s := range []string{c.srv.RestrictedToken, c.srv.AdminToken} {
		if strings.Contains(out.Err.Error(), s) || strings.Contains(string(out.Body), s) || strings.Contains(logs.String(), s) {
			t.Fatal("a token leaked into the outcome or the log")
		}
	}
}

func testInvalid(t *testing.T, c *cluster) {
	tg := c.target(t, Config{Manifest: "apiVersion: batch/v1\nkind: Job\nmetadata: {generateName: bad-}\nspec: {}\n"}, nil)
	out := tg.Send(context.Background(), testEvent("e-1", "s"))
	if out.Result != functions.Permanent || out.Status != http.StatusUnprocessableEntity ||
		!strings.Contains(out.Err.Error(), "is invalid") {
		t.Fatalf("Send = %+v, want permanent 422 Invalid", out)
	}
}

// testOperations walks a ConfigMap through update (which creates it), update,
// merge patch, apply, delete and a second delete.
func testOperations(t *testing.T, c *cluster) {
	name := c.unique("ops")
	manifest := func(data string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata: %s\n", name, data)
	}
	get := func() map[string]any {
		o, err := c.admin.Resource(configMapsGVR).Namespace("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return o.Object
	}
	steps := []struct {
		cfg      Config
		wantData map[string]any
		gone     bool
	}{
		{Config{Operation: Update, Manifest: manifest("{a: '1'}")}, map[string]any{"a": "1"}, false},
		{Config{Operation: Update, Manifest: manifest("{b: '2'}")}, map[string]any{"b": "2"}, false},
		{Config{Operation: Patch, Manifest: manifest("{c: '3'}")}, map[string]any{"b": "2", "c": "3"}, false},
		{Config{Operation: Patch, PatchStrategy: StrategicMergePatch, Manifest: manifest("{d: '4'}")},
			map[string]any{"b": "2", "c": "3", "d": "4"}, false},
		{Config{Operation: Patch, PatchStrategy: ApplyPatch, Manifest: manifest("{e: '5'}")},
			map[string]any{"b": "2", "c": "3", "d": "4", "e": "5"}, false},
		{Config{Operation: Delete, Manifest: manifest("{}")}, nil, true},
		{Config{Operation: Delete, Manifest: manifest("{}")}, nil, true},
	}
	for i, st := range steps {
		out := c.target(t, st.cfg, nil).Send(context.Background(), testEvent(fmt.Sprintf("op-%d", i), "s"))
		if out.Result != functions.Success {
			t.Fatalf("step %d (%s): %+v", i, st.cfg.Operation, out)
		}
		obj := get()
		if st.gone {
			if obj != nil {
				t.Fatalf("step %d: the ConfigMap still exists", i)
			}
			continue
		}
		data, _, _ := unstructured.NestedMap(obj, "data")
		if fmt.Sprint(data) != fmt.Sprint(st.wantData) {
			t.Fatalf("step %d (%s): data %v, want %v", i, st.cfg.Operation, data, st.wantData)
		}
		labels, _, _ := unstructured.NestedStringMap(obj, "metadata", "labels")
		if labels[LabelEventID] != fmt.Sprintf("op-%d", i) {
			t.Errorf("step %d: labels %v, want this event's id", i, labels)
		}
	}
	out := c.target(t, Config{Operation: Patch, Manifest: manifest("{x: '1'}")}, nil).
		Send(context.Background(), testEvent("op-missing", "s"))
	if out.Result != functions.Retryable || out.Status != http.StatusNotFound {
		t.Fatalf("patch of a missing object = %+v, want retryable 404", out)
	}
}

func testMissingNamespace(t *testing.T, c *cluster) {
	tg := c.target(t, Config{Manifest: jobManifest, Namespace: "not-yet"}, nil)
	out := tg.Send(context.Background(), testEvent("e-1", "s"))
	if out.Result != functions.Retryable || out.Status != http.StatusNotFound || !strings.Contains(out.Err.Error(), "not-yet") {
		t.Fatalf("Send = %+v, want retryable 404 naming the namespace", out)
	}
}

func testClusterScoped(t *testing.T, c *cluster) {
	tg := c.target(t, Config{Manifest: "apiVersion: v1\nkind: Namespace\nmetadata: {generateName: sb-}\n",
		Namespace: "ignored", DeterministicName: true}, nil)
	e := testEvent("ns-1", "s")
	if out := tg.Send(context.Background(), e); out.Result != functions.Success {
		t.Fatalf("Send = %+v", out)
	}
	name := DeterministicName("sb-", tg.sensor, "run", "/shop", "ns-1")
	nsGVR := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	if _, err := c.admin.Resource(nsGVR).Get(context.Background(), name, metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace %s: %v", name, err)
	}
}

// testCustomResource: a kind the server does not serve is permanent; once
// its CRD is installed, the same target creates it (discovery is refreshed).
func testCustomResource(t *testing.T, c *cluster) {
	group := c.unique("workflows") + ".example.com"
	manifest := "apiVersion: " + group + "/v1alpha1\nkind: Workflow\nmetadata: {generateName: wf-}\nspec: {entrypoint: main}\n"
	tg := c.target(t, Config{Manifest: manifest}, nil)
	tg.resetEvery = 0

	out := tg.Send(context.Background(), testEvent("wf-1", "s"))
	if out.Result != functions.Permanent || !strings.Contains(out.Err.Error(), "no such kind") {
		t.Fatalf("Send before the CRD = %+v, want permanent", out)
	}

	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "workflows." + group},
		"spec": map[string]any{
			"group": group, "scope": "Namespaced",
			"names": map[string]any{"plural": "workflows", "singular": "workflow", "kind": "Workflow", "listKind": "WorkflowList"},
			"versions": []any{map[string]any{"name": "v1alpha1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object",
					"x-kubernetes-preserve-unknown-fields": true}}}},
		},
	}}
	if _, err := c.admin.Resource(crdGVR).Create(context.Background(), crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out = tg.Send(context.Background(), testEvent("wf-1", "s"))
		if out.Result == functions.Success || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out.Result != functions.Success {
		t.Fatalf("Send after the CRD = %+v", out)
	}
	wfGVR := schema.GroupVersionResource{Group: group, Version: "v1alpha1", Resource: "workflows"}
	if n := len(c.list(t, wfGVR, "default", LabelEventID+"=wf-1")); n != 1 {
		t.Fatalf("%d Workflows, want 1", n)
	}
}

// testOneAttempt: client-go would retry a 429 or 5xx with Retry-After up to
// ten times within one call; a Send must make exactly one request.
func testOneAttempt(t *testing.T, c *cluster) {
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		var posts atomic.Int32
		host := c.proxy(t, func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodPost {
				return false
			}
			posts.Add(1)
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(status)
			return true
		})
		rc := c.restConfig(c.srv.AdminToken)
		rc.Host = host
		out := c.target(t, Config{Manifest: jobManifest, RESTConfig: rc}, nil).Send(context.Background(), testEvent("e-1", "s"))
		if out.Result != functions.Retryable || out.Status != status || out.RetryAfter != time.Second {
			t.Errorf("%d: Send = %+v, want retryable with RetryAfter 1s", status, out)
		}
		if n := posts.Load(); n != 1 {
			t.Errorf("%d: %d requests in one Send, want 1", status, n)
		}
	}
}

// testKubeconfig loads the configuration as the command line does, from a
// kubeconfig file whose context names a namespace.
func testKubeconfig(t *testing.T, c *cluster) {
	path, err := c.srv.Kubeconfig(t.TempDir(), c.srv.AdminToken, "kube-system")
	if err != nil {
		t.Fatal(err)
	}
	rc, ns, err := LoadRESTConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if ns != "kube-system" {
		t.Errorf("namespace %q, want kube-system", ns)
	}
	sensor := c.unique("kubeconfig")
	tg := c.target(t, Config{Manifest: "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: kc-}\n",
		Sensor: sensor, Namespace: ns, RESTConfig: rc}, nil)
	if out := tg.Send(context.Background(), testEvent("e-1", "s")); out.Result != functions.Success {
		t.Fatalf("Send = %+v", out)
	}
	if n := len(c.list(t, configMapsGVR, "kube-system", LabelSensor+"="+sensor)); n != 1 {
		t.Fatalf("%d ConfigMaps in kube-system, want 1", n)
	}
}
