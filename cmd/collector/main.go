// Command collector is the Kyomi Analytics edge collector.
//
//	collector [serve] [flags]           run the server (the default)
//	collector sql [flags] "QUERY"       run one SQL statement against the configured store, print TSV
//	collector config check [flags]      validate flags, environment and the workspaces file, then exit
//	collector erase-workspace [flags] ID  delete every row of one workspace and wait until it is gone
//	collector token issue -wid WS [flags]  print a query token signed by the data directory's own key
//	collector token revoke [flags] JTI    add a token id to the revocation list serve reads
//
// Every flag can also be set with the environment variable COLLECTOR_<NAME>.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/kyomi/collector/collector/query"
	"github.com/kyomi/collector/sink/engine"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process exit code: 0 success, 1 failure at run
// time, 2 bad usage or configuration.
func run(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serveCmd(ctx, args, env, stdout, stderr)
	case "sql":
		return sqlCmd(ctx, args, env, stdout, stderr)
	case "config":
		if len(args) == 0 || args[0] != "check" {
			fmt.Fprintln(stderr, "usage: collector config check [flags]")
			return 2
		}
		return configCheckCmd(args[1:], env, stdout, stderr)
	case "erase-workspace":
		return eraseCmd(ctx, args, env, stdout, stderr)
	case "token":
		return tokenCmd(ctx, args, env, stdout, stderr)
	case "engine":
		// Hidden: the managed engine's launcher, started by serve as its own child. It becomes a
		// ClickHouse server and returns only if that fails.
		return engine.Main(args, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "unknown command %q\n%s\n", cmd, usage)
		return 2
	}
}

const usage = `usage:
  collector [serve] [flags]             run the collector (default)
  collector sql [flags] "QUERY"         run one SQL statement against the store and print TSV
  collector config check [flags]        validate the configuration without starting
  collector erase-workspace [flags] ID  delete every row of one workspace
  collector token issue -wid WS [-ttl D] [flags]  print a query token signed by the data directory's key
  collector token revoke [flags] [--] JTI  revoke a token by its id (jti; "--" before one that begins with '-')
Run "collector serve -h" for the flags; each also reads COLLECTOR_<NAME> from the environment.`

// loadConfig parses and validates flags for a subcommand, printing every problem on stderr.
func loadConfig(name string, args []string, env func(string) string, stderr io.Writer) (*config, *flag.FlagSet, int) {
	c, fs, err := parseConfig(name, args, env, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil, fs, 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "collector %s: invalid configuration:\n", name)
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "  %s\n", line)
		}
		return nil, fs, 2
	}
	return c, fs, -1
}

// newLogger returns the process logger: JSON on stdout at the configured level.
func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

func configCheckCmd(args []string, env func(string) string, stdout, stderr io.Writer) int {
	c, _, code := loadConfig("config check", args, env, stderr)
	if code >= 0 {
		return code
	}
	if c.ConfigPath != "" {
		if err := checkWorkspaces(c.ConfigPath); err != nil {
			fmt.Fprintf(stderr, "collector config check: %s:\n  %s\n", c.ConfigPath, strings.ReplaceAll(err.Error(), "\n", "\n  "))
			return 2
		}
	}
	if c.ConnectToken != "" {
		ctx, cancel := withTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := checkConnectToken(ctx, c); err != nil {
			fmt.Fprintf(stderr, "collector config check: -connect-token: %v\n", err)
			if query.Refused(err) {
				return 2
			}
			return 1 // the check could not run (JWKS or Redis unreachable), the token may be fine
		}
	}
	fmt.Fprintln(stdout, "configuration is valid")
	return 0
}

// withTimeout is a context for one operator command.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}
