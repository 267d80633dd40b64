// Package salt provides the daily rotating secret that turns (workspace,
// domain, IP, user agent) into a visitor id, and the sources that keep it:
// a local file for a single node (Local, the default) and Redis for a fleet
// (Redis).
//
// # Salt and visitor id
//
// A salt is 32 random bytes that belong to one UTC day. The visitor id is
// SipHash-2-4 keyed with 128 bits derived from all 32 bytes (see
// Salt.VisitorID) over a length-prefixed encoding of workspace, domain, the
// 16-byte form of the IP and the user agent. The salt never leaves the
// process except into its own store (a 0600 file or Redis): Salt formats,
// logs and marshals as "REDACTED".
//
// # Which day
//
// The caller passes the event's receive time taken on the node; the salt of
// that time's UTC day is used. Visitor ids are per day, like Plausible's: a
// visit crossing midnight becomes a new visitor id, so the hot path never
// needs yesterday's salt. Yesterday's salt is still served when asked for
// (an event received at 23:59:59.999 and hashed a moment later) and is
// forgotten, in memory, on disk and in Redis, 48 h after its day began.
// Tomorrow's salt is fetched from 23:00 UTC (WithPrefetch) so the change of
// day never waits on I/O.
//
// # Clock skew between nodes (Redis)
//
// Every node takes the day from its own clock, and the salt of a day is the
// one value stored under salt:YYYY-MM-DD (created once with SET NX, read by
// everyone). Nodes therefore agree on the salt of every day; two nodes whose
// clocks differ by s seconds disagree only on which day an event received
// within s seconds of midnight belongs to, so the window of disagreement is
// the clock skew and no longer. The node that is ahead already holds
// tomorrow's salt (prefetched), so no node falls back because of skew.
//
// # Redis outage policy
//
//   - Redis down at start: NewRedis succeeds (a bad URL still fails), but the
//     source is unavailable: Ready returns an error so /readyz answers 503 and
//     the load balancer routes to nodes that have the salt, and Salt returns
//     ErrUnavailable so events reaching this node are answered 503. A node
//     that has never agreed on a salt with the fleet would silently split
//     every visitor it sees; refusing is the safe choice, and the node keeps
//     retrying and becomes ready as soon as Redis answers. (A single node
//     needs no Redis: leave -redis empty for the local salt file.)
//   - Redis down during the day: the cached salt of today keeps being used.
//     It is the same salt every node uses, so ids stay correct; state is
//     degraded and Redis errors are counted, Ready stays nil.
//   - Redis down across midnight: if tomorrow's salt was prefetched (any time
//     from 23:00 on), it is used: correct and shared. Otherwise the node
//     makes a node-local fallback salt for the new day, in memory only,
//     counts it in collector_salt_fallbacks_total and reports degraded; events
//     keep flowing (refusing would stop ingestion on every node at once, as
//     they share the Redis). Visitors seen by several nodes are then counted
//     once per node for that day until Redis returns. When it returns the node
//     offers its fallback with SET NX: if no node stored a salt for the day
//     meanwhile, the fallback becomes the fleet's salt and the node's ids stay
//     continuous; otherwise the node switches to the stored salt.
//   - Redis restarted empty (no persistence): every node re-offers its cached
//     salt with SET NX, so the first writer restores the same value.
//
// In no case is a raw IP stored or an event kept waiting for a salt.
package salt

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Source yields the salt of a UTC day.
//
// Salt must not block on I/O on the hot path: implementations serve from an
// in-process cache and refresh it in the background. It returns an error only
// when no salt that may be used for t is available; callers then refuse to
// make a visitor id (and never fall back to storing anything raw).
// Implementations are safe for concurrent use.
type Source interface {
	Salt(t time.Time) (*Salt, error)
}

// ErrUnavailable is returned (wrapped) by Source.Salt when no salt may be
// used for the requested time: the store is unreachable and the outage
// policy forbids a fallback, or the time lies outside the days a source
// keeps (yesterday, today, tomorrow, and never a day that began 48 h ago).
var ErrUnavailable = errors.New("salt unavailable")

// Size is the number of random bytes in a salt.
const Size = 32

// MaxAge is how long after its day began a salt is forgotten everywhere:
// in memory, on disk and in Redis.
const MaxAge = 48 * time.Hour

const secondsPerDay = 86400

// redacted is what a Salt prints, logs and marshals as.
const redacted = "REDACTED"

// Salt is the secret of one UTC day. It is immutable and safe for concurrent
// use; its bytes cannot be read from outside the package and it prints, logs
// and marshals as "REDACTED".
type Salt struct {
	k0, k1   uint64
	day      int64 // days since 1970-01-01 UTC
	fallback bool  // node-local fallback made while Redis was unreachable
	b        [Size]byte
}

// newSalt makes the salt of day from its 32 bytes. The SipHash key uses all
// 32 bytes: k0 = le64(b[0:8]) ^ le64(b[16:24]), k1 = le64(b[8:16]) ^
// le64(b[24:32]), so the 128-bit key is uniformly random when b is.
func newSalt(day int64, b [Size]byte) *Salt {
	return &Salt{
		k0:  binary.LittleEndian.Uint64(b[0:8]) ^ binary.LittleEndian.Uint64(b[16:24]),
		k1:  binary.LittleEndian.Uint64(b[8:16]) ^ binary.LittleEndian.Uint64(b[24:32]),
		day: day,
		b:   b,
	}
}

// equal reports in constant time whether two salts hold the same bytes.
func (s *Salt) equal(o *Salt) bool {
	return s != nil && o != nil && subtle.ConstantTimeCompare(s.b[:], o.b[:]) == 1
}

// Day returns the start (00:00 UTC) of the day the salt belongs to.
func (s *Salt) Day() time.Time { return time.Unix(s.day*secondsPerDay, 0).UTC() }

// VisitorID returns the visitor id of (workspace, domain, ip, ua) under this
// salt: SipHash-2-4 keyed as described at newSalt over the message
//
//	le32(len(workspace)) workspace le32(len(domain)) domain ip16 le32(len(ua)) ua
//
// where ip16 is ip.As16() (IPv4 in its IPv4-mapped IPv6 form, so the two
// spellings of one address hash alike; an invalid Addr hashes as 16 zero
// bytes). Lengths make the encoding unambiguous. It does not allocate and
// does not keep ua.
func (s *Salt) VisitorID(workspace, domain string, ip netip.Addr, ua []byte) uint64 {
	var h sipState
	h.init(s.k0, s.k1)
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(workspace)))
	h.write(n[:])
	h.writeString(workspace)
	binary.LittleEndian.PutUint32(n[:], uint32(len(domain)))
	h.write(n[:])
	h.writeString(domain)
	a := ip.As16()
	h.write(a[:])
	binary.LittleEndian.PutUint32(n[:], uint32(len(ua)))
	h.write(n[:])
	h.write(ua)
	return h.sum()
}

// String returns "salt(YYYY-MM-DD, REDACTED)": never the bytes.
func (s Salt) String() string { return "salt(" + DayKey(s.Day()) + ", " + redacted + ")" }

// GoString returns the same as String, so %#v cannot reveal the bytes.
func (s Salt) GoString() string { return s.String() }

// Format writes String for every verb (%x, %v, %#v, %s, ...), so no fmt
// verb can reveal the bytes.
func (s Salt) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// LogValue makes slog record the salt as "REDACTED".
func (s Salt) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON encodes the salt as the JSON string "REDACTED".
func (s Salt) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText encodes the salt as "REDACTED".
func (s Salt) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Day returns the start (00:00 UTC) of t's UTC day.
func Day(t time.Time) time.Time { return time.Unix(dayNumber(t)*secondsPerDay, 0).UTC() }

// DayKey returns t's UTC day as YYYY-MM-DD, the name of the salt's Redis key
// suffix and local file.
func DayKey(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// dayNumber returns the number of whole UTC days between 1970-01-01 and t.
// Unix time has no leap seconds, so days are exactly 86400 s.
func dayNumber(t time.Time) int64 {
	u := t.Unix()
	d := u / secondsPerDay
	if u%secondsPerDay < 0 {
		d--
	}
	return d
}
