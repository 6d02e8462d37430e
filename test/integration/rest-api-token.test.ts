/**
 * The API token file, `<dataDir>/api-token`: made once with 32 random bytes
 * and mode 0600, read back unchanged, and refused (the server does not
 * start) when it is readable by others, not a regular file, a symbolic link
 * or not a token. Several processes starting at once end up with one token.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDisklessError } from '../../src/lib/errors.js';
import { API_TOKEN_FILE, loadOrCreateApiToken, restApi } from '../../src/api/rest/index.js';
import { Catalogue } from '../../src/app/catalogue.js';

const fresh = (): string => mkdtempSync(join(tmpdir(), 'dl-rest-token-'));
const isTokenFileError = (...mentions: string[]) => (e: unknown): boolean => {
  assert.ok(isDisklessError(e, 'API_TOKEN_FILE'), `expected API_TOKEN_FILE, got ${String(e)}`);
  for (const m of mentions) assert.ok((e as Error).message.includes(m), `${(e as Error).message} should mention ${m}`);
  return true;
};

test('made at first use: 64 hex digits, mode 0600, and the same token ever after', () => {
  const dir = fresh();
  try {
    const old = process.umask(0o000);
    let token: string;
    try {
      // Even with no umask at all the file is never wider than 0600.
      token = loadOrCreateApiToken(dir);
    } finally {
      process.umask(old);
    }
    assert.match(token, /^[0-9a-f]{64}$/);
    const st = statSync(join(dir, API_TOKEN_FILE));
    assert.equal(st.mode & 0o777, 0o600);
    assert.ok(st.isFile());
    assert.equal(readFileSync(join(dir, API_TOKEN_FILE), 'utf8'), `${token}\n`);
    assert.equal(loadOrCreateApiToken(dir), token);
    assert.notEqual(loadOrCreateApiToken(fresh()), token, 'each data directory gets its own random token');
    // No temporary file is left behind.
    assert.deepEqual(readdirSync(dir), [API_TOKEN_FILE]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a token file others may read is refused, naming the mode and the fix', () => {
  const dir = fresh();
  try {
    loadOrCreateApiToken(dir);
    const file = join(dir, API_TOKEN_FILE);
    for (const mode of [0o644, 0o640, 0o604, 0o660, 0o666]) {
      chmodSync(file, mode);
      assert.throws(() => loadOrCreateApiToken(dir), isTokenFileError(mode.toString(8), 'chmod 600'));
    }
    chmodSync(file, 0o400);
    assert.match(loadOrCreateApiToken(dir), /^[0-9a-f]{64}$/, 'owner read-only is fine');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad content, a directory or a symbolic link at the name is refused, never replaced', () => {
  const dir = fresh();
  try {
    const file = join(dir, API_TOKEN_FILE);
    for (const content of ['', '\n', 'secret\n', 'g'.repeat(64), `${'a'.repeat(64)} ${'b'.repeat(64)}\n`, 'a'.repeat(63), 'x'.repeat(300)]) {
      writeFileSync(file, content, { mode: 0o600 });
      chmodSync(file, 0o600);
      assert.throws(() => loadOrCreateApiToken(dir), isTokenFileError(file));
      assert.equal(readFileSync(file, 'utf8'), content, 'the file is left as it was');
    }
    // The base64url form of 32 bytes is accepted as it is.
    const b64 = Buffer.alloc(32, 7).toString('base64url');
    writeFileSync(file, `${b64}\n`, { mode: 0o600 });
    assert.equal(loadOrCreateApiToken(dir), b64);
    rmSync(file);

    mkdirSync(file, { mode: 0o700 });
    assert.throws(() => loadOrCreateApiToken(dir), isTokenFileError('not a regular file'));
    rmSync(file, { recursive: true });

    const elsewhere = join(dir, 'elsewhere');
    writeFileSync(elsewhere, `${'c'.repeat(64)}\n`, { mode: 0o600 });
    symlinkSync(elsewhere, file);
    assert.throws(() => loadOrCreateApiToken(dir), isTokenFileError('symbolic link'));
    rmSync(file);
    // A dangling link planted at the name is not followed to create a file somewhere else.
    symlinkSync(join(dir, 'planted'), file);
    assert.throws(() => loadOrCreateApiToken(dir), isTokenFileError());
    assert.ok(lstatSync(file).isSymbolicLink());
    assert.throws(() => statSync(join(dir, 'planted')), /ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a data directory that does not exist is an error, not a token somewhere else', () => {
  const dir = fresh();
  try {
    assert.throws(() => loadOrCreateApiToken(join(dir, 'missing')), isTokenFileError('missing'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('processes starting at once agree on one token', async () => {
  const dir = fresh();
  try {
    const module = fileURLToPath(new URL('../../src/api/rest/token.js', import.meta.url));
    const script = `import(${JSON.stringify(module)}).then((m) => process.stdout.write(m.loadOrCreateApiToken(process.argv[1])))`;
    const run = (): Promise<string> => new Promise((resolve, reject) => {
      execFile(process.execPath, ['-e', script, dir], { timeout: 20_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
    });
    const tokens = await Promise.all(Array.from({ length: 6 }, run));
    assert.equal(new Set(tokens).size, 1, `different tokens: ${tokens.join(' ')}`);
    assert.equal(readFileSync(join(dir, API_TOKEN_FILE), 'utf8'), `${tokens[0]}\n`);
    assert.deepEqual(readdirSync(dir), [API_TOKEN_FILE]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('restApi() refuses a short or empty token', () => {
  const dir = fresh();
  const catalogue = Catalogue.open(join(dir, 'data'));
  try {
    for (const token of ['', 'short', ' '.repeat(40), `${'a'.repeat(40)} b`]) {
      assert.throws(() => restApi({ catalogue, dataDir: join(dir, 'data'), token }), isTokenFileError());
    }
  } finally {
    catalogue.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
