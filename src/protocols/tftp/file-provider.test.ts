import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
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
