/**
 * Importing a disk made elsewhere (raw, qcow2, vmdk, vdi, vhdx) as a raw
 * image file, with qemu-img (`info --output=json` to probe, `check` for the
 * formats that have one, `convert -p -O raw` to copy, holes kept).
 *
 * What is refused, and why:
 * - a disk that refers to other files (a backing file, a qcow2 external
 *   data file, a vmdk extent other than itself): the import would read
 *   whatever file those name on the server (a disk uploaded with a backing
 *   file of /etc/shadow would carry it into the image);
 * - a disk qemu-img marks corrupt, fails to open or finds corruptions in;
 * - content that contradicts the file name (x.qcow2 that probes as raw is a
 *   qcow2 with a damaged header, not a raw disk);
 * - a disk whose virtual size exceeds the free space of the destination.
 *
 * Nothing half-made is left: qemu-img writes a temporary name in the
 * destination directory, which is fsynced, inspected, and only then linked
 * to the final name (never replacing a file) and unlinked; any failure or
 * cancellation removes it.
 */
import { existsSync } from 'node:fs';
import { mkdir, rm, stat, statfs } from 'node:fs/promises';
import { basename, dirname, extname, resolve } from 'node:path';
import type { Logger } from '../lib/log.js';
import { silentLogger } from '../lib/log.js';
import { isDisklessError } from '../lib/errors.js';
import { imagesError } from './errors.js';
import { run } from './exec.js';
import { fsyncPath, partialName, publish } from './files.js';
import { inspectDisk, type DiskInspection, type InspectOptions } from './inspect.js';

export const IMPORT_FORMATS = ['raw', 'qcow2', 'vmdk', 'vdi', 'vhdx'] as const;
export type ImportFormat = (typeof IMPORT_FORMATS)[number];

/** File name extensions that say what a disk is; `.img` says nothing (cloud images are often qcow2). */
const EXTENSION_FORMAT: Record<string, ImportFormat> = {
  '.raw': 'raw',
  '.qcow2': 'qcow2',
  '.qcow': 'qcow2',
  '.vmdk': 'vmdk',
  '.vdi': 'vdi',
  '.vhdx': 'vhdx',
};

/** Formats `qemu-img check` can check. */
const CHECKABLE: ReadonlySet<ImportFormat> = new Set(['qcow2', 'vdi', 'vhdx', 'vmdk']);

const TIMEOUTS = { info: 60_000, check: 30 * 60_000, convert: 6 * 60 * 60_000 };

export interface DiskProbe {
  path: string;
  format: ImportFormat;
  virtualSize: number;
  /** Bytes the source file occupies. */
  actualSize: number;
  dirty: boolean;
}

export interface ImportProgress {
  phase: 'probe' | 'check' | 'convert' | 'sync' | 'inspect' | 'done';
  /** convert: 0..100 as qemu-img reports it. */
  percent?: number;
  message?: string;
}

export interface ImportOptions {
  source: string;
  /** The raw file to create; must not exist. Its directory is created if needed. */
  outPath: string;
  /** Refuse the source unless it probes as this format. */
  format?: ImportFormat;
  progress?: (p: ImportProgress) => void;
  signal?: AbortSignal;
  logger?: Logger;
  /** Passed to inspectDisk (requireNbd defaults to true: an image that cannot boot over NBD is refused). */
  inspect?: Omit<InspectOptions, 'signal'>;
}

export interface ImportResult {
  outPath: string;
  source: DiskProbe;
  inspection: DiskInspection;
  timings: { convertMs: number; inspectMs: number; totalMs: number };
}

interface QemuImgInfo {
  format?: string;
  'virtual-size'?: number;
  'actual-size'?: number;
  'dirty-flag'?: boolean;
  filename?: string;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'format-specific'?: {
    type?: string;
    data?: { corrupt?: boolean; 'data-file'?: string; extents?: { filename?: string }[] };
  };
}

/**
 * Probes a disk with qemu-img and checks it can be imported. Throws
 * IMAGES_IMPORT_FORMAT, IMAGES_IMPORT_CORRUPT or IMAGES_IMPORT_EXTERNAL_FILE.
 */
export async function probeDisk(source: string, o: { format?: ImportFormat; signal?: AbortSignal } = {}): Promise<DiskProbe> {
  // An absolute path: qemu-img reads "proto:..." and "json:{...}" as protocols, never "/...".
  const path = resolve(source);
  const st = await stat(path).catch((e: unknown) => {
    throw imagesError('IMAGES_DISK_UNREADABLE', `cannot read ${source}: ${(e as Error).message}`, { cause: e });
  });
  const device = st.isBlockDevice();
  if (!st.isFile() && !device) throw imagesError('IMAGES_IMPORT_FORMAT', `${source} is neither a regular file nor a block device`);
  // A block device (a real machine's disk, a loop device) is read as raw: probing
  // its first bytes for formats would let a guest's disk content choose the driver.
  if (device && o.format !== undefined && o.format !== 'raw') throw imagesError('IMAGES_IMPORT_FORMAT', `${source} is a block device; it is read as raw, not ${o.format}`);
  const r = await run('qemu-img', ['info', '--output=json', ...(device ? ['-f', 'raw'] : []), path], { check: false, timeoutMs: TIMEOUTS.info, signal: o.signal });
  if (r.code !== 0) {
    throw imagesError('IMAGES_IMPORT_CORRUPT', `qemu-img cannot open ${source}: ${r.stderr.trim().split('\n').slice(-2).join(' ')}`);
  }
  let info: QemuImgInfo;
  try {
    info = JSON.parse(r.stdout.toString('utf8')) as QemuImgInfo;
  } catch {
    throw imagesError('IMAGES_TOOL_FAILED', 'qemu-img info printed something that is not JSON');
  }
  const format = info.format as ImportFormat;
  if (!IMPORT_FORMATS.includes(format)) {
    throw imagesError('IMAGES_IMPORT_FORMAT', `${source} is ${info.format}; the formats that can be imported are ${IMPORT_FORMATS.join(', ')}`);
  }
  const named = EXTENSION_FORMAT[extname(path).toLowerCase()];
  if (named && named !== format) {
    throw imagesError(
      'IMAGES_IMPORT_FORMAT',
      `${basename(path)} is named as ${named} but its content reads as ${format}${named !== 'raw' ? `: its ${named} header is damaged (or the file is misnamed)` : ''}`,
    );
  }
  if (o.format && o.format !== format) throw imagesError('IMAGES_IMPORT_FORMAT', `${source} is ${format}, not ${o.format}`);
  const backing = info['full-backing-filename'] ?? info['backing-filename'];
  if (backing) {
    throw imagesError('IMAGES_IMPORT_EXTERNAL_FILE', `${source} has a backing file (${backing}); flatten it first (qemu-img convert -O qcow2 without -B)`);
  }
  const data = info['format-specific']?.data;
  if (data?.['data-file']) throw imagesError('IMAGES_IMPORT_EXTERNAL_FILE', `${source} keeps its data in an external file (${data['data-file']})`);
  for (const e of data?.extents ?? []) {
    if (e.filename !== undefined && resolve(dirname(path), e.filename) !== path) {
      throw imagesError('IMAGES_IMPORT_EXTERNAL_FILE', `${source} is a vmdk descriptor whose extent is another file (${e.filename}); convert it to a single-file vmdk first`);
    }
  }
  if (data?.corrupt) throw imagesError('IMAGES_IMPORT_CORRUPT', `qemu-img marks ${source} as corrupt (qemu-img check -r all may repair it)`);
  const virtualSize = info['virtual-size'];
  if (!Number.isSafeInteger(virtualSize) || virtualSize! <= 0) throw imagesError('IMAGES_IMPORT_CORRUPT', `${source} has no usable virtual size`);
  return { path, format, virtualSize: virtualSize!, actualSize: info['actual-size'] ?? st.blocks * 512, dirty: info['dirty-flag'] ?? false };
}

/** Runs `qemu-img check` for formats that have it; corruptions refuse the import, leaks do not. */
async function checkDisk(p: DiskProbe, signal?: AbortSignal): Promise<string | undefined> {
  if (!CHECKABLE.has(p.format)) return undefined;
  const r = await run('qemu-img', ['check', '-f', p.format, '--output=json', p.path], { check: false, timeoutMs: TIMEOUTS.check, signal });
  // Exit status (qemu-img(1)): 0 clean, 1 check failed to run, 2 corruptions, 3 leaks only, 63 not supported.
  if (r.code === 0 || r.code === 63) return undefined;
  if (r.code === 3) return 'the disk has leaked clusters (harmless; qemu-img check -r leaks reclaims them)';
  const detail = r.stderr.trim().split('\n').slice(-2).join(' ') || r.stdout.toString('utf8').slice(0, 400);
  throw imagesError('IMAGES_IMPORT_CORRUPT', `qemu-img check found ${p.path} damaged${r.code === 2 ? ' (corruptions)' : ''}: ${detail}`);
}

/**
 * Imports a disk as a raw image at outPath and inspects it. On any failure
 * (including an image that is not bootable over NBD, unless
 * inspect.requireNbd is false) nothing is left at outPath or beside it.
 */
export async function importDisk(o: ImportOptions): Promise<ImportResult> {
  const logger = (o.logger ?? silentLogger).child({ component: 'image-import' });
  const started = Date.now();
  const outPath = resolve(o.outPath);
  const dir = dirname(outPath);
  if (existsSync(outPath)) throw imagesError('IMAGES_OUTPUT_EXISTS', `${outPath} already exists`);
  await mkdir(dir, { recursive: true });

  o.progress?.({ phase: 'probe', message: o.source });
  const probe = await probeDisk(o.source, { format: o.format, signal: o.signal });
  logger.info('importing disk', { source: probe.path, format: probe.format, virtualSize: probe.virtualSize });
  if (probe.path === outPath) throw imagesError('IMAGES_BAD_OPTION', 'the source and the output are the same file');

  // Free space first: the raw copy may occupy its whole virtual size.
  const fs = await statfs(dir);
  const free = fs.bavail * fs.bsize;
  if (probe.virtualSize > free) {
    throw imagesError('IMAGES_NO_SPACE', `${o.source} is a ${probe.virtualSize}-byte disk but ${dir} has only ${free} bytes free`, {
      details: { needed: probe.virtualSize, free },
    });
  }

  o.progress?.({ phase: 'check', message: probe.format });
  const leak = await checkDisk(probe, o.signal);
  if (leak) logger.warn(leak, { source: probe.path });

  const tmp = partialName(outPath);
  let convertMs = 0;
  let inspectMs = 0;
  try {
    const t0 = Date.now();
    let last = -1;
    o.progress?.({ phase: 'convert', percent: 0 });
    const r = await run('qemu-img', ['convert', '-p', '-f', probe.format, '-O', 'raw', probe.path, tmp], {
      check: false,
      timeoutMs: TIMEOUTS.convert,
      signal: o.signal,
      onLine: (line, stream) => {
        // -p prints "    (12.34/100%)" and a carriage return, on stdout.
        const m = stream === 'stdout' ? /\((\d+(?:\.\d+)?)\/100%\)/.exec(line) : null;
        if (!m) return;
        const pct = Number(m[1]);
        if (pct !== last) {
          last = pct;
          o.progress?.({ phase: 'convert', percent: pct });
        }
      },
    });
    if (r.code !== 0) {
      const why = r.stderr.trim().split('\n').slice(-3).join(' ');
      if (/No space left/i.test(why)) throw imagesError('IMAGES_NO_SPACE', `${dir} filled up during the import: ${why}`);
      throw imagesError('IMAGES_IMPORT_CORRUPT', `qemu-img could not convert ${o.source}: ${why}`);
    }
    const written = await stat(tmp);
    if (written.size !== probe.virtualSize) {
      throw imagesError('IMAGES_IMPORT_CORRUPT', `the raw copy is ${written.size} bytes, the source says ${probe.virtualSize}`);
    }
    o.progress?.({ phase: 'sync' });
    await fsyncPath(tmp);
    convertMs = Date.now() - t0;

    const t1 = Date.now();
    o.progress?.({ phase: 'inspect' });
    const inspection = await inspectDisk(tmp, { ...o.inspect, signal: o.signal });
    inspectMs = Date.now() - t1;
    await publish(tmp, outPath);
    inspection.path = outPath;
    o.progress?.({ phase: 'done', percent: 100 });
    return { outPath, source: probe, inspection, timings: { convertMs, inspectMs, totalMs: Date.now() - started } };
  } catch (e) {
    if (o.signal?.aborted && !isDisklessError(e, 'IMAGES_ABORTED')) {
      throw imagesError('IMAGES_ABORTED', `the import of ${o.source} was cancelled`, { cause: e });
    }
    throw e;
  } finally {
    await rm(tmp, { force: true });
  }
}
