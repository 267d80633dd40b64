package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// visibleMetric is the collector's per-event histogram of the time from an event's spool append
// (before the fsync that precedes its 202) to the return of the INSERT that stored it. The
// embedded engine inserts synchronously, so a row is queryable once that INSERT returns: the
// histogram is an upper bound of the 202-to-queryable delay of every stored event.
const visibleMetric = "collector_sink_event_visible_seconds"

// freshnessReport is the delay from acknowledgement to queryable for the events of one run,
// read from the difference of the collector's histogram before and after the run.
type freshnessReport struct {
	Events uint64  `json:"events"`
	P50    float64 `json:"p50_seconds"`
	P99    float64 `json:"p99_seconds"`
	P999   float64 `json:"p99_9_seconds"`
	// Over2s is the share of events above the 2 s objective of issue 9 (2 is a bucket bound).
	Over2s float64 `json:"share_over_2s"`
}

// bucket is one cumulative histogram bucket: events with a value <= le.
type bucket struct {
	le    float64
	count float64
}

// scrapeHistogram fetches url (a Prometheus text endpoint on loopback) and returns the buckets
// of the histogram name in ascending le order.
func scrapeHistogram(ctx context.Context, url, name string) ([]bucket, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot scrape %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cannot scrape %s: status %d", url, resp.StatusCode)
	}
	return parseHistogram(resp.Body, name)
}

// parseHistogram reads the buckets of histogram name from Prometheus text format.
func parseHistogram(r io.Reader, name string) ([]bucket, error) {
	var out []bucket
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	prefix := name + `_bucket{le="`
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		le, tail, ok := strings.Cut(rest, `"}`)
		if !ok {
			return nil, fmt.Errorf("cannot parse %q", line)
		}
		bound := math.Inf(1)
		if le != "+Inf" {
			v, err := strconv.ParseFloat(le, 64)
			if err != nil {
				return nil, fmt.Errorf("cannot parse bucket bound in %q: %w", line, err)
			}
			bound = v
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(tail), 64)
		if err != nil {
			return nil, fmt.Errorf("cannot parse bucket count in %q: %w", line, err)
		}
		out = append(out, bucket{le: bound, count: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read metrics: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no histogram %s in the metrics (a collector without it is older than the freshness metric)", name)
	}
	slices.SortFunc(out, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	return out, nil
}

// freshnessBetween returns the report of the events counted between two scrapes.
func freshnessBetween(before, after []bucket) freshnessReport {
	d := make([]bucket, len(after))
	for i, b := range after {
		d[i] = b
		for _, o := range before {
			if o.le == b.le {
				d[i].count -= o.count
			}
		}
	}
	var rep freshnessReport
	if len(d) == 0 || d[len(d)-1].count <= 0 {
		return rep
	}
	total := d[len(d)-1].count
	rep.Events = uint64(total)
	rep.P50, rep.P99, rep.P999 = quantileOf(d, 0.5), quantileOf(d, 0.99), quantileOf(d, 0.999)
	for _, b := range d {
		if b.le == 2 {
			rep.Over2s = (total - b.count) / total
		}
	}
	return rep
}

// quantileOf interpolates linearly inside the bucket that holds quantile q, as Prometheus's
// histogram_quantile does; in the +Inf bucket it answers the highest finite bound.
func quantileOf(d []bucket, q float64) float64 {
	rank := q * d[len(d)-1].count
	lo, below := 0.0, 0.0
	for _, b := range d {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return lo
			}
			if b.count == below {
				return b.le
			}
			return lo + (b.le-lo)*(rank-below)/(b.count-below)
		}
		lo, below = b.le, b.count
	}
	return lo
}
