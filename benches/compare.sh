#!/usr/bin/env bash
# Side-by-side load run: stompbox (TCP and WebSocket), RabbitMQ 3.x (STOMP and
# Web-STOMP, from Debian) and the raw tokio-tungstenite relay floor, measured in the
# same run with interleaved repetitions. Loopback only; every run is bounded.
#
#   bash benches/compare.sh [RUNS] > results.jsonl      # then:
#   python3 benches/summarize.py results.jsonl          # the markdown tables
#
# Needs root for RabbitMQ (benches/peers/rabbitmq.sh installs and starts it).
# SKIP_RABBITMQ=1 measures stompbox and the relay only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-3}

cargo build --release --bin stompbox --example ws_relay >&2
cargo build --release -p stompbox-bench >&2
bench=target/release/stompbox-bench
ulimit -n "$(ulimit -Hn)"

cleanup() { kill "${sb_pid:-}" "${relay_pid:-}" "${relay1_pid:-}" 2>/dev/null || true; }
trap cleanup EXIT
cfg=$(mktemp)
printf '[limits]\nmax_connections = 100000\nmax_connections_per_address = 0\n' > "$cfg"
target/release/stompbox --config "$cfg" 2>/dev/null &
sb_pid=$!
target/release/examples/ws_relay 127.0.0.1:15699 >/dev/null 2>&1 &
relay_pid=$!
# The relay with one runtime thread, like stompbox's default.
TOKIO_WORKER_THREADS=1 target/release/examples/ws_relay 127.0.0.1:15698 >/dev/null 2>&1 &
relay1_pid=$!
rabbit_pid=
if [ -z "${SKIP_RABBITMQ:-}" ]; then
    rabbit_pid=$(bash benches/peers/rabbitmq.sh start | tail -n1)
fi
sleep 1

# label|url|pid|scale|extra-flags. `scale` multiplies message counts so that every
# measured phase lasts long enough (about a second or more) for /proc's 10 ms CPU
# ticks, whatever the target's speed; rates are per second, so counts may differ.
targets=(
    "stompbox-ws|ws://127.0.0.1:15674/ws|$sb_pid|10|"
    "stompbox-tcp|tcp://127.0.0.1:61613|$sb_pid|10|"
)
if [ -n "$rabbit_pid" ]; then
    targets+=(
        "rabbitmq-ws|ws://127.0.0.1:15684/ws|$rabbit_pid|1|--login guest --passcode guest"
        "rabbitmq-tcp|tcp://127.0.0.1:61623|$rabbit_pid|1|--login guest --passcode guest"
    )
fi
relay="relay|ws://127.0.0.1:15699/|$relay_pid|10|--raw"
relay1="relay-1thread|ws://127.0.0.1:15698/|$relay1_pid|10|--raw"

run() { # target messages scenario-args...
    IFS='|' read -r label url pid scale extra <<< "$1"
    local count=()
    [ "$2" -gt 0 ] && count=(--messages $(( $2 * scale )))
    shift 2
    # shellcheck disable=SC2086
    "$bench" --url "$url" --pid "$pid" --label "$label" --json --max-seconds 30 "${count[@]}" $extra "$@" 2>/dev/null ||
        echo "{\"label\":\"$label\",\"scenario\":\"$1\",\"outcome\":\"failed\"}"
}

for r in $(seq "$runs"); do
    echo "run $r/$runs" >&2
    for t in "${targets[@]}" "$relay" "$relay1"; do
        run "$t" 20000 fanout --subscribers 10 --size 1024 --window 2
        run "$t" 3000 fanout --subscribers 100 --size 128 --window 2
    done
    for t in "stompbox-ws|ws://127.0.0.1:15674/ws|$sb_pid|10|" "$relay" "$relay1"; do
        run "$t" 300 fanout --subscribers 1000 --size 128 --window 2
    done
    for t in "${targets[@]}"; do
        for ack in auto client-individual; do
            run "$t" 30000 queue --producers 1 --consumers 1 --ack "$ack" --size 128
        done
    done
    for t in "${targets[@]}" "$relay" "$relay1"; do
        run "$t" 0 latency --rate 10000 --seconds 5 --size 128
    done
done
