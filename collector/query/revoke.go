package query

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// FileRevoker reads revoked jti values from a file, one per line ('#'
// starts a comment), and re-reads it when its modification time or size
// changes (checked at most once per CheckEvery). A missing file means no
// revocations; a file that cannot be read keeps the previous list. It is
// safe for concurrent use.
type FileRevoker struct {
	Path       string
	CheckEvery time.Duration // 0 means 2s

	mu      sync.Mutex
	checked time.Time
	mtime   time.Time
	size    int64
	set     map[string]struct{}
}

// Revoked implements Revoker.
func (f *FileRevoker) Revoked(_ context.Context, jti string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	every := f.CheckEvery
	if every == 0 {
		every = 2 * time.Second
	}
	if f.set == nil || time.Since(f.checked) >= every {
		f.checked = time.Now()
		if err := f.reload(); err != nil && f.set == nil {
			return false, err
		}
	}
	_, ok := f.set[jti]
	return ok, nil
}

func (f *FileRevoker) reload() error {
	st, err := os.Stat(f.Path)
	if os.IsNotExist(err) {
		f.set = map[string]struct{}{}
		f.mtime, f.size = time.Time{}, 0
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot stat revocation file: %w", err)
	}
	if f.set != nil && st.ModTime().Equal(f.mtime) && st.Size() == f.size {
		return nil
	}
	data, err := os.ReadFile(f.Path)
	if err != nil {
		return fmt.Errorf("cannot read revocation file: %w", err)
	}
	set := make(map[string]struct{})
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		set[string(line)] = struct{}{}
	}
	f.set, f.mtime, f.size = set, st.ModTime(), st.Size()
	return nil
}

// RedisRevoker checks revoked jti values in a Redis set (SISMEMBER Key jti).
// A Redis error refuses the request (fail closed) rather than letting a
// possibly revoked token through.
type RedisRevoker struct {
	Client redis.UniversalClient
	Key    string // "" means "revoked_jti"
}

// Revoked implements Revoker.
func (r *RedisRevoker) Revoked(ctx context.Context, jti string) (bool, error) {
	key := r.Key
	if key == "" {
		key = "revoked_jti"
	}
	ok, err := r.Client.SIsMember(ctx, key, jti).Result()
	if err != nil {
		return false, fmt.Errorf("cannot query revoked token set: %w", err)
	}
	return ok, nil
}
