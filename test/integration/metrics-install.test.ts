/**
 * The systemd unit and scripts/install: the unit passes
 * `systemd-analyze verify`, and the install script, staged under a
 * temporary --destdir, writes a working wrapper, the unit with its
 * ExecStart adjusted, the docs and the directories, and nothing outside
 * the staging directory.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requirePeers } from '../helpers/peers.js';

const CHECKOUT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const UNIT = join(CHECKOUT, 'deploy', 'diskless.service');
const INSTALL = join(CHECKOUT, 'scripts', 'install');

function tempDir(t: TestContext, name: string): string {
  const d = mkdtempSync(join(tmpdir(), `diskless-${name}-`));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Runs systemd-analyze verify on a copy of `unitText` whose ExecStart binary is `binary` (which must exist). */
function verify(t: TestContext, unitText: string, from: string, binary: string): { status: number | null; output: string } {
  const dir = tempDir(t, 'unit');
  const path = join(dir, 'diskless.service');
  writeFileSync(path, unitText.replace(from, binary));
  const r = spawnSync('systemd-analyze', ['verify', path], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

function install(args: string[]): { status: number | null; output: string } {
  const r = spawnSync(INSTALL, args, { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

test('deploy/diskless.service passes systemd-analyze verify', (t) => {
  if (!requirePeers(t, 'systemd-analyze')) return;
  const text = readFileSync(UNIT, 'utf8');
  assert.match(text, /^ExecStart=\/usr\/local\/bin\/diskless serve --config \/etc\/diskless\/config\.json$/m);
  assert.match(text, /^Restart=on-failure$/m);
  assert.match(text, /^Type=simple$/m);
  // verify checks that ExecStart's binary exists: point it at the checkout's own.
  const r = verify(t, text, '/usr/local/bin/diskless', join(CHECKOUT, 'bin', 'diskless'));
  assert.equal(r.status, 0, r.output);
  assert.equal(r.output.trim(), '', 'no warning');

  // And verify does fail on a broken unit (the check can fail).
  const bad = verify(t, text.replace('Restart=on-failure', 'Restart=sometimes'), '/usr/local/bin/diskless', join(CHECKOUT, 'bin', 'diskless'));
  assert.match(bad.output, /restart specifier/i);
});

test('scripts/install stages the wrapper, unit, docs and directories under --destdir', (t) => {
  const dest = tempDir(t, 'destdir');
  const args = ['--skip-setup', '--destdir', dest, '--prefix', '/opt/dl', '--config', '/etc/dl/site.json', '--data-dir', '/srv/diskless'];
  const r = install(args);
  assert.equal(r.status, 0, r.output);
  assert.match(r.output, /no systemctl run/);

  const wrapper = join(dest, 'opt/dl/bin/diskless');
  assert.equal(statSync(wrapper).mode & 0o777, 0o755);
  assert.ok(readFileSync(wrapper, 'utf8').includes(`'${join(CHECKOUT, 'bin', 'diskless')}'`));
  const help = spawnSync(wrapper, ['--help'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /diskless serve/);

  const unitPath = join(dest, 'etc/systemd/system/diskless.service');
  const unit = readFileSync(unitPath, 'utf8');
  assert.equal(statSync(unitPath).mode & 0o777, 0o644);
  assert.match(unit, /^ExecStart=\/opt\/dl\/bin\/diskless serve --config \/etc\/dl\/site\.json --data-dir \/srv\/diskless$/m);
  assert.match(unit, /^Documentation=file:\/opt\/dl\/share\/doc\/diskless\/operations\.md$/m);
  assert.equal(unit.replace(/^(ExecStart|Documentation)=.*$/gm, ''), readFileSync(UNIT, 'utf8').replace(/^(ExecStart|Documentation)=.*$/gm, ''), 'only ExecStart and Documentation change');
  assert.equal(readFileSync(join(dest, 'opt/dl/share/doc/diskless/operations.md'), 'utf8'), readFileSync(join(CHECKOUT, 'docs/operations.md'), 'utf8'));
  assert.equal(statSync(join(dest, 'srv/diskless')).mode & 0o777, 0o750);
  assert.ok(statSync(join(dest, 'etc/dl')).isDirectory());
  assert.equal(existsSync(join(dest, 'etc/dl/site.json')), false, 'no configuration is written (missing means defaults)');

  // The staged unit verifies with its wrapper.
  if (requirePeers(t, 'systemd-analyze')) {
    const v = verify(t, unit, '/opt/dl/bin/diskless', wrapper);
    assert.equal(v.status, 0, v.output);
  }

  // A second run is the same; without --data-dir the unit leaves the configuration's dataDir alone.
  const again = install(['--skip-setup', '--destdir', dest]);
  assert.equal(again.status, 0, again.output);
  assert.match(readFileSync(unitPath, 'utf8'), /^ExecStart=\/usr\/local\/bin\/diskless serve --config \/etc\/diskless\/config\.json$/m);
  assert.ok(statSync(join(dest, 'var/lib/diskless')).isDirectory());
});

test('scripts/install refuses bad options and never starts a staged install', (t) => {
  const dest = tempDir(t, 'destdir');
  for (const [args, why] of [
    [['--skip-setup', '--destdir', dest, '--start'], /--start cannot be used with --destdir/],
    [['--skip-setup', '--destdir', dest, '--prefix', 'relative'], /must be absolute/],
    [['--skip-setup', '--destdir', dest, '--prefix', '/opt/with space'], /unsupported characters/],
    [['--skip-setup', '--destdir', dest, '--frobnicate'], /unknown option/],
    [['--skip-setup', '--destdir'], /needs a value/],
  ] as const) {
    const r = install([...args]);
    assert.notEqual(r.status, 0, `${args.join(' ')} should fail`);
    assert.match(r.output, why);
  }
  const help = install(['--help']);
  assert.equal(help.status, 0);
  assert.match(help.output, /--destdir/);
});
