// Helpers every Chromium scenario (login.mjs, ingress.mjs, spa.mjs, routes.mjs) uses.

import { chromium } from 'playwright-core';

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    }),
  ]);
}

export function redactUrl(raw) {
  try {
    const u = new URL(raw);
    const names = [...new Set([...u.searchParams.keys()])];
    return `${u.origin}${u.pathname}${names.length ? `?${names.map((n) => `${n}=…`).join('&')}` : ''}`;
  } catch {
    return '(unparseable url)';
  }
}

export function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export function isLoopbackHost(hostname) {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

// The flags every scenario launches Debian's Chromium with: a fresh profile, no background
// traffic, and *.localhost pinned to 127.0.0.1 (every other name fails to resolve).
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-dev-shm-usage',
  '--host-resolver-rules=MAP *.localhost 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*',
];

/** Polls `fn` until it returns something truthy, at most `timeoutMs`; null when it never did. */
export async function pollUntil(fn, { timeoutMs, intervalMs = 100 }) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
    } catch {
      // between documents; try again
    }
    if (Date.now() >= deadline) return null;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Aborts every request to a host that is not loopback, keeping its redacted URL in `blocked`. */
export async function loopbackOnly(context, blocked) {
  await context.route('**/*', (route) => {
    const url = route.request().url();
    let host = '';
    try {
      host = new URL(url).hostname;
    } catch {
      // not a network URL
    }
    if (host && !isLoopbackHost(host)) {
      blocked.push(redactUrl(url));
      return route.abort('blockedbyclient');
    }
    return route.continue();
  });
}

/** Fills in the OP fixture's login form as `login`, then its consent form if one follows. */
export async function signInAtOp(page, login, { isBack, timeoutMs }) {
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill('any password');
  await page.locator('form:has(input[name="login"]) [type="submit"]').first().click();
  const next = await pollUntil(async () => {
    if (isBack(page.url())) return 'app';
    if ((await page.locator('input[name="login"]').count()) > 0) return null;
    if ((await page.locator('form [type="submit"]').count()) > 0) return 'consent';
    return null;
  }, { timeoutMs });
  if (next === 'consent') await page.locator('form [type="submit"]').first().click();
  return next;
}

/** Debian's Chromium on the fresh profile `userDataDir`, every wait bounded by `timeoutMs`. */
export async function launchChromium(userDataDir, timeoutMs, options = {}) {
  const context = await withTimeout(
    chromium.launchPersistentContext(userDataDir, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      timeout: timeoutMs,
      args: CHROMIUM_ARGS,
      ...options,
    }),
    timeoutMs + 2_000,
    'launch Chromium',
  );
  context.setDefaultTimeout(timeoutMs);
  context.setDefaultNavigationTimeout(timeoutMs);
  return context;
}

/** A URL's origin, or '' for text that is not a URL. */
export function originOf(raw) {
  try {
    return new URL(raw).origin;
  } catch {
    return '';
  }
}

/** A URL's path, or '' for text that is not a URL. */
export function pathOf(raw) {
  try {
    return new URL(raw).pathname;
  } catch {
    return '';
  }
}

/** What script on the page can see: the origin, `document.cookie`, and both web storages. */
export async function appState(page) {
  return page.evaluate(() => {
    const dump = (s) => {
      const out = {};
      for (let i = 0; i < s.length; i += 1) {
        const k = s.key(i);
        out[k] = s.getItem(k);
      }
      return out;
    };
    return {
      origin: location.origin,
      document_cookie: document.cookie,
      local_storage: dump(localStorage),
      session_storage: dump(sessionStorage),
    };
  });
}
