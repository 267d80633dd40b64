package query

import (
	"context"
	"sync"
	"time"
)

// slotWait is the longest a statement waits for a slot before it is
// answered too_busy. A dashboard opens with a burst of reports from one
// token; they queue behind each other for a moment instead of failing.
const slotWait = 10 * time.Second

// slots bounds the statements the query path runs at once: in the process
// and per token. Only running statements hold engine memory and answer
// buffers; a waiting one holds its request message. Waiters are bounded
// too, per token, so that one token cannot park unbounded work.
type slots struct {
	global   chan struct{}
	mu       sync.Mutex
	perToken map[string]*tokenSlots
	maxToken int
}

// tokenSlots are one token's running statements (sem) and its callers
// running or waiting (users).
type tokenSlots struct {
	sem   chan struct{}
	users int
}

// maxWaitingPerToken bounds the statements of one token waiting for a slot.
const maxWaitingPerToken = 16

func newSlots(maxTotal, maxPerToken int) *slots {
	return &slots{global: make(chan struct{}, maxTotal), perToken: make(map[string]*tokenSlots), maxToken: maxPerToken}
}

// acquire takes a slot for the caller c, waiting up to slotWait (and no
// longer than ctx), or fails with a too_busy error. The returned release
// must be called once.
func (s *slots) acquire(ctx context.Context, c *Claims) (release func(), err error) {
	key := "jti:" + c.JTI
	if c.JTI == "" {
		key = "wid:" + c.WID
	}
	s.mu.Lock()
	ts := s.perToken[key]
	if ts == nil {
		ts = &tokenSlots{sem: make(chan struct{}, s.maxToken)}
		s.perToken[key] = ts
	}
	if ts.users >= s.maxToken+maxWaitingPerToken {
		s.mu.Unlock()
		return nil, perr(CodeTooBusy, "this token has %d queries running or waiting; wait for answers before sending more", ts.users)
	}
	ts.users++
	s.mu.Unlock()
	leave := func() {
		s.mu.Lock()
		if ts.users--; ts.users == 0 {
			delete(s.perToken, key)
		}
		s.mu.Unlock()
	}
	wctx, cancel := context.WithTimeout(ctx, slotWait)
	defer cancel()
	select {
	case ts.sem <- struct{}{}:
	case <-wctx.Done():
		leave()
		return nil, perr(CodeTooBusy, "this token already runs %d queries; try again when one has finished", s.maxToken)
	}
	select {
	case s.global <- struct{}{}:
	case <-wctx.Done():
		<-ts.sem
		leave()
		return nil, perr(CodeTooBusy, "the collector already runs %d queries; try again shortly", cap(s.global))
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-s.global
			<-ts.sem
			leave()
		})
	}, nil
}
