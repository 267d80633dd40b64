package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kyomi/collector/sink/row"
	"github.com/kyomi/collector/sink/spool"
)

// Inserter is what the Shipper needs from a store: Store satisfies it.
// Insert must not keep rows after it returns; the Shipper reuses them.
type Inserter interface {
	Insert(ctx context.Context, rows []row.Event, dedupToken string) error
}

// Drain ships every event left in sp into ins, a batch left pending by an
// earlier process included (stored once, as at a restart), and returns how
// many records it found. For the operator commands that must see a data
// directory's spooled events in the store (erase-workspace) while no
// collector serves from it.
func Drain(ctx context.Context, sp *spool.Spool, ins Inserter, cfg ShipperConfig) (int, error) {
	n := 0
	for rd := sp.NewReader(sp.Checkpoint()); ; n++ {
		if _, err := rd.Next(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return 0, fmt.Errorf("cannot read the spool: %w", err)
		}
	}
	if n == 0 {
		return 0, nil
	}
	shipper, err := NewShipper(sp, ins, cfg)
	if err != nil {
		return 0, err
	}
	if err := shipper.Close(ctx); err != nil {
		return 0, fmt.Errorf("cannot ship the spooled events: %w", err)
	}
	return n, nil
}

// ReplayInserter is an Inserter whose deduplication may not survive a crash of the process that
// inserted (the managed engine dies with the collector) or of the server. The Shipper stores a
// batch left pending by an earlier process with ReplayInsert, which must store each of its rows
// exactly once whether or not that process stored some or all of them.
type ReplayInserter interface {
	Inserter
	ReplayInsert(ctx context.Context, rows []row.Event, token string) error
}

// ShipperConfig configures a Shipper. A zero field takes its value from
// DefaultShipperConfig; NewShipper refuses a ShipperConfig that Validate
// refuses.
type ShipperConfig struct {
	// MaxRows flushes a batch when it holds this many rows; each flush is
	// one INSERT.
	MaxRows int
	// MaxAge flushes a batch when its oldest record was appended this long
	// ago.
	MaxAge time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries of a failed
	// insert; the wait doubles from MinBackoff up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives flush errors (one line per failed attempt while the
	// backoff grows, so at most one per MaxBackoff in a long outage); nil
	// discards them.
	Logger *slog.Logger
	// Registerer receives the collector_sink_* metrics; nil registers
	// nothing.
	Registerer prometheus.Registerer
}

// DefaultShipperConfig is the batching the collector runs with (-batch-rows,
// -batch-age).
var DefaultShipperConfig = ShipperConfig{
	// ClickHouse prefers few large inserts: 10k rows is the insert size it
	// recommends, each INSERT making one part to merge.
	MaxRows: 10000,
	// 1s: at most about one INSERT per second per node, and an event is
	// queryable about a second after its 202.
	MaxAge: time.Second,
	// 100ms: a dropped connection or a restarting engine often answers
	// again within a fraction of a second.
	MinBackoff: 100 * time.Millisecond,
	// 10s: a store back from an outage is used within 10 s, and a long
	// outage logs one failed attempt per 10 s.
	MaxBackoff: 10 * time.Second,
}

// Validate reports every invalid field of c.
func (c ShipperConfig) Validate() error {
	var errs []error
	if c.MaxRows < 0 {
		errs = append(errs, fmt.Errorf("sink.ShipperConfig.MaxRows must be >= 0 (0 takes the default), got %d", c.MaxRows))
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"MaxAge", c.MaxAge}, {"MinBackoff", c.MinBackoff}, {"MaxBackoff", c.MaxBackoff}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("sink.ShipperConfig.%s must be >= 0 (0 takes the default), got %s", f.name, f.v))
		}
	}
	if d := c.withDefaults(); d.MaxBackoff < d.MinBackoff {
		errs = append(errs, fmt.Errorf("sink.ShipperConfig.MaxBackoff %s must not be below MinBackoff %s", d.MaxBackoff, d.MinBackoff))
	}
	return errors.Join(errs...)
}

// withDefaults fills every zero field from DefaultShipperConfig.
func (c ShipperConfig) withDefaults() ShipperConfig {
	d := DefaultShipperConfig
	if c.MaxRows == 0 {
		c.MaxRows = d.MaxRows
	}
	if c.MaxAge == 0 {
		c.MaxAge = d.MaxAge
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = d.MinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

type shipperMetrics struct {
	batches, rows, errs, replayed, decodeErrs prometheus.Counter
	duration, batchRows, visible              prometheus.Histogram
	waiting                                   prometheus.Gauge
}

func newShipperMetrics() *shipperMetrics {
	return &shipperMetrics{
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_sink_batches_total", Help: "Batches inserted into the store."}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_sink_rows_flushed_total", Help: "Rows inserted into the store."}),
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_sink_flush_errors_total", Help: "Failed insert attempts (each is retried)."}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_sink_replayed_rows_total", Help: "Rows read from the spool that were written before this process started."}),
		decodeErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_sink_decode_errors_total", Help: "Spool records that did not decode as events and were skipped."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "collector_sink_flush_duration_seconds", Help: "Duration of one successful insert.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "collector_sink_batch_rows", Help: "Rows per inserted batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9)}),
		visible: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "collector_sink_event_visible_seconds",
			Help:    "Per stored event, time from its spool append (before its 202, and before the fsync that precedes it with -spool-sync-interval 0) to the return of the INSERT that made it queryable: an upper bound of the 202-to-queryable delay.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5, 7.5, 10, 30, 60}}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "collector_sink_waiting_rows",
			Help: "Rows read into the open batch that wait for it to fill (max rows), to age (max age) or for shutdown; set when the shipper waits for more, 0 once the batch is due."}),
	}
}

func (m *shipperMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.batches, m.rows, m.errs, m.replayed, m.decodeErrs, m.duration, m.batchRows, m.visible, m.waiting}
}

// Shipper moves records from a spool into a store in batches: it flushes
// when a batch reaches MaxRows, when its oldest record is MaxAge old, and at
// Close. A batch is [start, end) in the spool; before inserting it the
// Shipper records end durably (spool.MarkPending), inserts with the token
// "<spool id>:<start>-<end>", and then commits end. After a crash between
// insert and commit, the restarted Shipper cuts the same first batch, so
// the retried insert carries the same token and ClickHouse stores it once.
// A failed insert is retried with capped exponential backoff for as long
// as it takes; the spool keeps accepting meanwhile.
type Shipper struct {
	sp  *spool.Spool
	ins Inserter
	cfg ShipperConfig
	m   *shipperMetrics

	closing chan struct{}
	done    chan struct{}
	ctx     context.Context // inserts; cancelled when Close gives up
	cancel  context.CancelFunc
	err     error // set by run before done is closed
}

// NewShipper starts a Shipper reading sp from its checkpoint. It owns the
// spool's reader and checkpoint; Close stops it.
func NewShipper(sp *spool.Spool, ins Inserter, cfg ShipperConfig) (*Shipper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cannot start shipper: %w", err)
	}
	cfg = cfg.withDefaults()
	s := &Shipper{sp: sp, ins: ins, cfg: cfg, m: newShipperMetrics(),
		closing: make(chan struct{}), done: make(chan struct{})}
	if r := cfg.Registerer; r != nil {
		for i, c := range s.m.collectors() {
			if err := r.Register(c); err != nil {
				for _, d := range s.m.collectors()[:i] {
					r.Unregister(d)
				}
				return nil, fmt.Errorf("cannot register shipper metrics: %w", err)
			}
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.run()
	return s, nil
}

// Close flushes every durable record of the spool and stops the Shipper.
// Stop appending first. If ctx ends before the drain completes (say the
// store is down), Close stops anyway and returns an error; the records stay
// in the spool for the next start. The metrics stay registered, so their
// final values can be read.
func (s *Shipper) Close(ctx context.Context) error {
	// Records acknowledged in the last copy interval of the spool's ring are in the ring only,
	// where the reader cannot see them yet: copy them into the segment first (Sync does), so the
	// drain ships every acknowledged event.
	if err := s.sp.Sync(); err != nil {
		s.cfg.Logger.Warn("cannot sync the spool before the drain; its last records ship at the next start", "err", err)
	}
	select {
	case <-s.closing:
	default:
		close(s.closing)
	}
	var err error
	select {
	case <-s.done:
		err = s.err
	case <-ctx.Done():
		s.cancel()
		<-s.done
		err = fmt.Errorf("cannot drain spool before shutdown: %w", ctx.Err())
	}
	s.cancel()
	return err
}

func (s *Shipper) closingNow() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// sleep waits d; false when the Shipper must stop at once.
func (s *Shipper) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func (s *Shipper) run() {
	defer close(s.done)
	start := s.sp.Checkpoint()
	r := s.sp.NewReader(start)
	defer r.Close()
	forced, hasForced := s.sp.Pending()
	openEnd := s.sp.OpenEnd()
	rows := make([]row.Event, 0, min(s.cfg.MaxRows, 1024))
	var dec row.Decoder
	appended := make([]int64, 0, cap(rows)) // append time (Unix ns) of each row, for the freshness metric
	end := start
	var first time.Time // append time of the batch's oldest record
	finalRead := false  // the spool was read to its end after Close began
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		eof := false
		// A batch marked pending by an earlier run is cut exactly where it
		// was, whatever MaxRows says now, or its token would not match.
		for (hasForced && end.Less(forced)) || (!hasForced && len(rows) < s.cfg.MaxRows) {
			rec, err := r.Next()
			if errors.Is(err, io.EOF) {
				eof = true
				break
			}
			if err != nil {
				s.cfg.Logger.Error("cannot read spool", "err", err)
				if !s.sleep(s.cfg.MaxBackoff) {
					s.err = err
					return
				}
				continue
			}
			if len(rows) == 0 {
				first = rec.Appended
			}
			end = rec.Next
			if rec.Pos.Less(openEnd) {
				s.m.replayed.Inc()
			}
			if len(rows) < cap(rows) {
				rows = rows[:len(rows)+1]
			} else {
				rows = append(rows, row.Event{})
			}
			if err := dec.Decode(rec.Data, &rows[len(rows)-1]); err != nil {
				rows = rows[:len(rows)-1]
				s.m.decodeErrs.Inc()
				s.cfg.Logger.Error("spool record is not an event, skipped", "position", rec.Pos.String(), "err", err)
			} else {
				appended = append(appended, rec.Appended.UnixNano())
			}
		}
		closing := s.closingNow()
		atForced := hasForced && end == forced
		due := atForced || (!hasForced && len(rows) >= s.cfg.MaxRows) ||
			(len(rows) > 0 && (closing || time.Since(first) >= s.cfg.MaxAge))
		if hasForced && !atForced && !eof {
			due = false
		}
		if due || (len(rows) == 0 && start.Less(end)) {
			s.m.waiting.Set(0)
			if err := s.flush(rows, start, end, atForced); err != nil {
				s.err = err
				return
			}
			now := time.Now().UnixNano()
			for _, a := range appended {
				s.m.visible.Observe(float64(now-a) / 1e9)
			}
			hasForced = false
			start = end
			rows = rows[:0]
			appended = appended[:0]
			continue
		}
		if closing && eof {
			// This EOF may have been read before Close made the ring's last records readable:
			// read once more after closing was seen.
			if !finalRead {
				finalRead = true
				continue
			}
			return
		}
		if !eof {
			continue
		}
		s.m.waiting.Set(float64(len(rows)))
		wait, notify := time.Hour, s.sp.Notify()
		if len(rows) > 0 {
			// A batch is open: read what arrives every batchPoll, in bulk,
			// not at each append or group commit (thousands a second under load).
			wait, notify = min(max(0, s.cfg.MaxAge-time.Since(first)), batchPoll), nil
		}
		timer.Reset(wait)
		select {
		case <-notify:
		case <-timer.C:
		case <-s.closing:
		case <-s.ctx.Done():
			s.err = s.ctx.Err()
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// batchPoll is how often the Shipper reads the spool while a batch is open
// and not yet due. A batch that reaches MaxRows is therefore cut up to this
// late; one cut by MaxAge is not.
const batchPoll = 50 * time.Millisecond

// dedupToken names the batch [start, end) of the spool with id.
func dedupToken(id string, start, end spool.Position) string {
	return id + ":" + start.String() + "-" + end.String()
}

// flush inserts rows, the batch [start, end), until it succeeds, then
// commits end. replay is true when end was already marked pending by an
// earlier run. It fails only when the Shipper must stop.
func (s *Shipper) flush(rows []row.Event, start, end spool.Position, replay bool) error {
	backoff := s.cfg.MinBackoff
	if !replay && len(rows) > 0 {
		for {
			err := s.sp.MarkPending(end)
			if err == nil {
				break
			}
			s.cfg.Logger.Error("cannot record pending batch", "err", err)
			if !s.sleep(backoff) {
				return err
			}
			backoff = min(2*backoff, s.cfg.MaxBackoff)
		}
	}
	if len(rows) > 0 {
		tok := dedupToken(s.sp.ID(), start, end)
		backoff = s.cfg.MinBackoff
		for {
			t0 := time.Now()
			var err error
			if ri, ok := s.ins.(ReplayInserter); ok && replay {
				err = ri.ReplayInsert(s.ctx, rows, tok)
			} else {
				err = s.ins.Insert(s.ctx, rows, tok)
			}
			if err == nil {
				s.m.duration.Observe(time.Since(t0).Seconds())
				break
			}
			s.m.errs.Inc()
			s.cfg.Logger.Error("cannot flush batch, will retry", "rows", len(rows), "retry_in", backoff, "err", err)
			if !s.sleep(backoff) {
				return fmt.Errorf("cannot flush %d rows: %w", len(rows), err)
			}
			backoff = min(2*backoff, s.cfg.MaxBackoff)
		}
		s.m.batches.Inc()
		s.m.rows.Add(float64(len(rows)))
		s.m.batchRows.Observe(float64(len(rows)))
	}
	backoff = s.cfg.MinBackoff
	for {
		err := s.sp.Commit(end)
		if err == nil {
			return nil
		}
		s.cfg.Logger.Error("cannot commit spool checkpoint", "err", err)
		if !s.sleep(backoff) {
			return err
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}
