package query

import (
	"context"
	"net/http"
	"net/http/httptest"
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
