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

// newQueryHandler wires the Kyomi Connect query path: ES256 keys from -jwks, revoked token ids
// from -revoked-jti and, with -redis, from the shared set, and the store.
func newQueryHandler(_ context.Context, c *config, store sink.Store, log *slog.Logger, reg prometheus.Registerer) (*queryPath, error) {
	ver := &query.Verifier{Keys: &query.JWKS{Location: c.JWKS}, Leeway: 60 * time.Second}
	q := &queryPath{}
	var revokers anyRevoker
	if c.RevokedJTI != "" {
		revokers = append(revokers, &query.FileRevoker{Path: c.RevokedJTI})
	}
	if c.Redis != "" {
		opts, err := redis.ParseURL(c.Redis)
		if err != nil {
			return nil, fmt.Errorf("cannot parse -redis for token revocation: %w", redactURLError(err))
		}
		q.rdb = redis.NewClient(opts)
		revokers = append(revokers, &query.RedisRevoker{Client: q.rdb})
	}
	if len(revokers) > 0 {
		ver.Revoker = revokers
	}
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
