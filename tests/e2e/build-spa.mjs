// Builds a tiny single-page application the way a real one is built, for the static-route tests
// (tests/static_spa.rs): esbuild bundles a client-side router (history API) and a stylesheet
// into content-hashed files, index.html references them under the base path, and every text
// file gets precompressed .br and .gz copies beside it. The build is reproducible: the same
// app gets the same hashed names in any output directory.
//
//   node build-spa.mjs OUT_DIR [BASE]     BASE: the path the app is served under (default /app/)
//
// Prints one JSON line: {"script": "assets/main-HASH.js", "style": "assets/main-HASH.css"}.

import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const [outDir, base = '/app/'] = process.argv.slice(2);
if (!outDir) {
  console.error('usage: node build-spa.mjs OUT_DIR [BASE]');
  process.exit(2);
}

// The sources sit in the output directory while it is built (and are removed after): esbuild's
// hashes cover the sources' paths relative to it, so every build of this app gets the same names.
const src = join(outDir, 'src');
mkdirSync(src, { recursive: true });
writeFileSync(
  join(src, 'main.js'),
  `import './main.css';
const BASE = ${JSON.stringify(base)};

function view(path) {
  const rest = path.startsWith(BASE) ? path.slice(BASE.length) : '';
  const order = /^orders\\/(\\d+)$/.exec(rest);
  if (order) return 'Order ' + order[1];
  if (rest === '') return 'Home';
  return 'No such page';
}

function render() {
  document.getElementById('view').textContent = view(location.pathname);
  document.body.dataset.rendered = location.pathname;
}

document.addEventListener('click', (event) => {
  const link = event.target.closest('a[data-route]');
  if (!link) return;
  event.preventDefault();
  history.pushState({}, '', link.getAttribute('href'));
  render();
});
window.addEventListener('popstate', render);

fetch('/bff/user', { headers: { 'X-CSRF': '1' } }).then((r) => {
  document.getElementById('user').textContent = r.status === 200 ? 'Signed in' : 'Signed out';
});
render();
`,
);
writeFileSync(join(src, 'main.css'), 'body { font-family: sans-serif; }\n#view { color: #123456; }\n');

const assets = join(outDir, 'assets');
mkdirSync(assets, { recursive: true });
const result = await build({
  entryPoints: [join(src, 'main.js')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2020',
  outdir: assets,
  absWorkingDir: outDir,
  entryNames: '[name]-[hash]',
  metafile: true,
  logLevel: 'silent',
});

rmSync(src, { recursive: true });

// Relative to absWorkingDir, the output directory.
const outputs = Object.keys(result.metafile.outputs);
const script = outputs.find((p) => p.endsWith('.js'));
const style = outputs.find((p) => p.endsWith('.css'));
writeFileSync(
  join(outDir, 'index.html'),
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>portcullis static SPA</title>
<link rel="stylesheet" href="${base}${style}">
<script type="module" src="${base}${script}"></script>
</head>
<body>
<h1 id="view">Loading</h1>
<p id="user"></p>
<nav><a data-route href="${base}orders/7">Order 7</a> <a data-route href="${base}">Home</a></nav>
</body>
</html>
`,
);

function precompress(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      precompress(path);
    } else if (/\.(html|js|css)$/.test(entry.name)) {
      const body = readFileSync(path);
      writeFileSync(`${path}.br`, brotliCompressSync(body));
      writeFileSync(`${path}.gz`, gzipSync(body, { level: 9 }));
    }
  }
}
precompress(outDir);

console.log(JSON.stringify({ script, style }));
