package kubetest

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"strings"
	"testing"
)

// TestStart checks the contract the Kubernetes tests rely on: a ready API
// server behind TLS with the given CA, RBAC on, an administrator allowed
// everything and a restricted user allowed only discovery.
func TestStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd")
	}
	s := Start(t)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAPEM) {
		t.Fatal("CAPEM holds no certificate")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(client.CloseIdleConnections)

	tests := []struct {
		token, path string
		want        int
	}{
		{s.AdminToken, "/apis/batch/v1/namespaces/default/jobs", http.StatusOK},
		{s.RestrictedToken, "/apis/batch/v1/namespaces/default/jobs", http.StatusForbidden},
		{s.RestrictedToken, "/apis", http.StatusOK},
		{"wrong", "/apis", http.StatusUnauthorized},
	}
	for _, tc := range tests {
		req, err := http.NewRequest(http.MethodGet, s.URL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tc.token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s as %.8s...: %d, want %d", tc.path, tc.token, resp.StatusCode, tc.want)
		}
	}

	path, err := s.Kubeconfig(t.TempDir(), s.AdminToken, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"server: " + s.URL, "token: " + s.AdminToken, "namespace: team-a"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, b)
		}
	}
}
