#!/usr/bin/env python3
"""Interop smoke test: drive a STOMP broker with the stomp.py client.

Usage: PYTHONPATH=.interop/python python3 tests/interop/stomp_py_smoke.py HOST PORT

Runs the same scenario twice: once with stomp.Connection as-is (the library
default, which asks for STOMP 1.1) and once with stomp.Connection12. Exits 0
on success; on failure prints the reason to stderr and exits 1.
"""

import os
import sys
import threading
import uuid

import stomp

# Per-step bound. Everything here is loopback, so a healthy broker answers in
# milliseconds; 5 s only has to absorb a loaded CI machine.
STEP_TIMEOUT = 5.0
# How long the second consumer listens to be sure nothing is redelivered.
QUIET_PERIOD = 1.0
# stomp.py's connect(wait=True) and disconnect(receipt=...) block without a
# timeout, so a broker that never answers would hang the test; this watchdog
# turns that into a failure.
OVERALL_TIMEOUT = 25.0

# (body, extra headers). The non-ASCII body checks that the broker passes the
# bytes through untouched and that content-length counts bytes, not chars.
QUEUE_MESSAGES = [
    ("plain queue message", {}),
    ("queue message with custom header", {"x-test": "yes"}),
    ("héllo ✓", {}),
]
TOPIC_BODIES = ["topic message 1", "topic message 2"]


class SmokeFailure(Exception):
    pass


class Recorder(stomp.ConnectionListener):
    """Collects what the broker sends so the scenario can wait on it."""

    def __init__(self):
        self._cond = threading.Condition()
        self.connected = None
        self.messages = []
        self.receipts = set()
        self.errors = []

    def on_connected(self, frame):
        with self._cond:
            self.connected = frame
            self._cond.notify_all()

    def on_message(self, frame):
        with self._cond:
            self.messages.append(frame)
            self._cond.notify_all()

    def on_receipt(self, frame):
        with self._cond:
            self.receipts.add(frame.headers.get("receipt-id"))
            self._cond.notify_all()

    def on_error(self, frame):
        with self._cond:
            self.errors.append(frame)
            self._cond.notify_all()

    def wait_for(self, predicate, what):
        # An ERROR frame ends the wait early: it explains the failure far
        # better than the timeout that would follow it.
        with self._cond:
            done = self._cond.wait_for(lambda: self.errors or predicate(), STEP_TIMEOUT)
            self.raise_on_error(what)
            if not done:
                raise SmokeFailure(f"timed out after {STEP_TIMEOUT}s waiting for {what}")

    def wait_for_receipt(self, receipt_id, what):
        self.wait_for(lambda: receipt_id in self.receipts, f"RECEIPT for {what}")

    def received(self):
        with self._cond:
            return list(self.messages)

    def messages_within(self, seconds):
        """Waits up to `seconds` for any MESSAGE; returns what arrived."""
        with self._cond:
            self._cond.wait_for(lambda: self.messages or self.errors, seconds)
            self.raise_on_error(f"the {seconds}s quiet period")
            return list(self.messages)

    def raise_on_error(self, what):
        if self.errors:
            frame = self.errors[0]
            raise SmokeFailure(
                f"broker sent ERROR while waiting for {what}: "
                f"message={frame.headers.get('message')!r} body={frame.body!r}"
            )


def trace(label, text):
    print(f"[{label}] {text}", flush=True)


def new_receipt():
    return f"rcpt-{uuid.uuid4().hex[:12]}"


def connect(label, factory, host, port):
    conn = factory([(host, port)])
    rec = Recorder()
    conn.set_listener("smoke", rec)
    try:
        conn.connect(wait=True)
    except stomp.exception.ConnectFailedException:
        rec.raise_on_error("CONNECTED")
        raise SmokeFailure(f"could not connect to {host}:{port}")
    # The client asks for exactly one version (conn.version), so any other
    # answer means the broker negotiated wrongly.
    version = rec.connected.headers.get("version")
    if version != conn.version:
        raise SmokeFailure(f"asked for STOMP {conn.version}, CONNECTED says version={version!r}")
    trace(label, f"connected: version={version} server={rec.connected.headers.get('server')!r}")
    return conn, rec, version


def subscribe(label, conn, rec, destination, sub_id, ack):
    # A receipt proves the subscription is active before anything is sent to
    # a topic, which would otherwise be allowed to drop those messages.
    receipt = new_receipt()
    conn.subscribe(destination, id=sub_id, ack=ack, receipt=receipt)
    rec.wait_for_receipt(receipt, f"SUBSCRIBE {destination}")
    trace(label, f"subscribed {destination} id={sub_id} ack={ack}")


def disconnect(label, conn, rec):
    receipt = new_receipt()
    conn.disconnect(receipt=receipt)
    rec.wait_for_receipt(receipt, "DISCONNECT")
    trace(label, "disconnected with receipt")


def ack(conn, version, frame, receipt):
    # STOMP 1.2 acknowledges by the MESSAGE's `ack` header; 1.1 by
    # message-id + subscription. stomp.py's ack() signature differs to match.
    if version == "1.2":
        ack_id = frame.headers.get("ack")
        if ack_id is None:
            raise SmokeFailure(f"STOMP 1.2 MESSAGE on a client-individual subscription lacks an ack header: {frame.headers}")
        conn.ack(ack_id, receipt=receipt)
    else:
        conn.ack(frame.headers["message-id"], frame.headers["subscription"], receipt=receipt)


def check_messages(label, frames, destination, expected):
    """expected: list of (body, headers); each must arrive exactly once."""
    bodies = sorted(f.body for f in frames)
    wanted = sorted(body for body, _ in expected)
    if bodies != wanted:
        raise SmokeFailure(f"{destination}: expected bodies {wanted!r}, got {bodies!r}")
    by_body = {f.body: f for f in frames}
    for body, headers in expected:
        frame = by_body[body]
        if frame.headers.get("destination") != destination:
            raise SmokeFailure(f"message {body!r} has destination {frame.headers.get('destination')!r}, expected {destination!r}")
        if "message-id" not in frame.headers:
            raise SmokeFailure(f"message {body!r} has no message-id header")
        for name, value in headers.items():
            if frame.headers.get(name) != value:
                raise SmokeFailure(f"message {body!r}: header {name} is {frame.headers.get(name)!r}, expected {value!r}")
    trace(label, f"received {len(frames)} from {destination} with correct bodies and headers")


def run_pass(label, factory, host, port):
    tag = uuid.uuid4().hex[:12]
    queue = f"/queue/interop-py-{tag}"
    topic = f"/topic/interop-py-{tag}"

    conn, rec, version = connect(label, factory, host, port)
    subscribe(label, conn, rec, queue, "q", "client-individual")
    subscribe(label, conn, rec, topic, "t", "auto")

    for body, headers in QUEUE_MESSAGES:
        conn.send(queue, body, headers=headers)
    for body in TOPIC_BODIES:
        conn.send(topic, body)
    trace(label, f"sent {len(QUEUE_MESSAGES)} to {queue}, {len(TOPIC_BODIES)} to {topic}")

    total = len(QUEUE_MESSAGES) + len(TOPIC_BODIES)
    rec.wait_for(lambda: len(rec.messages) >= total, f"{total} MESSAGE frames")
    received = rec.received()
    queue_frames = [f for f in received if f.headers.get("subscription") == "q"]
    topic_frames = [f for f in received if f.headers.get("subscription") == "t"]
    if len(queue_frames) + len(topic_frames) != len(received):
        raise SmokeFailure(f"MESSAGE with unknown subscription header: {[f.headers for f in received]}")
    check_messages(label, queue_frames, queue, QUEUE_MESSAGES)
    check_messages(label, topic_frames, topic, [(b, {}) for b in TOPIC_BODIES])

    for frame in queue_frames:
        receipt = new_receipt()
        ack(conn, version, frame, receipt)
        rec.wait_for_receipt(receipt, f"ACK of {frame.body!r}")
    trace(label, f"acked {len(queue_frames)} queue messages (STOMP {version} style)")

    # Closing the first consumer is what makes the check meaningful: any
    # message it had not validly acked now goes back to the queue and would
    # reach the second consumer.
    disconnect(label, conn, rec)

    conn2, rec2, _ = connect(label, factory, host, port)
    subscribe(label, conn2, rec2, queue, "q2", "client-individual")
    redelivered = rec2.messages_within(QUIET_PERIOD)
    if redelivered:
        bodies = [f.body for f in redelivered]
        raise SmokeFailure(f"acked messages were redelivered to a second consumer: {bodies!r}")
    trace(label, f"second consumer got nothing in {QUIET_PERIOD}s: acks were honoured")
    disconnect(label, conn2, rec2)


def watchdog():
    print(f"FAIL: stomp.py smoke test did not finish within {OVERALL_TIMEOUT}s", file=sys.stderr, flush=True)
    os._exit(1)


def main():
    if len(sys.argv) != 3:
        print(f"usage: {sys.argv[0]} HOST PORT", file=sys.stderr)
        return 2
    host, port = sys.argv[1], int(sys.argv[2])

    timer = threading.Timer(OVERALL_TIMEOUT, watchdog)
    timer.daemon = True
    timer.start()

    passes = [
        (f"stomp.Connection {stomp.__version__}", stomp.Connection),
        (f"stomp.Connection12 {stomp.__version__}", stomp.Connection12),
    ]
    for label, factory in passes:
        try:
            run_pass(label, factory, host, port)
        except SmokeFailure as exc:
            print(f"FAIL [{label}]: {exc}", file=sys.stderr, flush=True)
            return 1
    timer.cancel()
    print("stomp.py smoke test passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
