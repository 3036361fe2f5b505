// Ingress auth mode end to end in a real Chromium (Debian's /usr/bin/chromium driven by
// playwright-core): the browser talks only to nginx, configured as ingress-nginx configures
// itself for auth-url/auth-signin/auth-response-headers, and nginx asks portcullis.
//
// The caller (tests/ingress_auth.rs) starts the OP fixture, the demo upstream, portcullis with
// ingress_auth enabled and nginx, then runs `node tests/e2e/ingress.mjs` with:
//
//   APP_URL         http://app.example.localhost:<nginx port>                       (required)
//   OTHER_URL       http://other.example.localhost:<nginx port>                     (required)
//   SHARED          1 = session.cookie_domain is the parent domain: one session for both
//                   hosts; 0 = host-only cookies: the other host asks for its own login
//   SESSION_COOKIE  the session cookie's name (__Secure-portcullis when SHARED, else
//                   __Host-portcullis)
//   OUT_DIR         where responses.txt, storage.json and report.json go (default: a temp dir)
//   USER_DATA_DIR   a fresh Chromium profile directory (default: a temp dir)
//   LOGIN           the user typed into the OP's login form (default alice)
//
// Output: `ok - <check>` / `not ok - <check>: <detail>` lines, `#` lines for information, and
// `N passed, M failed` last. Exit status 0 only when every check passed. Every wait is
// bounded; a watchdog ends the run before 90 s. Only loopback traffic: *.localhost is mapped
// to 127.0.0.1 and every other request is aborted.

import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  appState, launchChromium, loopbackOnly, originOf, parseJson, pathOf, pollUntil as poll, redactUrl, signInAtOp, withTimeout,
} from './common.mjs';

const STARTED = Date.now();
const STEP_TIMEOUT_MS = 15_000;
const WATCHDOG_MS = 85_000;
const JWT_RE = /eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./;
const TOKEN_LIKE_RE = /eyJ[A-Za-z0-9_-]{10,}\.|[A-Za-z0-9_-]{32,}/;

function fail(message) {
  console.error(`ingress.mjs: ${message}`);
  console.log('0 passed, 1 failed');
  process.exit(2);
}

function parseUrl(name) {
  const raw = process.env[name];
  if (!raw) fail(`${name} is required`);
  try {
    return new URL(raw);
  } catch {
    return fail(`${name} is not a URL: ${JSON.stringify(raw)}`);
  }
}

const APP = parseUrl('APP_URL');
const OTHER = parseUrl('OTHER_URL');
const APP_ORIGIN = APP.origin;
const OTHER_ORIGIN = OTHER.origin;
const APP_HOME = `${APP_ORIGIN}/`;
const OTHER_HOME = `${OTHER_ORIGIN}/`;
const SHARED = process.env.SHARED === '1';
const SESSION_COOKIE = process.env.SESSION_COOKIE || (SHARED ? '__Secure-portcullis' : '__Host-portcullis');
const LOGIN = process.env.LOGIN || 'alice';
const OUT_DIR = process.env.OUT_DIR || mkdtempSync(join(tmpdir(), 'portcullis-ingress-out-'));
const USER_DATA_DIR = process.env.USER_DATA_DIR || mkdtempSync(join(tmpdir(), 'portcullis-ingress-profile-'));
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

const pollUntil = (fn, { timeoutMs = STEP_TIMEOUT_MS, intervalMs = 100 } = {}) =>
  poll(fn, { timeoutMs, intervalMs });

const isApp = (raw) => originOf(raw) === APP_ORIGIN || originOf(raw) === OTHER_ORIGIN;

// ------------------------------------------------------- observation ----

const bodies = [];
const pendingBodies = new Set();
const blocked = [];
const navRequests = []; // main-frame navigations of any page: { t, url }
const navResponses = []; // responses to navigations: { url, status, location }
const jsErrors = [];
const TEXT_TYPE_RE = /^(text\/|application\/(json|javascript|ecmascript|xml|x-www-form-urlencoded)|application\/[a-z0-9.+-]*\+(json|xml))/i;

function captureBody(response) {
  const job = (async () => {
    const status = response.status();
    if (status >= 300 && status < 400) return;
    const type = response.headers()['content-type'] || '';
    if (!TEXT_TYPE_RE.test(type)) return;
    try {
      const text = await withTimeout(response.text(), 3_000, 'response body');
      bodies.push({ status, method: response.request().method(), url: redactUrl(response.url()), type, text });
    } catch {
      // the page navigated away before the body could be read
    }
  })();
  pendingBodies.add(job);
  job.finally(() => pendingBodies.delete(job));
}

const storageSnapshots = [];

function writeOutputs(extra = {}) {
  writeFileSync(
    join(OUT_DIR, 'responses.txt'),
    bodies.map((b) => `### ${b.status} ${b.method} ${b.url} [${b.type}]\n${b.text}\n`).join('\n'),
  );
  writeFileSync(join(OUT_DIR, 'storage.json'), `${JSON.stringify(storageSnapshots, null, 2)}\n`);
  const passed = checks.filter((c) => c.ok).length;
  writeFileSync(
    join(OUT_DIR, 'report.json'),
    `${JSON.stringify(
      {
        app_url: APP_ORIGIN,
        other_url: OTHER_ORIGIN,
        shared: SHARED,
        duration_ms: Date.now() - STARTED,
        passed,
        failed: checks.length - passed,
        checks,
        navigations: navRequests.map((n) => ({ ...n, url: redactUrl(n.url) })),
        navigation_responses: navResponses.map((n) => ({ ...n, url: redactUrl(n.url), location: redactUrl(n.location) })),
        blocked_requests: blocked,
        js_errors: jsErrors,
        ...extra,
      },
      null,
      2,
    )}\n`,
  );
}

function finish(context) {
  const passed = checks.filter((c) => c.ok).length;
  const failed = checks.length - passed;
  info(`total time ${((Date.now() - STARTED) / 1000).toFixed(1)} s; outputs in ${OUT_DIR}`);
  console.log(`${passed} passed, ${failed} failed`);
  const code = failed === 0 && checks.length > 0 ? 0 : 1;
  const close = context ? withTimeout(context.close(), 5_000, 'browser close').catch(() => {}) : Promise.resolve();
  close.finally(() => process.exit(code));
}

let contextRef = null;
const watchdog = setTimeout(() => {
  record('run finishes within 90 s', false, `still running after ${WATCHDOG_MS / 1000} s; stopped`);
  try {
    writeOutputs({ aborted_by_watchdog: true });
  } catch (e) {
    console.error(`could not write outputs: ${e.message}`);
  }
  finish(contextRef);
}, WATCHDOG_MS);
watchdog.unref();

// ----------------------------------------------------------- helpers ----

async function pageFetch(page, path, headers = {}, method = 'GET') {
  return withTimeout(
    page.evaluate(
      async ({ path: p, headers: h, method: m }) => {
        const init = { method: m, headers: h, credentials: 'same-origin', cache: 'no-store', redirect: 'manual' };
        if (m === 'POST') init.body = '{"order":1}';
        const res = await fetch(p, init);
        return { status: res.status, text: await res.text() };
      },
      { path, headers, method },
    ),
    STEP_TIMEOUT_MS,
    `fetch ${path}`,
  );
}

/**
 * GET `url` with the browser's cookie jar (what the browser would send to that URL) from Node
 * itself: Playwright's request API resolves names with the system resolver, which knows no
 * *.localhost, so connect to 127.0.0.1 and name the host in Host.
 */
async function jarGet(context, url, headers = {}) {
  const u = new URL(url);
  const jar = await context.cookies(url);
  const cookie = jar.map((c) => `${c.name}=${c.value}`).join('; ');
  return withTimeout(
    new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: Number(u.port || 80),
          path: `${u.pathname}${u.search}`,
          method: 'GET',
          headers: { Host: u.host, ...(cookie ? { Cookie: cookie } : {}), ...headers },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d) => {
            text += d;
          });
          res.on('end', () => resolve({ status: res.statusCode, location: res.headers.location || '', text }));
        },
      );
      req.on('error', reject);
      req.end();
    }),
    STEP_TIMEOUT_MS,
    `GET ${redactUrl(url)}`,
  );
}

async function statusText(page, origin) {
  if (originOf(page.url()) !== origin) return '';
  return (await page.locator('#status').textContent({ timeout: 1_000 })) || '';
}

/** The SPA's /api/whoami answer as seen from `page`, checked; returns the problems. */
function whoamiProblems(api) {
  const problems = [];
  const j = parseJson(api.text);
  if (api.status !== 200) problems.push(`status ${api.status}`);
  if (!j) return [...problems, `not JSON: ${api.text.slice(0, 200)}`];
  if (!j.authorization || !/^Bearer \(\d+ characters\)$/.test(j.authorization)) {
    problems.push(`authorization ${JSON.stringify(j.authorization)}`);
  }
  const id = j.identity || {};
  if (id.user !== LOGIN) problems.push(`X-Auth-Request-User ${JSON.stringify(id.user)}, not ${JSON.stringify(LOGIN)}`);
  if (id.email !== `${LOGIN}@example.test`) problems.push(`X-Auth-Request-Email ${JSON.stringify(id.email)}`);
  if (!Array.isArray(j.cookies_received)) problems.push('no cookies_received list');
  else {
    const ours = j.cookies_received.filter((n) => n.toLowerCase().includes('portcullis'));
    if (ours.length) problems.push(`upstream received portcullis cookies ${JSON.stringify(ours)}`);
  }
  return problems;
}

// ---------------------------------------------------------- scenario ----

const opLogin = (page) => signInAtOp(page, LOGIN, { isBack: isApp, timeoutMs: STEP_TIMEOUT_MS });

async function main() {
  info(`APP_URL=${APP_ORIGIN} OTHER_URL=${OTHER_ORIGIN} SHARED=${SHARED} SESSION_COOKIE=${SESSION_COOKIE}`);
  const context = await launchChromium(USER_DATA_DIR, STEP_TIMEOUT_MS, { viewport: { width: 1000, height: 800 } });
  contextRef = context;

  await loopbackOnly(context, blocked);
  context.on('response', (response) => {
    captureBody(response);
    try {
      if (response.request().isNavigationRequest()) {
        navResponses.push({ url: response.url(), status: response.status(), location: response.headers().location || '' });
      }
    } catch {
      // no frame
    }
  });
  context.on('request', (request) => {
    try {
      if (request.isNavigationRequest()) navRequests.push({ t: Date.now() - STARTED, url: request.url() });
    } catch {
      // requests without a frame are not navigations
    }
  });

  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (err) => {
    if (isApp(page.url())) jsErrors.push(`pageerror: ${err.message}`);
  });
  const navsTo = (origin, path) => navRequests.filter((n) => originOf(n.url) === origin && pathOf(n.url) === path).length;

  // 1. Signed out, the page route goes through nginx's auth-signin to /bff/login and the OP.
  {
    const name = 'open the app -> nginx 302 (auth-signin) to /bff/login?rd=<the page> -> the OP login form';
    await page.goto(APP_HOME, { waitUntil: 'domcontentloaded' });
    const onLoginForm = await pollUntil(async () => !isApp(page.url()) && (await page.locator('input[name="login"]').count()) > 0);
    const first = navResponses.find((r) => r.url === APP_HOME);
    const problems = [];
    if (!first) problems.push('no response for the app page');
    else {
      if (first.status !== 302) problems.push(`the app page answered ${first.status}`);
      let rd = null;
      try {
        const loc = new URL(first.location);
        if (loc.origin !== APP_ORIGIN || loc.pathname !== '/bff/login') problems.push(`redirected to ${redactUrl(first.location)}`);
        rd = loc.searchParams.get('rd');
      } catch {
        problems.push(`location ${JSON.stringify(first.location)}`);
      }
      if (rd !== APP_HOME) problems.push(`rd is ${JSON.stringify(rd)}, not ${APP_HOME}`);
    }
    if (!onLoginForm) problems.push(`no OP login form; page is ${redactUrl(page.url())}`);
    if (!record(name, problems.length === 0, problems.join('; '))) return;
  }

  // 2. Log in at the OP and land back on the app, through nginx, signed in.
  {
    const next = await opLogin(page);
    if (!next) {
      record('login and consent at the OP', false, `stuck on ${redactUrl(page.url())}`);
      return;
    }
    const name = 'lands on the app page signed in (no login loop)';
    const st = await pollUntil(async () => {
      const s = await statusText(page, APP_ORIGIN);
      return s.startsWith('Signed in as') ? s : null;
    });
    if (!record(name, Boolean(st) && page.url() === APP_HOME, `on ${redactUrl(page.url())} showing ${JSON.stringify(st)}`)) return;
    record('exactly one navigation to the app\'s /bff/login', navsTo(APP_ORIGIN, '/bff/login') === 1, `saw ${navsTo(APP_ORIGIN, '/bff/login')}`);
    info(st);
  }

  // 3. The cookie: HttpOnly, Secure, Strict, scoped as configured; nothing readable by JS.
  {
    const state = await appState(page);
    storageSnapshots.push({ when: 'signed in', ...state });
    const problems = [];
    if (state.document_cookie.includes('portcullis')) problems.push('document.cookie shows a portcullis cookie');
    if (TOKEN_LIKE_RE.test(state.document_cookie)) problems.push('document.cookie holds a token-like value');
    for (const [store, dump] of [['localStorage', state.local_storage], ['sessionStorage', state.session_storage]]) {
      for (const [k, v] of Object.entries(dump)) {
        if (TOKEN_LIKE_RE.test(String(v))) problems.push(`${store}[${JSON.stringify(k)}] holds a token-like value`);
      }
    }
    record('no session cookie or token visible to JavaScript (document.cookie, storage)', problems.length === 0, problems.join('; '));

    const jar = await context.cookies(APP_ORIGIN);
    const c = jar.find((x) => x.name === SESSION_COOKIE);
    const cp = [];
    if (!c) cp.push(`no ${SESSION_COOKIE} (have: ${jar.map((x) => `${x.name}@${x.domain}`).join(', ') || 'none'})`);
    else {
      if (c.httpOnly !== true) cp.push('not HttpOnly');
      if (c.secure !== true) cp.push('not Secure');
      if (c.sameSite !== 'Strict') cp.push(`SameSite=${c.sameSite}`);
      if (c.path !== '/') cp.push(`Path=${c.path}`);
      const wantDomain = SHARED ? `.${APP.hostname.split('.').slice(1).join('.')}` : APP.hostname;
      if (c.domain !== wantDomain) cp.push(`domain ${c.domain}, not ${wantDomain}`);
    }
    record(
      `cookie jar: ${SESSION_COOKIE} is HttpOnly, Secure, SameSite=Strict, Path=/, ${SHARED ? 'Domain=<parent>' : 'host-only'}`,
      cp.length === 0,
      cp.join('; '),
    );
  }

  // 4. API calls go through nginx's auth_request: bearer and identity headers reach the
  // upstream, portcullis's cookie and client-sent identity headers do not; other cookies do.
  {
    await page.evaluate(() => {
      document.cookie = 'theme=dark; Path=/; SameSite=Strict';
    });
    const api = await pageFetch(page, '/api/whoami', {
      'X-CSRF': '1',
      'X-Auth-Request-User': 'mallory',
      'X-Auth-Request-Groups': 'admins',
    });
    const problems = whoamiProblems(api);
    const j = parseJson(api.text) || {};
    if (j.identity && j.identity.groups === 'admins') problems.push('the client-sent X-Auth-Request-Groups reached the upstream');
    if (Array.isArray(j.cookies_received) && !j.cookies_received.includes('theme')) {
      problems.push(`the app's own cookie did not reach the upstream: ${JSON.stringify(j.cookies_received)}`);
    }
    record(
      'fetch /api/whoami (X-CSRF, spoofed X-Auth-Request-User/Groups) -> 200, Bearer + identity from portcullis, app cookie kept, portcullis cookie stripped',
      problems.length === 0,
      problems.join('; '),
    );
    info(`whoami: ${api.text.trim().slice(0, 400)}`);

    // A POST carries Origin (the app's own): allowed, with the same headers.
    const post = await pageFetch(page, '/api/whoami', { 'X-CSRF': '1', 'Content-Type': 'application/json' }, 'POST');
    const pp = whoamiProblems(post);
    if ((parseJson(post.text) || {}).method !== 'POST') pp.push(`method ${(parseJson(post.text) || {}).method}`);
    record('fetch POST /api/whoami (Origin: the app) -> 200 with Bearer and identity', pp.length === 0, pp.join('; '));

    const noCsrf = await pageFetch(page, '/api/whoami');
    record('fetch /api/whoami without X-CSRF -> 403 (the auth answer, through nginx)', noCsrf.status === 403, `status ${noCsrf.status}`);

    await page.locator('#call-api').click();
    const shown = await pollUntil(async () => {
      const t = (await page.locator('#api-result').textContent()) || '';
      return t.startsWith('HTTP ') ? t : null;
    });
    record(
      'the SPA\'s "Call the API" button shows 200 with a Bearer credential',
      Boolean(shown && shown.startsWith('HTTP 200') && shown.includes('"authorization": "Bearer (')),
      `shown: ${JSON.stringify((shown || '(nothing)').slice(0, 200))}`,
    );
    storageSnapshots.push({ when: 'signed in, after API calls', ...(await appState(page)) });
  }

  // 5. The other host under the same parent domain.
  {
    const other = await context.newPage();
    if (SHARED) {
      const name = 'other host: its page loads signed in, without a new login (shared session)';
      await other.goto(OTHER_HOME, { waitUntil: 'domcontentloaded' });
      const st = await pollUntil(async () => {
        const s = await statusText(other, OTHER_ORIGIN);
        return s.startsWith('Signed in as') ? s : null;
      });
      const logins = navsTo(OTHER_ORIGIN, '/bff/login');
      record(name, Boolean(st) && other.url() === OTHER_HOME && logins === 0, `on ${redactUrl(other.url())} showing ${JSON.stringify(st)}; /bff/login navigations ${logins}`);
      const api = await pageFetch(other, '/api/whoami', { 'X-CSRF': '1' });
      const problems = whoamiProblems(api);
      const j = parseJson(api.text) || {};
      if (j.host !== OTHER.host) problems.push(`upstream Host ${JSON.stringify(j.host)}`);
      record('other host: fetch /api/whoami -> 200 with Bearer and identity', problems.length === 0, problems.join('; '));
      const post = await pageFetch(other, '/api/whoami', { 'X-CSRF': '1', 'Content-Type': 'application/json' }, 'POST');
      record('other host: fetch POST /api/whoami (Origin: the other host) -> 200', whoamiProblems(post).length === 0, whoamiProblems(post).join('; '));
    } else {
      // Each host has its own __Host- cookie: nothing is sent to other yet.
      const before = await jarGet(context, `${OTHER_ORIGIN}/api/whoami`, { 'X-CSRF': '1' });
      record('other host: /api/whoami with the browser\'s cookies -> 401 (no session there)', before.status === 401, `status ${before.status}`);
      const name = 'other host: its page redirects to its own /bff/login, which logs in there separately (OP single sign-on)';
      const navsBefore = navRequests.length;
      await other.goto(OTHER_HOME, { waitUntil: 'domcontentloaded' }).catch(() => null);
      const st = await pollUntil(async () => {
        const s = await statusText(other, OTHER_ORIGIN);
        return s.startsWith('Signed in as') ? s : null;
      });
      const first = navResponses.find((r) => r.url === OTHER_HOME);
      const problems = [];
      if (!first || first.status !== 302) problems.push(`the other page answered ${first && first.status}`);
      else {
        try {
          const u = new URL(first.location);
          if (`${u.origin}${u.pathname}` !== `${OTHER_ORIGIN}/bff/login`) problems.push(`redirected to ${redactUrl(first.location)}`);
          if (u.searchParams.get('rd') !== OTHER_HOME) problems.push(`rd ${JSON.stringify(u.searchParams.get('rd'))}`);
        } catch {
          problems.push(`location ${JSON.stringify(first.location)}`);
        }
      }
      const via = navRequests.slice(navsBefore).map((n) => originOf(n.url));
      if (!via.some((o) => !isApp(`${o}/`))) problems.push('the OP was not visited');
      if (navsTo(OTHER_ORIGIN, '/bff/login') !== 1) problems.push(`other /bff/login navigations: ${navsTo(OTHER_ORIGIN, '/bff/login')}`);
      if (!st) problems.push(`not signed in on other: on ${redactUrl(other.url())}`);
      record(name, problems.length === 0, problems.join('; '));
      const appJar = (await context.cookies(APP_ORIGIN)).filter((c) => c.name === SESSION_COOKIE);
      const otherJar = (await context.cookies(OTHER_ORIGIN)).filter((c) => c.name === SESSION_COOKIE);
      record(
        'other host: a session cookie of its own, host-only, not the app\'s',
        appJar.length === 1 && otherJar.length === 1 && otherJar[0].domain === OTHER.hostname && otherJar[0].value !== appJar[0].value,
        `app ${appJar.map((c) => c.domain)}, other ${otherJar.map((c) => c.domain)}`,
      );
    }
    await other.close();
    const still = await pageFetch(page, '/api/whoami', { 'X-CSRF': '1' });
    record('the app tab still calls its API', still.status === 200, `status ${still.status}`);
  }

  // 6. Sign out through the OP; the app is signed out and its page sends the browser to login.
  {
    const name = 'sign out: "Sign out" -> OP confirmation -> back at the app, whose page sends the browser to login again';
    const loginNavsBefore = navsTo(APP_ORIGIN, '/bff/login');
    await page.locator('#sign-out').click();
    const yes = page.getByRole('button', { name: 'Yes, sign me out' });
    const onConfirm = await pollUntil(async () => !isApp(page.url()) && (await yes.count()) > 0);
    if (!onConfirm) {
      record(name, false, `no OP confirmation page; on ${redactUrl(page.url())}`);
      return;
    }
    await yes.click();
    const back = await pollUntil(
      async () => navsTo(APP_ORIGIN, '/bff/login') > loginNavsBefore && !isApp(page.url()) && (await page.locator('input[name="login"]').count()) > 0,
    );
    record(name, Boolean(back), `on ${redactUrl(page.url())}; /bff/login navigations ${navsTo(APP_ORIGIN, '/bff/login')}`);

    const api = await jarGet(context, `${APP_ORIGIN}/api/whoami`, { 'X-CSRF': '1' });
    record('after sign-out the app\'s API call -> 401', api.status === 401, `status ${api.status}`);
    const home = await jarGet(context, APP_HOME);
    record(
      'after sign-out the app\'s page -> 302 to /bff/login',
      home.status === 302 && home.location.startsWith(`${APP_ORIGIN}/bff/login?rd=`),
      `status ${home.status}, location ${redactUrl(home.location)}`,
    );
    if (SHARED) {
      const o = await jarGet(context, `${OTHER_ORIGIN}/api/whoami`, { 'X-CSRF': '1' });
      record('after sign-out the other host\'s API call -> 401 too', o.status === 401, `status ${o.status}`);
    }
    // Host-only: the other host's own session is not this logout's business (and stays).
    const jar = await context.cookies(SHARED ? [APP_ORIGIN, OTHER_ORIGIN] : [APP_ORIGIN]);
    record(`after sign-out the cookie jar has no ${SESSION_COOKIE} for the app`, !jar.some((x) => x.name === SESSION_COOKIE), 'still there');
  }
}

let mainError = null;
try {
  await main();
} catch (err) {
  mainError = err;
  record('scenario ran to the end', false, String(err && err.message ? err.message : err).split('\n')[0]);
}

await withTimeout(Promise.allSettled([...pendingBodies]), 3_000, 'pending bodies').catch(() => {});
{
  const withJwt = bodies.filter((b) => JWT_RE.test(b.text)).map((b) => `${b.status} ${b.url}`);
  record(
    `no response body contains a JWT (${bodies.length} bodies recorded)`,
    bodies.length > 0 && withJwt.length === 0,
    withJwt.length ? `in: ${withJwt.join(', ')}` : 'no bodies were recorded',
  );
  const storageJwt = storageSnapshots.filter((s) => JWT_RE.test(JSON.stringify(s))).map((s) => s.when);
  record('no storage dump contains a JWT', storageJwt.length === 0, `in: ${storageJwt.join(', ')}`);
  record('no request left loopback', blocked.length === 0, `aborted: ${blocked.slice(0, 5).join(', ')}`);
  record('no script error on the app\'s pages', jsErrors.length === 0, jsErrors.slice(0, 3).join(' | '));
}
writeOutputs({ error: mainError ? String(mainError.stack || mainError) : null });
clearTimeout(watchdog);
finish(contextRef);
