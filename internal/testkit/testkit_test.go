package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_requests_total", Help: "h"}, []string{"code", "op"})
	lat := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "t_seconds", Help: "h"})
	up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "t_up", Help: "h"})
	reg.MustRegister(reqs, lat, up)
	reqs.WithLabelValues("ok", "read").Add(3)
	reqs.WithLabelValues("refused", "read").Add(5)
	lat.Observe(1)
	lat.Observe(2)
	up.Set(7)
	tests := []struct {
		name   string
		metric string
		labels []string
		want   float64
	}{
		{"counter by one label", "t_requests_total", []string{"code", "refused"}, 5},
		{"counter by both labels", "t_requests_total", []string{"op", "read", "code", "ok"}, 3},
		{"histogram sample count", "t_seconds", nil, 2},
		{"gauge", "t_up", nil, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Metric(t, reg, tc.metric, tc.labels...); got != tc.want {
				t.Errorf("Metric(%s%v) = %v, want %v", tc.metric, tc.labels, got, tc.want)
			}
		})
	}
	if got := MetricOrZero(t, reg, "t_requests_total", "code", "never"); got != 0 {
		t.Errorf("MetricOrZero of a series that never moved = %v, want 0", got)
	}
	if _, ok := metric(t, reg, "t_requests_total", []string{"code", "never"}); ok {
		t.Error("a series that never moved was found")
	}
}

func TestEventually(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			time.Sleep(time.Millisecond)
			n.Add(1)
		}
	}()
	Eventually(t, 10*time.Second, "three increments", func() bool { return n.Load() == 3 })
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.yaml")
	WriteFile(t, path, []byte("one"))
	WriteFile(t, path, []byte("two"))
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "two" {
		t.Fatalf("ReadFile = %q, %v; want two", got, err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 1 {
		t.Errorf("%d files in the directory, want only the fixture", len(left))
	}
}

// TestKeySign checks that a token of Key.Sign verifies with the key its JWKS publishes, and that
// a token of another key does not.
func TestKeySign(t *testing.T) {
	k, other := NewKey(t, "k1"), NewKey(t, "k1")
	var set struct {
		Keys []struct{ Kid, X, Y string }
	}
	if err := json.Unmarshal(JWKS(t, k), &set); err != nil || len(set.Keys) != 1 || set.Keys[0].Kid != "k1" {
		t.Fatalf("JWKS %+v, %v", set, err)
	}
	x, _ := b64.DecodeString(set.Keys[0].X)
	y, _ := b64.DecodeString(set.Keys[0].Y)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		t.Fatal(err)
	}
	verifies := func(token string) bool {
		parts := strings.Split(token, ".")
		sig, err := b64.DecodeString(parts[2])
		if len(parts) != 3 || err != nil || len(sig) != 64 {
			t.Fatalf("token %q is not a compact JWS", token)
		}
		d := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		return ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	}
	token := k.Sign(t, k.Header(), ConnectClaims("ws_a", map[string]any{"iss": nil}))
	if !verifies(token) {
		t.Error("a token of the key does not verify with its JWKS")
	}
	if verifies(other.Sign(t, k.Header(), ConnectClaims("ws_a", nil))) {
		t.Error("a token of another key verifies")
	}
	claims, _ := b64.DecodeString(strings.Split(token, ".")[1])
	var c map[string]any
	if err := json.Unmarshal(claims, &c); err != nil || c["wid"] != "ws_a" || c["jti"] != "jti-1" || c["iss"] != nil {
		t.Errorf("claims %s, %v", claims, err)
	}
	raw := k.SignRaw(t, `{"alg":"ES256"}`, `{"wid":"a","wid":"b"}`)
	if p, _ := b64.DecodeString(strings.Split(raw, ".")[1]); string(p) != `{"wid":"a","wid":"b"}` || !verifies(raw) {
		t.Errorf("SignRaw changed the claims text to %s or does not verify", p)
	}
}
