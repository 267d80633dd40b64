package query

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kyomi/collector/sink"
)

// Store is the part of sink.Store the query path uses: Select for the
// guard's parser calls and JSON results, Raw for ArrowStream results (a
// store that cannot produce it answers sink.ErrUnsupportedFormat).
// Settings are never passed in the map: the query path writes them into
// the statement's outermost SETTINGS clause itself.
type Store interface {
	Select(ctx context.Context, sql string, settings map[string]string) (*sink.Result, error)
	Raw(ctx context.Context, sql, format string) ([]byte, error)
}

// selectText runs sql and joins the first column of its rows with
// newlines: the text of an EXPLAIN or of a one-string SELECT.
func selectText(ctx context.Context, s Store, sql string) (string, error) {
	res, err := s.Select(ctx, sql, nil)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for i, row := range res.Rows {
		if len(row) == 0 {
			continue
		}
		str, ok := row[0].(string)
		if !ok {
			return "", errors.New("cannot read engine answer: not text")
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(str)
	}
	return b.String(), nil
}

// RefusedError is a query the guard will not run. Reason is safe to show to
// the caller: it names the construct refused, never data.
type RefusedError struct{ Reason string }

// Error returns the reason prefixed with "query refused".
func (e *RefusedError) Error() string { return "query refused: " + e.Reason }

func refused(format string, args ...any) error {
	return &RefusedError{Reason: fmt.Sprintf(format, args...)}
}

// EventsTable is the one table the query path reads; inside a query the
// name `events` is bound to the caller's rows of it.
const EventsTable = "analytics.events"

// MaxSQLBytes bounds the size of a query text.
const MaxSQLBytes = 64 << 10

// Guard decides whether a SQL text may run for a workspace and builds the
// statement that runs. It uses ClickHouse's own parser and analyzer through
// the store, so what it inspects is what executes:
//
//  1. formatQuerySingleLine(sql) parses the text (one statement only) and
//     gives the canonical form; only the canonical form is used afterwards,
//     so comments, odd whitespace and unicode tricks are gone;
//  2. EXPLAIN AST: one SELECT (UNION/INTERSECT/EXCEPT, CTEs, subqueries,
//     joins), node types from an allow list, no SETTINGS/FORMAT/INTO OUTFILE,
//     no table functions, no qualified table names, no function from the
//     deny list (see deniedFunction);
//  3. EXPLAIN QUERY TREE of the wrapped statement (see Wrap): after name
//     resolution every table read must be analytics.events, reached only
//     through the workspace-scoped `events` CTE; no table functions and no
//     denied function after alias resolution.
//
// The executed statement also carries additional_table_filters on
// analytics.events for the workspace (defence in depth) and hard limits in
// its outermost SETTINGS clause, which the caller cannot override because a
// SETTINGS clause in the caller's text is refused (settings in the text
// override settings sent with it, measured on chDB 26.5 and 26.7).
// A Guard is safe for concurrent use.
type Guard struct {
	Store  Store
	Limits Limits
}

// Limits are the ClickHouse limits every query path statement runs with. A
// zero field takes its DefaultLimits value: a partial Limits keeps the other
// bounds, never 0, which ClickHouse reads as unlimited.
type Limits struct {
	MaxRows          int   // rows returned at most; params.max_rows may lower it
	MaxResultBytes   int64 // max_result_bytes
	MaxMemory        int64 // max_memory_usage in bytes
	MaxExecutionSecs int   // max_execution_time
	MaxRowsToRead    int64 // max_rows_to_read
}

// DefaultLimits suit an interactive dashboard or agent.
var DefaultLimits = Limits{
	// 10k rows: more than a table or chart shows; an agent that wants more
	// aggregates in SQL.
	MaxRows: 10000,
	// 64 MiB: the stores stop reading an answer past it and the query path
	// counts the JSON it encodes (ClickHouse's own max_result_bytes let a
	// 200 MB answer through, README); up to MaxQueries answers share the
	// process that takes events.
	MaxResultBytes: 64 << 20,
	// 1 GiB: every dashboard report over a month of 9M events stays under
	// 512 MiB (BenchmarkReportMonth, README), with room for a few
	// statements at once beside the inserts.
	MaxMemory: 1 << 30,
	// 30s: the slowest dashboard report of that month takes about 5 s on a
	// shared 2-core machine; past 30 s an interactive caller has given up.
	MaxExecutionSecs: 30,
	// 200M rows: over 20 times that month; a caller's own SQL reads all of
	// its workspace's rows (README), and this bounds that scan.
	MaxRowsToRead: 200_000_000,
}

// Validate reports every negative limit; zero takes the default.
func (l Limits) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxRows", int64(l.MaxRows)}, {"MaxResultBytes", l.MaxResultBytes}, {"MaxMemory", l.MaxMemory},
		{"MaxExecutionSecs", int64(l.MaxExecutionSecs)}, {"MaxRowsToRead", l.MaxRowsToRead},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("query.Limits.%s must be >= 0 (0 takes the default), got %d", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// Prepared is a checked query ready to run.
type Prepared struct {
	Body     string // the scoped statement, without LIMIT and SETTINGS
	Settings string // the SETTINGS list with the limits
	MaxRows  int    // rows the caller may receive
}

// SQL returns the statement to execute, returning at most limit rows.
func (p *Prepared) SQL(limit int) string {
	return p.Body + " LIMIT " + strconv.Itoa(limit) + " SETTINGS " + p.Settings
}

// quoteString returns s as a ClickHouse single-quoted string literal.
var quoteString = sink.QuoteString

// Prepare checks sql for workspace wid and returns the statement to run,
// or a *RefusedError, or an error of the store.
func (g *Guard) Prepare(ctx context.Context, wid, sql string, maxRows int) (*Prepared, error) {
	if !validWID(wid) {
		return nil, refused("invalid workspace")
	}
	canonical, err := g.Canonical(ctx, sql)
	if err != nil {
		return nil, err
	}
	ast, err := selectText(ctx, g.Store, "EXPLAIN AST "+canonical)
	if err != nil {
		return nil, refused("cannot analyse query")
	}
	if err := CheckAST(ast); err != nil {
		return nil, err
	}
	maxRows = g.clampRows(maxRows)
	p := g.scoped(wid, canonical, maxRows)
	tree, err := selectText(ctx, g.Store, "EXPLAIN QUERY TREE "+p.Body+" SETTINGS "+g.explainSettings(wid))
	if err != nil {
		// The statement passed the parser checks; the analyzer found it
		// invalid (unknown column, type error): a failed query, not a refusal.
		return nil, fmt.Errorf("cannot analyse query: %w", err)
	}
	if err := CheckQueryTree(tree); err != nil {
		return nil, err
	}
	return p, nil
}

// scoped wraps a checked canonical statement of a caller for wid with the
// limits; maxRows must already be clamped.
func (g *Guard) scoped(wid, canonical string, maxRows int) *Prepared {
	return &Prepared{Body: g.wrap(wid, canonical), Settings: g.settings(wid, g.limits(), maxRows), MaxRows: maxRows}
}

// scopedTrusted is scoped for a statement the collector compiled (see
// wrapTrusted).
func (g *Guard) scopedTrusted(wid, compiled string, maxRows int) *Prepared {
	return &Prepared{Body: g.wrapTrusted(wid, compiled), Settings: g.settings(wid, g.limits(), maxRows), MaxRows: maxRows}
}

// limits returns the configured limits, each zero field taking its
// default: a partial Limits keeps the other bounds (0 means unlimited to
// ClickHouse, never what a caller of the query path wants).
func (g *Guard) limits() Limits {
	return g.Limits.withDefaults()
}

// withDefaults fills every zero field from DefaultLimits. A negative one,
// which Validate refuses, takes the default too: a Guard made without
// NewHandler must never run a statement unbounded.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxRows <= 0 {
		l.MaxRows = d.MaxRows
	}
	if l.MaxResultBytes <= 0 {
		l.MaxResultBytes = d.MaxResultBytes
	}
	if l.MaxMemory <= 0 {
		l.MaxMemory = d.MaxMemory
	}
	if l.MaxExecutionSecs <= 0 {
		l.MaxExecutionSecs = d.MaxExecutionSecs
	}
	if l.MaxRowsToRead <= 0 {
		l.MaxRowsToRead = d.MaxRowsToRead
	}
	return l
}

// clampRows applies the configured row limit to a requested one (0: the limit).
func (g *Guard) clampRows(maxRows int) int {
	lim := g.limits().MaxRows
	if maxRows <= 0 || maxRows > lim {
		return lim
	}
	return maxRows
}

// Canonical parses sql with the engine's parser and returns its canonical
// single-line form.
func (g *Guard) Canonical(ctx context.Context, sql string) (string, error) {
	if len(sql) == 0 || len(sql) > MaxSQLBytes {
		return "", refused("query empty or larger than %d bytes", MaxSQLBytes)
	}
	if !utf8.ValidString(sql) || strings.IndexByte(sql, 0) >= 0 {
		return "", refused("query is not valid UTF-8 text")
	}
	out, err := selectText(ctx, g.Store, "SELECT formatQuerySingleLine("+quoteString(sql)+")")
	if err != nil {
		return "", refused("cannot parse query: %s", engineMessage(err))
	}
	c := strings.TrimSpace(out)
	if c == "" || strings.Contains(c, "\n") {
		return "", refused("cannot parse query")
	}
	if strings.HasSuffix(c, ";") {
		c = strings.TrimSpace(strings.TrimSuffix(c, ";"))
	}
	return c, nil
}

// wrap binds `events` to the workspace's rows for a caller's statement.
//
// The workspace filter sits in the CTE behind a LIMIT, and that LIMIT is
// the boundary. ClickHouse evaluates a caller's predicate on every row the
// storage reads when it may move the predicate next to the workspace
// filter: predicate push-down into the CTE, the merge of both into one
// PREWHERE, and additional_table_filters all let `throwIf` or
// `base64Decode` in WHERE, JOIN ON or HAVING run on other workspaces' rows
// and reveal them through an error (issue 22, reproduced on 26.7). No
// optimiser may move a filter across a LIMIT: filtering then limiting is not
// limiting then filtering, so the rewrite would change results. Every
// expression of the caller therefore runs on rows the workspace filter has
// already passed. The limit itself (2^64-1) never cuts a row.
// TestIsolationPairs holds the engine to this on every supported store.
//
// The caller's statement is a subquery so its own WITH clause, UNION or
// ORDER BY keep their meaning; ClickHouse keeps the subquery's order for a
// plain outer SELECT *. The batch_token column is bookkeeping of the sink,
// not analytics: hidden.
func (g *Guard) wrap(wid, canonical string) string {
	return "WITH events AS (SELECT * EXCEPT (batch_token) FROM " + EventsTable + " WHERE workspace_id = " + quoteString(wid) +
		" LIMIT 18446744073709551615) SELECT * FROM (" + canonical + ")"
}

// wrapTrusted binds `events` without the LIMIT boundary, for statements the
// collector compiled itself (the report op): they compare columns with
// literals and call no function that can fail on a value, so letting the
// optimiser push their date range into the primary key is safe, and a
// month's report reads a month, not the workspace's whole history.
func (g *Guard) wrapTrusted(wid, compiled string) string {
	return "WITH events AS (SELECT * EXCEPT (batch_token) FROM " + EventsTable + " WHERE workspace_id = " + quoteString(wid) +
		") SELECT * FROM (" + compiled + ")"
}

// explainSettings are the settings of the EXPLAIN QUERY TREE run: the
// analyzer may evaluate constant scalar subqueries, so it runs read-only,
// scoped and time-bounded too (result limits would apply to the plan text).
func (g *Guard) explainSettings(wid string) string {
	lim := g.limits()
	return strings.Join([]string{
		"readonly=1",
		"additional_table_filters={" + quoteString(EventsTable) + ":" + quoteString("workspace_id = "+quoteString(wid)) + "}",
		"max_execution_time=" + strconv.Itoa(lim.MaxExecutionSecs), "timeout_overflow_mode='throw'",
		"max_rows_to_read=" + strconv.FormatInt(lim.MaxRowsToRead, 10), "read_overflow_mode='throw'",
		"allow_introspection_functions=0",
	}, ", ")
}

func (g *Guard) settings(wid string, lim Limits, maxRows int) string {
	filter := "workspace_id = " + quoteString(wid)
	return strings.Join([]string{
		"readonly=1",
		"additional_table_filters={" + quoteString(EventsTable) + ":" + quoteString(filter) + "}",
		"max_result_rows=" + strconv.Itoa(maxRows+1), "result_overflow_mode='throw'",
		"max_result_bytes=" + strconv.FormatInt(lim.MaxResultBytes, 10),
		"max_memory_usage=" + strconv.FormatInt(lim.MaxMemory, 10),
		"max_execution_time=" + strconv.Itoa(lim.MaxExecutionSecs), "timeout_overflow_mode='throw'",
		"max_rows_to_read=" + strconv.FormatInt(lim.MaxRowsToRead, 10), "read_overflow_mode='throw'",
		"allow_introspection_functions=0",
		"allow_ddl=0",
		// 64-bit integers as strings: visitor ids exceed JavaScript's 2^53.
		"output_format_json_quote_64bit_integers=1",
	}, ", ")
}

// allowedNodes are the AST node types a read-only SELECT is made of.
// Anything else (Set for SETTINGS, QueryParameter, statements other than
// SELECT, nodes added by future ClickHouse versions) is refused.
var allowedNodes = map[string]bool{
	"SelectWithUnionQuery": true, "SelectIntersectExceptQuery": true, "SelectQuery": true,
	"ExpressionList": true, "TablesInSelectQuery": true, "TablesInSelectQueryElement": true,
	"TableExpression": true, "TableIdentifier": true, "TableJoin": true, "ArrayJoin": true,
	"Subquery": true, "WithElement": true, "Function": true, "Identifier": true, "Literal": true,
	"Asterisk": true, "QualifiedAsterisk": true, "OrderByElement": true, "WindowDefinition": true,
	"WindowListElement": true, "SampleRatio": true, "InterpolateElement": true,
	"ColumnsRegexpMatcher": true, "ColumnsListMatcher": true, "QualifiedColumnsRegexpMatcher": true,
	"QualifiedColumnsListMatcher": true, "ColumnsTransformerList": true, "ColumnsApplyTransformer": true,
	"ColumnsExceptTransformer": true, "ColumnsReplaceTransformer": true,
	"ColumnsReplaceTransformer::Replacement": true,
}

type astNode struct {
	depth int
	typ   string
	rest  string
}

func parseASTLines(text string) []astNode {
	var nodes []astNode
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if line == "" {
			continue
		}
		d := len(line) - len(strings.TrimLeft(line, " "))
		f := strings.TrimLeft(line, " ")
		typ, rest, _ := strings.Cut(f, " ")
		nodes = append(nodes, astNode{depth: d, typ: typ, rest: rest})
	}
	return nodes
}

// CheckAST checks the text of EXPLAIN AST for a statement; see Guard.
func CheckAST(text string) error {
	nodes := parseASTLines(text)
	if len(nodes) == 0 || nodes[0].depth != 0 || nodes[0].typ != "SelectWithUnionQuery" {
		return refused("only SELECT statements are allowed")
	}
	if nodes[0].rest != "(children 1)" {
		return refused("FORMAT and INTO OUTFILE clauses are not allowed")
	}
	var stack []string // types of the ancestors by depth
	for i, n := range nodes {
		if i > 0 && n.depth == 0 {
			return refused("only one statement is allowed")
		}
		if n.depth > len(stack) {
			return refused("cannot analyse query")
		}
		stack = stack[:n.depth]
		parent := ""
		if n.depth > 0 {
			parent = stack[n.depth-1]
		}
		stack = append(stack, n.typ)
		if n.typ == "Set" {
			return refused("SETTINGS clause is not allowed")
		}
		if !allowedNodes[n.typ] {
			return refused("%s is not allowed", n.typ)
		}
		name, _, _ := strings.Cut(n.rest, " ")
		switch n.typ {
		case "TableIdentifier":
			if strings.Contains(name, ".") || name == "" {
				return refused("qualified table names are not allowed; use events")
			}
		case "Identifier":
			if db, _, ok := strings.Cut(name, "."); ok && databaseNames[strings.ToLower(strings.Trim(db, "`\""))] {
				return refused("names qualified with a database are not allowed")
			}
		case "Function":
			if parent == "TableExpression" {
				return refused("table functions are not allowed")
			}
			if deniedFunction(name) {
				return refused("function %s is not allowed", safeName(name))
			}
		}
	}
	return nil
}

// databaseNames are the databases of the engine; an identifier qualified
// with one (`x IN analytics.events`) names a table outside `events`.
var databaseNames = map[string]bool{"analytics": true, "system": true, "information_schema": true, "default": true, "_temporary_and_external_tables": true}

// CheckQueryTree checks the text of EXPLAIN QUERY TREE for the wrapped
// statement; see Guard.
func CheckQueryTree(text string) error {
	for _, line := range strings.Split(text, "\n") {
		l := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(l, "TABLE_FUNCTION"):
			return refused("table functions are not allowed")
		case strings.HasPrefix(l, "TABLE id:"):
			// system.one is the implicit source of a SELECT without FROM;
			// naming it explicitly is refused by CheckAST.
			if tn := field(l, "table_name"); tn != EventsTable && tn != "system.one" {
				return refused("only the events table may be read")
			}
		case strings.HasPrefix(l, "FUNCTION "):
			if name := field(l, "function_name"); deniedFunction(name) {
				return refused("function %s is not allowed", safeName(name))
			}
		}
	}
	return nil
}

// field extracts "key: value" from a query tree line ("k1: v1, k2: v2").
func field(line, key string) string {
	i := strings.Index(line, " "+key+": ")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+3:]
	if j := strings.Index(v, ", "); j >= 0 {
		v = v[:j]
	}
	return v
}

func safeName(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strconv.Quote(s)
}

// deniedExact are functions that reach outside the events table or the
// query (files, URLs, dictionaries, Join tables, other tables' metadata),
// leak server identity or configuration (user, database, host, settings,
// macros, ports, versions, disks), or only burn resources (sleep).
// Everything else computes on the rows it is given and is harmless inside
// the limits: runningDifference, arrayJoin, formatQuery and friends.
var deniedExact = map[string]bool{
	"file": true, "url": true, "joinget": true, "joingetornull": true,
	"getsetting": true, "getsettingordefault": true, "getmergetreesetting": true, "getserversetting": true,
	"hascolumnintable": true, "currentuser": true, "current_user": true, "user": true,
	"currentdatabase": true, "current_database": true, "database": true, "schema": true,
	"currentschemas": true, "current_schemas": true, "currentprofiles": true, "enabledprofiles": true,
	"defaultprofiles": true, "currentroles": true, "enabledroles": true, "defaultroles": true,
	"hostname": true, "fqdn": true, "fullhostname": true, "getmacro": true, "getserverport": true,
	"tcpport": true, "serveruuid": true, "uptime": true, "version": true, "buildid": true,
	"revision": true, "displayname": true, "authuser": true, "authenticateduser": true,
	"session_user": true, "sessionuser": true, "showcertificate": true, "getmaxtablenamelengthfordatabase": true, "sleep": true, "sleepeachrow": true,
	"queryid": true, "query_id": true, "initialqueryid": true, "initial_query_id": true,
	"currentqueryid": true, "current_query_id": true, "initialquerystarttime": true,
	"initial_query_start_time": true, "querystring": true, "querystringandfragment": true,
	"shardnum": true, "shardcount": true, "getclienthttpheader": true, "getoskernelversion": true,
	"zookeepersessionuptime": true, "transactionid": true, "transactionlatestsnapshot": true,
	"transactionoldestsnapshot": true, "catboostevaluate": true, "naivebayesclassifier": true,
	"addresstoline": true, "addresstolinewithinlines": true, "addresstosymbol": true, "demangle": true,
	"logtrace": true, "connectionid": true, "connection_id": true, "globalvariable": true,
	"hasthreadfuzzer": true, "filesystemavailable": true, "filesystemcapacity": true,
	"filesystemunreserved": true, "filesystemfree": true, "input": true, "dictionary": true,
	"s3": true, "hdfs": true, "remote": true, "remotesecure": true, "cluster": true,
	"clusterallreplicas": true, "mysql": true, "postgresql": true, "jdbc": true, "odbc": true,
	"merge": true, "view": true, "executable": true, "numbers": true, "generaterandom": true,
}

// deniedPrefixes cover function families: dictionaries, internal functions,
// storage-backed functions.
var deniedPrefixes = []string{"dict", "__", "filesystem", "s3", "azure", "hdfs", "remote", "mongo", "redis", "sqlite", "getserver", "getclient"}

func deniedFunction(name string) bool {
	n := strings.ToLower(strings.Trim(name, "`\""))
	if deniedExact[n] {
		return true
	}
	for _, p := range deniedPrefixes {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// engineMessage extracts a short, caller-safe message from a ClickHouse
// exception: the text after "DB::Exception: " up to the scope/stack part,
// at most 300 bytes. It never contains the wrapper (workspace filter),
// which ClickHouse prints only in the "In scope" part.
func engineMessage(err error) string {
	s := err.Error()
	if i := strings.Index(s, "DB::Exception: "); i >= 0 {
		s = s[i+len("DB::Exception: "):]
	}
	for _, cut := range []string{": In scope", ": While processing", ". Stack trace", ": while executing", "\n"} {
		if i := strings.Index(s, cut); i >= 0 {
			s = s[:i]
		}
	}
	if strings.Contains(s, "workspace_id = ") {
		return "query failed"
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// engineCode returns the ClickHouse error code number in err, or 0: the
// "Code: N." ClickHouse writes, which the server store passes on, or
// "ClickHouse error N:".
func engineCode(err error) int {
	s := err.Error()
	for _, mark := range []string{"Code: ", "ClickHouse error "} {
		i := strings.Index(s, mark)
		if i < 0 {
			continue
		}
		s = s[i+len(mark):]
		j := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
		if j < 0 {
			j = len(s)
		}
		n, _ := strconv.Atoi(s[:j])
		return n
	}
	return 0
}
