#!/usr/bin/env bash
# Runs W0, W1, W2 on 1 and 2 workers through the job API and directly on timely, alternately in
# one invocation each, and prints a markdown table (best of ROUNDS per column).
#   benches/workloads.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
cargo build --release -q -p runnel-benches --bin runnel-bench
echo "| workload | workers | events | job API (M events/s) | raw timely (M events/s) | job API / raw |"
echo "|---|---|---|---|---|---|"
for w in w0 w1 w2; do
    # W0 and W1 run at 100M+ events/s: a billion events keep a run several seconds long, so
    # the machine's noise does not decide the ratio.
    events=1000000000
    if [ "$w" = w2 ]; then events=100000000; fi
    for n in 1 2; do
        line=$(./target/release/runnel-bench "$w" --workers "$n" --events "$events" --rounds "$rounds" | tail -1)
        python3 - "$line" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"| {r['workload']} | {r['workers']} | {r['events']:,} | {r['api_events_per_sec']/1e6:.1f} | {r['raw_events_per_sec']/1e6:.1f} | {r['ratio']:.2f} |")
PY
    done
done
