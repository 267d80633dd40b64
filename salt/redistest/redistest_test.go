package redistest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestStartStopRestart(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		password string
	}{
		{"plain", nil, ""},
		{"requirepass", []string{"--requirepass", "pw"}, "pw"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, stop := Start(t, tc.args...)
			c := redis.NewClient(&redis.Options{Addr: addr, Password: tc.password, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
			defer c.Close()
			ctx := context.Background()
			if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatalf("SET: %v", err)
			}
			stop()
			stop() // idempotent
			if err := c.Ping(ctx).Err(); err == nil {
				t.Fatal("PING answered after stop")
			}
			StartAt(t, addr, tc.args...)
			if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
				t.Fatalf("restarted server: EXISTS k = %d, %v; want 0 (no persistence)", n, err)
			}
		})
	}
}

// TestStartAtUnixSocket runs a server on a Unix socket: a client reaches it there, and stop
// ends it.
func TestStartAtUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "redis.sock")
	stop := StartAt(t, sock)
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET over the socket: %v", err)
	}
	stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING answered after stop")
	}
}
