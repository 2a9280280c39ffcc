package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/rest"

	"github.com/signalbox-dev/signalbox/functions"
)

const jobManifest = `
apiVersion: batch/v1
kind: Job
metadata:
  generateName: build-
  labels: {app: builder}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: main
          image: busybox:1.36
          command: [echo]
          args: [subject]
`

func TestApplyParameter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		dest  string
		value any
		op    string
		want  string // JSON of the value at want path
		path  string
		err   string
	}{
		{name: "overwrite a list element", dest: "spec.template.spec.containers.0.image", value: "alpine:3",
			path: "spec.template.spec.containers.0.image", want: `"alpine:3"`},
		{name: "append to a list", dest: "spec.template.spec.containers.0.args", value: "order 42", op: Append,
			path: "spec.template.spec.containers.0.args", want: `["subject","order 42"]`},
		{name: "prepend a list to a list", dest: "spec.template.spec.containers.0.args", value: []string{"-n", "x"},
			op: Prepend, path: "spec.template.spec.containers.0.args", want: `["-n","x","subject"]`},
		{name: "append past the end", dest: "spec.template.spec.containers.0.args.-1", value: "z",
			path: "spec.template.spec.containers.0.args", want: `["subject","z"]`},
		{name: "index equal to length", dest: "spec.template.spec.containers.0.args.1", value: "z",
			path: "spec.template.spec.containers.0.args", want: `["subject","z"]`},
		{name: "append to a string", dest: "metadata.generateName", value: "eu-", op: Append,
			path: "metadata.generateName", want: `"build-eu-"`},
		{name: "prepend to a string", dest: "metadata.generateName", value: "eu-", op: Prepend,
			path: "metadata.generateName", want: `"eu-build-"`},
		{name: "append where nothing is", dest: "metadata.annotations.note", value: "hi", op: Append,
			path: "metadata.annotations.note", want: `"hi"`},
		{name: "escaped dots", dest: `metadata.labels.app\.kubernetes\.io/name`, value: "orders",
			path: "metadata.labels", want: `{"app":"builder","app.kubernetes.io/name":"orders"}`},
		{name: "integers stay integers", dest: "spec.backoffLimit", value: 3, path: "spec.backoffLimit", want: `3`},
		{name: "new list", dest: "spec.template.spec.containers.0.env.0", value: map[string]any{"name": "A", "value": "1"},
			path: "spec.template.spec.containers.0.env", want: `[{"name":"A","value":"1"}]`},
		{name: "whole object", dest: "spec.template.metadata", value: map[string]any{"labels": map[string]string{"a": "b"}},
			path: "spec.template.metadata", want: `{"labels":{"a":"b"}}`},
		{name: "index out of range", dest: "spec.template.spec.containers.5.image", value: "x", err: "not an index"},
		{name: "key into a list", dest: "spec.template.spec.containers.main", value: "x", err: "not an index"},
		{name: "into a string", dest: "metadata.generateName.x", value: "x", err: "is a string"},
		{name: "join number to string", dest: "metadata.generateName", value: 1, op: Append,
			path: "metadata.generateName", want: `"build-1"`},
		{name: "append to a number", dest: "spec.backoffLimit", value: 1, op: Append,
			path: "spec.backoffLimit", want: `"01"`},
		{name: "empty segment", dest: "spec..x", value: 1, err: "empty segment"},
		{name: "empty dest", dest: "", value: 1, err: "empty path"},
		{name: "unknown op", dest: "spec.x", value: 1, op: "merge", err: "operation"},
		{name: "unencodable value", dest: "spec.x", value: func() {}, err: "value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := ParseManifest(jobManifest)
			if err != nil {
				t.Fatal(err)
			}
			m := obj.Object
			err = ApplyParameter(m, tc.dest, tc.value, tc.op)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ApplyParameter error = %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(lookup(t, m, tc.path))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("%s = %s, want %s", tc.path, got, tc.want)
			}
			// Unstructured content must hold only JSON types; DeepCopy
			// panics otherwise.
			obj.DeepCopy()
		})
	}
}

func lookup(t *testing.T, m map[string]any, path string) any {
	t.Helper()
	var cur any = m
	for _, seg := range strings.Split(path, ".") {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[seg]
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i >= len(c) {
				t.Fatalf("bad index %s", seg)
			}
			cur = c[i]
		default:
			t.Fatalf("%s: not a container", path)
		}
	}
	return cur
}

func FuzzApplyParameter(f *testing.F) {
	f.Add("spec.template.spec.containers.0.args", `"x"`, "append")
	f.Add(`metadata.labels.a\.b`, `{"k":[1,2.5,null]}`, "")
	f.Add("spec.-1.0.-1", `[true]`, "prepend")
	f.Add(`a\\.b\.`, `"s"`, "overwrite")
	f.Fuzz(func(t *testing.T, dest, value, op string) {
		obj, err := ParseManifest(jobManifest)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if json.Unmarshal([]byte(value), &v) != nil {
			v = value
		}
		if ApplyParameter(obj.Object, dest, v, op) == nil {
			// Whatever was set must still be a valid unstructured object.
			obj.DeepCopy()
			if _, err := obj.MarshalJSON(); err != nil {
				t.Fatalf("manifest no longer encodes: %v", err)
			}
		}
	})
}

func TestDeterministicName(t *testing.T) {
	t.Parallel()
	dns1123 := regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	a := DeterministicName("build-", "s", "t", "/src", "id-1")
	tests := []struct {
		name   string
		got    string
		same   bool
		prefix string
	}{
		{"stable", DeterministicName("build-", "s", "t", "/src", "id-1"), true, "build-"},
		{"other id", DeterministicName("build-", "s", "t", "/src", "id-2"), false, "build-"},
		{"other source", DeterministicName("build-", "s", "t", "/other", "id-1"), false, "build-"},
		{"other trigger", DeterministicName("build-", "s", "t2", "/src", "id-1"), false, "build-"},
		{"fields do not run together", DeterministicName("build-", "s", "t/", "src", "id-1"), false, "build-"},
		{"odd prefix", DeterministicName("Build_Job.", "s", "t", "/src", "id-1"), true, "build-job-"},
		{"long prefix", DeterministicName(strings.Repeat("a", 80), "s", "t", "/src", "id-1"), true, strings.Repeat("a", 47)},
		{"leading dashes", DeterministicName("--x-", "s", "t", "/src", "id-1"), true, "x-"},
	}
	for _, tc := range tests {
		if len(tc.got) > 63 || !dns1123.MatchString(tc.got) {
			t.Errorf("%s: %q is not a DNS-1123 label", tc.name, tc.got)
		}
		if !strings.HasPrefix(tc.got, tc.prefix) {
			t.Errorf("%s: %q does not start with %q", tc.name, tc.got, tc.prefix)
		}
		if suffix := tc.got[len(tc.got)-16:]; (suffix == a[len(a)-16:]) != tc.same {
			t.Errorf("%s: %q vs %q: same hash %v, want %v", tc.name, tc.got, a, !tc.same, tc.same)
		}
	}
}

func TestLabelValue(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"order-42":                             "order-42",
		"3f1c2a9e-8d6b-4f0e-9a7c-1b2d3e4f5a6b": "3f1c2a9e-8d6b-4f0e-9a7c-1b2d3e4f5a6b",
		"a/b":                                  "",
		strings.Repeat("x", 64):                "",
		"-lead":                                "",
		"":                                     "",
	} {
		got := labelValue(in)
		if want != "" && got != want {
			t.Errorf("labelValue(%q) = %q, want it unchanged", in, got)
		}
		if want == "" && in != "" && (len(got) != 40 || got == in) {
			t.Errorf("labelValue(%q) = %q, want a 40-digit hash", in, got)
		}
	}
}

func TestParseManifest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, manifest, err string
	}{
		{"yaml", jobManifest, ""},
		{"json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}`, ""},
		{"empty", "", "empty"},
		{"no kind", "apiVersion: v1\nmetadata: {name: x}\n", "kind"},
		{"two documents", "apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: Secret\n", "several"},
		{"list", "apiVersion: v1\nkind: List\nitems: []\n", "list"},
		{"not an object", "- a\n- b\n", ""},
	}
	for _, tc := range tests {
		obj, err := ParseManifest(tc.manifest)
		switch {
		case tc.name == "not an object":
			if err == nil {
				t.Errorf("%s: no error", tc.name)
			}
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.err)):
			t.Errorf("%s: error %v, want one with %q", tc.name, err, tc.err)
		case tc.name == "yaml":
			if v, _ := obj.Object["spec"].(map[string]any)["backoffLimit"].(int64); v != 0 {
				t.Errorf("backoffLimit = %#v, want int64 0", obj.Object["spec"].(map[string]any)["backoffLimit"])
			}
		}
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	rc := &rest.Config{Host: "https://127.0.0.1:1"}
	ok := Config{Manifest: jobManifest, Sensor: "s", Trigger: "t", RESTConfig: rc}
	tests := []struct {
		name   string
		modify func(c *Config)
		want   string
	}{
		{"operation", func(c *Config) { c.Operation = "apply" }, "Operation"},
		{"patch strategy", func(c *Config) { c.Operation = Patch; c.PatchStrategy = "json" }, "PatchStrategy"},
		{"strategy without patch", func(c *Config) { c.PatchStrategy = MergePatch }, "PatchStrategy"},
		{"sensor", func(c *Config) { c.Sensor = "" }, "Sensor"},
		{"trigger", func(c *Config) { c.Trigger = "" }, "Trigger"},
		{"rest config", func(c *Config) { c.RESTConfig = nil }, "RESTConfig"},
		{"manifest", func(c *Config) { c.Manifest = "kind: Job" }, "Manifest"},
	}
	for _, tc := range tests {
		cfg := ok
		tc.modify(&cfg)
		if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New error = %v, want one naming %s", tc.name, err, tc.want)
		}
	}
	tg, err := New(ok, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := tg.Destination(); d != "kubernetes:create:batch/v1/Job:default/build-" {
		t.Errorf("Destination = %q", d)
	}
	if rc.QPS != 0 || rc.WarningHandler != nil {
		t.Error("New modified the caller's RESTConfig")
	}
}

// TestClassify maps API errors, built as the API server reports them, to
// outcomes; the real server produces several of them in the integration
// tests too.
func TestClassify(t *testing.T) {
	t.Parallel()
	gr := schema.GroupResource{Group: "batch", Resource: "jobs"}
	tg, err := New(Config{Manifest: jobManifest, Sensor: "s", Trigger: "t",
		RESTConfig: &rest.Config{Host: "https://127.0.0.1:1", BearerToken: "token-never-shown"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		err        error
		want       functions.Result
		status     int
		retryAfter time.Duration
	}{
		{"conflict", apierrors.NewConflict(gr, "x", errors.New("changed")), functions.Retryable, 409, 0},
		{"already exists outside create", apierrors.NewAlreadyExists(gr, "x"), functions.Retryable, 409, 0},
		{"generated name collision", apierrors.NewGenerateNameConflict(gr, "x", 1), functions.Retryable, 409, time.Second},
		{"not found", apierrors.NewNotFound(gr, "x"), functions.Retryable, 404, 0},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 4), functions.Retryable, 429, 4 * time.Second},
		{"server timeout", apierrors.NewServerTimeout(gr, "create", 2), functions.Retryable, 500, 2 * time.Second},
		{"gateway timeout", apierrors.NewTimeoutError("timeout", 0), functions.Retryable, 504, 0},
		{"internal", apierrors.NewInternalError(errors.New("etcd")), functions.Retryable, 500, 0},
		{"unavailable", apierrors.NewServiceUnavailable("down"), functions.Retryable, 503, 0},
		{"forbidden", apierrors.NewForbidden(gr, "x", errors.New("no")), functions.Permanent, 403, 0},
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Group: "batch", Kind: "Job"}, "x",
			field.ErrorList{field.Required(field.NewPath("spec"), "")}), functions.Permanent, 422, 0},
		{"bad request", apierrors.NewBadRequest("bad"), functions.Permanent, 400, 0},
		{"unauthorized", apierrors.NewUnauthorized("who"), functions.Permanent, 401, 0},
		{"too large", apierrors.NewRequestEntityTooLargeError("big"), functions.Permanent, 413, 0},
		{"transport", errors.New("dial tcp: connection refused"), functions.Retryable, functions.NoResponse, 0},
		{"secret echoed", apierrors.NewBadRequest("token token-never-shown"), functions.Permanent, 400, 0},
	}
	for _, tc := range tests {
		out := tg.failure(context.Background(), tc.err, nil)
		if out.Result != tc.want || out.Status != tc.status || out.RetryAfter != tc.retryAfter {
			t.Errorf("%s: %v %d %v, want %v %d %v", tc.name, out.Result, out.Status, out.RetryAfter,
				tc.want, tc.status, tc.retryAfter)
		}
		if out.Err == nil || strings.Contains(out.Err.Error(), "token-never-shown") ||
			strings.Contains(string(out.Body), "token-never-shown") {
			t.Errorf("%s: Err %v, Body %s: want an error without the token", tc.name, out.Err, out.Body)
		}
		if tc.status != functions.NoResponse && len(out.Body) == 0 {
			t.Errorf("%s: no Body for the dead letter", tc.name)
		}
		if tc.name == "forbidden" && !apierrors.IsForbidden(out.Err) {
			t.Errorf("%s: the error chain lost the API status: %v", tc.name, out.Err)
		}
	}
}

func TestNamelessDeleteIsPermanent(t *testing.T) {
	t.Parallel()
	tg, err := New(Config{Operation: Delete, Manifest: jobManifest, Sensor: "s", Trigger: "t",
		RESTConfig: &rest.Config{Host: "https://127.0.0.1:1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := tg.Send(context.Background(), testEvent("e-1", "s"))
	if out.Result != functions.Permanent || !strings.Contains(out.Err.Error(), "metadata.name") {
		t.Fatalf("Send = %+v, want permanent for a delete without a name", out)
	}
}

func TestWithManifest(t *testing.T) {
	t.Parallel()
	tg, err := New(Config{Manifest: jobManifest, Sensor: "s", Trigger: "t",
		RESTConfig: &rest.Config{Host: "https://127.0.0.1:1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := tg.Manifest()
	m["spec"] = "changed"
	if reflect.DeepEqual(m, tg.Manifest()) {
		t.Fatal("Manifest returned the configured manifest itself")
	}

	bad := tg.WithManifest(map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "data": func() {}})
	out := bad.Send(context.Background(), testEvent("e-1", "s"))
	if out.Result != functions.Permanent || bad.Destination() != tg.Destination() {
		t.Fatalf("Send of an unencodable manifest = %+v", out)
	}
	noKind := tg.WithManifest(map[string]any{"metadata": map[string]any{"name": "x"}})
	if out := noKind.Send(context.Background(), testEvent("e-1", "s")); out.Result != functions.Permanent {
		t.Fatalf("Send of a manifest without kind = %+v", out)
	}
}
