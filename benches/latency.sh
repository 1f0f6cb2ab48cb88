#!/usr/bin/env bash
# Latency at a fraction of peak load, for every Nexmark query, on 2 workers. For each query:
#   1. a first guess of its peak: an unpaced run of PEAK_EVENTS events (default 20M), at the
#      generator's own event-time rate (10,000 events a second of event time);
#   2. R = FRACTION of the guess; then, up to 4 times, the peak at R: an unpaced run of
#      SECONDS*R events with `--set event_rate=R`, the events and the event-time density of a
#      run paced at R for SECONDS (a window then holds as many events as in the paced run, and
#      the state is as large: q5's peak is 11-13M events/s so, 15-18.5M at the generator's own
#      rate). When FRACTION of that peak is within 5% of R, or after the 4th, R stays;
#      otherwise R moves to the geometric mean of the two (damped; a noisy peak may still
#      not settle in four, and the load printed then is what it is);
#   3. a paced run at R for SECONDS seconds (`--rate R --events SECONDS*R`). The row gives R's
#      own peak (its last peak run) and the load, R over that peak.
# Before session 37 step 2 was left out (it measured again over as many events when the paced
# run had more, at the generator's own event-time rate), so a windowed query's "half load"
# was nearer two thirds to three quarters of what it could take at the paced run's event-time
# rate; the whole suite of session 37 took one step of 2 only, which left loads (measured
# after, for 7 queries) of 0.39-0.47 and q10's 0.78 (BENCHMARKS.md, "Results, session 37").
# Prints a markdown row per query: the peak, the rate, p50 / p99 / p99.9 / max from event time
# to result (ms), the results measured (and how many were ahead of the clock), peak RSS, and
# whether p99 is within one epoch (100 ms) plus 50 ms, the shared plan's bar.
#   benches/latency.sh [SECONDS] [FRACTION]     (QUERIES="5 8" benches/latency.sh ... runs only those)
# The runs are as `runnel bench` runs by default: touch-ahead on, memory provided by a thread of
# its own while the run goes, 64 MiB ahead of where the allocator grows.
# AHEAD=SIZE (like 256M) gives the paced runs `--touch-ahead SIZE` instead (0: off).
# PRETOUCH=SIZE (like 4G) gives them `--pretouch SIZE --touch-ahead 0` instead; PRETOUCH=auto
# gives each the peak run's peak RSS plus a quarter.
# With COMPARE=1 each paced run is made twice, first with `--touch-ahead 0` (neither), then as
# above, one row each (the memory column says which).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
fraction="${2:-0.5}"
peak_events="${PEAK_EVENTS:-20000000}"
cargo build --release -q --bin runnel
bench() {
    local q="$1"
    shift
    local out=() dir=""
    # q10 writes its files (every bid) into a temporary directory, removed after the run.
    if [ "$q" = 10 ]; then
        dir=$(mktemp -d)
        out=(--set "dir=$dir")
    fi
    ./target/release/runnel bench "nexmark-q$q" --workers 2 --json "$@" "${out[@]}"
    if [ -n "$dir" ]; then rm -rf "$dir"; fi
}
pretouch="${PRETOUCH:-}"
ahead="${AHEAD:-}"
if [ -n "$pretouch" ] && [ -n "$ahead" ]; then
    echo "PRETOUCH and AHEAD: set one of them" >&2
    exit 2
fi
compare="${COMPARE:-0}"
echo "| query | peak at the rate's event-time density (M ev/s, over events) | rate (ev/s) | load | events | memory | p50 | p99 | p99.9 | max | results (ahead) | peak RSS (MB) | minor faults | p99 <= 150 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for q in ${QUERIES:-0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22}; do
    peak_line=$(bench "$q" --events "$peak_events")
    peak=$(echo "$peak_line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events_per_sec"])')
    rate=$(python3 -c "print(int(float('$peak') * $fraction / 1000) * 1000)")
    if [ "$rate" -lt 1000 ]; then
        echo "q$q: a peak of $peak events/s gives a rate under 1,000 at fraction $fraction" >&2
        exit 1
    fi
    for step in 1 2 3 4; do
        peak_n=$((rate * seconds))
        peak_line=$(bench "$q" --events "$peak_n" --set "event_rate=$rate")
        peak=$(echo "$peak_line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events_per_sec"])')
        # Settled (FRACTION of R's own peak within 5% of R), or the next R: the geometric mean.
        next=$(python3 -c "
import math
r, want = $rate, float('$peak') * $fraction
print(r if abs(want - r) <= 0.05 * r or $step == 4 else int(math.sqrt(r * want) / 1000) * 1000)")
        if [ "$next" = "$rate" ]; then break; fi
        rate="$next"
        if [ "$rate" -lt 1000 ]; then
            echo "q$q: a rate under 1,000 events/s at fraction $fraction" >&2
            exit 1
        fi
    done
    events=$((rate * seconds))
    size="$pretouch"
    if [ "$pretouch" = auto ]; then
        size=$(echo "$peak_line" | python3 -c 'import json,sys; print(str(int((json.load(sys.stdin)["peak_rss_mb"] or 0) * 1.25) + 1) + "M")')
    fi
    set_flags=()
    if [ -n "$size" ]; then set_flags=(--pretouch "$size" --touch-ahead 0); fi
    if [ -n "$ahead" ]; then set_flags=(--touch-ahead "$ahead"); fi
    runs=(set)
    if [ "$compare" = 1 ]; then runs=(neither set); fi
    for s in "${runs[@]}"; do
        flags=(--touch-ahead 0)
        if [ "$s" = set ]; then flags=("${set_flags[@]}"); fi
        line=$(bench "$q" --rate "$rate" --events "$events" "${flags[@]}")
        python3 - "$q" "$peak" "$peak_n" "$rate" "$events" "$line" <<'PY'
import json, sys
q, peak, peak_n, rate, events = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
r = json.loads(sys.argv[6])
l = r.get("latency_ms")
rss = r.get("peak_rss_mb") or 0
faults = r.get("minor_faults")
faults = f"{faults:,}" if faults is not None else "n/a"
memory = "none"
if r.get("pretouch_mb"):
    memory = f"pretouch {r['pretouch_mb']:,} MB"
elif r.get("touched_ahead_mb") is not None:
    memory = f"ahead: {r['touched_ahead_mb']:,} MB, {r.get('touch_ahead_faults', 0):,} of the faults"
if l:
    ok = "yes" if l["p99"] <= 150 else "**no**"
    cells = f"{l['p50']} | {l['p99']} | {l['p999']} | {l['max']} | {l['count']:,} ({l['ahead']:,})"
else:
    ok, cells = "n/a", "n/a | n/a | n/a | n/a | n/a"
print(f"| q{q} | {peak/1e6:.2f} ({peak_n/1e6:.0f}M) | {rate:,} | {rate/peak:.2f} | {events:,} | {memory} | {cells} | {rss:.0f} | {faults} | {ok} |")
PY
    done
done
