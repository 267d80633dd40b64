// Package retention keeps the retention of stored rows equal to their
// workspace's tier while the collector runs: the mechanism behind DESIGN 3.4's
// "changing a workspace's tier changes the retention of its existing rows too".
package retention

import (
	"context"
	"log/slog"
	"time"

	"github.com/kyomi/collector/collector/workspace"
	"github.com/kyomi/collector/sink"
	"github.com/prometheus/client_golang/prometheus"
)

// Keeper keeps the retention_days of stored rows equal to their workspace's tier. A row
// takes its retention from the tier at ingest; when a reload moves a workspace to another tier,
// its existing rows are changed by one ALTER TABLE ... UPDATE mutation (sink.ApplyRetention),
// which the keeper then follows in system.mutations until it is done.
//
// It checks every workspace at start, after each configuration change and once per interval. The
// check after a change waits settle first, so that events accepted under the old tier have been
// flushed before the mutation is issued; the periodic check catches rows that reach the store
// later still (a spool replayed after a sink outage).
type Keeper struct {
	store    sink.Store
	registry *workspace.Registry
	log      *slog.Logger
	settle   time.Duration // wait after a change before checking
	interval time.Duration // periodic check
	poll     time.Duration // system.mutations polling

	kick    chan struct{}
	pending prometheus.Gauge
	issued  prometheus.Counter
	errors  prometheus.Counter
}

// NewKeeper registers the keeper's metrics on reg and follows registry's
// changes. settle is the wait after a change before the check (two batch ages
// and a second in serve: events accepted under the old tier are flushed by
// then). Call Run to start it.
func NewKeeper(store sink.Store, registry *workspace.Registry, log *slog.Logger, reg prometheus.Registerer, settle time.Duration) *Keeper {
	k := &Keeper{
		store: store, registry: registry, log: log,
		settle: settle, interval: time.Hour, poll: time.Second,
		kick: make(chan struct{}, 1),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "collector_retention_mutations_pending",
			Help: "Retention mutations (tier changes applied to stored rows) issued or found running and not yet done.",
		}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_retention_mutations_issued_total",
			Help: "Retention mutations issued because a workspace's stored rows carried another retention than its tier.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "collector_retention_errors_total",
			Help: "Retention checks or mutation waits that failed (retried at the next check).",
		}),
	}
	reg.MustRegister(k.pending, k.issued, k.errors)
	registry.OnChange(func(old, new *workspace.Snapshot) {
		if changed(old, new) {
			select {
			case k.kick <- struct{}{}:
			default: // a check is already due
			}
		}
	})
	return k
}

// changed reports whether some workspace of new has another retention than in old (or is
// new): only then can stored rows need a mutation.
func changed(old, new *workspace.Snapshot) bool {
	if old == nil {
		return true
	}
	before := make(map[string]uint16, old.Len())
	for _, w := range old.Workspaces() {
		before[w.ID] = w.RetentionDays
	}
	for _, w := range new.Workspaces() {
		if d, ok := before[w.ID]; !ok || d != w.RetentionDays {
			return true
		}
	}
	return false
}

// Run checks at start, after each change and every interval, until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	tick := time.NewTicker(k.interval)
	defer tick.Stop()
	k.check(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-k.kick:
			select {
			case <-ctx.Done():
				return
			case <-time.After(k.settle):
			}
		}
		k.check(ctx)
	}
}

// check applies the tiers in force to the stored rows and waits for the mutations it issued or
// found running. Waiting blocks further checks, which is what we want: one mutation per workspace
// and tier, never a pile of them.
func (k *Keeper) check(ctx context.Context) {
	days := make(map[string]uint16)
	for _, w := range k.registry.Snapshot().Workspaces() {
		days[w.ID] = w.RetentionDays
	}
	actions, err := sink.ApplyRetention(ctx, k.store, days)
	var ids []string
	for _, a := range actions {
		switch a.Outcome {
		case sink.RetentionIssued:
			k.issued.Inc()
			k.log.Info("retention mutation issued: the workspace's stored rows move to its tier's retention",
				"workspace", a.WorkspaceID, "retention_days", a.Days, "mutation", a.MutationID)
			ids = append(ids, a.MutationID)
		case sink.RetentionRunning:
			ids = append(ids, a.MutationID)
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			k.errors.Inc()
			k.log.Error("retention check failed; retried at the next check", "err", err)
		}
	}
	if len(ids) == 0 {
		return
	}
	k.pending.Set(float64(len(ids)))
	defer k.pending.Set(0)
	started := time.Now()
	wctx, cancel := context.WithTimeout(ctx, k.interval)
	defer cancel()
	if err := sink.WaitMutations(wctx, k.store, ids, k.poll); err != nil {
		if ctx.Err() == nil {
			k.errors.Inc()
			k.log.Error("retention mutations not done; checked again later", "err", err)
		}
		return
	}
	k.log.Info("retention mutations done", "mutations", len(ids), "seconds", time.Since(started).Seconds())
}
