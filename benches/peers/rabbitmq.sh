#!/usr/bin/env bash
# Installs RabbitMQ from Debian with its STOMP and Web-STOMP plugins, on loopback only
# and on ports that do not collide with stompbox's defaults (61613, 15674):
#   STOMP/TCP  127.0.0.1:61623
#   Web-STOMP  ws://127.0.0.1:15684/ws
# then starts it and prints the PID of its Erlang VM (for `stompbox-bench --pid`).
# Usage: sudo bash benches/peers/rabbitmq.sh [start|stop]
set -euo pipefail

action=${1:-start}
if [ "$action" = stop ]; then
    rabbitmqctl stop >/dev/null 2>&1 || true
    pkill -f 'beam.smp.*rabbit' || true
    exit 0
fi

if ! dpkg -s rabbitmq-server >/dev/null 2>&1; then
    apt-get update -q
    # The package starts the service; we configure it and restart it ourselves.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server
    rabbitmqctl stop >/dev/null 2>&1 || true
fi

mkdir -p /etc/rabbitmq
cat > /etc/rabbitmq/rabbitmq.conf <<'CONF'
listeners.tcp.default = 127.0.0.1:5672
stomp.listeners.tcp.1 = 127.0.0.1:61623
web_stomp.tcp.port = 15684
web_stomp.tcp.ip = 127.0.0.1
distribution.listener.interface = 127.0.0.1
# Binary WebSocket frames, like stompbox's default, so non-UTF-8 bodies survive.
web_stomp.ws_frame = binary
CONF
echo '[rabbitmq_stomp,rabbitmq_web_stomp].' > /etc/rabbitmq/enabled_plugins
# epmd, the Erlang port mapper, on loopback too.
export ERL_EPMD_ADDRESS=127.0.0.1

if ! rabbitmqctl status >/dev/null 2>&1; then
    rabbitmq-server -detached
fi
for _ in $(seq 60); do
    rabbitmqctl status >/dev/null 2>&1 && break
    sleep 1
done
rabbitmqctl await_startup >/dev/null
pgrep -f 'beam.smp.*rabbit' | head -n1
