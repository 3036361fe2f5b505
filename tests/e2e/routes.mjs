// The route model in a real Chromium (Debian's /usr/bin/chromium driven by playwright-core):
// two hosts, each route policy, and claim rules that admit and deny, with portcullis in front.
//
// The caller (tests/route_model.rs) starts the OP fixture, Redis, the recording upstream and
// portcullis with these routes, then runs `node tests/e2e/routes.mjs` with:
//
//   APP_URL         public_url, e.g. http://127.0.0.1:<port>                           (required)
//   DOCS_URL        the second host, http://docs.localhost:<port>                        (required)
//   USER_DATA_DIR   a fresh Chromium profile directory (default: a temp dir)
//   LOGIN           the user typed into the OP's login form (default alice)
//
//   DOCS  /            public             /private/   page, a session of docs' own (host-only cookie)
//   APP   /maybe/      page, optional     /app/       page (a session required)
//         /open/       page, policy none
//         /api/staff/  api, groups staff  /api/finance/ api, department finance (alice is in sales)
//
// Output: `ok - <check>` / `not ok - <check>: <detail>` lines, then `N passed, M failed`; exit
// status 0 only when every check passed. Every wait is bounded; a watchdog ends the run before
// 90 s. Only loopback traffic.

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  launchChromium, loopbackOnly, originOf, parseJson, pollUntil, signInAtOp, withTimeout,
} from './common.mjs';

const STEP_TIMEOUT_MS = 15_000;
const WATCHDOG_MS = 85_000;

function required(name) {
  const raw = process.env[name];
  if (!raw) {
    console.error(`routes.mjs: ${name} is required`);
    console.log('0 passed, 1 failed');
    process.exit(2);
  }
  return new URL(raw).origin;
}

const APP = required('APP_URL');
const DOCS = required('DOCS_URL');
const LOGIN = process.env.LOGIN || 'alice';
const USER_DATA_DIR = process.env.USER_DATA_DIR || mkdtempSync(join(tmpdir(), 'portcullis-routes-profile-'));

const checks = [];
function record(name, ok, detail = '') {
  checks.push({ name, ok });
  console.log(ok ? `ok - ${name}` : `not ok - ${name}: ${detail || 'failed'}`);
  return ok;
}


async function visit(page, url) {
  const response = await page.goto(url, { waitUntil: 'load' });
  return { status: response ? response.status() : 0, url: page.url() };
}

// The status of the last navigation response for each URL.
const navigationStatus = new Map();

/** Navigates to a page that needs a login; signs in at the OP when it asks. */
async function visitSigningIn(page, url) {
  await page.goto(url, { waitUntil: 'load' });
  const origin = originOf(url);
  if (originOf(page.url()) !== origin) {
    const back = await signInAtOp(page, LOGIN, { isBack: (u) => originOf(u) === origin, timeoutMs: STEP_TIMEOUT_MS });
    if (!back) return { landed: page.url(), status: 0 };
  }
  await pollUntil(() => page.url() === url, { timeoutMs: STEP_TIMEOUT_MS });
  await page.waitForLoadState('load');
  return { landed: page.url(), status: navigationStatus.get(url) ?? 0 };
}

async function pageFetch(page, path, headers) {
  return withTimeout(
    page.evaluate(async ({ p, h }) => {
      const res = await fetch(p, { headers: h, credentials: 'same-origin', cache: 'no-store', redirect: 'manual' });
      return { status: res.status, text: await res.text() };
    }, { p: path, h: headers }),
    STEP_TIMEOUT_MS,
    `fetch ${path}`,
  );
}

async function main() {
  const context = await launchChromium(USER_DATA_DIR, STEP_TIMEOUT_MS);
  const blocked = [];
  await loopbackOnly(context, blocked);
  context.on('response', (response) => {
    try {
      if (response.request().isNavigationRequest()) navigationStatus.set(response.url(), response.status());
    } catch {
      // no frame
    }
  });
  const page = context.pages()[0] ?? (await context.newPage());
  try {
    const docsHome = await visit(page, `${DOCS}/`);
    record('the public route of the docs host answers without a session', docsHome.status === 200 && docsHome.url === `${DOCS}/`, JSON.stringify(docsHome));

    const anonymous = await visit(page, `${APP}/maybe/anonymous`);
    record('an optional route lets an anonymous navigation through', anonymous.status === 200 && anonymous.url === `${APP}/maybe/anonymous`, JSON.stringify(anonymous));

    const docsPrivate = await visitSigningIn(page, `${DOCS}/private/notes`);
    record('a page route of the docs host sends a navigation to the login and back', docsPrivate.landed === `${DOCS}/private/notes` && docsPrivate.status === 200, JSON.stringify(docsPrivate));
    const docsCookies = await context.cookies(DOCS);
    record('the docs session is a host-only __Host- cookie, HttpOnly', docsCookies.some((c) => c.name === '__Host-portcullis' && c.httpOnly && c.domain === 'docs.localhost'), JSON.stringify(docsCookies.map((c) => [c.name, c.domain])));

    const stillAnonymous = await visit(page, `${APP}/maybe/before-login`);
    record('the app host does not see the docs host\'s session', stillAnonymous.status === 200, JSON.stringify(stillAnonymous));

    const app = await visitSigningIn(page, `${APP}/app/home`);
    record('the app host\'s page route logs in on its own host', app.landed === `${APP}/app/home` && app.status === 200, JSON.stringify(app));
    const known = await visit(page, `${APP}/maybe/signed-in`);
    record('the optional route passes a signed-in navigation', known.status === 200, JSON.stringify(known));
    const open = await visit(page, `${APP}/open/signed-in`);
    record('a policy none page route passes without looking the session up', open.status === 200, JSON.stringify(open));

    const staff = await pageFetch(page, '/api/staff/list', { 'X-CSRF': '1' });
    record('a claim rule the user meets admits her (groups: staff)', staff.status === 200, `${staff.status} ${staff.text.slice(0, 100)}`);
    const finance = await pageFetch(page, '/api/finance/report', { 'X-CSRF': '1' });
    record('a claim rule the user does not meet is 403 JSON (department: finance)', finance.status === 403 && parseJson(finance.text)?.error === 'access_denied', `${finance.status} ${finance.text.slice(0, 100)}`);
    const forged = await pageFetch(page, '/api/staff/list', {});
    record('the api route still wants the CSRF header', forged.status === 403, `${forged.status}`);
    const documentCookie = await page.evaluate(() => document.cookie);
    record('script sees no session cookie', !documentCookie.includes('portcullis'), documentCookie);
    record('no request left loopback', blocked.length === 0, blocked.join(', '));
  } catch (e) {
    record('scenario ran to its end', false, String(e?.message ?? e).split('\n')[0]);
  } finally {
    await context.close().catch(() => {});
  }
  const failed = checks.filter((c) => !c.ok).length;
  console.log(`${checks.length - failed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

setTimeout(() => {
  record('finished before the watchdog', false, `${WATCHDOG_MS} ms`);
  console.log(`${checks.filter((c) => c.ok).length} passed, ${checks.filter((c) => !c.ok).length} failed`);
  process.exit(1);
}, WATCHDOG_MS).unref();

await main();
