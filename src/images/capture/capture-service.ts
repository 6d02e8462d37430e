/**
 * The server side of disk capture: uploads of whole disks in chunks, each
 * verified by its sha256 on arrival, resumable across client interruptions
 * and server restarts, then verified whole and handed to the catalogue.
 *
 * Design (see README.md beside this file):
 * - One folder per upload under `<dataDir>/capture/<id>/`: `meta.json`, the
 *   disk as a sparse file of its final size (`disk.raw`, chunk n at offset
 *   n * chunkSize, so finishing needs no second copy and unwritten or zero
 *   chunks stay holes), and an append-only journal `chunks.log` of the chunks
 *   stored. A chunk's bytes are written and synced before its journal line,
 *   so a crash loses at most chunks the client will be told are missing.
 * - A chunk is stored only after its bytes match the sha256 the client sent;
 *   a wrong one is refused and the disk is left as it was.
 * - Finishing re-reads the disk once: every chunk against its recorded sha256
 *   (a chunk that no longer matches is dropped so the client sends it again)
 *   and the whole against the client's sha256; then `publish(rawPath)` is
 *   called and the upload's folder removed.
 * - Limits are checked before anything is written: disk size against the
 *   largest capture and the free space left after every open upload, chunk
 *   size, uploads open at once, chunk bodies in flight. An upload idle for
 *   `idleTimeoutMs` is discarded with its files.
 *
 * Web-framework-free: src/api/kit-routes.ts maps HTTP onto these methods.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat, statfs, writeFile, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger, type Logger } from '../../lib/log.js';
import {
  CAPTURE_DEFAULTS, CAPTURE_DIR, CAPTURE_NAME, RESUME_KEY, SHA256_HEX, SWEEP_INTERVAL_MS, UPLOAD_FILES, UPLOAD_ID,
  type CaptureLimits,
} from './constants.js';
import { CaptureError } from './errors.js';

/** What the catalogue is told about a verified disk. */
export interface CapturedDisk {
  uploadId: string;
  name: string;
  size: number;
  /** sha256 of the whole disk, verified against the bytes on the server. */
  sha256: string;
}

/**
 * Makes a verified disk an image version. `rawPath` is a raw disk image in
 * the data directory (same file system, so a rename is cheap); the callback
 * may move it away or read it. When it resolves, the upload (and whatever is
 * left at rawPath) is removed; its result is returned to the client as
 * `published`. When it throws and the file is still at rawPath, the upload
 * stays open so finish can be retried; when the file is gone, the upload is
 * discarded.
 */
export type PublishCallback = (rawPath: string, disk: CapturedDisk) => Promise<unknown>;

export interface CaptureServiceOptions {
  /** The server's data directory; uploads live in its `capture/` folder. */
  dataDir: string;
  publish: PublishCallback;
  limits?: Partial<CaptureLimits>;
  logger?: Logger;
  now?: () => number;
  /** Free bytes of the file system holding `dir`; statfs by default (injectable for tests). */
  freeSpace?: (dir: string) => Promise<number>;
}

export interface StartRequest {
  name: string;
  size: number;
  chunkSize: number;
  /** Whole-disk sha256, when the client knows it up front; finish must then give the same. */
  sha256?: string;
  /** Resume key: an open upload with the same key is returned instead of a new one. */
  key?: string;
  /** Discard an open upload with the same key and start afresh. */
  restart?: boolean;
}

export type UploadState = 'open' | 'finishing';

export interface UploadStatus {
  id: string;
  name: string;
  size: number;
  chunkSize: number;
  /** Number of chunks the disk is cut into. */
  chunks: number;
  /** Chunks stored and verified. */
  present: number;
  sha256: string | null;
  state: UploadState;
  /** True when start() returned an upload already open under the same key. */
  resumed: boolean;
}

export interface FinishResult {
  id: string;
  name: string;
  size: number;
  sha256: string;
  /** What the publish callback returned (e.g. the new version). */
  published: unknown;
}

interface Upload {
  id: string;
  dir: string;
  name: string;
  size: number;
  chunkSize: number;
  chunkCount: number;
  declaredSha: string | null;
  key: string | null;
  createdAt: number;
  /** index -> sha256 of the chunk's bytes on disk. */
  chunks: Map<number, string>;
  storedBytes: number;
  lastActive: number;
  state: UploadState;
  /** Serializes writes, finish and abort of this upload. */
  lock: Promise<unknown>;
  removed: boolean;
}

interface Meta {
  version: 1;
  id: string;
  name: string;
  size: number;
  chunkSize: number;
  sha256: string | null;
  key: string | null;
  createdAt: number;
}

const JOURNAL_LINE = /^(\d{1,10}) ([0-9a-f]{64}|-)$/;

export class CaptureService {
  readonly limits: Readonly<CaptureLimits>;
  private readonly root: string;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly freeSpace: (dir: string) => Promise<number>;
  private readonly uploads = new Map<string, Upload>();
  /** Serializes start(): the checks of count and space and the creation are one step. */
  private startLock: Promise<unknown> = Promise.resolve();
  private inflight = 0;
  private sweeper: NodeJS.Timeout | null = null;
  private readonly zeroSha = new Map<number, string>();

  constructor(private readonly options: CaptureServiceOptions) {
    this.limits = Object.freeze(validateLimits({ ...CAPTURE_DEFAULTS, ...(options.limits ?? {}) }));
    this.root = join(options.dataDir, CAPTURE_DIR);
    this.log = (options.logger ?? silentLogger).child({ module: 'capture' });
    this.now = options.now ?? Date.now;
    this.freeSpace = options.freeSpace ?? defaultFreeSpace;
  }

  /** Creates the capture folder, takes back the uploads a previous run left open, starts the idle sweep. */
  async open(): Promise<void> {
    await mkdir(this.root, { recursive: true });
    for (const name of await readdir(this.root)) {
      const dir = join(this.root, name);
      try {
        if (!UPLOAD_ID.test(name)) throw new Error('not an upload folder');
        const upload = await this.load(name, dir);
        this.uploads.set(upload.id, upload);
        this.log.info('upload taken back', { id: upload.id, name: upload.name, present: upload.chunks.size, chunks: upload.chunkCount });
      } catch (e) {
        // A folder that cannot be read back is half-made (a crash during start): remove it.
        this.log.warn('removing unusable upload folder', { dir, err: e });
        await rm(dir, { recursive: true, force: true });
      }
    }
    if (!this.sweeper) {
      this.sweeper = setInterval(() => void this.sweep(), SWEEP_INTERVAL_MS);
      this.sweeper.unref();
    }
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    // Let writes under way finish so no chunk is half-synced at exit.
    await Promise.allSettled([...this.uploads.values()].map((u) => u.lock));
  }

  async start(req: StartRequest): Promise<UploadStatus> {
    const r = validateStart(req, this.limits);
    return this.serialStart(async () => {
      if (r.key) {
        const existing = [...this.uploads.values()].find((u) => u.key === r.key);
        if (existing && r.restart) {
          await this.abort(existing.id);
        } else if (existing) {
          if (existing.size !== r.size || existing.chunkSize !== r.chunkSize || existing.name !== r.name) {
            throw new CaptureError('CAPTURE_CONFLICT',
              `upload ${existing.id} under this key is for ${existing.name}, ${existing.size} bytes in chunks of ${existing.chunkSize}; ask to restart to replace it`);
          }
          if (r.sha256 && existing.declaredSha && r.sha256 !== existing.declaredSha) {
            throw new CaptureError('CAPTURE_CONFLICT', `upload ${existing.id} under this key declared another sha256; ask to restart to replace it`);
          }
          existing.lastActive = this.now();
          return { ...this.statusOf(existing), resumed: true };
        }
      }
      if (this.uploads.size >= this.limits.maxUploads) {
        throw new CaptureError('CAPTURE_TOO_MANY_UPLOADS', `${this.uploads.size} uploads are open, the most this server allows; finish or wait for one`);
      }
      const free = await this.freeSpace(this.root);
      const owed = [...this.uploads.values()].reduce((sum, u) => sum + Math.max(0, u.size - u.storedBytes), 0);
      const available = free - owed - this.limits.reserveBytes;
      if (r.size > available) {
        throw new CaptureError('CAPTURE_NO_SPACE',
          `a disk of ${r.size} bytes does not fit: ${Math.max(0, available)} bytes are free in the data directory after open uploads and a reserve of ${this.limits.reserveBytes}`);
      }
      const upload = await this.create(r);
      this.uploads.set(upload.id, upload);
      this.log.info('upload started', { id: upload.id, name: upload.name, size: upload.size, chunkSize: upload.chunkSize });
      return this.statusOf(upload);
    });
  }

  status(id: string): UploadStatus {
    const u = this.get(id);
    u.lastActive = this.now();
    return this.statusOf(u);
  }

  /** The chunks stored, in order: what a resuming client need not send again (unless its bytes changed). */
  chunkList(id: string): Array<{ index: number; sha256: string }> {
    const u = this.get(id);
    u.lastActive = this.now();
    return [...u.chunks.entries()].sort((a, b) => a[0] - b[0]).map(([index, sha256]) => ({ index, sha256 }));
  }

  /** Bytes chunk `index` of upload `id` must have; throws for an unknown upload or index. */
  chunkLength(id: string, index: number): number {
    const u = this.get(id);
    if (!Number.isSafeInteger(index) || index < 0 || index >= u.chunkCount) {
      throw new CaptureError('CAPTURE_BAD_REQUEST', `chunk ${index} is outside 0..${u.chunkCount - 1}`);
    }
    return Math.min(u.chunkSize, u.size - index * u.chunkSize);
  }

  /** A slot for one chunk body in flight; false when the server holds as many as it allows. */
  tryAcquireChunkSlot(): boolean {
    if (this.inflight >= this.limits.maxInflightChunks) return false;
    this.inflight++;
    return true;
  }

  releaseChunkSlot(): void {
    if (this.inflight > 0) this.inflight--;
  }

  /**
   * Stores chunk `index` after checking its length and sha256. `data` null
   * means an all-zero chunk sent without a body: the sha256 must then be that
   * of zeros of the chunk's length, and the region is left a hole.
   */
  async putChunk(id: string, index: number, sha256: string, data: Buffer | null): Promise<{ index: number; stored: boolean }> {
    const u = this.get(id);
    const length = this.chunkLength(id, index);
    if (!SHA256_HEX.test(sha256)) throw new CaptureError('CAPTURE_BAD_REQUEST', 'x-sha256 must be 64 lowercase hex digits');
    if (data !== null && data.length !== length) {
      throw new CaptureError('CAPTURE_CHUNK_LENGTH', `chunk ${index} must be ${length} bytes; ${data.length} were sent`);
    }
    const actual = data === null ? this.zeroShaOf(length) : sha256Of(data);
    if (actual !== sha256) {
      throw new CaptureError('CAPTURE_CHECKSUM_MISMATCH',
        data === null
          ? `chunk ${index} was sent as zeros, whose sha256 is ${actual}, not ${sha256}; not stored`
          : `chunk ${index} has sha256 ${actual}, not ${sha256} as sent; not stored`);
    }
    u.lastActive = this.now();
    return this.withLock(u, async () => {
      if (u.removed) throw new CaptureError('CAPTURE_NOT_FOUND', `upload ${id} was removed`);
      if (u.state !== 'open') throw new CaptureError('CAPTURE_CONFLICT', `upload ${id} is being finished`);
      const offset = index * u.chunkSize;
      await this.io(`writing chunk ${index} of ${id}`, async () => {
        const fh = await open(join(u.dir, UPLOAD_FILES.data), 'r+');
        try {
          if (data !== null) {
            await writeFully(fh, data, offset);
          } else {
            // Zeros: the region of a fresh sparse file already is; write only if it holds other bytes.
            const current = Buffer.alloc(length);
            await readFully(fh, current, offset);
            if (!isZero(current)) await writeFully(fh, current.fill(0), offset);
          }
          await fh.datasync();
        } finally {
          await fh.close();
        }
        await this.journal(u, `${index} ${sha256}\n`);
      });
      if (!u.chunks.has(index)) u.storedBytes += length;
      u.chunks.set(index, sha256);
      u.lastActive = this.now();
      return { index, stored: true };
    });
  }

  /**
   * Verifies the assembled disk (every chunk against its sha256, the whole
   * against `sha256`) and publishes it. See PublishCallback for what happens
   * when publishing fails.
   */
  async finish(id: string, sha256: string): Promise<FinishResult> {
    if (typeof sha256 !== 'string' || !SHA256_HEX.test(sha256)) {
      throw new CaptureError('CAPTURE_BAD_REQUEST', 'finish needs the whole disk\'s sha256 as 64 lowercase hex digits');
    }
    const u = this.get(id);
    if (u.state === 'finishing') throw new CaptureError('CAPTURE_CONFLICT', `upload ${id} is already being finished`);
    if (u.declaredSha && u.declaredSha !== sha256) {
      throw new CaptureError('CAPTURE_WHOLE_MISMATCH', `the sha256 given at finish differs from the one declared at start (${u.declaredSha})`);
    }
    u.lastActive = this.now();
    return this.withLock(u, async () => {
      if (u.removed) throw new CaptureError('CAPTURE_NOT_FOUND', `upload ${id} was removed`);
      if (u.state === 'finishing') throw new CaptureError('CAPTURE_CONFLICT', `upload ${id} is already being finished`);
      const missing = this.missing(u);
      if (missing.length > 0) {
        throw new CaptureError('CAPTURE_INCOMPLETE', `${missing.length} of ${u.chunkCount} chunks are missing (first: ${missing.slice(0, 8).join(', ')})`);
      }
      u.state = 'finishing';
      const rawPath = join(u.dir, UPLOAD_FILES.data);
      try {
        const { whole, bad } = await this.verify(u, rawPath);
        if (bad.length > 0) {
          // The bytes on disk no longer match what was stored: forget those chunks so the client resends them.
          for (const i of bad) {
            u.chunks.delete(i);
            u.storedBytes -= Math.min(u.chunkSize, u.size - i * u.chunkSize);
          }
          await this.io(`journalling dropped chunks of ${id}`, () => this.journal(u, bad.map((i) => `${i} -\n`).join('')));
          throw new CaptureError('CAPTURE_WHOLE_MISMATCH', `${bad.length} stored chunks no longer match their sha256 and were dropped (first: ${bad.slice(0, 8).join(', ')}); send them again`);
        }
        if (whole !== sha256) {
          throw new CaptureError('CAPTURE_WHOLE_MISMATCH', `the assembled disk has sha256 ${whole}, not ${sha256}`);
        }
        const disk: CapturedDisk = { uploadId: u.id, name: u.name, size: u.size, sha256: whole };
        let published: unknown;
        try {
          published = await this.options.publish(rawPath, disk);
        } catch (e) {
          const kept = await exists(rawPath);
          this.log.error('publishing a captured disk failed', { id, err: e, uploadKept: kept });
          if (!kept) await this.remove(u);
          throw new CaptureError('CAPTURE_PUBLISH_FAILED',
            `publishing ${u.name} failed: ${(e as Error).message ?? String(e)}${kept ? '; the upload is kept, finish may be retried' : ''}`, { cause: e });
        }
        await this.remove(u);
        this.log.info('capture published', { id, name: u.name, size: u.size, sha256: whole });
        return { id: u.id, name: u.name, size: u.size, sha256: whole, published };
      } finally {
        u.state = 'open';
        u.lastActive = this.now();
      }
    });
  }

  /** Discards an open upload and its files. */
  async abort(id: string): Promise<void> {
    const u = this.get(id);
    await this.withLock(u, () => this.remove(u));
    this.log.info('upload aborted', { id });
  }

  /** Discards uploads idle longer than idleTimeoutMs; returns their ids. */
  async sweep(): Promise<string[]> {
    const cutoff = this.now() - this.limits.idleTimeoutMs;
    const idle = [...this.uploads.values()].filter((u) => u.state === 'open' && u.lastActive < cutoff);
    const removed: string[] = [];
    for (const u of idle) {
      await this.withLock(u, async () => {
        // Looked at again under the lock: a request may have come in meanwhile.
        if (u.removed || u.lastActive >= cutoff || u.state !== 'open') return;
        await this.remove(u);
        removed.push(u.id);
        this.log.info('idle upload discarded', { id: u.id, name: u.name });
      });
    }
    return removed;
  }

  /** Ids of the uploads open now. */
  openUploads(): string[] {
    return [...this.uploads.keys()];
  }

  // --- internals ---

  private get(id: string): Upload {
    const u = UPLOAD_ID.test(id) ? this.uploads.get(id) : undefined;
    if (!u || u.removed) throw new CaptureError('CAPTURE_NOT_FOUND', `no open upload ${id}`);
    return u;
  }

  private statusOf(u: Upload): UploadStatus {
    return {
      id: u.id, name: u.name, size: u.size, chunkSize: u.chunkSize, chunks: u.chunkCount,
      present: u.chunks.size, sha256: u.declaredSha, state: u.state, resumed: false,
    };
  }

  private missing(u: Upload): number[] {
    const out: number[] = [];
    for (let i = 0; i < u.chunkCount; i++) if (!u.chunks.has(i)) out.push(i);
    return out;
  }

  private async create(r: ValidStart): Promise<Upload> {
    const id = randomBytes(16).toString('base64url');
    const dir = join(this.root, id);
    const meta: Meta = {
      version: 1, id, name: r.name, size: r.size, chunkSize: r.chunkSize,
      sha256: r.sha256 ?? null, key: r.key ?? null, createdAt: this.now(),
    };
    try {
      await mkdir(dir);
      const fh = await open(join(dir, UPLOAD_FILES.data), 'wx');
      try {
        await fh.truncate(r.size);
      } finally {
        await fh.close();
      }
      await writeFile(join(dir, UPLOAD_FILES.journal), '', { flag: 'wx' });
      // meta.json last, renamed into place: a folder without it is half-made and removed by open().
      await writeFile(join(dir, `${UPLOAD_FILES.meta}.tmp`), JSON.stringify(meta) + '\n');
      await rename(join(dir, `${UPLOAD_FILES.meta}.tmp`), join(dir, UPLOAD_FILES.meta));
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw new CaptureError('CAPTURE_IO', `creating upload ${id} failed: ${(e as Error).message}`, { cause: e });
    }
    return this.fromMeta(meta, dir, new Map());
  }

  private async load(id: string, dir: string): Promise<Upload> {
    const meta = JSON.parse(await readFile(join(dir, UPLOAD_FILES.meta), 'utf8')) as Meta;
    if (meta.version !== 1 || meta.id !== id) throw new Error('meta.json does not describe this folder');
    const v = validateStart({
      name: meta.name, size: meta.size, chunkSize: meta.chunkSize,
      ...(meta.sha256 ? { sha256: meta.sha256 } : {}), ...(meta.key ? { key: meta.key } : {}),
    }, { ...this.limits, maxSize: Number.MAX_SAFE_INTEGER, maxChunkSize: Number.MAX_SAFE_INTEGER, minChunkSize: 1 });
    const st = await stat(join(dir, UPLOAD_FILES.data));
    if (st.size !== v.size) throw new Error(`disk.raw is ${st.size} bytes, not ${v.size}`);
    const chunkCount = Math.ceil(v.size / v.chunkSize);
    const chunks = new Map<number, string>();
    const text = await readFile(join(dir, UPLOAD_FILES.journal), 'utf8');
    for (const line of text.split('\n')) {
      // A torn last line (crash during append) matches nothing and is skipped: that chunk counts as missing.
      const m = JOURNAL_LINE.exec(line);
      if (!m) continue;
      const index = Number(m[1]);
      if (index >= chunkCount) continue;
      if (m[2] === '-') chunks.delete(index);
      else chunks.set(index, m[2]!);
    }
    return this.fromMeta(meta, dir, chunks);
  }

  private fromMeta(meta: Meta, dir: string, chunks: Map<number, string>): Upload {
    const chunkCount = Math.ceil(meta.size / meta.chunkSize);
    let storedBytes = 0;
    for (const i of chunks.keys()) storedBytes += Math.min(meta.chunkSize, meta.size - i * meta.chunkSize);
    return {
      id: meta.id, dir, name: meta.name, size: meta.size, chunkSize: meta.chunkSize, chunkCount,
      declaredSha: meta.sha256, key: meta.key, createdAt: meta.createdAt, chunks, storedBytes,
      lastActive: this.now(), state: 'open', lock: Promise.resolve(), removed: false,
    };
  }

  private async verify(u: Upload, rawPath: string): Promise<{ whole: string; bad: number[] }> {
    return this.io(`verifying ${u.id}`, async () => {
      const whole = createHash('sha256');
      const bad: number[] = [];
      const buf = Buffer.allocUnsafe(u.chunkSize);
      const fh = await open(rawPath, 'r');
      try {
        for (let i = 0; i < u.chunkCount; i++) {
          const length = Math.min(u.chunkSize, u.size - i * u.chunkSize);
          const view = buf.subarray(0, length);
          await readFully(fh, view, i * u.chunkSize);
          whole.update(view);
          if (sha256Of(view) !== u.chunks.get(i)) bad.push(i);
        }
      } finally {
        await fh.close();
      }
      return { whole: whole.digest('hex'), bad };
    });
  }

  private async remove(u: Upload): Promise<void> {
    if (u.removed) return;
    u.removed = true;
    this.uploads.delete(u.id);
    await rm(u.dir, { recursive: true, force: true });
  }

  private async journal(u: Upload, lines: string): Promise<void> {
    const path = join(u.dir, UPLOAD_FILES.journal);
    await appendFile(path, lines);
    const fh = await open(path, 'r');
    try {
      await fh.datasync();
    } finally {
      await fh.close();
    }
  }

  private withLock<T>(u: Upload, fn: () => Promise<T>): Promise<T> {
    const run = u.lock.then(fn, fn);
    u.lock = run.catch(() => undefined);
    return run;
  }

  private serialStart<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.startLock.then(fn, fn);
    this.startLock = run.catch(() => undefined);
    return run;
  }

  private async io<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof CaptureError) throw e;
      throw new CaptureError('CAPTURE_IO', `${what} failed: ${(e as Error).message}`, { cause: e });
    }
  }

  private zeroShaOf(length: number): string {
    let sha = this.zeroSha.get(length);
    if (!sha) {
      sha = sha256Of(Buffer.alloc(length));
      if (this.zeroSha.size < 4) this.zeroSha.set(length, sha);
    }
    return sha;
  }
}

interface ValidStart {
  name: string;
  size: number;
  chunkSize: number;
  sha256?: string;
  key?: string;
  restart: boolean;
}

/** Checks a start request from the network: every field's type, form and limit. */
export function validateStart(req: unknown, limits: CaptureLimits): ValidStart {
  if (typeof req !== 'object' || req === null || Array.isArray(req)) {
    throw new CaptureError('CAPTURE_BAD_REQUEST', 'start needs a JSON object {name, size, chunkSize, sha256?, key?, restart?}');
  }
  const r = req as Record<string, unknown>;
  if (typeof r.name !== 'string' || !CAPTURE_NAME.test(r.name)) {
    throw new CaptureError('CAPTURE_BAD_REQUEST', 'name must be 1-64 characters of letters, digits, dot, underscore and dash, starting with a letter or digit');
  }
  if (!Number.isSafeInteger(r.size) || (r.size as number) <= 0) {
    throw new CaptureError('CAPTURE_BAD_REQUEST', 'size must be a positive whole number of bytes');
  }
  if (!Number.isSafeInteger(r.chunkSize) || (r.chunkSize as number) <= 0) {
    throw new CaptureError('CAPTURE_BAD_REQUEST', 'chunkSize must be a positive whole number of bytes');
  }
  const size = r.size as number;
  const chunkSize = r.chunkSize as number;
  if (r.sha256 !== undefined && r.sha256 !== null && (typeof r.sha256 !== 'string' || !SHA256_HEX.test(r.sha256))) {
    throw new CaptureError('CAPTURE_BAD_REQUEST', 'sha256 must be 64 lowercase hex digits');
  }
  if (r.key !== undefined && r.key !== null && (typeof r.key !== 'string' || !RESUME_KEY.test(r.key))) {
    throw new CaptureError('CAPTURE_BAD_REQUEST', 'key must be 8-128 characters of letters, digits and . _ : -');
  }
  if (r.restart !== undefined && typeof r.restart !== 'boolean') {
    throw new CaptureError('CAPTURE_BAD_REQUEST', 'restart must be true or false');
  }
  if (size > limits.maxSize) {
    throw new CaptureError('CAPTURE_TOO_LARGE', `a disk of ${size} bytes is larger than the largest capture this server accepts (${limits.maxSize} bytes)`);
  }
  if (chunkSize > limits.maxChunkSize || chunkSize < limits.minChunkSize) {
    throw new CaptureError('CAPTURE_CHUNK_TOO_LARGE', `chunk size ${chunkSize} is outside ${limits.minChunkSize}..${limits.maxChunkSize} bytes`);
  }
  return {
    name: r.name, size, chunkSize,
    ...(typeof r.sha256 === 'string' ? { sha256: r.sha256 } : {}),
    ...(typeof r.key === 'string' ? { key: r.key } : {}),
    restart: r.restart === true,
  };
}

function validateLimits(l: CaptureLimits): CaptureLimits {
  const problems: string[] = [];
  for (const [k, v] of Object.entries(l)) {
    if (!Number.isSafeInteger(v) || (v as number) < 0) problems.push(`${k} must be a non-negative whole number`);
  }
  if (l.maxChunkSize < 1 || l.minChunkSize < 1 || l.minChunkSize > l.maxChunkSize) problems.push('chunk size limits need 1 <= minChunkSize <= maxChunkSize');
  if (l.maxUploads < 1 || l.maxInflightChunks < 1) problems.push('maxUploads and maxInflightChunks must be at least 1');
  if (problems.length) throw new CaptureError('CAPTURE_BAD_REQUEST', `capture limits: ${problems.join('; ')}`);
  return l;
}

async function defaultFreeSpace(dir: string): Promise<number> {
  const s = await statfs(dir);
  return Number(s.bavail) * Number(s.bsize);
}

function sha256Of(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function isZero(buf: Buffer): boolean {
  // Compare in 64 KiB slices against one zero page; Buffer.equals is a memcmp.
  const zero = ZERO_PAGE;
  for (let off = 0; off < buf.length; off += zero.length) {
    const slice = buf.subarray(off, Math.min(buf.length, off + zero.length));
    if (!slice.equals(zero.subarray(0, slice.length))) return false;
  }
  return true;
}
const ZERO_PAGE = Buffer.alloc(64 * 1024);

type Handle = Awaited<ReturnType<typeof open>>;

async function writeFully(fh: Handle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    if (bytesWritten <= 0) throw new Error('short write');
    done += bytesWritten;
  }
}

async function readFully(fh: Handle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead <= 0) throw new Error(`short read at ${position + done}`);
    done += bytesRead;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
