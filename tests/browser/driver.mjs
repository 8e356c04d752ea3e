#!/usr/bin/env node
// Drives real headless Chromium (Debian's /usr/bin/chromium) with playwright-core
// for tests/browser.rs. Pages are loaded over http from the stompbox under test.
//
//   node tests/browser/driver.mjs stompjs BASE_URL RUN AFTER_HEX
//       Loads BASE_URL/?run=RUN&after=AFTER_HEX (tests/browser/index.html) and
//       follows its window.stompTest. Prints `PHASE ready-for-restart` and
//       `PHASE resubscribed` as the page reaches them: the Rust test restarts the
//       broker after the first and publishes after the second.
//
// Prints `RESULT ok` and exits 0 only when every check passed; otherwise prints
// `RESULT fail: ...` and exits 1. Either way it stops by itself within
// OVERALL_TIMEOUT_MS.

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

async function launch() {
  profile = mkdtempSync(join(tmpdir(), 'stompbox-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 640, height: 520 },
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

const [mode, base, ...rest] = process.argv.slice(2);
try {
  await launch();
} catch (e) {
  await finish(false, `cannot start Chromium at ${CHROMIUM} (Debian package chromium): ${e.message}`);
}
try {
  if (mode === 'stompjs') await stompjs(base, rest[0], rest[1] ?? '');
  else await finish(false, `unknown mode ${JSON.stringify(mode)}; use stompjs`);
} catch (e) {
  await finish(false, e.message);
}
