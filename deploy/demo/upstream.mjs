// Demo upstream for portcullis: a tiny single-page app plus an API that shows
// what the proxy forwarded. Node 20+, no npm dependencies.
//
//   PORT=0 node upstream.mjs       # 0 = ephemeral; prints "UPSTREAM_READY <port>"
//   HOST                           # bind address (default 127.0.0.1)
//
// Routes
//   /api/*      JSON describing the request as the upstream saw it. It reports
//               only the *length* of the Authorization credential and only the
//               *names* of cookies: never a token or a cookie value. `identity`
//               holds the X-Auth-Request-* headers an ingress copies from
//               portcullis's auth answer (null when absent); `host` the Host.
//   /public/*   plain text "public"
//   /app.js     the SPA's script (separate file, so a strict CSP works)
//   /app.css    the SPA's stylesheet
//   anything else (GET/HEAD): the SPA's HTML page
//
// The SPA asks portcullis who is signed in (GET /bff/user with X-CSRF: 1) and
// renders with textContent only.

import { createServer } from 'node:http';

const HOST = process.env.HOST || '127.0.0.1';
const PORT = parsePort(process.env.PORT);

function parsePort(raw) {
  if (raw === undefined || raw === '') return 0;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    console.error(`PORT must be an integer 0-65535, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

// ------------------------------------------------------------- assets ----

const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const HTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>portcullis demo</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header><h1>portcullis demo</h1></header>
<main>
  <p id="status" role="status">Loading…</p>

  <section id="signed-in" hidden>
    <p><strong id="who"></strong></p>
    <h2>Claims</h2>
    <table id="claims">
      <thead><tr><th scope="col">Claim</th><th scope="col">Value</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="session-info" class="muted"></p>
    <p class="actions">
      <button id="call-api" type="button">Call the API</button>
      <a id="sign-out" class="button" href="/bff/logout">Sign out</a>
    </p>
    <h2>API result</h2>
    <pre id="api-result" class="muted">(not called yet)</pre>
  </section>

  <section id="signed-out" hidden>
    <p><a id="sign-in" class="button" href="/bff/login?returnTo=/">Sign in</a></p>
  </section>

  <p id="error" class="error" hidden></p>
</main>
</body>
</html>
`;

const CSS = `:root { color-scheme: light; }
body {
  font-family: system-ui, -apple-system, "Segoe UI", sans-serif;
  max-width: 46em;
  margin: 2em auto;
  padding: 0 1em;
  color: #1d232a;
  line-height: 1.45;
}
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.1em; margin-top: 1.6em; }
#status { font-size: 1.2em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #d8dde3; vertical-align: top; }
th { background: #f2f4f7; }
td:first-child { font-family: ui-monospace, monospace; white-space: nowrap; }
td:last-child { word-break: break-word; }
pre {
  background: #f6f8fa;
  border: 1px solid #d8dde3;
  border-radius: 4px;
  padding: .8em;
  white-space: pre-wrap;
  word-break: break-word;
}
.actions { display: flex; gap: .8em; align-items: center; margin-top: 1.2em; }
button, a.button {
  font: inherit;
  padding: .45em 1em;
  border-radius: 4px;
  border: 1px solid #1f5fbf;
  background: #2b6fd6;
  color: #fff;
  text-decoration: none;
  cursor: pointer;
}
a.button:hover, button:hover { background: #1f5fbf; }
#sign-out { background: #fff; color: #1f5fbf; }
.muted { color: #57606a; }
.error { color: #b42318; }
`;

const JS = `'use strict';
// portcullis demo SPA. Data is only ever written with textContent.
(function () {
  var $ = function (id) { return document.getElementById(id); };

  function show(id, visible) { $(id).hidden = !visible; }

  function showError(message) {
    $('error').textContent = message;
    show('error', true);
  }

  function claimText(value) {
    if (value === null || value === undefined) return String(value);
    if (typeof value === 'object') return JSON.stringify(value);
    return String(value);
  }

  function renderClaims(claims) {
    var body = $('claims').tBodies[0];
    body.replaceChildren();
    Object.keys(claims || {}).sort().forEach(function (key) {
      var row = document.createElement('tr');
      var k = document.createElement('td');
      var v = document.createElement('td');
      k.textContent = key;
      v.textContent = claimText(claims[key]);
      row.append(k, v);
      body.append(row);
    });
  }

  function renderSignedIn(user) {
    var claims = user.claims || {};
    var name = claims.name || user.sub;
    $('status').textContent = 'Signed in as ' + name;
    $('who').textContent = 'sub: ' + user.sub;
    renderClaims(claims);
    if (user.session) {
      $('session-info').textContent = 'Session expires in ' + user.session.expires_in +
        ' s (idle timeout in ' + user.session.idle_expires_in + ' s).';
    }
    if (typeof user.logout_url === 'string' && user.logout_url.charAt(0) === '/' &&
        user.logout_url.charAt(1) !== '/') {
      $('sign-out').setAttribute('href', user.logout_url);
    }
    show('signed-out', false);
    show('signed-in', true);
  }

  function renderSignedOut() {
    $('status').textContent = 'Signed out';
    show('signed-in', false);
    show('signed-out', true);
  }

  function callApi() {
    var out = $('api-result');
    out.textContent = 'Calling /api/whoami…';
    fetch('/api/whoami', { headers: { 'X-CSRF': '1' }, credentials: 'same-origin' })
      .then(function (res) {
        return res.text().then(function (text) {
          var shown = text;
          try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ }
          out.textContent = 'HTTP ' + res.status + '\\n' + shown;
        });
      })
      .catch(function (err) { out.textContent = 'Request failed: ' + err; });
  }

  function load() {
    $('call-api').addEventListener('click', callApi);
    fetch('/bff/user', { headers: { 'X-CSRF': '1' }, credentials: 'same-origin' })
      .then(function (res) {
        if (res.status === 401) { res.text().catch(function () {}); renderSignedOut(); return; }
        if (!res.ok) throw new Error('/bff/user answered HTTP ' + res.status);
        return res.json().then(renderSignedIn);
      })
      .catch(function (err) {
        $('status').textContent = 'Error';
        showError(String(err && err.message ? err.message : err));
      });
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', load);
  } else {
    load();
  }
})();
`;

// ---------------------------------------------------------------- api ----

function cookieNames(header) {
  if (!header) return [];
  const names = [];
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    const name = (eq === -1 ? part : part.slice(0, eq)).trim();
    if (name) names.push(name);
  }
  return names;
}

function describeAuthorization(header) {
  if (header === undefined) return null;
  const value = header.trim();
  const sp = value.indexOf(' ');
  if (sp === -1) return `(unrecognised scheme, ${value.length} characters)`;
  const scheme = value.slice(0, sp);
  const credential = value.slice(sp + 1).trim();
  return `${scheme} (${credential.length} characters)`;
}

function whoami(req) {
  const url = new URL(req.url, 'http://upstream.invalid');
  const ff = req.headers['x-forwarded-for'];
  return {
    path: url.pathname,
    method: req.method,
    authorization: describeAuthorization(req.headers.authorization),
    cookies_received: cookieNames(req.headers.cookie),
    forwarded_for: ff === undefined ? null : ff,
    host: req.headers.host ?? null,
    identity: {
      user: req.headers['x-auth-request-user'] ?? null,
      email: req.headers['x-auth-request-email'] ?? null,
      preferred_username: req.headers['x-auth-request-preferred-username'] ?? null,
      groups: req.headers['x-auth-request-groups'] ?? null,
    },
  };
}

// ------------------------------------------------------------- server ----

const COMMON_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

function send(req, res, status, type, body, extra = {}) {
  const buf = Buffer.from(body, 'utf8');
  res.writeHead(status, {
    ...COMMON_HEADERS,
    'content-type': type,
    'content-length': buf.length,
    ...extra,
  });
  res.end(req.method === 'HEAD' ? undefined : buf);
}

function handle(req, res) {
  let path;
  try {
    path = new URL(req.url, 'http://upstream.invalid').pathname;
  } catch {
    send(req, res, 400, 'text/plain; charset=utf-8', 'bad request\n');
    return;
  }
  const noStore = { 'cache-control': 'no-store' };

  if (path === '/api' || path.startsWith('/api/')) {
    send(req, res, 200, 'application/json', `${JSON.stringify(whoami(req))}\n`, noStore);
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(req, res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', { allow: 'GET, HEAD' });
    return;
  }
  if (path === '/public' || path.startsWith('/public/')) {
    send(req, res, 200, 'text/plain; charset=utf-8', 'public\n');
    return;
  }
  if (path === '/app.js') {
    send(req, res, 200, 'text/javascript; charset=utf-8', JS, noStore);
    return;
  }
  if (path === '/app.css') {
    send(req, res, 200, 'text/css; charset=utf-8', CSS, noStore);
    return;
  }
  send(req, res, 200, 'text/html; charset=utf-8', HTML, {
    ...noStore,
    'content-security-policy': CSP,
  });
}

const server = createServer((req, res) => {
  // Drain any request body; none of the routes use it.
  req.resume();
  try {
    handle(req, res);
  } catch (err) {
    console.error('[upstream] error:', err);
    if (!res.headersSent) send(req, res, 500, 'text/plain; charset=utf-8', 'internal error\n');
    else res.destroy();
  }
});
server.keepAliveTimeout = 65_000;

server.on('error', (err) => {
  console.error(`[upstream] ${err.message}`);
  process.exit(1);
});

server.listen({ host: HOST, port: PORT, backlog: 511 }, () => {
  process.stdout.write(`UPSTREAM_READY ${server.address().port}\n`);
});

function stop(signal) {
  console.error(`[upstream] ${signal}: exiting`);
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
