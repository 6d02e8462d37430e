import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultKitPath, isSafeServerUrl, KIT_PLACEHOLDER, loadKitTemplate, renderKit } from './kit-script.js';

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
