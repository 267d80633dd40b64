package collector

import (
	"fmt"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kyomi/collector/collector/bot"
)

// Handler labels of collector_http_requests_total; injected routes use their path.
const (
	handlerEvent   = "event"
	handlerHealthz = "healthz"
	handlerReadyz  = "readyz"
	handlerMetrics = "metrics"
	handlerOther   = "other"
)

// Rejection reasons: the label of collector_events_rejected_total, one per refusing answer.
const (
	rejectBadRequest = "bad_request"       // 400
	rejectMethod     = "method"            // 405
	rejectForbidden  = "forbidden"         // 403
	rejectTooLarge   = "too_large"         // 413
	rejectRateClient = "rate_limited"      // 429, per client
	rejectRateWS     = "rate_limited_ws"   // 429, per workspace
	rejectSalt       = "salt_unavailable"  // 503
	rejectSpool      = "spool_unavailable" // 503
)

var rejectReasons = []string{rejectBadRequest, rejectMethod, rejectForbidden, rejectTooLarge,
	rejectRateClient, rejectRateWS, rejectSalt, rejectSpool}

type metrics struct {
	hot      hotCounts // received, accepted, duration
	dropped  map[string]prometheus.Counter
	droppedV *prometheus.CounterVec
	rejected map[string]prometheus.Counter
	requests *prometheus.CounterVec

	// codes caches the request counters per handler and status code, so that counting does not
	// allocate label values on the hot path. The map is never changed once published: a code not
	// in it (rare: the common ones are made up front) publishes a copy, under mu. Reading it is a
	// plain load, where a read lock was two atomic writes to one cache line that every request,
	// from every core, wrote.
	mu    sync.Mutex
	codes atomic.Pointer[map[codeKey]prometheus.Counter]
}

type codeKey struct {
	handler string
	code    int
}

func newMetrics(reg prometheus.Registerer, routes []string) (*metrics, error) {
	m := &metrics{
		hot: hotCounts{
			received: prometheus.NewDesc("collector_events_received_total",
				"Event requests (POST /api/event) received, whatever their outcome.", nil, nil),
			accepted: prometheus.NewDesc("collector_events_accepted_total",
				"Events made durable in the spool and answered 202 (one per domain of a multi-domain event).", nil, nil),
			duration: prometheus.NewDesc("collector_event_duration_seconds",
				"Time to answer an event request, from routing to the answer (spool append included).", nil, nil),
		},
		droppedV: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "collector_events_dropped_total",
			Help: "Events answered 202 but not stored, by filter reason (bot_ua, spam_referrer, ...).",
		}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "collector_http_requests_total",
			Help: "HTTP requests answered, by handler and status code.",
		}, []string{"handler", "code"}),
		dropped:  map[string]prometheus.Counter{},
		rejected: map[string]prometheus.Counter{},
	}
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "collector_events_rejected_total",
		Help: "Event requests refused, by reason (bad_request 400, forbidden 403, too_large 413, rate_limited 429, ...).",
	}, []string{"reason"})
	for _, r := range bot.Reasons() {
		m.dropped[r] = m.droppedV.WithLabelValues(r)
	}
	for _, r := range rejectReasons {
		m.rejected[r] = rejected.WithLabelValues(r)
	}
	codes := map[codeKey]prometheus.Counter{}
	for _, h := range append([]string{handlerEvent, handlerHealthz, handlerReadyz, handlerMetrics, handlerOther}, routes...) {
		for _, c := range []int{200, 202, 204, 400, 403, 404, 405, 413, 429, 503} {
			codes[codeKey{h, c}] = m.requests.WithLabelValues(h, strconv.Itoa(c))
		}
	}
	m.codes.Store(&codes)
	if reg != nil {
		for _, c := range []prometheus.Collector{&m.hot, m.droppedV, rejected, m.requests} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("cannot register collector metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) drop(reason string) {
	if c, ok := m.dropped[reason]; ok {
		c.Inc()
		return
	}
	m.droppedV.WithLabelValues(reason).Inc() // a reason added to bot later
}

func (m *metrics) reject(reason string) { m.rejected[reason].Inc() }

func (m *metrics) code(handler string, code int) {
	k := codeKey{handler, code}
	c, ok := (*m.codes.Load())[k]
	if !ok {
		c = m.requests.WithLabelValues(handler, strconv.Itoa(code))
		m.mu.Lock()
		old := *m.codes.Load()
		codes := make(map[codeKey]prometheus.Counter, len(old)+1)
		maps.Copy(codes, old)
		codes[k] = c
		m.codes.Store(&codes)
		m.mu.Unlock()
	}
	c.Inc()
}

// durationBounds are the bucket upper bounds of collector_event_duration_seconds.
var durationBounds = [...]float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5}

// hotStripes is how many stripes hotCounts keeps.
const hotStripes = 8

// hotCounts are the counts every event request updates: collector_events_received_total,
// collector_events_accepted_total and collector_event_duration_seconds. A request adds to the
// stripe of its pooled eventState; sync.Pool hands each core back the states it put, so each core
// mostly writes a stripe of its own. With one Prometheus counter or histogram each, both cores
// wrote the same cache lines on every request: BenchmarkEventHandlerParallel at -cpu 2 is 13 %
// faster with the stripes (BENCHMARKS.md, "Stop 21"). Collect sums the stripes.
type hotCounts struct {
	stripes                      [hotStripes]hotStripe
	next                         atomic.Uint32 // round robin over stripes, for new states
	received, accepted, duration *prometheus.Desc
}

// hotStripe is one stripe of hotCounts, alone on its cache lines.
type hotStripe struct {
	_        [64]byte
	received atomic.Uint64
	accepted atomic.Uint64
	count    atomic.Uint64 // duration observations
	sumNanos atomic.Uint64
	buckets  [len(durationBounds)]atomic.Uint64 // observations per bucket, not cumulative
}

// stripe returns the next stripe in turn.
func (h *hotCounts) stripe() *hotStripe {
	return &h.stripes[h.next.Add(1)%hotStripes]
}

// observe counts one event request that took d.
func (st *hotStripe) observe(d time.Duration) {
	st.count.Add(1)
	st.sumNanos.Add(uint64(max(d, 0)))
	sec := d.Seconds()
	for i, b := range durationBounds {
		if sec <= b {
			st.buckets[i].Add(1)
			return
		}
	}
}

// Describe implements prometheus.Collector.
func (h *hotCounts) Describe(ch chan<- *prometheus.Desc) {
	ch <- h.received
	ch <- h.accepted
	ch <- h.duration
}

// Collect implements prometheus.Collector: the sums of the stripes.
func (h *hotCounts) Collect(ch chan<- prometheus.Metric) {
	var received, accepted, count, sum uint64
	var buckets [len(durationBounds)]uint64
	for i := range h.stripes {
		st := &h.stripes[i]
		received += st.received.Load()
		accepted += st.accepted.Load()
		count += st.count.Load()
		sum += st.sumNanos.Load()
		for j := range buckets {
			buckets[j] += st.buckets[j].Load()
		}
	}
	cumulative := make(map[float64]uint64, len(buckets))
	var below uint64
	for j, b := range durationBounds {
		below += buckets[j]
		cumulative[b] = below
	}
	ch <- prometheus.MustNewConstMetric(h.received, prometheus.CounterValue, float64(received))
	ch <- prometheus.MustNewConstMetric(h.accepted, prometheus.CounterValue, float64(accepted))
	// A scrape can see an observation's count before its bucket: the +Inf bucket (count) is
	// never below the finite ones.
	ch <- prometheus.MustNewConstHistogram(h.duration, max(count, below), float64(sum)/1e9, cumulative)
}
