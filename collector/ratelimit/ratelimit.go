// Package ratelimit limits how fast one client or one workspace may send events.
//
// Limits use GCRA (the generic cell rate algorithm): one timestamp per key, a steady rate and a
// burst. Keys are 64-bit keyed hashes, so the limiter never holds a client address, only a hash
// made with a random key that lives and dies with the process. Memory is bounded: each shard holds
// at most MaxKeys/shards entries; when a shard is full, entries whose bucket has drained are
// evicted, and if none has, the new key is allowed and counted as an overflow (failing open keeps
// real visitors flowing during a flood of distinct addresses, which the per-workspace limit and the
// connection caps still bound).
package ratelimit

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/dchest/siphash"
)

const shards = 64

// Config sets a limiter's rate. A zero Rate disables the limiter: Allow always answers true. A
// zero Burst takes one second's worth of Rate. New refuses a Config that Validate refuses.
type Config struct {
	Rate    float64 // events per second a key may send on average; 0 disables the limiter
	Burst   int     // events a key may send at once after being idle; 0 means int(Rate)+1
	MaxKeys int     // keys remembered at once, across all shards; at least 64 (one per shard) when Rate > 0
}

// DefaultClientConfig is the limit of one client address (an IPv6 /64) that the collector runs
// with (-rate-client).
var DefaultClientConfig = Config{
	// 50 events a second: a browser sends a page view and a few events per page, so a person never
	// comes near it, while one address cannot flood a workspace.
	Rate: 50,
	// 0: one second's worth (51), so a page that fires its events together after an idle spell
	// is not cut.
	Burst: 0,
	// 1M addresses: at about 36 bytes a key (measured with Go 1.26 maps) at most about 36 MiB;
	// past it the busy keys are kept and new ones pass untracked and counted (package comment).
	MaxKeys: 1 << 20,
}

// DefaultWorkspaceConfig is the limit of one workspace that the collector runs with
// (-rate-workspace).
var DefaultWorkspaceConfig = Config{
	// Off: a workspace's volume is its owner's business; an operator who shares a collector
	// between customers sets a ceiling.
	Rate: 0,
	// 0: one second's worth of Rate.
	Burst: 0,
	// 64K workspaces: far more than one collector serves, in at most about 2.3 MiB.
	MaxKeys: 1 << 16,
}

// Validate reports every invalid field of c.
func (c Config) Validate() error {
	var errs []error
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		errs = append(errs, fmt.Errorf("ratelimit.Config.Rate must be a finite number >= 0, got %v", c.Rate))
	}
	if c.Burst < 0 {
		errs = append(errs, fmt.Errorf("ratelimit.Config.Burst must be >= 0, got %d", c.Burst))
	}
	if c.MaxKeys < 0 || (c.Rate > 0 && c.MaxKeys < shards) {
		errs = append(errs, fmt.Errorf("ratelimit.Config.MaxKeys must be at least %d (one per shard) when Rate is set, got %d", shards, c.MaxKeys))
	}
	return errors.Join(errs...)
}

// Limiter is a keyed rate limiter, safe for concurrent use. The zero Limiter limits nothing.
type Limiter struct {
	interval  int64 // nanoseconds between events at the steady rate
	tolerance int64 // how far ahead of now a key's TAT may run: (Burst-1) * interval
	perShard  int
	k0, k1    uint64 // hash key, random per process
	shards    [shards]shard
	// Overflows counts keys allowed without tracking because their shard was full of busy keys.
	overflows func()
}

type shard struct {
	mu  sync.Mutex
	tat map[uint64]int64 // theoretical arrival time per key, unix nanoseconds
}

// New returns a limiter for cfg, or the errors of cfg.Validate. onOverflow may be nil.
func New(cfg Config, onOverflow func()) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if onOverflow == nil {
		onOverflow = func() {}
	}
	l := &Limiter{overflows: onOverflow}
	if cfg.Rate == 0 {
		return l, nil
	}
	if cfg.Burst == 0 {
		cfg.Burst = int(cfg.Rate) + 1
	}
	l.interval = int64(float64(time.Second) / cfg.Rate)
	if l.interval < 1 {
		l.interval = 1
	}
	l.tolerance = int64(cfg.Burst-1) * l.interval
	l.perShard = cfg.MaxKeys / shards
	var seed [16]byte
	_, _ = rand.Read(seed[:])
	l.k0, l.k1 = binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])
	for i := range l.shards {
		l.shards[i].tat = make(map[uint64]int64)
	}
	return l, nil
}

// Enabled reports whether the limiter limits anything.
func (l *Limiter) Enabled() bool { return l.interval > 0 }

// AllowAddr reports whether one more event from client address a, arriving at now, is within the
// rate. IPv6 addresses are grouped by /64, the block one subscriber usually holds. The caller
// passes the time so that one clock read serves a whole request.
func (l *Limiter) AllowAddr(a netip.Addr, now time.Time) bool {
	if !l.Enabled() {
		return true
	}
	a = a.Unmap()
	b := a.As16()
	if a.Is6() {
		clear(b[8:])
	}
	return l.allow(siphash.Hash(l.k0, l.k1, b[:]), now.UnixNano())
}

// AllowKey reports whether one more event for key (a workspace id, say), arriving at now, is
// within the rate.
func (l *Limiter) AllowKey(key string, now time.Time) bool {
	if !l.Enabled() {
		return true
	}
	return l.allow(siphashString(l.k0, l.k1, key), now.UnixNano())
}

// allow applies the rate to key hash h at now (unix nanoseconds).
func (l *Limiter) allow(h uint64, now int64) bool {
	s := &l.shards[h%shards]
	s.mu.Lock()
	defer s.mu.Unlock()
	tat, ok := s.tat[h]
	if !ok || tat < now {
		tat = now
	}
	if tat-now > l.tolerance {
		return false
	}
	if !ok && len(s.tat) >= l.perShard && !s.evict(now) {
		l.overflows()
		return true
	}
	s.tat[h] = tat + l.interval
	return true
}

// evict drops keys whose bucket has fully drained and reports whether any room was made.
func (s *shard) evict(now int64) bool {
	freed := false
	for k, tat := range s.tat {
		if tat <= now {
			delete(s.tat, k)
			freed = true
		}
	}
	return freed
}

// siphashString hashes s without converting it to a byte slice.
func siphashString(k0, k1 uint64, s string) uint64 {
	var buf [64]byte
	if len(s) <= len(buf) {
		n := copy(buf[:], s)
		return siphash.Hash(k0, k1, buf[:n])
	}
	return siphash.Hash(k0, k1, []byte(s))
}
