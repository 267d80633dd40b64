// Package rawhttp sends one HTTP request over a plain TCP connection and reads the answer, for
// tests of answers a server gives before it has read the whole request.
//
// A server that refuses a body by its Content-Length answers and closes without reading the body,
// so a client still writing it gets a broken pipe; net/http's client then sometimes reports that
// write error instead of the answer that already arrived. Answer ignores the write error.
package rawhttp

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Answer writes head (request line and headers, ending in a blank line) and then body to a new
// connection to addr, ignoring a failed body write, and returns the answer's status, headers and
// body. It fails t when it cannot connect or read an answer within 10 s.
func Answer(t testing.TB, addr, head, body string) (int, http.Header, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}
