#!/usr/bin/env bash
# Runs Nexmark queries with `runnel bench` on 2 workers under two sets of extra arguments, A and B,
# alternating A, B, A, B... ROUNDS times, and prints a markdown table: each side's events/s (every
# run), peak RSS (largest), and the ratio B / A of the medians. The same binary, the same
# invocation: the ratio holds when the machine's speed drifts.
#   benches/ab.sh "A ARGS" "B ARGS" [EVENTS] [ROUNDS]
#   e.g. benches/ab.sh "--checkpoint-every 0s" "--checkpoint-every 10s" 100000000 2
#        QUERIES="18 19 20" benches/ab.sh "--max-in-flight 0s" "" 20000000 3
# AB_RAW=FILE appends each run's JSON summary to FILE, after the query and side ("q19 b {...}").
set -euo pipefail
cd "$(dirname "$0")/.."
a_args="$1"
b_args="$2"
events="${3:-20000000}"
rounds="${4:-2}"
workers="${WORKERS:-2}"
cargo build --release -q --bin runnel
echo "A: \`${a_args}\`, B: \`${b_args}\`; ${events} events, ${workers} workers, ${rounds} rounds"
echo
echo "| query | A (M ev/s) | B (M ev/s) | B / A (medians) | peak RSS A (MB) | peak RSS B (MB) |"
echo "|---|---|---|---|---|---|"
for q in ${QUERIES:-0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22}; do
    lines=()
    for _ in $(seq "$rounds"); do
        for side in a b; do
            if [ "$side" = a ]; then args="$a_args"; else args="$b_args"; fi
            out=()
            if [ "$q" = 10 ]; then
                dir=$(mktemp -d)
                out=(--set "dir=$dir")
            fi
            # shellcheck disable=SC2086
            line=$(./target/release/runnel bench "nexmark-q$q" --workers "$workers" \
                --events "$events" --json "${out[@]}" $args | tail -1)
            if [ "$q" = 10 ]; then rm -rf "$dir"; fi
            lines+=("$side $line")
            if [ -n "${AB_RAW:-}" ]; then echo "q$q $side $line" >> "$AB_RAW"; fi
        done
    done
    python3 - "$q" "${lines[@]}" <<'PY'
import json, statistics, sys
q = sys.argv[1]
runs = {"a": [], "b": []}
for arg in sys.argv[2:]:
    side, line = arg.split(" ", 1)
    runs[side].append(json.loads(line))
def rates(side):
    return [r["events_per_sec"] / 1e6 for r in runs[side]]
def rss(side):
    return max(r["peak_rss_mb"] for r in runs[side])
ratio = statistics.median(rates("b")) / statistics.median(rates("a"))
fmt = lambda xs: " / ".join(f"{x:.2f}" for x in xs)
print(f"| q{q} | {fmt(rates('a'))} | {fmt(rates('b'))} | {ratio:.2f} | {rss('a'):,.0f} | {rss('b'):,.0f} |")
PY
done
