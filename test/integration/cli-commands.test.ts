/**
 * The `diskless` command as a user runs it: bin/diskless in a child
 * process, with a temporary data directory. Exit statuses (0 ok, 1 failed,
 * 2 usage), messages, --help everywhere, --json output.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { COMMANDS } from '../../src/cli/commands.js';

const BIN = fileURLToPath(new URL('../../../bin/diskless', import.meta.url));
const DOCS = fileURLToPath(new URL('../../../docs/configuration.md', import.meta.url));

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

let dir: string;
let data: string;

const ENV = { ...process.env, DISKLESS_LOG_LEVEL: 'warn' };

function run(...args: string[]): Result {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: dir, encoding: 'utf8', timeout: 30_000, env: ENV });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Like run(), without blocking, so independent invocations can overlap. */
function runAsync(...args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: dir, encoding: 'utf8', timeout: 30_000, env: ENV }, (err, stdout, stderr) => {
      const status = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ status, stdout, stderr });
    });
  });
}

/** Runs `fn` on every item, `width` at a time (the machine is shared; node start-up dominates). */
async function pool<T, R>(items: readonly T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  }));
  return out;
}

/** Runs a management command on the test data directory with --json and parses its output. */
function json(...args: string[]): { status: number | null; value: any; stderr: string } {
  const r = run(...args, '--data-dir', data, '--json');
  let value: unknown;
  try {
    value = JSON.parse(r.stdout);
  } catch {
    assert.fail(`not JSON (status ${r.status}): ${r.stdout}\n${r.stderr}`);
  }
  return { status: r.status, value, stderr: r.stderr };
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-cli-'));
  data = join(dir, 'data');
  writeFileSync(join(dir, 'disk.raw'), Buffer.alloc(2 * 1024 * 1024, 0x5a));
  writeFileSync(join(dir, 'odd.raw'), Buffer.alloc(1000, 1));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('usage errors exit 2 with a message', () => {
  const cases: [string[], RegExp][] = [
    [[], /Commands:/],
    [['frobnicate'], /unknown command "frobnicate"/],
    [['image'], /"image" needs a subcommand; one of: add, import, build, list, show, publish, rollback, delete, commit\nusage: diskless image add /],
    [['client', 'explode', 'x'], /unknown command "client explode"/],
    [['image', 'add', 'debian12'], /missing FILE/],
    [['image', 'list', 'extra'], /unexpected argument "extra"/],
    [['image', 'list', '--colour'], /Unknown option '--colour'/],
    [['image', 'add', 'Bad Name', 'disk.raw'], /not an image name/],
    [['client', 'add', '52:54:00:00:00:01'], /--image NAME is required/],
    [['client', 'add', 'not-a-mac', '--image', 'x'], /"not-a-mac" is not a MAC address/],
    [['client', 'add', '52:54:00:00:00:01', '--image', 'x', '--mode', 'sometimes'], /--mode must be ephemeral or persistent/],
    [['client', 'add', '52:54:00:00:00:01', '--image', 'x', '--pin', 'latest'], /--pin must be a version number/],
    [['client', 'show', '11:22'], /not a MAC address/],
    [['export'], /missing FILE/],
    [['export', 'disk.raw', '--read-only', '--cow', 'ov'], /--read-only and --cow do not go together/],
    [['export', 'disk.raw', '--listen', 'nowhere'], /--listen: "nowhere" is not HOST:PORT/],
    [['export', 'disk.raw', '--listen', '127.0.0.1:99999'], /is not HOST:PORT/],
    [['help', 'nothing'], /no command "nothing"/],
  ];
  test(`${cases.length} wrong command lines`, async () => {
    const results = await pool(cases, 4, ([args]) => runAsync(...args));
    cases.forEach(([args, message], i) => {
      const r = results[i]!;
      assert.equal(r.status, 2, `diskless ${args.join(' ')}: ${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout + r.stderr, message, `diskless ${args.join(' ')}`);
    });
  });
});

describe('--help', () => {
  test('every command has it, with its usage and options, exit 0', async () => {
    const results = await pool(COMMANDS, 4, (c) => runAsync(...c.path, '--help'));
    for (const [i, c] of COMMANDS.entries()) {
      const r = results[i]!;
      assert.equal(r.status, 0, c.path.join(' '));
      assert.ok(r.stdout.startsWith(`Usage: diskless ${c.usage}`), r.stdout);
      assert.match(r.stdout, /-h, --help/);
      if (c.json) assert.match(r.stdout, /--json/);
    }
    const top = run('--help');
    assert.equal(top.status, 0);
    for (const c of COMMANDS) assert.ok(top.stdout.includes(`diskless ${c.usage}`), c.usage);
    assert.equal(run('help', 'client').status, 0);
  });
});

describe('catalogue commands', () => {
  test('read-only commands on a data directory that does not exist do not create it', () => {
    const r = json('image', 'list');
    assert.equal(r.status, 0);
    assert.deepEqual(r.value, []);
    assert.ok(!existsSync(data));
    const text = run('client', 'list', '--data-dir', data);
    assert.match(text.stdout, /no clients/);
  });

  test('image add, list, show', () => {
    const added = json('image', 'add', 'debian12', 'disk.raw', '--raw');
    assert.equal(added.status, 0, added.stderr);
    assert.equal(added.value.image, 'debian12');
    assert.equal(added.value.version, 1);
    assert.equal(added.value.published, true);
    assert.equal(added.value.size, 2 * 1024 * 1024);
    assert.match(added.value.sha256, /^[0-9a-f]{64}$/);
    assert.match(added.value.createdAt, /^\d{4}-\d\d-\d\dT/);
    assert.equal(json('image', 'add', 'debian12', 'disk.raw', '--raw').value.version, 2);
    const list = json('image', 'list').value;
    assert.deepEqual(list.map((i: { name: string; currentVersion: number; versions: number }) => [i.name, i.currentVersion, i.versions]), [['debian12', 2, 2]]);
    const show = json('image', 'show', 'debian12').value;
    assert.deepEqual(show.versions.map((v: { version: number }) => v.version), [1, 2]);
    const text = run('image', 'show', 'debian12', '--data-dir', data);
    assert.match(text.stdout, /^2 \*\s+2\.0 MiB\s+yes/m);
  });

  test('failures exit 1 with the error code; --json carries it too', () => {
    const missing = json('image', 'add', 'debian12', 'no-such.raw');
    assert.equal(missing.status, 1);
    assert.equal(missing.value.error.code, 'APP_IMAGE_FILE_INVALID');
    assert.match(missing.stderr, /no-such\.raw.*\[APP_IMAGE_FILE_INVALID\]/);
    const odd = run('image', 'add', 'debian12', 'odd.raw', '--data-dir', data);
    assert.equal(odd.status, 1);
    assert.match(odd.stderr, /1000 bytes; a raw disk image is a positive multiple of 512 bytes/);
    assert.equal(json('image', 'show', 'ubuntu').value.error.code, 'STATE_NOT_FOUND');
    const notDir = run('image', 'add', 'x', 'disk.raw', '--raw', '--data-dir', 'disk.raw');
    assert.equal(notDir.status, 1);
    assert.match(notDir.stderr, /cannot use the data directory .*disk\.raw.*\[APP_DATA_DIR\]/);
    assert.equal(json('client', 'add', '52:54:00:00:00:99', '--image', 'ubuntu').value.error.code, 'STATE_NOT_FOUND');
  });

  test('client add, list, show, new-boot, reset', () => {
    const a = json('client', 'add', '52-54-00-AA-00-01', '--image', 'debian12', '--name', 'pc-01');
    assert.equal(a.status, 0, a.stderr);
    assert.equal(a.value.mac, '52:54:00:aa:00:01');
    assert.equal(a.value.mode, 'ephemeral');
    const b = json('client', 'add', '52:54:00:aa:00:02', '--image', 'debian12', '--mode', 'persistent', '--pin', '1');
    assert.equal(b.value.pinnedVersion, 1);
    const dup = json('client', 'add', '52:54:00:aa:00:01', '--image', 'debian12');
    assert.equal(dup.status, 1);
    assert.equal(dup.value.error.code, 'STATE_CONFLICT');

    assert.deepEqual(json('client', 'list').value.map((c: { mac: string }) => c.mac), ['52:54:00:aa:00:01', '52:54:00:aa:00:02']);
    const before = json('client', 'show', '52:54:00:aa:00:01').value;
    assert.equal(before.exportName, null);
    assert.equal(before.state, 'new');

    const boot1 = json('client', 'new-boot', '52:54:00:aa:00:01').value;
    assert.match(boot1.exportName, /^525400aa0001-[0-9a-f]{32}$/);
    assert.equal(boot1.version, 2);
    const shown = json('client', 'show', '52:54:00:aa:00:01').value;
    assert.equal(shown.exportName, boot1.exportName);
    assert.equal(shown.state, 'booting');
    assert.equal(shown.overlay.version, 2);
    const boot2 = json('client', 'new-boot', '52:54:00:aa:00:01').value;
    assert.notEqual(boot2.exportName, boot1.exportName);
    assert.equal(boot2.overlayReset, true, 'ephemeral');
    assert.equal(json('client', 'new-boot', '52:54:00:aa:00:02').value.version, 1, 'pinned');

    const text = run('client', 'show', '52:54:00:aa:00:01', '--data-dir', data);
    assert.match(text.stdout, new RegExp(`export:\\s+${boot2.exportName}`));

    const reset = json('client', 'reset', '52:54:00:aa:00:01').value;
    assert.equal(reset.client.exportName, undefined);
    assert.equal(reset.client.bootToken, null);
    assert.ok(reset.discarded);
    assert.equal(json('client', 'show', '52:54:00:aa:00:01').value.exportName, null);
    assert.equal(json('client', 'reset', '52:54:00:aa:00:77').value.error.code, 'STATE_NOT_FOUND');
  });
});

describe('config check', () => {
  test('prints every problem with its path, exit 1; a good file exits 0', () => {
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ nbd: { port: 'x', limits: { maxPayload: 1 } }, dhcp: { interfaces: [{ name: 'eth0', mode: 'full' }] }, tftpp: {} }));
    const r = run('config', 'check', '--config', 'bad.json');
    assert.equal(r.status, 1);
    const lines = r.stdout.trim().split('\n');
    assert.deepEqual(lines, [
      'tftpp: unknown option; did you mean "tftp"?',
      'nbd.port: must be an integer 0-65535, got "x"',
      'nbd.limits.maxPayload: must be an integer 512-268435456, got 1',
      'dhcp.interfaces[0].subnet: is required in mode "full"',
      'dhcp.interfaces[0].pool: is required in mode "full"',
    ]);
    assert.match(r.stderr, /5 problems/);
    const j = run('config', 'check', '--config', 'bad.json', '--json');
    assert.equal(JSON.parse(j.stdout).problems.length, 5);

    writeFileSync(join(dir, 'good.json'), JSON.stringify({ nbd: { port: 10810 } }));
    const ok = run('config', 'check', '--config', 'good.json', '--json');
    assert.equal(ok.status, 0);
    assert.equal(JSON.parse(ok.stdout).config.nbd.port, 10810);
    const missing = run('config', 'check', '--config', 'none.json');
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /\[CONFIG_NOT_FOUND\]/);
    writeFileSync(join(dir, 'broken.json'), '{"nbd": ');
    assert.match(run('config', 'check', '--config', 'broken.json').stderr, /not valid JSON.*\[CONFIG_UNREADABLE\]/);
  });

  test('a management command with a bad configuration file fails with its problems', () => {
    const r = run('image', 'list', '--config', 'bad.json');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /nbd\.port: must be an integer/);
  });

  test('config docs prints docs/configuration.md', () => {
    const r = run('config', 'docs');
    assert.equal(r.status, 0);
    assert.equal(r.stdout, readFileSync(DOCS, 'utf8'));
  });
});
