package workspace

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RegistryConfig configures a Registry. Every field is optional and every value is valid, so it
// has no Validate: a zero PollInterval takes DefaultRegistryConfig's, a negative one disables
// polling.
type RegistryConfig struct {
	Logger       *slog.Logger          // reload results; nil discards
	Registerer   prometheus.Registerer // reload metrics; nil registers nothing
	PollInterval time.Duration         // how often the file is checked for changes; < 0 disables polling
}

// DefaultRegistryConfig is the registry the collector runs with.
var DefaultRegistryConfig = RegistryConfig{
	// A second keeps an edited file in force quickly while the check (stat, read and hash of a
	// small file) costs nothing.
	PollInterval: time.Second,
}

// Registry holds the workspaces file in force and reloads it on Reload (the caller wires SIGHUP)
// and when the file's content changes. Lookups read an immutable snapshot through an atomic
// pointer: they take no lock and do not allocate. A file that fails validation leaves the previous
// snapshot in force; its errors are logged once per distinct content. Registry is safe for
// concurrent use.
type Registry struct {
	path string
	log  *slog.Logger
	cur  atomic.Pointer[Snapshot]

	mu        sync.Mutex // serialises reloads and guards the fields below
	hash      [32]byte   // content hash of the snapshot in force
	badHash   [32]byte   // content hash of the last rejected file, to log it once
	onChange  []func(old, new *Snapshot)
	reloadsOK prometheus.Counter
	reloadsKO prometheus.Counter
	lastOK    prometheus.Gauge
	count     prometheus.Gauge
	checks    prometheus.Counter

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Open loads the workspaces file at path (failing with every validation error when it is invalid)
// and starts watching it. Close stops the watcher.
func Open(path string, cfg RegistryConfig) (*Registry, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("invalid workspaces file %s: %w", path, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "collector_config_reloads_total",
		Help: "Reloads of the workspaces file by result (success, failure); a failure keeps the previous configuration.",
	}, []string{"result"})
	r := &Registry{
		path:      path,
		log:       log,
		hash:      sha256.Sum256(data),
		reloadsOK: reloads.WithLabelValues("success"),
		reloadsKO: reloads.WithLabelValues("failure"),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "collector_config_last_reload_success",
			Help: "1 when the last attempt to load the workspaces file succeeded, 0 when it failed.",
		}),
		count: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "collector_config_workspaces",
			Help: "Workspaces in the configuration in force.",
		}),
		checks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_config_checks_total",
			Help: "Checks of the workspaces file for a change, by polling or an explicit reload; it rises while the watcher is alive.",
		}),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{reloads, r.lastOK, r.count, r.checks} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("cannot register workspace registry metrics: %w", err)
			}
		}
	}
	r.lastOK.Set(1)
	r.count.Set(float64(s.Len()))
	r.cur.Store(s)

	interval := cfg.PollInterval
	if interval == 0 {
		interval = DefaultRegistryConfig.PollInterval
	}
	if interval < 0 {
		close(r.done)
		return r, nil
	}
	go r.watch(interval)
	return r, nil
}

// Lookup returns the workspace that owns domain in the configuration in force (normalised first;
// a leading www. matches as described in the package documentation).
func (r *Registry) Lookup(domain string) (Workspace, bool) { return r.cur.Load().Lookup(domain) }

// Match returns the workspace that owns domain and the configured domain that matched, without
// allocating. The *Workspace belongs to the snapshot in force at the call and is immutable.
func (r *Registry) Match(domain string) (*Workspace, string, bool) { return r.cur.Load().Match(domain) }

// Snapshot returns the configuration in force.
func (r *Registry) Snapshot() *Snapshot { return r.cur.Load() }

// Len returns the number of workspaces in force.
func (r *Registry) Len() int { return r.cur.Load().Len() }

// OnChange registers fn to run after every reload that put a new configuration in force, with
// the previous and the new snapshot. Callbacks run on the reloading goroutine, one at a time, in
// registration order; they must not call Reload.
func (r *Registry) OnChange(fn func(old, new *Snapshot)) {
	r.mu.Lock()
	r.onChange = append(r.onChange, fn)
	r.mu.Unlock()
}

// Reload reads the file now and puts it in force when it is valid. It returns the validation error
// (the previous configuration stays in force) or nil. An unchanged file is a successful no-op.
func (r *Registry) Reload() error { return r.reload(true) }

// reload reloads the file. explicit reloads (SIGHUP) always count and log; polling counts and logs
// only when the content changed since the last attempt. Every call counts one check, once its
// outcome is counted and logged.
func (r *Registry) reload(explicit bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.checks.Inc()
	data, err := readFile(r.path)
	if err != nil {
		if explicit {
			r.fail(err)
		} else {
			r.noteReadError(err)
		}
		return err
	}
	h := sha256.Sum256(data)
	if h == r.hash {
		if explicit {
			r.reloadsOK.Inc()
			r.lastOK.Set(1)
		}
		return nil
	}
	if !explicit && h == r.badHash {
		return nil // already reported
	}
	s, err := Parse(data)
	if err != nil {
		r.badHash = h
		err = fmt.Errorf("invalid workspaces file %s: %w", r.path, err)
		r.fail(err)
		return err
	}
	old := r.cur.Swap(s)
	r.hash = h
	r.badHash = [32]byte{}
	r.reloadsOK.Inc()
	r.lastOK.Set(1)
	r.count.Set(float64(s.Len()))
	r.log.Info("workspaces file reloaded", "path", r.path, "workspaces", s.Len())
	for _, fn := range r.onChange {
		fn(old, s)
	}
	return nil
}

func (r *Registry) fail(err error) {
	r.reloadsKO.Inc()
	r.lastOK.Set(0)
	r.log.Error("workspaces file rejected; the previous configuration stays in force", "path", r.path, "err", err)
}

// watch polls the file until Close. Reading and hashing the whole file (not only mtime and size)
// also catches an edit within the file system's timestamp granularity.
func (r *Registry) watch(interval time.Duration) {
	defer close(r.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			// Errors were counted and logged (once per distinct content) by reload; a missing
			// file (an editor's rename-and-replace) is retried on the next tick.
			_ = r.reload(false)
		}
	}
}

// noteReadError reports a read failure during polling once until the file is readable again.
func (r *Registry) noteReadError(err error) {
	marker := sha256.Sum256([]byte("read-error:" + err.Error()))
	if marker == r.badHash {
		return
	}
	r.badHash = marker
	r.fail(err)
}

// Close stops watching the file. Lookups keep working on the configuration in force.
func (r *Registry) Close() error {
	r.once.Do(func() {
		select {
		case <-r.done:
		default:
			close(r.stop)
		}
	})
	<-r.done
	return nil
}
