package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/kyomi/collector/collector/workspace"
	"github.com/kyomi/collector/sink"
)

// sqlCmd runs one SQL statement against the configured store and prints the result as TSV (or
// in the FORMAT the statement names). For the embedded store it needs the data directory to
// itself: run it while no collector serves from that directory.
func sqlCmd(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	c, fs, code := loadConfig("sql", args, env, stderr)
	if code >= 0 {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, `usage: collector sql [flags] "QUERY"`)
		return 2
	}
	store, err := openRawStore(c)
	if err != nil {
		fmt.Fprintf(stderr, "collector sql: %v\n", err)
		return 1
	}
	defer store.Close()
	qctx, cancel := withTimeout(ctx, 10*time.Minute)
	defer cancel()
	out, err := store.Raw(qctx, fs.Arg(0), "TSV")
	if err != nil {
		fmt.Fprintf(stderr, "collector sql: %v\n", err)
		return 1
	}
	_, _ = stdout.Write(out)
	return 0
}

// eraseCmd deletes every row of one workspace and waits until ClickHouse has rewritten the parts
// that held them, so the data is physically gone when it returns.
func eraseCmd(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	c, fs, code := loadConfig("erase-workspace", args, env, stderr)
	if code >= 0 {
		return code
	}
	if fs.NArg() != 1 || strings.TrimSpace(fs.Arg(0)) == "" {
		fmt.Fprintln(stderr, "usage: collector erase-workspace [flags] WORKSPACE_ID")
		return 2
	}
	store, err := openRawStore(c)
	if err != nil {
		fmt.Fprintf(stderr, "collector erase-workspace: %v\n", err)
		return 1
	}
	defer store.Close()
	ectx, cancel := withTimeout(ctx, time.Hour)
	defer cancel()
	rep, err := sink.EraseWorkspace(ectx, store, fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "collector erase-workspace: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, rep.String())
	return 0
}

// openRawStore opens the configured store without applying migrations: the operator commands
// inspect what is there.
func openRawStore(c *config) (sink.Store, error) {
	if c.ClickHouse == "" {
		return sink.OpenEmbedded(embeddedDir(c))
	}
	return sink.OpenServer(c.ClickHouse)
}

// checkWorkspaces validates a workspaces file without starting anything.
func checkWorkspaces(path string) error {
	_, err := workspace.LoadFile(path)
	return err
}

// embeddedDir is where the embedded engine keeps its data inside -data-dir.
func embeddedDir(c *config) string { return filepath.Join(c.DataDir, "clickhouse") }
