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
//
// The code, by mechanism: spool.go holds Config, Open, AppendAll, the sync
// of the live segment and Close; segment.go the segment files, their
// preparation, rotation and sealing; recovery.go what Open repairs (a torn
// segment tail, the ring's frames); checkpoint.go the checkpoint; reader.go
// the Reader. The two ways to acknowledge are the two implementations of
// acknowledger (acknowledger.go): groupCommit (group.go) and ringStager
// (stager.go, on the ring file of ring.go).
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"strconv"
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

// Config configures a Spool. Dir is required. A zero MaxBytes or
// SegmentBytes takes its value from DefaultConfig, a zero RingDir its
// default below; a zero SyncInterval is not a default but the group-commit
// mode. Open refuses a Config that Validate refuses.
type Config struct {
	// Dir holds the segment files and the checkpoint; created if missing.
	Dir string
	// MaxBytes bounds the segment bytes on disk; past it Append returns
	// ErrFull. Must be at least 2*SegmentBytes. The disk holds up to two
	// segments more than the records: the unwritten (zero) tail of the
	// live segment and the prepared next segment.
	MaxBytes int64
	// SegmentBytes is the size at which the writer starts a new segment.
	// Consumed space is freed a whole segment at a time. Zero takes
	// DefaultConfig's, or MaxBytes/2 when that is smaller (MaxBytes must
	// then be >= 8 MiB).
	SegmentBytes int64
	// SyncInterval 0 makes Append return only after its record is
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
	// again. Empty: /dev/shm on Linux when it is a tmpfs, else Dir; Dir
	// also when /dev/shm cannot take the ring (full, read-only; logged), but
	// never after a refusal.
	RingDir string
	// Logger receives recovery and error messages; nil discards them.
	Logger *slog.Logger
	// Registerer receives the spool metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// DefaultConfig is the spool the collector runs with (-spool-max-bytes,
// -spool-sync-interval).
var DefaultConfig = Config{
	// 1 GiB: a spooled event takes a few hundred bytes at most, so several
	// million events, hours of a sink outage at a busy site. Past it new
	// events get 503 rather than being dropped silently.
	MaxBytes: 1 << 30,
	// 64 MiB: space comes back 64 MiB at a time, and 1 GiB is 16 files.
	SegmentBytes: 64 << 20,
	// 1s, the collector's mode: a 202 follows the event's store into the
	// ring in shared memory, which a crash of the process cannot lose
	// (DESIGN.md §5), at no wait; a crash of the machine loses at most the
	// last second. Group commit (0, the zero value) adds an fsync before
	// every 202 for machine-crash safety, at about a third of the
	// throughput under load (BENCHMARKS.md, stop 18).
	SyncInterval: time.Second,
}

// Validate reports every invalid field of c.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("spool.Config.Dir is required"))
	}
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("spool.Config.MaxBytes must be >= 0 (0 takes the default), got %d", c.MaxBytes))
	}
	if c.SegmentBytes < 0 {
		errs = append(errs, fmt.Errorf("spool.Config.SegmentBytes must be >= 0 (0 takes the default), got %d", c.SegmentBytes))
	}
	if c.SyncInterval < 0 {
		errs = append(errs, fmt.Errorf("spool.Config.SyncInterval must be >= 0, got %s", c.SyncInterval))
	}
	d := c.withDefaults()
	if c.RingDir != "" && c.SyncInterval > 0 {
		if st, err := os.Stat(c.RingDir); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("spool.Config.RingDir %s must be an existing directory", c.RingDir))
		}
	}
	if d.SegmentBytes < 4*MaxRecordBytes {
		errs = append(errs, fmt.Errorf("spool.Config.SegmentBytes must be >= %d, got %d", 4*MaxRecordBytes, d.SegmentBytes))
	}
	if d.MaxBytes < 2*d.SegmentBytes {
		errs = append(errs, fmt.Errorf("spool.Config.MaxBytes must be >= 2 * SegmentBytes (%d), got %d", d.SegmentBytes, d.MaxBytes))
	}
	return errors.Join(errs...)
}

// withDefaults fills every zero field that has a default: MaxBytes and
// SegmentBytes from DefaultConfig, RingDir from the platform. SyncInterval
// is taken as it is.
func (c Config) withDefaults() Config {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultConfig.MaxBytes
	}
	if c.SegmentBytes == 0 {
		// Half of a smaller MaxBytes (never below the minimum).
		c.SegmentBytes = max(min(DefaultConfig.SegmentBytes, c.MaxBytes/2), 4*MaxRecordBytes)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RingDir == "" {
		c.RingDir = defaultRingDir(c.Dir)
	}
	return c
}

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

	mu     sync.Mutex
	cond   *sync.Cond   // signalled when io finishes (rotation, Sync and Close wait on it)
	ack    acknowledger // where frames wait until they are in the segment file; set by load
	closed bool
	segs   []segment // ascending; the last is the one being written
	file   *os.File  // the last segment
	// ringDefaulted: Config.RingDir was empty, so the ring may fall back to Dir when the default
	// directory cannot take it, and a ring is looked for in both.
	ringDefaulted bool
	tail          int64    // offset in the last segment after its last frame
	durable       Position // end of the data in the segment files, readable by the shipper
	appended      uint64   // records appended since open (collector_spool_records_appended_total)
	ioBusy        bool     // one goroutine writes and syncs at a time
	// stageBytes is the most one AppendAll may take while its frames wait for the segment file:
	// the ring's size with SyncInterval, else SegmentBytes. Set by load.
	stageBytes int64
	failed     error     // a write or fsync failed: the spool refuses appends
	total      int64     // bytes of all segments, including frames not yet written
	oldest     int64     // append time (ns) of the oldest uncommitted record, 0 if none
	openEnd    Position  // start of the segment made by Open
	commit     Position  // written under ckMu and mu; read under either
	pending    *Position // as commit
	// ckMu serializes MarkPending and Commit. Their checkpoint file writes
	// (two fsyncs: about 1 ms each under load, up to 4.5 ms) run outside
	// mu: with mu held, every append and the group commit in flight stalled
	// behind them, twice per shipped batch.
	ckMu     sync.Mutex
	notify   chan struct{}
	prepared bool          // the prepared file is complete and unused
	prepKick chan struct{} // asks prepareLoop for a new prepared file

	stop     chan struct{}
	loops    sync.WaitGroup // the acknowledger's loop
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
	s := &Spool{cfg: cfg, notify: make(chan struct{}, 1),
		prepKick: make(chan struct{}, 1), stop: make(chan struct{}),
		prepDone: make(chan struct{}), ringDefaulted: ringDefaulted}
	s.cond = sync.NewCond(&s.mu)
	s.metrics = newMetrics(s)
	if err := s.load(); err != nil {
		return nil, err
	}
	if err := s.metrics.register(cfg.Registerer); err != nil {
		_ = s.closeSegment()
		_ = s.ack.close(true) // a ring is empty: Open moved what it held into the segment
		return nil, fmt.Errorf("cannot register spool metrics: %w", err)
	}
	s.loops.Go(s.ack.loop)
	go s.prepareLoop() // newSegmentFile asked it for the next segment
	return s, nil
}

// ID returns the random identifier of this spool directory, stable across
// restarts. Dedup tokens include it so that batches of two collectors that
// share one ClickHouse never collide.
func (s *Spool) ID() string { return s.id }

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
	if frames > s.stageBytes {
		return fmt.Errorf("cannot append %d spool records of %d bytes together: more than the staging ring (%d bytes)", len(recs), frames, s.stageBytes)
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
		if retry, err := s.ack.room(frames); err != nil {
			s.mu.Unlock()
			return err
		} else if retry {
			continue
		}
		break
	}
	off := s.tail
	for _, rec := range recs {
		if err := s.ack.place(off, rec, now); err != nil {
			s.mu.Unlock()
			return fmt.Errorf("cannot append to spool: %w", err)
		}
		off += int64(headerSize + len(rec))
	}
	s.tail += frames
	s.total += frames
	s.segs[len(s.segs)-1].size = s.tail
	if s.oldest == 0 {
		s.oldest = now
	}
	s.appended += uint64(len(recs))
	if err := s.ack.wait(); err != nil { // releases mu
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

// failLocked records a failed store, write or fdatasync: the file state is unknown,
// so the spool refuses further appends rather than acknowledge records after
// a hole, and readiness turns red. It is called with mu held.
func (s *Spool) failLocked(err error) {
	s.closed = true
	s.failed = err
	s.cfg.Logger.Error("spool write failed, spool closed", "err", err)
}

// syncLocked makes every frame appended so far durable: the acknowledger
// hands what the segment file lacks to writeSyncLocked (group commit: the
// buffered frames; ring: none, after copying the ring into the segment) and
// learns the outcome (group commit: it wakes the group of appends that
// waited). It reports whether there was anything to make durable. It is
// called with mu held and !ioBusy; it releases mu during the I/O, so that
// other callers keep appending (the next group).
func (s *Spool) syncLocked() (bool, error) {
	if s.failed != nil {
		return false, fmt.Errorf("cannot sync spool segment: %w", s.failed)
	}
	synced, err := s.ack.sync()
	if err != nil {
		return synced, fmt.Errorf("cannot sync spool segment: %w", err)
	}
	return synced, nil
}

// writeSyncLocked writes buf at the end of the segment file and fdatasyncs it,
// after which its frames up to segment offset end are durable and readable. It
// is called with mu held, by an acknowledger's sync; it waits for the I/O in
// flight and releases mu during its own. A failure fails the spool.
func (s *Spool) writeSyncLocked(buf []byte, end int64) error {
	for s.ioBusy {
		s.cond.Wait()
	}
	s.ioBusy = true
	f := s.file
	seg := s.segs[len(s.segs)-1].id
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
		s.failLocked(err)
		return err
	}
	if p := (Position{Segment: seg, Offset: end}); s.durable.Less(p) {
		s.durable = p
	}
	select {
	case s.notify <- struct{}{}:
	default:
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
	_, err := s.syncLocked()
	return err
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
	for s.ioBusy || s.ack.busy() { // an append may be copying the ring to make room
		s.cond.Wait()
	}
	var err error
	if !wasClosed {
		_, err = s.syncLocked()
	}
	if err == nil && s.failed == nil {
		err = sealFile(s.file, s.tail)
	}
	if cerr := s.closeSegment(); err == nil {
		err = cerr
	}
	// A ring is kept when the segment may lack some of its frames: the next
	// Open moves them.
	if cerr := s.ack.close(err == nil && s.failed == nil); err == nil {
		err = cerr
	}
	s.file = nil
	s.metrics.unregister()
	return err
}
