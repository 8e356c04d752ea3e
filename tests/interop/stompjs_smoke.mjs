#!/usr/bin/env node
// Interop smoke test: drive a STOMP-over-WebSocket broker with @stomp/stompjs.
//
// Usage: node tests/interop/stompjs_smoke.mjs ws://127.0.0.1:15674/ws
//
// The client keeps its defaults (STOMP 1.2/1.1/1.0 offered both as WebSocket
// subprotocols and in accept-version, heart-beat 10000,10000) because the
// point is to prove the broker works with stompjs as people actually use it.
// Exits 0 on success; on failure prints the reason to stderr and exits 1.

import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { Client } from '@stomp/stompjs';
import { WebSocket } from 'ws';

// Node 20 has no global WebSocket. stompjs constructs `new WebSocket(url,
// protocols)` itself from brokerURL, so supplying the class (rather than a
// webSocketFactory) leaves its subprotocol negotiation untouched. Always
// using `ws` keeps the run identical on Node versions that do have one.
Object.assign(globalThis, { WebSocket });

// Loopback answers in milliseconds; these bounds only absorb a loaded machine.
const STEP_TIMEOUT_MS = 5000;
const QUIET_PERIOD_MS = 1000;
const OVERALL_TIMEOUT_MS = 20000;

const BINARY = new Uint8Array([0, 1, 2, 255]);
const JSON_VALUE = { text: 'héllo ✓', n: 42, list: [1, 2, 3], nested: { ok: true } };

function fail(reason) {
  console.error(`FAIL: ${reason}`);
  process.exit(1);
}

function trace(text) {
  console.log(`[stompjs] ${text}`);
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${STEP_TIMEOUT_MS} ms waiting for ${what}`)),
      STEP_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

// Resolves once `count` messages have arrived; keeps collecting after that so
// duplicates are still visible to the caller.
function collector(count) {
  const messages = [];
  let resolve;
  const full = new Promise(r => { resolve = r; });
  const onMessage = message => {
    messages.push(message);
    if (messages.length >= count) resolve();
  };
  return { messages, full, onMessage };
}

async function connect(url) {
  const client = new Client({ brokerURL: url, reconnectDelay: 0 });
  const state = { closing: false, disconnectReceipt: null };
  client.onStompError = frame =>
    fail(`broker sent ERROR: message=${JSON.stringify(frame.headers.message)} body=${JSON.stringify(frame.body)}`);
  client.onWebSocketError = event => fail(`WebSocket error: ${event.message ?? event.type}`);
  client.onWebSocketClose = event => {
    if (!state.closing) fail(`WebSocket closed unexpectedly: code=${event.code} reason=${JSON.stringify(event.reason)}`);
  };
  // stompjs calls onDisconnect only when the RECEIPT for its DISCONNECT arrives.
  client.onDisconnect = frame => { state.disconnectReceipt = frame; };

  const connected = new Promise(resolve => { client.onConnect = resolve; });
  client.activate();
  const frame = await withTimeout(connected, `CONNECTED from ${url}`);
  if (frame.headers.version !== '1.2') {
    fail(`offered 1.2,1.1,1.0 but CONNECTED says version=${JSON.stringify(frame.headers.version)}`);
  }
  trace(`connected: version=${frame.headers.version} server=${JSON.stringify(frame.headers.server)} heart-beat=${frame.headers['heart-beat']}`);
  return { client, state };
}

async function disconnect({ client, state }) {
  state.closing = true;
  await withTimeout(client.deactivate(), 'deactivate');
  if (!state.disconnectReceipt) fail('connection closed without a RECEIPT for DISCONNECT');
  trace('deactivated after DISCONNECT receipt');
}

function receipt(client, what) {
  const id = `rcpt-${randomUUID()}`;
  const received = new Promise(resolve => client.watchForReceipt(id, resolve));
  return { id, received: withTimeout(received, `RECEIPT for ${what}`) };
}

// A receipt proves the subscription is active before anything is published,
// so topic messages cannot legitimately be missed.
async function subscribe(client, destination, onMessage, headers) {
  const r = receipt(client, `SUBSCRIBE ${destination}`);
  client.subscribe(destination, onMessage, { ...headers, receipt: r.id });
  await r.received;
  trace(`subscribed ${destination} ${JSON.stringify(headers)}`);
}

function bytesEqual(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function expectHeader(message, name, value, kind) {
  if (message.headers[name] !== value) {
    fail(`${kind} message: header ${name} is ${JSON.stringify(message.headers[name])}, expected ${JSON.stringify(value)}`);
  }
}

// Messages are told apart by x-kind, and each kind must arrive exactly once.
function byKind(messages, destination, kinds) {
  const found = {};
  for (const message of messages) {
    const kind = message.headers['x-kind'];
    if (!kinds.includes(kind) || found[kind]) {
      fail(`${destination}: unexpected or duplicate message x-kind=${JSON.stringify(kind)}`);
    }
    if (message.headers.destination !== destination) {
      fail(`${kind} message has destination ${JSON.stringify(message.headers.destination)}, expected ${destination}`);
    }
    found[kind] = message;
  }
  return found;
}

async function run(url) {
  const tag = randomUUID().replaceAll('-', '').slice(0, 12);
  const queue = `/queue/interop-js-${tag}`;
  const topic = `/topic/interop-js-${tag}`;

  const first = await connect(url);
  const { client } = first;
  const queueMessages = collector(3);
  const topicMessages = collector(2);
  await subscribe(client, queue, queueMessages.onMessage, { ack: 'client-individual' });
  await subscribe(client, topic, topicMessages.onMessage, {});

  client.publish({ destination: queue, body: 'plain text', headers: { 'x-kind': 'text', 'x-test': 'yes' } });
  client.publish({
    destination: queue,
    body: JSON.stringify(JSON_VALUE),
    headers: { 'x-kind': 'json', 'content-type': 'application/json' },
  });
  client.publish({
    destination: queue,
    binaryBody: BINARY,
    headers: { 'x-kind': 'binary', 'content-type': 'application/octet-stream' },
  });
  client.publish({ destination: topic, body: 'topic text 1', headers: { 'x-kind': 'topic-1' } });
  client.publish({ destination: topic, body: 'topic text 2', headers: { 'x-kind': 'topic-2' } });
  trace(`published 3 to ${queue}, 2 to ${topic}`);

  await withTimeout(queueMessages.full, `3 messages on ${queue}`);
  await withTimeout(topicMessages.full, `2 messages on ${topic}`);

  const q = byKind(queueMessages.messages, queue, ['text', 'json', 'binary']);
  if (q.text.body !== 'plain text') fail(`text message body is ${JSON.stringify(q.text.body)}`);
  expectHeader(q.text, 'x-test', 'yes', 'text');
  let parsed;
  try {
    parsed = JSON.parse(q.json.body);
  } catch (err) {
    fail(`JSON message body does not parse (${err.message}): ${JSON.stringify(q.json.body)}`);
  }
  if (!isDeepStrictEqual(parsed, JSON_VALUE)) fail(`JSON message body is ${q.json.body}`);
  expectHeader(q.json, 'content-type', 'application/json', 'JSON');
  if (!bytesEqual(q.binary.binaryBody, BINARY)) {
    fail(`binary message body is [${Array.from(q.binary.binaryBody)}], expected [${Array.from(BINARY)}]`);
  }
  expectHeader(q.binary, 'content-type', 'application/octet-stream', 'binary');
  trace(`received text, JSON and binary [${Array.from(q.binary.binaryBody)}] from ${queue}`);

  const t = byKind(topicMessages.messages, topic, ['topic-1', 'topic-2']);
  if (t['topic-1'].body !== 'topic text 1' || t['topic-2'].body !== 'topic text 2') {
    fail(`topic bodies are ${JSON.stringify([t['topic-1'].body, t['topic-2'].body])}`);
  }
  trace(`received 2 from ${topic}`);

  for (const message of queueMessages.messages) {
    const r = receipt(client, `ACK of ${message.headers['x-kind']} message`);
    message.ack({ receipt: r.id });
    await r.received;
  }
  trace(`acked ${queueMessages.messages.length} queue messages`);

  // Closing the first consumer is what makes the next check meaningful: any
  // message it had not validly acked now goes back to the queue and would
  // reach the second consumer.
  await disconnect(first);

  const second = await connect(url);
  const redelivered = collector(1);
  await subscribe(second.client, queue, redelivered.onMessage, { ack: 'client-individual' });
  await sleep(QUIET_PERIOD_MS);
  if (redelivered.messages.length > 0) {
    const kinds = redelivered.messages.map(m => m.headers['x-kind']);
    fail(`acked messages were redelivered to a second consumer: ${JSON.stringify(kinds)}`);
  }
  trace(`second consumer got nothing in ${QUIET_PERIOD_MS} ms: acks were honoured`);
  await disconnect(second);
}

const url = process.argv[2];
if (!url || process.argv.length !== 3) {
  console.error('usage: node tests/interop/stompjs_smoke.mjs WS_URL');
  process.exit(2);
}

const watchdog = setTimeout(
  () => fail(`stompjs smoke test did not finish within ${OVERALL_TIMEOUT_MS} ms`),
  OVERALL_TIMEOUT_MS,
);
run(url).then(
  () => {
    clearTimeout(watchdog);
    console.log('stompjs smoke test passed');
  },
  err => fail(err.message),
);
