//go:build unix && !linux

package spool

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// datasync flushes f to stable storage; outside Linux it is a full fsync.
func datasync(f *os.File) error { return f.Sync() }

// allocate makes f size bytes long. Outside Linux the added bytes may be a hole: a store into the
// mapping that needs a block the full disk cannot give faults, and the append fails.
func allocate(f *os.File, size int64) error {
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("cannot size spool segment: %w", err)
	}
	return nil
}

// dontNeed drops mem's pages from the process's page tables (madvise MADV_DONTNEED); the file's
// pages stay in the page cache. The syscall package has no Madvise outside Linux.
func dontNeed(mem []byte) error { return unix.Madvise(mem, unix.MADV_DONTNEED) }
