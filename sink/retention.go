package sink

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// target is where row mutations run: the table that stores the rows and,
// in cluster mode, the ON CLUSTER clause.
type target struct {
	table     string // "analytics.events" or "analytics.events_local"
	name      string // table name without the database, for system tables
	onCluster string
}

var distributedCluster = regexp.MustCompile(`^Distributed\('([^']+)'`)

// findTarget reads the layout from the database itself, so retention and
// erasure need no configuration: a Distributed analytics.events means
// cluster mode, and its first argument names the cluster.
func findTarget(ctx context.Context, s Store) (target, error) {
	res, err := s.Select(ctx, "SELECT engine, engine_full FROM system.tables WHERE database = '"+Database+"' AND name = 'events'", nil)
	if err != nil {
		return target{}, fmt.Errorf("cannot inspect %s.events: %w", Database, err)
	}
	if len(res.Rows) == 0 {
		return target{}, fmt.Errorf("cannot find %s.events: run the migrations first", Database)
	}
	engine, _ := res.Rows[0][0].(string)
	if engine != "Distributed" {
		return target{table: Database + ".events", name: "events"}, nil
	}
	full, _ := res.Rows[0][1].(string)
	m := distributedCluster.FindStringSubmatch(full)
	if m == nil {
		return target{}, fmt.Errorf("cannot read the cluster of %s.events from its engine", Database)
	}
	c := SchemaConfig{Cluster: m[1]}
	return target{table: c.dataTable(), name: "events_local", onCluster: c.onCluster()}, nil
}

// RetentionAction says what ApplyRetention did for one workspace.
type RetentionAction struct {
	WorkspaceID string
	Days        uint16
	// Outcome is "current" (every row already has Days), "running" (a
	// mutation setting Days is still running) or "issued".
	Outcome string
	// MutationID names the running or issued mutation in system.mutations.
	MutationID string
}

// Outcomes of ApplyRetention.
const (
	RetentionCurrent = "current"
	RetentionRunning = "running"
	RetentionIssued  = "issued"
)

type pendingMutation struct {
	id, command string
}

// ApplyRetention makes the stored rows of each workspace in days carry
// that workspace's retention, so that TTL deletes them on the new
// schedule. For a workspace whose rows need it, it issues ONE mutation
// `ALTER TABLE ... UPDATE retention_days = N WHERE workspace_id = X AND
// retention_days != N` and returns its id; a workspace whose matching
// mutation is still running is left alone, and one whose rows are current
// costs nothing. It does not wait: pass the issued ids to WaitMutations.
// Call it with the workspaces whose tier changed (or all of them after a
// restart; one aggregate query finds those that need work).
func ApplyRetention(ctx context.Context, s Store, days map[string]uint16) ([]RetentionAction, error) {
	if len(days) == 0 {
		return nil, nil
	}
	tg, err := findTarget(ctx, s)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(days))
	for id := range days {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	pending, err := runningMutations(ctx, s, tg)
	if err != nil {
		return nil, err
	}
	stale, err := staleWorkspaces(ctx, s, tg, ids, days)
	if err != nil {
		return nil, err
	}
	out := make([]RetentionAction, 0, len(ids))
	for _, id := range ids {
		d := days[id]
		a := RetentionAction{WorkspaceID: id, Days: d, Outcome: RetentionCurrent}
		if mid := findRetentionMutation(pending, id, d); mid != "" {
			a.Outcome, a.MutationID = RetentionRunning, mid
		} else if stale[id] {
			n := strconv.FormatUint(uint64(d), 10)
			q := "ALTER TABLE " + tg.table + tg.onCluster + " UPDATE retention_days = " + n +
				" WHERE workspace_id = " + QuoteString(id) + " AND retention_days != " + n +
				// Return at once (chDB defaults to mutations_sync = 1) and
				// track the mutation in system.mutations instead.
				" SETTINGS mutations_sync = 0"
			if err := s.Exec(ctx, q); err != nil {
				return out, fmt.Errorf("cannot change the retention of workspace %s to %d days: %w", id, d, err)
			}
			mid, err := latestMutation(ctx, s, tg, id, "retention_days = "+n)
			if err != nil {
				return out, err
			}
			a.Outcome, a.MutationID = RetentionIssued, mid
		}
		out = append(out, a)
	}
	return out, nil
}

// staleWorkspaces returns the workspaces among ids with rows whose
// retention differs from days, with one aggregate query.
func staleWorkspaces(ctx context.Context, s Store, tg target, ids []string, days map[string]uint16) (map[string]bool, error) {
	var in strings.Builder
	for i, id := range ids {
		if i > 0 {
			in.WriteString(", ")
		}
		in.WriteString(QuoteString(id))
	}
	res, err := s.Select(ctx, "SELECT workspace_id, groupUniqArray(retention_days) FROM "+tg.table+
		" WHERE workspace_id IN ("+in.String()+") GROUP BY workspace_id", nil)
	if err != nil {
		return nil, fmt.Errorf("cannot read stored retention: %w", err)
	}
	stale := make(map[string]bool)
	for _, row := range res.Rows {
		id, _ := row[0].(string)
		list, ok := row[1].([]any)
		if !ok {
			return nil, errors.New("cannot read stored retention: unexpected result shape")
		}
		for _, v := range list {
			n, err := asUint64(v)
			if err != nil {
				return nil, err
			}
			if n != uint64(days[id]) {
				stale[id] = true
			}
		}
	}
	return stale, nil
}

func runningMutations(ctx context.Context, s Store, tg target) ([]pendingMutation, error) {
	res, err := s.Select(ctx, "SELECT mutation_id, command FROM system.mutations WHERE database = '"+Database+
		"' AND table = "+QuoteString(tg.name)+" AND is_done = 0 AND is_killed = 0", nil)
	if err != nil {
		return nil, fmt.Errorf("cannot list running mutations: %w", err)
	}
	out := make([]pendingMutation, 0, len(res.Rows))
	for _, row := range res.Rows {
		id, _ := row[0].(string)
		cmd, _ := row[1].(string)
		out = append(out, pendingMutation{id, cmd})
	}
	return out, nil
}

// findRetentionMutation returns the id of a running mutation that sets
// the retention of workspace ws to d, or "".
func findRetentionMutation(pending []pendingMutation, ws string, d uint16) string {
	lit := QuoteString(ws)
	set := "retention_days = " + strconv.FormatUint(uint64(d), 10)
	for _, m := range pending {
		if strings.Contains(m.command, lit) && strings.Contains(m.command, set) && strings.Contains(m.command, "UPDATE") {
			return m.id
		}
	}
	return ""
}

// latestMutation returns the id of the newest mutation on tg whose command
// names workspace ws and contains part.
func latestMutation(ctx context.Context, s Store, tg target, ws, part string) (string, error) {
	res, err := s.Select(ctx, "SELECT mutation_id FROM system.mutations WHERE database = '"+Database+
		"' AND table = "+QuoteString(tg.name)+" AND position(command, "+QuoteString(QuoteString(ws))+") > 0"+
		" AND position(command, "+QuoteString(part)+") > 0 ORDER BY create_time DESC, mutation_id DESC LIMIT 1", nil)
	if err != nil {
		return "", fmt.Errorf("cannot find the mutation just issued: %w", err)
	}
	if len(res.Rows) == 0 {
		return "", fmt.Errorf("cannot find the mutation just issued for workspace %s: %w", ws, errNoRows)
	}
	id, _ := res.Rows[0][0].(string)
	return id, nil
}

// MutationStatus is the state of one mutation in system.mutations.
type MutationStatus struct {
	ID         string
	Done       bool
	PartsToDo  uint64
	FailReason string // scrubbed of quoted values
}

// MutationState returns the state of the mutations ids on the events
// table; ids unknown to the server are left out.
func MutationState(ctx context.Context, s Store, ids []string) ([]MutationStatus, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	tg, err := findTarget(ctx, s)
	if err != nil {
		return nil, err
	}
	return mutationState(ctx, s, tg, ids)
}

func mutationState(ctx context.Context, s Store, tg target, ids []string) ([]MutationStatus, error) {
	lits := make([]string, len(ids))
	for i, id := range ids {
		lits[i] = QuoteString(id)
	}
	res, err := s.Select(ctx, "SELECT mutation_id, is_done, parts_to_do, latest_fail_reason FROM system.mutations WHERE database = '"+
		Database+"' AND table = "+QuoteString(tg.name)+" AND mutation_id IN ("+strings.Join(lits, ", ")+") ORDER BY mutation_id", nil)
	if err != nil {
		return nil, fmt.Errorf("cannot read mutation state: %w", err)
	}
	out := make([]MutationStatus, 0, len(res.Rows))
	for _, row := range res.Rows {
		var st MutationStatus
		st.ID, _ = row[0].(string)
		done, err := asUint64(row[1])
		if err != nil {
			return nil, err
		}
		st.Done = done == 1
		if st.PartsToDo, err = asUint64(row[2]); err != nil {
			return nil, err
		}
		reason, _ := row[3].(string)
		st.FailReason = scrub(reason, nil)
		out = append(out, st)
	}
	return out, nil
}

// WaitMutations polls system.mutations every poll (0 means one second)
// until every mutation in ids is done or ctx ends. A mutation that keeps
// failing is reported with its (scrubbed) reason when ctx ends.
func WaitMutations(ctx context.Context, s Store, ids []string, poll time.Duration) error {
	if len(ids) == 0 {
		return nil
	}
	if poll <= 0 {
		poll = time.Second
	}
	tg, err := findTarget(ctx, s)
	if err != nil {
		return err
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		st, err := mutationState(ctx, s, tg, ids)
		if err != nil {
			return err
		}
		done, reason := 0, ""
		for _, m := range st {
			if m.Done {
				done++
			} else if m.FailReason != "" {
				reason = m.FailReason
			}
		}
		if done == len(ids) {
			return nil
		}
		select {
		case <-ctx.Done():
			if reason != "" {
				return fmt.Errorf("mutations not done (%d of %d), last failure %q: %w", done, len(ids), reason, ctx.Err())
			}
			return fmt.Errorf("mutations not done (%d of %d): %w", done, len(ids), ctx.Err())
		case <-t.C:
		}
	}
}
