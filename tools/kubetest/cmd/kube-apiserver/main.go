// Command kube-apiserver is the Kubernetes API server of release v1.34.3,
// built from the Go module proxy so that tests can run against a real API
// server without downloading release binaries.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
