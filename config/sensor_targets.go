package config

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/signalbox-dev/signalbox/functions/kubernetes"
)

// Target kinds of a SensorTrigger, as SensorTrigger.TargetKind names them.
const (
	TargetHTTP       = "http"
	TargetLambda     = "lambda"
	TargetOpenWhisk  = "openwhisk"
	TargetKubernetes = "kubernetes"
)

// Lambda invocation types (LambdaTarget.InvocationType).
const (
	LambdaRequestResponse = "RequestResponse"
	LambdaEvent           = "Event"
)

// Kubernetes operations (KubernetesTarget.Operation) and patch strategies
// (KubernetesTarget.PatchStrategy); the same words as package
// functions/kubernetes.
var (
	kubernetesOperations      = []string{kubernetes.Create, kubernetes.Update, kubernetes.Patch, kubernetes.Delete}
	kubernetesPatchStrategies = []string{kubernetes.MergePatch, kubernetes.StrategicMergePatch, kubernetes.ApplyPatch}
)

// LambdaTarget invokes an AWS Lambda function with the event in the
// CloudEvents JSON structured format.
type LambdaTarget struct {
	// FunctionName is the function's name, ARN or partial ARN. Required.
	FunctionName string `json:"functionName"`
	// Qualifier is a version or alias; empty invokes the unqualified function.
	Qualifier string `json:"qualifier,omitempty"`
	// Region is the AWS region; empty means the AWS default configuration's.
	Region string `json:"region,omitempty"`
	// InvocationType is RequestResponse (the default) or Event.
	InvocationType string `json:"invocationType,omitempty"`
	// Endpoint replaces the service endpoint (an absolute http or https URL,
	// such as LocalStack's).
	Endpoint string `json:"endpoint,omitempty"`
	// AccessKey, SecretKey and the optional SessionToken are static
	// credentials. AccessKey and SecretKey are set together or not at all;
	// without them the AWS default credential chain is used.
	AccessKey    *SecretRef `json:"accessKey,omitempty"`
	SecretKey    *SecretRef `json:"secretKey,omitempty"`
	SessionToken *SecretRef `json:"sessionToken,omitempty"`
	// FunctionErrorPermanent dead-letters an event whose invocation the
	// function failed (X-Amz-Function-Error) instead of retrying it.
	FunctionErrorPermanent bool `json:"functionErrorPermanent,omitempty"`
}

// OpenWhiskTarget invokes an Apache OpenWhisk action with the event as its
// parameters.
type OpenWhiskTarget struct {
	// Host is the API host's base URL with its scheme. Required.
	Host string `json:"host"`
	// Namespace is the action's namespace; empty means "_", the
	// credentials' own.
	Namespace string `json:"namespace,omitempty"`
	// Action is name or package/name. Required.
	Action string `json:"action"`
	// AuthFrom names the UUID:KEY credential: "env:NAME" or "file:/path".
	// Required.
	AuthFrom string `json:"authFrom"`
	// Auth is the credential AuthFrom names, set by the loader.
	Auth Secret `json:"-"`
	// Blocking waits for the action's result; nil means true.
	Blocking *bool `json:"blocking,omitempty"`
	// Result asks a blocking invocation for the result alone.
	Result bool `json:"result,omitempty"`
	// TLS configures certificate verification of the host.
	TLS *OpenWhiskTLS `json:"tls,omitempty"`
}

// IsBlocking reports whether the invocation waits for the action (the
// default).
func (o *OpenWhiskTarget) IsBlocking() bool { return o.Blocking == nil || *o.Blocking }

// OpenWhiskTLS configures TLS towards an OpenWhisk host.
type OpenWhiskTLS struct {
	// CACertFrom names PEM certificates trusted besides the system's:
	// "file:/path" or "env:NAME".
	CACertFrom string `json:"caCertFrom,omitempty"`
	// CACert holds what CACertFrom names, set by the loader.
	CACert []byte `json:"-"`
	// InsecureSkipVerify turns certificate verification off; for
	// development only.
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// KubernetesTarget acts on a Kubernetes object for each event.
type KubernetesTarget struct {
	// Operation is create (the default), update, patch or delete.
	Operation string `json:"operation,omitempty"`
	// Manifest is the object: a YAML or JSON string, or an inline mapping.
	// Required.
	Manifest Manifest `json:"manifest"`
	// Namespace is that of a namespaced object whose manifest names none;
	// empty means the namespace of the Kubernetes configuration.
	Namespace string `json:"namespace,omitempty"`
	// DeterministicName names the object after the event, so that a
	// redelivery meets AlreadyExists instead of creating a second object.
	DeterministicName bool `json:"deterministicName,omitempty"`
	// PatchStrategy is merge (the default), strategic or apply; only for
	// the patch operation.
	PatchStrategy string `json:"patchStrategy,omitempty"`
}

// Manifest is a Kubernetes manifest as text (YAML or JSON). In configuration
// it is written either as a string or as an inline mapping, which is kept as
// its JSON text.
type Manifest string

// UnmarshalJSON accepts a string or an object.
func (m *Manifest) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*m = Manifest(s)
	case len(b) > 0 && b[0] == '{':
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			return err
		}
		*m = Manifest(buf.String())
	case bytes.Equal(b, []byte("null")):
		*m = ""
	default:
		return fmt.Errorf("a manifest is a YAML string or a mapping, got %s", b)
	}
	return nil
}

// TargetKind returns the kind of the target that is set (one of the Target
// constants), or "" when none is or several are.
func (t *SensorTrigger) TargetKind() string {
	kinds := t.targetKinds()
	if len(kinds) != 1 {
		return ""
	}
	return kinds[0]
}

func (t *SensorTrigger) targetKinds() []string {
	var kinds []string
	if t.HTTP != nil {
		kinds = append(kinds, TargetHTTP)
	}
	if t.Lambda != nil {
		kinds = append(kinds, TargetLambda)
	}
	if t.OpenWhisk != nil {
		kinds = append(kinds, TargetOpenWhisk)
	}
	if t.Kubernetes != nil {
		kinds = append(kinds, TargetKubernetes)
	}
	return kinds
}

// target checks the one target of a sensor trigger and returns its kind, ""
// when there is not exactly one.
func (c *checker) target(t *SensorTrigger, path string) string {
	kinds := t.targetKinds()
	switch len(kinds) {
	case 0:
		c.errorf(0, path, "exactly one target is required (supported target kinds: %s)",
			strings.Join(targetKinds, ", "))
		return ""
	case 1:
	default:
		c.errorf(0, path, "exactly one target is allowed, found %s", strings.Join(kinds, " and "))
		return ""
	}
	switch kinds[0] {
	case TargetHTTP:
		c.httpTarget(t.HTTP, path+".http")
	case TargetLambda:
		c.lambdaTarget(t.Lambda, path+".lambda")
	case TargetOpenWhisk:
		c.openWhiskTarget(t.OpenWhisk, path+".openwhisk")
	case TargetKubernetes:
		c.kubernetesTarget(t.Kubernetes, path+".kubernetes")
	}
	return kinds[0]
}

func (c *checker) lambdaTarget(l *LambdaTarget, path string) {
	if l.FunctionName == "" {
		c.errorf(0, path+".functionName", "missing field: the function's name or ARN is required")
	}
	switch l.InvocationType {
	case "", LambdaRequestResponse, LambdaEvent:
	default:
		c.errorf(0, path+".invocationType", "unknown invocation type %q (allowed: %s, %s)",
			l.InvocationType, LambdaRequestResponse, LambdaEvent)
	}
	if l.Endpoint != "" {
		c.httpURL(l.Endpoint, path+".endpoint")
	}
	switch {
	case l.AccessKey == nil && l.SecretKey != nil:
		c.errorf(0, path+".accessKey", "missing field: set accessKey with secretKey, or neither "+
			"(for the AWS default credential chain)")
	case l.AccessKey != nil && l.SecretKey == nil:
		c.errorf(0, path+".secretKey", "missing field: set secretKey with accessKey, or neither "+
			"(for the AWS default credential chain)")
	case l.AccessKey == nil && l.SessionToken != nil:
		c.errorf(0, path+".sessionToken", "a session token needs accessKey and secretKey")
	}
	for field, ref := range map[string]*SecretRef{
		"accessKey": l.AccessKey, "secretKey": l.SecretKey, "sessionToken": l.SessionToken,
	} {
		if ref != nil {
			c.secret(ref, path+"."+field, true)
		}
	}
}

func (c *checker) openWhiskTarget(o *OpenWhiskTarget, path string) {
	c.httpURL(o.Host, path+".host")
	if strings.Contains(o.Namespace, "/") {
		c.errorf(0, path+".namespace", "must not contain '/', got %q", o.Namespace)
	}
	segs := strings.Split(o.Action, "/")
	switch {
	case o.Action == "":
		c.errorf(0, path+".action", "missing field: the action's name is required")
	case len(segs) > 2 || strings.Contains("/"+o.Action+"/", "//") || slices.Contains(segs, ".") || slices.Contains(segs, ".."):
		c.errorf(0, path+".action", "want name or package/name, got %q", o.Action)
	}
	if o.AuthFrom == "" {
		if !c.related(path + ".auth") {
			c.errorf(0, path+".authFrom", "missing field: the UUID:KEY credential is required "+
				"(env:NAME or file:/path)")
		}
	} else if v, err := ReadSecret(o.AuthFrom); err != nil {
		c.errorf(0, path+".authFrom", "%v", err)
	} else if user, key, ok := strings.Cut(string(v), ":"); !ok || user == "" || key == "" {
		// Never quote the value: it is a secret.
		c.errorf(0, path+".authFrom", "the credential %s names is not of the form UUID:KEY", o.AuthFrom)
	} else {
		o.Auth = NewSecret(v)
	}
	if o.Result && !o.IsBlocking() {
		c.errorf(0, path+".result", "only a blocking invocation has a result")
	}
	if o.TLS != nil && o.TLS.CACertFrom != "" {
		field := path + ".tls.caCertFrom"
		if b, err := ReadSecret(o.TLS.CACertFrom); err != nil {
			c.errorf(0, field, "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(b) {
			c.errorf(0, field, "no PEM certificate found in %s", o.TLS.CACertFrom)
		} else {
			o.TLS.CACert = b
		}
	}
}

func (c *checker) kubernetesTarget(k *KubernetesTarget, path string) {
	if k.Operation != "" && !slices.Contains(kubernetesOperations, k.Operation) {
		c.errorf(0, path+".operation", "unknown operation %q (allowed: %s)",
			k.Operation, strings.Join(kubernetesOperations, ", "))
	}
	if k.PatchStrategy != "" {
		switch {
		case !slices.Contains(kubernetesPatchStrategies, k.PatchStrategy):
			c.errorf(0, path+".patchStrategy", "unknown patch strategy %q (allowed: %s)",
				k.PatchStrategy, strings.Join(kubernetesPatchStrategies, ", "))
		case k.Operation != kubernetes.Patch:
			c.errorf(0, path+".patchStrategy", "only for the patch operation, not %q", k.opOrDefault())
		}
	}
	if k.Namespace != "" {
		c.dnsErrors(path+".namespace", k.Namespace, validation.IsDNS1123Label(k.Namespace))
	}
	if k.Manifest == "" {
		c.errorf(0, path+".manifest", "missing field: the object's manifest is required")
		return
	}
	obj, err := kubernetes.ParseManifest(string(k.Manifest))
	if err != nil {
		c.errorf(0, path+".manifest", "invalid manifest: %s", oneLine(err.Error()))
		return
	}
	if k.opOrDefault() != kubernetes.Create && obj.GetName() == "" && !k.DeterministicName {
		c.errorf(0, path+".manifest", "metadata.name is required for the %s operation "+
			"(or set deterministicName)", k.opOrDefault())
	}
}

func (k *KubernetesTarget) opOrDefault() string {
	if k.Operation == "" {
		return kubernetes.Create
	}
	return k.Operation
}

// checkManifestPath checks the syntax of a kubernetes.<path> parameter
// destination as kubernetes.ApplyParameter reads it: dot-separated segments,
// none empty, `\.` a dot within one.
func checkManifestPath(p string) error {
	if p == "" {
		return fmt.Errorf("the path after kubernetes. is empty")
	}
	seg := 0
	for i := 0; i < len(p); i++ {
		switch {
		case p[i] == '\\' && i+1 < len(p) && (p[i+1] == '.' || p[i+1] == '\\'):
			i++
			seg++
		case p[i] == '.':
			if seg == 0 {
				return fmt.Errorf("invalid path %q: a segment is empty", p)
			}
			seg = 0
		default:
			seg++
		}
	}
	if seg == 0 {
		return fmt.Errorf("invalid path %q: a segment is empty", p)
	}
	return nil
}
