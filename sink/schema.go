package sink

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Database is the ClickHouse database that holds the analytics data and
// nothing else.
const Database = "analytics"

// SchemaConfig selects how the schema is laid out. A zero DedupWindow takes
// DefaultSchemaConfig's; Migrate and VerifySchema refuse a SchemaConfig that
// Validate refuses.
type SchemaConfig struct {
	// Cluster, when set, runs every statement ON CLUSTER Cluster and lays
	// the events out as ReplicatedMergeTree local tables (events_local) on
	// every shard behind a Distributed table (events). Empty means one
	// server (the managed engine too): a plain MergeTree table events.
	Cluster string
	// DedupWindow is how many recent insert blocks a MergeTree table
	// remembers for insert_deduplication_token.
	DedupWindow int
}

// DefaultSchemaConfig is the schema the collector runs with without
// -clickhouse-cluster.
var DefaultSchemaConfig = SchemaConfig{
	// 1000 blocks: enough for retries over about a quarter of an hour at
	// one insert per second per node for a few nodes.
	DedupWindow: 1000,
}

var clusterName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`)

// Validate reports every invalid field of c.
func (c SchemaConfig) Validate() error {
	var errs []error
	if c.Cluster != "" && !clusterName.MatchString(c.Cluster) {
		errs = append(errs, fmt.Errorf("sink.SchemaConfig.Cluster %q: letters, digits, '_', '.', '-' only", c.Cluster))
	}
	if c.DedupWindow < 0 {
		errs = append(errs, fmt.Errorf("sink.SchemaConfig.DedupWindow must be >= 0 (0 takes the default), got %d", c.DedupWindow))
	}
	return errors.Join(errs...)
}

func (c SchemaConfig) dedupWindow() int {
	if c.DedupWindow == 0 {
		return DefaultSchemaConfig.DedupWindow
	}
	return c.DedupWindow
}

// onCluster is the " ON CLUSTER x" clause, or "".
func (c SchemaConfig) onCluster() string {
	if c.Cluster == "" {
		return ""
	}
	return " ON CLUSTER " + quoteIdent(c.Cluster)
}

// dataTable is the table that stores the rows: events, or events_local
// in cluster mode. Mutations (retention, erasure) run against it.
func (c SchemaConfig) dataTable() string {
	if c.Cluster == "" {
		return Database + ".events"
	}
	return Database + ".events_local"
}

// migration is one schema version. Statements must be idempotent (IF NOT
// EXISTS and the like): a crash between a statement and the version record
// replays the migration.
type migration struct {
	version     uint32
	description string
	statements  func(c SchemaConfig) []string
}

// migrations lists every schema version in order. Append only: a released
// migration never changes, except that migrationEvents creates the table
// from the current column table, so a new database starts with the latest
// column types and the later migrations that convert types change nothing
// on it.
var migrations = []migration{
	{1, "analytics database, events table", migrationEvents},
	{2, "open-ended string columns as String", migrationPlainStrings},
	{3, "engagement and tracker version columns", migrationEngagement},
}

// LatestSchemaVersion is the newest schema version this binary knows.
func LatestSchemaVersion() uint32 { return migrations[len(migrations)-1].version }

func migrationEvents(c SchemaConfig) []string {
	var cols strings.Builder
	for i, col := range columns {
		if i > 0 {
			cols.WriteString(",\n")
		}
		cols.WriteString("    ")
		cols.WriteString(col.name)
		cols.WriteByte(' ')
		cols.WriteString(col.typ)
	}
	engine := "MergeTree"
	table := Database + ".events"
	if c.Cluster != "" {
		engine = "ReplicatedMergeTree('/clickhouse/tables/{shard}/" + Database + "/events_local', '{replica}')"
		table = Database + ".events_local"
	}
	// Partitions by month keep their count bounded (12 a year) whatever the
	// number of workspaces; the workspace leads the sort key so a tenant's
	// query reads a contiguous range. TTL deletes rows, not whole parts
	// (ttl_only_drop_parts = 0), since one part mixes retention tiers.
	// The database itself is created before the migrations table, by
	// Migrate.
	stmts := []string{
		"CREATE TABLE IF NOT EXISTS " + table + c.onCluster() + "\n(\n" + cols.String() + "\n)\n" +
			"ENGINE = " + engine + "\n" +
			"PARTITION BY toYYYYMM(ts)\n" +
			"ORDER BY (workspace_id, toDate(ts), visitor_id, ts)\n" +
			"TTL toDateTime(ts) + toIntervalDay(retention_days)\n" +
			"SETTINGS index_granularity = 8192, ttl_only_drop_parts = 0, " +
			"non_replicated_deduplication_window = " + strconv.Itoa(c.dedupWindow()),
	}
	if c.Cluster != "" {
		stmts = append(stmts, "CREATE TABLE IF NOT EXISTS "+Database+".events"+c.onCluster()+
			" AS "+Database+".events_local\n"+
			"ENGINE = Distributed("+QuoteString(c.Cluster)+", "+QuoteString(Database)+", 'events_local', cityHash64(workspace_id))")
	}
	return stmts
}

// plainStringColumns are the columns that schema version 1 created as LowCardinality(String) and
// version 2 stores as String (see lc and str in columns.go).
var plainStringColumns = []string{
	"workspace_id", "domain", "name", "hostname", "utm_source", "utm_medium", "utm_campaign",
	"region", "city", "browser_version", "os_version", "batch_token",
}

// migrationPlainStrings converts plainStringColumns of a version-1 table: one ALTER, so one
// mutation that rewrites those columns of every part in the background (mutations_sync = 0:
// the collector starts at once, and reads convert parts not yet rewritten). On a table that
// migrationEvents created from the current column table it changes nothing. In cluster mode the
// Distributed table's columns follow, which is a metadata change.
func migrationPlainStrings(c SchemaConfig) []string {
	var b strings.Builder
	for i, name := range plainStringColumns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("MODIFY COLUMN " + name + " " + str)
	}
	stmts := []string{"ALTER TABLE " + c.dataTable() + c.onCluster() + " " + b.String() + " SETTINGS mutations_sync = 0"}
	if c.Cluster != "" {
		stmts = append(stmts, "ALTER TABLE "+Database+".events"+c.onCluster()+" "+b.String())
	}
	return stmts
}

// engagementColumns are the columns that schema version 3 adds (see columns.go).
var engagementColumns = []string{"scroll_depth", "engagement_time", "tracker_version"}

// migrationEngagement adds engagementColumns to a table made by an earlier version, at the end of
// the table as in the column table: ADD COLUMN IF NOT EXISTS is a metadata change (existing parts
// read the defaults, 0) and changes nothing on a table that migrationEvents created with them. In
// cluster mode the Distributed table gets the same columns.
func migrationEngagement(c SchemaConfig) []string {
	var b strings.Builder
	for i, name := range engagementColumns {
		if i > 0 {
			b.WriteString(", ")
		}
		for _, col := range columns {
			if col.name == name {
				b.WriteString("ADD COLUMN IF NOT EXISTS " + name + " " + col.typ)
			}
		}
	}
	stmts := []string{"ALTER TABLE " + c.dataTable() + c.onCluster() + " " + b.String()}
	if c.Cluster != "" {
		stmts = append(stmts, "ALTER TABLE "+Database+".events"+c.onCluster()+" "+b.String())
	}
	return stmts
}

// migrationsTableDDL creates the table that records applied versions.
func migrationsTableDDL(c SchemaConfig) string {
	engine := "MergeTree"
	if c.Cluster != "" {
		engine = "ReplicatedMergeTree('/clickhouse/tables/{shard}/" + Database + "/schema_migrations', '{replica}')"
	}
	return "CREATE TABLE IF NOT EXISTS " + Database + ".schema_migrations" + c.onCluster() +
		"\n(\n    version UInt32,\n    description String,\n    applied_at DateTime DEFAULT now()\n)\nENGINE = " +
		engine + "\nORDER BY version"
}

// MigrationSQL returns every statement Migrate would run on an empty
// database, in order, for review and for the cluster DDL under deploy/.
func MigrationSQL(c SchemaConfig) ([]string, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid schema config: %w", err)
	}
	out := []string{"CREATE DATABASE IF NOT EXISTS " + Database + c.onCluster(), migrationsTableDDL(c)}
	for _, m := range migrations {
		out = append(out, m.statements(c)...)
		out = append(out, recordSQL(c, m))
	}
	return out, nil
}

func recordSQL(_ SchemaConfig, m migration) string {
	return fmt.Sprintf("INSERT INTO %s.schema_migrations (version, description) VALUES (%d, %s)",
		Database, m.version, QuoteString(m.description))
}

// ErrSchemaTooNew is returned by Migrate when the database holds a schema
// version newer than this binary knows.
var ErrSchemaTooNew = errors.New("database schema is newer than this collector")

// SchemaVersion returns the newest schema version recorded in the
// database, 0 when none is.
func SchemaVersion(ctx context.Context, s Store) (uint32, error) {
	res, err := s.Select(ctx, "SELECT toUInt32(count()), toUInt32(max(version)) FROM "+Database+".schema_migrations", nil)
	if err != nil {
		return 0, fmt.Errorf("cannot read schema version: %w", err)
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 2 {
		return 0, errors.New("cannot read schema version: unexpected result shape")
	}
	n, err := asUint64(res.Rows[0][0])
	if err != nil || n == 0 {
		return 0, err
	}
	v, err := asUint64(res.Rows[0][1])
	return uint32(v), err
}

// Migrate brings the schema to LatestSchemaVersion: it creates the
// database and the migrations table, refuses a database whose version is
// newer than this binary knows, and applies and records each missing
// migration in order. Running it again changes nothing. Collectors that
// start together may both apply a migration; the statements are
// idempotent, so the outcome is the same.
func Migrate(ctx context.Context, s Store, c SchemaConfig) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("invalid schema config: %w", err)
	}
	for _, q := range []string{"CREATE DATABASE IF NOT EXISTS " + Database + c.onCluster(), migrationsTableDDL(c)} {
		if err := s.Exec(ctx, q); err != nil {
			return fmt.Errorf("cannot create the migrations table: %w", err)
		}
	}
	cur, err := SchemaVersion(ctx, s)
	if err != nil {
		return err
	}
	if latest := LatestSchemaVersion(); cur > latest {
		return fmt.Errorf("%w: the database is at schema version %d, this binary knows up to %d; upgrade the collector",
			ErrSchemaTooNew, cur, latest)
	}
	for _, m := range migrations {
		if m.version <= cur {
			continue
		}
		for i, q := range m.statements(c) {
			if err := s.Exec(ctx, q); err != nil {
				return fmt.Errorf("cannot apply schema migration %d (%s), statement %d: %w", m.version, m.description, i+1, err)
			}
		}
		if err := s.Exec(ctx, recordSQL(c, m)); err != nil {
			return fmt.Errorf("cannot record schema migration %d: %w", m.version, err)
		}
	}
	if err := s.Exec(ctx, mergePolicy(c)); err != nil {
		return fmt.Errorf("cannot set the merge policy: %w", err)
	}
	return nil
}

// mergePolicy makes the engine merge parts less eagerly: with merge_selector_base 20
// (ClickHouse's default is 5) a merge waits for more parts of a similar size, so each row is
// rewritten fewer times. Merges were the in-process engine's largest cost: 40 flushes of 10,000
// rows cost 11.7 to 15.7 µs of CPU per row with the default and 7.1 to 8.0 with 20, leaving 7
// active parts instead of 1 or 2 (BenchmarkSustainedInsert, then named
// BenchmarkEmbeddedSustainedInsert, BENCHMARKS.md). A server pays the same (about 2.5 µs per
// row more without it, issue 23), so it applies to every server; in cluster mode to the shards'
// tables. Applied at every start, so it follows this constant.
func mergePolicy(c SchemaConfig) string {
	return "ALTER TABLE " + c.dataTable() + c.onCluster() + " MODIFY SETTING merge_selector_base = 20"
}

// quoteIdent returns name as a back-quoted ClickHouse identifier.
func quoteIdent(name string) string {
	return "`" + strings.ReplaceAll(strings.ReplaceAll(name, `\`, `\\`), "`", "\\`") + "`"
}

// asUint64 converts a value of a Result row (a string for 64-bit integers,
// json.Number for the others, or a native integer) to uint64.
func asUint64(v any) (uint64, error) {
	switch x := v.(type) {
	case uint64:
		return x, nil
	case uint32:
		return uint64(x), nil
	case uint16:
		return uint64(x), nil
	case uint8:
		return uint64(x), nil
	case int64:
		return uint64(x), nil
	case int:
		return uint64(x), nil
	case string:
		n, err := strconv.ParseUint(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cannot read %q as an unsigned integer: %w", x, err)
		}
		return n, nil
	case interface{ String() string }:
		n, err := strconv.ParseUint(x.String(), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cannot read a result value as an unsigned integer: %w", err)
		}
		return n, nil
	default:
		return 0, fmt.Errorf("cannot read a result value of type %T as an unsigned integer", v)
	}
}

// ErrSchemaMismatch is wrapped by VerifySchema when the database lacks what the collector needs.
var ErrSchemaMismatch = errors.New("the ClickHouse schema does not match what the collector needs")

// VerifySchema checks, without changing anything, that the database holds what the collector
// writes and reads: analytics.events with every column of this binary at its type (extra
// columns are allowed), and in cluster mode a Distributed events table over the shards' table
// events_local, which needs the same columns. It is the check for a schema an operator manages
// (migrations skipped); every problem is named in one error wrapping ErrSchemaMismatch.
func VerifySchema(ctx context.Context, s Store, c SchemaConfig) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("invalid schema config: %w", err)
	}
	var problems []string
	tables := []string{"events"}
	res, err := s.Select(ctx, "SELECT name, engine, engine_full FROM system.tables WHERE database = '"+Database+"' AND name IN ('events', 'events_local')", nil)
	if err != nil {
		return fmt.Errorf("cannot inspect the schema: %w", err)
	}
	engines := map[string][2]string{}
	for _, r := range res.Rows {
		name, _ := r[0].(string)
		eng, _ := r[1].(string)
		full, _ := r[2].(string)
		engines[name] = [2]string{eng, full}
	}
	ev, ok := engines["events"]
	switch {
	case !ok:
		problems = append(problems, Database+".events does not exist")
	case c.Cluster != "":
		tables = append(tables, "events_local")
		m := distributedCluster.FindStringSubmatch(ev[1])
		if ev[0] != "Distributed" || m == nil || m[1] != c.Cluster {
			problems = append(problems, fmt.Sprintf("%s.events is %s, want Distributed over cluster %s", Database, ev[0], c.Cluster))
		}
		if _, ok := engines["events_local"]; !ok {
			problems = append(problems, Database+".events_local does not exist (on this server)")
		}
	case !strings.HasSuffix(ev[0], "MergeTree"):
		problems = append(problems, fmt.Sprintf("%s.events is %s, want a MergeTree table", Database, ev[0]))
	}
	for _, table := range tables {
		if _, ok := engines[table]; !ok {
			continue
		}
		res, err := s.Select(ctx, "SELECT name, type FROM system.columns WHERE database = '"+Database+"' AND table = '"+table+"'", nil)
		if err != nil {
			return fmt.Errorf("cannot inspect the columns of %s.%s: %w", Database, table, err)
		}
		have := map[string]string{}
		for _, r := range res.Rows {
			n, _ := r[0].(string)
			t, _ := r[1].(string)
			have[n] = t
		}
		for _, col := range columns {
			switch t, ok := have[col.name]; {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s.%s lacks column %s %s", Database, table, col.name, col.typ))
			case t != col.typ:
				problems = append(problems, fmt.Sprintf("%s.%s column %s is %s, want %s", Database, table, col.name, t, col.typ))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w:\n  %s", ErrSchemaMismatch, strings.Join(problems, "\n  "))
	}
	return nil
}
