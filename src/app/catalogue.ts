/**
 * Catalogue operations: what the CLI commands, and later the HTTP API and
 * the boot path, do to images and clients. Each joins the store (one
 * transaction per operation) and the files of the data directory.
 *
 * Files and rows are kept consistent by ordering, not by hope:
 * - An image version's file is copied and synced under a temporary name
 *   first; the rename into `images/<image>/<n>.raw` and the row happen in
 *   one store transaction, and the rename is undone if the row fails. A
 *   crash leaves at worst an unreferenced temporary file.
 * - A discarded overlay loses its row in the transaction that discards it
 *   (a new boot of an ephemeral client, a reset); its directory is deleted
 *   afterwards, once nothing has it open. A directory without a row is
 *   garbage, deleted by sweepOverlays() (at server start, and after every
 *   discard), never opened again: a new overlay always gets a new folder.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsc, readdirSync, renameSync, rmdirSync, statSync, unlinkSync } from 'node:fs';
import { chmod, mkdir, open, readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isDisklessError } from '../lib/errors.js';
import { silentLogger, type Logger } from '../lib/log.js';
import { CowOverlay } from '../storage/cow/overlay.js';
import { FileDevice } from '../storage/file-device.js';
import {
  Store, requireImageName, requireMac,
  type ClientMode, type ClientRecord, type ImageRecord, type ImageVersionRecord, type OverlayRecord,
} from '../state/store.js';
import { DataDir, DIR_MODE, IMAGE_FILE_MODE } from './data-dir.js';
import { AppError } from './errors.js';
import { clientExportName } from './export-names.js';

/** Disks are whole sectors. */
const SECTOR = 512;
/** Copy granularity; all-zero blocks of this size are skipped, keeping the copy sparse. */
const COPY_CHUNK = 1024 * 1024;
const SPARSE_BLOCK = 64 * 1024;

export interface CatalogueOptions {
  logger?: Logger;
  now?: () => number;
}

export interface ImageSummary extends ImageRecord {
  versions: number;
  /** Size in bytes of the current version, if any. */
  size: number | null;
}

export interface OverlayView extends OverlayRecord {
  /** Absolute path. */
  path: string;
  /** Bytes the overlay's files take on disk (0 before its first use). */
  diskBytes: number;
}

export interface ClientView extends ClientRecord {
  /** The NBD export of the current boot; null when there is no current boot. */
  exportName: string | null;
  overlay: OverlayView | null;
}

export interface BootStarted {
  client: ClientRecord;
  bootId: string;
  token: string;
  exportName: string;
  /** The version this boot runs. */
  image: string;
  version: number;
  /** The overlay was discarded and a fresh one starts (ephemeral clients). */
  overlayReset: boolean;
  /**
   * A persistent overlay stays on the version it was made on: when the
   * client should boot another one (a new current version, a pin), this
   * names it; a reset moves the client there.
   */
  pendingVersion: number | null;
}

export interface DiscardResult {
  /** Overlay directories deleted. */
  removed: string[];
  /** Still open in a running server; deleted when it releases them. */
  busy: string[];
}

export type DiscardListener = (overlay: OverlayRecord) => Promise<void> | void;

export class Catalogue {
  private readonly log: Logger;
  private readonly listeners = new Set<DiscardListener>();

  constructor(
    readonly store: Store,
    readonly dir: DataDir,
    options: CatalogueOptions = {},
  ) {
    this.log = options.logger ?? silentLogger;
  }

  /** Opens (creating if needed) the data directory and its catalogue. */
  static open(dataDir: string, options: CatalogueOptions = {}): Catalogue {
    let dir: DataDir;
    try {
      dir = DataDir.prepare(dataDir);
    } catch (err) {
      throw new AppError('APP_DATA_DIR', `cannot use the data directory ${dataDir}: ${(err as Error).message}`, { cause: err });
    }
    const store = Store.open(dir.root, options.now ? { now: options.now } : {});
    return new Catalogue(store, dir, options);
  }

  close(): void {
    this.store.close();
  }

  /**
   * Called, and awaited, when an overlay is discarded, before its directory
   * is deleted: the export resolver closes the instance it holds.
   */
  onDiscard(listener: DiscardListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // ---- images ----

  /**
   * Copies a raw disk file into the data directory as the next version of
   * `name` (creating the image if new), with its sha256, read-only, and
   * publishes it as the current version unless `publish` is false.
   */
  async addImageVersion(name: string, file: string, options: { publish?: boolean } = {}): Promise<ImageVersionRecord> {
    requireImageName(name);
    const src = await statSource(file);
    const imageDirRel = this.dir.imageDir(name);
    await mkdir(this.dir.abs(imageDirRel), { recursive: true, mode: DIR_MODE });
    const tmp = this.dir.abs(`${imageDirRel}/.incoming-${process.pid}-${randomBytes(4).toString('hex')}.raw`);
    const started = Date.now();
    let sha256: string;
    try {
      sha256 = await copyAndHash(file, tmp, src.size);
      const after = await stat(file);
      if (after.size !== src.size || after.mtimeMs !== src.mtimeMs) {
        throw new AppError('APP_IMAGE_FILE_INVALID', `${file} changed while it was being copied; copy it again when nothing writes to it`);
      }
      await chmod(tmp, IMAGE_FILE_MODE);
    } catch (err) {
      try { unlinkSync(tmp); } catch { /* not created */ }
      throw err;
    }
    let finalAbs: string | null = null;
    let record: ImageVersionRecord;
    try {
      record = this.store.transaction(() => {
        this.store.images.ensure(name);
        const version = this.store.images.nextVersion(name);
        const rel = this.dir.versionFile(name, version);
        // No row names version `version` yet, so a file there is left from a crash: replace it.
        renameSync(tmp, this.dir.abs(rel));
        finalAbs = this.dir.abs(rel);
        const v = this.store.images.addVersion({ image: name, version, path: rel, size: src.size, sha256 });
        return options.publish === false ? v : this.store.images.publish(name, version);
      });
    } catch (err) {
      try { unlinkSync(finalAbs ?? tmp); } catch { /* gone */ }
      throw err;
    }
    await syncDir(this.dir.abs(imageDirRel));
    this.log.info('image version added', { image: name, version: record.version, size: record.size, sha256, ms: Date.now() - started });
    // Build the zero map now rather than at the first client's connection.
    try {
      const dev = await FileDevice.open(this.dir.abs(record.path), {
        readOnly: true, identity: versionIdentity(record), allocationMap: this.dir.abs(this.dir.zeroMap(name, record.version)),
      });
      await dev.close();
    } catch (err) {
      this.log.warn('zero map not built; it will be built at first use', { image: name, version: record.version, err });
    }
    return record;
  }

  listImages(): ImageSummary[] {
    return this.store.images.list().map((image) => {
      const versions = this.store.images.versions(image.name);
      const current = versions.find((v) => v.version === image.currentVersion);
      return { ...image, versions: versions.length, size: current ? current.size : null };
    });
  }

  showImage(name: string): { image: ImageRecord; versions: ImageVersionRecord[] } {
    return { image: this.store.images.require(name), versions: this.store.images.versions(name) };
  }

  // ---- clients ----

  addClient(input: { mac: string; image: string; mode?: ClientMode; name?: string | null; pinnedVersion?: number | null }): ClientRecord {
    return this.store.clients.add(input);
  }

  listClients(): ClientView[] {
    return this.store.clients.list().map((c) => this.view(c));
  }

  showClient(mac: string): ClientView {
    return this.view(this.store.clients.require(mac));
  }

  /** The export name of the client's current boot. */
  exportNameOf(client: ClientRecord): string | null {
    return client.bootToken ? clientExportName(client.mac, client.bootToken) : null;
  }

  /**
   * What a new boot of a client does (the CLI's `client new-boot`; the HTTP
   * script fetch calls it too): a new boot id and export token, so the
   * previous boot's export name stops working; an ephemeral client's overlay
   * is discarded and a fresh one made on the version it should boot; a
   * persistent client keeps its overlay. `address`, when known (the source
   * of the script fetch), binds the boot to it at once.
   */
  async newBoot(mac: string, options: { address?: string | null } = {}): Promise<BootStarted> {
    const m = requireMac(mac);
    const discarded: OverlayRecord[] = [];
    const started = this.store.transaction(() => {
      const client = this.store.clients.require(m);
      const target = this.bootTarget(client);
      let overlay = this.store.overlays.forClient(client.id);
      if (overlay && client.mode === 'ephemeral') {
        this.store.overlays.remove(overlay.id);
        discarded.push(overlay);
        overlay = null;
      }
      overlay ??= this.store.overlays.create(client.id, target.id, (mac2, seq) => this.dir.overlayDir(mac2, seq));
      const bootId = randomBytes(8).toString('hex');
      const token = randomBytes(16).toString('hex');
      const after = this.store.clients.beginBoot(m, { versionId: overlay.versionId, bootId, token, address: options.address ?? null });
      return {
        client: after, bootId, token, exportName: clientExportName(m, token), image: overlay.image, version: overlay.version,
        overlayReset: discarded.length > 0, pendingVersion: overlay.versionId === target.id ? null : target.version,
      };
    });
    this.log.info('client boot started', { mac: m, bootId: started.bootId, image: started.image, version: started.version, overlayReset: started.overlayReset });
    if (started.pendingVersion !== null) {
      this.log.info('persistent overlay stays on its version; reset the client to move it', { mac: m, version: started.version, pending: started.pendingVersion });
    }
    await this.afterDiscard(discarded);
    return started;
  }

  /**
   * Discards a client's overlay and ends its current boot (the export name
   * stops working); its next boot starts from a clean image.
   */
  async resetClient(mac: string): Promise<{ client: ClientRecord; discarded: OverlayRecord | null } & DiscardResult> {
    const m = requireMac(mac);
    const { client, overlay } = this.store.transaction(() => {
      const c = this.store.clients.require(m);
      const o = this.store.overlays.forClient(c.id);
      if (o) this.store.overlays.remove(o.id);
      return { client: this.store.clients.endBoot(m), overlay: o };
    });
    this.log.info('client reset', { mac: m, overlay: overlay?.dir ?? null });
    const result = await this.afterDiscard(overlay ? [overlay] : []);
    return { client, discarded: overlay, ...result };
  }

  /**
   * Deletes every overlay directory that no catalogue row refers to, unless
   * a process has it open (then it is left for a later sweep).
   */
  async sweepOverlays(): Promise<DiscardResult> {
    const result: DiscardResult = { removed: [], busy: [] };
    const root = this.dir.abs('overlays');
    let clients: string[];
    try {
      clients = await readdir(root);
    } catch {
      return result;
    }
    for (const c of clients) {
      let seqs: string[];
      try {
        if (!(await stat(join(root, c))).isDirectory()) continue;
        seqs = await readdir(join(root, c));
      } catch {
        continue;
      }
      for (const s of seqs) await this.destroyIfUnreferenced(`overlays/${c}/${s}`, result);
      removeIfEmpty(join(root, c));
    }
    if (result.removed.length > 0 || result.busy.length > 0) this.log.info('overlays swept', { removed: result.removed.length, busy: result.busy.length });
    return result;
  }

  // ---- internals ----

  private view(c: ClientRecord): ClientView {
    const o = this.store.overlays.forClient(c.id);
    let overlay: OverlayView | null = null;
    if (o) {
      const path = this.dir.abs(o.dir);
      overlay = { ...o, path, diskBytes: diskUsage(path) };
    }
    return { ...c, exportName: this.exportNameOf(c), overlay };
  }

  /** The version a client should boot now: its pin, else its image's current version. */
  private bootTarget(client: ClientRecord): ImageVersionRecord {
    const v = client.pinnedVersion !== null
      ? this.store.images.version(client.image, client.pinnedVersion)
      : this.store.images.current(client.image);
    if (!v || !v.published) {
      const what = client.pinnedVersion !== null ? `version ${client.pinnedVersion} of image "${client.image}" (pinned)` : `image "${client.image}"`;
      throw new AppError('APP_NO_PUBLISHED_VERSION', `client ${client.mac} cannot boot: ${what} has no published version`);
    }
    return v;
  }

  private async afterDiscard(overlays: OverlayRecord[]): Promise<DiscardResult> {
    const result: DiscardResult = { removed: [], busy: [] };
    for (const o of overlays) {
      for (const l of this.listeners) {
        try {
          await l(o);
        } catch (err) {
          this.log.warn('overlay discard listener failed', { overlay: o.dir, err });
        }
      }
      await this.destroyIfUnreferenced(o.dir, result);
      removeIfEmpty(dirname(this.dir.abs(o.dir)));
    }
    return result;
  }

  private async destroyIfUnreferenced(rel: string, result: DiscardResult): Promise<void> {
    // Checked right before the deletion starts: rows are never recreated for
    // a folder, and CowOverlay.destroy() refuses a folder open in this
    // process (in the same tick) or in another live one.
    if (this.store.overlays.list().some((o) => o.dir === rel)) return;
    try {
      await CowOverlay.destroy(this.dir.abs(rel));
      result.removed.push(rel);
    } catch (err) {
      if (isDisklessError(err, 'STORAGE_OVERLAY_IN_USE')) {
        result.busy.push(rel);
        this.log.info('discarded overlay is still open; it is deleted when released', { overlay: rel });
      } else {
        this.log.warn('discarded overlay could not be deleted', { overlay: rel, err });
      }
    }
  }
}

/** The identity an overlay records for its base: the version's content hash. */
export function versionIdentity(v: ImageVersionRecord): string {
  return `sha256:${v.sha256}`;
}

async function statSource(file: string): Promise<{ size: number; mtimeMs: number }> {
  let st;
  try {
    st = await stat(file);
  } catch (err) {
    throw new AppError('APP_IMAGE_FILE_INVALID', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (!st.isFile()) throw new AppError('APP_IMAGE_FILE_INVALID', `${file} is not a regular file`);
  if (st.size === 0 || st.size % SECTOR !== 0) {
    throw new AppError('APP_IMAGE_FILE_INVALID', `${file} is ${st.size} bytes; a raw disk image is a positive multiple of ${SECTOR} bytes`);
  }
  return { size: st.size, mtimeMs: st.mtimeMs };
}

/**
 * Copies `src` to a new file `dst` (which must not exist), hashing every
 * byte, skipping all-zero blocks so the copy stays sparse, and syncing it.
 */
async function copyAndHash(src: string, dst: string, size: number): Promise<string> {
  const hash = createHash('sha256');
  const input = await open(src, 'r');
  try {
    const output = await open(dst, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    try {
      const buf = Buffer.allocUnsafe(COPY_CHUNK);
      let pos = 0;
      while (pos < size) {
        const want = Math.min(COPY_CHUNK, size - pos);
        let got = 0;
        while (got < want) {
          const { bytesRead } = await input.read(buf, got, want - got, pos + got);
          if (bytesRead === 0) throw new AppError('APP_IMAGE_FILE_INVALID', `${src} became shorter while it was being copied`);
          got += bytesRead;
        }
        const chunk = buf.subarray(0, want);
        hash.update(chunk);
        for (let off = 0; off < want; off += SPARSE_BLOCK) {
          const block = chunk.subarray(off, Math.min(off + SPARSE_BLOCK, want));
          if (isZero(block)) continue;
          let done = 0;
          while (done < block.length) done += (await output.write(block, done, block.length - done, pos + off + done)).bytesWritten;
        }
        pos += want;
      }
      await output.truncate(size);
      await output.sync();
    } finally {
      await output.close();
    }
  } finally {
    await input.close();
  }
  return hash.digest('hex');
}

const ZEROS = Buffer.alloc(SPARSE_BLOCK);
function isZero(b: Buffer): boolean {
  return b.equals(b.length === ZEROS.length ? ZEROS : ZEROS.subarray(0, b.length));
}

async function syncDir(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function removeIfEmpty(path: string): void {
  try {
    if (readdirSync(path).length === 0) rmdirSync(path);
  } catch {
    // Gone already, or not empty any more.
  }
}

/** Bytes the files of a folder take on disk (allocated blocks, so sparse files count what they use). */
function diskUsage(path: string): number {
  let total = 0;
  try {
    for (const name of readdirSync(path)) {
      const st = statSync(join(path, name));
      if (st.isFile()) total += st.blocks * 512;
    }
  } catch {
    return 0;
  }
  return total;
}
