package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kyomi/collector/internal/testkit"
)

// metrics reads the process's /metrics at each Gather, for testkit.Metric and MetricOrZero.
func (p *proc) metrics() prometheus.Gatherer { return testkit.Scraped("http://" + p.addr + "/metrics") }

// series is one sample of /metrics an e2e test expects: the metric name, its label name/value
// pairs and its value.
type series struct {
	name   string
	labels []string
	want   float64
}

// checkMetrics reports each sample of want whose value on p's /metrics differs (a series that
// never moved counts as 0).
func checkMetrics(t *testing.T, p *proc, want []series) {
	t.Helper()
	for _, s := range want {
		if got := testkit.MetricOrZero(t, p.metrics(), s.name, s.labels...); got != s.want {
			t.Errorf("%s%q = %v, want %v", s.name, s.labels, got, s.want)
		}
	}
}

// TestMetricNames scrapes /metrics of the binary with the query path on: our metric families start
// collector_, the Go runtime's and the process's keep client_golang's standard go_ and process_
// names (DESIGN 3.6), and none of them carries our prefix.
func TestMetricNames(t *testing.T) {
	_, args := e2eEnv(t)
	p := startCollector(t, nil, append(args, "-jwks", newConnectKeys(t).jwks)...)
	// A query without a token, so that the query path's labelled counters have a series.
	qr, err := http.Post("http://"+p.addr+"/api/query", "application/json", strings.NewReader(`{"id":"q1","op":"ping"}`))
	if err != nil {
		t.Fatalf("POST /api/query: %v", err)
	}
	qr.Body.Close()
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	families := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		// Every family has a "# TYPE name type" line; samples are checked too, in case one has none.
		name, _, _ := strings.Cut(sc.Text(), " ")
		if rest, ok := strings.CutPrefix(sc.Text(), "# TYPE "); ok {
			name, _, _ = strings.Cut(rest, " ")
			families[name] = true
		} else if strings.HasPrefix(name, "#") {
			continue
		}
		name, _, _ = strings.Cut(name, "{")
		switch {
		case strings.HasPrefix(name, "collector_go_"), strings.HasPrefix(name, "collector_process_"):
			t.Errorf("%q: the runtime's and the process's metrics keep their standard names", name)
		case !strings.HasPrefix(name, "collector_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_"):
			t.Errorf("%q does not start collector_, go_ or process_", name)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"collector_events_received_total", "collector_query_requests_total",
		"go_goroutines", "go_gc_duration_seconds", "process_cpu_seconds_total",
		"process_resident_memory_bytes"} {
		if !families[name] {
			t.Errorf("/metrics has no %s (of %d families)", name, len(families))
		}
	}
}

// TestMetricsCountKnownTraffic sends a known mix and checks the exact counter values.
func TestMetricsCountKnownTraffic(t *testing.T) {
	_, args := e2eEnv(t)
	p := startCollector(t, nil, args...)
	page := `{"n":"pageview","u":"https://acme.example/m","d":"acme.example"}`
	for i := 0; i < 3; i++ {
		if code, _, _ := p.send(t, beacon{body: page, ip: fmt.Sprintf("203.0.113.%d", i+1), ua: chromeUA}); code != 202 {
			t.Fatalf("want 202, got %d", code)
		}
	}
	p.send(t, beacon{body: page, ip: "203.0.113.50", ua: "curl/8.5.0"})
	p.send(t, beacon{body: page, ip: "203.0.113.51", ua: "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"})
	p.send(t, beacon{body: `{"n":"pageview","u":"https://x.example/","d":"x.example"}`, ip: "203.0.113.52", ua: chromeUA})
	p.send(t, beacon{body: `{"n":`, ip: "203.0.113.53", ua: chromeUA})
	p.send(t, beacon{body: `{"n":"pageview","u":"https://acme.example/","d":"acme.example","r":"https://semalt.com/"}`, ip: "203.0.113.54", ua: chromeUA})

	checkMetrics(t, p, []series{
		{"collector_events_received_total", nil, 8},
		{"collector_events_accepted_total", nil, 3},
		{"collector_events_dropped_total", []string{"reason", "bot_ua"}, 2},
		{"collector_events_dropped_total", []string{"reason", "spam_referrer"}, 1},
		{"collector_events_rejected_total", []string{"reason", "forbidden"}, 1},
		{"collector_events_rejected_total", []string{"reason", "bad_request"}, 1},
		{"collector_http_requests_total", []string{"code", "202", "handler", "event"}, 6},
		{"collector_http_requests_total", []string{"code", "403", "handler", "event"}, 1},
		{"collector_http_requests_total", []string{"code", "400", "handler", "event"}, 1},
		{"collector_event_duration_seconds", nil, 8}, // the histogram's count
		{"collector_spool_records_appended_total", nil, 3},
	})
	// The shipper flushes within -batch-age; the rows it wrote are counted.
	testkit.Eventually(t, 10*time.Second, "collector_sink_rows_flushed_total = 3", func() bool {
		return testkit.MetricOrZero(t, p.metrics(), "collector_sink_rows_flushed_total") == 3
	})
}

// TestSIGHUPAppliesNewDomain edits the workspaces file and sends SIGHUP: the new domain is accepted
// without a restart; a broken file afterwards keeps the last good configuration.
func TestSIGHUPAppliesNewDomain(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ws.yaml")
	write := func(s string) { t.Helper(); testkit.WriteFile(t, cfg, []byte(s)) }
	base := "tiers:\n  free: { retention_days: 30 }\nworkspaces:\n  - id: ws_a\n    tier: free\n    domains: [a.example]\n"
	write(base)
	p := startCollector(t, nil, "-config", cfg, "-data-dir", filepath.Join(dir, "data"), "-trusted-proxies", "127.0.0.1/32")
	ev := beacon{body: `{"n":"pageview","u":"https://new.example/","d":"new.example"}`, ip: "203.0.113.1", ua: chromeUA}
	if code, _, _ := p.send(t, ev); code != 403 {
		t.Fatalf("unconfigured domain: %d, want 403", code)
	}
	write(base + "  - id: ws_new\n    tier: free\n    domains: [new.example]\n")
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitStatus(t, p, ev, 202)

	write("workspaces: [ this is not yaml")
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	testkit.Eventually(t, 10*time.Second, "the broken file to be rejected", func() bool {
		return testkit.MetricOrZero(t, p.metrics(), "collector_config_reloads_total", "result", "failure") >= 1
	})
	if code, _, _ := p.send(t, ev); code != 202 {
		t.Fatalf("after a broken file: %d, want the previous configuration (202)", code)
	}
	if !strings.Contains(p.logs.String(), "workspaces file rejected") {
		t.Fatalf("the failed reload was not logged:\n%s", p.logs.String())
	}
}

// waitStatus sends b until it is answered want.
func waitStatus(t *testing.T, p *proc, b beacon, want int) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, fmt.Sprintf("an answer %d", want), func() bool {
		code, _, _ := p.send(t, b)
		return code == want
	})
}

// TestFloodFromOneClientIsLimited floods from one address: it gets 429s while another client
// keeps getting 202s.
func TestFloodFromOneClientIsLimited(t *testing.T) {
	_, args := e2eEnv(t)
	p := startCollector(t, nil, append(args, "-rate-client", "5")...)
	ev := `{"n":"pageview","u":"https://acme.example/f","d":"acme.example"}`
	limited := 0
	for i := 0; i < 40; i++ {
		if code, _, _ := p.send(t, beacon{body: ev, ip: "198.51.100.66", ua: chromeUA}); code == 429 {
			limited++
		}
	}
	if limited < 20 {
		t.Fatalf("only %d of 40 flood events were limited", limited)
	}
	if code, _, _ := p.send(t, beacon{body: ev, ip: "198.51.100.67", ua: chromeUA}); code != 202 {
		t.Fatalf("another client got %d during the flood, want 202", code)
	}
	if got := testkit.MetricOrZero(t, p.metrics(), "collector_events_rejected_total", "reason", "rate_limited"); got != float64(limited) {
		t.Fatalf("rate_limited counter %v, want %d", got, limited)
	}
}

// TestSlowClientIsCutOff sends headers one byte at a time: the read timeout closes the connection.
func TestSlowClientIsCutOff(t *testing.T) {
	_, args := e2eEnv(t)
	p := startCollector(t, nil, append(args, "-read-timeout", "1s")...)
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	req := "POST /api/event HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nX-Padding: " + strings.Repeat("a", 200)
	closed := false
	for i := 0; i < len(req) && time.Since(start) < 20*time.Second; i++ {
		if _, err := conn.Write([]byte{req[i]}); err != nil {
			closed = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !closed {
		// Writes may still succeed into the socket buffer; a read tells whether the server hung up.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(conn)
		closed = err == nil || !isTimeout(err)
	}
	if !closed {
		t.Fatal("the slow client was never cut off")
	}
	if el := time.Since(start); el > 8*time.Second {
		t.Fatalf("cut off after %s, want about the 1s read timeout", el)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestTLS serves HTTPS: TLS 1.3 works, TLS 1.1 is refused, and SIGHUP picks up a new certificate.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := testkit.WriteCert(t, certFile, keyFile).SerialNumber
	_, args := e2eEnv(t)
	p := startCollectorNoWait(t, nil, append(args, "-tls-cert", certFile, "-tls-key", keyFile)...)

	dial := func(min, max uint16) (*tls.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", p.addr,
			&tls.Config{InsecureSkipVerify: true, MinVersion: min, MaxVersion: max})
	}
	var conn *tls.Conn
	testkit.Eventually(t, 60*time.Second, "a TLS 1.3 handshake", func() bool {
		var err error
		conn, err = dial(tls.VersionTLS13, tls.VersionTLS13)
		return err == nil
	})
	st := conn.ConnectionState()
	conn.Close()
	if st.Version != tls.VersionTLS13 || st.PeerCertificates[0].SerialNumber.Cmp(first) != 0 {
		t.Fatalf("version %x serial %v", st.Version, st.PeerCertificates[0].SerialNumber)
	}
	if c, err := dial(tls.VersionTLS11, tls.VersionTLS11); err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Get("https://" + p.addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatal("no HSTS header over TLS")
	}

	second := testkit.WriteCert(t, certFile, keyFile).SerialNumber
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	testkit.Eventually(t, 10*time.Second, "the replaced certificate after SIGHUP", func() bool {
		c, err := dial(tls.VersionTLS13, tls.VersionTLS13)
		if err != nil {
			return false
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(second) == 0
	})
}

// TestConnectionLimitSheds holds -max-conns keep-alive connections open: the next connection is
// answered 503 and closed, counted in collector_http_rejected_connections_total, and the held
// connections keep working.
func TestConnectionLimitSheds(t *testing.T) {
	_, args := e2eEnv(t)
	p := startCollector(t, nil, append(args, "-max-conns", "3")...)
	// /readyz polling may leave a keep-alive connection of the default client open: close it, and
	// wait until the server has let it go (a scrape closes its own before it returns).
	http.DefaultClient.CloseIdleConnections()
	testkit.Eventually(t, 10*time.Second, "no connection open but the scrape's own", func() bool {
		return testkit.Metric(t, p.metrics(), "collector_http_open_connections") == 1
	})
	req := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		if status := readStatus(t, c); status != 200 {
			t.Fatalf("held connection: status %d", status)
		}
		held = append(held, c)
	}
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if status := readStatus(t, c); status != 503 {
		t.Fatalf("connection over the limit: status %d, want 503", status)
	}
	hangUp(t, c)
	for _, h := range held[1:] {
		hangUp(t, h)
	}
	if _, err := held[0].Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	if status := readStatus(t, held[0]); status != 200 {
		t.Fatalf("held connection after the overload: status %d", status)
	}
	hangUp(t, held[0])
	// No connection is left, so the scrape is not shed and counted itself.
	if v := testkit.Metric(t, p.metrics(), "collector_http_rejected_connections_total"); v != 1 {
		t.Fatalf("collector_http_rejected_connections_total = %v, want 1", v)
	}
}

// hangUp closes the writing half of c and reads until the server has closed the connection too:
// the server then no longer counts it.
func hangUp(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); isTimeout(err) {
		t.Fatal("the server kept the connection open after the client closed its side")
	}
}

// readStatus reads one HTTP answer's status line from c.
func readStatus(t *testing.T, c net.Conn) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestOversizedHeadersRefused sends 16 KiB of headers: the answer is 431 and the process serves on.
func TestOversizedHeadersRefused(t *testing.T) {
	_, args := e2eEnv(t)
	p := startCollector(t, nil, args...)
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "POST /api/event HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\nContent-Length: 2\r\n\r\n{}"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	if status := readStatus(t, c); status != 431 {
		t.Fatalf("16 KiB of headers: status %d, want 431", status)
	}
	if code, _, _ := p.send(t, beacon{body: `{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`, ip: "203.0.113.9", ua: chromeUA}); code != 202 {
		t.Fatalf("after the oversized request: status %d, want 202", code)
	}
}
