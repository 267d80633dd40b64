package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// The staging ring of SyncInterval mode. Appends store their frames in a file on a memory file
// system (tmpfs), mapped shared, and return: a crash of the process leaves the file and its bytes
// in memory. Every copyInterval the frames are written (pwrite) into the live segment at the same
// offsets, and the segment is fdatasynced every SyncInterval.
//
// Why not map the segment itself: on a virtual machine with shadow page tables every page that is
// new to the mapping, or write-protected again by writeback after an fdatasync, costs a page fault
// of 6 to 15 µs; that was a page per 20 events, about 1 µs of CPU per event under load. The ring's
// pages are mapped once and stay writable (tmpfs has no writeback), so a store costs a memory copy,
// and the segment takes the bytes by pwrite, about 0.5 µs per page (BENCHMARKS.md, "Stop 24").
//
// Layout: a header page, then the data. Segment offset o is at data[o % len(data)]. The header
// holds ringMagic, the spool id, the live segment's id, copied (the segment offset up to which
// the frames are in the segment file) and tail (up to which frames are stored in the ring). An
// append stores tail after its frames, so after a crash [copied, tail) are the acknowledged frames
// that the segment file may lack; Open writes them there again before anything else (the same
// bytes at the same offsets: a repeat is harmless).
const (
	ringMagic    = "kyomiRG1"
	ringHeader   = 4096
	ringMaxBytes = 8 << 20 // data bytes, at most: at 10 MB/s of events, 0.8 s of copies
	hdrID        = 8       // 16 bytes, the spool id in hex
	hdrSegment   = 24
	hdrCopied    = 32
	hdrTail      = 40
	hdrSize      = 48 // the data size, so a ring of another size is read right
)

// ring is the mapped staging file.
type ring struct {
	path  string // the file's path, for messages
	dir   string // its private directory
	dirFD int    // the private directory, held open: the file is removed from it and no other
	f     *os.File
	mem   []byte
	data  []byte
}

// Where the ring lives. A local user must not be able to make the collector write through a
// symbolic link they planted, nor have it adopt (read, or write its events into) a file they own:
// /dev/shm is writable by everyone. So the ring is the file ringFileName in a private directory
// of the ring dir (mode 0700, owned by the collector's user), named after the spool id, a random
// value kept in the spool directory. The directory is created with mkdir; when it exists, it must
// be a directory (never a symbolic link), owned by the process's effective user, of mode 0700
// exactly. The file is opened relative to that directory with O_NOFOLLOW, created with O_EXCL
// (mode 0600); a file that is there already (left by a crash) must be a regular file owned by
// the same user, of mode 0600 exactly, holding a ring of this spool (or a ring that a crash
// stopped before its header was written). Anything else refuses the start (unsafeRingError);
// it is never a reason to fall back to another directory.

// ringFileName is the ring's file name in its private directory.
const ringFileName = "ring"

// ringDirName is the name of the private directory of the ring of spool id in a ring dir.
func ringDirName(id string) string { return "kyomi-spool-" + id }

// ringPath is the path of the ring of spool id in ringDir.
func ringPath(ringDir, id string) string {
	return filepath.Join(ringDir, ringDirName(id), ringFileName)
}

// legacyRingName is the file name of the ring of spool id in versions that kept it right in the
// ring dir; Open still moves what such a ring holds into the spool, then removes it.
func legacyRingName(id string) string { return "kyomi-spool-" + id + ".ring" }

// ringSize is the data size of the ring of a spool with segments of segBytes.
func ringSize(segBytes int64) int64 { return min(segBytes, ringMaxBytes) }

// unsafeRingError refuses a ring path that another user could have planted or could read. The
// spool does not start on it, and does not fall back to another directory either.
type unsafeRingError struct {
	what, path, problem string // what: "spool ring" or "spool ring directory"
}

// Error names the path and what is wrong with it, and what to do, in one sentence.
func (e *unsafeRingError) Error() string {
	return e.what + " " + e.path + " " + e.problem + ": remove it or choose -spool-ring-dir"
}

// mayFallBack reports whether the ring may go to the spool directory after the default ring dir
// failed with err: when it cannot take the ring (full, read-only, missing), not when it refused
// it (unsafeRingError), since falling back would hide what was planted there.
func mayFallBack(err error) bool {
	var unsafe *unsafeRingError
	return !errors.As(err, &unsafe)
}

// openRingDir opens the private directory of the ring of spool id in ringDir, creating it (mode
// 0700) when create is set, and checks it (see above). Without create, a directory that is not
// there, or a ringDir that is not there, gives fd -1 and no error.
func openRingDir(ringDir, id string, create bool) (fd int, err error) {
	name := ringDirName(id)
	path := filepath.Join(ringDir, name)
	parent, err := unix.Open(ringDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if !create && (err == unix.ENOENT || err == unix.ENOTDIR) {
			return -1, nil
		}
		return -1, fmt.Errorf("cannot open spool ring dir %s: %w", ringDir, err)
	}
	defer unix.Close(parent)
	created := false
	if create {
		err := unix.Mkdirat(parent, name, 0o700)
		if err != nil && err != unix.EEXIST {
			return -1, fmt.Errorf("cannot create spool ring dir %s: %w", path, err)
		}
		created = err == nil
	}
	fd, err = unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case err == unix.ENOENT && !create:
		return -1, nil
	case err == unix.ELOOP || err == unix.ENOTDIR:
		var st unix.Stat_t
		if unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return -1, &unsafeRingError{"spool ring directory", path, "is a symbolic link"}
		}
		return -1, &unsafeRingError{"spool ring directory", path, "is not a directory"}
	case err != nil:
		return -1, fmt.Errorf("cannot open spool ring dir %s: %w", path, err)
	}
	if created { // mkdir applied the umask
		err = unix.Fchmod(fd, 0o700)
	}
	if err == nil {
		err = checkOwned(fd, "spool ring directory", path, 0o700)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// checkOwned refuses the file or directory open at fd unless the process's effective user owns
// it and its mode is perm exactly (no set-id or sticky bit either).
func checkOwned(fd int, what, path string, perm uint32) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("cannot stat %s %s: %w", what, path, err)
	}
	if euid := os.Geteuid(); int(st.Uid) != euid {
		return &unsafeRingError{what, path, fmt.Sprintf("is owned by uid %d, not by this user (uid %d)", st.Uid, euid)}
	}
	if mode := uint32(st.Mode) & 0o7777; mode != perm {
		return &unsafeRingError{what, path, fmt.Sprintf("has mode %04o, want %04o", mode, perm)}
	}
	return nil
}

// openRingFile opens the ring file in the private directory dirFD (see openRingDir): for
// writing, creating it (mode 0600) if it is not there; else for reading, giving nil and no error
// if it is not there. A file that was there already is checked (see above), and its size
// returned.
func openRingFile(dirFD int, path, id string, write bool) (f *os.File, size int64, err error) {
	// O_NONBLOCK: opening a FIFO planted there must not wait for a writer (checkRingFile refuses
	// it); a regular file ignores the flag.
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	fd, err := -1, unix.ENOENT
	if write {
		flags = unix.O_RDWR | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
		fd, err = unix.Openat(dirFD, ringFileName, flags|unix.O_CREAT|unix.O_EXCL, 0o600)
		if err == nil { // created: open applied the umask
			if err := unix.Fchmod(fd, 0o600); err != nil {
				unix.Close(fd)
				return nil, 0, fmt.Errorf("cannot create spool ring %s: %w", path, err)
			}
			return os.NewFile(uintptr(fd), path), 0, nil
		}
		if err != unix.EEXIST {
			return nil, 0, fmt.Errorf("cannot create spool ring %s: %w", path, err)
		}
	}
	fd, err = unix.Openat(dirFD, ringFileName, flags, 0)
	switch {
	case err == unix.ENOENT && !write:
		return nil, 0, nil
	case err == unix.ELOOP:
		return nil, 0, &unsafeRingError{"spool ring", path, "is a symbolic link"}
	case err != nil:
		return nil, 0, fmt.Errorf("cannot open spool ring %s: %w", path, err)
	}
	f = os.NewFile(uintptr(fd), path)
	if size, err = checkRingFile(f, path, id); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, size, nil
}

// checkRingFile refuses an existing ring file unless it is a regular file of this user with
// mode 0600 that holds a ring of spool id, or is a ring a crash stopped before its header was
// written (empty, or a zero header). It returns the file's size.
func checkRingFile(f *os.File, path, id string) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("cannot stat spool ring %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return 0, &unsafeRingError{"spool ring", path, "is not a regular file"}
	}
	if err := checkOwned(int(f.Fd()), "spool ring", path, 0o600); err != nil {
		return 0, err
	}
	size := st.Size()
	if size == 0 {
		return 0, nil
	}
	if size < ringHeader || size > ringHeader+ringMaxBytes {
		return 0, &unsafeRingError{"spool ring", path, fmt.Sprintf("is %d bytes, which no spool ring is", size)}
	}
	hdr := make([]byte, hdrSize+8)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return 0, fmt.Errorf("cannot read spool ring %s: %w", path, err)
	}
	switch {
	case !slices.ContainsFunc(hdr, func(b byte) bool { return b != 0 }):
		return size, nil // created, never set up
	case string(hdr[:len(ringMagic)]) != ringMagic || string(hdr[hdrID:hdrID+16]) != id:
		return 0, &unsafeRingError{"spool ring", path, "does not hold a ring of this spool"}
	case int64(binary.LittleEndian.Uint64(hdr[hdrSize:])) != size-ringHeader:
		return 0, &unsafeRingError{"spool ring", path, fmt.Sprintf("is %d bytes, not the size its header names", size)}
	}
	return size, nil
}

// openRing creates or reuses the ring of spool id in its private directory in ringDir (see
// above) with size data bytes, allocates its memory (so that a full tmpfs fails here, not with
// a fault in an append), maps it, and starts it empty for segment seg. Its refusals are
// *unsafeRingError; any other error means the directory cannot take the ring.
func openRing(ringDir, id string, size int64, seg uint64) (*ring, error) {
	dirFD, err := openRingDir(ringDir, id, true)
	if err != nil {
		return nil, err
	}
	r := &ring{path: ringPath(ringDir, id), dir: filepath.Join(ringDir, ringDirName(id)), dirFD: dirFD}
	f, _, err := openRingFile(dirFD, r.path, id, true)
	if err != nil {
		unix.Close(dirFD)
		return nil, err
	}
	err = f.Truncate(ringHeader + size)
	if err == nil {
		err = allocate(f, ringHeader+size)
	}
	var mem []byte
	if err == nil {
		mem, err = syscall.Mmap(int(f.Fd()), 0, int(ringHeader+size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	}
	if err != nil {
		f.Close()
		_ = unix.Unlinkat(dirFD, ringFileName, 0) // checked ours, and what it held is recovered
		unix.Close(dirFD)
		_ = os.Remove(r.dir) // if empty
		return nil, fmt.Errorf("cannot map spool ring %s: %w", r.path, err)
	}
	r.f, r.mem, r.data = f, mem, mem[ringHeader:]
	copy(mem, ringMagic)
	copy(mem[hdrID:hdrID+16], id)
	binary.LittleEndian.PutUint64(mem[hdrSize:], uint64(size))
	r.reset(seg)
	return r, nil
}

// reset empties the ring for segment seg, which starts at offset 0.
func (r *ring) reset(seg uint64) {
	binary.LittleEndian.PutUint64(r.mem[hdrCopied:], 0)
	binary.LittleEndian.PutUint64(r.mem[hdrTail:], 0)
	binary.LittleEndian.PutUint64(r.mem[hdrSegment:], seg)
}

// setTail records that the frames up to segment offset tail are stored.
func (r *ring) setTail(tail int64) { binary.LittleEndian.PutUint64(r.mem[hdrTail:], uint64(tail)) }

// setCopied records that the frames up to segment offset copied are in the segment file.
func (r *ring) setCopied(copied int64) {
	binary.LittleEndian.PutUint64(r.mem[hdrCopied:], uint64(copied))
}

// put stores frame at segment offset off, in two pieces when it wraps around the end.
func (r *ring) put(off int64, frame []byte) {
	at := off % int64(len(r.data))
	n := copy(r.data[at:], frame)
	copy(r.data, frame[n:])
}

// slot returns the ring memory for the n bytes at segment offset off when they do not wrap, so
// that a frame can be built in place; nil when they wrap.
func (r *ring) slot(off, n int64) []byte {
	at := off % int64(len(r.data))
	if at+n > int64(len(r.data)) {
		return nil
	}
	return r.data[at : at+n]
}

// writeTo writes the ring's bytes for segment offsets [from, to) into f at the same offsets.
func (r *ring) writeTo(f *os.File, from, to int64) error {
	return writeRing(f, r.data, from, to)
}

func writeRing(f *os.File, data []byte, from, to int64) error {
	size := int64(len(data))
	for from < to {
		at := from % size
		n := min(to-from, size-at)
		if _, err := f.WriteAt(data[at:at+n], from); err != nil {
			return fmt.Errorf("cannot copy spool ring to segment: %w", err)
		}
		from += n
	}
	return nil
}

// close unmaps and closes the ring, and removes its file and private directory when remove is
// set (after a clean Close, when the segment holds every frame).
func (r *ring) close(remove bool) error {
	err := syscall.Munmap(r.mem)
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	if remove {
		if rerr := unix.Unlinkat(r.dirFD, ringFileName, 0); err == nil && rerr != unix.ENOENT {
			err = rerr
		}
	}
	unix.Close(r.dirFD)
	if remove {
		_ = os.Remove(r.dir) // if empty: nothing else of ours is in it
	}
	if err != nil {
		return fmt.Errorf("cannot close spool ring: %w", err)
	}
	return nil
}

// removeRing removes the ring of spool id in ringDir, and its private directory, if they are
// there: with SyncInterval 0, once Open moved what the ring held into the segment.
func removeRing(ringDir, id string) error {
	dirFD, err := openRingDir(ringDir, id, false)
	if err != nil || dirFD < 0 {
		return err
	}
	err = unix.Unlinkat(dirFD, ringFileName, 0)
	unix.Close(dirFD)
	if err != nil && err != unix.ENOENT {
		return fmt.Errorf("cannot remove spool ring %s: %w", ringPath(ringDir, id), err)
	}
	if err := os.Remove(filepath.Join(ringDir, ringDirName(id))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot remove spool ring dir: %w", err)
	}
	return nil
}
