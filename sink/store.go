// Package sink stores accepted events in ClickHouse: the column mapping of
// the row type (package sink/row) and its Native block encoder, the schema
// and its migrations, the batcher that moves events from the durable spool
// into the store, and the store on a ClickHouse server or cluster (the
// managed local engine of package sink/engine is one such server).
package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/kyomi/collector/sink/row"
)

// Store is a ClickHouse database the collector writes events to and reads
// from. Server (OpenServer) implements it, for a remote server or cluster and
// for the managed local engine alike. Implementations are safe for concurrent
// use.
type Store interface {
	// Insert stores rows in analytics.events with one INSERT. dedupToken
	// identifies the batch: a retry with the same token and the same rows
	// stores them once. An empty token disables deduplication.
	Insert(ctx context.Context, rows []row.Event, dedupToken string) error
	// Select runs one read query and returns its typed rows. settings are
	// ClickHouse settings applied to the query; a SETTINGS clause inside
	// sql takes precedence over them, so limits that must hold are to be
	// enforced before the SQL reaches the store.
	Select(ctx context.Context, sql string, settings map[string]string) (*Result, error)
	// Raw runs one statement and returns its output in format, as bytes
	// (TSV for `collector sql`, ArrowStream for the query path).
	Raw(ctx context.Context, sql, format string) ([]byte, error)
	// Exec runs one statement that returns no rows (DDL, ALTER, INSERT
	// with literal values).
	Exec(ctx context.Context, sql string) error
	// SetMaxResultBytes bounds every later Select and Raw answer: past n
	// bytes read from the engine they fail with ErrResultTooLarge and keep
	// nothing; n <= 0 removes the bound. serve sets the query path's
	// result limit, because the store's answers share the process with
	// ingest. Safe for concurrent use.
	SetMaxResultBytes(n int64)
	// Close releases the store; running calls finish first.
	Close() error
}

// Column names and types one column of a Result, as ClickHouse spells them.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Result is the answer to Select. Values in Rows are JSON-ready (decoded
// from JSONCompact): strings (64-bit integers
// too), bools, json.Number, nil for NULL, and slices and maps for
// composite types.
type Result struct {
	Columns []Column
	Rows    [][]any
	// RowsRead and BytesRead are what ClickHouse read to answer.
	RowsRead, BytesRead uint64
}

// ErrResultTooLarge is returned by Select and Raw when the answer is larger
// than the store's result limit (SetMaxResultBytes); nothing of it is kept.
var ErrResultTooLarge = errors.New("query result larger than the limit")

// ErrUnsupportedFormat is returned by Raw for a format the store cannot
// produce.
var ErrUnsupportedFormat = errors.New("output format not supported by this store")

var (
	settingName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	settingPlain = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)
	dedupTokenOK = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)
)

// settingsClause renders settings as "SETTINGS a = 1, b = 'x'" in a stable
// order; names must be plain identifiers.
func settingsClause(settings map[string]string) (string, error) {
	if len(settings) == 0 {
		return "", nil
	}
	names := make([]string, 0, len(settings))
	for k := range settings {
		if !settingName.MatchString(k) {
			return "", fmt.Errorf("invalid setting name %q", k)
		}
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("SETTINGS ")
	for i, k := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k)
		b.WriteString(" = ")
		if v := settings[k]; settingPlain.MatchString(v) {
			b.WriteString(v)
		} else {
			b.WriteString(QuoteString(v))
		}
	}
	return b.String(), nil
}

// checkDedupToken keeps tokens to a safe alphabet, so they can be written
// into SQL text and logs without escaping worries.
func checkDedupToken(tok string) error {
	if tok == "" || dedupTokenOK.MatchString(tok) {
		return nil
	}
	return errors.New("invalid dedup token: use 1-128 of [A-Za-z0-9_.:-]")
}

// trimStatement drops trailing semicolons and white space, so clauses can
// be appended.
func trimStatement(sql string) string {
	return strings.TrimRight(sql, " \t\r\n;")
}

// errNoRows is returned by helpers that expect one row.
var errNoRows = errors.New("query returned no rows")

// jsonCompact is the shape of ClickHouse's JSONCompact output.
type jsonCompact struct {
	Meta       []Column `json:"meta"`
	Data       [][]any  `json:"data"`
	Statistics struct {
		RowsRead  uint64 `json:"rows_read"`
		BytesRead uint64 `json:"bytes_read"`
	} `json:"statistics"`
}

// decodeJSONCompact decodes a JSONCompact answer into a Result, numbers as json.Number.
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
