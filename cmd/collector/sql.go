package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kyomi/collector/collector/workspace"
	"github.com/kyomi/collector/sink"
	"github.com/kyomi/collector/sink/engine"
	"github.com/kyomi/collector/sink/spool"
)

// sqlCmd runs one SQL statement against the configured store and prints the result as TSV (or
// in the FORMAT the statement names), also while a collector serves from the same data
// directory (through its managed engine).
func sqlCmd(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	c, fs, code := loadConfig("sql", args, env, stderr)
	if code >= 0 {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, `usage: collector sql [flags] "QUERY"`)
		return 2
	}
	store, closeStore, err := openRawStore(ctx, c)
	if err != nil {
		fmt.Fprintf(stderr, "collector sql: %v\n", err)
		return 1
	}
	defer closeStore()
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
	serving := false
	if c.ClickHouse == "" {
		_, serving = engine.Running(ctx, c.DataDir, "default")
	}
	store, closeStore, err := openRawStore(ctx, c)
	if err != nil {
		fmt.Fprintf(stderr, "collector erase-workspace: %v\n", err)
		return 1
	}
	defer closeStore()
	ectx, cancel := withTimeout(ctx, time.Hour)
	defer cancel()
	if c.ClickHouse == "" && !serving {
		// Events still in the spool would be inserted at the next start, after the erasure: ship
		// them first, pending batch included, so that the erasure covers them. (A collector
		// serving from the directory holds the spool: like every collector of a server, let it
		// drain first.)
		shipped, err := drainSpool(ectx, c, store)
		if err != nil {
			fmt.Fprintf(stderr, "collector erase-workspace: %v\n", err)
			return 1
		}
		if shipped > 0 {
			fmt.Fprintf(stdout, "shipped %d spooled events into the store before erasing\n", shipped)
		}
	}
	rep, err := sink.EraseWorkspace(ectx, store, fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "collector erase-workspace: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, rep.String())
	return 0
}

// drainSpool opens the data directory's spool, if a collector ever served from it, and ships its
// events into store (sink.Drain).
func drainSpool(ctx context.Context, c *config, store sink.Store) (int, error) {
	dir := filepath.Join(c.DataDir, "spool")
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	sp, err := spool.Open(spool.Config{Dir: dir, MaxBytes: c.SpoolMaxBytes, RingDir: c.SpoolRingDir})
	if err != nil {
		return 0, fmt.Errorf("cannot open the spool to ship its events: %w", err)
	}
	defer sp.Close()
	return sink.Drain(ctx, sp, store, sink.ShipperConfig{MaxRows: c.BatchRows, MaxAge: c.BatchAge})
}

// openRawStore opens the configured store without applying migrations: the operator commands
// inspect what is there. Without -clickhouse it goes through the managed engine of the data
// directory: the one a collector serving from it runs, or else one it starts for the command
// (stopped by the returned close).
func openRawStore(ctx context.Context, c *config) (sink.Store, func(), error) {
	if c.ClickHouse != "" {
		s, err := sink.OpenServer(c.ClickHouse)
		if err != nil {
			return nil, nil, err
		}
		return s, func() { s.Close() }, nil
	}
	if dsn, ok := engine.Running(ctx, c.DataDir, "default"); ok {
		s, err := sink.OpenServer(dsn)
		if err != nil {
			return nil, nil, err
		}
		return s, func() { s.Close() }, nil
	}
	e, err := startEngine(ctx, c, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		return nil, nil, err
	}
	s, err := sink.OpenServer(e.DSN("default"))
	if err != nil {
		e.Stop()
		return nil, nil, err
	}
	return s, func() { s.Close(); e.Stop() }, nil
}

// checkWorkspaces validates a workspaces file without starting anything.
func checkWorkspaces(path string) error {
	_, err := workspace.LoadFile(path)
	return err
}
