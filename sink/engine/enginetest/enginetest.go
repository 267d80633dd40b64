// Package enginetest gives tests a real ClickHouse server: one started from the chDB library
// with package engine, on free loopback ports in a temporary directory, or the external server
// named by CLICKHOUSE_ADDR.
//
// The launcher is the test binary itself: a package that starts servers calls RunLauncher first
// thing in its TestMain, so that the binary, started again as the engine's child, becomes the
// engine instead of running the tests.
package enginetest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/kyomi/collector/sink/engine"
)

// launcherEnv marks a test binary started as the engine's launcher.
const launcherEnv = "KYOMI_ENGINETEST_LAUNCHER"

// RunLauncher runs the engine and exits when this process was started as a launcher by Start;
// otherwise it returns at once. Call it first in TestMain.
func RunLauncher() {
	if os.Getenv(launcherEnv) == "1" {
		os.Exit(engine.Main(os.Args[1:], os.Stderr))
	}
}

// Server is a ClickHouse server for tests.
type Server struct {
	// Native and HTTP are the host:port of the native protocol and the HTTP interface.
	Native, HTTP string
	// User and Password log in.
	User, Password string
	// Engine is the supervised engine, nil for an external server.
	Engine *engine.Engine
	dir    string
}

// Options tunes Start.
type Options struct {
	// ExtraConfig is XML added to the engine's configuration (remote_servers, for example).
	ExtraConfig string
	// Local starts an engine even when CLICKHOUSE_ADDR is set.
	Local bool
	// TCPPort and HTTPPort fix the ports (a cluster's configuration names them before its
	// servers start); 0 picks free ones.
	TCPPort, HTTPPort int
	// MaxRestartWait bounds the supervisor's wait before a restart (engine.Config); 0 keeps
	// the default.
	MaxRestartWait time.Duration
}

// Start starts a server. With CLICKHOUSE_ADDR set (host:port of a native listener; the user and
// password in CLICKHOUSE_USER and CLICKHOUSE_PASSWORD, default "default" and none; the HTTP port
// in CLICKHOUSE_HTTP_PORT, default: asked of the server) it returns that server instead, unless
// o.Local. Stop the server with Close.
func Start(o Options) (*Server, error) {
	if addr := os.Getenv("CLICKHOUSE_ADDR"); addr != "" && !o.Local {
		s := &Server{Native: addr, User: os.Getenv("CLICKHOUSE_USER"), Password: os.Getenv("CLICKHOUSE_PASSWORD")}
		if s.User == "" {
			s.User = "default"
		}
		if p := os.Getenv("CLICKHOUSE_HTTP_PORT"); p != "" {
			host, _, _ := net.SplitHostPort(addr)
			s.HTTP = net.JoinHostPort(host, p)
		}
		return s, nil
	}
	dir, err := os.MkdirTemp("", "enginetest-")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e, err := engine.Start(ctx, engine.Config{
		Dir:            filepath.Join(dir, "engine"),
		DataPath:       filepath.Join(dir, "clickhouse"),
		TCPPort:        o.TCPPort,
		HTTPPort:       o.HTTPPort,
		Credentials:    engine.Credentials{User: "kyomi", Password: "test-password"},
		Command:        []string{os.Args[0]},
		Env:            []string{launcherEnv + "=1"},
		ExtraConfig:    o.ExtraConfig,
		MaxRestartWait: o.MaxRestartWait,
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cannot start a ClickHouse server for the tests: %w", err)
	}
	c := e.Credentials()
	return &Server{Native: e.NativeAddr(), HTTP: e.HTTPAddr(), User: c.User, Password: c.Password, Engine: e, dir: dir}, nil
}

// DSN is the clickhouse:// DSN of the server for database db, with the HTTP port when known.
func (s *Server) DSN(db string) string {
	u := url.URL{Scheme: "clickhouse", Host: s.Native, Path: "/" + db}
	if s.Password != "" {
		u.User = url.UserPassword(s.User, s.Password)
	} else {
		u.User = url.User(s.User)
	}
	q := url.Values{"dial_timeout": {"5s"}}
	if s.HTTP != "" {
		_, p, _ := net.SplitHostPort(s.HTTP)
		q.Set("http_port", p)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Close stops a started engine and removes its directory (kept, with the engine's log, when
// ENGINETEST_KEEP is set); for an external server it does nothing.
func (s *Server) Close() {
	if s.Engine != nil {
		s.Engine.Stop()
		if os.Getenv("ENGINETEST_KEEP") == "" {
			os.RemoveAll(s.dir)
		} else {
			fmt.Fprintln(os.Stderr, "enginetest: kept", s.dir)
		}
	}
}
