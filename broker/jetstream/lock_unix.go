//go:build unix

package jetstream

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockDir takes an exclusive lock on the file at path, creating it, and
// returns the function that releases it. The lock belongs to the open file,
// so a second bus in the same process is refused too, and the kernel
// releases it when the process dies.
func lockDir(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("jetstream: Config.DataDir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s)", ErrDataDirLocked, path)
		}
		return nil, fmt.Errorf("jetstream: lock %s: %w", path, err)
	}
	return func() { _ = f.Close() }, nil
}
