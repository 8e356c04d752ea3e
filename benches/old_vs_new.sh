#!/usr/bin/env bash
# Two stompbox builds side by side in one run, interleaved: topic fan-out and queue
# throughput over WebSocket and TCP, medians taken by benches/summarize.py.
#
#   bash benches/old_vs_new.sh OLD_BINARY [RUNS] > results.jsonl
#   python3 benches/summarize.py results.jsonl
#
# OLD_BINARY is a release `stompbox` (with `--data-dir`, so from issue 10 on) built
# from an earlier commit (for example with
# `git worktree add /tmp/base <commit> && cargo build --release --bin stompbox` there).
# Loopback only; every run is bounded by --max-seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
old=$1
runs=${2:-3}

cargo build --release --bin stompbox >&2
cargo build --release -p stompbox-bench >&2
bench=target/release/stompbox-bench
ulimit -n "$(ulimit -Hn)"

cleanup() { kill "${old_pid:-}" "${new_pid:-}" 2>/dev/null || true; }
trap cleanup EXIT
# Both in memory (two brokers cannot share the default data directory), each with its
# admin listener on (the default) on a port of its own (OLD_ADMIN="" for a build from
# before the admin listener, which has no --admin).
old_admin=${OLD_ADMIN---admin 127.0.0.1:15781}
# shellcheck disable=SC2086 # one flag and its value, or nothing
"$old" --tcp 127.0.0.1:61711 --ws 127.0.0.1:15711 --data-dir "" $old_admin 2>/dev/null &
old_pid=$!
target/release/stompbox --tcp 127.0.0.1:61712 --ws 127.0.0.1:15712 --data-dir "" --admin 127.0.0.1:15782 2>/dev/null &
new_pid=$!
sleep 1

targets=(
    "old-ws|ws://127.0.0.1:15711/ws|$old_pid"
    "new-ws|ws://127.0.0.1:15712/ws|$new_pid"
    "old-tcp|tcp://127.0.0.1:61711|$old_pid"
    "new-tcp|tcp://127.0.0.1:61712|$new_pid"
)
run() { # target messages scenario-args...
    IFS='|' read -r label url pid <<< "$1"
    local n=$2
    shift 2
    "$bench" --url "$url" --pid "$pid" --label "$label" --json --max-seconds 30 \
        --messages "$n" "$@" 2>/dev/null ||
        echo "{\"label\":\"$label\",\"scenario\":\"$1\",\"outcome\":\"failed\"}"
}
reversed=(
    "${targets[1]}" "${targets[0]}" "${targets[3]}" "${targets[2]}"
)
for r in $(seq "$runs"); do
    echo "run $r/$runs" >&2
    # Every other repetition runs the new build first: on this machine the second of
    # two back-to-back runs is often the slower one, which would otherwise always be
    # the same build.
    if [ $((r % 2)) -eq 0 ]; then order=("${reversed[@]}"); else order=("${targets[@]}"); fi
    for t in "${order[@]}"; do
        run "$t" 200000 fanout --subscribers 10 --size 1024 --window 2
        run "$t" 300000 queue --producers 1 --consumers 1 --ack auto --size 128
        run "$t" 300000 queue --producers 1 --consumers 1 --ack client-individual --size 128
    done
done
