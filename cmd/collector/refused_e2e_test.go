package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kyomi/collector/internal/rawhttp"
)

// TestOversizedAndMalformedRequests drives the built binary with requests its HTTP server refuses
// before any handler runs: a body over 1 MiB gets 413 in the shape of the path's own errors (not
// fasthttp's plain-text "400 Error when parsing request"), a garbage request line gets 400 JSON.
func TestOversizedAndMalformedRequests(t *testing.T) {
	keys := newConnectKeys(t)
	_, args := e2eEnv(t)
	p := startCollector(t, nil, append(args, "-jwks", keys.jwks)...)
	big := strings.Repeat("x", 2_000_000)

	// Over a raw connection: the server answers as soon as it reads the Content-Length and closes
	// without reading the body (see package rawhttp).
	post := func(t *testing.T, path, origin string) (int, http.Header, string) {
		t.Helper()
		head := "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
		if origin != "" {
			head += "Origin: " + origin + "\r\n"
		}
		head += "Content-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n"
		return rawhttp.Answer(t, p.addr, head, big)
	}

	t.Run("event", func(t *testing.T) {
		code, hdr, body := post(t, "/api/event", "https://acme.example")
		var got struct{ Error string }
		if code != 413 || hdr.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &got) != nil || got.Error == "" {
			t.Fatalf("status %d, Content-Type %q, body %.200q; want 413 application/json {\"error\": ...}", code, hdr.Get("Content-Type"), body)
		}
		if hdr.Get("Access-Control-Allow-Origin") != "https://acme.example" {
			t.Errorf("Access-Control-Allow-Origin %q: the page cannot read the answer", hdr.Get("Access-Control-Allow-Origin"))
		}
	})
	t.Run("query", func(t *testing.T) {
		code, hdr, body := post(t, "/api/query", "")
		var got struct {
			ID    *string `json:"id"`
			Type  string  `json:"type"`
			Error struct{ Code, Message string }
		}
		if code != 413 || hdr.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &got) != nil ||
			got.ID == nil || got.Type != "error" || got.Error.Code != "too_large" || got.Error.Message == "" {
			t.Fatalf("status %d, Content-Type %q, body %.200q; want 413 with a Connect error too_large", code, hdr.Get("Content-Type"), body)
		}
	})
	t.Run("garbage request line", func(t *testing.T) {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "\x16\x03\x01 hello there\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		raw, _ := io.ReadAll(c) // the server answers and closes
		if !strings.HasPrefix(string(raw), "HTTP/1.1 400 ") || !strings.Contains(string(raw), "Content-Type: application/json") ||
			!strings.HasSuffix(string(raw), `{"error":"request: malformed"}`) {
			t.Fatalf("answer %q, want 400 with {\"error\": ...}", raw)
		}
	})

	checkMetrics(t, p, []series{
		{"collector_events_rejected_total", []string{"reason", "too_large"}, 1},
		{"collector_http_requests_total", []string{"code", "413", "handler", "event"}, 1},
		{"collector_http_requests_total", []string{"code", "413", "handler", "/api/query"}, 1},
		{"collector_query_errors_total", []string{"code", "too_large"}, 1},
		{"collector_http_requests_total", []string{"code", "400", "handler", "other"}, 1},
	})
	if code, _, _ := p.send(t, beacon{body: `{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`, ip: "203.0.113.9", ua: chromeUA}); code != 202 {
		t.Fatalf("after the refused requests: status %d, want 202", code)
	}
}

// TestFailedStartClosesTheSpool starts the binary on a port another socket holds: the start
// fails after the spool and its shipper are open, and must close them as a shutdown would, which
// removes the spool's ring from its directory (a ring left behind is a crash's, to recover).
func TestFailedStartClosesTheSpool(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the built binary; run without -short")
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, args := e2eEnv(t)
	ringDir := t.TempDir()
	cmd := exec.Command(binPath, append([]string{"serve", "-listen", busy.Addr().String(), "-spool-ring-dir", ringDir}, args...)...)
	out, err := cmd.CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "cannot listen on") {
		t.Fatalf("exit code %d, want 1 naming the busy port:\n%s", code, out)
	}
	left, err := os.ReadDir(ringDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("the failed start left %v in the ring directory: the spool was not closed", left)
	}
}
