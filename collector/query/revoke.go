package query

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
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

// ValidJTI reports whether s can be a revocation list entry: 1 to 256 printable ASCII bytes
// other than space and '#', so that it stays one line of the file and one member of the set.
func ValidJTI(s string) bool {
	if len(s) == 0 || len(s) > 256 || s[0] == '#' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// Revoke adds jti to the file (created with mode 0600 when missing, its directory 0700), unless
// it is listed already. A process reading the file with a FileRevoker refuses the token from its
// next check on (within CheckEvery). Appends are one write each, so a concurrent reader sees the
// line whole or not at all.
func (f *FileRevoker) Revoke(jti string) error {
	if !ValidJTI(jti) {
		return fmt.Errorf("cannot revoke: a token id is 1-256 printable characters without spaces")
	}
	data, err := os.ReadFile(f.Path)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("cannot read revocation file: %w", err)
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if string(bytes.TrimSpace(line)) == jti {
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o700); err != nil {
		return fmt.Errorf("cannot create the revocation file's directory: %w", err)
	}
	out, err := os.OpenFile(f.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("cannot open revocation file: %w", err)
	}
	line := jti + "\n"
	if len(data) > 0 && data[len(data)-1] != '\n' {
		line = "\n" + line
	}
	if _, err := out.WriteString(line); err != nil {
		out.Close()
		return fmt.Errorf("cannot append to revocation file: %w", err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("cannot sync revocation file: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("cannot close revocation file: %w", err)
	}
	return nil
}

// Revoke adds jti to the Redis set (SADD), which every node checking it refuses from then on.
func (r *RedisRevoker) Revoke(ctx context.Context, jti string) error {
	if !ValidJTI(jti) {
		return fmt.Errorf("cannot revoke: a token id is 1-256 printable characters without spaces")
	}
	key := r.Key
	if key == "" {
		key = "revoked_jti"
	}
	if err := r.Client.SAdd(ctx, key, jti).Err(); err != nil {
		return fmt.Errorf("cannot add to the revoked token set: %w", err)
	}
	return nil
}
