package salt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Local is the single-node salt source: one 0600 file of 32 random bytes per
// UTC day, DIR/salt/YYYY-MM-DD, created atomically (temporary file, fsync,
// hard link, so two creators cannot both win) and deleted, like its
// in-memory copy, MaxAge after its day began. Tomorrow's file is made during
// the prefetch window, so midnight needs no I/O on the hot path; should the
// loop be late, Salt makes or reads the file itself, once per day.
//
// A Local is safe for concurrent use; call Close to stop its loop.
type Local struct {
	*core
	dir string // DIR/salt
}

var _ Source = (*Local)(nil)

// NewLocal opens the salt directory under dir (creating dir/salt with mode
// 0700), makes or reads today's salt, deletes expired salt files and starts
// the background loop. It fails when today's salt cannot be made durable.
func NewLocal(dir string, opts ...Option) (*Local, error) {
	cfg, err := buildConfig(opts)
	if err != nil {
		return nil, err
	}
	c, err := newCore(cfg, "local")
	if err != nil {
		return nil, err
	}
	l := &Local{core: c, dir: filepath.Join(dir, "salt")}
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create salt directory: %w", err)
	}
	l.removeTemps()
	if err := l.refresh(context.Background()); err != nil {
		return nil, err
	}
	l.startLoop(l.refresh, nil)
	return l, nil
}

// Salt returns the salt of t's UTC day. It is served from memory; only the
// first call of a day whose file the loop has not read yet touches the disk.
func (l *Local) Salt(t time.Time) (*Salt, error) {
	if s := l.lookup(dayNumber(t)); s != nil {
		return s, nil
	}
	return l.slow(dayNumber(t))
}

func (l *Local) slow(d int64) (*Salt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.lookup(d); s != nil {
		return s, nil
	}
	now := l.cfg.clock()
	if !inWindow(d, now) {
		return nil, fmt.Errorf("no salt kept for %s: %w", dayKey(d), ErrUnavailable)
	}
	s, err := l.loadOrCreate(d)
	if err != nil {
		return nil, fmt.Errorf("cannot load salt of %s: %w: %w", dayKey(d), ErrUnavailable, err)
	}
	l.putLocked(s)
	if d == dayNumber(now) {
		l.confirmed.Store(now.UnixNano())
	}
	return s, nil
}

// Ready reports whether events can be hashed now: nil when today's salt is
// available.
func (l *Local) Ready() error {
	_, err := l.Salt(l.cfg.clock())
	return err
}

// Close stops the background loop. The files stay; Salt keeps serving the
// cached salts but nothing is rotated any more.
func (l *Local) Close() error {
	l.close()
	return nil
}

// refresh makes sure today's (and in the prefetch window tomorrow's) salt is
// cached, then forgets and deletes expired salts.
func (l *Local) refresh(context.Context) error {
	now := l.cfg.clock()
	today := dayNumber(now)
	days := []int64{today}
	if l.prefetching(now) {
		days = append(days, today+1)
	}
	var errs []error
	for _, d := range days {
		if _, err := l.slow(d); err != nil {
			errs = append(errs, err)
		}
	}
	l.mu.Lock()
	l.purgeLocked(now)
	l.mu.Unlock()
	if err := l.removeExpired(now); err != nil {
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	if l.lookup(today) != nil {
		l.confirmed.Store(now.UnixNano())
	}
	switch {
	case l.lookup(today) == nil:
		l.setState(stateUnavailable, err)
	case err != nil:
		l.setState(stateDegraded, err)
	default:
		l.setState(stateOK, nil)
	}
	return err
}

func (l *Local) path(d int64) string { return filepath.Join(l.dir, dayKey(d)) }

// loadOrCreate reads day d's file, or creates it atomically with fresh
// random bytes when it does not exist.
func (l *Local) loadOrCreate(d int64) (*Salt, error) {
	s, err := l.load(d)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return s, err
	}
	s = randomSalt(d)
	tmp, err := os.CreateTemp(l.dir, ".tmp-"+dayKey(d)+"-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("cannot create salt file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(s.b[:])
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("cannot write salt file: %w", err)
	}
	// Link fails if the name exists: the first creator wins, like SET NX.
	if err := os.Link(tmp.Name(), l.path(d)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return l.load(d)
		}
		return nil, fmt.Errorf("cannot publish salt file: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		return nil, err
	}
	return s, nil
}

func (l *Local) load(d int64) (*Salt, error) {
	f, err := os.Open(l.path(d))
	if err != nil {
		return nil, fmt.Errorf("cannot open salt file: %w", err)
	}
	defer f.Close()
	var b [Size]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return nil, fmt.Errorf("cannot read salt file %s: %w", l.path(d), err)
	}
	if n, _ := f.Read(make([]byte, 1)); n != 0 {
		return nil, fmt.Errorf("salt file %s is longer than %d bytes", l.path(d), Size)
	}
	return newSalt(d, b), nil
}

// removeExpired deletes the files of salts that began MaxAge or more before
// now. Names that are not days are left alone.
func (l *Local) removeExpired(now time.Time) error {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("cannot list salt directory: %w", err)
	}
	var errs []error
	for _, e := range ents {
		day, err := time.Parse(time.DateOnly, e.Name())
		if err != nil || !expired(dayNumber(day), now) {
			continue
		}
		if err := os.Remove(filepath.Join(l.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cannot delete expired salt file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// removeTemps deletes temporary files a crash may have left behind: those
// older than a minute, so a creator running right now keeps its own.
func (l *Local) removeTemps() {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), ".tmp-") && time.Since(fi.ModTime()) > time.Minute {
			_ = os.Remove(filepath.Join(l.dir, e.Name()))
		}
	}
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot open salt directory: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cannot sync salt directory: %w", err)
	}
	return nil
}

func dayKey(d int64) string { return DayKey(time.Unix(d*secondsPerDay, 0)) }
