package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kyomi/collector/sink/chdb"
	"github.com/kyomi/collector/sink/row"
)

// Embedded is the Store on the in-process ClickHouse engine (chDB). One
// process can hold one Embedded at a time; it is safe for concurrent use.
type Embedded struct {
	conn *chdb.Conn
	dir  string    // batch files of inserts in flight
	bufs sync.Pool // *insertBuf, reused across flushes
}

// insertBuf is what one flush works in: the batch's sorting-key order and its Native block, then
// the INSERT statement.
type insertBuf struct {
	data  []byte
	order rowOrder
}

// OpenEmbedded opens the embedded engine on dataDir (created if missing).
// It fails with one sentence telling how to get libchdb.so when the library
// is missing, and with chdb.ErrAlreadyOpen while another Embedded of this
// process is open. The schema is not touched: call Migrate.
func OpenEmbedded(dataDir string) (*Embedded, error) {
	c, err := chdb.Open(dataDir)
	if err != nil {
		return nil, err
	}
	// Batch files left by a crash are stale: their rows are still in the spool.
	dir := filepath.Join(dataDir, "kyomi_inserts")
	if err := os.RemoveAll(dir); err != nil {
		c.Close()
		return nil, fmt.Errorf("cannot clear the insert directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.Close()
		return nil, fmt.Errorf("cannot create the insert directory: %w", err)
	}
	return &Embedded{conn: c, dir: dir}, nil
}

// SetMaxResultBytes makes Select and Raw fail with ErrResultTooLarge when
// the engine's answer is larger than n bytes, before any of it is copied
// or decoded; n <= 0 removes the bound. The query path sets it (its result
// limit) on the store it shares with ingest.
func (s *Embedded) SetMaxResultBytes(n int64) { s.conn.SetMaxResultBytes(n) }

// insertStatement is the INSERT that reads one batch file.
//
// The rows go through a file as one Native (columnar) block, not inline in the statement: the
// engine reads inline INSERT data out of the query text, and binary data there is cut short when
// its bytes happen to look like the end of the statement (a visitor id holding 0x0a 0x0a failed
// with CANNOT_READ_ALL_DATA; see TestInsertBinaryLookingValues). Native from a file is also the
// cheapest format for the engine: about 5 times the rows per second of the inline JSONEachRow
// this store used before, and twice RowBinary's (BenchmarkEmbeddedInsert10k, BENCHMARKS.md).
func insertStatement(dst []byte, table, path, dedupToken string) []byte {
	dst = append(dst, "INSERT INTO "...)
	dst = append(dst, table...)
	dst = append(dst, " ("...)
	dst = append(dst, columnList...)
	dst = append(dst, ") FROM INFILE "...)
	dst = append(dst, QuoteString(path)...)
	if dedupToken != "" {
		dst = append(dst, " SETTINGS insert_deduplication_token = '"...)
		dst = append(dst, dedupToken...)
		dst = append(dst, '\'')
	} else {
		// Without a token ClickHouse would still drop a block identical to
		// a recent one; two equal batches are two batches.
		// (insert_deduplicate = 0 no longer does it in ClickHouse 26).
		dst = append(dst, " SETTINGS deduplicate_insert = 'disable'"...)
	}
	// One insert thread: a flush is a few MB, too small for parallel work to pay on a busy
	// machine, where extra threads only add CPU. Flushes are serial, so one thread loses nothing.
	dst = append(dst, ", max_insert_threads = 1, max_threads = 1"...)
	return append(dst, " FORMAT Native"...)
}

// Insert stores rows with one INSERT of a Native batch file.
func (s *Embedded) Insert(ctx context.Context, rows []row.Event, dedupToken string) error {
	return s.insert(ctx, rows, dedupToken, dedupToken)
}

// ReplayInsert stores the batch rows named token exactly once, whether or not an earlier
// process stored it before it was killed (see replayInsert).
func (s *Embedded) ReplayInsert(ctx context.Context, rows []row.Event, token string) error {
	return replayInsert(ctx, s, s.insert, rows, token)
}

// yearMonth is toYYYYMM(ts), the partition of a row.
func yearMonth(t time.Time) uint64 {
	t = t.UTC()
	return uint64(t.Year())*100 + uint64(t.Month())
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// insert stores rows, their batch_token column set to batchToken, deduplicated by dedupToken.
func (s *Embedded) insert(ctx context.Context, rows []row.Event, dedupToken, batchToken string) error {
	if len(rows) == 0 {
		return nil
	}
	if err := checkDedupToken(dedupToken); err != nil {
		return err
	}
	for i := range rows {
		rows[i].BatchToken = batchToken
	}
	buf, _ := s.bufs.Get().(*insertBuf)
	if buf == nil {
		buf = &insertBuf{data: make([]byte, 0, 64<<10)}
	}
	err := s.insertFile(ctx, buf, rows, dedupToken)
	if cap(buf.data) <= 64<<20 { // keep buffers up to 64 MiB for the next flush
		s.bufs.Put(buf)
	}
	if err != nil {
		return fmt.Errorf("cannot insert %d rows into %s.events: %w", len(rows), Database, err)
	}
	return nil
}

// insertFile writes rows, in the table's sorting-key order, to a batch file with buf as buffer
// and inserts it. The file holds what the spool holds (hashed events, no address or user agent)
// and is removed at once.
func (s *Embedded) insertFile(ctx context.Context, buf *insertBuf, rows []row.Event, dedupToken string) error {
	bp := &buf.data
	*bp = appendNative((*bp)[:0], rows, buf.order.of(rows))
	f, err := os.CreateTemp(s.dir, "batch-*.native")
	if err != nil {
		return fmt.Errorf("cannot create batch file: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(*bp)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cannot write batch file: %w", err)
	}
	*bp = insertStatement((*bp)[:0], Database+".events", f.Name(), dedupToken)
	_, _, err = s.conn.QueryStats(ctx, *bp, "")
	return err
}

// Select runs sql and decodes its JSONCompact answer.
func (s *Embedded) Select(ctx context.Context, sql string, settings map[string]string) (*Result, error) {
	clause, err := settingsClause(settings)
	if err != nil {
		return nil, fmt.Errorf("cannot run query: %w", err)
	}
	q := trimStatement(sql)
	if clause != "" {
		q += "\n" + clause
	}
	out, st, err := s.conn.QueryBounded(ctx, []byte(q), "JSONCompact")
	if err != nil {
		return nil, fmt.Errorf("cannot run query: %w", err)
	}
	res, err := decodeJSONCompact(out)
	if err != nil {
		return nil, err
	}
	if res.RowsRead == 0 {
		res.RowsRead, res.BytesRead = st.RowsRead, st.BytesRead
	}
	return res, nil
}

// jsonCompact is the shape of ClickHouse's JSONCompact output.
type jsonCompact struct {
	Meta       []Column `json:"meta"`
	Data       [][]any  `json:"data"`
	Statistics struct {
		RowsRead  uint64 `json:"rows_read"`
		BytesRead uint64 `json:"bytes_read"`
	} `json:"statistics"`
}

func decodeJSONCompact(out []byte) (*Result, error) {
	res := &Result{}
	if len(bytes.TrimSpace(out)) == 0 { // statements without a result set
		return res, nil
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	var jc jsonCompact
	if err := dec.Decode(&jc); err != nil {
		return nil, fmt.Errorf("cannot decode query result: %w", err)
	}
	res.Columns, res.Rows = jc.Meta, jc.Data
	if res.Rows == nil {
		res.Rows = [][]any{}
	}
	res.RowsRead, res.BytesRead = jc.Statistics.RowsRead, jc.Statistics.BytesRead
	return res, nil
}

// Raw runs sql and returns its output in format ("TSV", "ArrowStream",
// ...), as the engine produces it.
func (s *Embedded) Raw(ctx context.Context, sql, format string) ([]byte, error) {
	out, _, err := s.conn.QueryBounded(ctx, []byte(trimStatement(sql)), format)
	if err != nil {
		return nil, fmt.Errorf("cannot run query: %w", err)
	}
	return out, nil
}

// Exec runs one statement and discards its output.
func (s *Embedded) Exec(ctx context.Context, sql string) error {
	if _, _, err := s.conn.QueryStats(ctx, []byte(trimStatement(sql)), ""); err != nil {
		return fmt.Errorf("cannot run statement: %w", err)
	}
	return nil
}

// Close closes the engine connection; another OpenEmbedded may follow.
func (s *Embedded) Close() error {
	if err := s.conn.Close(); err != nil {
		return fmt.Errorf("cannot close embedded ClickHouse: %w", err)
	}
	return nil
}

var _ Store = (*Embedded)(nil)

// errNoRows is returned by helpers that expect one row.
var errNoRows = errors.New("query returned no rows")
