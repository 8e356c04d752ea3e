#!/usr/bin/env node
// Drives real headless Chromium (Debian's /usr/bin/chromium) with playwright-core
// for tests/browser.rs. Pages are loaded over http from the stompbox under test.
//
//   node tests/browser/driver.mjs stompjs BASE_URL RUN AFTER_HEX
//       Loads BASE_URL/?run=RUN&after=AFTER_HEX (tests/browser/index.html) and
//       follows its window.stompTest. Prints `PHASE ready-for-restart` and
//       `PHASE resubscribed` as the page reaches them: the Rust test restarts the
//       broker after the first and publishes after the second.
//   node tests/browser/driver.mjs heartbeat BASE_URL WS_URL
//       Loads BASE_URL/heartbeat.html, whose stompjs client (heart-beats 1 s both
//       ways) connects to WS_URL. Prints `PHASE connected N` on its Nth connection
//       and `SILENT_MS n AT t` once stompjs reports a broker silent for n ms, t being
//       the wall clock (ms since the epoch) when it did.
//   node tests/browser/driver.mjs token BASE_URL WSS_URL HS256_SECRET SHORT_S WAIT_MS
//       Loads BASE_URL/token.html; once the page is ready, mints a token for user
//       `page` that expires SHORT_S seconds from then and a long one (so a slow
//       browser start cannot eat the short one's life): two stompjs clients log in
//       over wss:// (the test's own certificate, so certificate errors are ignored)
//       with the short token; one refreshes it through /sys/auth and must still
//       round-trip a message WAIT_MS later, the other must get ERROR "token expired".
//   node tests/browser/driver.mjs chat BASE_URL [SCREENSHOT.png]
//       Opens the chat example (examples/chat) in several pages and checks that
//       they see each other's lines and an honest "users connected" count, kept
//       by the broker's presence topic: a closed or crashed tab is gone within 2 s.
//   node tests/browser/driver.mjs dashboard ADMIN_URL LOGIN PASSCODE VICTIM FORM_DESTINATION [SCREENSHOT.png]
//       Opens the admin dashboard (dashboard/, served by the admin listener) at
//       1280x800 and signs in. Prints `PHASE ready` once it is connected and shows
//       the published total (the Rust test then starts a load), `PHASE moved` once
//       that total grew by 1000 and the rate chart got a non-zero published rate,
//       `PHASE published` after a message sent with the publish form to
//       FORM_DESTINATION was accepted, and `PHASE closed` once closing connection
//       VICTIM (a session id) from its table row took it off the table. Fails if
//       the page makes any request that is not http/ws to ADMIN_URL's host.
//
// Prints `RESULT ok` and exits 0 only when every check passed; otherwise prints
// `RESULT fail: ...` and exits 1. Either way it stops by itself within
// OVERALL_TIMEOUT_MS.

import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.STOMPBOX_CHROMIUM ?? '/usr/bin/chromium';
const OVERALL_TIMEOUT_MS = 90000;
// Without the background-networking flags Chromium keeps trying to reach Google
// services; this machine has no network but loopback.
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let context;
let profile;

async function finish(ok, reason) {
  console.log(ok ? 'RESULT ok' : `RESULT fail: ${reason}`);
  try {
    await context?.close();
  } catch {
    // The browser may already be gone; the result stands.
  }
  if (profile) rmSync(profile, { recursive: true, force: true });
  process.exit(ok ? 0 : 1);
}

setTimeout(() => finish(false, `driver timed out after ${OVERALL_TIMEOUT_MS} ms`), OVERALL_TIMEOUT_MS).unref();

async function launch(ignoreHTTPSErrors = false, viewport = { width: 640, height: 520 }) {
  profile = mkdtempSync(join(tmpdir(), 'stompbox-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    ignoreHTTPSErrors,
    viewport,
  });
}

// Browser-side console output and uncaught errors go to stderr for the test log;
// an uncaught error fails the run.
function watch(page, name, errors) {
  page.on('console', (m) => console.error(`[${name} console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => {
    errors.push(`${name}: uncaught ${e.message}`);
    console.error(`[${name} pageerror] ${e.stack ?? e.message}`);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function stompjs(base, run, afterHex) {
  const page = await context.newPage();
  const errors = [];
  watch(page, 'page', errors);
  const response = await page.goto(`${base}/?run=${encodeURIComponent(run)}&after=${afterHex}`);
  if (!response?.ok()) return finish(false, `GET ${base}/ answered ${response?.status()}`);
  const announced = new Set();
  let last;
  for (;;) {
    last = await page.evaluate(() => window.stompTest && {
      phase: window.stompTest.phase,
      failures: window.stompTest.failures,
      received: window.stompTest.received,
      log: window.stompTest.log,
    });
    if (errors.length) return finish(false, errors.join('; '));
    if (!last) return finish(false, 'page.js did not run (window.stompTest missing)');
    if (last.phase === 'failed') break;
    if (last.phase === 'done') break;
    if (['ready-for-restart', 'resubscribed'].includes(last.phase) && !announced.has(last.phase)) {
      announced.add(last.phase);
      console.log(`PHASE ${last.phase}`);
    }
    await sleep(50);
  }
  console.error(`page log:\n  ${last.log.join('\n  ')}`);
  console.log(`RECEIVED ${JSON.stringify(last.received)}`);
  if (last.phase !== 'done') return finish(false, last.failures.join('; '));
  return finish(true);
}

async function heartbeat(base, ws) {
  const page = await context.newPage();
  const errors = [];
  watch(page, 'page', errors);
  const response = await page.goto(`${base}/heartbeat.html?ws=${encodeURIComponent(ws)}`);
  if (!response?.ok()) return finish(false, `GET ${base}/heartbeat.html answered ${response?.status()}`);
  let announced = 0;
  for (;;) {
    const hb = await page.evaluate(() => window.hb);
    if (errors.length) return finish(false, errors.join('; '));
    while (announced < hb.connects) {
      announced += 1;
      console.log(`PHASE connected ${announced} ${hb.heartBeat}`);
    }
    if (hb.silentMs !== null) {
      console.log(`SILENT_MS ${hb.silentMs} AT ${hb.detectedAt}`);
      console.error(`page log:\n  ${hb.log.join('\n  ')}`);
      return finish(true);
    }
    await sleep(50);
  }
}

// An HS256 JWT for user `page`, expiring `seconds` from now.
function mint(secret, seconds) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'page', exp: Math.floor(Date.now() / 1000) + seconds })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

async function token(base, wss, secret, shortSeconds, wait) {
  const page = await context.newPage();
  const errors = [];
  watch(page, 'page', errors);
  const url = `${base}/token.html?wss=${encodeURIComponent(wss)}&wait=${wait}`;
  const response = await page.goto(url);
  if (!response?.ok()) return finish(false, `GET ${base}/token.html answered ${response?.status()}`);
  // The tokens' clock starts now that the page is ready, not when the test began.
  await page.evaluate(([s, l]) => window.start(s, l), [mint(secret, Number(shortSeconds)), mint(secret, 120)]);
  const until = Date.now() + Number(wait) + 10000;
  for (;;) {
    const tk = await page.evaluate(() => window.tk);
    if (errors.length) return finish(false, errors.join('; '));
    if (tk.aError) return finish(false, `the refreshing client got ERROR ${tk.aError}`);
    if (tk.aAlive && tk.bError !== null) {
      console.log(`REFRESHED ${tk.refreshed} ALIVE ${tk.aAlive} EXPIRED ${tk.bError}`);
      if (tk.bError !== 'token expired') return finish(false, `B got ERROR ${tk.bError}`);
      return finish(true);
    }
    if (Date.now() > until) {
      console.error(`page log:\n  ${tk.log.join('\n  ')}`);
      return finish(false, `not done in time: ${JSON.stringify({ ...tk, log: undefined })}`);
    }
    await sleep(50);
  }
}

// The chat example, as people use it: typing into the box and reading the page.
async function chat(base, screenshot) {
  const errors = [];
  const open = async (name) => {
    const page = await context.newPage();
    watch(page, name, errors);
    const response = await page.goto(`${base}/?name=${encodeURIComponent(name)}`);
    if (!response?.ok()) throw new Error(`GET ${base}/ answered ${response?.status()}`);
    return page;
  };
  const count = (page) => page.locator('#count').textContent();
  const expectCount = async (page, name, n, withinMs) => {
    const started = Date.now();
    try {
      await page.locator('#count').filter({ hasText: `users connected: ${n}` }).waitFor({ timeout: withinMs });
    } catch {
      throw new Error(`${name} shows "${await count(page)}" after ${withinMs} ms, expected "users connected: ${n}"`);
    }
    return Date.now() - started;
  };
  const say = async (page, text) => {
    await page.locator('#input').fill(text);
    await page.locator('#input').press('Enter');
  };
  const expectLine = async (page, name, from, text) => {
    try {
      await page.locator('#messages .message', { hasText: text }).filter({ hasText: from }).waitFor({ timeout: 5000 });
    } catch {
      const all = await page.locator('#messages').innerText();
      throw new Error(`${name} never showed ${from}: ${text}; it shows:\n${all}`);
    }
  };

  const alice = await open('alice');
  const bob = await open('bob');
  await expectCount(alice, 'alice', 2, 5000);
  await expectCount(bob, 'bob', 2, 5000);
  console.error('alice and bob both show users connected: 2');

  await say(alice, 'hello from alice ✓');
  await expectLine(bob, 'bob', 'alice', 'hello from alice ✓');
  await expectLine(alice, 'alice', 'alice', 'hello from alice ✓');
  await say(bob, 'hi alice, bob here');
  await expectLine(alice, 'alice', 'bob', 'hi alice, bob here');
  console.error('each page shows the other\'s line');
  if (screenshot) {
    await say(alice, 'STOMP over WebSocket, served by stompbox itself');
    await expectLine(bob, 'bob', 'alice', 'served by stompbox itself');
    await sleep(300);
    await saveSideBySide(alice, bob, screenshot);
  }

  // A rename subscribes again with the new name: the others see the new name and
  // the same count, and nobody left or joined.
  await alice.locator('#name').fill('alicia');
  await alice.locator('#name').press('Tab');
  try {
    await bob.locator('#messages .notice', { hasText: 'alice is now alicia' }).waitFor({ timeout: 5000 });
  } catch {
    throw new Error(`bob never showed "alice is now alicia"; it shows:\n${await bob.locator('#messages').innerText()}`);
  }
  // Past the page's rename grace, so a leave would have shown by now.
  await sleep(600);
  const users = await bob.locator('#users li').allTextContents();
  if (JSON.stringify(users) !== JSON.stringify(['alicia', 'bob (you)'])) {
    throw new Error(`after the rename bob lists ${JSON.stringify(users)}`);
  }
  await expectCount(bob, 'bob', 2, 100);
  const notices = await bob.locator('#messages .notice').allTextContents();
  if (notices.some((n) => /^ali.* (left|joined)$/.test(n))) {
    throw new Error(`the rename showed as a leave or a join: ${JSON.stringify(notices)}`);
  }
  console.error('alice renamed herself alicia: bob shows the new name, still 2 users');

  // A closed tab disconnects (pagehide); the broker's presence topic tells the rest.
  await bob.close();
  const leftMs = await expectCount(alice, 'alice', 1, 2000);
  console.error(`bob closed his tab: alice shows users connected: 1 after ${leftMs} ms`);

  // A crashed tab says nothing, but its socket closes, and the broker says so too.
  const carol = await open('carol');
  await expectCount(alice, 'alice', 2, 5000);
  await expectCount(carol, 'carol', 2, 5000);
  const cdp = await context.newCDPSession(carol);
  cdp.send('Page.crash').catch(() => {});
  const crashMs = await expectCount(alice, 'alice', 1, 2000);
  console.error(`carol's tab crashed: alice shows users connected: 1 after ${crashMs} ms`);

  if (errors.length) throw new Error(errors.join('; '));
}

// The admin dashboard, as an operator uses it: signing in, watching the numbers
// move, publishing from the form and closing a connection from its row.
async function dashboard(adminUrl, login, passcode, victim, formDestination, screenshot) {
  if (!formDestination) {
    throw new Error('usage: dashboard ADMIN_URL LOGIN PASSCODE VICTIM_SESSION_ID FORM_DESTINATION [SCREENSHOT.png]');
  }
  const admin = new URL(adminUrl);
  const allowed = admin.protocol === 'https:' ? ['https:', 'wss:'] : ['http:', 'ws:'];
  const page = await context.newPage();
  const errors = [];
  const leaks = [];
  watch(page, 'dashboard', errors);
  // The page must work offline: everything it loads comes from the admin port.
  const check = (url) => {
    let u;
    try {
      u = new URL(url);
    } catch {
      leaks.push(url);
      return;
    }
    if (u.host !== admin.host || !allowed.includes(u.protocol)) leaks.push(url);
  };
  page.on('request', (r) => check(r.url()));
  page.on('websocket', (ws) => check(ws.url()));
  const dialogs = [];
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.accept().catch(() => {});
  });
  const healthy = () => {
    if (leaks.length) throw new Error(`request left the machine: ${leaks[0]}`);
    if (errors.length) throw new Error(errors.join('; '));
  };
  const text = (selector) => page.locator(selector).textContent();
  const total = async () => {
    const t = await text('#published-total');
    const digits = (t ?? '').replace(/[,\s]/g, '');
    return /^\d+$/.test(digits) ? Number(digits) : null;
  };
  const snapshots = () => page.evaluate(() => window.dashboard?.snapshots ?? 0);
  const wait = async (what, fn, timeoutMs, arg) => {
    try {
      await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 100 });
    } catch (e) {
      healthy();
      throw new Error(`${what} not within ${timeoutMs} ms (status "${await text('#status')}")`);
    }
    healthy();
  };

  const response = await page.goto(`${adminUrl.replace(/\/$/, '')}/`);
  if (!response?.ok()) throw new Error(`GET ${adminUrl}/ answered ${response?.status()}`);
  await page.locator('#login').fill(login);
  await page.locator('#passcode').fill(passcode);
  await page.locator('#sign-in').click();
  await wait('#status saying connected', () => /^connected\b/.test(document.querySelector('#status')?.textContent ?? ''), 15000);
  await wait('a number in #published-total',
    () => /^[\d,]+$/.test(document.querySelector('#published-total')?.textContent ?? ''), 15000);
  // A snapshot, not just the overview fetched at sign-in, so the tables are live.
  await wait('a first /sys/stats snapshot', () => (window.dashboard?.snapshots ?? 0) > 0, 15000);
  const atReady = await total();
  const readyAtMs = await page.evaluate(() => window.dashboard.lastRates?.at_ms ?? 0);
  console.error(`signed in; published total ${atReady}`);
  console.log('PHASE ready');

  await wait('the published total growing by 1000 with a non-zero published rate on the chart',
    ({ from, since }) => {
      const digits = (document.querySelector('#published-total')?.textContent ?? '').replace(/[,\s]/g, '');
      const grown = /^\d+$/.test(digits) && Number(digits) >= from + 1000;
      const charted = window.dashboard.rateHistory().some((r) => r.at_ms > since && r.published_per_s > 0);
      return grown && charted;
    }, 30000, { from: atReady, since: readyAtMs });
  const peak = await page.evaluate(() => Math.max(...window.dashboard.rateHistory().map((r) => r.published_per_s ?? 0)));
  console.error(`published total ${await total()} (was ${atReady}); peak charted rate ${peak}/s`);
  console.log('PHASE moved');

  await page.locator('#publish-destination').fill(formDestination);
  await page.locator('#publish-body').fill('hello from the dashboard');
  await page.locator('#publish-form [type=submit]').click();
  await wait('#publish-result reporting the message published',
    () => ['ok', 'error'].includes(document.querySelector('#publish-result')?.dataset.state), 10000);
  const published = await page.locator('#publish-result').evaluate((e) => ({ state: e.dataset.state, text: e.textContent }));
  if (published.state !== 'ok') throw new Error(`the publish form failed: ${published.text}`);
  console.error(`publish form: ${published.text}`);
  console.log('PHASE published');

  await page.locator('#connection-search').fill(victim);
  const row = page.locator(`#connections tr[data-id=${JSON.stringify(victim)}]`);
  try {
    await row.waitFor({ timeout: 5000 });
  } catch {
    healthy();
    throw new Error(`no row for connection ${victim} in #connections`);
  }
  await row.locator('.close-connection').click();
  try {
    await row.waitFor({ state: 'detached', timeout: 10000 });
  } catch {
    healthy();
    const notices = await page.locator('#notices').innerText();
    throw new Error(`connection ${victim} still listed 10 s after Close (notices: ${notices})`);
  }
  if (!dialogs.length) throw new Error('Close did not ask for confirmation');
  healthy();
  console.error(`closed ${victim} after confirming "${dialogs.at(-1)}"`);
  console.log('PHASE closed');

  if (screenshot) {
    await page.locator('#connection-search').fill('');
    await page.locator('#destination-search').fill('');
    const seen = await snapshots();
    await wait('one more snapshot', (n) => window.dashboard.snapshots > n, 5000, seen);
    await page.screenshot({ path: screenshot, fullPage: true });
    console.error(`screenshot saved to ${screenshot}`);
  }
  healthy();
}

// Two pages side by side in one PNG, for examples/chat/README.md.
async function saveSideBySide(left, right, path) {
  const [a, b] = await Promise.all([left.screenshot(), right.screenshot()]);
  const page = await context.newPage();
  const src = (png) => `data:image/png;base64,${png.toString('base64')}`;
  await page.setViewportSize({ width: 1300, height: 540 });
  await page.setContent(`<body style="margin:0;padding:10px;background:#d0d4da;display:flex;gap:10px">
    <img src="${src(a)}" style="border:1px solid #999"><img src="${src(b)}" style="border:1px solid #999"></body>`);
  await page.screenshot({ path });
  await page.close();
  console.error(`screenshot saved to ${path}`);
}

const [mode, base, ...rest] = process.argv.slice(2);
try {
  // Only the token run uses wss://, with a certificate made by the test; the
  // dashboard is laid out for a laptop screen.
  await launch(mode === 'token', mode === 'dashboard' ? { width: 1280, height: 800 } : undefined);
} catch (e) {
  await finish(false, `cannot start Chromium at ${CHROMIUM} (Debian package chromium): ${e.message}`);
}
try {
  if (mode === 'stompjs') await stompjs(base, rest[0], rest[1] ?? '');
  else if (mode === 'heartbeat') await heartbeat(base, rest[0]);
  else if (mode === 'token') await token(base, rest[0], rest[1], rest[2], rest[3]);
  else if (mode === 'chat') {
    await chat(base, rest[0]);
    await finish(true);
  } else if (mode === 'dashboard') {
    await dashboard(base, ...rest);
    await finish(true);
  } else await finish(false, `unknown mode ${JSON.stringify(mode)}; use stompjs, heartbeat, token, chat or dashboard`);
} catch (e) {
  await finish(false, e.message);
}
