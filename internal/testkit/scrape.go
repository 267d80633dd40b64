package testkit

import (
	"fmt"
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeClient closes each connection after its answer: a kept-alive scrape connection would count
// against the connection limit of the process under test.
var scrapeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// Scraped returns a Gatherer that reads the Prometheus text exposition at url (another process's
// /metrics) at each Gather, so that Metric and MetricOrZero read the metrics of a process the test
// started.
func Scraped(url string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		resp, err := scrapeClient.Get(url)
		if err != nil {
			return nil, fmt.Errorf("cannot scrape %s: %w", url, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("cannot scrape %s: status %d", url, resp.StatusCode)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		byName, err := p.TextToMetricFamilies(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("cannot parse the metrics of %s: %w", url, err)
		}
		out := make([]*dto.MetricFamily, 0, len(byName))
		for _, mf := range byName {
			out = append(out, mf)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
		return out, nil
	})
}
