package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kyomi/collector/collector/enrich"
	"github.com/kyomi/collector/collector/enrich/geotest"
)

// e2eEnv writes a workspaces file and a small GeoIP2 database into a fresh directory and returns
// the serve flags that use them with a fresh data directory.
func e2eEnv(t *testing.T) (dataDir string, args []string) {
	t.Helper()
	dir := t.TempDir()
	dataDir = filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "workspaces.yaml")
	ws, err := os.ReadFile("../../testdata/workspaces.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, ws, 0o644); err != nil {
		t.Fatal(err)
	}
	geo := filepath.Join(dir, "geo.mmdb")
	if err := geotest.Write(geo, map[string]enrich.Geo{
		"203.0.113.0/24": {CountryCode: "NZ", Region: "AUK", City: "Auckland"},
		"2001:db8::/32":  {CountryCode: "DE", Region: "BE", City: "Berlin"},
	}); err != nil {
		t.Fatal(err)
	}
	return dataDir, []string{"-config", cfg, "-data-dir", dataDir, "-geoip", geo,
		"-trusted-proxies", "127.0.0.1/32,::1/128", "-batch-age", "200ms"}
}

// TestEventBecomesRow drives the built binary: accepted, rejected and filtered beacons, a clean
// SIGTERM, then `collector sql` on the data directory. Only the accepted pageview is stored, with
// every enriched field filled.
func TestEventBecomesRow(t *testing.T) {
	dataDir, args := e2eEnv(t)
	p := startCollector(t, nil, args...)

	cases := []struct {
		name    string
		b       beacon
		code    int
		dropped string // expected X-Collector-Dropped, "" for none
	}{
		{"pageview with UTM", beacon{
			body: `{"n":"pageview","u":"https://acme.example/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=launch&secret=1","d":"acme.example","r":"https://www.google.com/search?q=x"}`,
			ip:   "203.0.113.7", ua: chromeUA, origin: "https://acme.example"}, 202, ""},
		{"unconfigured domain", beacon{body: `{"n":"pageview","u":"https://evil.example/","d":"evil.example"}`, ip: "203.0.113.8", ua: chromeUA}, 403, ""},
		{"origin of another site", beacon{body: `{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`, ip: "203.0.113.8", ua: chromeUA, origin: "https://globex.example"}, 403, ""},
		{"malformed JSON", beacon{body: `{"n":"pageview","u":`, ip: "203.0.113.9", ua: chromeUA}, 400, ""},
		{"bot user agent", beacon{body: `{"n":"pageview","u":"https://acme.example/","d":"acme.example"}`, ip: "203.0.113.10",
			ua: "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}, 202, "bot_ua"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, body := p.send(t, tc.b)
			if code != tc.code {
				t.Fatalf("status %d, want %d (body %s)", code, tc.code, body)
			}
			if got := hdr.Get("X-Collector-Dropped"); got != tc.dropped {
				t.Fatalf("X-Collector-Dropped %q, want %q", got, tc.dropped)
			}
			if hdr.Get("Set-Cookie") != "" {
				t.Fatal("the collector set a cookie")
			}
		})
	}
	if err := p.stop(syscall.SIGTERM, 60*time.Second); err != nil {
		t.Fatalf("collector exited with %v after SIGTERM\n%s", err, p.logs.String())
	}

	rows := sql(t, dataDir, "SELECT workspace_id, domain, name, pathname, toUInt8(visitor_id != 0), retention_days, browser, os, device, "+
		"country_code, city, referrer_source, utm_source, utm_medium, utm_campaign FROM analytics.events FORMAT TSV")
	want := "ws_acme\tacme.example\tpageview\t/pricing\t1\t395\tChrome\tWindows\tDesktop\tNZ\tAuckland\tnewsletter\tnewsletter\temail\tlaunch"
	if len(rows) != 1 || rows[0] != want {
		t.Fatalf("stored rows:\n%s\nwant exactly:\n%s", strings.Join(rows, "\n"), want)
	}
}

// TestNoIPInDataOrLogs sends events from known addresses and user agents, then searches every file
// under the data directory and every log line for them, as text and in binary form.
func TestNoIPInDataOrLogs(t *testing.T) {
	dataDir, args := e2eEnv(t)
	p := startCollector(t, nil, args...)
	ips := []string{"203.0.113.77", "2001:db8:1234:5678::99"}
	ua := "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.91 Safari/537.36 PrivacyMarker/7"
	for i, ip := range ips {
		code, _, body := p.send(t, beacon{body: `{"n":"pageview","u":"https://acme.example/a?x=1","d":"acme.example"}`, ip: ip, ua: ua})
		if code != 202 {
			t.Fatalf("event %d: status %d %s", i, code, body)
		}
		// A rejected event must not leak the address either.
		if code, _, _ := p.send(t, beacon{body: `{"n":"pageview","u":"https://nope.example/","d":"nope.example"}`, ip: ip, ua: ua}); code != 403 {
			t.Fatalf("want 403, got %d", code)
		}
	}
	if err := p.stop(syscall.SIGTERM, 60*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if n := sql(t, dataDir, "SELECT count() FROM analytics.events"); len(n) != 1 || n[0] != "2" {
		t.Fatalf("stored %v rows, want 2", n)
	}

	assertNoRawClientData(t, dataDir, p.logs.String(), ips, []string{"PrivacyMarker/7"}, true)
}

// assertNoRawClientData searches the logs and every regular file under dataDir for the client IPs
// (as text, IPv6 also fully expanded, and in 16-byte binary form) and for the user-agent markers.
// With ipv4Bytes the 4-byte binary form of an IPv4 address is searched too: only in a small data
// directory, since four given bytes turn up by chance in megabytes of compressed ClickHouse parts.
func assertNoRawClientData(t *testing.T, dataDir, logs string, ips, uaMarkers []string, ipv4Bytes bool) {
	t.Helper()
	type needle struct {
		what string
		b    []byte
	}
	var needles []needle
	for _, s := range ips {
		a := netip.MustParseAddr(s)
		a16 := a.As16()
		needles = append(needles, needle{s, []byte(s)}, needle{s + " (16 bytes)", a16[:]})
		if a.Is6() {
			needles = append(needles, needle{s + " (expanded)", []byte(a.StringExpanded())})
		} else if ipv4Bytes {
			needles = append(needles, needle{s + " (4 bytes)", a.AsSlice()})
		}
	}
	for _, m := range uaMarkers {
		needles = append(needles, needle{m, []byte(m)})
	}
	for _, line := range strings.Split(logs, "\n") {
		for _, n := range needles {
			if strings.Contains(line, string(n.b)) {
				t.Errorf("log line contains %s: %s", n.what, line)
			}
		}
	}
	files := 0
	err := filepath.WalkDir(dataDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		files++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(data, n.b) {
				t.Errorf("%s contains %s", path, n.what)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("cannot search %s: %v", dataDir, err)
	}
	if files < 10 {
		t.Fatalf("searched only %d files: the data directory is not where the data is", files)
	}
}
