package salt

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
)

// KeyPrefix prefixes the Redis key of a day's salt: salt:YYYY-MM-DD.
const KeyPrefix = "salt:"

// Redis is the fleet salt source: the salt of a day is the value of
// salt:YYYY-MM-DD, created by the first node with SET NX EXAT (expiring
// MaxAge after the day began) and read by every node with GET. Salts are
// cached in process: Salt is an atomic load and never calls Redis. A
// background loop confirms today's salt every refresh interval, fetches
// tomorrow's from the prefetch window on, and forgets expired ones. The
// package documentation gives the outage policy.
//
// A Redis is safe for concurrent use; call Close to stop its loop and close
// the connection pool.
type Redis struct {
	*core
	client *redis.Client
	// agreed is set once the node obtained any salt from Redis; only then may
	// it make a fallback salt (see the outage policy).
	agreed bool // guarded by core.mu
}

var _ Source = (*Redis)(nil)

// NewRedis connects to the Redis at rawURL (redis:// or rediss:// for TLS;
// user, password, database number and go-redis query options such as
// dial_timeout, read_timeout, write_timeout, pool_size, skip_verify come
// from the URL; WithRootCAs adds a private CA for rediss://) and fetches
// today's salt within ctx, which should carry a deadline. An invalid URL or configuration is an
// error; an unreachable Redis is not: the source then starts unavailable
// (Ready and Salt return errors) and keeps retrying in the background.
func NewRedis(ctx context.Context, rawURL string, opts ...Option) (*Redis, error) {
	cfg, err := buildConfig(opts)
	if err != nil {
		return nil, err
	}
	ro, err := redis.ParseURL(rawURL)
	if err != nil {
		// A *url.Error repeats the URL, password included: keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot parse redis url: %w", err)
	}
	if cfg.rootCAs != nil {
		if ro.TLSConfig == nil {
			return nil, errors.New("invalid salt source configuration: root CAs given for a redis url without TLS (use rediss://)")
		}
		ro.TLSConfig.RootCAs = cfg.rootCAs
	}
	c, err := newCore(cfg, "redis")
	if err != nil {
		return nil, err
	}
	r := &Redis{core: c, client: redis.NewClient(ro)}
	// An error is logged by refresh (state unavailable) and retried by the loop.
	r.startLoop(r.refresh, r.refresh(ctx))
	return r, nil
}

// Salt returns the salt of t's UTC day from the in-process cache. On a miss
// for today it makes a node-local fallback salt if this node has agreed on
// a salt with Redis before (Redis down across midnight, tomorrow not
// prefetched); otherwise it returns an error wrapping ErrUnavailable.
func (r *Redis) Salt(t time.Time) (*Salt, error) {
	if s := r.lookup(dayNumber(t)); s != nil {
		return s, nil
	}
	return r.slow(dayNumber(t))
}

func (r *Redis) slow(d int64) (*Salt, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.lookup(d); s != nil {
		return s, nil
	}
	now := r.cfg.clock()
	if d != dayNumber(now) || !r.agreed {
		return nil, fmt.Errorf("no salt for %s from redis: %w", dayKey(d), ErrUnavailable)
	}
	s := randomSalt(d)
	s.fallback = true
	r.putLocked(s)
	r.fallbacks.Inc()
	r.setState(stateDegraded, errors.New("node-local fallback salt in use"))
	r.wake()
	return s, nil
}

// Ready reports whether events can be hashed now: nil unless no salt for
// today is available and none may be made (Redis unreachable since start).
func (r *Redis) Ready() error {
	_, err := r.Salt(r.cfg.clock())
	return err
}

// Close stops the background loop and closes the connection pool. Cached
// salts keep being served but are no longer refreshed or expired.
func (r *Redis) Close() error {
	r.close()
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("cannot close redis client: %w", err)
	}
	return nil
}

// refresh fetches today's salt (and tomorrow's in the prefetch window) from
// Redis, offering the cached value if any, then forgets expired salts and
// updates the state.
func (r *Redis) refresh(ctx context.Context) error {
	now := r.cfg.clock()
	today := dayNumber(now)
	days := []int64{today}
	if r.prefetching(now) {
		days = append(days, today+1)
	}
	var errs []error
	for _, d := range days {
		if err := r.fetch(ctx, d, now); err != nil {
			r.redisErrors.Inc()
			errs = append(errs, err)
		} else if d == today {
			r.confirmed.Store(now.UnixNano())
		}
	}
	r.mu.Lock()
	r.purgeLocked(now)
	r.mu.Unlock()
	err := errors.Join(errs...)
	cur := r.lookup(today)
	switch {
	case cur == nil && err == nil:
		// Unreachable in practice: a successful fetch caches today's salt.
		r.setState(stateUnavailable, errors.New("no salt for today"))
	case cur == nil:
		r.mu.Lock()
		agreed := r.agreed
		r.mu.Unlock()
		if agreed {
			// Make the fallback now rather than on the next event.
			_, _ = r.slow(today)
		} else {
			r.setState(stateUnavailable, err)
		}
	case err != nil:
		r.setState(stateDegraded, err)
	case cur.fallback:
		r.setState(stateDegraded, errors.New("node-local fallback salt in use"))
	default:
		r.setState(stateOK, nil)
	}
	return err
}

// fetch makes sure salt:DAY exists (SET NX, offering the cached salt of the
// day so an emptied Redis gets back the value every node already uses, or
// fresh random bytes) and caches the value Redis holds.
func (r *Redis) fetch(ctx context.Context, d int64, now time.Time) error {
	if expired(d, now) {
		return nil
	}
	key := KeyPrefix + dayKey(d)
	cached := r.lookup(d)
	offer := cached
	if offer == nil {
		offer = randomSalt(d)
	}
	exp := time.Unix(d*secondsPerDay, 0).Add(MaxAge)
	err := r.client.SetArgs(ctx, key, offer.b[:], redis.SetArgs{Mode: "NX", ExpireAt: exp}).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("cannot create %s: %w", key, err)
	}
	v, err := r.client.Get(ctx, key).Bytes()
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", key, err)
	}
	if len(v) != Size {
		return fmt.Errorf("%s holds %d bytes, want %d", key, len(v), Size)
	}
	s := newSalt(d, [Size]byte(v))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.agreed = true
	if cur := r.lookup(d); cur != nil && cur.equal(s) && !cur.fallback {
		return nil
	}
	if cur := r.lookup(d); cur != nil && !cur.equal(s) {
		r.cfg.logger.Warn("salt of the day differs from redis; switching to redis", "day", dayKey(d), "fallback", cur.fallback)
	}
	r.putLocked(s)
	return nil
}
