// Command etcd is the etcd server of release v3.6.5, built from the Go module
// proxy as the storage of the test API server.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
