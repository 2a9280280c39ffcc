package config

import (
	"fmt"
	"strings"
	"testing"
)

// sensorWith is a Sensor whose only trigger is body (indented under the
// trigger's name); line 8 is the first line of body.
func sensorWith(body string) string {
	return yamlDoc(`
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: radar}
spec:
  broker: default
  dependencies: [{name: plate, filter: 'true'}]
  triggers:
    - name: fire
`) + body + defaultBroker
}

func TestLoadSensorTargets(t *testing.T) {
	t.Setenv("SB_TEST_AWS_ID", "AKIDEXAMPLE")
	t.Setenv("SB_TEST_AWS_KEY", "aws-secret-key")
	t.Setenv("SB_TEST_OW_AUTH", "uuid-1:ow-key")
	doc := sensorWith(`      lambda:
        functionName: fines
        region: eu-west-1
        endpoint: http://localhost:4566
        accessKey: {secretFrom: env:SB_TEST_AWS_ID}
        secretKey: {secretFrom: env:SB_TEST_AWS_KEY}
    - name: ow
      openwhisk: {host: 'https://ow.example', action: pkg/fine, authFrom: env:SB_TEST_OW_AUTH, blocking: false}
    - name: job
      kubernetes:
        deterministicName: true
        manifest:
          apiVersion: batch/v1
          kind: Job
          metadata: {generateName: fine-}
          spec: {template: {spec: {containers: [{name: c, image: busybox}]}}}
      parameters:
        - {src: 'plate.subject', dest: kubernetes.spec.template.spec.containers.0.args, operation: append}
        - {value: 'x', dest: event.type}
    - name: patch
      kubernetes:
        operation: patch
        patchStrategy: apply
        manifest: |
          apiVersion: v1
          kind: ConfigMap
          metadata: {name: seen}
`)
	snap, err := LoadBytes("sensors.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	tr := snap.Sensors[0].Spec.Triggers
	l := tr[0].Lambda
	if tr[0].TargetKind() != TargetLambda || string(l.AccessKey.Secret.Reveal()) != "AKIDEXAMPLE" ||
		string(l.SecretKey.Secret.Reveal()) != "aws-secret-key" {
		t.Errorf("lambda target = %+v", l)
	}
	ow := tr[1].OpenWhisk
	if tr[1].TargetKind() != TargetOpenWhisk || string(ow.Auth.Reveal()) != "uuid-1:ow-key" || ow.IsBlocking() {
		t.Errorf("openwhisk target = %+v", ow)
	}
	k := tr[2].Kubernetes
	if tr[2].TargetKind() != TargetKubernetes || !strings.Contains(string(k.Manifest), `"kind":"Job"`) {
		t.Errorf("kubernetes target = %+v", k)
	}
	if !strings.Contains(string(tr[3].Kubernetes.Manifest), "kind: ConfigMap") {
		t.Errorf("string manifest = %q", tr[3].Kubernetes.Manifest)
	}
	// Secrets never print, whatever the verb.
	if s := fmt.Sprintf("%v %+v %#v", *l.SecretKey, *ow, ow.Auth); strings.Contains(s, "aws-secret-key") ||
		strings.Contains(s, "ow-key") {
		t.Errorf("a secret printed: %s", s)
	}
}

func TestLoadSensorTargetErrors(t *testing.T) {
	t.Setenv("SB_TEST_AWS_ID", "AKIDEXAMPLE")
	t.Setenv("SB_TEST_OW_BAD", "no-colon")
	tests := []struct {
		name string
		body string
		want []wantErr
	}{{
		name: "two targets",
		body: `      http: {url: 'http://x/'}
      lambda: {functionName: f}
`,
		want: []wantErr{{8, "spec.triggers[0]", "exactly one target is allowed, found http and lambda", ""}},
	}, {
		name: "lambda",
		body: `      lambda:
        invocationType: DryRun
        endpoint: 'localhost:4566'
        accessKey: {secretFrom: env:SB_TEST_AWS_ID}
        sessionToken: {secretFrom: 'env:SB_TEST_UNSET_TOKEN'}
`,
		want: []wantErr{
			{9, "spec.triggers[0].lambda.functionName", "missing field", ""},
			{10, "spec.triggers[0].lambda.invocationType", `unknown invocation type "DryRun" (allowed: RequestResponse, Event)`, ""},
			{11, "spec.triggers[0].lambda.endpoint", "absolute http or https URL", ""},
			{9, "spec.triggers[0].lambda.secretKey", "missing field: set secretKey with accessKey", ""},
			{13, "spec.triggers[0].lambda.sessionToken.secretFrom", "environment variable SB_TEST_UNSET_TOKEN is not set", ""},
		},
	}, {
		name: "openwhisk",
		body: `      openwhisk:
        host: ow.example
        namespace: a/b
        action: a/b/c
        authFrom: env:SB_TEST_OW_BAD
        blocking: false
        result: true
        tls: {caCertFrom: 'env:SB_TEST_AWS_ID'}
`,
		want: []wantErr{
			{10, "spec.triggers[0].openwhisk.host", "absolute http or https URL", ""},
			{11, "spec.triggers[0].openwhisk.namespace", "must not contain '/'", ""},
			{12, "spec.triggers[0].openwhisk.action", "want name or package/name", ""},
			{13, "spec.triggers[0].openwhisk.authFrom", "not of the form UUID:KEY", ""},
			{15, "spec.triggers[0].openwhisk.result", "only a blocking invocation", ""},
			{16, "spec.triggers[0].openwhisk.tls.caCertFrom", "no PEM certificate", ""},
		},
	}, {
		name: "openwhisk inline and missing auth",
		body: `      openwhisk: {host: 'https://ow', action: a, auth: 'u:k'}
`,
		want: []wantErr{{9, "spec.triggers[0].openwhisk.auth", "never written inline", ""}},
	}, {
		name: "openwhisk unset env",
		body: `      openwhisk: {host: 'https://ow', action: a, authFrom: 'env:SB_TEST_UNSET_OW'}
`,
		want: []wantErr{{9, "spec.triggers[0].openwhisk.authFrom", "environment variable SB_TEST_UNSET_OW is not set", ""}},
	}, {
		name: "kubernetes",
		body: `      kubernetes:
        operation: replace
        patchStrategy: json
        namespace: Bad_NS
        manifest: 'kind: Job'
`,
		want: []wantErr{
			{10, "spec.triggers[0].kubernetes.operation", "unknown operation \"replace\" (allowed: create, update, patch, delete)", ""},
			{11, "spec.triggers[0].kubernetes.patchStrategy", "(allowed: merge, strategic, apply)", ""},
			{12, "spec.triggers[0].kubernetes.namespace", `invalid name "Bad_NS"`, ""},
			{13, "spec.triggers[0].kubernetes.manifest", "apiVersion and kind are required", ""},
		},
	}, {
		name: "kubernetes needs a name",
		body: `      kubernetes:
        operation: delete
        patchStrategy: merge
        manifest: {apiVersion: v1, kind: ConfigMap}
`,
		want: []wantErr{
			{11, "spec.triggers[0].kubernetes.patchStrategy", `only for the patch operation, not "delete"`, ""},
			{12, "spec.triggers[0].kubernetes.manifest", "metadata.name is required for the delete operation", ""},
		},
	}, {
		name: "kubernetes missing manifest and wrong dests",
		body: `      kubernetes: {}
      parameters:
        - {value: x, dest: http.url}
        - {value: x, dest: 'kubernetes.a..b'}
    - name: other
      lambda: {functionName: f}
      parameters:
        - {value: x, dest: kubernetes.metadata.name}
        - {value: x, dest: http.headers.X-A}
        - {value: x, dest: body.a}
`,
		want: []wantErr{
			{9, "spec.triggers[0].kubernetes.manifest", "missing field", ""},
			{11, "spec.triggers[0].parameters[0].dest", `"http.url" is only for http targets, and this trigger's target is kubernetes`, ""},
			{12, "spec.triggers[0].parameters[1].dest", "a segment is empty", ""},
			{16, "spec.triggers[1].parameters[0].dest", "only for kubernetes targets", ""},
			{17, "spec.triggers[1].parameters[1].dest", "only for http targets", ""},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadBytes("sensors.yaml", []byte(sensorWith(tt.body)))
			assertErrors(t, err, "sensors.yaml", tt.want)
		})
	}
}
