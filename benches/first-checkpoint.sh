#!/usr/bin/env bash
# Starts a Nexmark query as two processes of two workers each on this machine, as the crash
# tests of jobs/tests/crash.rs do (paced so that the run lasts 6 s, a checkpoint every 300 ms),
# kills both after ALIVE seconds (default 3.5), and prints how long after their start process 0
# committed its first checkpoint ("none" if it did not). Each round runs once under each set of
# extra arguments, alternating, so that a drift of the machine falls on all of them alike.
#   benches/first-checkpoint.sh ROUNDS "ARGS A" ["ARGS B" ...]
#   e.g. benches/first-checkpoint.sh 8 "" "--touch-ahead 0"
#        Q=q20 EVENTS=2000000 ALIVE=3.5 benches/first-checkpoint.sh 4 ""
# An argument set may start with environment settings:
#   "RUNNEL_TOUCH_AHEAD_IDLE=0 --touch-ahead 64M".
# The time is the cluster's start plus the job's first checkpoint. Before session 35 timely
# connected the processes, polling once a second: "(N polls)" after a time says process 0 polled
# N times (timely printed "awaiting connections" each time), each poll after the first 1 s more;
# runnel's own connection loop prints nothing there. The ports are picked at random: one in use
# also shows as "none". BIN=PATH runs that binary instead of building target/release/runnel.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -lt 2 ]; then
    echo "usage: benches/first-checkpoint.sh ROUNDS \"ARGS A\" [\"ARGS B\" ...]" >&2
    exit 2
fi
rounds="$1"
shift
q="${Q:-q4}"
events="${EVENTS:-1200000}"
seconds="${ALIVE:-3.5}"
if [ -n "${BIN:-}" ]; then
    bin="$BIN"
else
    cargo build --release -q --bin runnel
    bin="$PWD/target/release/runnel"
fi

# Prints the seconds from `start` (epoch seconds) to the first checkpoint in log $1.
first_checkpoint() {
    python3 - "$1" "$2" <<'PY'
import datetime, re, sys
start = float(sys.argv[2])
for line in open(sys.argv[1]):
    line = re.sub(r'\x1b\[[0-9;]*m', '', line)
    if re.search(r'checkpoint \d+ complete', line):
        t = datetime.datetime.fromisoformat(line.split()[0].replace('Z', '+00:00')).timestamp()
        print(f"{t - start:.2f}")
        break
else:
    print("none")
PY
}

one_run() {
    local set="$1" env=() args=()
    for word in $set; do
        if [[ "$word" =~ ^[A-Za-z_][A-Za-z0-9_]*= && "${#args[@]}" == 0 ]]; then env+=("$word"); else args+=("$word"); fi
    done
    local dir
    dir=$(mktemp -d)
    local port=$((20000 + RANDOM % 20000))
    printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$port" "$((port + 1))" > "$dir/hosts"
    local start
    start=$(date +%s.%N)
    local pids=()
    for i in 0 1; do
        env "${env[@]}" RUNNEL_STATE_DIR="$dir/state" RUST_LOG=warn,runnel_engine::recovery=info \
            "$bin" run "nexmark-$q" --set "events=$events" --set "rate=$((events / 6))" \
            --set wall_clock=false --set "sink=file:$dir/out-$i.jsonl" \
            --checkpoint-every 300ms --changes-every 100ms --workers 2 --json --quiet \
            --processes 2 --process-id "$i" --hosts "$dir/hosts" "${args[@]}" \
            > "$dir/out-$i.log" 2> "$dir/err-$i.log" &
        pids+=($!)
    done
    sleep "$seconds"
    kill -9 "${pids[@]}" 2> /dev/null || true
    wait "${pids[@]}" 2> /dev/null || true
    local polls
    polls=$(grep -c "awaiting connections" "$dir/out-0.log" || true)
    echo -n "$(first_checkpoint "$dir/err-0.log" "$start")"
    if [ "$polls" -gt 1 ]; then echo -n " ($polls polls)"; fi
    echo
    rm -rf "$dir"
}

echo "$q, $events events over 6 s on 2 processes of 2 workers, killed after $seconds s:"
echo "seconds from the start to process 0's first committed checkpoint, $rounds rounds"
echo
sets=("$@")
got=()
for r in $(seq "$rounds"); do
    for i in "${!sets[@]}"; do
        got[i]+="$(one_run "${sets[i]}") "
    done
done
echo "| arguments | first checkpoint (s), each round |"
echo "|---|---|"
for i in "${!sets[@]}"; do
    echo "| \`${sets[i]:-(defaults)}\` | ${got[i]}|"
done
