package dispatch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/signalbox-dev/signalbox/config"
	"github.com/signalbox-dev/signalbox/functions/httptarget"
	"github.com/signalbox-dev/signalbox/functions/kubernetes"
	"github.com/signalbox-dev/signalbox/functions/lambda"
	"github.com/signalbox-dev/signalbox/functions/openwhisk"
)

// kubeAccess loads the Kubernetes client configuration on the first
// kubernetes trigger, so that a gateway without one never needs a cluster.
// A failed load is tried again at the next Apply.
type kubeAccess struct {
	mu     sync.Mutex
	loaded bool
	base   kubernetes.Config // RESTConfig and Namespace only
}

// kubeBase returns the REST configuration and default namespace of
// Config.Kubeconfig (see kubernetes.LoadRESTConfig for the search order).
func (d *Dispatcher) kubeBase() (kubernetes.Config, error) {
	d.kube.mu.Lock()
	defer d.kube.mu.Unlock()
	if !d.kube.loaded {
		rc, ns, err := kubernetes.LoadRESTConfig(d.cfg.Kubeconfig)
		if err != nil {
			return kubernetes.Config{}, err
		}
		d.kube.base = kubernetes.Config{RESTConfig: rc, Namespace: ns}
		d.kube.loaded = true
		d.log.Info("kubernetes configuration loaded", "host", rc.Host, "namespace", ns)
	}
	return d.kube.base, nil
}

// buildTarget sets ss.target (and ss.http or ss.kube, which parameters
// start from) for the one target of st.
func (d *Dispatcher) buildTarget(sn *config.Sensor, st *config.SensorTrigger, ss *sensorSpec, structured bool) error {
	var err error
	switch st.TargetKind() {
	case config.TargetHTTP:
		ss.http = httptarget.Config{URL: st.HTTP.URL, Method: strings.ToUpper(st.HTTP.Method),
			Headers: st.HTTP.Headers, Structured: structured, Client: d.cfg.HTTPClient}
		if ss.target, err = httptarget.New(ss.http); err != nil {
			return fmt.Errorf("http: %w", err)
		}
	case config.TargetLambda:
		l := st.Lambda
		cfg := lambda.Config{FunctionName: l.FunctionName, Qualifier: l.Qualifier, Region: l.Region,
			InvocationType: l.InvocationType, Endpoint: l.Endpoint, FunctionErrorPermanent: l.FunctionErrorPermanent}
		if l.AccessKey != nil && l.SecretKey != nil {
			cfg.Credentials = &aws.Credentials{
				AccessKeyID:     string(l.AccessKey.Secret.Reveal()),
				SecretAccessKey: string(l.SecretKey.Secret.Reveal()),
				Source:          "signalbox configuration",
			}
			if l.SessionToken != nil {
				cfg.Credentials.SessionToken = string(l.SessionToken.Secret.Reveal())
			}
		}
		if ss.target, err = lambda.New(cfg, d.log); err != nil {
			return err
		}
	case config.TargetOpenWhisk:
		o := st.OpenWhisk
		cfg := openwhisk.Config{Host: o.Host, Namespace: o.Namespace, Action: o.Action,
			Auth: string(o.Auth.Reveal()), NonBlocking: !o.IsBlocking(), Result: o.Result}
		if o.TLS != nil {
			cfg.CACertPEM, cfg.Insecure = o.TLS.CACert, o.TLS.InsecureSkipVerify
		}
		if ss.target, err = openwhisk.New(cfg, d.log); err != nil {
			return err
		}
	case config.TargetKubernetes:
		k := st.Kubernetes
		cfg, err := d.kubeBase()
		if err != nil {
			return err
		}
		if k.Namespace != "" {
			cfg.Namespace = k.Namespace
		}
		cfg.Operation, cfg.Manifest, cfg.DeterministicName = k.Operation, string(k.Manifest), k.DeterministicName
		cfg.PatchStrategy, cfg.Sensor, cfg.Trigger = k.PatchStrategy, sn.Name(), st.Name
		if ss.kube, err = kubernetes.New(cfg, d.log); err != nil {
			return err
		}
		ss.target = ss.kube
	default:
		return fmt.Errorf("exactly one target (http, lambda, openwhisk or kubernetes) is required: %w", ErrUnsupported)
	}
	return nil
}

// secretDigest hashes the secrets a trigger's target was built with, for its
// fingerprint: they marshal as a placeholder, and a rotated secret must
// restart the trigger.
func secretDigest(st *config.SensorTrigger) string {
	h := sha256.New()
	put := func(b []byte) {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	if l := st.Lambda; l != nil {
		for _, r := range []*config.SecretRef{l.AccessKey, l.SecretKey, l.SessionToken} {
			if r != nil {
				put(r.Secret.Reveal())
			}
		}
	}
	if o := st.OpenWhisk; o != nil {
		put(o.Auth.Reveal())
		if o.TLS != nil {
			put(o.TLS.CACert)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
