#!/usr/bin/env node
// Keeps the admin dashboard open and signed in, in headless Chromium, until killed:
// the "dashboard open" side of benches/admin.sh. Prints `OPEN` once the page shows
// live /sys/stats snapshots.
//
//   node benches/dashboard-open.mjs ADMIN_URL LOGIN PASSCODE
//
// playwright-core comes from tests/browser/node_modules (scripts/install-interop.sh).
import { createRequire } from 'node:module';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../tests/browser/', import.meta.url));
const { chromium } = require('playwright-core');
const [url, login, passcode] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'stompbox-bench-chromium-')), {
  executablePath: process.env.STOMPBOX_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 800 },
});
const page = await context.newPage();
await page.goto(`${url}/`);
await page.locator('#login').fill(login);
await page.locator('#passcode').fill(passcode);
await page.locator('#sign-in').click();
await page.waitForFunction(() => (window.dashboard?.snapshots ?? 0) > 1, null, { timeout: 30000 });
console.log('OPEN');
// Stays open (charts and tables updating every snapshot) until the script is killed.
await new Promise(() => {});
