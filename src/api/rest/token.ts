/**
 * The API token: 32 random bytes, written once as 64 hex digits to
 * `<dataDir>/api-token` and read from there ever after, by the server (to
 * check requests) and by `diskless api token` (to print it).
 *
 * The file is the secret, so it is created mode 0600 and never wider: a
 * temporary file is made with O_CREAT|O_EXCL|O_NOFOLLOW (no existing file or
 * planted link is ever opened for writing), filled and synced, then linked
 * to its name. link(2) refuses to replace an existing name, so two processes
 * starting at once end up with one token, and the name never shows a
 * half-written file. A file found there that others could read, that is not
 * a regular file, or that does not hold one token is refused: the server
 * does not start rather than trust or silently replace it.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, constants as fsc, fchmodSync, fstatSync, fsyncSync, linkSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { RestError } from './errors.js';

export const API_TOKEN_FILE = 'api-token';
export const API_TOKEN_MODE = 0o600;
/** 32 bytes of randomness (256 bits). */
export const API_TOKEN_BYTES = 32;
/** What the file may hold: 64 hex digits (what we write) or 43 base64url characters (the same 32 bytes). */
const TOKEN_FORMS = /^(?:[0-9a-f]{64}|[A-Za-z0-9_-]{43})$/;
/** The file holds one short line; anything longer is not ours. */
const MAX_FILE_BYTES = 256;

/** Reads `<dataDir>/api-token`, creating it with a new random token if it does not exist. */
export function loadOrCreateApiToken(dataDir: string): string {
  const path = join(dataDir, API_TOKEN_FILE);
  const existing = readTokenFile(path);
  if (existing !== null) return existing;
  const token = randomBytes(API_TOKEN_BYTES).toString('hex');
  const tmp = join(dataDir, `.${API_TOKEN_FILE}.${process.pid}.${randomBytes(4).toString('hex')}`);
  let fd: number;
  try {
    fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, API_TOKEN_MODE);
  } catch (err) {
    throw new RestError('API_TOKEN_FILE', `cannot create the API token file in ${dataDir}: ${(err as Error).message}`, { cause: err });
  }
  try {
    try {
      // The umask can only narrow the mode; set it exactly, so the owner can always read it back.
      fchmodSync(fd, API_TOKEN_MODE);
      const data = Buffer.from(token + '\n');
      let done = 0;
      while (done < data.length) done += writeSync(fd, data, done, data.length - done);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(tmp, path);
    } catch (err) {
      // Another process made it first: theirs is the token.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const theirs = readTokenFile(path);
      if (theirs === null) throw err;
      return theirs;
    }
  } catch (err) {
    if (err instanceof RestError) throw err;
    throw new RestError('API_TOKEN_FILE', `cannot create the API token file ${path}: ${(err as Error).message}`, { cause: err });
  } finally {
    try { unlinkSync(tmp); } catch { /* already gone */ }
  }
  syncDir(dataDir);
  return token;
}

/** The token in `path`, or null if there is no such file; throws if the file is unsafe or malformed. */
function readTokenFile(path: string): string | null {
  let fd: number;
  try {
    // O_NOFOLLOW: a symbolic link at the name is refused (ELOOP), never followed to some other file.
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw new RestError('API_TOKEN_FILE', `${path} is a symbolic link; the API token must be a regular file of mode 0600`);
    throw new RestError('API_TOKEN_FILE', `cannot read the API token file ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new RestError('API_TOKEN_FILE', `${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      throw new RestError('API_TOKEN_FILE', `${path} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}; others may read the API token. Run \`chmod 600 ${path}\` (and consider the token known: delete the file to make a new one)`);
    }
    if (st.size > MAX_FILE_BYTES) throw new RestError('API_TOKEN_FILE', `${path} is ${st.size} bytes; it holds one token of 64 hex digits`);
    const buf = Buffer.alloc(MAX_FILE_BYTES + 1);
    let got = 0;
    for (;;) {
      const n = readSync(fd, buf, got, buf.length - got, got);
      if (n === 0) break;
      got += n;
      if (got > MAX_FILE_BYTES) throw new RestError('API_TOKEN_FILE', `${path} is longer than one token`);
    }
    const token = buf.subarray(0, got).toString('utf8').trim();
    if (!TOKEN_FORMS.test(token)) {
      throw new RestError('API_TOKEN_FILE', `${path} does not hold an API token (64 hex digits or 43 base64url characters); delete it to make a new one`);
    }
    return token;
  } finally {
    closeSync(fd);
  }
}

/** The new name must survive a crash along with the file. */
function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, fsc.O_RDONLY);
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch {
    // Some file systems cannot sync a directory; the file itself is synced.
  }
}
