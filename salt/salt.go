// Package salt provides the daily rotating secret that turns (workspace,
// domain, IP, user agent) into a visitor id, and the sources that keep it:
// a local file for a single node and Redis for a fleet.
package salt

import "time"

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
