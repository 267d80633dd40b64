// Command healthcheck is the container HEALTHCHECK: it GETs a URL on loopback and exits 0 when
// the answer is 200, 1 otherwise. The distroless image has no shell or curl, hence this binary.
//
//	healthcheck http://127.0.0.1:8080/healthz
package main

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"time"
)

func main() {
	target := "http://127.0.0.1:8080/healthz"
	if len(os.Args) > 1 {
		target = os.Args[1]
	}
	if err := check(target, 3*time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "healthcheck: %v\n", err)
		os.Exit(1)
	}
}

// check GETs target, which must be a loopback address, and returns nil on a 200 answer.
func check(target string, timeout time.Duration) error {
	u, err := url.Parse(target)
	if err != nil {
		return fmt.Errorf("cannot parse %q: %w", target, err)
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address", u.Hostname())
	}
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(target)
	if err != nil {
		return fmt.Errorf("cannot reach %s: %w", target, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d", target, resp.StatusCode)
	}
	return nil
}
