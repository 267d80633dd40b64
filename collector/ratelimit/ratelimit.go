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
	"net/netip"
	"sync"
	"time"

	"github.com/dchest/siphash"
)

const shards = 64

// Config sets a limiter's rate. Zero Rate disables the limiter: Allow always answers true.
type Config struct {
	Rate    float64 // events per second a key may send on average
	Burst   int     // events a key may send at once after being idle; at least 1
	MaxKeys int     // keys remembered at once, across all shards
}

// Limiter is a keyed rate limiter, safe for concurrent use.
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

// New returns a limiter for cfg. onOverflow may be nil.
func New(cfg Config, onOverflow func()) *Limiter {
	if onOverflow == nil {
		onOverflow = func() {}
	}
	l := &Limiter{overflows: onOverflow}
	if cfg.Rate <= 0 {
		return l
	}
	if cfg.Burst < 1 {
		cfg.Burst = 1
	}
	if cfg.MaxKeys < shards {
		cfg.MaxKeys = shards
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
	return l
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
