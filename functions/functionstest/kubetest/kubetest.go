// Package kubetest starts a real kube-apiserver, backed by a real etcd, for
// the duration of a test. Both are built from the Go module proxy by the
// separate module in tools/kubetest (so that this module does not require
// k8s.io/kubernetes), once, and cached under the user's cache directory
// (~/.cache/signalbox-kubetest/<hash of the tools module's go.mod and go.sum>).
// The first build takes about four minutes; later runs start in seconds.
//
// The API server runs with RBAC authorization and a static token file with
// two users: an administrator (group system:masters) and a restricted user
// with no permission beyond discovery. No controller or kubelet runs: objects
// are stored and validated as a real cluster would, and nothing acts on them.
//
// The environment variable SIGNALBOX_KUBETEST_BIN names a directory holding
// prebuilt etcd and kube-apiserver binaries, skipping the build.
//
// This package uses only the standard library.
package kubetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Users of the static token file.
const (
	// AdminUser is in system:masters: every request is allowed.
	AdminUser = "signalbox-admin"
	// RestrictedUser is authenticated but granted nothing beyond what RBAC
	// gives every authenticated user (discovery).
	RestrictedUser = "signalbox-restricted"
)

// BinDirEnv names the environment variable that points at prebuilt binaries.
const BinDirEnv = "SIGNALBOX_KUBETEST_BIN"

// Server is a running kube-apiserver with its etcd.
type Server struct {
	// URL is the API server's https URL on the loopback interface.
	URL string
	// CAPEM is the PEM certificate that signs the serving certificate.
	CAPEM []byte
	// AdminToken is the bearer token of AdminUser.
	AdminToken string
	// RestrictedToken is the bearer token of RestrictedUser.
	RestrictedToken string
}

// Kubeconfig writes a kubeconfig file for the server and token into dir
// and returns its path; its context's namespace is namespace.
func (s *Server) Kubeconfig(dir, token, namespace string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Config\ncurrent-context: test\n")
	fmt.Fprintf(&b, "clusters:\n- name: test\n  cluster:\n    server: %s\n    certificate-authority-data: %s\n",
		s.URL, base64.StdEncoding.EncodeToString(s.CAPEM))
	fmt.Fprintf(&b, "users:\n- name: test\n  user:\n    token: %s\n", token)
	fmt.Fprintf(&b, "contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: %s\n", namespace)
	path := filepath.Join(dir, "kubeconfig")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// Start builds the binaries if they are not cached, starts etcd and the API
// server on free loopback ports, waits until the API server is ready, and
// stops both when t's cleanups run. It fails t, saying why and what to run,
// when something cannot be built or started.
func Start(t testing.TB) *Server {
	t.Helper()
	etcdBin, apiBin, err := Binaries(t.Logf)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	dir := t.TempDir()

	etcdURL, err := startEtcd(t, etcdBin, dir)
	if err != nil {
		t.Fatalf("kubetest: etcd: %v", err)
	}
	s, err := startAPIServer(t, apiBin, dir, etcdURL)
	if err != nil {
		t.Fatalf("kubetest: kube-apiserver: %v", err)
	}
	return s
}

var buildMu sync.Mutex

// Binaries returns the paths of etcd and kube-apiserver, building them
// into the cache first when needed. logf reports a build in progress.
func Binaries(logf func(format string, args ...any)) (etcd, apiserver string, err error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		return checkBinaries(dir)
	}
	tools, err := toolsDir()
	if err != nil {
		return "", "", err
	}
	key, err := toolsKey(tools)
	if err != nil {
		return "", "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", "", fmt.Errorf("no cache directory: %w", err)
	}
	dir := filepath.Join(cache, "signalbox-kubetest", key)
	if e, a, err := checkBinaries(dir); err == nil {
		return e, a, nil
	}

	buildMu.Lock()
	defer buildMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", "", err
	}
	// Test binaries of several packages may build at once: one builds,
	// the others wait for its result.
	unlock, err := lockFile(dir + ".lock")
	if err != nil {
		return "", "", err
	}
	defer unlock()
	if e, a, err := checkBinaries(dir); err == nil {
		return e, a, nil
	}

	logf("kubetest: building etcd and kube-apiserver from %s into %s (about four minutes, once)", tools, dir)
	start := time.Now()
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "build-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)
	// go test puts its own toolchain first on the PATH.
	cmd := exec.Command("go", "build", "-C", tools, "-trimpath", "-o", tmp+string(filepath.Separator),
		"./cmd/etcd", "./cmd/kube-apiserver")
	// The test's own flags (-race, -cover) must not leak into the tools.
	cmd.Env = append(os.Environ(), "GOFLAGS=", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("%v: %w\n%s\nrun it by hand to see more: %s", cmd.Args, err, out, strings.Join(cmd.Args, " "))
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", "", err
	}
	logf("kubetest: built in %v", time.Since(start).Round(time.Second))
	return checkBinaries(dir)
}

func checkBinaries(dir string) (string, string, error) {
	etcd, api := filepath.Join(dir, "etcd"), filepath.Join(dir, "kube-apiserver")
	for _, p := range []string{etcd, api} {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			return "", "", fmt.Errorf("%s is missing or not executable", p)
		}
	}
	return etcd, api, nil
}

// toolsDir finds tools/kubetest from the working directory (a package
// directory under go test) by walking up to the main module's root.
func toolsDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "tools", "kubetest", "go.mod")
		if _, err := os.Stat(p); err == nil {
			return filepath.Dir(p), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("tools/kubetest/go.mod not found above the working directory; " +
				"run the tests inside the signalbox repository or set " + BinDirEnv)
		}
		dir = parent
	}
}

// toolsKey hashes what decides the binaries: the tools module's go.mod,
// go.sum and main packages.
func toolsKey(tools string) (string, error) {
	h := sha256.New()
	for _, name := range []string{"go.mod", "go.sum", "cmd/etcd/main.go", "cmd/kube-apiserver/main.go"} {
		b, err := os.ReadFile(filepath.Join(tools, name))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", name, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func startEtcd(t testing.TB, bin, dir string) (string, error) {
	client, peer := freePort(t), freePort(t)
	clientURL := "http://127.0.0.1:" + client
	peerURL := "http://127.0.0.1:" + peer
	args := []string{
		"--name", "kubetest",
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "kubetest=" + peerURL,
		// A test's data need not survive a power loss.
		"--unsafe-no-fsync",
		"--log-level", "warn",
	}
	logPath := filepath.Join(dir, "etcd.log")
	exited, err := startProcess(t, bin, args, logPath)
	if err != nil {
		return "", err
	}
	err = waitUntil(30*time.Second, logPath, exited, func() bool {
		resp, err := http.Get(clientURL + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return clientURL, err
}

func startAPIServer(t testing.TB, bin, dir, etcdURL string) (*Server, error) {
	certPEM, keyPEM, err := selfSignedCert()
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	saDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	s := &Server{CAPEM: certPEM, AdminToken: randomToken(), RestrictedToken: randomToken()}
	tokens := fmt.Sprintf("%s,%s,uid-admin,\"system:masters\"\n%s,%s,uid-restricted\n",
		s.AdminToken, AdminUser, s.RestrictedToken, RestrictedUser)
	files := map[string][]byte{
		"serving.crt": certPEM,
		"serving.key": keyPEM,
		"sa.key":      pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saDER}),
		"sa.pub":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER}),
		"tokens.csv":  []byte(tokens),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}

	port := freePort(t)
	s.URL = "https://127.0.0.1:" + port
	args := []string{
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", port,
		"--tls-cert-file", filepath.Join(dir, "serving.crt"),
		"--tls-private-key-file", filepath.Join(dir, "serving.key"),
		"--cert-dir", filepath.Join(dir, "certs"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-cluster-ip-range", "10.96.0.0/24",
		// Nothing here serves endpoints or needs fairness between tenants;
		// both cost start-up time.
		"--endpoint-reconciler-type", "none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"-v", "0",
	}
	logPath := filepath.Join(dir, "kube-apiserver.log")
	exited, err := startProcess(t, bin, args, logPath)
	if err != nil {
		return nil, err
	}

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 2 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	err = waitUntil(90*time.Second, logPath, exited, func() bool {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+s.AdminToken)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return s, err
}

// startProcess starts bin with its output in logPath, and stops it (SIGTERM,
// then SIGKILL after five seconds) when t's cleanups run. The channel is
// closed when the process exits.
func startProcess(t testing.TB, bin string, args []string, logPath string) (<-chan struct{}, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return done, nil
}

// waitUntil polls ready until it is true, the process writing logPath
// exits, or timeout passes; the error then carries the log's tail.
func waitUntil(timeout time.Duration, logPath string, exited <-chan struct{}, ready func() bool) error {
	deadline := time.After(timeout)
	for {
		if ready() {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before it was ready:\n%s", tail(logPath))
		case <-deadline:
			return fmt.Errorf("not ready after %v:\n%s", timeout, tail(logPath))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// freePort returns a loopback port nothing listens on now. Another process
// may take it before the server binds it; start-up then fails loudly.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("kubetest: free port: %v", err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// selfSignedCert returns a serving certificate for the loopback addresses,
// signed by itself, and its key.
func selfSignedCert() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kubetest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 96, 0, 1)},
		DNSNames:              []string{"localhost", "kubernetes", "kubernetes.default.svc"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
