package kubernetes

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// namespaceFile holds the namespace of the pod's service account.
const namespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// LoadRESTConfig returns the configuration to reach the API server and the
// namespace it names, looked for in this order: the kubeconfig file at
// kubeconfig (the --kubeconfig flag) when not empty; the files in KUBECONFIG
// when set; the pod's service account when running in a cluster;
// ~/.kube/config. The namespace is the kubeconfig context's, or the service
// account's; "default" when neither names one.
func LoadRESTConfig(kubeconfig string) (*rest.Config, string, error) {
	if kubeconfig == "" && os.Getenv(clientcmd.RecommendedConfigPathEnvVar) == "" {
		rc, err := rest.InClusterConfig()
		switch {
		case err == nil:
			ns := "default"
			if b, err := os.ReadFile(namespaceFile); err == nil && strings.TrimSpace(string(b)) != "" {
				ns = strings.TrimSpace(string(b))
			}
			return rc, ns, nil
		case !errors.Is(err, rest.ErrNotInCluster):
			return nil, "", fmt.Errorf("kubernetes: in-cluster configuration: %w", err)
		}
	}

	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes: kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes: kubeconfig namespace: %w", err)
	}
	return rc, ns, nil
}
