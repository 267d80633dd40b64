package testkit

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scraped returns a Gatherer that reads the Prometheus text exposition at rawURL (http://host:port
// and path: another process's /metrics) at each Gather, so that Metric and MetricOrZero read the
// metrics of a process the test started.
//
// Each scrape asks the server to close its connection and reads until it has: when Gather
// returns, the server no longer counts that connection (as collector_http_open_connections does)
// and it takes no place under a connection limit.
func Scraped(rawURL string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		u, err := url.Parse(rawURL)
		if err != nil || u.Scheme != "http" {
			return nil, fmt.Errorf("cannot scrape %q: not an http:// URL", rawURL)
		}
		c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
		if err != nil {
			return nil, fmt.Errorf("cannot scrape %s: %w", rawURL, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", u.RequestURI(), u.Host); err != nil {
			return nil, fmt.Errorf("cannot scrape %s: %w", rawURL, err)
		}
		raw, err := io.ReadAll(c) // to the server's close
		if err != nil {
			return nil, fmt.Errorf("cannot scrape %s: %w", rawURL, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
		if err != nil {
			return nil, fmt.Errorf("cannot scrape %s: %w", rawURL, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("cannot scrape %s: status %d", rawURL, resp.StatusCode)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		byName, err := p.TextToMetricFamilies(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("cannot parse the metrics of %s: %w", rawURL, err)
		}
		out := make([]*dto.MetricFamily, 0, len(byName))
		for _, mf := range byName {
			out = append(out, mf)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
		return out, nil
	})
}
