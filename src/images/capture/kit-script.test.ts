import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NBD_KEEPER_FILES, readKitFile } from '../kit-files.js';
import { defaultKitPath, INCLUDE_TERMINATOR, isSafeServerUrl, KIT_PLACEHOLDER, loadKitTemplate, renderKit } from './kit-script.js';

test('the kit holds its placeholder once and renders with the server URL in place', async () => {
  const template = await loadKitTemplate();
  const kit = renderKit(template, 'http://10.77.0.1:8080');
  assert.ok(!kit.includes(KIT_PLACEHOLDER));
  assert.ok(kit.includes("KIT_DEFAULT_SERVER='http://10.77.0.1:8080'"));
  // Only the placeholder changed.
  assert.equal(kit.length, template.length - KIT_PLACEHOLDER.length + 'http://10.77.0.1:8080'.length);
});

test('only URLs that cannot break out of the shell quotes are accepted', () => {
  for (const ok of ['http://server', 'http://10.0.0.1:8080', 'https://[fd00::1]:8443', 'http://host.example/diskless']) {
    assert.ok(isSafeServerUrl(ok), ok);
  }
  for (const bad of ["http://x'; rm -rf /; '", 'http://x/$(id)', 'ftp://x', 'http://x/', 'http://a b', 'http://x`id`', 'http://x\n']) {
    assert.ok(!isSafeServerUrl(bad), JSON.stringify(bad));
    assert.throws(() => renderKit(`a ${KIT_PLACEHOLDER} b`, bad));
  }
});

test('a kit without exactly one placeholder is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dl-kit-'));
  try {
    writeFileSync(join(dir, 'none.sh'), '#!/bin/sh\n');
    writeFileSync(join(dir, 'two.sh'), `${KIT_PLACEHOLDER} ${KIT_PLACEHOLDER}\n`);
    await assert.rejects(loadKitTemplate(join(dir, 'none.sh')), /exactly once/);
    await assert.rejects(loadKitTemplate(join(dir, 'two.sh')), /exactly once/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the kit parses as POSIX sh and answers help and bad usage', () => {
  const path = defaultKitPath();
  for (const shell of ['sh', 'dash', 'bash', 'busybox']) {
    const args = shell === 'busybox' ? ['sh', '-n', path] : ['-n', path];
    const r = spawnSync(shell, args, { encoding: 'utf8' });
    if (r.error) continue; // that shell is not installed here
    assert.equal(r.status, 0, `${shell} -n: ${r.stderr}`);
  }
  const help = spawnSync('sh', [path, 'help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /prepare \[--nic IFACE\]/);
  assert.match(help.stdout, /capture \[--disk DEV\|FILE\]/);
  const bad = spawnSync('sh', [path, 'explode'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  const opt = spawnSync('sh', [path, 'capture', '--bogus'], { encoding: 'utf8' });
  assert.equal(opt.status, 1);
  assert.match(opt.stderr, /unknown option --bogus/);
  // Without a server URL (the raw template) capture says so rather than guessing.
  const noServer = spawnSync('sh', [path, 'capture', '--disk', '/dev/null'], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  assert.equal(noServer.status, 1);
  assert.match(noServer.stderr, /no server URL/);
});

test('the served kit carries the kit files it installs, byte for byte, and refuses one its here-document cannot hold', async () => {
  const kit = await loadKitTemplate();
  assert.doesNotMatch(kit, /^@DISKLESS_INCLUDE:/m, 'every include is resolved');
  for (const f of NBD_KEEPER_FILES) {
    const body = readKitFile(f.name).replace(/\n$/, '');
    assert.ok(kit.includes(`<<'${INCLUDE_TERMINATOR}'\n${body}\n${INCLUDE_TERMINATOR}\n`), `${f.name} is embedded as it is`);
  }
  // The embedded keeper, cut out of the rendered kit as prepare writes it, is the file itself.
  const dir = mkdtempSync(join(tmpdir(), 'dl-kit-'));
  try {
    const rendered = renderKit(kit, 'http://10.77.0.1:8080');
    const start = rendered.indexOf('kit_file_nbd_keeper() {\n');
    const endMark = `\n${INCLUDE_TERMINATOR}\n}\n`;
    const fn = rendered.slice(start, rendered.indexOf(endMark, start) + endMark.length);
    const out = spawnSync('sh', ['-c', `${fn}kit_file_nbd_keeper`], { encoding: 'utf8' });
    assert.equal(out.status, 0, out.stderr);
    assert.equal(out.stdout, readKitFile('diskless-nbd-keeper'));
    writeFileSync(join(dir, 'diskless-kit.sh'), `#!/bin/sh\nX='${KIT_PLACEHOLDER}'\ncat <<'${INCLUDE_TERMINATOR}'\n@DISKLESS_INCLUDE:evil@\n${INCLUDE_TERMINATOR}\n`);
    writeFileSync(join(dir, 'evil'), `echo one\n${INCLUDE_TERMINATOR}\nrm -rf /\n`);
    await assert.rejects(loadKitTemplate(join(dir, 'diskless-kit.sh')), /cannot carry/);
    writeFileSync(join(dir, 'evil'), 'fine\n');
    assert.match(await loadKitTemplate(join(dir, 'diskless-kit.sh')), /\nfine\n/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
