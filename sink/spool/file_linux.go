package spool

import (
	"fmt"
	"os"
	"syscall"
)

// datasync flushes f's data and the metadata needed to read it back
// (fdatasync(2)): after a crash the written bytes are there. It skips the
// timestamps, which a full fsync would write too.
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

// dontNeed drops mem's pages from the process's page tables (madvise MADV_DONTNEED); the file's
// pages stay in the page cache, dirty or not.
func dontNeed(mem []byte) error { return syscall.Madvise(mem, syscall.MADV_DONTNEED) }

// allocate makes f size bytes long with every block allocated (fallocate(2)), so that a store into
// the mapping never needs a block the disk no longer has. A file system without fallocate gets a
// plain truncate; a store that then finds the disk full faults, and the append fails.
func allocate(f *os.File, size int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("cannot size spool segment: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fallocate(int(fd), 0, 0, size)
			if serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return fmt.Errorf("cannot size spool segment: %w", err)
	}
	if serr == syscall.EOPNOTSUPP {
		serr = f.Truncate(size)
	}
	if serr != nil {
		return fmt.Errorf("cannot size spool segment: %w", serr)
	}
	return nil
}
