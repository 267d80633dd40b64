package query

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/testkit"
)

// TestJWKSKnownKidDoesNotWaitForRefresh: while one caller's unknown kid makes the JWKS source
// slow to answer, a caller with a cached kid gets its key at once.
func TestJWKSKnownKidDoesNotWaitForRefresh(t *testing.T) {
	k := testkit.NewKey(t, "k1")
	body := testkit.JWKS(t, k)
	release := make(chan struct{})
	var reads atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if reads.Add(1) > 1 {
			<-release // the refresh hangs until the test lets it go
		}
		w.Write(body)
	}))
	defer srv.Close()
	defer close(release)

	j := &JWKS{Location: srv.URL, MinRefresh: time.Nanosecond}
	ctx := context.Background()
	if _, err := j.Key(ctx, "k1", false); err != nil {
		t.Fatal(err)
	}
	refreshing := make(chan error, 1)
	go func() { _, err := j.Key(ctx, "unknown", true); refreshing <- err }()
	testkit.Eventually(t, 10*time.Second, "the refresh to read the JWKS", func() bool { return reads.Load() >= 2 })
	got := make(chan error, 1)
	go func() { _, err := j.Key(ctx, "k1", false); got <- err }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("cached kid: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cached kid waited for another caller's JWKS read")
	}
	select {
	case err := <-refreshing:
		t.Fatalf("the refresh finished before its read was released: %v", err)
	default:
	}
}

// TestParseJWKSExactNames: a JWKS is read by exact member names, as tokens are: a key whose
// members are spelt in capitals is not a key (encoding/json alone would read it), and a key or
// set that names a member twice is refused, so which of two kids or coordinates counts is never
// a question.
func TestParseJWKSExactNames(t *testing.T) {
	k := testkit.NewKey(t, "k1")
	good := string(testkit.JWKS(t, k))
	set, err := parseJWKS([]byte(good))
	if err != nil || len(set.all) != 1 || set.byKid["k1"] == nil {
		t.Fatalf("the published set: %+v, %v", set, err)
	}
	upper := strings.NewReplacer(`"kty"`, `"KTY"`, `"crv"`, `"CRV"`, `"x"`, `"X"`, `"y"`, `"Y"`, `"kid"`, `"KID"`).Replace(good)
	if set, err := parseJWKS([]byte(upper)); err != nil || len(set.all) != 0 {
		t.Fatalf("members in capitals: %d keys, %v; want none", len(set.all), err)
	}
	twice := strings.Replace(good, `"kid":"k1"`, `"kid":"k1","kid":"k2"`, 1)
	if twice == good {
		t.Fatal("the test did not add a second kid")
	}
	if _, err := parseJWKS([]byte(twice)); err == nil {
		t.Fatal("a key with two kids was accepted")
	}
	if _, err := parseJWKS([]byte(`{"keys":[],"keys":` + good[len(`{"keys":`):len(good)-1] + `}`)); err == nil {
		t.Fatal("a set with two keys members was accepted")
	}
}
