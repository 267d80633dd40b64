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
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kyomi/collector/sink/engine"
)

// launcherEnv marks a test binary started as the engine's launcher.
const launcherEnv = "KYOMI_ENGINETEST_LAUNCHER"

// testUser and testPassword log in to every engine Start starts.
const (
	testUser     = "kyomi"
	testPassword = "test-password"
)

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
	dir    string // removed by Close; empty when Options.Dir keeps it
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
	// Dir holds the engine's files (Dir/engine) and data (Dir/clickhouse), which Close keeps, so
	// that a later Start on the same Dir, in this process or another, finds the data again;
	// empty: a fresh temporary directory, removed by Close.
	Dir string
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
	dir, temp := o.Dir, o.Dir == ""
	if temp {
		var err error
		if dir, err = os.MkdirTemp("", "enginetest-"); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e, err := engine.Start(ctx, engine.Config{
		Dir:            filepath.Join(dir, "engine"),
		DataPath:       filepath.Join(dir, "clickhouse"),
		TCPPort:        o.TCPPort,
		HTTPPort:       o.HTTPPort,
		Credentials:    engine.Credentials{User: testUser, Password: testPassword},
		Command:        []string{os.Args[0]},
		Env:            []string{launcherEnv + "=1"},
		ExtraConfig:    o.ExtraConfig,
		MaxRestartWait: o.MaxRestartWait,
	})
	if err != nil {
		if temp {
			os.RemoveAll(dir)
		}
		return nil, fmt.Errorf("cannot start a ClickHouse server for the tests: %w", err)
	}
	c := e.Credentials()
	s := &Server{Native: e.NativeAddr(), HTTP: e.HTTPAddr(), User: c.User, Password: c.Password, Engine: e}
	if temp {
		s.dir = dir
	}
	return s, nil
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

// Close stops a started engine and removes its temporary directory (kept, with the engine's log,
// when ENGINETEST_KEEP is set; never removed with Options.Dir); for an external server it does
// nothing.
func (s *Server) Close() {
	if s.Engine != nil {
		s.Engine.Stop()
		if s.dir == "" {
			return
		}
		if os.Getenv("ENGINETEST_KEEP") == "" {
			os.RemoveAll(s.dir)
		} else {
			fmt.Fprintln(os.Stderr, "enginetest: kept", s.dir)
		}
	}
}

// Cluster is a cluster of local servers started by StartCluster: each server is one shard of
// one replica, and every server's remote_servers names them all under Name.
type Cluster struct {
	// Name is the cluster's name in remote_servers.
	Name string
	// Shards are the servers, in the order of their shards.
	Shards []*Server
}

// StartCluster starts n local servers that form the cluster name, on free loopback ports. It
// ignores CLICKHOUSE_ADDR: an external server cannot be named in the remote_servers of servers
// started here. Stop them with Close.
func StartCluster(name string, n int) (*Cluster, error) {
	if n < 1 {
		return nil, errors.New("cannot start a cluster of no server")
	}
	// The configuration names every shard's native port, so the ports are chosen before the
	// servers start.
	ports, err := engine.FreePorts("127.0.0.1", 2*n)
	if err != nil {
		return nil, fmt.Errorf("cannot choose the ports of cluster %s: %w", name, err)
	}
	var remote strings.Builder
	fmt.Fprintf(&remote, "<remote_servers><%s>", name)
	for i := range n {
		fmt.Fprintf(&remote, "<shard><replica><host>127.0.0.1</host><port>%d</port><user>%s</user><password>%s</password></replica></shard>",
			ports[2*i], testUser, testPassword)
	}
	fmt.Fprintf(&remote, "</%s></remote_servers>", name)
	c := &Cluster{Name: name}
	for i := range n {
		s, err := Start(Options{Local: true, TCPPort: ports[2*i], HTTPPort: ports[2*i+1], ExtraConfig: remote.String()})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("cannot start shard %d of cluster %s: %w", i+1, name, err)
		}
		c.Shards = append(c.Shards, s)
	}
	return c, nil
}

// StartOperatorCluster is StartCluster with the schema an operator makes by hand where
// ReplicatedMergeTree cannot run, laid out on every shard: the database db, a MergeTree table
// db.events_local made by the CREATE TABLE IF NOT EXISTS of db.events among migrations (the
// single-server migrations, sink.MigrationSQL, renamed), and a Distributed db.events over every
// shard's events_local, sharded by cityHash64(workspace_id).
func StartOperatorCluster(name string, n int, db string, migrations []string) (*Cluster, error) {
	c, err := StartCluster(name, n)
	if err != nil {
		return nil, err
	}
	layout, err := c.operatorSchema(db, migrations)
	if err != nil {
		c.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, s := range c.Shards {
		for _, q := range layout {
			if err := s.exec(ctx, q); err != nil {
				c.Close()
				return nil, fmt.Errorf("cannot lay out shard %d of cluster %s: %w", i+1, name, err)
			}
		}
	}
	return c, nil
}

// operatorSchema returns the statements that lay out, on one shard, the schema an operator makes
// by hand for this cluster where ReplicatedMergeTree cannot run: the database db, a MergeTree
// table db.events_local made by the CREATE TABLE IF NOT EXISTS of db.events among migrations
// (the single-server migrations, sink.MigrationSQL, renamed), and a Distributed db.events over
// every shard's events_local, sharded by cityHash64(workspace_id). Run them on every shard.
func (c *Cluster) operatorSchema(db string, migrations []string) ([]string, error) {
	head := "CREATE TABLE IF NOT EXISTS " + db + ".events\n"
	var eventsDDL string
	for _, q := range migrations {
		if strings.HasPrefix(q, head) {
			eventsDDL = q
		}
	}
	if eventsDDL == "" {
		return nil, fmt.Errorf("cannot lay out the cluster schema: no statement of the migrations starts with %q", head)
	}
	return []string{
		"CREATE DATABASE IF NOT EXISTS " + db,
		strings.Replace(eventsDDL, db+".events\n", db+".events_local\n", 1),
		"CREATE TABLE IF NOT EXISTS " + db + ".events AS " + db + ".events_local ENGINE = Distributed('" + c.Name + "', '" +
			db + "', 'events_local', cityHash64(workspace_id))",
	}, nil
}

// Close stops every server of the cluster.
func (c *Cluster) Close() {
	for _, s := range c.Shards {
		s.Close()
	}
}

// exec runs one statement on the server over its HTTP interface.
func (s *Server) exec(ctx context.Context, q string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.HTTP+"/", strings.NewReader(q))
	if err != nil {
		return err
	}
	req.SetBasicAuth(s.User, s.Password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
