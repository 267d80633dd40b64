package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/kyomi/collector/collector/query"
	"github.com/kyomi/collector/sink"
)

// queryPath is the mounted query path and what it holds open.
type queryPath struct {
	*query.Handler
	rdb *redis.Client
}

// Close stops the handler and closes its Redis client.
func (q *queryPath) Close() {
	q.Handler.Close()
	if q.rdb != nil {
		_ = q.rdb.Close()
	}
}

// newQueryHandler wires the Kyomi Connect query path: ES256 keys from -jwks (or the data
// directory's own key), revoked token ids from the revocation file and, with -redis, from the
// shared set, and the store.
func newQueryHandler(_ context.Context, c *config, store sink.Store, log *slog.Logger, reg prometheus.Registerer) (*queryPath, error) {
	ver, rdb, err := newVerifier(c)
	if err != nil {
		return nil, err
	}
	q := &queryPath{rdb: rdb}
	h, err := query.NewHandler(query.Config{}, query.Deps{Store: store, Verifier: ver, Logger: log, Registerer: reg})
	if err != nil {
		if q.rdb != nil {
			_ = q.rdb.Close()
		}
		return nil, err
	}
	q.Handler = h
	return q, nil
}

// newVerifier is the token verifier of the query path and of agent mode: keys from -jwks, or
// without it the data directory's own key (made now if there is none, so that `token issue` and
// serve agree on it); revoked token ids from revocationFile and, with -redis, from the shared set.
// The caller closes the Redis client, if any.
func newVerifier(c *config) (*query.Verifier, *redis.Client, error) {
	// exp is enforced exactly; the 60 s only let a freshly minted token's nbf and iat be ahead of our
	// clock, for an issuer whose clock runs slightly fast.
	ver := &query.Verifier{Skew: 60 * time.Second}
	if c.JWKS != "" {
		ver.Keys = &query.JWKS{Location: c.JWKS}
	} else {
		key, _, err := query.OpenLocalKey(localKeyDir(c))
		if err != nil {
			return nil, nil, err
		}
		ver.Keys = key
	}
	var rdb *redis.Client
	var revokers anyRevoker
	if path := revocationFile(c); path != "" {
		revokers = append(revokers, &query.FileRevoker{Path: path})
	}
	if c.Redis != "" {
		opts, err := redis.ParseURL(c.Redis)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot parse -redis for token revocation: %w", redactURLError(err))
		}
		rdb = redis.NewClient(opts)
		revokers = append(revokers, &query.RedisRevoker{Client: rdb})
	}
	if len(revokers) > 0 {
		ver.Revoker = revokers
	}
	return ver, rdb, nil
}

// startConnectAgent runs agent mode (-connect-token): the collector dials the Kyomi Connect backend
// named by the token and serves it with h, redialing with backoff until ctx ends. The token file is
// read again before every dial, so a rotated token is used from the next connection on, with no
// restart; a file that cannot be read or a token that is refused then is logged and retried. At
// start, an unreadable file or a token the verifier refuses, or whose url is not ws:// or wss://,
// refuses the start; a check that cannot run now (JWKS or Redis unreachable) is logged and left to
// the agent's retries. stop ends the agent and waits for it.
func startConnectAgent(ctx context.Context, c *config, h *query.Handler, log *slog.Logger, reg prometheus.Registerer) (stop func(), err error) {
	if _, err := query.ReadTokenFile(c.ConnectToken); err != nil {
		return nil, fmt.Errorf("-connect-token: %w", err)
	}
	path := c.ConnectToken
	source := func() (string, error) { return query.ReadTokenFile(path) }
	a, err := h.NewAgent(query.AgentConfig{Token: source, Logger: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	if _, _, err := a.Check(ctx); err != nil {
		if query.Refused(err) {
			return nil, fmt.Errorf("-connect-token: %w", err)
		}
		log.Warn("cannot verify the connect token yet; the agent keeps trying", "err", err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(actx); err != nil {
			log.Error("connect agent stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}

// checkConnectToken is `config check` for -connect-token: the token is verified against -jwks and
// the revocation lists, and its url must be ws:// or wss://, as at start.
func checkConnectToken(ctx context.Context, c *config) error {
	token, err := query.ReadTokenFile(c.ConnectToken)
	if err != nil {
		return err
	}
	ver, rdb, err := newVerifier(c)
	if err != nil {
		return err
	}
	if rdb != nil {
		defer rdb.Close()
	}
	_, _, err = query.CheckConnectToken(ctx, ver, token)
	return err
}

// anyRevoker refuses a token that any of its revokers lists; an error from one (Redis down) is
// an error, so a token is never accepted because the revocation list could not be read.
type anyRevoker []query.Revoker

func (rs anyRevoker) Revoked(ctx context.Context, jti string) (bool, error) {
	for _, r := range rs {
		if ok, err := r.Revoked(ctx, jti); err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// redactURLError keeps a URL parse error from repeating the URL, which can hold a password.
func redactURLError(err error) error {
	return fmt.Errorf("invalid Redis URL (%T)", err)
}
