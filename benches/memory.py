#!/usr/bin/env python3
"""What a stompbox binary holds in memory for what clients do (BENCHMARKS.md, "Memory").

    python3 benches/memory.py target/release/stompbox [OTHER_BINARY ...]

Each binary is started as its own process with the embedded defaults on loopback
ports; its resident set (VmRSS of /proc/PID/status) is read before and after:

1. fan-out: 100 TCP subscribers with small receive buffers that never read; one
   4,000,000-byte publish to their topic (receipt awaited, then 1 s for every writer to
   block on its full socket). Goal: at most 8 MiB + one copy of the message.
2. small messages: 10,000 SENDs of a 10-byte body to a queue nobody consumes, each
   waiting for its RECEIPT so that each arrives in its own read. Goal: under 512 B of
   broker memory per queued message.

Loopback only; every loop is bounded in count and time.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Conn:
    def __init__(self, port, rcvbuf=None):
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(10)
        self.s.connect(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.send(b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0")
        self.until(b"CONNECTED")

    def send(self, data):
        self.s.sendall(data)

    def until(self, marker):
        deadline = time.time() + 10
        while marker not in self.buf:
            if time.time() > deadline:
                raise TimeoutError(marker)
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(self.buf[-200:])
            self.buf += chunk
        self.buf = self.buf[self.buf.index(marker) + len(marker):]


def measure(binary):
    tcp, ws = free_port(), free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as cfg:
        cfg.write(f'[listeners]\ntcp = "127.0.0.1:{tcp}"\nws = "127.0.0.1:{ws}"\n')
    broker = subprocess.Popen([binary, "--config", cfg.name],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", tcp), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        out = {}

        # Small messages first, before anything large was allocated and freed.
        p = Conn(tcp)
        for i in range(200):
            p.send(b"SEND\ndestination:/queue/warm\nreceipt:w\n\n0123456789\0")
            p.until(b"receipt-id:w")
        time.sleep(0.2)
        before = rss(broker.pid)
        n = 10_000
        for i in range(n):
            p.send(b"SEND\ndestination:/queue/small\nreceipt:r\n\n0123456789\0")
            p.until(b"receipt-id:r")
        time.sleep(0.2)
        out["per_small_message_bytes"] = (rss(broker.pid) - before) / n

        subs = []
        for i in range(100):
            c = Conn(tcp, rcvbuf=4096)
            c.send(f"SUBSCRIBE\nid:s{i}\ndestination:/topic/big\nreceipt:s\n\n\0".encode())
            c.until(b"receipt-id:s")
            subs.append(c)
        time.sleep(0.3)
        before = rss(broker.pid)
        body = b"b" * 4_000_000
        p.send(b"SEND\ndestination:/topic/big\nreceipt:big\n\n" + body + b"\0")
        p.until(b"receipt-id:big")
        time.sleep(1.0)
        out["fanout_4mb_100_slow_mib"] = (rss(broker.pid) - before) / MIB
        for c in subs:
            c.s.close()
        return out
    finally:
        broker.kill()
        broker.wait()
        os.unlink(cfg.name)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for binary in sys.argv[1:]:
        r = measure(binary)
        print(f"{binary}: 4 MB to 100 slow TCP subscribers: RSS +{r['fanout_4mb_100_slow_mib']:.1f} MiB; "
              f"10-byte messages one per read: {r['per_small_message_bytes']:.0f} B each")


if __name__ == "__main__":
    main()
