/**
 * The dashboard plugin on loopback, without a browser: GET / and /ui
 * redirect to /ui/, the files are served with their types, a strict
 * Content-Security-Policy and ETags (304 on revalidation), only files of
 * the folder are reachable (no traversal, no dotfiles, no links out, no
 * other kinds), and a missing folder leaves the rest of the server working.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NO_BOOT } from '../helpers/no-boot.js';
import { HttpServer } from '../../src/api/http-server.js';
import { DASHBOARD_CSP, dashboard, defaultDashboardRoot, loadDashboardAssets } from '../../src/api/dashboard.js';

let dir: string;
const servers: HttpServer[] = [];

async function serve(root?: string): Promise<string> {
  const s = new HttpServer({ boot: NO_BOOT, extensions: [dashboard(root === undefined ? {} : { root })] });
  servers.push(s);
  const a = await s.listen(0, '127.0.0.1');
  return `http://127.0.0.1:${a.port}`;
}

/** A raw request: fetch() would normalise `..` and `%2e%2e` away before sending. */
function raw(base: string, path: string, method = 'GET'): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'dl-dashboard-plugin-'));
});

after(async () => {
  for (const s of servers) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

test('the package\'s web/ folder is found and holds the dashboard', () => {
  const root = defaultDashboardRoot();
  assert.ok(root, 'web/ not found above dist/src/api');
  const assets = loadDashboardAssets(root);
  for (const f of ['index.html', 'app.js', 'api.js', 'stream.js', 'model.js', 'dom.js', 'format.js', 'style.css',
    'pages/login.js', 'pages/clients.js', 'pages/client.js', 'pages/images.js', 'pages/unknown.js', 'pages/common.js']) {
    assert.ok(assets.files.has(f), `${f} is served`);
  }
  assert.deepEqual(assets.skipped, []);
  // Small, as the dashboard should stay: no framework, no build.
  const total = [...assets.files.values()].reduce((n, a) => n + a.body.length, 0);
  assert.ok(total < 150 * 1024, `the dashboard is ${total} bytes`);
  // Text from the server goes in as text: no HTML parsing of data anywhere.
  for (const [name, a] of assets.files) {
    if (!name.endsWith('.js')) continue;
    const src = a.body.toString('utf8');
    assert.doesNotMatch(src, /innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function/, `${name} must not parse strings as HTML or code`);
    assert.doesNotMatch(src, /https?:\/\//, `${name} must load nothing from elsewhere`);
  }
  const html = assets.files.get('index.html')!.body.toString('utf8');
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script in index.html');
  assert.doesNotMatch(html, /\sstyle=|<style/, 'no inline style in index.html');
  assert.doesNotMatch(html, /https?:\/\//, 'index.html loads nothing from elsewhere');
});

test('GET / and /ui redirect to /ui/, which is the dashboard with a strict policy', async () => {
  const base = await serve();
  const root = await raw(base, '/');
  assert.equal(root.status, 302);
  assert.equal(root.headers.location, '/ui/');
  const ui = await raw(base, '/ui');
  assert.equal(ui.status, 301);
  assert.equal(ui.headers.location, '/ui/');

  const res = await fetch(`${base}/ui/`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
  assert.equal(res.headers.get('content-security-policy'), DASHBOARD_CSP);
  assert.match(DASHBOARD_CSP, /script-src 'self'(;|$)/);
  assert.doesNotMatch(DASHBOARD_CSP, /unsafe-inline|unsafe-eval|\*/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(res.headers.get('x-frame-options'), 'DENY');
  assert.equal(res.headers.get('cache-control'), 'no-cache');
  const html = await res.text();
  assert.match(html, /<script type="module" src="app\.js"><\/script>/);
  assert.equal(html, readFileSync(join(defaultDashboardRoot()!, 'index.html'), 'utf8'));

  const js = await fetch(`${base}/ui/pages/clients.js`);
  assert.equal(js.status, 200);
  assert.equal(js.headers.get('content-type'), 'text/javascript; charset=utf-8');
  const css = await fetch(`${base}/ui/style.css`);
  assert.equal(css.headers.get('content-type'), 'text/css; charset=utf-8');
  const head = await raw(base, '/ui/app.js', 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
  assert.equal(Number(head.headers['content-length']), readFileSync(join(defaultDashboardRoot()!, 'app.js')).length);
});

test('ETags: an unchanged file is answered 304', async () => {
  const base = await serve();
  const first = await fetch(`${base}/ui/app.js`);
  const etag = first.headers.get('etag');
  assert.match(etag ?? '', /^"[A-Za-z0-9_-]{27}"$/);
  const again = await fetch(`${base}/ui/app.js`, { headers: { 'if-none-match': `"other", ${etag}` } });
  assert.equal(again.status, 304);
  assert.equal(await again.text(), '');
  const changed = await fetch(`${base}/ui/app.js`, { headers: { 'if-none-match': '"other"' } });
  assert.equal(changed.status, 200);
});

test('only the folder\'s own files of known kinds are served', async () => {
  const root = join(dir, 'web');
  mkdirSync(join(root, 'pages'), { recursive: true });
  writeFileSync(join(root, 'index.html'), '<!doctype html><title>t</title>');
  writeFileSync(join(root, 'pages', 'a.js'), 'export {};\n');
  writeFileSync(join(root, '.secret.js'), 'SECRET-CONTENT');
  writeFileSync(join(root, 'notes.txt'), 'NOTES-CONTENT');
  writeFileSync(join(root, 'big.js'), Buffer.alloc(600 * 1024, 0x20));
  writeFileSync(join(dir, 'outside.js'), 'OUTSIDE-CONTENT');
  symlinkSync(join(dir, 'outside.js'), join(root, 'link.js'));
  const assets = loadDashboardAssets(root);
  assert.deepEqual([...assets.files.keys()].sort(), ['index.html', 'pages/a.js']);
  assert.ok(assets.skipped.some((s) => s.startsWith('big.js')), assets.skipped.join('; '));
  assert.ok(assets.skipped.some((s) => s.startsWith('link.js')), assets.skipped.join('; '));

  const base = await serve(root);
  assert.equal((await fetch(`${base}/ui/pages/a.js`)).status, 200);
  for (const path of [
    '/ui/.secret.js', '/ui/notes.txt', '/ui/big.js', '/ui/link.js', '/ui/../outside.js', '/ui/%2e%2e/outside.js',
    '/ui/pages/../../outside.js', '/ui/..%2f..%2fpackage.json', '/ui/%2fetc%2fpasswd', '/ui//etc/passwd', '/ui/pages', '/ui/pages/',
    '/ui/index.html%00.js', '/ui/\u00e9.js',
  ]) {
    const r = await raw(base, encodeURI(path).replace(/%25/g, '%'));
    assert.equal(r.status, 404, `${path} answered ${r.status}`);
    assert.doesNotMatch(r.body, /OUTSIDE-CONTENT|SECRET-CONTENT|NOTES-CONTENT|root:x:/);
  }
});

test('a missing folder: /ui/ says why, the other routes still work', async () => {
  const base = await serve(join(dir, 'does-not-exist'));
  const r = await fetch(`${base}/ui/`);
  assert.equal(r.status, 404);
  const body = (await r.json()) as { error: string; message: string };
  assert.equal(body.error, 'HTTP_NOT_FOUND');
  assert.match(body.message, /does-not-exist/);
  assert.equal((await fetch(`${base}/healthz`)).status, 200);
  assert.equal((await fetch(`${base}/ipxe/52-54-00-00-00-01`)).status, 200);
});
