#!/usr/bin/env bash
# Topic fan-out (1 -> 10 subscribers, 1 KiB, 200,000 messages) over plain STOMP/TCP and
# over STOMP/TLS, on one broker, interleaved (the order alternates per repetition).
# The certificate is made here with openssl (P-256, for localhost).
#
#   bash benches/tls.sh [RUNS] > results.jsonl
#   python3 benches/summarize.py results.jsonl
#
# Loopback only; every run is bounded by --max-seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-3}

cargo build --release --bin stompbox >&2
cargo build --release -p stompbox-bench >&2
bench=target/release/stompbox-bench
dir=$(mktemp -d /tmp/stompbox-tls-bench.XXXXXX)
cleanup() { kill "${pid:-}" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
    -addext keyUsage=digitalSignature -addext extendedKeyUsage=serverAuth 2>/dev/null
cat > "$dir/broker.toml" <<TOML
[listeners]
tcp = "127.0.0.1:61721"
ws = "127.0.0.1:15721"
tcp_tls = "127.0.0.1:61722"
[tls]
cert_chain = "$dir/cert.pem"
key = "$dir/key.pem"
[store]
data_dir = ""
TOML
target/release/stompbox --config "$dir/broker.toml" 2>/dev/null &
pid=$!
sleep 1

run() { # label url
    "$bench" --url "$2" --tls-ca "$dir/cert.pem" --pid "$pid" --label "$1" --json \
        --max-seconds 30 --messages 200000 fanout --subscribers 10 --size 1024 --window 2 \
        2>/dev/null | tail -n1 || echo "{\"label\":\"$1\",\"outcome\":\"failed\"}"
}
for r in $(seq "$runs"); do
    echo "run $r/$runs" >&2
    if [ $((r % 2)) -eq 1 ]; then
        run plain-tcp tcp://127.0.0.1:61721
        run tls tls://127.0.0.1:61722
    else
        run tls tls://127.0.0.1:61722
        run plain-tcp tcp://127.0.0.1:61721
    fi
done
