package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config says how to run one engine. Dir, DataPath, Command and Credentials are required; a zero
// field of the others takes its value from DefaultConfig. Start refuses a Config that Validate
// refuses.
type Config struct {
	// Dir holds the engine's files: config.xml, users.xml, engine.log (its stderr) and
	// engine.pid. Created 0700.
	Dir string
	// DataPath is the ClickHouse data directory (--path). Created 0700.
	DataPath string
	// Host is the address the listeners bind.
	Host string
	// TCPPort and HTTPPort are the native and HTTP ports; 0 picks free ones (FreePorts).
	TCPPort, HTTPPort int
	// Credentials is the only user clients can log in as.
	Credentials Credentials
	// Command is the launcher: the program and its leading arguments, to which the engine's
	// flags are appended (for the collector: its own executable and "engine"). It must end in
	// a call of Main.
	Command []string
	// Env is added to the launcher's environment.
	Env []string
	// ExtraConfig is XML inserted into the engine's <clickhouse> configuration element
	// (remote_servers, for example).
	ExtraConfig string
	// StartTimeout bounds each start until the engine answers.
	StartTimeout time.Duration
	// MinRestartWait and MaxRestartWait bound the wait before the engine is started again
	// after it died: MinRestartWait after an engine that ran for 10 s or more, doubling up to
	// MaxRestartWait while it keeps dying sooner (a port taken, a broken data directory).
	MinRestartWait, MaxRestartWait time.Duration
	// Logger receives the supervisor's messages; nil discards them.
	Logger *slog.Logger
	// Registerer, when set, gets collector_engine_up and collector_engine_restarts_total.
	Registerer prometheus.Registerer
}

// Engine is a running engine and its supervisor: when the child dies, it is started again on
// the same ports (see Config.MinRestartWait). Its methods are safe for concurrent use.
type Engine struct {
	cfg      Config
	log      *slog.Logger
	client   *http.Client
	up       atomic.Bool
	restarts atomic.Int64
	pid      atomic.Int64

	mu      sync.Mutex
	stopped bool
	cur     *exec.Cmd
	stop    chan struct{}
	done    chan struct{}
}

// Start writes the engine's configuration into cfg.Dir, stops an engine a crashed supervisor
// left running on the same files (its pid is in engine.pid), starts the launcher and returns once
// the engine answers queries with the credentials. From then on the engine is supervised until
// Stop.
func Start(ctx context.Context, cfg Config) (*Engine, error) {
	if err := cfg.prepare(); err != nil {
		return nil, err
	}
	e := &Engine{
		cfg: cfg, log: cfg.Logger,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		stop:   make(chan struct{}), done: make(chan struct{}),
	}
	if err := killStale(filepath.Join(cfg.Dir, "engine.pid"), cfg.DataPath); err != nil {
		return nil, err
	}
	exited, err := e.launch(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.Registerer != nil {
		err := registerOnce(cfg.Registerer,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "collector_engine_up",
				Help: "1 while the managed ClickHouse engine answers, 0 while it is down or restarting (events wait in the spool).",
			}, func() float64 {
				if e.up.Load() {
					return 1
				}
				return 0
			}),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "collector_engine_restarts_total",
				Help: "Times the managed ClickHouse engine died and was started again.",
			}, func() float64 { return float64(e.restarts.Load()) }))
		if err != nil {
			e.terminate(exited)
			return nil, err
		}
	}
	go e.supervise(exited)
	return e, nil
}

func registerOnce(r prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("cannot register engine metrics: %w", err)
		}
	}
	return nil
}

// DefaultConfig holds the defaults of the fields a caller may leave zero.
var DefaultConfig = Config{
	// Loopback only: the engine has one user whose password sits in the data directory, and
	// nothing but the collector (and an operator's tools on the host) should reach it.
	Host: "127.0.0.1",
	// 2 minutes: the library's load and the tables' attach take about a second on an idle
	// machine, far longer on a loaded one with many parts to attach.
	StartTimeout: 2 * time.Minute,
	// 250ms: an engine killed once is back almost at once; events wait in the spool meanwhile.
	MinRestartWait: 250 * time.Millisecond,
	// 30s: an engine that keeps dying (a port taken, a broken data directory) costs one start
	// and one log line every 30 s, not a busy loop.
	MaxRestartWait: 30 * time.Second,
}

// Validate reports every missing or invalid field of c.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		name    string
		missing bool
	}{{"Dir", c.Dir == ""}, {"DataPath", c.DataPath == ""}, {"Command", len(c.Command) == 0}} {
		if f.missing {
			errs = append(errs, fmt.Errorf("engine.Config.%s is required", f.name))
		}
	}
	if !validUser(c.Credentials.User) || c.Credentials.Password == "" {
		errs = append(errs, errors.New("engine.Config.Credentials need a user (letters, digits, '_', not default) and a password"))
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"TCPPort", c.TCPPort}, {"HTTPPort", c.HTTPPort}} {
		if p.v < 0 || p.v > 65535 {
			errs = append(errs, fmt.Errorf("engine.Config.%s must be between 0 and 65535, got %d", p.name, p.v))
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"StartTimeout", c.StartTimeout}, {"MinRestartWait", c.MinRestartWait}, {"MaxRestartWait", c.MaxRestartWait}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("engine.Config.%s must be >= 0 (0 takes the default), got %s", f.name, f.v))
		}
	}
	if d := c.withDefaults(); d.MaxRestartWait < d.MinRestartWait {
		errs = append(errs, fmt.Errorf("engine.Config.MaxRestartWait %s must not be below MinRestartWait %s", d.MaxRestartWait, d.MinRestartWait))
	}
	return errors.Join(errs...)
}

// withDefaults fills every zero field that has a default from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig
	if c.Host == "" {
		c.Host = d.Host
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = d.StartTimeout
	}
	if c.MinRestartWait == 0 {
		c.MinRestartWait = d.MinRestartWait
	}
	if c.MaxRestartWait == 0 {
		c.MaxRestartWait = d.MaxRestartWait
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// prepare validates c, fills its defaults and writes the engine's configuration files.
func (c *Config) prepare() error {
	if err := c.Validate(); err != nil {
		return err
	}
	*c = c.withDefaults()
	var err error
	if c.Dir, err = filepath.Abs(c.Dir); err != nil {
		return fmt.Errorf("cannot resolve the engine directory: %w", err)
	}
	if c.DataPath, err = filepath.Abs(c.DataPath); err != nil {
		return fmt.Errorf("cannot resolve the engine data directory: %w", err)
	}
	for _, d := range []string{c.Dir, c.DataPath} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("cannot create %s: %w", d, err)
		}
	}
	if c.TCPPort == 0 || c.HTTPPort == 0 {
		ports, err := FreePorts(c.Host, 2)
		if err != nil {
			return err
		}
		c.TCPPort, c.HTTPPort = ports[0], ports[1]
	}
	users := filepath.Join(c.Dir, "users.xml")
	if err := writeFile(users, usersXML(c.Credentials)); err != nil {
		return err
	}
	return writeFile(filepath.Join(c.Dir, "config.xml"), configXML(users, c.ExtraConfig))
}

func writeFile(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}

// NativeAddr is the host:port of the native protocol listener.
func (e *Engine) NativeAddr() string {
	return net.JoinHostPort(e.cfg.Host, strconv.Itoa(e.cfg.TCPPort))
}

// HTTPAddr is the host:port of the HTTP interface.
func (e *Engine) HTTPAddr() string {
	return net.JoinHostPort(e.cfg.Host, strconv.Itoa(e.cfg.HTTPPort))
}

// Credentials is the user clients log in as.
func (e *Engine) Credentials() Credentials { return e.cfg.Credentials }

// DSN is the clickhouse:// DSN of the engine for database db, with its HTTP port (the server
// store's path; see sink.OpenServer).
func (e *Engine) DSN(db string) string {
	u := url.URL{Scheme: "clickhouse", User: url.UserPassword(e.cfg.Credentials.User, e.cfg.Credentials.Password),
		Host: e.NativeAddr(), Path: "/" + db, RawQuery: "http_port=" + strconv.Itoa(e.cfg.HTTPPort)}
	return u.String()
}

// Up reports whether the engine answered at its last start and has not died since.
func (e *Engine) Up() bool { return e.up.Load() }

// Restarts is how many times the engine died and was started again.
func (e *Engine) Restarts() int64 { return e.restarts.Load() }

// PID is the process id of the running launcher, 0 while none runs.
func (e *Engine) PID() int { return int(e.pid.Load()) }

// launch starts the child and waits until it answers. exited is closed when the child ends.
func (e *Engine) launch(ctx context.Context) (chan error, error) {
	c := e.cfg
	logf, err := os.OpenFile(filepath.Join(c.Dir, "engine.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot open the engine log: %w", err)
	}
	if st, err := logf.Stat(); err == nil && st.Size() > 16<<20 { // keep the log bounded: restart it
		_ = logf.Truncate(0)
	}
	args := append(append([]string{}, c.Command[1:]...),
		"-path", c.DataPath, "-config", filepath.Join(c.Dir, "config.xml"), "-listen-host", c.Host,
		"-tcp-port", strconv.Itoa(c.TCPPort), "-http-port", strconv.Itoa(c.HTTPPort))
	cmd := exec.Command(c.Command[0], args...)
	cmd.Env = append(os.Environ(), c.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = c.Dir
	// The kernel kills the engine when the thread that started it ends, which is meant as "when
	// the collector dies" (no orphan holds the data directory and the ports). Go ends threads
	// of its own accord, so the start and the wait run on one locked thread that lives exactly
	// as long as the child.
	cmd.SysProcAttr = childAttr()
	started := make(chan error, 1)
	// exited is this launch's own: the goroutine below closes it after the function returned,
	// so it must not be a result variable that a return assigns.
	exited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		e.pid.Store(int64(cmd.Process.Pid))
		e.mu.Lock()
		e.cur = cmd
		e.mu.Unlock()
		_ = writeFile(filepath.Join(c.Dir, "engine.pid"), strconv.Itoa(cmd.Process.Pid)+"\n")
		started <- nil
		err := cmd.Wait()
		e.pid.Store(0)
		e.up.Store(false)
		logf.Close()
		exited <- err
		close(exited)
	}()
	if err := <-started; err != nil {
		logf.Close()
		return nil, fmt.Errorf("cannot start the engine launcher %s: %w", c.Command[0], err)
	}
	if err := e.waitReady(ctx, exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return nil, err
	}
	e.up.Store(true)
	return exited, nil
}

// waitReady polls the engine until it answers a query on both listeners, the child ends or the
// start timeout passes.
func (e *Engine) waitReady(ctx context.Context, exited chan error) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.StartTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("engine exited while starting (%v); its log: %s", err, e.logTail())
		case <-ctx.Done():
			return fmt.Errorf("engine did not answer within %s (%v); its log: %s", e.cfg.StartTimeout, last, e.logTail())
		case <-tick.C:
		}
		if last = e.ping(ctx); last == nil {
			return nil
		}
	}
}

// ping runs SELECT 1 over HTTP with the credentials and checks the native port accepts.
func (e *Engine) ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.HTTPAddr()+"/?query=SELECT%201", nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(e.cfg.Credentials.User, e.cfg.Credentials.Password)
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "1" {
		return fmt.Errorf("engine answered %d", resp.StatusCode)
	}
	conn, err := net.DialTimeout("tcp", e.NativeAddr(), time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}

// logTail is the end of the engine's log, for start errors.
func (e *Engine) logTail() string {
	b, err := os.ReadFile(filepath.Join(e.cfg.Dir, "engine.log"))
	if err != nil {
		return "(unreadable)"
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return strings.TrimSpace(string(b))
}

func (e *Engine) supervise(exited chan error) {
	defer close(e.done)
	wait := e.cfg.MinRestartWait
	for {
		startedAt := time.Now()
		var err error
		select {
		case err = <-exited:
		case <-e.stop:
			e.terminate(exited)
			return
		}
		e.restarts.Add(1)
		if time.Since(startedAt) >= 10*time.Second {
			wait = e.cfg.MinRestartWait
		}
		e.log.Warn("managed ClickHouse engine exited; starting it again", "err", fmt.Sprint(err), "wait", wait.String())
		for {
			t := time.NewTimer(wait)
			select {
			case <-e.stop:
				t.Stop()
				return
			case <-t.C:
			}
			wait = min(2*wait, e.cfg.MaxRestartWait)
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-e.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			exited, err = e.launch(ctx)
			cancel()
			if err == nil {
				e.log.Info("managed ClickHouse engine started again", "restarts", e.restarts.Load())
				break
			}
			e.log.Error("managed ClickHouse engine failed to start", "err", err)
		}
	}
}

// terminate ends the current child: SIGTERM, then SIGKILL after 10 s.
func (e *Engine) terminate(exited chan error) {
	e.mu.Lock()
	cmd := e.cur
	e.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	_ = os.Remove(filepath.Join(e.cfg.Dir, "engine.pid"))
}

// Stop stops supervising and ends the engine; it returns once the child has exited. Calling it
// twice is safe.
func (e *Engine) Stop() {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		<-e.done
		return
	}
	e.stopped = true
	close(e.stop)
	e.mu.Unlock()
	<-e.done
}

// killStale ends an engine left running by a supervisor that crashed (the kernel normally
// kills it with its parent; this covers a parent that died before the tie was made). Only a
// process whose command line names dataPath is killed.
func killStale(pidFile, dataPath string) error {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return nil
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	switch {
	case err != nil:
		return nil // gone
	case len(cmdline) == 0:
		// No memory left: a process exiting, perhaps the engine still releasing the data
		// directory's lock while threads caught in system calls end. Wait for it below.
	case !strings.Contains(string(cmdline), "\x00"+dataPath+"\x00"):
		return nil // the pid is another program's now
	default:
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for range 200 {
		if !ProcessRunning(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("cannot stop the engine left running as process %d", pid)
}

// ProcessRunning reports whether process pid runs: it exists and is not a zombie (dead, not yet
// reaped by its parent). A zombie thread-group leader whose other threads are still being torn
// down (SIGKILL reaches a thread in a system call, an fsync say, only when it returns) still
// holds the process's files and locks, the engine's data directory lock among them, so it counts
// as running until its last thread is gone. Linux only: it reads /proc; elsewhere it reports
// false.
func ProcessRunning(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name in parentheses may hold anything
	if i < 0 || i+2 >= len(s) || s[i+2] != 'Z' {
		return true
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	return err == nil && len(tasks) > 1
}

// FreePorts returns n distinct TCP ports on host that were free a moment ago (the kernel's
// choice for port 0). Another process may take one before the engine binds it; the engine then
// fails to start, with the reason in its log.
func FreePorts(host string, n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("cannot find a free port on %s: %w", host, err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
