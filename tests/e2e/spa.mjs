// The SPA built by build-spa.mjs, served by a portcullis `kind: static` route, in a real
// Chromium (Debian's /usr/bin/chromium, driven by playwright-core). Run by tests/static_spa.rs:
//
//   APP_URL        portcullis' public URL, e.g. http://127.0.0.1:4480                (required)
//   BASE           the static route's path (default /app/)
//   CSP            the configured security.content_security_policy                    (required)
//   SCRIPT         the bundle's path under BASE, e.g. assets/main-N4ROK7BF.js         (required)
//   USER_DATA_DIR  a fresh, empty Chromium profile directory
//
// Checks: a deep link loads index.html (HTML, no-cache, the CSP) and the bundle renders that
// client-side route under the CSP; the bundle is immutable, of the right type and in the best
// encoding the browser asked for; a pushState navigation and a reload of the new deep link
// render again, the reload revalidating index.html with its ETag; the SPA asks /bff/user.
// Output: `ok - <name>` / `not ok - <name>: <detail>` lines, then `N passed, M failed`. Exit
// status 0 only when every check passed. Every wait is bounded; only loopback is reachable (the
// host resolver knows no other name; requests are not intercepted, which would turn the HTTP
// cache off and with it the revalidation checked here).

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchChromium, withTimeout } from './common.mjs';

const STEP_TIMEOUT_MS = 15_000;
const WATCHDOG_MS = 50_000;

const APP = process.env.APP_URL;
const BASE = process.env.BASE || '/app/';
const CSP = process.env.CSP;
const SCRIPT = process.env.SCRIPT;
if (!APP || !CSP || !SCRIPT) {
  console.error('spa.mjs: APP_URL, CSP and SCRIPT are required');
  console.log('0 passed, 1 failed');
  process.exit(2);
}
const ORIGIN = new URL(APP).origin;
const USER_DATA_DIR = process.env.USER_DATA_DIR || mkdtempSync(join(tmpdir(), 'portcullis-spa-profile-'));

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed += 1;
  else failed += 1;
  console.log(ok ? `ok - ${name}` : `not ok - ${name}: ${detail || 'failed'}`);
}

let context = null;
function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  const code = failed === 0 && passed > 0 ? 0 : 1;
  const close = context ? withTimeout(context.close(), 5_000, 'browser close').catch(() => {}) : Promise.resolve();
  close.finally(() => process.exit(code));
}
const watchdog = setTimeout(() => {
  check('run finishes in time', false, `still running after ${WATCHDOG_MS / 1000} s`);
  finish();
}, WATCHDOG_MS);
watchdog.unref();

/** Every response of the app's origin by path, last one wins, with its request's headers. */
const seen = new Map();
const pathOf = (url) => new URL(url).pathname;

async function rendered(page, text) {
  await page.waitForFunction((t) => document.getElementById('view')?.textContent === t, text, {
    timeout: STEP_TIMEOUT_MS,
  });
  return page.locator('#view').textContent();
}

async function main() {
  context = await launchChromium(USER_DATA_DIR, STEP_TIMEOUT_MS);
  const violations = [];
  context.on('response', async (response) => {
    if (!response.url().startsWith(ORIGIN)) return;
    const entry = {
      status: response.status(),
      headers: await response.allHeaders().catch(() => ({})),
      request: await response.request().allHeaders().catch(() => ({})),
    };
    const list = seen.get(pathOf(response.url())) || [];
    list.push(entry);
    seen.set(pathOf(response.url()), list);
  });

  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (msg) => {
    if (/Content Security Policy/i.test(msg.text())) violations.push(msg.text());
  });

  // A deep link: no file is there, so the route answers with index.html and the bundle renders
  // the client-side route.
  const deep = `${BASE}orders/42`;
  const first = await page.goto(`${ORIGIN}${deep}`, { waitUntil: 'load' });
  const h = first ? await first.allHeaders() : {};
  check('deep link answers 200', first?.status() === 200, `status ${first?.status()}`);
  check('deep link is HTML', (h['content-type'] || '').startsWith('text/html'), h['content-type']);
  check('index.html is revalidated, never stored unchecked', /\bno-cache\b/.test(h['cache-control'] || '') && !/immutable/.test(h['cache-control'] || ''), h['cache-control']);
  check('index.html carries the configured CSP', h['content-security-policy'] === CSP, h['content-security-policy']);
  check('index.html has an ETag and Last-Modified', Boolean(h.etag && h['last-modified']), JSON.stringify(h));
  check('responses are not sniffed', h['x-content-type-options'] === 'nosniff', h['x-content-type-options']);
  check('the bundle renders the deep link under the CSP', (await rendered(page, 'Order 42')) === 'Order 42');
  check('no CSP violation reported', violations.length === 0, violations.join(' | '));
  await page.waitForFunction(() => document.getElementById('user')?.textContent !== '', null, { timeout: STEP_TIMEOUT_MS });
  check('the SPA asked /bff/user (signed out)', (await page.locator('#user').textContent()) === 'Signed out');

  // The hashed bundle: immutable, typed, in the best encoding the browser offered.
  const bundle = (seen.get(`${BASE}${SCRIPT}`) || [])[0];
  check('the bundle was fetched', bundle?.status === 200, JSON.stringify(bundle?.status));
  const bh = bundle?.headers || {};
  check('the hashed bundle is immutable for a year', /immutable/.test(bh['cache-control'] || '') && /max-age=31536000/.test(bh['cache-control'] || ''), bh['cache-control']);
  check('the bundle is JavaScript', (bh['content-type'] || '').startsWith('text/javascript'), bh['content-type']);
  const offered = (bundle?.request['accept-encoding'] || '').split(',').map((s) => s.trim().split(';')[0]);
  const best = offered.includes('br') ? 'br' : offered.includes('gzip') ? 'gzip' : undefined;
  console.log(`# Chromium offered ${offered.join(', ') || 'nothing'}; got ${bh['content-encoding'] || 'identity'}`);
  check('the precompressed copy the browser prefers is sent', best !== undefined && bh['content-encoding'] === best, `${bh['content-encoding']} for ${offered.join(',')}`);
  check('the bundle varies by Accept-Encoding', /accept-encoding/i.test(bh.vary || ''), bh.vary);
  check('the bundle carries no page CSP', bh['content-security-policy'] === undefined, bh['content-security-policy']);

  // A client-side navigation, then a reload of the new deep link.
  await page.click('a[href$="orders/7"]');
  check('a pushState navigation renders', (await rendered(page, 'Order 7')) === 'Order 7');
  check('the address is the deep link', pathOf(page.url()) === `${BASE}orders/7`, page.url());
  const etag = h.etag;
  // The first reload fetches the new URL; the second finds it in the cache and revalidates.
  await page.reload({ waitUntil: 'load' });
  check('reload of the deep link renders it', (await rendered(page, 'Order 7')) === 'Order 7');
  const reload = await page.reload({ waitUntil: 'load' });
  check('a second reload renders it again', (await rendered(page, 'Order 7')) === 'Order 7');
  const again = (seen.get(`${BASE}orders/7`) || []).at(-1);
  console.log(`# second reload: status ${reload?.status()}, If-None-Match ${again?.request['if-none-match'] || '(none)'}`);
  check(
    'the reload revalidated index.html with its ETag',
    again?.request['if-none-match'] === etag && [200, 304].includes(again?.status),
    JSON.stringify({ status: again?.status, inm: again?.request['if-none-match'], etag }),
  );
}

main()
  .catch((e) => check('scenario runs', false, e.message.split('\n')[0]))
  .finally(() => {
    clearTimeout(watchdog);
    finish();
  });
