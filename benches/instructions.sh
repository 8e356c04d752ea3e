#!/usr/bin/env bash
# Instructions per message, old build next to new, counted by callgrind: the same
# for the same binary and load whatever else the machine is doing, so a few percent
# can be told apart where wall-clock runs on this shared 2-core machine swing ±30 %.
#
#   bash benches/instructions.sh OLD_BINARY [N]
#
# For each build and scenario, the broker runs under callgrind twice, with N and 2N
# messages; the difference of the two totals, over N, is the cost of one message
# (start-up, connections and shutdown cancel out). Loopback only; bounded counts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
old=$1
n=${2:-20000}
bench=target/release/stompbox-bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() { # binary label scenario messages args...
    local bin=$1 label=$2 scenario=$3 msgs=$4
    shift 4
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$label.$scenario.$msgs" \
        "$bin" --tcp 127.0.0.1:61751 --ws 127.0.0.1:15751 --admin "" --data-dir "" \
        >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/61751) 2>/dev/null && break
        sleep 0.2
    done
    "$bench" --url "$@" --max-seconds 120 --messages "$msgs" >/dev/null 2>&1 || true
    kill -TERM "$pid"
    wait "$pid" || true
    grep -m1 '^summary:' "$out/cg.$label.$scenario.$msgs" | awk '{print $2}'
}

scenarios=(
    "queue-auto-tcp|tcp://127.0.0.1:61751 queue --producers 1 --consumers 1 --ack auto --size 128"
    "queue-ci-tcp|tcp://127.0.0.1:61751 queue --producers 1 --consumers 1 --ack client-individual --size 128"
    "fanout10-tcp|tcp://127.0.0.1:61751 fanout --subscribers 10 --size 1024 --window 2"
    "queue-auto-ws|ws://127.0.0.1:15751/ws queue --producers 1 --consumers 1 --ack auto --size 128"
    "fanout10-ws|ws://127.0.0.1:15751/ws fanout --subscribers 10 --size 1024 --window 2"
)
printf '| scenario | old instr/msg | new instr/msg | change |\n|---|---:|---:|---:|\n'
for s in "${scenarios[@]}"; do
    IFS='|' read -r name args <<< "$s"
    declare -A per
    for build in old new; do
        bin=$old
        [ "$build" = new ] && bin=target/release/stompbox
        # shellcheck disable=SC2086 # the scenario's arguments, split on purpose
        one=$(run "$bin" "$build" "$name" "$n" $args)
        # shellcheck disable=SC2086
        two=$(run "$bin" "$build" "$name" $((2 * n)) $args)
        per[$build]=$(( (two - one) / n ))
    done
    awk -v s="$name" -v o="${per[old]}" -v n="${per[new]}" \
        'BEGIN { printf "| %s | %d | %d | %+.1f%% |\n", s, o, n, (n / o - 1) * 100 }'
done
