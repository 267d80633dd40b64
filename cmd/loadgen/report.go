package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"
)

// runReport is the machine-readable summary of one run (-json).
type runReport struct {
	Target         string            `json:"target"`
	Mode           string            `json:"mode"` // keepalive or close
	Concurrency    int               `json:"concurrency"`
	TargetRate     float64           `json:"target_rate,omitempty"`
	ElapsedSeconds float64           `json:"elapsed_seconds"`
	Sent           uint64            `json:"sent"`
	Accepted       uint64            `json:"accepted"`
	Dropped        map[string]uint64 `json:"dropped"`
	DroppedTotal   uint64            `json:"dropped_total"`
	Errors         map[string]uint64 `json:"errors"`
	ErrorsTotal    uint64            `json:"errors_total"`
	CutAtEnd       uint64            `json:"cut_at_end"` // sent, still unanswered when -duration ended
	AcceptedPerSec float64           `json:"accepted_per_second"`
	AnsweredPerSec float64           `json:"answered_per_second"` // accepted + dropped + non-2xx answers
	Latency        latencyReport     `json:"latency_ms"`
	// ServerCPUMicros is the server's CPU time per answer during the run, in µs: the empty
	// handler's with -baseline-server, the target's with -server-pid; 0 (left out) otherwise.
	ServerCPUMicros float64 `json:"server_cpu_us_per_answer,omitempty"`
	// LoadgenCPUMicros is loadgen's own CPU time per answer during the run, in µs.
	LoadgenCPUMicros float64 `json:"loadgen_cpu_us_per_answer,omitempty"`
}

type latencyReport struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

// fullReport is everything one invocation prints: the target run and, with -baseline-server,
// the empty-handler run and the ratio between them.
type fullReport struct {
	Run      runReport  `json:"run"`
	Baseline *runReport `json:"baseline,omitempty"`
	// RatioAnswered is the target's answers per second (accepted, dropped or refused) over the
	// empty handler's: the share of the ceiling the whole pipeline reaches.
	RatioAnswered float64 `json:"ratio_answered_to_baseline,omitempty"`
	// RatioAccepted is the target's accepted (stored) events per second over the empty
	// handler's answers per second; it is lower than RatioAnswered by the bot share.
	RatioAccepted float64 `json:"ratio_accepted_to_baseline,omitempty"`
	// RatioCPU is RatioAccepted computed from CPU time instead of rates: the CPU per answer of
	// the empty handler and loadgen together, over the target's and loadgen's together, times
	// the target's accepted share of its answers. It is the ratio two CPU-bound runs on the same
	// cores would reach, and it moves less than the rates when neighbours take the machine's
	// cores in turns. Needs -baseline-server and -server-pid; 0 (left out) otherwise.
	RatioCPU float64 `json:"ratio_accepted_by_cpu,omitempty"`
	// Freshness is the 202-to-queryable delay of the run's events (-freshness).
	Freshness *freshnessReport `json:"freshness,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func makeReport(target string, cfg loadConfig, r *result) runReport {
	rep := runReport{
		Target: target, Mode: "keepalive", Concurrency: cfg.Concurrency, TargetRate: cfg.Rate,
		ElapsedSeconds: r.Elapsed.Seconds(), Sent: r.Sent, Accepted: r.Accepted,
		Dropped: r.Dropped, Errors: r.Errors, CutAtEnd: r.Cut,
		Latency: latencyReport{
			Count: r.Latency.n, Mean: ms(r.Latency.mean()), P50: ms(r.Latency.quantile(0.5)),
			P90: ms(r.Latency.quantile(0.9)), P99: ms(r.Latency.quantile(0.99)),
			P999: ms(r.Latency.quantile(0.999)), Max: ms(time.Duration(r.Latency.max)),
		},
	}
	if !cfg.KeepAlive {
		rep.Mode = "close"
	}
	for _, v := range r.Dropped {
		rep.DroppedTotal += v
	}
	for _, v := range r.Errors {
		rep.ErrorsTotal += v
	}
	if s := r.Elapsed.Seconds(); s > 0 {
		rep.AcceptedPerSec = float64(r.Accepted) / s
		rep.AnsweredPerSec = float64(r.Latency.n) / s
	}
	return rep
}

func writeJSON(w io.Writer, rep fullReport) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("cannot write report: %w", err)
	}
	return nil
}

func writeText(w io.Writer, rep fullReport) error {
	var err error
	p := func(format string, a ...any) {
		if err == nil {
			_, err = fmt.Fprintf(w, format, a...)
		}
	}
	one := func(title string, r runReport) {
		p("%s: %s, %s, %d connections", title, r.Target, r.Mode, r.Concurrency)
		if r.TargetRate > 0 {
			p(", target %.0f req/s", r.TargetRate)
		}
		p(", %.2fs\n", r.ElapsedSeconds)
		p("  sent      %d\n", r.Sent)
		p("  accepted  %d (%.0f events/s)\n", r.Accepted, r.AcceptedPerSec)
		p("  dropped   %d\n", r.DroppedTotal)
		for _, k := range slices.Sorted(maps.Keys(r.Dropped)) {
			p("    %-22s %d\n", k, r.Dropped[k])
		}
		p("  errors    %d\n", r.ErrorsTotal)
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			p("    %-22s %d\n", k, r.Errors[k])
		}
		if r.CutAtEnd > 0 {
			p("  cut       %d (unanswered when -duration ended)\n", r.CutAtEnd)
		}
		l := r.Latency
		p("  latency   p50 %.3fms  p90 %.3fms  p99 %.3fms  p99.9 %.3fms  max %.3fms  mean %.3fms (%d answers)\n",
			l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.Count)
		if r.ServerCPUMicros > 0 {
			p("  cpu       server %.1fµs, loadgen %.1fµs per answer\n", r.ServerCPUMicros, r.LoadgenCPUMicros)
		}
	}
	if rep.Baseline != nil {
		one("baseline (empty handler)", *rep.Baseline)
	}
	one("target", rep.Run)
	if rep.Baseline != nil {
		p("ratio to baseline: answers/s %.3f, accepted events/s %.3f", rep.RatioAnswered, rep.RatioAccepted)
		if rep.RatioCPU > 0 {
			p(", accepted events by CPU %.3f", rep.RatioCPU)
		}
		p("\n")
	}
	if f := rep.Freshness; f != nil {
		p("freshness (202 to queryable, upper bound, %d events): p50 %.3fs  p99 %.3fs  p99.9 %.3fs  over 2s %.2f%%\n",
			f.Events, f.P50, f.P99, f.P999, 100*f.Over2s)
	}
	if err != nil {
		return fmt.Errorf("cannot write report: %w", err)
	}
	return nil
}
