/**
 * The dashboard in headless Chromium against a running server with real
 * protocol traffic: startServer() (the composition root) on loopback with
 * ephemeral ports and DHCP off, a bootable image version imported from a
 * synthetic disk, and clients that boot over HTTP (iPXE script, kernel,
 * initramfs), connect their root over NBD and report OS up.
 *
 * - the event stream: a dropped connection shows, is retried, and on
 *   reconnection the page catches up with what it missed;
 * - log-in: the form, a wrong token refused with a message, a token the
 *   server stops accepting sends back to the form with a message;
 * - the clients page follows a boot live, through the event stream and
 *   without reloading: each step, up; the overlay growing and the write
 *   rate (re-read every few seconds); the stale badge;
 * - the client page: the timeline with each step's time and the time since
 *   power-on, updated live by a new boot; its actions (maintenance,
 *   settings, reset, delete), checked in the catalogue afterwards;
 * - hostile text in a boot event shows as text, never as HTML;
 * - unknown machines: one that tries to boot appears live and is adopted;
 * - images: versions with kernels and the clients that run them; publish,
 *   rollback, commit of a maintenance client's draft;
 * - the pure parts (event-stream parser, state derivation) run in the page;
 * - no page logs an error or a Content-Security-Policy violation.
 * Screenshots of every page are saved under test-artifacts/dashboard/.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { dashboard } from '../../src/api/dashboard.js';
import { validateConfig } from '../../src/app/config.js';
import { startServer, type ServerHandle } from '../../src/app/server.js';
import { makeDisk, makeInitrd, systemTree } from '../../src/images/test-support.js';
import { COMMANDS } from '../../src/protocols/nbd/constants.js';
import { launchChromium, requireChromium, saveScreenshot, waitForAttribute, waitForText, watchPage, type PageWatch } from '../helpers/browser.js';
import { NbdTestClient } from '../helpers/nbd-client.js';
import { sleep, until } from '../helpers/nbd-devices.js';
import { testLogger } from '../helpers/nbd.js';
import { havePeer } from '../helpers/peers.js';

/** What makes and imports a bootable disk. */
const DISK_PEERS = ['sfdisk', 'mkfs.ext4', 'debugfs'];
const KERNEL = '6.1.0-1-amd64';
const MiB = 1024 * 1024;
/** In the GPT gap between the entry array and the first partition: writes there leave the file system alone. */
const SCRIBBLE_AT = 512 * 1024;

const A = '52:54:00:d5:00:01';
const B = '52:54:00:d5:00:02';
const C = '52:54:00:d5:00:03';
const M = '52:54:00:d5:00:0f';
const U = '52:54:00:d5:00:99';
const HOSTILE = '<img src=x onerror="window.__injected=1">pxelinux.0';

let dir: string;
let dataDir: string;
let server: ServerHandle;
let token: string;
let http: string;
let browser: Browser | null = null;
let page: Page;
let watch: PageWatch;
let ready = false;
const nbdClients: NbdTestClient[] = [];

/** Where the dashboard came from: the composition root, or this test (until startServer() mounts it). */
let dashboardMountedBy = 'startServer()';

/** The server's HTTP service, to cut its connections as a network failure would. */
let httpApp: FastifyInstance | null = null;

/** The dashboard, unless startServer() already serves it (the REST API it talks to is startServer()'s own). */
async function dashboardUnlessMounted(app: FastifyInstance): Promise<void> {
  httpApp = app;
  if (app.hasRoute({ method: 'GET', url: '/ui/' })) return;
  dashboardMountedBy = 'the test';
  await dashboard()(app);
}

before(async () => {
  ready = havePeer(process.env.DISKLESS_CHROMIUM ?? 'chromium') && DISK_PEERS.every(havePeer);
  if (!ready) return;
  dir = mkdtempSync(join(tmpdir(), 'dl-dashboard-'));
  dataDir = join(dir, 'data');
  const disk = join(dir, 'deb.raw');
  const initrd = await makeInitrd({ kernelVersion: KERNEL, flavour: 'initramfs-tools' });
  await makeDisk({ path: disk, size: 48 * MiB, tree: systemTree({ flavour: 'initramfs-tools', kernels: [{ version: KERNEL, initrd }], vmlinuzLink: `boot/vmlinuz-${KERNEL}` }) });

  const config = validateConfig({
    dataDir,
    nbd: { host: '127.0.0.1', port: 0, overlayGraceMs: 100 },
    http: { host: '127.0.0.1', port: 0 },
    tftp: { enabled: false },
  });
  server = await startServer(config, { logger: testLogger(), httpExtensions: [dashboardUnlessMounted] });
  http = `http://127.0.0.1:${server.boot.http.port}`;
  token = server.apiToken;
  assert.equal(readFileSync(join(dataDir, 'api-token'), 'utf8').trim(), token);

  const c = server.catalogue;
  await c.importVersion('deb', disk);
  await c.importVersion('deb', disk, { publish: false });
  c.addClient({ mac: A, image: 'deb', name: 'pc-01' });
  c.addClient({ mac: B, image: 'deb', name: 'pc-02', mode: 'persistent' });
  c.addClient({ mac: C, image: 'deb', name: 'spare' });
  c.addClient({ mac: M, image: 'deb', name: 'golden-edit', mode: 'persistent' });
  c.setMaintenance(M, true);

  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, locale: 'en-GB', timezoneId: 'UTC' });
  page = await context.newPage();
  watch = watchPage(page);
  page.on('dialog', (d) => void d.accept());
});

after(async () => {
  for (const n of nbdClients) n.close();
  await browser?.close();
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// traffic, as a booting machine makes it

interface Boot {
  script: string;
  kernel: string;
  initrd: string;
  up: string;
}

/** GET /ipxe/<mac>: a new boot. Returns the URLs the script hands the machine. */
async function fetchScript(mac: string): Promise<Boot> {
  const r = await fetch(`${http}/ipxe/${mac.replace(/:/g, '-')}`);
  assert.equal(r.status, 200);
  const script = await r.text();
  const url = (re: RegExp): string => re.exec(script)?.[1] ?? '';
  return { script, kernel: url(/(http:\/\/\S+\/vmlinuz)/), initrd: url(/(http:\/\/\S+\/initrd\.img)/), up: url(/diskless\.up=(\S+)/) };
}

async function fetchFile(url: string): Promise<number> {
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/boot\//, 'the script names the file');
  const r = await fetch(url);
  assert.equal(r.status, 200, url);
  return (await r.arrayBuffer()).byteLength;
}

async function connectRoot(mac: string): Promise<NbdTestClient> {
  const name = server.catalogue.showClient(mac).exportName;
  assert.ok(name, `${mac} has an export`);
  const c = await NbdTestClient.open(server.nbdAddress.port, name);
  nbdClients.push(c);
  return c;
}

async function reportUp(url: string): Promise<void> {
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/boot\/.+\/up$/);
  const r = await fetch(url, { method: 'POST' });
  assert.equal(r.status, 204);
}

// ---------------------------------------------------------------------------
// the page

const row = (mac: string): string => `tr[data-mac="${mac}"]`;

async function go(hash: string, pageName: string): Promise<void> {
  await page.evaluate((h) => { location.hash = h; }, hash);
  await waitForAttribute(page, 'main', 'data-page', pageName);
  await page.waitForFunction(() => Number(document.querySelector('main')?.dataset.refreshed ?? 0) > 0, null, { timeout: 15_000 });
}

/** A mark that a reload would wipe: the page must update in place. */
async function markPage(): Promise<void> {
  await page.evaluate(() => { (window as unknown as { __mark: number }).__mark = 42; });
}
async function assertNotReloaded(): Promise<void> {
  assert.equal(await page.evaluate(() => (window as unknown as { __mark?: number }).__mark), 42, 'the page was reloaded');
}

/**
 * The pages also re-read the server every few seconds while the tab is
 * visible (for I/O rates). Saying the tab is hidden stops that, so what
 * changes on the page afterwards came through the event stream.
 */
async function setPolling(on: boolean): Promise<void> {
  await page.evaluate((visible) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (visible ? 'visible' : 'hidden') });
  }, on);
}

function skip(t: TestContext): boolean {
  if (!requireChromium(t, ...DISK_PEERS)) return true;
  assert.ok(ready, 'set-up did not run');
  return false;
}

// ---------------------------------------------------------------------------

describe('the dashboard in a browser', () => {
  test('log-in: a wrong token is refused with a message; the right one opens the clients page', async (t) => {
    if (skip(t)) return;
    t.diagnostic(`REST API mounted by startServer(); dashboard mounted by ${dashboardMountedBy}`);
    const api = await fetch(`${http}/api/v1/status`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(api.status, 200, 'startServer() serves the REST API');
    await page.goto(`${http}/`);
    await page.getByRole('heading', { name: 'Log in', level: 1 }).waitFor();
    assert.equal(page.url(), `${http}/ui/#/login`, 'GET / leads to the dashboard, which asks for the token');
    await saveScreenshot(t, page, 'login');
    const input = page.getByLabel('API token');
    await input.fill('f'.repeat(64));
    await page.getByRole('button', { name: 'Log in' }).click();
    await waitForText(page, '#login-error', 'The server refused this token.');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('diskless.token')), null);

    await input.fill(token);
    await page.getByRole('button', { name: 'Log in' }).click();
    await waitForAttribute(page, 'main', 'data-page', 'clients');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('diskless.token')), token, 'kept for this tab');
    await waitForAttribute(page, '#connection', 'data-state', 'live');
    await waitForText(page, '#connection', 'Live updates: connected');
    watch.assertClean();
  });

  test('the clients page: one row per client with image, mode, state and overlay', async (t) => {
    if (skip(t)) return;
    await go('#/clients', 'clients');
    await page.getByRole('heading', { name: 'Clients', level: 1 }).waitFor();
    const headers = await page.locator('table.clients thead th').allTextContents();
    assert.deepEqual(headers, ['MAC', 'Name', 'Address', 'Image', 'Mode', 'State', 'Overlay', 'I/O']);
    for (const mac of [A, B, C, M]) await page.locator(row(mac)).waitFor();
    assert.equal(await page.locator(row(A)).getAttribute('data-state'), 'off');
    const a = await page.locator(row(A)).textContent();
    assert.match(a!, /pc-01/);
    assert.match(a!, /deb \(next boot: v1\)/);
    assert.match(a!, /ephemeral/);
    assert.match(await page.locator(row(M)).textContent() ?? '', /persistent maintenance/);
    assert.match(await page.locator('.summary').textContent() ?? '', /^4 clients: 0 up, 0 booting, 0 down, 4 off\.$/);
    await saveScreenshot(t, page, 'clients');
    watch.assertClean();
  });

  test('the clients page follows a boot live: each step, the overlay, I/O rates, up', async (t) => {
    if (skip(t)) return;
    await go('#/clients', 'clients');
    await markPage();
    await setPolling(false);
    const state = `${row(A)} .state`;

    const boot = await fetchScript(A);
    await waitForText(page, state, 'booting: iPXE script');
    assert.equal(await page.locator(row(A)).getAttribute('data-state'), 'booting');
    await waitForText(page, row(A), 'deb v1');
    await waitForText(page, row(A), '127.0.0.1');

    assert.ok(await fetchFile(boot.kernel) > 0);
    await waitForText(page, state, 'booting: kernel');
    assert.ok(await fetchFile(boot.initrd) > 0);
    await waitForText(page, state, 'booting: initramfs');

    const root = await connectRoot(A);
    await waitForText(page, state, 'booting: root connected');
    // The machine writes while the page watches: its overlay grows and a write rate shows
    // (rates are not events: the page re-reads them every few seconds).
    await setPolling(true);
    let writing = true;
    const writer = (async () => {
      for (let i = 0; i < 200 && writing; i++) {
        await root.write(SCRIBBLE_AT + (i % 8) * 64 * 1024, Buffer.alloc(64 * 1024, i & 0xff));
        await sleep(50);
      }
    })();
    try {
      await waitForText(page, row(A), /write [1-9][0-9.]* (B|KiB|MiB)\/s/, 20_000);
      await waitForText(page, `${row(A)} td:nth-child(7)`, /^[1-9][0-9.]* (KiB|MiB) \(no quota\)$/, 15_000);
    } finally {
      writing = false;
      await writer;
      // From here on, every change on the page comes through the event stream.
      await setPolling(false);
    }
    assert.equal((await root.request(COMMANDS.NBD_CMD_FLUSH, 0, 0)).error, 0);
    await saveScreenshot(t, page, 'clients-booting');

    await reportUp(boot.up);
    await waitForAttribute(page, row(A), 'data-state', 'up');
    await waitForText(page, state, 'up for');
    await waitForText(page, '.summary', '1 up');
    await assertNotReloaded();
    await saveScreenshot(t, page, 'clients-live');
    watch.assertClean();
  });

  test('the client page: the boot timeline with each step\'s time and the time since power-on', async (t) => {
    if (skip(t)) return;
    // Any spelling of the MAC leads to the client (and its live updates).
    await go(`#/clients/${A.replace(/:/g, '-').toUpperCase()}`, 'client');
    await page.getByRole('heading', { name: 'Client pc-01', level: 1 }).waitFor();
    const table = 'table.timeline';
    await page.locator(table).first().waitFor();
    const rows = await page.locator(`${table} >> nth=0`).locator('tbody tr').evaluateAll((trs) => trs.map((tr) => ({
      key: (tr as HTMLElement).dataset.milestone, status: (tr as HTMLElement).dataset.status, cells: [...tr.children].map((c) => c.textContent ?? ''),
    })));
    assert.deepEqual(rows.map((r) => r.key), ['dhcp', 'tftp', 'script', 'kernel', 'initrd', 'root', 'up']);
    // DHCP is off in this test and iPXE was not fetched over TFTP: steps before the script are skipped.
    assert.deepEqual(rows.map((r) => r.status), ['skipped', 'skipped', 'done', 'done', 'done', 'done', 'done']);
    for (const r of rows.slice(2)) {
      assert.match(r.cells[2]!, /\d{2}:\d{2}:\d{2}/, `${r.key} has a time: ${r.cells.join(' | ')}`);
      assert.match(r.cells[3]!, /^\+\d/, `${r.key} has the time since power-on: ${r.cells.join(' | ')}`);
    }
    assert.equal(rows[2]!.cells[3], '+0 ms', 'the script is the first step this server saw');
    assert.match(rows[2]!.cells[4]!, /^from 127\.0\.0\.1; deb v1$/);
    assert.match(rows[3]!.cells[4]!, /from 127\.0\.0\.1; \d+(\.\d)? (B|KiB)/);
    assert.match(rows[5]!.cells[4]!, /from 127\.0\.0\.1; deb v1/);
    await waitForText(page, 'section[aria-labelledby="summary-h"]', 'up for');
    const facts = await page.locator('dl.facts').textContent();
    assert.match(facts!, /MAC52:54:00:d5:00:01/);
    assert.match(facts!, /Next boot runsdeb v1 \(the current version\)/);
    await saveScreenshot(t, page, 'client');

    // A new boot (the machine restarts): the timeline starts again, live.
    await markPage();
    const boot = await fetchScript(A);
    await waitForAttribute(page, `${table} tr[data-milestone="kernel"]`, 'data-status', 'pending');
    await waitForAttribute(page, `${table} tr[data-milestone="script"]`, 'data-status', 'current');
    await waitForText(page, 'section[aria-labelledby="summary-h"] .state', 'booting: iPXE script');
    await page.getByRole('heading', { name: 'Earlier boots' }).waitFor();
    assert.match(await page.locator('details summary').last().textContent() ?? '', /came up in/);
    await fetchFile(boot.kernel);
    await waitForAttribute(page, `${table} tr[data-milestone="kernel"]`, 'data-status', 'current');
    await assertNotReloaded();
    watch.assertClean();
  });

  test('text from the network is shown as text, never run as HTML', async (t) => {
    if (skip(t)) return;
    await go(`#/clients/${A}`, 'client');
    // What a TFTP request for a hostile file name would leave in the timeline.
    server.catalogue.store.events.record({ mac: A, step: 'tftp', bootId: null, detail: { file: HOSTILE, address: '127.0.0.1' }, timeMs: Date.now() });
    await waitForText(page, 'table.timeline tr[data-milestone="tftp"]', HOSTILE);
    // A step seen late does not move the state back: it is the furthest step reached.
    await waitForText(page, 'section[aria-labelledby="summary-h"] .state', 'booting: kernel');
    assert.equal(await page.locator('main img').count(), 0, 'no element was made from the text');
    assert.equal(await page.evaluate(() => (window as unknown as { __injected?: number }).__injected), undefined);
    watch.assertClean();
  });

  test('client actions: maintenance, settings, reset and delete take effect in the catalogue', async (t) => {
    if (skip(t)) return;
    const c = server.catalogue;
    await go(`#/clients/${A}`, 'client');
    await page.getByRole('heading', { name: 'Actions' }).waitFor();
    await saveScreenshot(t, page, 'client-actions');

    await page.getByRole('button', { name: 'Turn maintenance on' }).click();
    await waitForText(page, 'main .outcome', 'Maintenance is on');
    assert.equal(c.showClient(A).maintenance, true);
    await page.getByRole('button', { name: 'Turn maintenance off' }).click();
    await waitForText(page, 'main .outcome', 'Maintenance is off');
    assert.equal(c.showClient(A).maintenance, false);

    await page.getByLabel('Mode', { exact: true }).selectOption('persistent');
    await page.getByLabel('Version', { exact: true }).selectOption('1');
    await page.getByLabel('Overlay quota (MiB)', { exact: true }).fill('64');
    await page.getByLabel('Name', { exact: true }).fill('pc-01b');
    await page.getByRole('button', { name: 'Save settings' }).click();
    await waitForText(page, 'main .outcome', 'Saved: pinnedVersion, mode, name, quotaBytes changed');
    let v = c.showClient(A);
    assert.deepEqual([v.mode, v.pinnedVersion, v.quotaBytes, v.name], ['persistent', 1, 64 * MiB, 'pc-01b']);
    await waitForText(page, 'dl.facts', /Overlay.*of 64 MiB/);
    // Back, through the same form: no pin, no quota, no name change.
    await page.getByLabel('Version', { exact: true }).selectOption('');
    await page.getByLabel('Overlay quota (MiB)', { exact: true }).fill('');
    await page.getByRole('button', { name: 'Save settings' }).click();
    await waitForText(page, 'main .outcome', 'Saved: pinnedVersion, quotaBytes changed');
    v = c.showClient(A);
    assert.deepEqual([v.mode, v.pinnedVersion, v.quotaBytes, v.name], ['persistent', null, null, 'pc-01b']);

    // A refusal shows the API's message and changes nothing.
    await page.getByLabel('Name', { exact: true }).fill('-bad name');
    await page.getByLabel('Name', { exact: true }).evaluate((el) => (el as HTMLInputElement).removeAttribute('pattern'));
    await page.getByRole('button', { name: 'Save settings' }).click();
    await waitForText(page, 'main .outcome[role="alert"]', 'Save settings failed:');
    assert.equal(c.showClient(A).name, 'pc-01b');

    assert.ok(c.showClient(A).overlay, 'it has an overlay before the reset');
    await page.getByRole('button', { name: 'Reset overlay' }).click();
    await waitForText(page, 'main .outcome', 'Reset: its overlay was discarded');
    v = c.showClient(A);
    assert.equal(v.overlay, null);
    assert.equal(v.state, 'new');
    await waitForText(page, 'section[aria-labelledby="summary-h"] .state', 'off');

    await go(`#/clients/${C}`, 'client');
    await page.getByRole('button', { name: 'Delete client' }).click();
    await waitForText(page, 'main', `There is no client ${C}`);
    assert.throws(() => c.showClient(C), /STATE_NOT_FOUND|no client/i);
    await go('#/clients', 'clients');
    assert.equal(await page.locator(row(C)).count(), 0);
    watch.assertClean();
  });

  test('unknown machines: one that tries to boot appears live and is adopted', async (t) => {
    if (skip(t)) return;
    await go('#/unknown', 'unknown');
    await page.getByRole('heading', { name: 'Unknown machines', level: 1 }).waitFor();
    await markPage();
    const r = await fetch(`${http}/ipxe/${U}`);
    assert.equal(r.status, 200);
    await page.locator(row(U)).waitFor({ timeout: 15_000 });
    await assertNotReloaded();
    assert.match(await page.locator(row(U)).textContent() ?? '', /52:54:00:d5:00:99.*1/);
    await saveScreenshot(t, page, 'unknown');

    await page.getByLabel(`${U}: Image`).selectOption('deb');
    await page.getByLabel(`${U}: Mode`).selectOption('persistent');
    await page.getByLabel(`${U}: Name (optional)`).fill('lab-9');
    await page.getByRole('button', { name: `Adopt ${U}` }).click();
    await waitForText(page, 'main .outcome', `Adopted ${U} as a persistent client of deb`);
    const v = server.catalogue.showClient(U);
    assert.deepEqual([v.image, v.mode, v.name], ['deb', 'persistent', 'lab-9']);
    assert.ok(!server.catalogue.store.unknownMachines.list().some((m) => m.mac === U), 'it left the unknown machines');
    await page.locator(row(U)).waitFor({ state: 'detached' });
    // Its tries from before it was adopted are not a boot of the client.
    await go('#/clients', 'clients');
    await waitForAttribute(page, row(U), 'data-state', 'off');
    watch.assertClean();
  });

  test('images: versions with their kernels and clients; publish and rollback; the stale badge', async (t) => {
    if (skip(t)) return;
    const c = server.catalogue;
    await fetchScript(B);
    await go('#/images', 'images');
    await page.getByRole('heading', { name: 'deb', level: 2 }).waitFor();
    const v1 = 'section[data-image="deb"] tr[data-version="1"]';
    const v2 = 'section[data-image="deb"] tr[data-version="2"]';
    const cells = async (sel: string): Promise<string[]> => page.locator(`${sel} > *`).allTextContents();
    await waitForText(page, v1, 'pc-02');
    let one = await cells(v1);
    assert.equal(one[0], 'v1');
    assert.equal(one[1], 'current');
    assert.equal(one[4], KERNEL);
    assert.equal(one[5], `/boot/vmlinuz-${KERNEL}`);
    assert.equal(one[6], 'initramfs-tools');
    assert.equal(one[7], 'Debian GNU/Linux 12 (bookworm)');
    assert.equal(one[8], 'pc-02', 'B runs v1');
    assert.equal((await cells(v2))[1], 'held');
    await saveScreenshot(t, page, 'images');

    await page.getByRole('button', { name: 'Publish deb version 2' }).click();
    await waitForText(page, 'main .outcome', 'deb version 2 is published and current');
    assert.equal(c.showImage('deb').image.currentVersion, 2);
    await waitForText(page, `${v2} td:nth-child(2)`, 'current');
    one = await cells(v1);
    assert.equal(one[1], 'published');
    assert.equal(c.showClient(B).stale, true);

    await go('#/clients', 'clients');
    await waitForText(page, row(B), 'stale');
    assert.match(await page.locator(`${row(B)} .image`).textContent() ?? '', /deb v1 stale: runs version 1, its next boot runs version 2/);
    await saveScreenshot(t, page, 'clients-stale');

    await go('#/images', 'images');
    await page.getByRole('button', { name: 'Roll back to the previous version' }).click();
    await waitForText(page, 'main .outcome', 'deb: current version 2 → 1');
    assert.equal(c.showImage('deb').image.currentVersion, 1);
    assert.equal(c.showClient(B).stale, false);
    await waitForText(page, `${v1} td:nth-child(2)`, 'current');
    watch.assertClean();
  });

  test('commit: a maintenance client\'s draft becomes a held version', async (t) => {
    if (skip(t)) return;
    const c = server.catalogue;
    // The maintenance client boots, writes to its draft and shuts down.
    const boot = await fetchScript(M);
    await fetchFile(boot.kernel);
    const root = await connectRoot(M);
    await root.write(SCRIBBLE_AT, Buffer.alloc(4096, 0x5a));
    assert.equal((await root.request(COMMANDS.NBD_CMD_FLUSH, 0, 0)).error, 0);
    root.close();
    await until(() => !server.resolver.overlayRefs().has(M), 10_000, 'the draft to be released');
    assert.equal(c.showClient(M).overlay?.draft, true);

    await go('#/images', 'images');
    const item = `ul.drafts li[data-mac="${M}"]`;
    await waitForText(page, item, 'draft on v1');
    await page.getByRole('button', { name: `Commit the draft of ${M}` }).click();
    await waitForText(page, 'main .outcome', /Committed the draft of 52:54:00:d5:00:0f as deb version 3, held/, 60_000);
    const v3 = c.showImage('deb').versions.find((v) => v.version === 3);
    assert.ok(v3, 'version 3 exists');
    assert.equal(v3.published, false);
    assert.equal(v3.bootInfo?.origin, 'commit');
    assert.equal(v3.bootInfo?.committedFrom, M);
    assert.equal(c.showClient(M).maintenance, false);
    await waitForText(page, 'section[data-image="deb"] tr[data-version="3"]', 'held');
    assert.equal(await page.locator(item).count(), 0);
    await saveScreenshot(t, page, 'images-committed');
    watch.assertClean();
  });

  test('the stream reconnects after the connection drops and catches up with what happened meanwhile', async (t) => {
    if (skip(t)) return;
    await go('#/clients', 'clients');
    await markPage();
    await waitForAttribute(page, '#connection', 'data-state', 'live');
    assert.equal(await page.locator(row(A)).getAttribute('data-state'), 'off', 'A was reset');
    // No periodic re-read: while the stream is cut, nothing may bring the news.
    await setPolling(false);
    // The connection drops, and reconnecting fails for a while.
    const stream = '**/api/v1/events/stream*';
    await page.route(stream, (r) => void r.abort('connectionrefused'));
    try {
      httpApp!.server.closeAllConnections();
      await waitForAttribute(page, '#connection', 'data-state', 'retrying');
      await waitForText(page, '#connection', /disconnected \(.+\); retrying in \d+ s/);
      // A re-read the page had scheduled before the cut (an event just before
      // it) may still run: wait until the page has stopped reading.
      const reads = (): Promise<number> => page.evaluate(() => Number(document.querySelector('main')?.dataset.refreshed ?? 0));
      let before = await reads();
      for (;;) {
        await sleep(1000);
        const now = await reads();
        if (now === before) break;
        before = now;
      }
      // Meanwhile A boots; the page cannot hear of it.
      await fetchScript(A);
      await sleep(1500);
      assert.equal(await reads(), before, 'the page read nothing while the stream was cut');
      assert.equal(await page.locator(row(A)).getAttribute('data-state'), 'off');
    } finally {
      await page.unroute(stream);
    }
    await setPolling(true);
    // Once back, the page reads everything again.
    await waitForAttribute(page, '#connection', 'data-state', 'live', 45_000);
    await waitForAttribute(page, row(A), 'data-state', 'booting');
    await waitForText(page, `${row(A)} .state`, 'booting: iPXE script');
    await assertNotReloaded();
    // What the cut itself logs is not a fault of the page.
    const cut = /ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|ERR_INCOMPLETE_CHUNKED_ENCODING|ERR_FAILED/;
    for (let i = watch.problems.length - 1; i >= 0; i--) if (cut.test(watch.problems[i]!)) watch.problems.splice(i, 1);
    watch.assertClean();
  });

  test('the pure parts in the page: the event-stream parser and the state of a boot', async (t) => {
    if (skip(t)) return;
    const out = await page.evaluate(async () => {
      const { SseParser } = await import('/ui/stream.js' as string);
      const { clientStatus, groupByBoot, BOOT_STALL_MS } = await import('/ui/model.js' as string);
      const stream = '\uFEFFretry: 2000\r\n: comment\r\nid: 7\r\nevent: boot-event\r\ndata: {"a":\r\ndata: 1}\r\n\r\ndata: x\n\nevent: client\rdata: {"b":2}\r\r';
      const whole = new SseParser().push(stream).filter((e: { comment?: string }) => e.comment === undefined);
      // The same bytes split at every offset give the same events.
      const splits: string[] = [];
      for (let i = 0; i <= stream.length; i++) {
        const p = new SseParser();
        const evs = [...p.push(stream.slice(0, i)), ...p.push(stream.slice(i))].filter((e: { comment?: string }) => e.comment === undefined);
        if (JSON.stringify(evs) !== JSON.stringify(whole)) splits.push(`split at ${i}: ${JSON.stringify(evs)}`);
      }
      const retry = (() => { const p = new SseParser(); p.push(stream); return p.retry; })();

      const now = Date.parse('2026-01-01T12:00:00Z');
      const at = (s: number): string => new Date(now - s * 1000).toISOString();
      const ev = (step: string, s: number, bootId: string | null, detail: unknown = null): unknown => ({ id: 1, mac: 'm', bootId, step, timeAt: at(s), detail });
      const client = (over: Record<string, unknown>): unknown => ({ state: 'booting', bootId: 'b2', bootStartedAt: at(60), ...over });
      const boots = groupByBoot([ev('script', 300, 'b1'), ev('os-up', 250, 'b1'), ev('dhcp-discover', 62, null), ev('dhcp-ack', 61, null), ev('script', 60, 'b2'), ev('kernel', 50, 'b2')]);
      const st = (c: unknown, b: unknown, n = now): { kind: string; step: string | null; reason: string | null } => clientStatus(c, b, n);
      return {
        whole, splits, retry,
        boots: boots.map((b: { bootId: string | null; events: unknown[]; up: boolean }) => [b.bootId, b.events.length, b.up]),
        booting: st(client({}), boots),
        // A late TFTP retry after the kernel: still at the kernel.
        lateStep: st(client({}), groupByBoot([ev('script', 60, 'b2'), ev('kernel', 50, 'b2'), ev('tftp', 40, null)])),
        stalled: st(client({}), boots, now + BOOT_STALL_MS),
        up: st(client({ state: 'up' }), groupByBoot([ev('script', 60, 'b2'), ev('os-up', 5, 'b2')])),
        rebooting: st(client({ state: 'up' }), groupByBoot([ev('script', 60, 'b2'), ev('os-up', 50, 'b2'), ev('dhcp-discover', 3, null)])),
        reset: st(client({ state: 'new', bootId: null, bootStartedAt: null }), boots),
        notReady: st(client({ bootId: 'b2' }), groupByBoot([ev('script', 60, 'b2'), ev('dhcp-discover', 5, null), ev('script', 4, null, { notReady: 'no published version' })])),
        off: st(client({ state: 'new', bootId: null, bootStartedAt: null }), []),
        // Tries from before it was adopted (an unknown machine's script requests) are not its boot.
        adopted: st(client({ state: 'new', bootId: null, bootStartedAt: null, createdAt: at(10) }), groupByBoot([ev('script', 20, null, { unknown: true })])),
        poweredOnAfterAdoption: st(client({ state: 'new', bootId: null, bootStartedAt: null, createdAt: at(10) }), groupByBoot([ev('script', 20, null, { unknown: true }), ev('dhcp-discover', 2, null)])),
      };
    });
    assert.deepEqual(out.whole, [
      { type: 'boot-event', data: '{"a":\n1}', id: '7' },
      { type: 'message', data: 'x', id: '7' },
      { type: 'client', data: '{"b":2}', id: '7' },
    ]);
    assert.deepEqual(out.splits, []);
    assert.equal(out.retry, 2000);
    assert.deepEqual(out.boots, [['b1', 2, true], ['b2', 4, false]]);
    assert.deepEqual([out.booting.kind, out.booting.step], ['booting', 'kernel']);
    assert.deepEqual([out.lateStep.kind, out.lateStep.step], ['booting', 'kernel']);
    assert.deepEqual([out.stalled.kind, out.stalled.reason], ['down', 'stalled after kernel']);
    assert.equal(out.up.kind, 'up');
    assert.deepEqual([out.rebooting.kind, out.rebooting.step], ['booting', 'dhcp-discover']);
    assert.equal(out.reset.kind, 'off');
    assert.deepEqual([out.notReady.kind, out.notReady.reason], ['down', 'cannot boot yet: no published version']);
    assert.equal(out.off.kind, 'off');
    assert.equal(out.adopted.kind, 'off');
    assert.deepEqual([out.poweredOnAfterAdoption.kind, out.poweredOnAfterAdoption.step], ['booting', 'dhcp-discover']);
    watch.assertClean();
  });

  test('a token the server refuses sends back to the log-in form with a message', async (t) => {
    if (skip(t)) return;
    await go('#/images', 'images');
    await page.evaluate(() => sessionStorage.setItem('diskless.token', '0'.repeat(64)));
    await page.reload();
    await page.getByRole('heading', { name: 'Log in', level: 1 }).waitFor();
    await waitForText(page, '#login-error', 'The server refused the token (the bearer token is wrong). Log in again.');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('diskless.token')), null, 'the refused token is forgotten');
    assert.equal(await page.getAttribute('#connection', 'data-state'), 'stopped');
    await saveScreenshot(t, page, 'login-refused');
    // Logging in again returns to the page that was open.
    await page.getByLabel('API token').fill(token);
    await page.getByRole('button', { name: 'Log in' }).click();
    await waitForAttribute(page, 'main', 'data-page', 'images');
    watch.assertClean();
  });
});
