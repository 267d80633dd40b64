package main

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.WriteHeader(http.StatusOK)
		case "/slow":
			time.Sleep(500 * time.Millisecond)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	base := "http://" + ln.Addr().String()

	tests := []struct {
		name, url, wantErr string
	}{
		{name: "healthy", url: base + "/healthz"},
		{name: "not ready", url: base + "/readyz", wantErr: "answered 503"},
		{name: "timeout", url: base + "/slow", wantErr: "cannot reach"},
		{name: "nothing listening", url: "http://127.0.0.1:1/healthz", wantErr: "cannot reach"},
		{name: "not loopback", url: "http://192.0.2.1:8080/healthz", wantErr: "not a loopback address"},
		{name: "a name", url: "http://example.com/healthz", wantErr: "not a loopback address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := check(tc.url, 200*time.Millisecond)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("check(%s) = %v, want error containing %q", tc.url, err, tc.wantErr)
			}
		})
	}
}
