package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// loadConfig bounds and shapes one load run against one address.
type loadConfig struct {
	Addr        string        // host:port, loopback only (checked by the caller)
	Concurrency int           // connections in flight
	MaxRequests int64         // stop after this many requests were sent
	Duration    time.Duration // stop after this long
	Rate        float64       // target requests per second over all workers; 0 = as fast as possible
	KeepAlive   bool          // reuse connections; false = one request per connection
	Timeout     time.Duration // per request: connect, write and read
}

// result is what one run measured; workers fill their own and the run merges them.
type result struct {
	Sent     uint64
	Accepted uint64
	Dropped  map[string]uint64 // by X-Collector-Dropped reason
	Errors   map[string]uint64 // "status_<code>" or a transport error kind
	// Cut counts requests still unanswered when -duration ended: sent, but neither answers
	// nor errors, since the run stopped waiting for them.
	Cut     uint64
	Elapsed time.Duration
	Latency histogram
}

func newResult() *result {
	return &result{Dropped: map[string]uint64{}, Errors: map[string]uint64{}}
}

func (r *result) merge(o *result) {
	r.Sent += o.Sent
	r.Accepted += o.Accepted
	r.Cut += o.Cut
	for k, v := range o.Dropped {
		r.Dropped[k] += v
	}
	for k, v := range o.Errors {
		r.Errors[k] += v
	}
	r.Latency.merge(&o.Latency)
}

// runLoad sends requests from reqs (cycled, each worker from its own offset) until a bound is
// reached or ctx ends, and returns what it measured. Every goroutine it starts has returned
// when it returns.
func runLoad(ctx context.Context, cfg loadConfig, reqs []request) *result {
	// The deadline is counted from start, so that a run bounded by -duration never reports less
	// than it (the context used to be made first and could end a few µs before start+duration).
	start := time.Now()
	ctx, cancel := context.WithDeadline(ctx, start.Add(cfg.Duration))
	defer cancel()
	var claimed atomic.Int64
	results := make([]*result, cfg.Concurrency)
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		results[w] = newResult()
		wg.Go(func() {
			wk := worker{cfg: cfg, end: start.Add(cfg.Duration), reqs: reqs, next: w * len(reqs) / cfg.Concurrency, res: results[w], claimed: &claimed}
			if cfg.Rate > 0 {
				wk.interval = time.Duration(float64(time.Second) * float64(cfg.Concurrency) / cfg.Rate)
				// Stagger the workers over one interval so the aggregate rate is smooth.
				wk.due = start.Add(wk.interval * time.Duration(w) / time.Duration(cfg.Concurrency))
			}
			wk.run(ctx)
		})
	}
	wg.Wait()
	total := newResult()
	total.Elapsed = time.Since(start)
	for _, r := range results {
		total.merge(r)
	}
	return total
}

// worker drives one connection at a time: write a prepared request, read the answer with
// fasthttp's response parser, classify it.
type worker struct {
	cfg      loadConfig
	end      time.Time // the run's time bound: no request waits past it
	reqs     []request
	next     int
	res      *result
	claimed  *atomic.Int64
	interval time.Duration // with -rate: time between this worker's sends
	due      time.Time     // with -rate: when the next send is scheduled

	conn net.Conn
	br   *bufio.Reader
	resp fasthttp.Response
}

func (w *worker) run(ctx context.Context) {
	defer w.close()
	w.resp.SkipBody = false
	done := ctx.Done()
	for {
		select {
		case <-done:
			return
		default:
		}
		if w.claimed.Add(1) > w.cfg.MaxRequests {
			return
		}
		began := time.Now()
		if w.interval > 0 {
			if wait := time.Until(w.due); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-done:
					t.Stop()
					return
				case <-t.C:
				}
			}
			// Latency counts from the scheduled send time, so a slow answer that delays the
			// following sends is not hidden (no coordinated omission).
			began = w.due
			w.due = w.due.Add(w.interval)
		}
		req := &w.reqs[w.next]
		w.next++
		if w.next == len(w.reqs) {
			w.next = 0
		}
		w.res.Sent++
		kind := w.do(req)
		if kind != "" && !time.Now().Before(w.end) {
			w.res.Cut++
			w.close()
			return
		}
		if kind != "" {
			w.res.Errors[kind]++
			w.close()
			continue
		}
		w.res.Latency.record(time.Since(began))
		w.classify()
		if !w.cfg.KeepAlive || w.resp.ConnectionClose() {
			w.close()
		}
	}
}

// do sends one request and reads its answer into w.resp; it returns "" or an error kind.
func (w *worker) do(req *request) string {
	if w.conn == nil {
		c, err := net.DialTimeout("tcp", w.cfg.Addr, min(w.cfg.Timeout, max(time.Until(w.end), time.Millisecond)))
		if err != nil {
			return "dial" + errKind(err)
		}
		w.conn = c
		if w.br == nil {
			w.br = bufio.NewReaderSize(c, 4096)
		} else {
			w.br.Reset(c)
		}
	}
	deadline := time.Now().Add(w.cfg.Timeout)
	if w.end.Before(deadline) {
		deadline = w.end
	}
	if err := w.conn.SetDeadline(deadline); err != nil {
		return "deadline"
	}
	if _, err := w.conn.Write(req.wire); err != nil {
		return "write" + errKind(err)
	}
	if err := w.resp.Read(w.br); err != nil {
		return "read" + errKind(err)
	}
	return ""
}

func (w *worker) classify() {
	code := w.resp.StatusCode()
	switch {
	case code == fasthttp.StatusAccepted:
		if reason := w.resp.Header.Peek("X-Collector-Dropped"); len(reason) > 0 {
			w.res.Dropped[string(reason)]++
		} else {
			w.res.Accepted++
		}
	default:
		w.res.Errors["status_"+strconv.Itoa(code)]++
	}
}

func (w *worker) close() {
	if w.conn != nil {
		_ = w.conn.Close() // the run only reads answers; a close error changes nothing
		w.conn = nil
	}
}

// errKind names a transport error for the report: "_timeout", "_refused", "_reset", "_eof".
func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return "_timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "_reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "_eof"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "_no_ports"
	}
	return "_other"
}
