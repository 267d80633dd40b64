// Package spool is the durable queue between the event handler and the
// store: an append-only log of checksummed records in segment files, with
// group commit, a bounded size, torn-tail recovery at open, a reader for
// the shipper and an atomically written checkpoint.
//
// Files under Config.Dir:
//
//	000000001.seg   segment: frames of [len u32][crc32c u32][append time i64 ns][payload]
//	checkpoint      "v1 <spool id> <segment> <offset> [<pending segment> <pending offset>]"
//	prepared        the next segment, zero-filled and synced ahead of time
//	prepared.tmp    a prepared segment being written (removed at open)
//
// Every Open starts a new segment, so all segments but the last are sealed
// (fsynced, cut to their last frame, and never written again) and only the
// tail of the segment that was last before the open can be torn; that tail
// is cut at open.
//
// Segments are preallocated: a background goroutine zero-fills and syncs
// the next segment file, and a new segment is that file renamed. Group
// commits then overwrite blocks that are already allocated and written, so
// each one is an fdatasync that flushes data only: no block allocation, no
// inode write (on ext4 without a journal a plain append made every fsync
// write the inode too: one synchronous disk round trip more per group). A
// zero tail is therefore the normal end of the live segment, not damage.
//
// Two ways to acknowledge, set by Config.SyncInterval:
//
//   - 0: appends buffer their frames and wait for a group commit, one write
//     and fdatasync shared by the appends that arrived meanwhile.
//   - > 0: an append stores its frames in the staging ring, a file on a
//     memory file system mapped shared (ring.go), under the spool's mutex
//     and returns: a crash of the process does not touch the bytes. No
//     system call, no other goroutine, no wait. Every 50 ms the new frames
//     are written into the live segment; the segment is fdatasynced every
//     interval and before each MarkPending.
//
// The ring needs a Unix system; fdatasync and fallocate are used on
// Linux, plain fsync and truncate elsewhere.
package spool

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// headerSize is the frame header: payload length, CRC32C of the append
// time and payload, append time in Unix nanoseconds.
const headerSize = 16

// MaxRecordBytes is the largest payload Append accepts.
const MaxRecordBytes = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrFull is returned by Append when the spool holds more than
// Config.MaxBytes; the record was not stored. The event handler answers 503.
var ErrFull = errors.New("spool is full")

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("spool is closed")

// Position is a place in the spool: a segment number and a byte offset in
// it. Positions order by segment, then offset.
type Position struct {
	Segment uint64
	Offset  int64
}

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool {
	return p.Segment < q.Segment || (p.Segment == q.Segment && p.Offset < q.Offset)
}

// String formats p as "segment.offset".
func (p Position) String() string {
	return strconv.FormatUint(p.Segment, 10) + "." + strconv.FormatInt(p.Offset, 10)
}

// Config configures a Spool. The zero value of every field but Dir selects
// the default.
type Config struct {
	// Dir holds the segment files and the checkpoint; created if missing.
	Dir string
	// MaxBytes bounds the segment bytes on disk; past it Append returns
	// ErrFull. Default 1 GiB: at ~250 bytes per event about 4M events, an
	// outage of over an hour at 1000 events/s. Must be at least
	// 2*SegmentBytes. The disk holds up to two segments more than the
	// records: the unwritten (zero) tail of the live segment and the
	// prepared next segment.
	MaxBytes int64
	// SegmentBytes is the size at which the writer starts a new segment.
	// Consumed space is freed a whole segment at a time. Default 64 MiB, or
	// MaxBytes/2 when that is smaller (MaxBytes must then be >= 8 MiB).
	SegmentBytes int64
	// SyncInterval 0 (default) makes Append return only after its record is
	// written and fsynced (group commit): nothing acknowledged is lost on a
	// crash of the process or of the machine. A positive interval makes
	// Append return once its record is stored in the staging ring (RingDir),
	// with no wait: nothing acknowledged is lost on a crash of the process
	// (Open moves what the ring holds into the segment), and the segment is
	// fsynced every interval and before each MarkPending, so a crash of the
	// machine (kernel, power) loses at most the last interval of records
	// and never a record that was already shipped.
	SyncInterval time.Duration
	// RingDir holds the staging ring of SyncInterval mode, a file of up to
	// 8 MiB in a private directory (mode 0700) named after the spool id;
	// Open refuses a directory or file there that is not the process's own
	// with exactly that mode (ring.go). It should be a memory file system
	// (tmpfs), which keeps the ring's pages mapped and writable for good;
	// elsewhere the ring works as well but writeback makes its pages fault
	// again. Default: /dev/shm on Linux when it is a tmpfs, else Dir; Dir
	// also when /dev/shm cannot take the ring (full, read-only; logged), but
	// never after a refusal.
	RingDir string
	// CommitDelay spaces group commits: a commit (a write and fsync, or with
	// SyncInterval a write) starts no sooner than CommitDelay after the
	// previous one started, so under load each covers more appends. An
	// append waits at most this long more; when appends come further apart
	// than CommitDelay, none waits at all. Durability is unchanged. Default
	// 0: commits run back to back. Measured on
	// a virtual disk (fsync ~0.5ms wall, ~100µs CPU), 1ms saved about a
	// fifth of the CPU per append at 64 appenders but cut their throughput
	// to a third, and lost both at 256 (BenchmarkAppendParallel); it may pay
	// where an fsync is cheap in wall time but dear in CPU.
	CommitDelay time.Duration
	// Logger receives recovery and error messages; default discards.
	Logger *slog.Logger
	// Registerer receives the spool metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Validate reports every invalid field of c.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("spool dir: must be set"))
	}
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("spool max bytes %d: must be >= 0", c.MaxBytes))
	}
	if c.SegmentBytes < 0 {
		errs = append(errs, fmt.Errorf("spool segment bytes %d: must be >= 0", c.SegmentBytes))
	}
	if c.SyncInterval < 0 {
		errs = append(errs, fmt.Errorf("spool sync interval %s: must be >= 0", c.SyncInterval))
	}
	if c.CommitDelay < 0 {
		errs = append(errs, fmt.Errorf("spool commit delay %s: must be >= 0", c.CommitDelay))
	}
	d := c.withDefaults()
	if c.RingDir != "" && c.SyncInterval > 0 {
		if st, err := os.Stat(c.RingDir); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("spool ring dir %s: must be an existing directory", c.RingDir))
		}
	}
	if d.SegmentBytes < 4*MaxRecordBytes {
		errs = append(errs, fmt.Errorf("spool segment bytes %d: must be >= %d", d.SegmentBytes, 4*MaxRecordBytes))
	}
	if d.MaxBytes < 2*d.SegmentBytes {
		errs = append(errs, fmt.Errorf("spool max bytes %d: must be >= 2 * segment bytes (%d)", d.MaxBytes, d.SegmentBytes))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.MaxBytes == 0 {
		c.MaxBytes = 1 << 30
	}
	if c.SegmentBytes == 0 {
		// 64 MiB, or half of a smaller MaxBytes (never below the minimum).
		c.SegmentBytes = max(min(64<<20, c.MaxBytes/2), 4*MaxRecordBytes)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RingDir == "" {
		c.RingDir = defaultRingDir(c.Dir)
	}
	return c
}

// group is one group commit: the appends whose frames sit in the same
// buffer and become durable with the same write (and fsync). Each waits on
// its own waiter, which receives the outcome; only the members of a group
// are woken when it completes (a shared condition variable woke every
// waiter at every fsync, a herd of futex calls per group at hundreds of
// appenders). Two groups alternate, like the buffers, so that a commit
// allocates nothing.
type group struct {
	waiters []*waiter
}

// done hands every member of g the outcome of its commit and empties g.
func (g *group) done(err error) {
	for i, w := range g.waiters {
		w.c <- err // buffered: never blocks
		g.waiters[i] = nil
	}
	g.waiters = g.waiters[:0]
}

// waiter is one AppendAll call waiting for its group; it is reused through
// waiters, so an append allocates nothing.
type waiter struct{ c chan error }

var waiters = sync.Pool{New: func() any { return &waiter{c: make(chan error, 1)} }}

type segment struct {
	id   uint64
	size int64 // bytes written to the file (durable for sealed segments)
}

// Spool is the durable record log. Append is safe for concurrent use;
// one Reader at a time consumes it, and Commit advances the checkpoint.
type Spool struct {
	cfg     Config
	id      string // random per spool directory, part of dedup tokens
	metrics *metrics

	mu        sync.Mutex
	cond      *sync.Cond // signalled when io finishes (rotation, Sync and Close wait on it)
	group     *group     // the appends in buf
	spareG    *group     // the other group, reused by the next flush
	kick      chan struct{}
	lastIO    time.Time // start of the last write+fsync
	closed    bool
	segs      []segment     // ascending; the last is the one being written
	file      *os.File      // the last segment
	buf       []byte        // SyncInterval 0: frames appended but not yet written
	spare     []byte        // the other buffer, reused by the next flush
	ring      *ring         // SyncInterval > 0: appends store frames here (ring.go)
	copied    int64         // SyncInterval > 0: offset in the last segment up to which the ring's frames are in the file
	copyBusy  bool          // one goroutine copies the ring into the segment at a time
	scratch   []byte        // a frame that wraps around the ring's end is built here
	copyEvery time.Duration // copyInterval when Open ran
	// ringDefaulted: Config.RingDir was empty, so the ring may fall back to Dir when the default
	// directory cannot take it, and a ring is looked for in both.
	ringDefaulted bool
	tail          int64     // offset in the last segment after its last frame
	durable       Position  // end of the data in the segment files, readable by the shipper
	unsynced      bool      // SyncInterval > 0: frames stored since the last fdatasync
	appended      uint64    // records appended since open (collector_spool_records_appended_total)
	ioBusy        bool      // one goroutine writes and syncs at a time
	failed        error     // a write or fsync failed: the spool refuses appends
	total         int64     // bytes of all segments, including buf
	oldest        int64     // append time (ns) of the oldest uncommitted record, 0 if none
	openEnd       Position  // start of the segment made by Open
	commit        Position  // written under ckMu and mu; read under either
	pending       *Position // as commit
	// ckMu serializes MarkPending and Commit. Their checkpoint file writes
	// (two fsyncs: about 1 ms each under load, up to 4.5 ms) run outside
	// mu: with mu held, every append and the group commit in flight stalled
	// behind them, twice per shipped batch.
	ckMu     sync.Mutex
	notify   chan struct{}
	prepared bool          // the prepared file is complete and unused
	prepKick chan struct{} // asks prepareLoop for a new prepared file

	stop     chan struct{}
	loops    sync.WaitGroup // commitLoop and syncLoop
	prepDone chan struct{}  // prepareLoop ended
}

const (
	preparedName = "prepared"
	preparedTmp  = "prepared.tmp"
)

// Open opens or creates the spool in cfg.Dir, cuts a torn or corrupt tail of
// the last segment (counting the damaged record), loads the checkpoint and
// starts a new segment. Close releases it.
func Open(cfg Config) (*Spool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cannot open spool: %w", err)
	}
	ringDefaulted := cfg.RingDir == ""
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create spool dir: %w", err)
	}
	s := &Spool{cfg: cfg, notify: make(chan struct{}, 1), kick: make(chan struct{}, 1),
		prepKick: make(chan struct{}, 1), stop: make(chan struct{}),
		prepDone: make(chan struct{}), group: new(group), spareG: new(group), copyEvery: copyInterval,
		ringDefaulted: ringDefaulted}
	s.cond = sync.NewCond(&s.mu)
	s.metrics = newMetrics(s)
	if err := s.load(); err != nil {
		return nil, err
	}
	if err := s.metrics.register(cfg.Registerer); err != nil {
		_ = s.closeSegment()
		if s.ring != nil {
			_ = s.ring.close(true) // empty: Open moved what it held into the segment
		}
		return nil, fmt.Errorf("cannot register spool metrics: %w", err)
	}
	if cfg.SyncInterval > 0 {
		s.loops.Go(s.syncLoop)
	} else {
		s.loops.Go(s.commitLoop)
	}
	go s.prepareLoop() // newSegmentFile asked it for the next segment
	return s, nil
}

func segName(id uint64) string { return fmt.Sprintf("%09d.seg", id) }

func (s *Spool) load() error {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("cannot list spool dir: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".seg") {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
		if err != nil {
			continue
		}
		st, err := e.Info()
		if err != nil {
			return fmt.Errorf("cannot stat spool segment %s: %w", name, err)
		}
		s.segs = append(s.segs, segment{id: id, size: st.Size()})
	}
	slices.SortFunc(s.segs, func(a, b segment) int { return cmp.Compare(a.id, b.id) })
	if err := s.loadCheckpoint(); err != nil {
		return err
	}
	// The ring is read whatever SyncInterval is now: it may hold acknowledged frames of a run
	// with another setting.
	if err := s.recoverRing(); err != nil {
		return err
	}
	if n := len(s.segs); n > 0 {
		good, err := s.recoverTail(s.segs[n-1].id)
		if err != nil {
			return err
		}
		s.segs[n-1].size = good
	}
	// The new segment comes after every segment and every position the
	// checkpoint names, even if segment files were removed by hand.
	next := s.commit.Segment + 1
	if s.pending != nil {
		next = max(next, s.pending.Segment+1)
	}
	if n := len(s.segs); n > 0 {
		next = max(next, s.segs[n-1].id+1)
	}
	if err := os.Remove(filepath.Join(s.cfg.Dir, preparedTmp)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cannot remove unfinished prepared spool segment: %w", err)
	}
	if st, err := os.Stat(filepath.Join(s.cfg.Dir, preparedName)); err == nil {
		// A prepared file of another segment size (the flag changed) is
		// not used.
		s.prepared = st.Size() == s.cfg.SegmentBytes
		if !s.prepared {
			_ = os.Remove(filepath.Join(s.cfg.Dir, preparedName))
		}
	}
	f, err := s.newSegmentFile(next)
	if err != nil {
		return err
	}
	if s.cfg.SyncInterval > 0 {
		s.ring, err = openRing(s.cfg.RingDir, s.id, ringSize(s.cfg.SegmentBytes), next)
		if err != nil && mayFallBack(err) && s.ringDefaulted && s.cfg.RingDir != s.cfg.Dir {
			// The default (/dev/shm) cannot take the ring here: full, read-only or not a
			// directory.
			s.cfg.Logger.Warn("spool ring falls back to the spool directory", "err", err)
			s.cfg.RingDir = s.cfg.Dir
			s.ring, err = openRing(s.cfg.RingDir, s.id, ringSize(s.cfg.SegmentBytes), next)
		}
		if err != nil {
			f.Close()
			return err
		}
	} else {
		for _, dir := range s.ringDirs() {
			if err := removeRing(dir, s.id); err != nil {
				s.cfg.Logger.Warn("cannot remove the spool ring", "err", err)
			}
		}
	}
	s.file = f
	s.segs = append(s.segs, segment{id: next})
	s.openEnd = Position{Segment: next}
	s.durable = s.openEnd
	for _, sg := range s.segs {
		s.total += sg.size
	}
	// The checkpoint stays as recorded when its segment is gone: Commit
	// deletes a sealed segment once the checkpoint reaches its end, and the
	// reader goes on at the next segment. The end of segment N and the
	// start of segment N+1 are one place under two names, and the shipper
	// names a batch by its start: moved to the other name here, a pending
	// batch was replayed under another token than its first insert and
	// stored twice. Only a checkpoint past a cut tail is clamped: the
	// records it passed are gone.
	if i := s.segIndex(s.commit.Segment); i >= 0 && s.commit.Offset > s.segs[i].size {
		s.commit.Offset = s.segs[i].size
	}
	if s.pending != nil && !s.commit.Less(*s.pending) {
		s.pending = nil
	}
	if s.commit.Less(s.openEnd) {
		s.oldest = s.appendTimeAt(s.commit)
	}
	return nil
}

func (s *Spool) segIndex(id uint64) int {
	for i, sg := range s.segs {
		if sg.id == id {
			return i
		}
	}
	return -1
}

// newSegmentFile makes segment id the new last segment: the prepared file
// renamed when there is one, else a new empty file. With SyncInterval > 0
// the file is allocated to SegmentBytes, so that copying the ring into it
// never needs a block the disk no longer has (acknowledged frames would
// then be stuck in the ring). It is called with mu held or before Open
// returns.
func (s *Spool) newSegmentFile(id uint64) (*os.File, error) {
	path := filepath.Join(s.cfg.Dir, segName(id))
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("cannot create spool segment %s: it exists", segName(id))
	}
	if s.prepared {
		s.prepared = false
		if err := os.Rename(filepath.Join(s.cfg.Dir, preparedName), path); err != nil {
			s.cfg.Logger.Warn("cannot use the prepared spool segment", "err", err)
		}
	}
	select {
	case s.prepKick <- struct{}{}:
	default:
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot create spool segment: %w", err)
	}
	err = syncDir(s.cfg.Dir)
	if err == nil && s.cfg.SyncInterval > 0 {
		err = allocate(f, s.cfg.SegmentBytes) // a prepared file already has its size
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// closeSegment closes the last segment's file.
func (s *Spool) closeSegment() error {
	if err := s.file.Close(); err != nil {
		return fmt.Errorf("cannot close spool segment: %w", err)
	}
	return nil
}

// prepareLoop zero-fills and syncs the next segment file whenever the last
// one was used, until Close.
func (s *Spool) prepareLoop() {
	defer close(s.prepDone)
	for {
		select {
		case <-s.stop:
			return
		case <-s.prepKick:
		}
		s.mu.Lock()
		ready := s.prepared
		s.mu.Unlock()
		if ready {
			continue
		}
		if err := s.prepare(); err != nil {
			// Segments are then created empty: slower commits, same safety.
			s.cfg.Logger.Warn("cannot prepare the next spool segment", "err", err)
			continue
		}
		s.mu.Lock()
		s.prepared = true
		s.mu.Unlock()
	}
}

// prepPause spaces the synced MiB writes of a preparation.
const prepPause = 10 * time.Millisecond

// errStopped ends a preparation cut short by Close.
var errStopped = errors.New("spool closing")

// prepare writes the prepared file: SegmentBytes of zeros, synced, then
// renamed into place, so a prepared file is always whole.
func (s *Spool) prepare() error {
	tmp := filepath.Join(s.cfg.Dir, preparedTmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cannot create prepared spool segment: %w", err)
	}
	// Paced: one synced MiB at a time, so that group commits never queue
	// behind a large writeback (64 MiB at once held a lone commit for
	// 40ms). A 64 MiB segment takes about a second to prepare; at 20k
	// events/s it lasts over ten.
	zero := make([]byte, 1<<20)
	pause := time.NewTimer(0)
	defer pause.Stop()
	for n := int64(0); n < s.cfg.SegmentBytes && err == nil; n += int64(len(zero)) {
		select {
		case <-s.stop:
			err = errStopped
		case <-pause.C:
			if _, err = f.Write(zero[:min(int64(len(zero)), s.cfg.SegmentBytes-n)]); err == nil {
				err = datasync(f)
			}
			pause.Reset(prepPause)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.cfg.Dir, preparedName))
	}
	if err != nil {
		_ = os.Remove(tmp)
		if errors.Is(err, errStopped) {
			return nil
		}
		return fmt.Errorf("cannot write prepared spool segment: %w", err)
	}
	return nil
}

// recoverTail scans segment id, truncates it after its last valid frame and
// returns the valid length. Zeros after the last frame are the unwritten
// part of a preallocated segment; anything else there is damage, counted
// and logged.
func (s *Spool) recoverTail(id uint64) (int64, error) {
	path := filepath.Join(s.cfg.Dir, segName(id))
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("cannot read spool segment %s: %w", segName(id), err)
	}
	off := framesEnd(data)
	if off == len(data) {
		return int64(off), nil
	}
	if !allZero(data[off:]) {
		s.metrics.corrupt.Inc()
		s.cfg.Logger.Warn("spool tail damaged, cut", "segment", id, "offset", off, "bytes_cut", len(data)-off)
	}
	if err := os.Truncate(path, int64(off)); err != nil {
		return 0, fmt.Errorf("cannot cut damaged spool tail: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("cannot open spool segment: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("cannot sync spool segment: %w", err)
	}
	return int64(off), nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// framesEnd returns the length of the run of valid frames at the start of b.
func framesEnd(b []byte) int {
	off := 0
	for off < len(b) {
		n, ok := checkFrame(b[off:])
		if !ok {
			break
		}
		off += n
	}
	return off
}

// checkFrame validates the frame at the start of b and returns its length.
func checkFrame(b []byte) (int, bool) {
	if len(b) < headerSize {
		return 0, false
	}
	n := binary.LittleEndian.Uint32(b)
	if n == 0 || n > MaxRecordBytes || int(n) > len(b)-headerSize {
		return 0, false
	}
	if crc32.Checksum(b[8:headerSize+int(n)], castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return 0, false
	}
	return headerSize + int(n), true
}

// appendTimeAt reads the append time of the frame at p, 0 if unreadable.
func (s *Spool) appendTimeAt(p Position) int64 {
	if s.segIndex(p.Segment) < 0 {
		// A deleted segment (the checkpoint can name the end of one): the
		// next frame is the first of the next segment.
		i := slices.IndexFunc(s.segs, func(sg segment) bool { return sg.id > p.Segment })
		if i < 0 {
			return 0
		}
		p = Position{Segment: s.segs[i].id}
	}
	f, err := os.Open(filepath.Join(s.cfg.Dir, segName(p.Segment)))
	if err != nil {
		return 0
	}
	defer f.Close()
	var h [headerSize]byte
	if _, err := f.ReadAt(h[:], p.Offset); err != nil {
		// Past the end of a sealed segment: the next segment's first record.
		if i := s.segIndex(p.Segment); i >= 0 && i+1 < len(s.segs) && s.segs[i+1].size > 0 {
			return s.appendTimeAt(Position{Segment: s.segs[i+1].id})
		}
		return 0
	}
	return int64(binary.LittleEndian.Uint64(h[8:]))
}

// ID returns the random identifier of this spool directory, stable across
// restarts. Dedup tokens include it so that batches of two collectors that
// share one ClickHouse never collide.
func (s *Spool) ID() string { return s.id }

// Checkpoint returns the committed position: everything before it is stored.
// After a restart it is the position last committed, as it was passed to
// Commit (unless a cut tail lost records before it), even when it names the
// end of a segment that Commit has since deleted: the shipper's dedup token
// of a pending batch is made from it.
func (s *Spool) Checkpoint() Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commit
}

// Pending returns the end of the batch recorded by MarkPending and not yet
// committed, if there is one: after a crash the shipper must cut its first
// batch exactly there so the replayed insert carries the same dedup token.
func (s *Spool) Pending() (Position, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		return Position{}, false
	}
	return *s.pending, true
}

// OpenEnd returns the start of the segment created by Open: records before
// it were written before this process started.
func (s *Spool) OpenEnd() Position { return s.openEnd }

// Notify returns a channel that receives a value when new durable records
// are available to the reader. It has one slot: one consumer.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Append stores one record. With SyncInterval 0 it returns nil only once
// the record is written and fsynced, sharing each write and fsync with the
// concurrent callers (group commit); with SyncInterval > 0, once the record
// is stored in the ring (ring.go), from which it is copied into the segment
// and fsynced every SyncInterval. It returns
// ErrFull when the spool is over MaxBytes, and ErrClosed after Close. rec
// is copied; the caller may reuse it.
func (s *Spool) Append(rec []byte) error {
	return s.AppendAll([][]byte{rec})
}

// AppendAll stores recs as Append does, with one answer for all of them:
// they fit under MaxBytes together or none is stored (ErrFull), and a nil
// return means every one is durable, after one wait. A caller that answers
// one request with several records thus never has some stored when it
// reports a failure that the client will retry. The records of one call go
// into one segment: when they do not fit in the current one, the next
// segment is started before any of them is buffered, so a failed rotation
// refuses them all. Together they may take at most SegmentBytes, and with
// SyncInterval at most the ring (8 MiB). (A write or fsync that the disk
// itself fails, or a fault of the ring's mapping, can still have stored
// some of them: the spool cannot know what reached the disk, and it
// closes.)
func (s *Spool) AppendAll(recs [][]byte) error {
	var frames int64
	for _, rec := range recs {
		if len(rec) == 0 || len(rec) > MaxRecordBytes {
			return fmt.Errorf("cannot append spool record of %d bytes: size must be 1..%d", len(rec), MaxRecordBytes)
		}
		frames += int64(headerSize + len(rec))
	}
	if len(recs) == 0 {
		return nil
	}
	if frames > s.cfg.SegmentBytes {
		return fmt.Errorf("cannot append %d spool records of %d bytes together: more than a segment (%d bytes)", len(recs), frames, s.cfg.SegmentBytes)
	}
	if s.cfg.SyncInterval > 0 && frames > ringSize(s.cfg.SegmentBytes) {
		return fmt.Errorf("cannot append %d spool records of %d bytes together: more than the staging ring (%d bytes)", len(recs), frames, ringSize(s.cfg.SegmentBytes))
	}
	now := time.Now().UnixNano()
	s.mu.Lock()
	// Rotating and making room in the ring release mu, so everything is
	// checked again after either.
	for {
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		if s.total+frames > s.cfg.MaxBytes {
			s.mu.Unlock()
			s.metrics.full.Inc()
			return ErrFull
		}
		if s.tail+frames > s.cfg.SegmentBytes {
			// The frames already stored are fsynced before the next segment
			// starts.
			if err := s.rotateLocked(frames); err != nil {
				s.mu.Unlock()
				return err
			}
			continue
		}
		if s.ring != nil && s.tail+frames-s.copied > int64(len(s.ring.data)) {
			// The ring's frames before copied may be overwritten: copy
			// (or wait for the copy that runs) to make room.
			if err := s.ringRoomLocked(); err != nil {
				s.mu.Unlock()
				return err
			}
			continue
		}
		break
	}
	if s.ring != nil {
		if err := s.store(recs, now); err != nil {
			s.failLocked(err)
			s.mu.Unlock()
			return fmt.Errorf("cannot append to spool: %w", err)
		}
	} else {
		for _, rec := range recs {
			start := len(s.buf)
			s.buf = slices.Grow(s.buf, headerSize+len(rec))[:start+headerSize+len(rec)]
			putFrame(s.buf[start:], rec, now)
		}
	}
	s.tail += frames
	s.total += frames
	s.segs[len(s.segs)-1].size = s.tail
	if s.oldest == 0 {
		s.oldest = now
	}
	s.appended += uint64(len(recs))
	if s.ring != nil {
		// The frames are in the ring, where a crash of the process cannot
		// reach them: they are acknowledged now, with no system call and no
		// wait. syncLoop copies them into the segment, and fdatasyncs it.
		s.unsynced = true
		s.ring.setTail(s.tail)
		s.mu.Unlock()
		return nil
	}
	// Wait for the write and fdatasync of the group these frames joined.
	w := waiters.Get().(*waiter)
	s.group.waiters = append(s.group.waiters, w)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default: // the committer is already due to run
	}
	err := <-w.c
	waiters.Put(w)
	if err != nil {
		return fmt.Errorf("cannot append to spool: %w", err)
	}
	return nil
}

// putFrame writes the frame of rec, appended at now, into f, which is
// exactly headerSize+len(rec) long. The checksum goes last: a crash in the
// middle of a frame stored in the mapping leaves one that fails it.
func putFrame(f, rec []byte, now int64) {
	binary.LittleEndian.PutUint32(f, uint32(len(rec)))
	binary.LittleEndian.PutUint64(f[8:], uint64(now))
	copy(f[headerSize:], rec)
	binary.LittleEndian.PutUint32(f[4:], crc32.Checksum(f[8:], castagnoli))
}

// store writes the frames of recs into the ring at the tail. It is called
// with mu held. A fault of the ring's mapping (its file was cut, or a
// memory file system without fallocate ran out of space) is returned as
// an error, not a crash of the process; a partial frame is cut at the next
// Open.
func (s *Spool) store(recs [][]byte, now int64) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, fault := r.(interface{ Addr() uintptr }); !fault {
				panic(r)
			}
			err = fmt.Errorf("cannot store spool frame for segment %s: memory fault in the ring", segName(s.segs[len(s.segs)-1].id))
		}
	}()
	off := s.tail
	for _, rec := range recs {
		n := headerSize + int64(len(rec))
		if f := s.ring.slot(off, n); f != nil {
			putFrame(f, rec, now)
		} else { // the frame wraps around the ring's end
			s.scratch = slices.Grow(s.scratch[:0], int(n))[:n]
			putFrame(s.scratch, rec, now)
			s.ring.put(off, s.scratch)
		}
		off += n
	}
	return nil
}

// copyInterval spaces the copies of the ring into the segment. The shipper
// reads the segment, so a record becomes readable up to this much later.
// Each copy and each read of it costs a system call with a fixed part:
// under load at c=64, copies every 10 ms took 0.42 µs of CPU per event in
// pwrite and pread, every 50 ms 0.12 µs. Tests set it to an hour, so that
// acknowledged records stay in the ring only.
var copyInterval = 50 * time.Millisecond

// ringRoomLocked frees the ring's room: it waits for the copy that runs,
// or copies the frames not yet copied itself. It is called with mu held and
// releases it meanwhile.
func (s *Spool) ringRoomLocked() error {
	if s.copyBusy {
		s.cond.Wait()
		return nil
	}
	if err := s.copyLocked(); err != nil {
		return fmt.Errorf("cannot append to spool: %w", err)
	}
	return nil
}

// copyLocked writes the ring's frames that the segment file lacks into it
// and makes them readable. It is called with mu held and releases it
// during the write; appends go on meanwhile, behind the copied frames.
func (s *Spool) copyLocked() error {
	for s.copyBusy {
		s.cond.Wait()
	}
	if s.failed != nil {
		return fmt.Errorf("cannot copy spool ring: %w", s.failed)
	}
	from, to, f := s.copied, s.tail, s.file
	if to == from {
		return nil
	}
	seg := s.segs[len(s.segs)-1].id
	s.copyBusy = true
	s.mu.Unlock()
	err := s.ring.writeTo(f, from, to)
	s.mu.Lock()
	s.copyBusy = false
	s.cond.Broadcast()
	if err != nil {
		s.failLocked(err)
		return err
	}
	s.copied = to
	s.ring.setCopied(to)
	if p := (Position{Segment: seg, Offset: to}); s.durable.Less(p) {
		s.durable = p
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

// failLocked records a failed store, write or fdatasync: the file state is unknown,
// so the spool refuses further appends rather than acknowledge records after
// a hole, readiness turns red, and the appends waiting in the current group
// fail. It is called with mu held.
func (s *Spool) failLocked(err error) {
	s.closed = true
	s.failed = err
	s.cfg.Logger.Error("spool write failed, spool closed", "err", err)
	s.group.done(err)
}

// commitLoop is the group committer (SyncInterval 0): woken by appends, it
// writes and fdatasyncs what they buffered, spacing commits by CommitDelay,
// and wakes them. It runs until Close.
func (s *Spool) commitLoop() {
	var timer *time.Timer
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		}
		s.gather()
		s.mu.Lock()
		wait := s.cfg.CommitDelay - time.Since(s.lastIO)
		s.mu.Unlock()
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-s.stop:
				timer.Stop()
				return // Close flushes what is buffered
			case <-timer.C:
			}
		}
		s.mu.Lock()
		for s.ioBusy {
			s.cond.Wait()
		}
		_ = s.syncLocked() // a failure is logged and fails the waiting groups
		s.mu.Unlock()
	}
}

// maxGatherYields bounds the yields of gather: a group is cut after at most
// this many rounds of the run queue.
const maxGatherYields = 8

// gather lets the appenders that are ready to run join the group before it
// is cut. The appender that kicks the committer makes it the next goroutine
// its P runs, ahead of the handlers already runnable, so under load a group
// held one or two appends and each paid a write (and fsync) of its own.
// Each yield puts the committer behind the goroutines waiting to run; gather
// stops at the first yield that brought no append, so a lone append is
// committed at once.
func (s *Spool) gather() {
	s.mu.Lock()
	n := s.appended
	s.mu.Unlock()
	for range maxGatherYields {
		runtime.Gosched()
		s.mu.Lock()
		m := s.appended
		s.mu.Unlock()
		if m == n {
			return
		}
		n = m
	}
}

// syncLocked makes every frame appended so far durable: with SyncInterval
// 0 it writes the buffered frames and fdatasyncs them, then wakes the group
// of appends that waited for them; with SyncInterval > 0 it fdatasyncs the
// frames stored in the mapping since the last call. It is called with mu
// held and !ioBusy; it releases mu during the I/O, so that other callers
// keep appending (the next group).
func (s *Spool) syncLocked() error {
	if s.failed != nil {
		return fmt.Errorf("cannot sync spool segment: %w", s.failed)
	}
	if !s.dirtyLocked() {
		return nil
	}
	end := s.tail
	if s.ring != nil {
		if err := s.copyLocked(); err != nil {
			return fmt.Errorf("cannot sync spool segment: %w", err)
		}
		for s.ioBusy { // copyLocked released mu
			s.cond.Wait()
		}
		end = s.copied
	}
	s.ioBusy = true
	buf, f, g := s.buf, s.file, s.group
	seg := s.segs[len(s.segs)-1].id
	s.group, s.spareG = s.spareG, nil
	s.unsynced = false
	s.lastIO = time.Now()
	s.buf, s.spare = s.spare[:0], nil
	if s.buf == nil && s.ring == nil {
		// Size the next buffer like this one, so appends under mu do not
		// copy a growing buffer.
		s.buf = make([]byte, 0, min(cap(buf), 16<<20))
	}
	s.mu.Unlock()
	start := time.Now()
	var err error
	if len(buf) > 0 {
		_, err = f.Write(buf)
	}
	if err == nil {
		err = datasync(f)
	}
	s.metrics.fsync.Observe(time.Since(start).Seconds())
	s.mu.Lock()
	s.ioBusy = false
	s.cond.Broadcast()
	if err != nil {
		// This group and the one that filled meanwhile both fail; no append
		// joins a group after closed is set.
		s.failLocked(err)
		g.done(err)
		s.spareG = g
		return fmt.Errorf("cannot sync spool segment: %w", err)
	}
	if cap(buf) > 0 && cap(buf) <= 16<<20 { // double buffering: the next flush fills this one
		s.spare = buf[:0]
	}
	if p := (Position{Segment: seg, Offset: end}); s.durable.Less(p) {
		s.durable = p
	}
	g.done(nil)
	s.spareG = g
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

// dirtyLocked reports whether frames were appended that are not yet
// written and fdatasynced in the segment file. It is called with mu held.
func (s *Spool) dirtyLocked() bool {
	return len(s.buf) > 0 || s.unsynced || (s.ring != nil && s.copied < s.tail)
}

// rotateLocked seals the current segment and starts the next one, unless
// another caller did so while this one waited. Every frame of the old
// segment is fdatasynced first: syncLocked releases mu, so frames can be
// added meanwhile, hence the loop.
func (s *Spool) rotateLocked(frame int64) error {
	for {
		for s.ioBusy || s.copyBusy {
			s.cond.Wait()
		}
		if s.closed {
			return ErrClosed
		}
		if s.tail+frame <= s.cfg.SegmentBytes {
			return nil
		}
		if !s.dirtyLocked() {
			break
		}
		if err := s.syncLocked(); err != nil {
			return err
		}
	}
	// Seal: cut the preallocated tail so that a sealed segment's size is
	// where its frames end, durably, before the next segment exists.
	if err := sealFile(s.file, s.tail); err != nil {
		return err
	}
	next := s.segs[len(s.segs)-1].id + 1
	f, err := s.newSegmentFile(next)
	if err != nil {
		return err
	}
	if err := s.closeSegment(); err != nil {
		s.cfg.Logger.Warn("cannot close sealed spool segment", "err", err)
	}
	s.file = f
	s.segs = append(s.segs, segment{id: next})
	s.tail, s.copied = 0, 0
	if s.ring != nil {
		s.ring.reset(next) // empty: every frame of the sealed segment is in its file
	}
	return nil
}

// Sync fdatasyncs every record appended so far.
func (s *Spool) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.ioBusy {
		s.cond.Wait()
	}
	if s.file == nil {
		return nil
	}
	return s.syncLocked()
}

// syncLoop copies the ring into the segment every copyInterval and
// fdatasyncs the segment every SyncInterval (SyncInterval mode only). It
// runs until Close.
func (s *Spool) syncLoop() {
	sync := time.NewTicker(s.cfg.SyncInterval)
	defer sync.Stop()
	cp := time.NewTicker(s.copyEvery)
	defer cp.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-cp.C:
			s.mu.Lock()
			err := s.copyLocked()
			s.mu.Unlock()
			if err != nil {
				s.cfg.Logger.Error("spool copy failed", "err", err)
			}
		case <-sync.C:
			if err := s.Sync(); err != nil {
				s.cfg.Logger.Error("spool sync failed", "err", err)
			}
		}
	}
}

// limit returns where readable (durable) data ends in segment id, whether
// the segment is sealed (a later segment exists), the next segment id, and
// ok false when no segment at or after id exists.
func (s *Spool) limit(id uint64) segLimit {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := -1
	for j, sg := range s.segs {
		if sg.id >= id {
			i = j
			break
		}
	}
	switch {
	case i < 0:
		return segLimit{seg: id}
	case s.segs[i].id != id: // id was deleted or never existed: go to the next
		return segLimit{seg: id, sealed: true, next: s.segs[i].id, ok: true}
	case i < len(s.segs)-1:
		return segLimit{seg: id, end: s.segs[i].size, sealed: true, next: s.segs[i+1].id, ok: true}
	case s.durable.Segment == id:
		return segLimit{seg: id, end: s.durable.Offset, ok: true}
	}
	return segLimit{seg: id, ok: true}
}

// MarkPending durably records end as the end of the batch about to be
// inserted, so a restart cuts the same batch (see Pending). In SyncInterval
// mode it fsyncs the records first: a checkpoint never points past what a
// crash of the machine leaves on disk, and a shipped record is never lost
// from the spool.
func (s *Spool) MarkPending(end Position) error {
	s.ckMu.Lock()
	defer s.ckMu.Unlock()
	if s.cfg.SyncInterval > 0 {
		if err := s.Sync(); err != nil {
			return err
		}
	}
	p := end
	if err := s.writeCheckpoint(s.commit, &p); err != nil {
		return err
	}
	s.mu.Lock()
	s.pending = &p
	s.mu.Unlock()
	return nil
}

// Commit durably records that everything before p is stored, clears the
// pending batch and deletes segments that lie wholly before p.
func (s *Spool) Commit(p Position) error {
	s.ckMu.Lock()
	defer s.ckMu.Unlock()
	if p.Less(s.commit) {
		return fmt.Errorf("cannot commit spool position %s: before checkpoint %s", p, s.commit)
	}
	if err := s.writeCheckpoint(p, nil); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commit, s.pending = p, nil
	last := len(s.segs) - 1
	keep := s.segs[:0]
	for i, sg := range s.segs {
		consumed := sg.id < p.Segment || (sg.id == p.Segment && i < last && p.Offset >= sg.size)
		if !consumed || i == last {
			keep = append(keep, sg)
			continue
		}
		if err := os.Remove(filepath.Join(s.cfg.Dir, segName(sg.id))); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.cfg.Logger.Warn("cannot delete consumed spool segment", "segment", sg.id, "err", err)
			keep = append(keep, sg)
			continue
		}
		s.total -= sg.size
	}
	s.segs = keep
	// Oldest uncommitted record: the one at p, if any was appended.
	end := Position{Segment: s.segs[len(s.segs)-1].id, Offset: s.tail}
	switch {
	case !p.Less(end):
		s.oldest = 0
	case !p.Less(s.durable):
		// Appended but not yet synced: keep the current estimate.
	default:
		s.oldest = s.appendTimeAt(p)
	}
	return nil
}

// checkpoint file: "v1 <id> <seg> <off> [<pseg> <poff>]\n".
func (s *Spool) writeCheckpoint(c Position, pending *Position) error {
	line := fmt.Sprintf("v1 %s %d %d", s.id, c.Segment, c.Offset)
	if pending != nil {
		line += fmt.Sprintf(" %d %d", pending.Segment, pending.Offset)
	}
	tmp := filepath.Join(s.cfg.Dir, "checkpoint.tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cannot write spool checkpoint: %w", err)
	}
	_, err = io.WriteString(f, line+"\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.cfg.Dir, "checkpoint"))
	}
	if err != nil {
		return fmt.Errorf("cannot write spool checkpoint: %w", err)
	}
	return syncDir(s.cfg.Dir)
}

func (s *Spool) loadCheckpoint() error {
	b, err := os.ReadFile(filepath.Join(s.cfg.Dir, "checkpoint"))
	if errors.Is(err, os.ErrNotExist) {
		var raw [8]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return fmt.Errorf("cannot make spool id: %w", err)
		}
		s.id = hex.EncodeToString(raw[:])
		return s.writeCheckpoint(Position{}, nil)
	}
	if err != nil {
		return fmt.Errorf("cannot read spool checkpoint: %w", err)
	}
	f := strings.Fields(string(b))
	bad := fmt.Errorf("cannot read spool checkpoint: malformed (remove %s to replay the whole spool)", filepath.Join(s.cfg.Dir, "checkpoint"))
	if (len(f) != 4 && len(f) != 6) || f[0] != "v1" || len(f[1]) != 16 {
		return bad
	}
	s.id = f[1]
	nums := make([]int64, 0, 4)
	for _, x := range f[2:] {
		v, err := strconv.ParseInt(x, 10, 64)
		if err != nil || v < 0 {
			return bad
		}
		nums = append(nums, v)
	}
	s.commit = Position{Segment: uint64(nums[0]), Offset: nums[1]}
	if len(nums) == 4 {
		s.pending = &Position{Segment: uint64(nums[2]), Offset: nums[3]}
	}
	return nil
}

// sealFile cuts f to size and syncs it.
func sealFile(f *os.File, size int64) error {
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("cannot seal spool segment: %w", err)
	}
	if err := datasync(f); err != nil {
		return fmt.Errorf("cannot seal spool segment: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot open spool dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cannot sync spool dir: %w", err)
	}
	return nil
}

// Ready reports whether Append can currently make records durable: the
// spool is open and below MaxBytes. /readyz uses it.
func (s *Spool) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && s.total+headerSize+MaxRecordBytes <= s.cfg.MaxBytes
}

// Close syncs what was appended and closes the segment file. Appends after
// Close fail with ErrClosed; a Reader may keep reading what is durable.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.file == nil {
		s.mu.Unlock()
		return nil
	}
	wasClosed := s.closed
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	s.loops.Wait()
	<-s.prepDone
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.ioBusy || s.copyBusy { // an append may be copying the ring to make room
		s.cond.Wait()
	}
	var err error
	if !wasClosed {
		err = s.syncLocked()
	}
	if err == nil && s.failed == nil {
		err = sealFile(s.file, s.tail)
	}
	if cerr := s.closeSegment(); err == nil {
		err = cerr
	}
	if s.ring != nil {
		// Kept when the segment may lack some of its frames: the next Open
		// moves them.
		if cerr := s.ring.close(err == nil && s.failed == nil); err == nil {
			err = cerr
		}
	}
	s.file, s.ring = nil, nil
	s.metrics.unregister()
	return err
}
