// Module kubetest holds the tools the Kubernetes tests of signalbox run: a
// kube-apiserver and an etcd, built from the Go module proxy. It is a module
// of its own so that the main module does not require k8s.io/kubernetes.
//
// The tests build both with `go build -C tools/kubetest -o DIR ./cmd/...`
// (see functions/functionstest/kubeapi) and cache the binaries.
package kubetest
