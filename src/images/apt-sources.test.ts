import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chooseMirror, mirrorFromApt, parseDeb822Sources, parseOneLineSources } from './apt-sources.js';

const DEB822 = `Types: deb deb-src
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
  contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: trixie
Components: main
`;

test('deb822: fields, continuation lines, comments, Enabled: no', () => {
  const s = parseDeb822Sources(DEB822, 'x.sources');
  assert.equal(s.length, 3);
  assert.deepEqual(s[0], {
    types: ['deb', 'deb-src'],
    uris: ['http://mirror.example/debian'],
    suites: ['bookworm', 'bookworm-updates'],
    components: ['main', 'contrib'],
    enabled: true,
    file: 'x.sources',
  });
  assert.equal(s[2]!.enabled, false);
});

test('one-line sources: options in brackets, comments, deb-src', () => {
  const s = parseOneLineSources('# c\ndeb [arch=amd64 signed-by=/k.gpg] http://one.example/debian/ bookworm main contrib\ndeb-src http://one.example/debian bookworm main\nnonsense\n', 'sources.list');
  assert.deepEqual(s.map((x) => [x.types[0], x.uris[0], x.suites[0], x.components]), [
    ['deb', 'http://one.example/debian/', 'bookworm', ['main', 'contrib']],
    ['deb-src', 'http://one.example/debian', 'bookworm', ['main']],
  ]);
});

test('the mirror: the source of that suite, else the main archive, never a security pocket or a disabled one', () => {
  const s = parseDeb822Sources(DEB822, 'x.sources');
  assert.equal(chooseMirror(s, 'bookworm'), 'http://mirror.example/debian');
  assert.equal(chooseMirror(s, 'trixie'), 'http://mirror.example/debian', 'trixie is disabled: fall back to the main archive');
  assert.equal(chooseMirror(s.slice(1, 2), 'bookworm'), undefined, 'security only');
  assert.equal(chooseMirror(parseOneLineSources('deb cdrom:[Debian]/ bookworm main\n', 'l'), 'bookworm'), undefined);
});

test('mirrorFromApt reads sources.list and sources.list.d (*.list, *.sources), ignoring other names', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'diskless-apt-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'sources.list.d'));
  assert.equal(await mirrorFromApt('bookworm', dir), undefined);
  await writeFile(join(dir, 'sources.list.d', 'debian.sources.disabled'), DEB822);
  assert.equal(await mirrorFromApt('bookworm', dir), undefined);
  await writeFile(join(dir, 'sources.list.d', 'debian.sources'), DEB822);
  assert.equal(await mirrorFromApt('bookworm', dir), 'http://mirror.example/debian');
  await writeFile(join(dir, 'sources.list'), 'deb http://first.example/debian bookworm main\n');
  assert.equal(await mirrorFromApt('bookworm', dir), 'http://first.example/debian');
});
