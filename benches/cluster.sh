#!/usr/bin/env bash
# Benchmarks a job on a cluster of PROCESSES local processes (ports from BASE_PORT, default
# 7101): runs `runnel bench JOB --processes P --process-id I --hosts FILE ARGS...` once per
# process, side by side, and prints each process's JSON line (process 0 first).
#   benches/cluster.sh PROCESSES JOB [bench args...]
#   e.g. benches/cluster.sh 2 nexmark-q5 --rate 8000000 --events 360000000
set -euo pipefail
cd "$(dirname "$0")/.."
processes="${1:?usage: benches/cluster.sh PROCESSES JOB [bench args...]}"
job="${2:?usage: benches/cluster.sh PROCESSES JOB [bench args...]}"
shift 2
base="${BASE_PORT:-7101}"
cargo build --release -q --bin runnel
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for i in $(seq 0 $((processes - 1))); do
    echo "127.0.0.1:$((base + i))" >> "$work/hosts"
done
pids=()
for i in $(seq 0 $((processes - 1))); do
    ./target/release/runnel bench "$job" --processes "$processes" --process-id "$i" \
        --hosts "$work/hosts" --json "$@" > "$work/out.$i" 2> "$work/err.$i" &
    pids+=("$!")
done
status=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        echo "process $i failed:" >&2
        cat "$work/err.$i" >&2
        status=1
    fi
done
for i in $(seq 0 $((processes - 1))); do
    tail -n 1 "$work/out.$i"
done
exit "$status"
