// Package engine runs ClickHouse servers from the chDB library: clickhouse-local with its native
// and HTTP listeners open, one engine per process.
//
// The launcher side (Main) is what a child process runs: it loads the library (libchdb.so, with
// purego at run time, so the binary needs no cgo and only the child loads it) and hands its
// arguments to the library's command-line entry, which opens the listeners and then blocks until
// the process is killed. The supervisor side (Start) writes the engine's configuration and users, starts that
// child, waits until it answers, restarts it when it dies and stops it on Stop. The collector runs
// the launcher as its own hidden subcommand (`collector engine`); tests run it through
// package enginetest.
package engine

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultUser is the name of the user the engine's listeners accept when a data directory's
// credentials are generated.
const DefaultUser = "kyomi"

// Credentials are the user and password the engine's listeners require.
type Credentials struct {
	User, Password string
}

// LoadOrCreateCredentials reads the credentials file at path, one line "user:password", or,
// when it does not exist, creates it with DefaultUser and a random 32-character password,
// mode 0600 (its directory 0700). A file with another mode than 0600 is refused: it may have
// been readable by other users of the host.
func LoadOrCreateCredentials(path string) (Credentials, error) {
	c, err := LoadCredentials(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return c, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Credentials{}, fmt.Errorf("cannot create the directory of the engine credentials: %w", err)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Credentials{}, fmt.Errorf("cannot generate the engine password: %w", err)
	}
	c = Credentials{User: DefaultUser, Password: hex.EncodeToString(b[:])}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) { // another process made it first
			return LoadCredentials(path)
		}
		return Credentials{}, fmt.Errorf("cannot create the engine credentials: %w", err)
	}
	_, err = f.WriteString(c.User + ":" + c.Password + "\n")
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return Credentials{}, fmt.Errorf("cannot write the engine credentials: %w", err)
	}
	return c, nil
}

// LoadCredentials reads the credentials file at path (one line "user:password", mode 0600).
func LoadCredentials(path string) (Credentials, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("cannot read the engine credentials: %w", err)
	}
	if st.Mode().Perm() != 0o600 {
		return Credentials{}, fmt.Errorf("engine credentials %s: mode %o, want 600", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Credentials{}, fmt.Errorf("cannot read the engine credentials: %w", err)
	}
	user, pass, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !ok || !validUser(user) || pass == "" || strings.ContainsAny(pass, "\n\r") {
		return Credentials{}, fmt.Errorf("engine credentials %s: want one line user:password", path)
	}
	return Credentials{User: user, Password: pass}, nil
}

func validUser(u string) bool {
	if u == "" || len(u) > 64 || u == "default" {
		return false
	}
	for _, r := range u {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// usersXML is the engine's users file.
//
// The user of the credentials is the only one a client can use. The engine's own session (the
// launcher's query, which opens the listeners and then holds the process) always logs in as
// "default" without a password, from 127.0.0.1, and the engine offers no way to name another
// user or to drop one later (no SQL user management, no reload of users.xml in
// clickhouse-local). So default exists, but is of no use to anyone else: its profile allows one
// session, which the launcher holds for the life of the process (another login as default is
// refused with USER_SESSION_LIMIT_EXCEEDED, TestDefaultUserRefused), and it is granted nothing
// but what the launcher's query needs.
func usersXML(c Credentials) string {
	sum := sha256.Sum256([]byte(c.Password))
	return `<clickhouse>
  <profiles>
    <default/>
    <launcher><max_sessions_for_user>1</max_sessions_for_user></launcher>
  </profiles>
  <quotas><default/></quotas>
  <users>
    <default>
      <no_password/>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>launcher</profile>
      <quota>default</quota>
      <grants>
        <query>GRANT SYSTEM LISTEN ON *.*</query>
        <query>GRANT SELECT ON system.numbers</query>
      </grants>
    </default>
    <` + c.User + `>
      <password_sha256_hex>` + hex.EncodeToString(sum[:]) + `</password_sha256_hex>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </` + c.User + `>
  </users>
</clickhouse>
`
}

// configXML is the engine's configuration: the users file, logs at warning level on stderr
// (the supervisor sends them to a file), and extra, inserted as is (remote_servers for a
// cluster, for example).
func configXML(usersPath, extra string) string {
	return `<clickhouse>
  <logger><level>warning</level><console>1</console></logger>
  <users_config>` + xmlEscape(usersPath) + `</users_config>
` + extra + `
</clickhouse>
`
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
