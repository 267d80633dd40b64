package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Layout of a collector data directory's managed engine: the engine's files in
// <data-dir>/engine (credentials, addresses, config.xml, users.xml, engine.log, engine.pid), its
// data in <data-dir>/clickhouse (where the collector's former in-process engine kept it, so data
// of that time stays).
const (
	managedDir      = "engine"
	managedData     = "clickhouse"
	credentialsFile = "credentials"
	addressesFile   = "addresses"
)

// derived ports: pairs (native, HTTP) in [portBase, portBase+2*portSlots), below Linux's
// ephemeral range (32768 and up), so a port the kernel hands to an outgoing connection does not
// take the engine's.
const (
	portBase  = 20000
	portSlots = 6000
)

// Ports pins the managed engine's loopback ports, for clients that need fixed ones (Grafana's
// ClickHouse data source). Zero ports are chosen by Managed.
type Ports struct{ Native, HTTP int }

// Managed returns the Config of the managed engine of the collector data directory dataDir,
// started with command (the collector's own executable and "engine"). The credentials come from
// <data-dir>/engine/credentials, made once. Pinned ports (both set) are used as they are, and a
// pinned port that is taken is an error. Otherwise the ports are those <data-dir>/engine/addresses
// records when they are free, else the first free pair from a slot derived from the directory's
// absolute path: two collectors with different data directories start from different slots, and
// one that finds its slot taken moves on to the next, so they never share a port.
func Managed(dataDir string, command []string, pin Ports) (Config, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return Config{}, fmt.Errorf("cannot resolve the data directory: %w", err)
	}
	dir := filepath.Join(abs, managedDir)
	creds, err := LoadOrCreateCredentials(filepath.Join(dir, credentialsFile))
	if err != nil {
		return Config{}, err
	}
	c := Config{Dir: dir, DataPath: filepath.Join(abs, managedData), Host: "127.0.0.1", Credentials: creds, Command: command}
	if pin.Native != 0 || pin.HTTP != 0 {
		for _, p := range []int{pin.Native, pin.HTTP} {
			if !portFree(c.Host, p) {
				return Config{}, fmt.Errorf("cannot use the pinned engine port %d: it is taken on %s", p, c.Host)
			}
		}
		c.TCPPort, c.HTTPPort = pin.Native, pin.HTTP
		return c, nil
	}
	if tcp, http, ok := readAddresses(dir); ok && portFree(c.Host, tcp) && portFree(c.Host, http) {
		c.TCPPort, c.HTTPPort = tcp, http
		return c, nil
	}
	h := fnv.New32a()
	h.Write([]byte(abs))
	slot := int(h.Sum32() % portSlots)
	for i := range portSlots {
		p := portBase + 2*((slot+i)%portSlots)
		if portFree(c.Host, p) && portFree(c.Host, p+1) {
			c.TCPPort, c.HTTPPort = p, p+1
			return c, nil
		}
	}
	return Config{}, errors.New("cannot find two free loopback ports for the engine")
}

func portFree(host string, port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// RecordAddresses writes the engine's addresses into its directory's addresses file
// ("native host:port" and "http host:port" lines), where the next start and `collector sql`
// find them.
func (e *Engine) RecordAddresses() error {
	return writeFile(filepath.Join(e.cfg.Dir, addressesFile), "native "+e.NativeAddr()+"\nhttp "+e.HTTPAddr()+"\n")
}

// readAddresses reads the ports an addresses file records.
func readAddresses(dir string) (tcp, http int, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, addressesFile))
	if err != nil {
		return 0, 0, false
	}
	for line := range strings.Lines(string(b)) {
		kind, addr, _ := strings.Cut(strings.TrimSpace(line), " ")
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			continue
		}
		switch kind {
		case "native":
			tcp = n
		case "http":
			http = n
		}
	}
	return tcp, http, tcp > 0 && http > 0
}

// Running is the managed engine a collector serving from dataDir runs now: its DSN (with the
// HTTP port) when the addresses file names an engine that answers with the credentials, or ok
// false when none does.
func Running(ctx context.Context, dataDir, db string) (dsn string, ok bool) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return "", false
	}
	dir := filepath.Join(abs, managedDir)
	tcp, httpPort, ok := readAddresses(dir)
	if !ok {
		return "", false
	}
	creds, err := LoadCredentials(filepath.Join(dir, credentialsFile))
	if err != nil {
		return "", false
	}
	e := &Engine{cfg: Config{Host: "127.0.0.1", TCPPort: tcp, HTTPPort: httpPort, Credentials: creds},
		client: &http.Client{Timeout: 2 * time.Second}}
	if e.ping(ctx) != nil {
		return "", false
	}
	return e.DSN(db), true
}
