import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, renameSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bufferFile, FolderFileProvider, type FileRequest, type TftpFile } from './file-provider.js';
import { TftpError } from './errors.js';

const peer = { address: '127.0.0.1', port: 2000, family: 'IPv4' };
const req = (path: string): FileRequest => ({ path, requested: path, mode: 'octet', peer });

async function readAll(file: TftpFile): Promise<Buffer> {
  const out = Buffer.alloc(file.size);
  let off = 0;
  while (off < file.size) {
    const n = await file.read(off, Math.min(1000, file.size - off), out.subarray(off));
    assert.ok(n > 0);
    off += n;
  }
  await file.close();
  return out;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof TftpError, String(err));
    return err.code;
  }
  assert.fail('no error');
}

test('folder provider: files under the root, virtual files, refusals', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'tftp-provider-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const root = join(base, 'root');
  mkdirSync(join(root, 'sub'), { recursive: true });
  writeFileSync(join(root, 'a.bin'), Buffer.from('hello world'));
  writeFileSync(join(root, 'sub', 'b.txt'), 'in sub');
  writeFileSync(join(base, 'secret'), 'outside');
  writeFileSync(join(base, 'ipxe.bin'), 'mapped from outside the root');
  symlinkSync(join(base, 'secret'), join(root, 'escape'));
  symlinkSync('sub/b.txt', join(root, 'inside-link'));
  symlinkSync(base, join(root, 'dir-escape'));
  execFileSync('mkfifo', [join(root, 'fifo')]);

  const provider = new FolderFileProvider({
    root,
    files: { 'undionly.kpxe': join(base, 'ipxe.bin'), '/boot/script.ipxe': Buffer.from('#!ipxe\n') },
  });
  assert.equal((await readAll(await provider.open(req('a.bin')))).toString(), 'hello world');
  assert.equal((await readAll(await provider.open(req('sub/b.txt')))).toString(), 'in sub');
  assert.equal((await readAll(await provider.open(req('inside-link')))).toString(), 'in sub', 'a symlink inside the root is served');
  assert.equal((await readAll(await provider.open(req('undionly.kpxe')))).toString(), 'mapped from outside the root');
  assert.equal((await readAll(await provider.open(req('boot/script.ipxe')))).toString(), '#!ipxe\n');

  assert.equal(await codeOf(provider.open(req('missing'))), 'TFTP_FILE_NOT_FOUND');
  assert.equal(await codeOf(provider.open(req('a.bin/x'))), 'TFTP_FILE_NOT_FOUND');
  assert.equal(await codeOf(provider.open(req('sub'))), 'TFTP_ACCESS_VIOLATION', 'a directory');
  assert.equal(await codeOf(provider.open(req('escape'))), 'TFTP_ACCESS_VIOLATION', 'a symlink out of the root');
  assert.equal(await codeOf(provider.open(req('dir-escape/secret'))), 'TFTP_ACCESS_VIOLATION', 'a directory symlink out of the root');
  assert.equal(await codeOf(provider.open(req('fifo'))), 'TFTP_ACCESS_VIOLATION', 'a FIFO, opened without hanging');

  provider.setFile('late.bin', Buffer.from('late'));
  assert.equal((await readAll(await provider.open(req('late.bin')))).toString(), 'late');
  assert.ok(provider.deleteFile('late.bin'));
  assert.equal(await codeOf(provider.open(req('late.bin'))), 'TFTP_FILE_NOT_FOUND');
});

test('folder provider: unreadable file is an access violation (when not root)', async (t) => {
  if (process.getuid?.() === 0) {
    t.skip('root reads any file');
    return;
  }
  const root = mkdtempSync(join(tmpdir(), 'tftp-provider-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  writeFileSync(join(root, 'locked'), 'x', { mode: 0o000 });
  assert.equal(await codeOf(new FolderFileProvider({ root }).open(req('locked'))), 'TFTP_ACCESS_VIOLATION');
});

test('folder provider: configuration is validated, every problem listed', () => {
  assert.throws(
    () => new FolderFileProvider({ root: '', files: { '../x': '/tmp/x', 'rel': 'relative/path' } }),
    (e: unknown) => e instanceof TftpError && e.code === 'TFTP_CONFIG_INVALID' && /root/.test(e.message) && /\.\.\/x/.test(e.message) && /relative/.test(e.message),
  );
  const onlyVirtual = new FolderFileProvider({ files: { a: Buffer.from('a') } });
  return codeOf(onlyVirtual.open(req('b'))).then((c) => assert.equal(c, 'TFTP_FILE_NOT_FOUND'));
});

test('bufferFile reads ranges and stops at the end', async () => {
  const f = bufferFile(Buffer.from('0123456789'));
  const into = Buffer.alloc(8);
  assert.equal(await f.read(6, 8, into), 4);
  assert.equal(into.subarray(0, 4).toString(), '6789');
  assert.equal(await f.read(20, 8, into), 0);
});

test('folder provider cache: a file read whole is served from memory until it changes', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'tftp-cache-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const root = join(base, 'root');
  mkdirSync(root);
  const path = join(root, 'ipxe.efi');
  writeFileSync(path, 'version one');
  writeFileSync(join(base, 'mapped.bin'), 'mapped file');
  symlinkSync(join(base, 'mapped.bin'), join(base, 'mapped-link'));
  const provider = new FolderFileProvider({ root, files: { 'm.bin': join(base, 'mapped.bin'), 'link.bin': join(base, 'mapped-link') } });

  const first = await provider.open(req('ipxe.efi'));
  assert.equal(first.contents, undefined, 'the first open reads the disk');
  assert.equal((await readAll(first)).toString(), 'version one');
  assert.deepEqual(provider.cacheStats(), { files: 1, bytes: 11 });
  const second = await provider.open(req('ipxe.efi'));
  assert.equal(Buffer.from(second.contents!).toString(), 'version one', 'the second comes from memory');
  assert.equal((await readAll(second)).toString(), 'version one');

  // Rewritten in place (same inode, same size): a new mtime and ctime make it another version.
  writeFileSync(path, 'version two');
  utimesSync(path, new Date(), new Date(Date.now() + 5000));
  const third = await provider.open(req('ipxe.efi'));
  assert.equal(third.contents, undefined, 'a changed file is read again');
  assert.equal((await readAll(third)).toString(), 'version two');
  assert.equal(Buffer.from((await provider.open(req('ipxe.efi'))).contents!).toString(), 'version two');

  // Replaced by a new file (new inode), as package upgrades do.
  writeFileSync(join(root, 'new'), 'version three');
  renameSync(join(root, 'new'), path);
  const fourth = await provider.open(req('ipxe.efi'));
  assert.equal(fourth.contents, undefined);
  assert.equal((await readAll(fourth)).toString(), 'version three');

  // Gone: not found, whatever the cache holds; a symlink swapped in to escape the root is still refused.
  rmSync(path);
  assert.equal(await codeOf(provider.open(req('ipxe.efi'))), 'TFTP_FILE_NOT_FOUND');
  writeFileSync(join(base, 'secret'), 'version three');
  symlinkSync(join(base, 'secret'), path);
  assert.equal(await codeOf(provider.open(req('ipxe.efi'))), 'TFTP_ACCESS_VIOLATION');

  // Mapped host files are cached too; a mapped symlink is still refused (O_NOFOLLOW).
  await readAll(await provider.open(req('m.bin')));
  assert.equal(Buffer.from((await provider.open(req('m.bin'))).contents!).toString(), 'mapped file');
  assert.equal(await codeOf(provider.open(req('link.bin'))), 'TFTP_ACCESS_VIOLATION');
});

test('folder provider cache: partial reads are not kept; limits and eviction; 0 turns it off', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'tftp-cache-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  for (const [name, text] of [['a', 'aaaaaaaaaa'], ['b', 'bbbbbbbbbb'], ['big', 'x'.repeat(100)]] as const) writeFileSync(join(root, name), text);
  const provider = new FolderFileProvider({ root, cacheBytes: 25, cacheFileBytes: 50 });

  // A size probe (OVMF) reads a little and closes: nothing is kept.
  const probe = await provider.open(req('a'));
  await probe.read(0, 4, Buffer.alloc(4));
  await probe.close();
  assert.deepEqual(provider.cacheStats(), { files: 0, bytes: 0 });

  await readAll(await provider.open(req('big')));
  assert.deepEqual(provider.cacheStats(), { files: 0, bytes: 0 }, 'over cacheFileBytes');
  await readAll(await provider.open(req('a')));
  await readAll(await provider.open(req('b')));
  assert.deepEqual(provider.cacheStats(), { files: 2, bytes: 20 });
  assert.ok((await provider.open(req('a'))).contents, 'a used last');
  writeFileSync(join(root, 'c'), 'cccccccccc');
  await readAll(await provider.open(req('c')));
  assert.deepEqual(provider.cacheStats(), { files: 2, bytes: 20 }, 'one evicted to make room');
  assert.equal((await provider.open(req('b'))).contents, undefined, 'the least recently used went');
  assert.ok((await provider.open(req('a'))).contents);

  // Two transfers of a file not yet cached at once: both read it right, and it ends up cached.
  writeFileSync(join(root, 'd'), 'dddddddddd');
  const d1 = await provider.open(req('d'));
  const d2 = await provider.open(req('d'));
  assert.equal((await readAll(d2)).toString(), 'dddddddddd');
  assert.equal((await readAll(d1)).toString(), 'dddddddddd');
  assert.equal(Buffer.from((await provider.open(req('d'))).contents!).toString(), 'dddddddddd');

  const off = new FolderFileProvider({ root, cacheBytes: 0 });
  await readAll(await off.open(req('a')));
  assert.equal((await off.open(req('a'))).contents, undefined);
  assert.deepEqual(off.cacheStats(), { files: 0, bytes: 0 });
  assert.throws(() => new FolderFileProvider({ root, cacheBytes: -1 }), /cacheBytes/);
});
