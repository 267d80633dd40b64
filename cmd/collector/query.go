package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kyomi/collector/collector/query"
	"github.com/kyomi/collector/sink"
)

// newQueryHandler wires the Kyomi Connect query path: JWKS, revocation and the store.
func newQueryHandler(ctx context.Context, c *config, store sink.Store, log *slog.Logger, reg prometheus.Registerer) (*query.Handler, error) {
	return nil, errors.New("query path not wired yet")
}
