package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/leakcheck"
	"github.com/kyomi/collector/internal/syncbuf"
)

// nobody is the user that owns what the tests plant as another user's (the tests run as root).
const nobody = 65534

// TestRingRefusesPlantedPaths plants, at the ring's path in a ring directory, what a local
// attacker could: a symbolic link to a victim file, a directory or file of their own, one with
// loose permissions. Open must refuse to start with one sentence that names the path and what is
// wrong, touch neither the victim nor the planted file, and create no ring anywhere else.
func TestRingRefusesPlantedPaths(t *testing.T) {
	leakcheck.Register(t)
	tests := []struct {
		name  string
		plant func(t *testing.T, privDir, ring, victim, id string)
		want  string // in the refusal, after the path
	}{
		{"symlink at the ring path", func(t *testing.T, privDir, ring, victim, id string) {
			mkdir(t, privDir, 0o700, -1)
			symlink(t, victim, ring)
		}, "is a symbolic link"},
		{"relative symlink at the ring path", func(t *testing.T, privDir, ring, victim, id string) {
			mkdir(t, privDir, 0o700, -1)
			symlink(t, "../../victim/file", ring)
		}, "is a symbolic link"},
		{"symlink for the private directory", func(t *testing.T, privDir, ring, victim, id string) {
			symlink(t, filepath.Dir(victim), privDir)
		}, "is a symbolic link"},
		{"symlink for the private directory to an owned 0700 one", func(t *testing.T, privDir, ring, victim, id string) {
			other := filepath.Join(t.TempDir(), "owned")
			mkdir(t, other, 0o700, -1)
			symlink(t, other, privDir)
		}, "is a symbolic link"},
		{"private directory owned by another user", func(t *testing.T, privDir, ring, victim, id string) {
			mkdir(t, privDir, 0o700, nobody)
		}, fmt.Sprintf("is owned by uid %d, not by this user (uid %d)", nobody, os.Geteuid())},
		{"private directory of mode 0755", func(t *testing.T, privDir, ring, victim, id string) {
			mkdir(t, privDir, 0o755, -1)
		}, "has mode 0755, want 0700"},
		{"private directory of mode 0777", func(t *testing.T, privDir, ring, victim, id string) {
			mkdir(t, privDir, 0o777, -1)
		}, "has mode 0777, want 0700"},
		{"private directory with the sticky bit", func(t *testing.T, privDir, ring, victim, id string) {
			mkdir(t, privDir, 0o700|os.ModeSticky, -1)
		}, "has mode 1700, want 0700"},
		{"a file for the private directory", func(t *testing.T, privDir, ring, victim, id string) {
			plantFile(t, privDir, nil, 0o600, -1)
		}, "is not a directory"},
		{"ring owned by another user", func(t *testing.T, privDir, ring, victim, id string) {
			mkdir(t, privDir, 0o700, -1)
			plantFile(t, ring, forgedRing(id), 0o600, nobody)
		}, fmt.Sprintf("is owned by uid %d, not by this user (uid %d)", nobody, os.Geteuid())},
		{"ring of mode 0644", func(t *testing.T, privDir, ring, victim, id string) {
			mkdir(t, privDir, 0o700, -1)
			plantFile(t, ring, forgedRing(id), 0o644, -1)
		}, "has mode 0644, want 0600"},
		{"ring of another spool", func(t *testing.T, privDir, ring, victim, id string) {
			mkdir(t, privDir, 0o700, -1)
			plantFile(t, ring, forgedRing("0123456789abcdef"), 0o600, -1)
		}, "does not hold a ring of this spool"},
		{"ring shorter than its header says", func(t *testing.T, privDir, ring, victim, id string) {
			mkdir(t, privDir, 0o700, -1)
			plantFile(t, ring, forgedRing(id)[:ringHeader+1024], 0o600, -1)
		}, fmt.Sprintf("is %d bytes, not the size its header names", ringHeader+1024)},
		{"ring is a directory", func(t *testing.T, privDir, ring, victim, id string) {
			mkdir(t, privDir, 0o700, -1)
			mkdir(t, ring, 0o700, -1)
		}, "is not a regular file"},
		{"ring is a FIFO", func(t *testing.T, privDir, ring, victim, id string) {
			mkdir(t, privDir, 0o700, -1)
			if err := syscall.Mkfifo(ring, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is not a regular file"},
	}
	for _, tt := range tests {
		for _, interval := range []time.Duration{time.Hour, 0} { // a ring is recovered whatever the mode
			t.Run(fmt.Sprintf("%s/sync %s", tt.name, interval), func(t *testing.T) {
				dir, ringDir := t.TempDir(), t.TempDir()
				id := spoolID(t, dir, ringDir)
				victim := filepath.Join(ringDir, "victim", "file")
				mkdir(t, filepath.Dir(victim), 0o755, -1)
				plantFile(t, victim, []byte("the victim's content"), 0o644, -1)
				privDir := filepath.Join(ringDir, ringDirName(id))
				ring := ringPath(ringDir, id)
				tt.plant(t, privDir, ring, victim, id)
				before := snapshot(t, ringDir)

				_, err := Open(Config{Dir: dir, SyncInterval: interval, RingDir: ringDir})
				checkRefusal(t, err, privDir, tt.want)
				if after := snapshot(t, ringDir); after != before {
					t.Errorf("the refused start changed the ring dir:\nbefore\n%s\nafter\n%s", before, after)
				}
				if _, err := os.Lstat(filepath.Join(dir, ringDirName(id))); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a ring was made in the spool dir after the refusal (%v)", err)
				}
			})
		}
	}
}

// TestRingRefusalDoesNotFallBack: with the default ring dir (/dev/shm), a directory that
// cannot take the ring sends it to the spool dir (TestRingFallsBackToSpoolDir), but a planted
// path must stop the start instead, or planting would be a way to move the ring. (Open finds it
// when it looks for a ring to recover; one planted after that is refused by openRing, and
// mayFallBack keeps it from falling back: TestRingMayFallBack.)
func TestRingRefusalDoesNotFallBack(t *testing.T) {
	leakcheck.Register(t)
	shm, err := os.MkdirTemp("/dev/shm", "kyomi-test-shm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	t.Cleanup(func(d string) func() { return func() { shmDir = d } }(shmDir))
	shmDir = shm // read by Open
	dir := t.TempDir()
	id := spoolID(t, dir, "")
	privDir := filepath.Join(shm, ringDirName(id))
	mkdir(t, privDir, 0o700, nobody)

	_, err = Open(Config{Dir: dir, SyncInterval: time.Hour})
	checkRefusal(t, err, privDir, fmt.Sprintf("is owned by uid %d", nobody))
	if _, err := os.Lstat(filepath.Join(dir, ringDirName(id))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the ring fell back to the spool dir after a refusal (%v)", err)
	}
}

// TestRingMayFallBack: the ring goes to the spool dir only when the default dir cannot take it.
func TestRingMayFallBack(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("cannot map spool ring x: %w", syscall.ENOSPC), true},
		{fmt.Errorf("cannot create spool ring dir x: %w", syscall.EROFS), true},
		{&unsafeRingError{"spool ring", "x", "is a symbolic link"}, false},
		{fmt.Errorf("wrapped: %w", &unsafeRingError{"spool ring directory", "x", "is not a directory"}), false},
	} {
		if got := mayFallBack(tt.err); got != tt.want {
			t.Errorf("mayFallBack(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestRingCreatedPrivate checks what Open makes: a directory of mode 0700 and a file of mode
// 0600, both the process's, whatever the umask, and also in a ring dir with the set-group-id bit
// (a Kubernetes emptyDir with fsGroup), whose new directories would inherit it.
func TestRingCreatedPrivate(t *testing.T) {
	leakcheck.Register(t)
	dir, ringDir, setgidDir := t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.Chmod(setgidDir, os.ModeSetgid|0o777); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0o277) // would give a directory 0500 and a file 0400
	defer syscall.Umask(old)
	s, _ := openSpool(t, Config{Dir: dir, SyncInterval: time.Hour, RingDir: ringDir})
	s2, _ := openSpool(t, Config{Dir: t.TempDir(), SyncInterval: time.Hour, RingDir: setgidDir})
	syscall.Umask(old)
	for path, want := range map[string]os.FileMode{
		filepath.Join(ringDir, ringDirName(s.ID())):    os.ModeDir | 0o700,
		ringPath(ringDir, s.ID()):                      0o600,
		filepath.Join(setgidDir, ringDirName(s2.ID())): os.ModeDir | 0o700,
		ringPath(setgidDir, s2.ID()):                   0o600,
	} {
		st, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want || st.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
			t.Errorf("%s: mode %v uid %d, want %v uid %d", path, st.Mode(), st.Sys().(*syscall.Stat_t).Uid, want, os.Geteuid())
		}
	}
}

// TestRingReusedAfterCrash is the normal restart after a crash with SyncInterval: the ring file
// is there, the process's own, and is taken again after its records are moved into the segment;
// appends go on; a clean Close removes the ring and its directory.
func TestRingReusedAfterCrash(t *testing.T) {
	leakcheck.Register(t)
	t.Cleanup(func(d time.Duration) func() { return func() { copyInterval = d } }(copyInterval))
	copyInterval = time.Hour // read by Open: the records stay in the ring only
	dir, ringDir := t.TempDir(), t.TempDir()
	s, _ := openSpool(t, Config{Dir: dir, SyncInterval: time.Hour, RingDir: ringDir})
	for i := range 50 {
		if err := s.Append(fmt.Appendf(nil, "before-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	crashDir, crashRing := copyDir(t, dir), copyDir(t, ringDir)

	s2, err := Open(Config{Dir: crashDir, SyncInterval: time.Hour, RingDir: crashRing})
	if err != nil {
		t.Fatalf("restart after a crash: %v", err)
	}
	if err := s2.Append([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if err := s2.Sync(); err != nil {
		t.Fatal(err)
	}
	got, _ := readAll(t, s2, s2.Checkpoint())
	if len(got) != 51 || got[0] != "before-00" || got[49] != "before-49" || got[50] != "after" {
		t.Fatalf("after the restart read %d records (%.40q), want the 50 acknowledged and 1 new", len(got), got)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(crashRing, ringDirName(s2.ID()))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ring directory after a clean Close: %v, want it removed", err)
	}
}

// TestLegacyRingRecovered: a ring left by a crash of a version that kept it right in the ring
// dir is moved into the segment and removed; a symbolic link or another user's file at that name
// is not read, not removed, and does not stop the start (this version never writes there).
func TestLegacyRingRecovered(t *testing.T) {
	leakcheck.Register(t)
	t.Cleanup(func(d time.Duration) func() { return func() { copyInterval = d } }(copyInterval))
	copyInterval = time.Hour
	dir, ringDir := t.TempDir(), t.TempDir()
	s, _ := openSpool(t, Config{Dir: dir, SyncInterval: time.Hour, RingDir: ringDir})
	for i := range 20 {
		if err := s.Append(fmt.Appendf(nil, "legacy-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	id := s.ID()
	crashDir, crashRing := copyDir(t, dir), copyDir(t, ringDir)
	legacy := filepath.Join(crashRing, legacyRingName(id))
	if err := os.Rename(ringPath(crashRing, id), legacy); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(crashRing, ringDirName(id))); err != nil {
		t.Fatal(err)
	}
	s2, _ := openSpool(t, Config{Dir: crashDir, SyncInterval: time.Hour, RingDir: crashRing})
	if got, _ := readAll(t, s2, s2.Checkpoint()); len(got) != 20 || got[19] != "legacy-19" {
		t.Fatalf("read %d records from the earlier version's ring, want 20", len(got))
	}
	if _, err := os.Lstat(legacy); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the earlier version's ring is still there after its recovery (%v)", err)
	}

	for _, tt := range []struct {
		name  string
		plant func(t *testing.T, legacy, victim string)
	}{
		{"symlink", func(t *testing.T, legacy, victim string) { symlink(t, victim, legacy) }},
		{"another user's file", func(t *testing.T, legacy, victim string) {
			plantFile(t, legacy, forgedRing(id), 0o600, nobody)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir2, ringDir2 := copyDir(t, dir), t.TempDir()
			victim := filepath.Join(t.TempDir(), "victim")
			plantFile(t, victim, forgedRing(id), 0o600, -1) // would inject "forged" if read
			legacy := filepath.Join(ringDir2, legacyRingName(id))
			tt.plant(t, legacy, victim)
			before := snapshot(t, ringDir2) + snapshot(t, filepath.Dir(victim))
			logs := &syncbuf.Buffer{}
			s3, err := Open(Config{Dir: dir2, SyncInterval: time.Hour, RingDir: ringDir2, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer s3.Close()
			got, _ := readAll(t, s3, s3.Checkpoint())
			if strings.Contains(strings.Join(got, ","), "forged") {
				t.Fatal("a record of the planted ring was read into the spool")
			}
			if !strings.Contains(logs.String(), "spool ring of an earlier version not read") {
				t.Errorf("the planted file is not logged:\n%s", logs.String())
			}
			s3.Close()
			if after := snapshot(t, ringDir2) + snapshot(t, filepath.Dir(victim)); after != before {
				t.Errorf("the start changed the planted files:\nbefore\n%s\nafter\n%s", before, after)
			}
		})
	}
}

// spoolID opens and closes a spool in dir once, so that it has its id, and returns the id.
func spoolID(t *testing.T, dir, ringDir string) string {
	t.Helper()
	s, err := Open(Config{Dir: dir, SyncInterval: time.Hour, RingDir: ringDir})
	if err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return id
}

// checkRefusal checks that err is the refusal of path for the reason want, in one sentence.
func checkRefusal(t *testing.T, err error, path, want string) {
	t.Helper()
	var unsafe *unsafeRingError
	if !errors.As(err, &unsafe) {
		t.Fatalf("Open: %v, want a refusal", err)
	}
	msg := err.Error()
	t.Logf("refused: %s", msg)
	if (!strings.HasPrefix(msg, "spool ring "+path) && !strings.HasPrefix(msg, "spool ring directory "+path)) || !strings.Contains(msg, want) || !strings.HasSuffix(msg, ": remove it or choose -spool-ring-dir") {
		t.Errorf("refusal %q, want it to name %s, say %q and what to do", msg, path, want)
	}
	if strings.ContainsAny(msg, "\n") || strings.Contains(msg, ". ") || strings.HasSuffix(msg, ".") {
		t.Errorf("refusal %q is not one sentence", msg)
	}
}

// snapshot describes every file under root: path, type, mode, owner and content.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(path string, st os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d", path, st.Mode(), st.Sys().(*syscall.Stat_t).Uid)
		switch {
		case st.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(path)
			fmt.Fprintf(&b, " -> %s", target)
		case st.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %d bytes %x", len(data), data[:min(len(data), 64)])
			if bytes.Contains(data, []byte("forged")) {
				b.WriteString(" forged")
			}
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func mkdir(t *testing.T, path string, mode os.FileMode, uid int) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	chown(t, path, uid)
}

func plantFile(t *testing.T, path string, data []byte, mode os.FileMode, uid int) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	chown(t, path, uid)
}

// chown gives path to uid, unless uid is -1. Only root can: elsewhere the test is skipped.
func chown(t *testing.T, path string, uid int) {
	t.Helper()
	if uid < 0 {
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("planting a file of another user needs root (chown)")
	}
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

// forgedRing is a ring of spool id, 64 KiB of data, whose header says that a frame holding
// "forged" waits at segment 1, offset 0: what an attacker would plant to inject an event.
func forgedRing(id string) []byte {
	const size = 64 << 10
	b := make([]byte, ringHeader+size)
	copy(b, ringMagic)
	copy(b[hdrID:], id)
	binary.LittleEndian.PutUint64(b[hdrSegment:], 1)
	frame := make([]byte, headerSize+len("forged"))
	putFrame(frame, []byte("forged"), time.Now().UnixNano())
	copy(b[ringHeader:], frame)
	binary.LittleEndian.PutUint64(b[hdrCopied:], 0)
	binary.LittleEndian.PutUint64(b[hdrTail:], uint64(len(frame)))
	binary.LittleEndian.PutUint64(b[hdrSize:], size)
	return b
}
