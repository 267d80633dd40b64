package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// EraseReport says how far the erasure of one workspace went.
type EraseReport struct {
	WorkspaceID string
	RowsBefore  uint64 // rows of the workspace when the erasure started
	RowsAfter   uint64 // rows still visible when the mutation was done (0)
	MutationID  string
	// Rewritten is true once system.mutations says the mutation is done:
	// every active part that held the workspace's rows was rewritten
	// without them.
	Rewritten bool
	// OldPartsPending counts the parts replaced by the mutation that are
	// still on disk (ClickHouse removes them after old_parts_lifetime,
	// 8 minutes by default).
	OldPartsPending int
	// Complete is true when the rows are physically gone: rewritten and
	// no replaced part left on disk.
	Complete bool
	Took     time.Duration
}

// String renders the report for an operator.
func (r *EraseReport) String() string {
	state := "physically complete"
	switch {
	case !r.Rewritten:
		state = "NOT complete: mutation still running"
	case !r.Complete:
		state = fmt.Sprintf("rows deleted and parts rewritten; %d replaced parts await removal from disk", r.OldPartsPending)
	}
	return fmt.Sprintf("workspace %s: %d rows before, %d after, mutation %s, %s (took %s)",
		r.WorkspaceID, r.RowsBefore, r.RowsAfter, r.MutationID, state, r.Took.Round(time.Millisecond))
}

// EraseConfig tunes EraseWorkspaceWith. A zero Poll takes
// DefaultEraseConfig's; EraseWorkspaceWith refuses an EraseConfig that
// Validate refuses.
type EraseConfig struct {
	// Poll is how often the mutation's state is read.
	Poll time.Duration
	// WaitRemoval, when > 0, keeps waiting up to this long after the
	// rewrite for ClickHouse to remove the replaced parts from disk; 0
	// does not wait for that.
	WaitRemoval time.Duration
}

// DefaultEraseConfig is how `collector erase-workspace` waits.
var DefaultEraseConfig = EraseConfig{
	// 1s: the answer comes at most a second after the mutation ends, for
	// one small read of the mutation's state a second.
	Poll: time.Second,
}

// Validate reports every invalid field of c.
func (c EraseConfig) Validate() error {
	var errs []error
	if c.Poll < 0 {
		errs = append(errs, fmt.Errorf("sink.EraseConfig.Poll must be >= 0 (0 takes the default), got %s", c.Poll))
	}
	if c.WaitRemoval < 0 {
		errs = append(errs, fmt.Errorf("sink.EraseConfig.WaitRemoval must be >= 0, got %s", c.WaitRemoval))
	}
	return errors.Join(errs...)
}

// EraseWorkspace deletes every row of workspace id with an ALTER TABLE
// DELETE mutation and waits until the mutation is done (the parts that
// held the rows are rewritten). Other workspaces are untouched. The report
// says whether replaced parts are still waiting for removal from disk; use
// EraseWorkspaceWith to wait for that too.
func EraseWorkspace(ctx context.Context, s Store, id string) (*EraseReport, error) {
	return EraseWorkspaceWith(ctx, s, id, EraseConfig{})
}

// EraseWorkspaceWith is EraseWorkspace with a configuration.
func EraseWorkspaceWith(ctx context.Context, s Store, id string, o EraseConfig) (*EraseReport, error) {
	if strings.TrimSpace(id) == "" {
		return nil, errors.New("cannot erase a workspace: empty workspace id")
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Poll == 0 {
		o.Poll = DefaultEraseConfig.Poll
	}
	start := time.Now()
	tg, err := findTarget(ctx, s)
	if err != nil {
		return nil, err
	}
	rep := &EraseReport{WorkspaceID: id}
	if rep.RowsBefore, err = countWorkspace(ctx, s, tg, id); err != nil {
		return nil, err
	}
	before, err := partsHolding(ctx, s, tg)
	if err != nil {
		return nil, err
	}
	if err := s.Exec(ctx, "ALTER TABLE "+tg.table+tg.onCluster+" DELETE WHERE workspace_id = "+QuoteString(id)+" SETTINGS mutations_sync = 0"); err != nil {
		return nil, fmt.Errorf("cannot erase workspace %s: %w", id, err)
	}
	if rep.MutationID, err = latestMutation(ctx, s, tg, id, "DELETE"); err != nil {
		return nil, err
	}
	if err := WaitMutations(ctx, s, []string{rep.MutationID}, o.Poll); err != nil {
		rep.Took = time.Since(start)
		return rep, fmt.Errorf("cannot confirm the erasure of workspace %s: %w", id, err)
	}
	rep.Rewritten = true
	if rep.RowsAfter, err = countWorkspace(ctx, s, tg, id); err != nil {
		return rep, err
	}
	deadline := time.Now().Add(o.WaitRemoval)
	for {
		if rep.OldPartsPending, err = stillOnDisk(ctx, s, tg, before); err != nil {
			return rep, err
		}
		if rep.OldPartsPending == 0 || !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			rep.Took = time.Since(start)
			return rep, nil
		case <-time.After(o.Poll):
		}
	}
	rep.Complete = rep.RowsAfter == 0 && rep.OldPartsPending == 0
	rep.Took = time.Since(start)
	if rep.RowsAfter != 0 {
		return rep, fmt.Errorf("workspace %s still has %d rows after the erasure mutation", id, rep.RowsAfter)
	}
	return rep, nil
}

func countWorkspace(ctx context.Context, s Store, tg target, id string) (uint64, error) {
	res, err := s.Select(ctx, "SELECT count() FROM "+tg.table+" WHERE workspace_id = "+QuoteString(id), nil)
	if err != nil {
		return 0, fmt.Errorf("cannot count the rows of workspace %s: %w", id, err)
	}
	if len(res.Rows) != 1 {
		return 0, fmt.Errorf("cannot count the rows of workspace %s: %w", id, errNoRows)
	}
	return asUint64(res.Rows[0][0])
}

// part is an active part of the table before the mutation: one the
// mutation replaces.
type part struct{ name string }

// partsHolding lists the active parts of the table before the mutation.
func partsHolding(ctx context.Context, s Store, tg target) ([]part, error) {
	res, err := s.Select(ctx, "SELECT name FROM system.parts WHERE database = '"+Database+"' AND table = "+
		QuoteString(tg.name)+" AND active", nil)
	if err != nil {
		return nil, fmt.Errorf("cannot list parts: %w", err)
	}
	out := make([]part, 0, len(res.Rows))
	for _, row := range res.Rows {
		n, _ := row[0].(string)
		out = append(out, part{name: n})
	}
	return out, nil
}

// stillOnDisk counts the parts among before that are replaced but not yet
// removed: listed as inactive by system.parts. ClickHouse drops a part from
// system.parts when it starts deleting its files, not when it is done; a
// server's files cannot be checked from here, so the last moments of a
// deletion go unseen.
func stillOnDisk(ctx context.Context, s Store, tg target, before []part) (int, error) {
	if len(before) == 0 {
		return 0, nil
	}
	lits := make([]string, len(before))
	for i, p := range before {
		lits[i] = QuoteString(p.name)
	}
	res, err := s.Select(ctx, "SELECT name, toUInt8(active) FROM system.parts WHERE database = '"+Database+"' AND table = "+
		QuoteString(tg.name)+" AND name IN ("+strings.Join(lits, ", ")+")", nil)
	if err != nil {
		return 0, fmt.Errorf("cannot list replaced parts: %w", err)
	}
	active := make(map[string]bool, len(res.Rows))
	for _, row := range res.Rows {
		n, _ := row[0].(string)
		a, _ := asUint64(row[1])
		active[n] = a == 1
	}
	pending := 0
	for _, p := range before {
		if a, listed := active[p.name]; listed && !a {
			pending++
		}
	}
	return pending, nil
}
