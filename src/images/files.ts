/**
 * File helpers shared by build and import: nothing half-made is ever visible
 * under a final name. Data is written to a temporary name in the same
 * directory, fsynced, then linked to the final name (link fails rather than
 * replacing an existing file) and the temporary name removed; the directory
 * is fsynced so the new name survives a power cut.
 */
import { randomBytes } from 'node:crypto';
import { link, open, rm, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { imagesError } from './errors.js';
import { run } from './exec.js';

/** Our limit on one sparse copy of a disk. */
const COPY_TIMEOUT_MS = 30 * 60_000;

export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Gives the finished file `tmp` its final name `dest` without ever replacing a file. */
export async function publish(tmp: string, dest: string): Promise<void> {
  try {
    await link(tmp, dest);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw imagesError('IMAGES_OUTPUT_EXISTS', `${dest} already exists`);
    throw e;
  }
  await unlink(tmp);
  await fsyncPath(dirname(dest));
}

/** A temporary name beside `dest`, hidden, that a crash may leave and nothing else uses. */
export function partialName(dest: string): string {
  const base = dest.split('/').pop() ?? 'file';
  return join(dirname(dest), `.${base}.${randomBytes(6).toString('hex')}.partial`);
}

/** Copies a sparse disk to `dest` (which must not exist): a reflink where the file system can, holes kept. */
export async function copyDisk(src: string, dest: string, signal?: AbortSignal): Promise<void> {
  const tmp = partialName(dest);
  try {
    await run('cp', ['--sparse=always', '--reflink=auto', '--', src, tmp], { timeoutMs: COPY_TIMEOUT_MS, signal });
    await fsyncPath(tmp);
    await publish(tmp, dest);
  } finally {
    await rm(tmp, { force: true });
  }
}
