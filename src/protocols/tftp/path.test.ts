import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizePath, PATH_LIMITS } from './path.js';
import { TftpError } from './errors.js';

test('normal names, leading slashes, dot segments and backslashes', () => {
  assert.equal(normalizePath('undionly.kpxe'), 'undionly.kpxe');
  assert.equal(normalizePath('/undionly.kpxe'), 'undionly.kpxe');
  assert.equal(normalizePath('//pxelinux.cfg//01-aa-bb'), 'pxelinux.cfg/01-aa-bb');
  assert.equal(normalizePath('./a/./b/'), 'a/b');
  assert.equal(normalizePath('boot\\x86\\wdsnbp.com'), 'boot/x86/wdsnbp.com');
  assert.equal(normalizePath('/etc/passwd'), 'etc/passwd', 'absolute paths are read inside the root');
  assert.equal(normalizePath('...'), '...', 'three dots is a name');
  assert.equal(normalizePath('a..b'), 'a..b');
});

test('traversal, control characters, empty and oversized names are refused', () => {
  const bad = [
    '..', '../etc/passwd', 'a/../b', 'a/..', '/../../etc/shadow', '..\\..\\windows', 'a\\..\\..\\b', './..',
    'a\x01b', 'a\nb', 'a\x7fb', 'a\tb', '', '/', '///', '.', './.',
    'x'.repeat(PATH_LIMITS.maxBytes + 1), Array(PATH_LIMITS.maxSegments + 1).fill('d').join('/'),
  ];
  for (const name of bad) {
    assert.throws(() => normalizePath(name), (e: unknown) => e instanceof TftpError && e.code === 'TFTP_BAD_PATH', JSON.stringify(name));
  }
});
