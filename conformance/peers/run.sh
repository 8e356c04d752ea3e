#!/usr/bin/env bash
# Peer brokers for the STOMP conformance suite (stompbox-conformance), on loopback only and
# on ports that collide neither with stompbox's defaults (61613, 15674) nor with each other:
#
#   RabbitMQ (Debian rabbitmq-server, set up by benches/peers/rabbitmq.sh)
#     STOMP/TCP  tcp://127.0.0.1:61623        login guest/guest, host "/" (its vhost)
#     Web-STOMP  ws://127.0.0.1:15684/ws      same credentials and host
#   ActiveMQ 5 (Debian activemq, instance "conformance" under /etc/activemq)
#     STOMP/TCP  tcp://127.0.0.1:61633        no authentication configured: any login is
#                                             accepted, so guest/guest; host "localhost"
#     WebSocket  none: Debian builds ActiveMQ without its activemq-http module, which holds
#                the ws:// transport ("Transport scheme NOT recognized: [ws]"), so the
#                ws report of ActiveMQ says it was not run.
#
# Usage (as root):
#   conformance/peers/run.sh start  rabbitmq|activemq
#   conformance/peers/run.sh stop   rabbitmq|activemq
#   conformance/peers/run.sh report rabbitmq|activemq|all
# `report` starts each broker, runs the suite against it over TCP and over WebSocket into
# conformance/peers/reports/<broker>-<tcp|ws>.{json,txt}, then stops it. The suite is
# $SUITE, by default target/release/stompbox-conformance, built first if missing.
# Environment: SUITE, START_TIMEOUT (seconds, default 120), SUITE_TIMEOUT (default 900).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
reports=$here/reports
START_TIMEOUT=${START_TIMEOUT:-120}
SUITE_TIMEOUT=${SUITE_TIMEOUT:-900}
LOGIN=guest
PASSCODE=guest

RABBIT_TCP_PORT=61623
RABBIT_WS_PORT=15684
RABBIT_TCP_URL=tcp://127.0.0.1:$RABBIT_TCP_PORT
RABBIT_WS_URL=ws://127.0.0.1:$RABBIT_WS_PORT/ws
RABBIT_HOST=/

AMQ_INSTANCE=conformance
AMQ_TCP_PORT=61633
AMQ_TCP_URL=tcp://127.0.0.1:$AMQ_TCP_PORT
AMQ_HOST=localhost
AMQ_CONF=/etc/activemq/instances-available/$AMQ_INSTANCE
AMQ_BASE=/var/lib/activemq/$AMQ_INSTANCE
AMQ_PIDFILE=/var/run/activemq/$AMQ_INSTANCE.pid
AMQ_NO_WS="not run: Debian's activemq package is built without ActiveMQ's activemq-http module, which provides the ws:// transport connector (a ws:// transportConnector fails the broker's start with \"Transport scheme NOT recognized: [ws]\"), so this ActiveMQ has no STOMP over WebSocket endpoint to test."

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "run.sh: $*" >&2; }

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# wait_port PORT NAME [PID]: until PORT accepts a connection, for at most START_TIMEOUT
# seconds; gives up at once if PID (the broker's process) dies.
wait_port() {
    local port=$1 name=$2 pid=${3:-} deadline=$((SECONDS + START_TIMEOUT))
    until port_open "$port"; do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            die "$name: the broker process ($pid) exited before port $port answered"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "$name: port $port did not answer within ${START_TIMEOUT}s"
        sleep 0.5
    done
}

# wait_closed PORT: until nothing listens on PORT any more (at most 30 s).
wait_closed() {
    local deadline=$((SECONDS + 30))
    while port_open "$1"; do
        [ "$SECONDS" -lt "$deadline" ] || die "port $1 still answers 30s after the stop"
        sleep 0.5
    done
}

# stomp_check URL HOST [SUBPROTOCOLS]: sends a STOMP 1.2 CONNECT (guest/guest) over tcp:// or
# ws:// (a raw WebSocket handshake, Python's standard library only) and fails unless the
# broker answers CONNECTED. Prints the negotiated WebSocket subprotocol for ws://.
stomp_check() {
    python3 - "$1" "$2" "${3:-v12.stomp, v11.stomp, v10.stomp}" "$LOGIN" "$PASSCODE" <<'PY'
import base64, os, socket, struct, sys
from urllib.parse import urlparse
url, vhost, protos, login, passcode = sys.argv[1:6]
u = urlparse(url)
s = socket.create_connection((u.hostname, u.port), timeout=10)
connect = f"CONNECT\naccept-version:1.2\nhost:{vhost}\nlogin:{login}\npasscode:{passcode}\n\n\0".encode()
buf, note = b"", ""
if u.scheme == "ws":
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: {protos}\r\n\r\n").encode())
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"{url}: closed during the WebSocket handshake")
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    if " 101 " not in lines[0] + " ":
        sys.exit(f"{url}: handshake refused: {lines[0]}")
    sub = [l.split(":", 1)[1].strip() for l in lines[1:] if l.lower().startswith("sec-websocket-protocol:")]
    note = f" (subprotocol {sub[0] if sub else 'none'})"
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(connect)]) + mask
              + bytes(b ^ mask[i % 4] for i, b in enumerate(connect)))
    def take(n):
        global buf
        while len(buf) < n:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit(f"{url}: closed before answering CONNECT")
            buf += chunk
        out, buf = buf[:n], buf[n:]
        return out
    b0, b1 = take(2)
    n = b1 & 0x7F
    n = struct.unpack(">H", take(2))[0] if n == 126 else struct.unpack(">Q", take(8))[0] if n == 127 else n
    reply = take(n)
else:
    s.sendall(connect)
    while b"\0" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    reply = buf
first = reply.split(b"\n", 1)[0].decode(errors="replace")
if first != "CONNECTED":
    sys.exit(f"{url}: CONNECT answered with {reply[:300]!r}")
headers = reply.split(b"\n\n", 1)[0].decode(errors="replace").split("\n")[1:]
print(f"{url}: CONNECTED{note} " + " ".join(h for h in headers if not h.startswith("session:")))
PY
}

# ---------------------------------------------------------------- RabbitMQ

rabbitmq_start() {
    # The bench script installs, configures (/etc/rabbitmq) and starts it; it prints the PID
    # of the Erlang VM, which we do not need here.
    timeout "$START_TIMEOUT" bash "$repo/benches/peers/rabbitmq.sh" start >/dev/null \
        || die "rabbitmq: benches/peers/rabbitmq.sh start failed or took over ${START_TIMEOUT}s"
    wait_port "$RABBIT_TCP_PORT" rabbitmq
    wait_port "$RABBIT_WS_PORT" rabbitmq
    stomp_check "$RABBIT_TCP_URL" "$RABBIT_HOST"
    stomp_check "$RABBIT_WS_URL" "$RABBIT_HOST"
}

rabbitmq_stop() {
    bash "$repo/benches/peers/rabbitmq.sh" stop
    # The Erlang VM goes on shutting down for a few seconds after that returns.
    local deadline=$((SECONDS + 30))
    while pgrep -f 'beam.smp.*rabbit' >/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "rabbitmq: its Erlang VM still runs 30s after the stop"
        sleep 0.5
    done
    # The Erlang port mapper that rabbitmq-server started keeps 127.0.0.1:4369 otherwise.
    if command -v epmd >/dev/null; then epmd -kill >/dev/null 2>&1 || true; fi
    wait_closed "$RABBIT_TCP_PORT"
    wait_closed "$RABBIT_WS_PORT"
}

# ---------------------------------------------------------------- ActiveMQ

activemq_configure() {
    if ! dpkg -s activemq >/dev/null 2>&1; then
        apt-get update -q
        # Debian enables no instance by default, so installing starts nothing.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q activemq
    fi
    # A package instance of our own beside the packaged "main" one (which stays disabled):
    # config in /etc/activemq/instances-available/conformance, enabled by a symlink in
    # instances-enabled, data under /var/lib/activemq/conformance; the package's init script
    # starts every enabled instance as user activemq.
    mkdir -p "$AMQ_CONF"
    cat > "$AMQ_CONF/activemq.xml" <<'XML'
<!-- Written by stompbox's conformance/peers/run.sh: STOMP on loopback only, no OpenWire,
     no JMX, no authentication, messages kept in memory (each start begins empty). -->
<beans xmlns="http://www.springframework.org/schema/beans"
       xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
       xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
       http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer"/>
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="localhost"
          useJmx="false" persistent="false" dataDirectory="${activemq.data}">
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:61633"/>
    </transportConnectors>
  </broker>
</beans>
XML
    # This build logs through log4j 1.2 (the packaged log4j2.properties is not read):
    # to stdout, which the options below send to $AMQ_BASE/activemq.out.
    cat > "$AMQ_CONF/log4j.properties" <<'PROPS'
log4j.rootLogger=INFO, stdout
log4j.logger.org.springframework=WARN
log4j.logger.org.apache.xbean=WARN
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=%d{ISO8601} %5p | %m%n
PROPS
    # Read by /usr/bin/activemq in place of /usr/share/activemq/activemq-options.
    cat > "$AMQ_CONF/options" <<OPTS
ACTIVEMQ_BASE="$AMQ_BASE"
JAVA_HOME="/usr/lib/jvm/default-java/"
ACTIVEMQ_OPTS="-Xms256M -Xmx512M -Dorg.apache.activemq.UseDedicatedTaskRunner=true"
ACTIVEMQ_ARGS="start xbean:activemq.xml"
ACTIVEMQ_OUT="$AMQ_BASE/activemq.out"
STARTTIME=1
OPTS
    ln -sfn "$AMQ_CONF" "/etc/activemq/instances-enabled/$AMQ_INSTANCE"
    mkdir -p "$AMQ_BASE/data"
    chown -R activemq "$AMQ_BASE"
}

activemq_start() {
    activemq_configure
    if port_open "$AMQ_TCP_PORT"; then
        log "activemq: port $AMQ_TCP_PORT already answers; not starting another"
    else
        : > "$AMQ_BASE/activemq.out"
        chown activemq "$AMQ_BASE/activemq.out"
        # No systemd here: the package's SysV script, run directly (invoke-rc.d may be
        # denied by policy-rc.d). It backgrounds java as user activemq, writes $AMQ_PIDFILE.
        /etc/init.d/activemq start >/dev/null
        local pid="" deadline=$((SECONDS + 10))
        until pid=$(cat "$AMQ_PIDFILE" 2>/dev/null) && [ -n "$pid" ]; do
            [ "$SECONDS" -lt "$deadline" ] || { tail -n 30 "$AMQ_BASE/activemq.out" >&2; die "activemq: no pidfile $AMQ_PIDFILE"; }
            sleep 0.2
        done
        if ! (wait_port "$AMQ_TCP_PORT" activemq "$pid"); then
            tail -n 30 "$AMQ_BASE/activemq.out" >&2
            exit 1
        fi
    fi
    stomp_check "$AMQ_TCP_URL" "$AMQ_HOST"
    log "activemq: no WebSocket endpoint: $AMQ_NO_WS"
}

activemq_stop() {
    if [ -x /etc/init.d/activemq ]; then
        # Stops each instance that has a pidfile in /var/run/activemq (TERM, then KILL after
        # 2 s). Its output is noise ("basename: missing operand" once java has exited); the
        # port check below is what tells.
        /etc/init.d/activemq stop >/dev/null 2>&1 || true
    fi
    wait_closed "$AMQ_TCP_PORT"
}

# ---------------------------------------------------------------- the suite

suite_ready() {
    if [ -n "${SUITE:-}" ]; then
        [ -x "$SUITE" ] || die "SUITE=$SUITE is not an executable file"
        return
    fi
    SUITE=$repo/target/release/stompbox-conformance
    if [ ! -x "$SUITE" ]; then
        log "building $SUITE"
        (cd "$repo" && cargo build --release -p stompbox-conformance)
    fi
    [ -x "$SUITE" ] || die "$SUITE missing after the build"
}

broker_version() {
    dpkg-query -W -f='${Package} ${Version}' "$1" 2>/dev/null || echo "$1 (version unknown)"
}

# run_suite BROKER TRANSPORT URL HOST: the JSON report, then the human table; a non-zero
# exit (a MUST failed) is recorded, not fatal.
run_suite() {
    local broker=$1 transport=$2 url=$3 host=$4 package=$5
    local json=$reports/$broker-$transport.json txt=$reports/$broker-$transport.txt
    local json_rc=0 txt_rc=0
    log "$broker over $transport: $url"
    timeout "$SUITE_TIMEOUT" "$SUITE" --url "$url" --login "$LOGIN" --passcode "$PASSCODE" \
        --host "$host" --json > "$json" || json_rc=$?
    timeout "$SUITE_TIMEOUT" "$SUITE" --url "$url" --login "$LOGIN" --passcode "$PASSCODE" \
        --host "$host" > "$txt" 2>&1 || txt_rc=$?
    {
        echo
        echo "# broker: $(broker_version "$package"), $url, host $host, login $LOGIN"
        echo "# run: $(date -u +%Y-%m-%dT%H:%M:%SZ), stompbox $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
        echo "# exit code: $txt_rc (this table), $json_rc (the --json run)"
    } >> "$txt"
    log "$broker over $transport: exit $txt_rc (table), $json_rc (json)"
}

report_one() {
    local broker=$1
    "${broker}_start"
    # shellcheck disable=SC2064  # expand $broker now: the trap runs outside this function
    trap "${broker}_stop || true" EXIT
    case $broker in
        rabbitmq)
            run_suite rabbitmq tcp "$RABBIT_TCP_URL" "$RABBIT_HOST" rabbitmq-server
            run_suite rabbitmq ws "$RABBIT_WS_URL" "$RABBIT_HOST" rabbitmq-server
            ;;
        activemq)
            run_suite activemq tcp "$AMQ_TCP_URL" "$AMQ_HOST" activemq
            rm -f "$reports/activemq-ws.json"
            {
                echo "activemq over ws: $AMQ_NO_WS"
                echo
                echo "# broker: $(broker_version activemq)"
                echo "# run: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
            } > "$reports/activemq-ws.txt"
            ;;
    esac
    trap - EXIT
    "${broker}_stop"
}

# ---------------------------------------------------------------- main

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts system services)"
action=${1:-}
target=${2:-}
case $action:$target in
    start:rabbitmq | start:activemq) "${target}_start" ;;
    stop:rabbitmq | stop:activemq) "${target}_stop" ;;
    report:rabbitmq | report:activemq)
        suite_ready
        mkdir -p "$reports"
        report_one "$target"
        ;;
    report:all)
        suite_ready
        mkdir -p "$reports"
        report_one rabbitmq
        report_one activemq
        ;;
    *) die "usage: $0 start|stop rabbitmq|activemq, or $0 report rabbitmq|activemq|all" ;;
esac
