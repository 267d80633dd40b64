package collector

import (
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/kyomi/collector/internal/rawhttp"
)

// TestRequestsTheServerCannotRead covers the answers of ErrorHandler: requests fasthttp refuses
// while reading them get the contract's status and JSON shape, not fasthttp's plain-text 400.
func TestRequestsTheServerCannotRead(t *testing.T) {
	h := newHarness(t, harnessOptions{
		routes: map[string]fasthttp.RequestHandler{
			"/api/query": func(ctx *fasthttp.RequestCtx) { t.Error("the route ran on a refused request") },
		},
		refused: map[string]func(*fasthttp.RequestCtx, int){
			"/api/query": func(ctx *fasthttp.RequestCtx, status int) {
				var c fasthttp.Cookie
				c.SetKey("track")
				c.SetValue("1")
				ctx.Response.Header.SetCookie(&c)
				ctx.SetStatusCode(status)
				ctx.SetContentType("application/json")
				ctx.SetBodyString(`{"type":"error","error":{"code":"route-shape"}}`)
			},
		},
	})
	big := strings.Repeat("x", MaxRequestBytes+1000)
	post := func(path string, extra ...string) string {
		return "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n" + strings.Join(extra, "") +
			"Content-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n"
	}
	chunked := "POST /api/event HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n" +
		strconv.FormatInt(int64(len(big)), 16) + "\r\n"
	cases := []struct {
		name, head, body string
		status           int
		error            string // the {"error": ...} message; "" when the answer has the route's shape
		acao             string
		handler          string // label of collector_http_requests_total
	}{
		{"event body over the server's limit", post("/api/event", "Origin: https://acme.example\r\n"), big,
			413, "body: larger than 262144 bytes", "https://acme.example", handlerEvent},
		{"event body over the limit from another origin", post("/api/event", "Origin: https://evil.example\r\n"), big,
			413, "body: larger than 262144 bytes", "", handlerEvent},
		// fasthttp resets the request when reading a body fails, so only a Content-Length over the
		// limit keeps the path: a chunked body over it gets the answer of no particular path.
		{"chunked event body over the limit", chunked, big, 413, "body: larger than 1048576 bytes", "", handlerOther},
		{"route with its own shape", post("/api/query"), big, 413, "", "", "/api/query"},
		{"other path", post("/nope"), big, 413, "body: larger than 1048576 bytes", "", handlerOther},
		{"garbage request line", "\x16\x03\x01 hello there\r\n\r\n", "", 400, "request: malformed", "", handlerOther},
		{"headers over the read buffer", "POST /api/event HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 16<<10) +
			"\r\nContent-Length: 2\r\n\r\n", "{}", 431, "request: headers too large", "", handlerOther},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.metric("collector_http_requests_total", "handler", tc.handler, "code", strconv.Itoa(tc.status))
			status, hdr, body := rawhttp.Answer(t, h.addr, tc.head, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d; body %.200q", status, tc.status, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tc.error != "" {
				var got struct{ Error string }
				if err := json.Unmarshal([]byte(body), &got); err != nil || got.Error != tc.error {
					t.Errorf("body %q, want {\"error\": %q}", body, tc.error)
				}
			} else if body != `{"type":"error","error":{"code":"route-shape"}}` {
				t.Errorf("body %q, want the route's answer", body)
			}
			if got := hdr.Get("Access-Control-Allow-Origin"); got != tc.acao {
				t.Errorf("Access-Control-Allow-Origin %q, want %q", got, tc.acao)
			}
			if tc.handler == handlerEvent && hdr.Get("Vary") != "Origin" {
				t.Errorf("Vary %q, want Origin", hdr.Get("Vary"))
			}
			for _, k := range []string{"X-Content-Type-Options", "Content-Security-Policy"} {
				if hdr.Get(k) == "" {
					t.Errorf("missing %s", k)
				}
			}
			if hdr.Get("Set-Cookie") != "" {
				t.Error("a cookie was set")
			}
			if strings.Contains(body, "hello") || strings.Contains(body, "aaaa") || strings.Contains(body, "xxxx") {
				t.Errorf("the answer quotes the request: %.200q", body)
			}
			after := h.metric("collector_http_requests_total", "handler", tc.handler, "code", strconv.Itoa(tc.status))
			if after != before+1 {
				t.Errorf("collector_http_requests_total{handler=%q,code=%d} went %v -> %v", tc.handler, tc.status, before, after)
			}
		})
	}
	// The two refused event requests count like the handler's own 413s.
	if got := h.metric("collector_events_rejected_total", "reason", rejectTooLarge); got != 2 {
		t.Errorf("rejected{too_large} = %v, want 2", got)
	}
	if got := h.metric("collector_events_received_total"); got != 2 {
		t.Errorf("received = %v, want 2", got)
	}
	// The connection of a refused request is closed; the server serves on.
	if code, _, _ := h.do(request{body: pv(`"p":{}`), ip: "203.0.113.9"}); code != 202 {
		t.Fatalf("after the refused requests: status %d, want 202", code)
	}
	// A client that connects and closes without a whole request is not counted, on no path.
	for _, sent := range []string{"", "POST /api/event HTTP/1.1\r\nHost: x\r\nContent-Le"} {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte(sent)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		h.waitClosed(c)
	}
	if got := h.metric("collector_http_requests_total", "handler", handlerOther, "code", "400"); got != 1 {
		t.Errorf("requests{other,400} = %v, want 1 (the garbage request line only)", got)
	}
	if got := h.metric("collector_http_requests_total", "handler", handlerEvent, "code", "400"); got != 0 {
		t.Errorf("requests{event,400} = %v, want 0", got)
	}
	if got := h.metric("collector_events_received_total"); got != 3 {
		t.Errorf("received = %v, want 3 (the two refused events and the accepted one)", got)
	}
}
