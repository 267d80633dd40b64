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

// allocate makes f size bytes long with every block allocated (fallocate(2)), so that a write into
// it, or a store into the ring's mapping, never needs a block the disk (or memory) no longer has.
// A file system without fallocate gets a plain truncate: a write that then finds the disk full
// fails, a store into the ring faults, and the append fails.
func allocate(f *os.File, size int64) error {
	err := onFd(f, func(fd int) error { return syscall.Fallocate(fd, 0, 0, size) })
	if err == syscall.EOPNOTSUPP {
		err = f.Truncate(size)
	}
	if err != nil {
		return fmt.Errorf("cannot allocate %s: %w", f.Name(), err)
	}
	return nil
}

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

// shmDir is where the ring goes by default; a variable so that a test can make it unusable.
var shmDir = "/dev/shm"

// defaultRingDir is shmDir when it is a memory file system (tmpfs), else dir.
func defaultRingDir(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(shmDir, &st); err == nil && st.Type == tmpfsMagic {
		return shmDir
	}
	return dir
}

// tmpfsMagic is TMPFS_MAGIC, the f_type statfs(2) reports for tmpfs.
const tmpfsMagic = 0x01021994
