#!/usr/bin/env bash
# Persistent queue throughput, every SEND `persistent:true` with its own receipt
# (`--receipt-every 1`, 64 unreceipted per producer), 1 consumer with auto ack:
# stompbox (its store on this disk) against RabbitMQ (durable queue, the same header),
# same tool, same run, interleaved. Also counts each broker's fsync + fdatasync
# calls during the run (perf tracepoints), so fsyncs per second and messages per
# fsync are reported.
#
#   bash benches/peers/rabbitmq.sh          # RabbitMQ on 127.0.0.1:61623
#   bash benches/persistent.sh [RUNS] > results.jsonl
#   python3 benches/summarize.py results.jsonl
#
# Loopback only; every run is bounded by --max-seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-3}

cargo build --release --bin stompbox >&2
cargo build --release -p stompbox-bench >&2
bench=target/release/stompbox-bench
data=$(mktemp -d /var/tmp/stompbox-persistent.XXXXXX)
cleanup() { kill "${sb_pid:-}" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
target/release/stompbox --data-dir "$data" --tcp 127.0.0.1:61713 --ws 127.0.0.1:15713 2>/dev/null &
sb_pid=$!
rmq_pid=$(pgrep -f 'beam.smp.*rabbit' | head -n1)
[ -n "$rmq_pid" ] || { echo "RabbitMQ is not running: bash benches/peers/rabbitmq.sh" >&2; exit 1; }
sleep 1

run() { # label url pid producers messages [extra flags...]
    local label=$1 url=$2 pid=$3 producers=$4 n=$5
    shift 5
    local perf_out
    perf_out=$(mktemp)
    perf stat -x, -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -p "$pid" -o "$perf_out" &
    local perf_pid=$!
    sleep 0.2
    local line
    line=$("$bench" --url "$url" --pid "$pid" --label "$label" --json --max-seconds 60 \
        --messages "$n" --receipt-every 1 --window 64 "$@" \
        queue --producers "$producers" --consumers 1 --persistent --size 128 2>/dev/null | tail -n1)
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    local syncs
    syncs=$(awk -F, '/sys_enter_f/ { s += $1 } END { print s + 0 }' "$perf_out")
    rm -f "$perf_out"
    python3 -c '
import json, sys
r = json.loads(sys.argv[1]); syncs = int(sys.argv[2])
r["fsyncs"] = syncs
r["fsyncs_per_s"] = syncs / r["elapsed_s"] if r["elapsed_s"] else None
r["msgs_per_fsync"] = r["delivered"] / syncs if syncs else None
print(json.dumps(r))' "$line" "$syncs"
}

for producers in 1 16 64; do
    n=$((producers == 1 ? 20000 : 100000))
    for _ in $(seq "$runs"); do
        run stompbox tcp://127.0.0.1:61713 "$sb_pid" "$producers" "$n"
        run rabbitmq tcp://127.0.0.1:61623 "$rmq_pid" "$producers" "$((n / 4))" --login guest --passcode guest
    done
done
