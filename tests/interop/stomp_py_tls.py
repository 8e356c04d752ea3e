#!/usr/bin/env python3
"""Interop: stomp.py over TLS (STOMP 1.2), verifying the broker's certificate.

Usage: PYTHONPATH=.interop/python python3 tests/interop/stomp_py_tls.py HOST PORT CAFILE

Connects over TLS trusting only CAFILE, subscribes to a queue, sends a message and
receives it, then disconnects with a receipt. Exits 0 on success; on failure prints
the reason to stderr and exits 1.
"""

import sys
import threading
import uuid

import stomp

STEP_TIMEOUT = 5.0


class Listener(stomp.ConnectionListener):
    def __init__(self):
        self.messages = []
        self.errors = []
        self.got = threading.Event()

    def on_message(self, frame):
        self.messages.append(frame.body)
        self.got.set()

    def on_error(self, frame):
        self.errors.append(frame.headers.get("message"))
        self.got.set()


def main():
    host, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    conn = stomp.Connection12([(host, port)], heartbeats=(0, 0))
    conn.set_ssl(for_hosts=[(host, port)], ca_certs=cafile)
    listener = Listener()
    conn.set_listener("", listener)
    conn.connect(wait=True)
    queue = "/queue/tls-" + uuid.uuid4().hex
    conn.subscribe(queue, id="1", ack="auto")
    conn.send(queue, "over TLS ✓")
    if not listener.got.wait(STEP_TIMEOUT):
        raise SystemExit("no message within %s s" % STEP_TIMEOUT)
    if listener.errors:
        raise SystemExit("ERROR from the broker: %r" % listener.errors)
    if listener.messages != ["over TLS ✓"]:
        raise SystemExit("unexpected messages: %r" % listener.messages)
    conn.disconnect(receipt="bye")
    print("stomp.py over TLS: ok")


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - report anything as a failure
        print("failed: %r" % (e,), file=sys.stderr)
        sys.exit(1)
