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
	if err := onFd(f, func(fd int) error { return syscall.Fdatasync(fd) }); err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	return nil
}

// allocate makes f size bytes long with every block allocated (fallocate(2)), so that a store into
// the mapping never needs a block the disk no longer has. A file system without fallocate gets a
// plain truncate; a store that then finds the disk full faults, and the append fails.
func allocate(f *os.File, size int64) error {
	err := onFd(f, func(fd int) error { return syscall.Fallocate(fd, 0, 0, size) })
	if err == syscall.EOPNOTSUPP {
		err = f.Truncate(size)
	}
	if err != nil {
		return fmt.Errorf("cannot size spool segment: %w", err)
	}
	return nil
}

// dontNeed drops mem's pages from the process's page tables (madvise MADV_DONTNEED); the file's
// pages stay in the page cache, dirty or not.
func dontNeed(mem []byte) error { return syscall.Madvise(mem, syscall.MADV_DONTNEED) }

// onFd runs call on f's descriptor, again as long as it is interrupted (EINTR).
func onFd(f *os.File, call func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for serr = call(int(fd)); serr == syscall.EINTR; serr = call(int(fd)) {
		}
	}); err != nil {
		return err
	}
	return serr
}
