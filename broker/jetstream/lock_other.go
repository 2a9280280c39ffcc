//go:build !unix

package jetstream

// lockDir does not lock on systems without flock; keeping two processes off
// one data directory is then up to the operator.
func lockDir(string) (func(), error) { return func() {}, nil }
