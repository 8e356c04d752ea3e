// The browser half of tests/browser.rs: @stomp/stompjs (the UMD bundle, as a web
// app would load it) in Chromium, talking to the stompbox that served this page.
//
// The page reports through `window.stompTest`, which tests/browser/driver.mjs
// polls: `phase` moves connecting → ready-for-restart → restarting → resubscribed
// → done, or to failed with the reasons in `failures`. The Rust test restarts the
// broker between ready-for-restart and resubscribed, and publishes the bytes given
// in `?after=HEX` once the page has resubscribed.
'use strict';

(() => {
  const params = new URLSearchParams(location.search);
  const run = params.get('run') ?? 'manual';
  const TOPIC = `/topic/browser.${run}`;
  const QUEUE = `/queue/browser.${run}`;
  const AFTER_RESTART = hexBytes(params.get('after') ?? '');
  // Loopback answers in milliseconds; this only absorbs a loaded machine.
  const STEP_MS = 10000;
  // How long an ACK is held back: long enough that, were prefetch-count:1 not
  // enforced, the next queue message would arrive before the ACK.
  const ACK_DELAY_MS = 150;

  // Multi-byte UTF-8 on purpose.
  const TEXT = 'hello from Chromium ✓ — ünïcödé 🚀';
  const JSON_VALUE = { text: 'héllo ✓', n: 42, list: [1, 2, 3], nested: { ok: true, none: null } };
  // Every byte value (NULs included) and then sequences that are not UTF-8, built
  // in an ArrayBuffer as an app holding binary data would.
  const BINARY = (() => {
    const buffer = new ArrayBuffer(256 + 6);
    const bytes = new Uint8Array(buffer);
    for (let i = 0; i < 256; i++) bytes[i] = (i * 167 + 13) & 0xff;
    bytes.set([0xff, 0xfe, 0xc3, 0x28, 0x80, 0x00], 256);
    return bytes;
  })();

  const state = (window.stompTest = {
    phase: 'connecting',
    connects: 0,
    failures: [],
    log: [],
    received: { topic: 0, queue: 0, acked: 0 },
  });

  function log(text) {
    state.log.push(text);
    document.getElementById('log').textContent += text + '\n';
  }

  function fail(reason) {
    if (state.phase === 'done') return;
    state.failures.push(reason);
    state.phase = 'failed';
    log(`FAIL: ${reason}`);
  }

  function hexBytes(hex) {
    return new Uint8Array((hex.match(/../g) ?? []).map((h) => parseInt(h, 16)));
  }

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function sameBytes(a, b) {
    return a.length === b.length && a.every((byte, i) => byte === b[i]);
  }

  function within(promise, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${STEP_MS} ms waiting for ${what}`)), STEP_MS);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }

  // Resolves once `count` items have arrived; keeps collecting after that, so
  // duplicates still show.
  function collector(count) {
    const items = [];
    let resolve;
    const full = new Promise((r) => { resolve = r; });
    return {
      items,
      full,
      push(item) {
        items.push(item);
        if (items.length >= count) resolve();
      },
    };
  }

  let receiptSeq = 0;
  function receipt(client, what) {
    const id = `rcpt-${run}-${++receiptSeq}`;
    const received = new Promise((resolve) => client.watchForReceipt(id, resolve));
    return { id, received: within(received, `RECEIPT for ${what}`) };
  }

  // Waiting for the receipt means the subscription is live before anything is
  // published, so a topic message cannot legitimately be missed.
  async function subscribe(client, destination, onMessage, headers) {
    const r = receipt(client, `SUBSCRIBE ${destination}`);
    client.subscribe(destination, onMessage, { ...headers, receipt: r.id });
    await r.received;
    log(`subscribed ${destination} ${JSON.stringify(headers)}`);
  }

  // One connection's worth of subscriptions: topic messages and queue messages
  // collected, queue messages acked one by one after a delay. With
  // prefetch-count:1 the broker may not send the next queue message until the
  // previous one is acked, so a second message before the ACK is a failure, and
  // an ACK the broker ignored stalls the queue into a timeout.
  async function subscribeBoth(client, topicCount, queueCount) {
    const topic = collector(topicCount);
    const queue = collector(queueCount);
    const acks = collector(queueCount);
    let unacked = 0;
    await subscribe(client, TOPIC, (m) => { state.received.topic++; topic.push(m); }, {});
    await subscribe(client, QUEUE, (m) => {
      state.received.queue++;
      if (unacked > 0) fail(`queue message ${m.headers['message-id']} arrived before the previous one was acked (prefetch-count:1)`);
      unacked++;
      queue.push(m);
      setTimeout(() => {
        const r = receipt(client, `ACK of ${m.headers['message-id']}`);
        unacked--;
        m.ack({ receipt: r.id });
        r.received.then(() => { state.received.acked++; acks.push(m); }, (e) => fail(e.message));
      }, ACK_DELAY_MS);
    }, { ack: 'client-individual', 'prefetch-count': '1' });
    return { topic, queue, acks };
  }

  function expectHeader(m, name, value, what) {
    if (m.headers[name] !== value) {
      fail(`${what}: header ${name} is ${JSON.stringify(m.headers[name])}, expected ${JSON.stringify(value)}`);
    }
  }

  // The three bodies, in publish order, byte for byte.
  function checkThree(messages, destination) {
    if (messages.length !== 3) {
      fail(`${destination}: ${messages.length} messages, expected 3`);
      return;
    }
    const [text, json, binary] = messages;
    for (const m of messages) expectHeader(m, 'destination', destination, destination);
    expectHeader(text, 'x-kind', 'text', `${destination} 1st`);
    expectHeader(json, 'x-kind', 'json', `${destination} 2nd`);
    expectHeader(binary, 'x-kind', 'binary', `${destination} 3rd`);
    if (text.body !== TEXT) fail(`${destination}: text body is ${JSON.stringify(text.body)}`);
    if (!sameBytes(text.binaryBody, new TextEncoder().encode(TEXT))) {
      fail(`${destination}: text bytes are ${hex(text.binaryBody)}`);
    }
    expectHeader(json, 'content-type', 'application/json', `${destination} JSON`);
    if (json.body !== JSON.stringify(JSON_VALUE)) fail(`${destination}: JSON body is ${json.body}`);
    expectHeader(binary, 'content-type', 'application/octet-stream', `${destination} binary`);
    if (!sameBytes(binary.binaryBody, BINARY)) {
      fail(`${destination}: binary body is ${hex(binary.binaryBody)}, expected ${hex(BINARY)}`);
    }
  }

  function publishThree(client, destination) {
    client.publish({ destination, body: TEXT, headers: { 'x-kind': 'text' } });
    client.publish({
      destination,
      body: JSON.stringify(JSON_VALUE),
      headers: { 'x-kind': 'json', 'content-type': 'application/json' },
    });
    client.publish({
      destination,
      binaryBody: BINARY,
      headers: { 'x-kind': 'binary', 'content-type': 'application/octet-stream' },
    });
  }

  async function beforeRestart(client) {
    const got = await subscribeBoth(client, 3, 3);
    publishThree(client, TOPIC);
    publishThree(client, QUEUE);
    log(`published text, JSON and ${BINARY.length} binary bytes to ${TOPIC} and ${QUEUE}`);
    await within(got.topic.full, `3 messages on ${TOPIC}`);
    await within(got.acks.full, `3 acked messages on ${QUEUE}`);
    checkThree(got.topic.items, TOPIC);
    checkThree(got.queue.items, QUEUE);
    if (state.phase === 'failed') return;
    log('all six received byte for byte; queue messages acked');
    state.phase = 'ready-for-restart';
  }

  async function afterRestart(client) {
    const got = await subscribeBoth(client, 1, 1);
    state.phase = 'resubscribed';
    await within(got.topic.full, `the post-restart message on ${TOPIC}`);
    await within(got.acks.full, `the post-restart message on ${QUEUE}, acked`);
    for (const [m, destination] of [[got.topic.items[0], TOPIC], [got.queue.items[0], QUEUE]]) {
      expectHeader(m, 'destination', destination, `post-restart ${destination}`);
      if (!sameBytes(m.binaryBody, AFTER_RESTART)) {
        fail(`post-restart ${destination}: body is ${hex(m.binaryBody)}, expected ${hex(AFTER_RESTART)}`);
      }
    }
    // Extra deliveries (a duplicate, a stale redelivery) would show up here.
    await new Promise((r) => setTimeout(r, 300));
    if (got.topic.items.length !== 1 || got.queue.items.length !== 1) {
      fail(`after restart: ${got.topic.items.length} topic and ${got.queue.items.length} queue messages, expected 1 and 1`);
    }
    if (state.phase === 'failed') return;
    log(`after the restart: received ${AFTER_RESTART.length} bytes on both, byte for byte`);
    state.phase = 'done';
  }

  const client = new StompJs.Client({
    brokerURL: `ws://${location.host}/ws`,
    // Small, so the reconnect after the broker restart is quick.
    reconnectDelay: 200,
    debug: () => {},
  });
  client.onConnect = (frame) => {
    state.connects++;
    log(`CONNECTED #${state.connects} version=${frame.headers.version}`);
    const step = state.connects === 1 ? beforeRestart : state.connects === 2 ? afterRestart : null;
    if (!step) {
      fail(`unexpected connection #${state.connects}`);
      return;
    }
    step(client).catch((e) => fail(e.message));
  };
  client.onStompError = (frame) => {
    // The only ERROR allowed is the one the broker sends while it shuts down.
    if (state.phase === 'ready-for-restart' && frame.headers.message === 'broker shutting down') {
      log('broker is shutting down');
      return;
    }
    fail(`ERROR frame in phase ${state.phase}: ${frame.headers.message} ${frame.body}`);
  };
  client.onWebSocketClose = (event) => {
    if (state.phase === 'ready-for-restart') {
      state.phase = 'restarting';
      log(`WebSocket closed (${event.code}); reconnecting`);
    } else if (state.phase !== 'restarting' && state.phase !== 'done' && state.phase !== 'failed') {
      fail(`WebSocket closed unexpectedly in phase ${state.phase}: code ${event.code}`);
    }
  };
  client.activate();
})();
