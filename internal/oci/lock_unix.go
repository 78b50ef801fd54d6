//go:build unix

package oci

import (
	"fmt"
	"os"
	"syscall"
)

// lock takes an exclusive flock on the layout directory itself, so no lock file is added to the
// layout. Each call opens its own descriptor, so goroutines of one process exclude each other
// as well as other processes. The returned function releases the lock.
func (l *Layout) lock() (func(), error) {
	f, err := os.Open(l.dir)
	if err != nil {
		return nil, fmt.Errorf("lock layout: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock layout %s: %w", l.dir, err)
	}
	// Closing the only descriptor of this open file releases the flock.
	return func() { f.Close() }, nil
}
