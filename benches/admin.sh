#!/usr/bin/env bash
# Topic fan-out (1 -> 10 subscribers, 1 KiB, 1,000,000 messages) on two brokers of the
# same build in one run, interleaved (the order alternates per repetition): one with
# the admin listener off, one with it on and the dashboard open in headless Chromium
# (signed in, charts and tables updating from /sys/stats every second). Chromium runs
# for the whole script, so both brokers share its load on this machine; what differs
# is the broker's own admin work.
#
#   bash benches/admin.sh [RUNS] > results.jsonl
#   python3 benches/summarize.py results.jsonl
#
# Needs scripts/install-interop.sh (Chromium, playwright-core, dashboard/node_modules).
# Loopback only; every run is bounded by --max-seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-3}

cargo build --release --bin stompbox >&2
cargo build --release -p stompbox-bench >&2
bench=target/release/stompbox-bench
dir=$(mktemp -d /tmp/stompbox-admin-bench.XXXXXX)
cleanup() { kill "${off_pid:-}" "${on_pid:-}" "${page_pid:-}" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
hash=$(printf 'bench\n' | target/release/stompbox hash-password)
cat > "$dir/on.toml" <<TOML
[listeners]
tcp = "127.0.0.1:61732"
ws = "127.0.0.1:15732"
[admin]
listen = "127.0.0.1:15832"
users = ["ops"]
[[auth.users]]
login = "ops"
passcode_hash = "$hash"
[store]
data_dir = ""
TOML
target/release/stompbox --tcp 127.0.0.1:61731 --ws 127.0.0.1:15731 --admin "" --data-dir "" 2>/dev/null &
off_pid=$!
target/release/stompbox --config "$dir/on.toml" 2>/dev/null &
on_pid=$!
sleep 1
node benches/dashboard-open.mjs http://127.0.0.1:15832 ops bench > "$dir/page.log" 2>&1 &
page_pid=$!
for _ in $(seq 300); do grep -q OPEN "$dir/page.log" && break; sleep 0.1; done
grep -q OPEN "$dir/page.log" || { cat "$dir/page.log" >&2; exit 1; }

run() { # label url pid
    "$bench" --url "$2" --pid "$3" --label "$1" --json --max-seconds 60 --messages 1000000 \
        fanout --subscribers 10 --size 1024 --window 2 2>/dev/null | tail -n1 ||
        echo "{\"label\":\"$1\",\"outcome\":\"failed\"}"
}
for r in $(seq "$runs"); do
    echo "run $r/$runs" >&2
    if [ $((r % 2)) -eq 1 ]; then
        run admin-off tcp://127.0.0.1:61731 "$off_pid"
        run admin-on-dashboard-open tcp://127.0.0.1:61732 "$on_pid"
    else
        run admin-on-dashboard-open tcp://127.0.0.1:61732 "$on_pid"
        run admin-off tcp://127.0.0.1:61731 "$off_pid"
    fi
done
