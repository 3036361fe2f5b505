// End-to-end login test for portcullis in a real Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core; no browser download).
//
// The caller (the Rust test harness) starts the OpenID Provider fixture, the demo upstream
// (deploy/demo/upstream.mjs) and portcullis, then runs `node tests/e2e/login.mjs` with:
//
//   APP_URL        portcullis' public URL, e.g. http://127.0.0.1:4480            (required)
//   OUT_DIR        where responses.txt, storage.json, logged-in.png and report.json go
//                  (default: a new temporary directory)
//   USER_DATA_DIR  a fresh, empty Chromium profile directory   (default: a new temporary one)
//   LOGIN          the user name typed into the OP's login form                (default alice)
//   AT_TTL         the OP's access-token lifetime in seconds                   (default 4)
//   SECRETS_FILE   optional; if the file exists when the run ends, none of its lines (one
//                  secret per line) may appear in a recorded response body or storage dump
//   E2E_DEBUG      optional; 1 = also print which response bodies could not be read
//
// Outputs in OUT_DIR: responses.txt (every text response body the browser received, each under
// a `### status method url [type]` line whose query values are elided), storage.json
// (document.cookie, localStorage and sessionStorage of the app's origin, signed in and signed
// out), logged-in.png, report.json (the checks and the navigations seen).
//
// "/" may be a `page` route (the usual setup: signed-out visits are sent to /bff/login, and so
// is the post-logout return to "/") or a `public` one (the SPA shows "Signed out" and its
// "Sign in" link is followed); both are accepted and the run says which it saw.
//
// Output: one line per check, `ok - <name>` or `not ok - <name>: <detail>`, lines starting
// with `#` for information, and last `N passed, M failed` alone on a line. Exit status 0 only
// when every check passed. Every wait is bounded; a watchdog ends the run before 60 s.
//
// Only loopback traffic is allowed: every request to another host is aborted.

import { mkdirSync, mkdtempSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  appState, launchChromium, loopbackOnly, parseJson, pathOf, pollUntil as poll, redactUrl, withTimeout,
} from './common.mjs';

const STARTED = Date.now();
const STEP_TIMEOUT_MS = 15_000;
const WATCHDOG_MS = 55_000;
const SESSION_COOKIE = '__Host-portcullis';
const JWT_RE = /eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./;
// Opaque tokens (oidc-provider issues 43-character base64url ones) or JWTs.
const TOKEN_LIKE_RE = /eyJ[A-Za-z0-9_-]{10,}\.|[A-Za-z0-9_-]{32,}/;

// ---------------------------------------------------------------- env ----

function fail(message) {
  console.error(`login.mjs: ${message}`);
  console.log('0 passed, 1 failed');
  process.exit(2);
}

const APP_URL_RAW = process.env.APP_URL;
if (!APP_URL_RAW) fail('APP_URL is required (portcullis public URL, e.g. http://127.0.0.1:4480)');
let APP;
try {
  APP = new URL(APP_URL_RAW);
} catch {
  fail(`APP_URL is not a URL: ${JSON.stringify(APP_URL_RAW)}`);
}
const APP_ORIGIN = APP.origin;
const APP_HOME = `${APP_ORIGIN}/`;
const OUT_DIR = process.env.OUT_DIR || mkdtempSync(join(tmpdir(), 'portcullis-e2e-out-'));
const USER_DATA_DIR = process.env.USER_DATA_DIR || mkdtempSync(join(tmpdir(), 'portcullis-e2e-profile-'));
const LOGIN = process.env.LOGIN || 'alice';
const AT_TTL = Number(process.env.AT_TTL || '4');
if (!Number.isFinite(AT_TTL) || AT_TTL < 0) fail(`AT_TTL must be a number of seconds, got ${process.env.AT_TTL}`);
const SECRETS_FILE = process.env.SECRETS_FILE || '';
mkdirSync(OUT_DIR, { recursive: true });
mkdirSync(USER_DATA_DIR, { recursive: true });

// ------------------------------------------------------------- checks ----

const checks = [];

function record(name, ok, detail = '') {
  checks.push({ name, ok, detail, at_ms: Date.now() - STARTED });
  console.log(ok ? `ok - ${name}` : `not ok - ${name}: ${detail || 'failed'}`);
  return ok;
}

function info(message) {
  console.log(`# ${message}`);
}

const elapsed = () => `${((Date.now() - STARTED) / 1000).toFixed(1)} s`;

const pollUntil = (fn, { timeoutMs = STEP_TIMEOUT_MS, intervalMs = 100 } = {}) =>
  poll(fn, { timeoutMs, intervalMs });

/** A URL fit for logs and files: query values are never written (they may hold tokens). */
const sameOrigin = (raw) => {
  try {
    return new URL(raw).origin === APP_ORIGIN;
  } catch {
    return false;
  }
};


// ------------------------------------------------------- observation ----

const bodies = []; // { status, method, url (redacted), type, text }
const pendingBodies = new Set();
const pendingLabels = new Set();
let bodyFailures = 0;
const blocked = []; // non-loopback requests aborted
const navRequests = []; // main-frame navigation requests: { t, url, method }
const mainNavs = []; // main-frame framenavigated events: { t, url }
const jsErrors = []; // page errors / CSP violations on the app's origin
let callback = null; // { t, status, type, setCookie }

const TEXT_TYPE_RE = /^(text\/|application\/(json|javascript|ecmascript|xml|x-www-form-urlencoded)|application\/[a-z0-9.+-]*\+(json|xml))/i;

function captureBody(response) {
  const job = (async () => {
    const status = response.status();
    if (status >= 300 && status < 400) return; // redirects have no body to read
    const headers = response.headers();
    const type = headers['content-type'] || '';
    if (!TEXT_TYPE_RE.test(type)) return;
    const request = response.request();
    const label = `${status} ${redactUrl(response.url())}`;
    pendingLabels.add(label);
    try {
      const text = await withTimeout(response.text(), 3_000, 'response body');
      bodies.push({ status, method: request.method(), url: redactUrl(response.url()), type, text });
    } catch {
      bodyFailures += 1; // e.g. the page navigated away before the body could be read
      if (process.env.E2E_DEBUG) info(`body not read: ${label}`);
    } finally {
      pendingLabels.delete(label);
    }
  })();
  pendingBodies.add(job);
  job.finally(() => pendingBodies.delete(job));
}

// ----------------------------------------------------------- outputs ----

let storageSnapshots = [];

function writeOutputs(extra = {}) {
  const responsesTxt = bodies
    .map((b) => `### ${b.status} ${b.method} ${b.url} [${b.type}]\n${b.text}\n`)
    .join('\n');
  writeFileSync(join(OUT_DIR, 'responses.txt'), responsesTxt);
  writeFileSync(join(OUT_DIR, 'storage.json'), `${JSON.stringify(storageSnapshots, null, 2)}\n`);
  const passed = checks.filter((c) => c.ok).length;
  const report = {
    app_url: APP_ORIGIN,
    login: LOGIN,
    at_ttl_s: AT_TTL,
    duration_ms: Date.now() - STARTED,
    passed,
    failed: checks.length - passed,
    checks,
    login_navigations: navRequests.filter((n) => sameOrigin(n.url) && pathOf(n.url) === '/bff/login').length,
    navigation_requests: navRequests.map((n) => ({ ...n, url: redactUrl(n.url) })),
    main_frame_navigations: mainNavs.map((n) => ({ ...n, url: redactUrl(n.url) })),
    callback,
    responses_recorded: bodies.length,
    response_body_read_failures: bodyFailures,
    blocked_requests: blocked,
    js_errors: jsErrors,
    ...extra,
  };
  writeFileSync(join(OUT_DIR, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  return report;
}

function finish(context) {
  const passed = checks.filter((c) => c.ok).length;
  const failed = checks.length - passed;
  info(`total time ${elapsed()}; outputs in ${OUT_DIR}`);
  console.log(`${passed} passed, ${failed} failed`);
  const code = failed === 0 && checks.length > 0 ? 0 : 1;
  const close = context ? withTimeout(context.close(), 5_000, 'browser close').catch(() => {}) : Promise.resolve();
  close.finally(() => process.exit(code));
}

let contextRef = null;
const watchdog = setTimeout(() => {
  record('run finishes within 60 s', false, `still running after ${WATCHDOG_MS / 1000} s; stopped`);
  try {
    writeOutputs({ aborted_by_watchdog: true });
  } catch (e) {
    console.error(`could not write outputs: ${e.message}`);
  }
  finish(contextRef);
}, WATCHDOG_MS);
watchdog.unref();

// ----------------------------------------------------------- helpers ----

/** fetch() from inside the page (same origin, browser cookies), returning status and body. */
async function pageFetch(page, path, headers = {}) {
  return withTimeout(
    page.evaluate(
      async ({ path: p, headers: h }) => {
        const res = await fetch(p, { headers: h, credentials: 'same-origin', cache: 'no-store' });
        return { status: res.status, text: await res.text() };
      },
      { path, headers },
    ),
    STEP_TIMEOUT_MS,
    `fetch ${path}`,
  );
}

async function statusText(page) {
  if (!sameOrigin(page.url())) return '';
  return (await page.locator('#status').textContent({ timeout: 1_000 })) || '';
}

// ---------------------------------------------------------- scenario ----

async function main() {
  info(`APP_URL=${APP_ORIGIN} LOGIN=${LOGIN} AT_TTL=${AT_TTL} OUT_DIR=${OUT_DIR}`);
  const context = await launchChromium(USER_DATA_DIR, STEP_TIMEOUT_MS, { viewport: { width: 1000, height: 800 } });
  contextRef = context;
  let page = null;
  let loginAt = null;

  await loopbackOnly(context, blocked);

  context.on('response', (response) => {
    captureBody(response);
    if (sameOrigin(response.url()) && pathOf(response.url()) === '/bff/callback') {
      const t = Date.now();
      callback = { t: t - STARTED, status: response.status(), type: response.headers()['content-type'] || '' };
      response
        .allHeaders()
        .then((h) => {
          callback.sets_cookie = Boolean(h['set-cookie']);
        })
        .catch(() => {});
      loginAt = t;
    }
  });
  context.on('request', (request) => {
    try {
      if (request.isNavigationRequest() && request.frame() === page?.mainFrame()) {
        navRequests.push({ t: Date.now() - STARTED, method: request.method(), url: request.url() });
      }
    } catch {
      // requests without a frame (service workers) are not navigations of the page
    }
  });

  page = context.pages()[0] || (await context.newPage());
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) mainNavs.push({ t: Date.now() - STARTED, url: frame.url() });
  });
  page.on('pageerror', (err) => {
    if (sameOrigin(page.url())) jsErrors.push(`pageerror: ${err.message}`);
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error' && sameOrigin(page.url()) && /Content Security Policy/i.test(msg.text())) {
      jsErrors.push(`csp: ${msg.text()}`);
    }
  });

  let opOrigin = null;
  const loginNavs = () => navRequests.filter((n) => sameOrigin(n.url) && pathOf(n.url) === '/bff/login').length;

  // 1. Open the app: a page route without a session goes through /bff/login to the OP.
  {
    const name = 'open / -> via /bff/login to the OP login page (cross-site)';
    await page.goto(APP_HOME, { waitUntil: 'domcontentloaded' });
    let clickedSignIn = false;
    const onLoginForm = await pollUntil(async () => {
      if (sameOrigin(page.url())) {
        // "/" served as a public route: the SPA offers a Sign in link instead of redirecting.
        const st = await statusText(page);
        if (st === 'Signed out' && !clickedSignIn) {
          clickedSignIn = true;
          info('"/" is not a page route here: following the SPA\'s "Sign in" link');
          await page.locator('#sign-in').click();
        }
        return false;
      }
      return (await page.locator('input[name="login"]').count()) > 0;
    });
    const url = page.url();
    if (!onLoginForm) {
      record(name, false, `no OP login form within ${STEP_TIMEOUT_MS} ms; page is ${redactUrl(url)}`);
      return;
    }
    opOrigin = new URL(url).origin;
    const opHost = new URL(url).hostname;
    if (opHost === APP.hostname) {
      record(name, false, `OP host ${opHost} is the app's host: not a cross-site setup`);
      return;
    }
    if (loginNavs() < 1) {
      record(name, false, `reached ${redactUrl(url)} without a navigation to ${APP_ORIGIN}/bff/login`);
      return;
    }
    record(name, true);
    info(`OP is ${opOrigin}`);

    await page.locator('input[name="login"]').fill(LOGIN);
    await page.locator('input[name="password"]').fill('any password');
    await page.locator('form:has(input[name="login"]) [type="submit"]').first().click();

    // Consent page (same OP origin, another form); or straight back to the app.
    const next = await pollUntil(async () => {
      if (sameOrigin(page.url())) return 'app';
      if ((await page.locator('input[name="login"]').count()) > 0) return null; // still on login
      const consent = page.locator('form[action*="/confirm"] [type="submit"], form [type="submit"]');
      if ((await consent.count()) > 0) return 'consent';
      return null;
    });
    if (next === 'consent') {
      await page.locator('form[action*="/confirm"] [type="submit"], form [type="submit"]').first().click();
    } else if (!next) {
      record('login and consent at the OP', false, `no consent page or app page; on ${redactUrl(page.url())}`);
      return;
    }
  }

  // 2. Back on the SPA, signed in, through the bounce page, without a loop.
  let landedNavCount = 0;
  {
    const name = 'lands on the app "/" signed in (SameSite=Strict cookie sent), no login loop';
    const st = await pollUntil(async () => {
      const s = await statusText(page);
      return s.startsWith('Signed in as') ? s : null;
    });
    landedNavCount = mainNavs.length;
    const url = page.url();
    const n = loginNavs();
    if (!st) {
      const shown = sameOrigin(url) ? await statusText(page).catch(() => '?') : '(not the app)';
      record(
        name,
        false,
        `no "Signed in as" within ${STEP_TIMEOUT_MS} ms; on ${redactUrl(url)} showing ${JSON.stringify(shown)}; ` +
          `callback ${JSON.stringify(callback)}; /bff/login navigations ${n}`,
      );
      return;
    }
    if (url !== APP_HOME) {
      record(name, false, `signed in but on ${redactUrl(url)}, not ${APP_HOME}`);
      return;
    }
    info(`${st}; callback answered ${callback?.status} ${callback?.type}`);
    record('exactly one navigation to /bff/login during login', n === 1, `saw ${n}`);
    record(name, true);
    if (loginAt === null) loginAt = Date.now();
  }

  // 3. Nothing readable by JavaScript; the cookie is locked down.
  {
    const state = await appState(page);
    storageSnapshots.push({ when: 'signed in', ...state });
    const problems = [];
    if (state.document_cookie.includes(SESSION_COOKIE)) problems.push(`document.cookie shows ${SESSION_COOKIE}`);
    for (const [store, dump] of [['localStorage', state.local_storage], ['sessionStorage', state.session_storage]]) {
      for (const [k, v] of Object.entries(dump)) {
        if (TOKEN_LIKE_RE.test(String(v))) problems.push(`${store}[${JSON.stringify(k)}] holds a token-like value`);
      }
    }
    if (TOKEN_LIKE_RE.test(state.document_cookie)) problems.push('document.cookie holds a token-like value');
    record('no session cookie or token visible to JavaScript (document.cookie, storage)', problems.length === 0, problems.join('; '));

    const jar = await context.cookies(APP_ORIGIN);
    const c = jar.find((x) => x.name === SESSION_COOKIE);
    const cp = [];
    if (!c) cp.push(`no ${SESSION_COOKIE} in the cookie jar (have: ${jar.map((x) => x.name).join(', ') || 'none'})`);
    else {
      if (c.httpOnly !== true) cp.push('not HttpOnly');
      if (c.secure !== true) cp.push('not Secure');
      if (c.sameSite !== 'Strict') cp.push(`SameSite=${c.sameSite}`);
      if (c.path !== '/') cp.push(`Path=${c.path}`);
      if (c.domain.startsWith('.')) cp.push(`Domain=${c.domain} (a __Host- cookie is host-only)`);
    }
    record(`cookie jar: ${SESSION_COOKIE} is HttpOnly, Secure, SameSite=Strict, Path=/`, cp.length === 0, cp.join('; '));
  }

  // 4. The BFF endpoints and the API route from inside the page.
  {
    const user = await pageFetch(page, '/bff/user', { 'X-CSRF': '1' });
    const uj = parseJson(user.text);
    record(
      'fetch /bff/user with X-CSRF -> 200 with sub',
      user.status === 200 && uj && typeof uj.sub === 'string' && uj.sub.length > 0,
      `status ${user.status}, body ${user.text.slice(0, 200)}`,
    );
    if (uj && uj.sub !== LOGIN) info(`sub is ${JSON.stringify(uj.sub)} (LOGIN was ${JSON.stringify(LOGIN)})`);

    const api = await pageFetch(page, '/api/whoami', { 'X-CSRF': '1' });
    const aj = parseJson(api.text);
    const apiProblems = [];
    if (api.status !== 200) apiProblems.push(`status ${api.status}`);
    if (!aj) apiProblems.push(`not JSON: ${api.text.slice(0, 200)}`);
    else {
      if (!aj.authorization || !/^Bearer \(\d+ characters\)$/.test(aj.authorization)) {
        apiProblems.push(`authorization ${JSON.stringify(aj.authorization)}`);
      }
      if (!Array.isArray(aj.cookies_received)) apiProblems.push('no cookies_received list');
      else if (aj.cookies_received.includes(SESSION_COOKIE)) apiProblems.push(`upstream received ${SESSION_COOKIE}`);
    }
    record('fetch /api/whoami with X-CSRF -> 200, bearer injected, session cookie not forwarded', apiProblems.length === 0, apiProblems.join('; '));
    if (aj) info(`whoami: authorization ${aj.authorization}, cookies_received ${JSON.stringify(aj.cookies_received)}`);

    const noCsrf = await pageFetch(page, '/api/whoami');
    record('fetch /api/whoami without X-CSRF -> 403', noCsrf.status === 403, `status ${noCsrf.status}`);
  }

  // 6. Silent refresh: the access token expires and is renewed without the page noticing.
  {
    const name = `silent refresh: /api/whoami stays 200 past AT_TTL+2 s (${AT_TTL + 2} s) with no page navigation`;
    const until = loginAt + (AT_TTL + 2) * 1000;
    let polls = 0;
    let bad = null;
    while (Date.now() < until && !bad) {
      const r = await pageFetch(page, '/api/whoami', { 'X-CSRF': '1' });
      polls += 1;
      if (r.status !== 200) bad = `poll ${polls} at ${elapsed()}: status ${r.status} ${r.text.slice(0, 200)}`;
      else await new Promise((res) => setTimeout(res, Math.min(500, Math.max(0, until - Date.now()))));
    }
    if (!bad) {
      const r = await pageFetch(page, '/api/whoami', { 'X-CSRF': '1' });
      const j = parseJson(r.text);
      if (r.status !== 200) bad = `after the wait: status ${r.status} ${r.text.slice(0, 200)}`;
      else if (!j || !j.authorization) bad = `after the wait: no bearer forwarded (${r.text.slice(0, 200)})`;
    }
    const navsAfter = mainNavs.slice(landedNavCount);
    if (!bad && navsAfter.length) bad = `page navigated: ${navsAfter.map((n) => redactUrl(n.url)).join(', ')}`;
    if (!bad && page.url() !== APP_HOME) bad = `page is now ${redactUrl(page.url())}`;
    record(name, !bad, bad || '');
    info(`${polls} polls of /api/whoami, ${((Date.now() - loginAt) / 1000).toFixed(1)} s after login`);

    // The fixture OP counts grants; where it can be asked, make sure a refresh really happened.
    try {
      const res = await fetch(`${opOrigin}/test/stats`, { signal: AbortSignal.timeout(3_000) });
      const stats = res.ok ? await res.json() : null;
      if (stats && typeof stats.refresh_token === 'number') {
        record(
          'the OP saw at least one refresh_token grant (the access token was renewed)',
          stats.refresh_token >= 1,
          `OP stats ${JSON.stringify(stats)}`,
        );
      } else {
        info('OP has no /test/stats: refresh count not checked');
      }
    } catch {
      info('OP has no /test/stats: refresh count not checked');
    }
  }

  // 7. The SPA's own button, then a screenshot of the signed-in page.
  {
    await page.locator('#call-api').click();
    const shown = await pollUntil(async () => {
      const t = (await page.locator('#api-result').textContent()) || '';
      return t.startsWith('HTTP ') ? t : null;
    });
    record(
      'the SPA\'s "Call the API" button shows the /api/whoami result',
      Boolean(shown && shown.startsWith('HTTP 200') && shown.includes('"authorization": "Bearer (')),
      `shown: ${JSON.stringify((shown || '(nothing)').slice(0, 200))}`,
    );
    const file = join(OUT_DIR, 'logged-in.png');
    await page.screenshot({ path: file, fullPage: true, timeout: STEP_TIMEOUT_MS });
    record('screenshot of the signed-in page', existsSync(file), file);
    storageSnapshots.push({ when: 'signed in, after API calls', ...(await appState(page)) });
  }

  // 8. K07: a link on another site into the app. The Strict session cookie stays home, so the
  // navigation arrives signed out: a page route answers with the way to sign in (the login
  // itself is stopped here, it would start a second session), an API route refuses, and the
  // signed-in tab is unaffected. The OP's origin serves as the other site.
  {
    const other = await context.newPage();
    await other.route(`${APP_ORIGIN}/bff/login**`, (route) => route.abort('blockedbyclient'));
    for (const [path, expected] of [['/', [302]], ['/api/whoami', [401, 403]]]) {
      const name = `K07: a link from another site to ${path} arrives without the session cookie -> ${expected.join('/')}`;
      const target = `${APP_ORIGIN}${path}`;
      await other.goto(`${opOrigin}/.well-known/openid-configuration`, { waitUntil: 'domcontentloaded' });
      const [response] = await Promise.all([
        other.waitForResponse((r) => r.url() === target, { timeout: STEP_TIMEOUT_MS }),
        other.evaluate((href) => {
          const a = document.createElement('a');
          a.href = href;
          document.body.appendChild(a);
          a.click();
        }, target),
      ]);
      const headers = await response.request().allHeaders();
      const location = response.headers().location || '';
      const problems = [];
      if (!expected.includes(response.status())) problems.push(`status ${response.status()}`);
      // By exact name: the Lax login-transaction cookie (`__Host-portcullis-txn`) may go along.
      const sent = (headers.cookie || '').split(';').map((c) => c.trim().split('=')[0]);
      if (sent.includes(SESSION_COOKIE)) problems.push('the session cookie was sent');
      if (path === '/' && !location.startsWith('/bff/login')) problems.push(`location ${JSON.stringify(location)}`);
      record(name, problems.length === 0, problems.join('; '));
    }
    await other.close();
    const still = await pageFetch(page, '/api/whoami', { 'X-CSRF': '1' });
    record('K07: the signed-in tab still calls the API (same-site fetch)', still.status === 200, `status ${still.status}`);
  }

  // 9. Sign out through the OP and back.
  {
    const name = 'sign out: "Sign out" -> OP confirmation -> "Yes, sign me out" -> back at the app, signed out';
    const loginNavsBefore = loginNavs();
    const navsBefore = navRequests.length;
    await page.locator('#sign-out').click();
    const yes = page.getByRole('button', { name: 'Yes, sign me out' });
    const onConfirm = await pollUntil(async () => !sameOrigin(page.url()) && (await yes.count()) > 0);
    if (!onConfirm) {
      record(name, false, `no OP confirmation page within ${STEP_TIMEOUT_MS} ms; on ${redactUrl(page.url())}`);
      return;
    }
    await yes.click();
    // Where the post-logout redirect to public_url "/" ends up: the SPA saying "Signed out"
    // when "/" can be served without a session, or -- "/" being a page route -- portcullis
    // sending the signed-out browser to /bff/login and on to the OP's login form.
    const outcome = await pollUntil(async () => {
      if (sameOrigin(page.url())) {
        const s = await statusText(page);
        if (s === 'Signed out') return 'spa';
        return null;
      }
      if (loginNavs() > loginNavsBefore && (await page.locator('input[name="login"]').count()) > 0) return 'login-form';
      return null;
    });
    const afterNavs = navRequests.slice(navsBefore);
    const after = afterNavs.map((n) => redactUrl(n.url));
    const confirmAt = afterNavs.findIndex((n) => !sameOrigin(n.url));
    const backHome = afterNavs.some((n, i) => i > confirmAt && n.url === APP_HOME);
    if (outcome === 'spa') {
      record(name, page.url() === APP_HOME, `on ${redactUrl(page.url())}, not ${APP_HOME}`);
      info('signed-out landing: the SPA at "/" shows "Signed out"');
    } else if (outcome === 'login-form') {
      // "/" is a page route: correct behaviour for a signed-out browser is to be sent to login.
      record(name, backHome, `the browser never came back to ${APP_HOME}: ${after.join(' -> ')}`);
      info(
        'signed-out landing: "/" is a page route, so portcullis sent the signed-out browser from "/" ' +
          'to /bff/login and the OP\'s login form (the SPA\'s "Signed out" view needs "/" served without a session)',
      );
    } else {
      const shown = sameOrigin(page.url()) ? await statusText(page).catch(() => '?') : '(not the app)';
      record(
        name,
        false,
        `not signed out within ${STEP_TIMEOUT_MS} ms; on ${redactUrl(page.url())} showing ${JSON.stringify(shown)}; ` +
          `navigations: ${after.join(' -> ')}; back at ${APP_HOME}: ${backHome}`,
      );
    }
    info(`sign-out navigations: ${after.join(' -> ')}`);

    // Whatever the landing, the session must be gone.
    const uname = 'after sign-out, fetch /bff/user with X-CSRF -> 401';
    if (sameOrigin(page.url())) {
      const user = await pageFetch(page, '/bff/user', { 'X-CSRF': '1' });
      record(uname, user.status === 401, `status ${user.status}`);
      storageSnapshots.push({ when: 'signed out', ...(await appState(page)) });
    } else {
      // The page is at the OP, and every document portcullis itself serves forbids fetch() by
      // its CSP: ask with the browser context's own cookie jar instead.
      const res = await context.request.get(`${APP_ORIGIN}/bff/user`, {
        headers: { 'X-CSRF': '1' },
        timeout: STEP_TIMEOUT_MS,
        maxRedirects: 0,
      });
      record(`${uname} (with the browser's cookie jar)`, res.status() === 401, `status ${res.status()}`);
    }
    const jar = await context.cookies(APP_ORIGIN);
    record(
      `after sign-out the cookie jar has no ${SESSION_COOKIE}`,
      !jar.some((x) => x.name === SESSION_COOKIE),
      `still there`,
    );
  }
}

// ------------------------------------------------------------ run it ----

let mainError = null;
try {
  await main();
} catch (err) {
  mainError = err;
  record('scenario ran to the end', false, String(err && err.message ? err.message : err).split('\n')[0]);
}

// 5. Everything the browser received, checked for tokens.
const pendingStart = Date.now();
await withTimeout(Promise.allSettled([...pendingBodies]), 3_000, 'pending bodies').catch(() => {});
if (process.env.E2E_DEBUG) info(`waited ${Date.now() - pendingStart} ms for bodies; still pending: ${[...pendingLabels].join(', ')}`);
{
  const withJwt = bodies.filter((b) => JWT_RE.test(b.text)).map((b) => `${b.status} ${b.url}`);
  record(
    `no response body contains a JWT (${bodies.length} bodies recorded)`,
    bodies.length > 0 && withJwt.length === 0,
    withJwt.length ? `JWT-shaped string in: ${withJwt.join(', ')}` : 'no bodies were recorded',
  );
  const storageJwt = storageSnapshots.filter((s) => JWT_RE.test(JSON.stringify(s))).map((s) => s.when);
  record('no storage dump contains a JWT', storageJwt.length === 0, `in: ${storageJwt.join(', ')}`);
  record(
    'no request left loopback',
    blocked.length === 0,
    `aborted: ${blocked.slice(0, 5).join(', ')}${blocked.length > 5 ? ', …' : ''}`,
  );
  record('no script error or CSP violation on the app\'s pages', jsErrors.length === 0, jsErrors.slice(0, 3).join(' | '));
}

const report = writeOutputs({ error: mainError ? String(mainError.stack || mainError) : null });

if (SECRETS_FILE && existsSync(SECRETS_FILE)) {
  const secrets = readFileSync(SECRETS_FILE, 'utf8')
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s.length >= 8);
  const haystacks = [
    ['responses.txt', readFileSync(join(OUT_DIR, 'responses.txt'), 'utf8')],
    ['storage.json', readFileSync(join(OUT_DIR, 'storage.json'), 'utf8')],
  ];
  const leaks = [];
  secrets.forEach((s, i) => {
    for (const [file, text] of haystacks) if (text.includes(s)) leaks.push(`secret #${i + 1} in ${file}`);
  });
  record(`no secret from SECRETS_FILE (${secrets.length}) in responses or storage`, leaks.length === 0, leaks.join(', '));
  writeOutputs({ error: report.error });
} else if (SECRETS_FILE) {
  info(`SECRETS_FILE ${SECRETS_FILE} does not exist yet: the harness greps responses.txt and storage.json itself`);
}

if (Date.now() - STARTED >= 60_000) record('run finishes within 60 s', false, `took ${elapsed()}`);
clearTimeout(watchdog);
finish(contextRef);
