package spool

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Checkpoint returns the committed position: everything before it is stored.
// After a restart it is the position last committed, as it was passed to
// Commit (unless a cut tail lost records before it), even when it names the
// end of a segment that Commit has since deleted: the shipper's dedup token
// of a pending batch is made from it.
func (s *Spool) Checkpoint() Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commit
}

// Pending returns the end of the batch recorded by MarkPending and not yet
// committed, if there is one: after a crash the shipper must cut its first
// batch exactly there so the replayed insert carries the same dedup token.
func (s *Spool) Pending() (Position, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		return Position{}, false
	}
	return *s.pending, true
}

// MarkPending durably records end as the end of the batch about to be
// inserted, so a restart cuts the same batch (see Pending). In SyncInterval
// mode it fsyncs the records first: a checkpoint never points past what a
// crash of the machine leaves on disk, and a shipped record is never lost
// from the spool.
func (s *Spool) MarkPending(end Position) error {
	s.ckMu.Lock()
	defer s.ckMu.Unlock()
	if s.cfg.SyncInterval > 0 {
		if err := s.Sync(); err != nil {
			return err
		}
	}
	p := end
	if err := s.writeCheckpoint(s.commit, &p); err != nil {
		return err
	}
	s.mu.Lock()
	s.pending = &p
	s.mu.Unlock()
	return nil
}

// Commit durably records that everything before p is stored, clears the
// pending batch and deletes segments that lie wholly before p.
func (s *Spool) Commit(p Position) error {
	s.ckMu.Lock()
	defer s.ckMu.Unlock()
	if p.Less(s.commit) {
		return fmt.Errorf("cannot commit spool position %s: before checkpoint %s", p, s.commit)
	}
	if err := s.writeCheckpoint(p, nil); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commit, s.pending = p, nil
	last := len(s.segs) - 1
	keep := s.segs[:0]
	for i, sg := range s.segs {
		consumed := sg.id < p.Segment || (sg.id == p.Segment && i < last && p.Offset >= sg.size)
		if !consumed || i == last {
			keep = append(keep, sg)
			continue
		}
		if err := os.Remove(filepath.Join(s.cfg.Dir, segName(sg.id))); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.cfg.Logger.Warn("cannot delete consumed spool segment", "segment", sg.id, "err", err)
			keep = append(keep, sg)
			continue
		}
		s.total -= sg.size
	}
	s.segs = keep
	// Oldest uncommitted record: the one at p, if any was appended.
	end := Position{Segment: s.segs[len(s.segs)-1].id, Offset: s.tail}
	switch {
	case !p.Less(end):
		s.oldest = 0
	case !p.Less(s.durable):
		// Appended but not yet synced: keep the current estimate.
	default:
		s.oldest = s.appendTimeAt(p)
	}
	return nil
}

// checkpoint file: "v1 <id> <seg> <off> [<pseg> <poff>]\n".
func (s *Spool) writeCheckpoint(c Position, pending *Position) error {
	line := fmt.Sprintf("v1 %s %d %d", s.id, c.Segment, c.Offset)
	if pending != nil {
		line += fmt.Sprintf(" %d %d", pending.Segment, pending.Offset)
	}
	tmp := filepath.Join(s.cfg.Dir, "checkpoint.tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cannot write spool checkpoint: %w", err)
	}
	_, err = io.WriteString(f, line+"\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.cfg.Dir, "checkpoint"))
	}
	if err != nil {
		return fmt.Errorf("cannot write spool checkpoint: %w", err)
	}
	return syncDir(s.cfg.Dir)
}

func (s *Spool) loadCheckpoint() error {
	b, err := os.ReadFile(filepath.Join(s.cfg.Dir, "checkpoint"))
	if errors.Is(err, os.ErrNotExist) {
		var raw [8]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return fmt.Errorf("cannot make spool id: %w", err)
		}
		s.id = hex.EncodeToString(raw[:])
		return s.writeCheckpoint(Position{}, nil)
	}
	if err != nil {
		return fmt.Errorf("cannot read spool checkpoint: %w", err)
	}
	f := strings.Fields(string(b))
	bad := fmt.Errorf("cannot read spool checkpoint: malformed (remove %s to replay the whole spool)", filepath.Join(s.cfg.Dir, "checkpoint"))
	if (len(f) != 4 && len(f) != 6) || f[0] != "v1" || len(f[1]) != 16 {
		return bad
	}
	s.id = f[1]
	nums := make([]int64, 0, 4)
	for _, x := range f[2:] {
		v, err := strconv.ParseInt(x, 10, 64)
		if err != nil || v < 0 {
			return bad
		}
		nums = append(nums, v)
	}
	s.commit = Position{Segment: uint64(nums[0]), Offset: nums[1]}
	if len(nums) == 4 {
		s.pending = &Position{Segment: uint64(nums[2]), Offset: nums[3]}
	}
	return nil
}
