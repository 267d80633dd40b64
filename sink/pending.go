package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kyomi/collector/sink/row"
)

// ErrStoreNotReady is returned by a Pending store's calls until its store is open.
var ErrStoreNotReady = errors.New("ClickHouse is not reachable yet")

// Pending is a Store that opens its store in the background: a collector starts, and takes
// events into its spool, while ClickHouse is down, and writes to it once it answers. Until then
// every call fails with ErrStoreNotReady (the shipper retries, keeping the events in the spool).
// Safe for concurrent use.
type Pending struct {
	store     atomic.Pointer[Store]
	maxResult atomic.Int64
	setLimit  atomic.Bool
	cancel    context.CancelFunc
	done      chan struct{}
	mu        sync.Mutex // orders the hand-over of the store and Close
	closed    bool
	firstErr  error
}

// FirstErr is the error of the attempt OpenPending made before it returned, nil if that
// attempt opened the store. A caller refuses to start on the errors that waiting cannot cure
// (ErrSchemaMismatch, ErrSchemaTooNew).
func (p *Pending) FirstErr() error { return p.firstErr }

// OpenPending tries open (which connects and migrates) at once and then, while it fails, again
// after 1 s doubling up to 30 s, logging each failure, until it succeeds or Close. The first
// attempt is bounded by first; OpenPending returns after it.
func OpenPending(open func(ctx context.Context) (Store, error), first time.Duration, log *slog.Logger) *Pending {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pending{cancel: cancel, done: make(chan struct{})}
	attempt := func(d time.Duration) (bool, error) {
		actx, acancel := context.WithTimeout(ctx, d)
		defer acancel()
		s, err := open(actx)
		if err != nil {
			log.Warn("ClickHouse not ready; events wait in the spool", "err", err)
			return false, err
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			s.Close()
			return true, nil
		}
		if p.setLimit.Load() {
			s.SetMaxResultBytes(p.maxResult.Load())
		}
		p.store.Store(&s)
		return true, nil
	}
	ok, err := attempt(first)
	if ok {
		close(p.done)
		return p
	}
	p.firstErr = err
	go func() {
		defer close(p.done)
		wait := time.Second
		for {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if ok, _ := attempt(2 * time.Minute); ok {
				log.Info("ClickHouse ready")
				return
			}
			wait = min(2*wait, 30*time.Second)
		}
	}()
	return p
}

// Ready reports whether the store is open.
func (p *Pending) Ready() bool { return p.store.Load() != nil }

func (p *Pending) get() (Store, error) {
	if s := p.store.Load(); s != nil {
		return *s, nil
	}
	return nil, ErrStoreNotReady
}

// Insert implements Store.
func (p *Pending) Insert(ctx context.Context, rows []row.Event, dedupToken string) error {
	s, err := p.get()
	if err != nil {
		return fmt.Errorf("cannot insert %d rows: %w", len(rows), err)
	}
	return s.Insert(ctx, rows, dedupToken)
}

// ReplayInsert is the store's ReplayInsert, or its Insert when it has none.
func (p *Pending) ReplayInsert(ctx context.Context, rows []row.Event, token string) error {
	s, err := p.get()
	if err != nil {
		return fmt.Errorf("cannot insert %d rows: %w", len(rows), err)
	}
	if ri, ok := s.(ReplayInserter); ok {
		return ri.ReplayInsert(ctx, rows, token)
	}
	return s.Insert(ctx, rows, token)
}

// Select implements Store.
func (p *Pending) Select(ctx context.Context, sql string, settings map[string]string) (*Result, error) {
	s, err := p.get()
	if err != nil {
		return nil, fmt.Errorf("cannot run query: %w", err)
	}
	return s.Select(ctx, sql, settings)
}

// Raw implements Store.
func (p *Pending) Raw(ctx context.Context, sql, format string) ([]byte, error) {
	s, err := p.get()
	if err != nil {
		return nil, fmt.Errorf("cannot run query: %w", err)
	}
	return s.Raw(ctx, sql, format)
}

// Exec implements Store.
func (p *Pending) Exec(ctx context.Context, sql string) error {
	s, err := p.get()
	if err != nil {
		return fmt.Errorf("cannot run statement: %w", err)
	}
	return s.Exec(ctx, sql)
}

// SetMaxResultBytes implements Store; it also applies to a store opened later.
func (p *Pending) SetMaxResultBytes(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.maxResult.Store(n)
	p.setLimit.Store(true)
	if s := p.store.Load(); s != nil {
		(*s).SetMaxResultBytes(n)
	}
}

// Close stops the attempts and closes the store if it was opened.
func (p *Pending) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	<-p.done
	if s := p.store.Load(); s != nil {
		return (*s).Close()
	}
	return nil
}

var _ Store = (*Pending)(nil)
