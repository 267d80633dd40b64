//go:build unix && !linux

package spool

import (
	"fmt"
	"os"
)

// datasync flushes f to stable storage; outside Linux it is a full fsync.
func datasync(f *os.File) error { return f.Sync() }

// allocate makes f size bytes long. Outside Linux the added bytes may be a hole: a write that
// needs a block the full disk cannot give fails, a store into the ring's mapping faults, and the
// append fails.
func allocate(f *os.File, size int64) error {
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("cannot allocate %s: %w", f.Name(), err)
	}
	return nil
}

// defaultRingDir is dir: outside Linux there is no /dev/shm to rely on.
func defaultRingDir(dir string) string { return dir }
