package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kyomi/collector/collector/query"
)

// tokenCmd runs `collector token issue` and `collector token revoke`.
func tokenCmd(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "issue" && args[0] != "revoke") {
		fmt.Fprintln(stderr, "usage: collector token issue -wid WORKSPACE [-ttl DURATION] [flags]\n       collector token revoke [flags] JTI")
		return 2
	}
	if args[0] == "issue" {
		return tokenIssueCmd(args[1:], env, stdout, stderr)
	}
	return tokenRevokeCmd(ctx, args[1:], env, stdout, stderr)
}

// tokenIssueCmd prints a query token for one workspace, signed by the data directory's own key
// (made on first use). The token goes to stdout and nowhere else; what it is goes to stderr.
func tokenIssueCmd(args []string, env func(string) string, stdout, stderr io.Writer) int {
	c, fs, code := loadConfig("token issue", args, env, stderr)
	if code >= 0 {
		return code
	}
	if fs.NArg() != 0 || c.TokenWID == "" {
		fmt.Fprintln(stderr, "usage: collector token issue -wid WORKSPACE [-ttl DURATION] [flags]")
		return 2
	}
	key, created, err := query.OpenLocalKey(localKeyDir(c))
	if err != nil {
		fmt.Fprintf(stderr, "collector token issue: %v\n", err)
		return 1
	}
	token, claims, err := key.Issue(query.TokenRequest{WID: c.TokenWID, URL: connectURL(c), TTL: c.TokenTTL})
	if err != nil {
		fmt.Fprintf(stderr, "collector token issue: %v\n", err)
		return 2
	}
	if created {
		fmt.Fprintf(stderr, "created the signing key %s\n", key.Path())
	}
	expiry := "no expiry"
	if claims.Exp != nil {
		expiry = "expires " + time.Unix(int64(*claims.Exp), 0).UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(stderr, "token for workspace %s, jti %s, %s; revoke with: collector token revoke -data-dir %s %s\n",
		claims.WID, claims.JTI, expiry, c.DataDir, claims.JTI)
	if c.JWKS != "" {
		fmt.Fprintln(stderr, "warning: -jwks is set: a collector with -jwks trusts that key set, not this data directory's key")
	}
	fmt.Fprintln(stdout, token)
	return 0
}

// tokenRevokeCmd adds a token id to the revocation list that serve reads: -revoked-jti, or the
// data directory's list when neither -revoked-jti nor -jwks is given, and the Redis set with
// -redis.
func tokenRevokeCmd(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	c, fs, code := loadConfig("token revoke", args, env, stderr)
	if code >= 0 {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: collector token revoke [flags] [--] JTI (\"--\" before an id that begins with '-')")
		return 2
	}
	jti := fs.Arg(0)
	if !query.ValidJTI(jti) {
		fmt.Fprintln(stderr, "collector token revoke: a token id is 1-256 printable characters without spaces")
		return 2
	}
	path := revocationFile(c)
	if path == "" && c.Redis == "" {
		fmt.Fprintln(stderr, "collector token revoke: -jwks is set and no revocation list is: give -revoked-jti or -redis, as serve has them")
		return 2
	}
	if path != "" {
		if err := (&query.FileRevoker{Path: path}).Revoke(jti); err != nil {
			fmt.Fprintf(stderr, "collector token revoke: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "revoked %s in %s\n", jti, path)
	}
	if c.Redis != "" {
		opts, err := redis.ParseURL(c.Redis)
		if err != nil {
			fmt.Fprintf(stderr, "collector token revoke: %v\n", redactURLError(err))
			return 2
		}
		rdb := redis.NewClient(opts)
		defer rdb.Close()
		rctx, cancel := withTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := (&query.RedisRevoker{Client: rdb}).Revoke(rctx, jti); err != nil {
			fmt.Fprintf(stderr, "collector token revoke: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "revoked %s in the Redis set revoked_jti\n", jti)
	}
	return 0
}

// localKeyDir holds the data directory's own signing key and its revocation list.
func localKeyDir(c *config) string { return filepath.Join(c.DataDir, "query") }

// revocationFile is the file of revoked token ids serve reads: -revoked-jti, else, when serve
// trusts the data directory's key (no -jwks), the list next to that key. "" when there is none.
func revocationFile(c *config) string {
	switch {
	case c.RevokedJTI != "":
		return c.RevokedJTI
	case c.JWKS == "":
		return filepath.Join(localKeyDir(c), query.LocalRevokedFile)
	}
	return ""
}

// connectURL is the url claim of a local token: the WebSocket endpoint of the collector that
// -listen and -tls-cert describe, on loopback when it listens on every address.
func connectURL(c *config) string {
	host, port, _ := net.SplitHostPort(c.Listen) // validated by loadConfig
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	scheme := "ws"
	if c.TLSCert != "" {
		scheme = "wss"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/connect/v1"
}
