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
import { constants as fsc, readdirSync, renameSync, rmdirSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { chmod, mkdir, open, readdir, rename, rm, stat, statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isDisklessError } from '../lib/errors.js';
import { silentLogger, type Logger } from '../lib/log.js';
import { CowOverlay } from '../storage/cow/overlay.js';
import { FileDevice } from '../storage/file-device.js';
import { assertNbdBootable, extractBootFiles, inspectDisk, type DiskInspection, type KernelReport } from '../images/inspect.js';
import {
  Store, describeDependants, requireImageName, requireMac,
  type BootInfo, type ClientChanges, type ClientMode, type ClientRecord, type ImageRecord, type ImageVersionRecord, type OverlayRecord,
  type VersionDependants,
} from '../state/store.js';
import { keepsOverlay } from '../state/policy.js';
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
  /** The version its next boot runs (its pin, else the current one); null when there is none. */
  targetVersion: number | null;
  /**
   * Its current boot runs another version than the one it would boot now
   * (a newer one was published, or it was rolled back, or its pin moved):
   * it takes the change at its next boot (a persistent client: at a reset).
   */
  stale: boolean;
}

export interface AddVersionOptions {
  /**
   * Publish the version, making it the one clients boot (default true).
   * false holds it back: only clients pinned to it boot it, until
   * publishVersion().
   */
  publish?: boolean;
  /**
   * Take the file instead of copying it: it must be on the data directory's
   * file system, and is gone afterwards (put back if the operation fails).
   */
  move?: boolean;
}

export interface ImportVersionOptions extends AddVersionOptions {
  /** The kernel version to boot; default the image's own default (its /vmlinuz link, else the newest). */
  kernel?: string;
  /** Kernel arguments this version always gets. */
  kernelArgs?: string[];
  /** Merged into the version's boot info (where it came from, a build key). */
  extraInfo?: Record<string, unknown>;
}

export interface CommitOptions {
  /** Publish the new version at once (default true); false holds it for clients pinned to it. */
  publish?: boolean;
  /** Commit even though a newer version was published since the draft began (its changes are not in the draft). */
  force?: boolean;
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
   * Adds a raw disk file as the next version of `name` (creating the image
   * if new), with its sha256, read-only, published unless `publish` is
   * false. The bytes are not looked at: a version added this way has no boot
   * files, so clients cannot boot it (importVersion() makes bootable ones).
   */
  async addImageVersion(name: string, file: string, options: AddVersionOptions = {}): Promise<ImageVersionRecord> {
    requireImageName(name);
    const staged = await this.stage(name, file, options);
    try {
      return await this.commitStaged(name, staged, options, () => null);
    } catch (err) {
      await this.unstage(staged);
      throw err;
    }
  }

  /**
   * Adds a raw disk as the next version of `name` and makes it bootable,
   * all or nothing: the disk is inspected (partition table, a Linux root on
   * ext2/3/4, its kernels; the chosen kernel's initramfs must be able to
   * mount the root over NBD), that kernel and its initramfs are extracted
   * beside the version (`images/<name>/<n>.boot/`), and the version is
   * recorded with what the boot service needs (boot_info). Every refusal
   * (IMAGES_* codes) leaves the catalogue and the data directory as they were.
   */
  async importVersion(name: string, file: string, options: ImportVersionOptions = {}): Promise<ImageVersionRecord> {
    requireImageName(name);
    if (options.kernelArgs && !options.kernelArgs.every((a) => typeof a === 'string' && a.length > 0 && !/[\s\0]/.test(a))) {
      throw new AppError('APP_INVALID_ARGUMENT', 'kernel arguments must be non-empty words without spaces');
    }
    const staged = await this.stage(name, file, options);
    const bootTmp = `${staged.imageDirRel}/.incoming-${process.pid}-${randomBytes(4).toString('hex')}.boot`;
    try {
      const inspection = await inspectDisk(this.dir.abs(staged.tmpRel), { requireNbd: false });
      const kernel = assertNbdBootable(inspection, options.kernel ?? inspection.defaultKernel);
      const files = await extractBootFiles(this.dir.abs(staged.tmpRel), inspection, kernel.version, this.dir.abs(bootTmp));
      const record = await this.commitStaged(name, staged, options, (version) => {
        const bootRel = this.dir.bootDir(name, version);
        renameSync(this.dir.abs(bootTmp), this.dir.abs(bootRel));
        return bootInfoOf(inspection, kernel, files.kernel.sha256, files.initrd.sha256, bootRel, options);
      });
      this.log.info('image version is bootable', { image: name, version: record.version, kernel: kernel.version, flavour: record.bootInfo?.initramfsFlavour });
      return record;
    } catch (err) {
      await this.unstage(staged);
      await rm(this.dir.abs(bootTmp), { recursive: true, force: true });
      throw err;
    }
  }

  /** Makes a held version the image's current one. */
  publishVersion(name: string, version: number): ImageVersionRecord {
    const v = this.store.images.publish(requireImageName(name), version);
    this.log.info('image version published', { image: name, version });
    return v;
  }

  /**
   * Moves the image's current version back to `version`, by default the
   * newest published version older than the current one. Running clients
   * keep what they booted; the next boot of each client not pinned
   * elsewhere runs the version rolled back to.
   */
  rollback(name: string, version?: number): { image: ImageRecord; from: number | null; to: number } {
    requireImageName(name);
    return this.store.transaction(() => {
      const image = this.store.images.require(name);
      const published = this.store.images.versions(name).filter((v) => v.published).map((v) => v.version);
      let to = version;
      if (to === undefined) {
        const older = published.filter((v) => image.currentVersion === null || v < image.currentVersion);
        if (older.length === 0) {
          throw new AppError('APP_NOTHING_TO_ROLL_BACK', `image "${name}" has no published version older than ${image.currentVersion === null ? 'none' : `the current one (${image.currentVersion})`}`);
        }
        to = older[older.length - 1]!;
      } else if (!published.includes(to)) {
        this.store.images.requireVersion(name, to);
        throw new AppError('APP_VERSION_NOT_PUBLISHED', `${name} version ${to} was never published; publish it instead of rolling back to it`);
      }
      const after = this.store.images.setCurrent(name, to);
      this.log.info('image rolled back', { image: name, from: image.currentVersion, to });
      return { image: after, from: image.currentVersion, to };
    });
  }

  /** What keeps a version from being deleted. */
  versionDependants(name: string, version: number): VersionDependants {
    return this.store.images.dependants(requireImageName(name), version);
  }

  /**
   * Deletes a version and its files, only when no client, overlay or pin
   * depends on it and it is not the current version; a refusal
   * (APP_VERSION_IN_USE) names what depends on it.
   */
  async deleteVersion(name: string, version: number): Promise<{ image: string; version: number; removed: string[] }> {
    requireImageName(name);
    const v = this.store.transaction(() => {
      const d = this.store.images.dependants(name, version);
      if (d.current || d.pinnedBy.length > 0 || d.runningOn.length > 0 || d.overlaysOf.length > 0) {
        throw new AppError('APP_VERSION_IN_USE', `${name} version ${version} cannot be deleted: ${describeDependants(d)}`);
      }
      return this.store.images.removeVersion(name, version);
    });
    const removed = await this.removeVersionFiles(v);
    this.log.info('image version deleted', { image: name, version, removed });
    return { image: name, version, removed };
  }

  /**
   * Deletes an image with every version, when no client is assigned to it
   * and none of its versions is in use.
   */
  async deleteImage(name: string): Promise<{ image: string; versions: number[]; removed: string[] }> {
    requireImageName(name);
    const versions = this.store.transaction(() => {
      const image = this.store.images.require(name);
      const clients = this.store.clients.list().filter((c) => c.imageId === image.id).map((c) => c.mac);
      if (clients.length > 0) throw new AppError('APP_IMAGE_IN_USE', `image "${name}" cannot be deleted: it is assigned to ${clients.join(', ')}`);
      const all = this.store.images.versions(name);
      for (const v of all) {
        const d = this.store.images.dependants(name, v.version);
        const others = { ...d, current: false };
        if (others.pinnedBy.length > 0 || others.runningOn.length > 0 || others.overlaysOf.length > 0) {
          throw new AppError('APP_VERSION_IN_USE', `image "${name}" cannot be deleted: version ${v.version} is in use: ${describeDependants(others)}`);
        }
      }
      this.store.images.clearCurrent(name);
      for (const v of all) this.store.images.removeVersion(name, v.version);
      this.store.images.remove(name);
      return all;
    });
    const removed: string[] = [];
    for (const v of versions) removed.push(...(await this.removeVersionFiles(v)));
    removeIfEmpty(this.dir.abs(this.dir.imageDir(name)));
    this.log.info('image deleted', { image: name, versions: versions.map((v) => v.version) });
    return { image: name, versions: versions.map((v) => v.version), removed };
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
      const discard = overlay !== null && !keepsOverlay(client, overlay);
      if (overlay && discard) {
        this.store.overlays.remove(overlay.id);
        discarded.push(overlay);
        overlay = null;
      }
      overlay ??= this.store.overlays.create(client.id, target.id, (mac2, seq) => this.dir.overlayDir(mac2, seq), { draft: client.maintenance });
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
   * Changes what a client boots next time (image, pin, mode), its name or
   * its overlay quota. Its current boot is not touched.
   */
  updateClient(mac: string, changes: ClientChanges): ClientView {
    const c = this.store.clients.update(mac, changes);
    this.log.info('client changed', { mac: c.mac, changes });
    return this.view(c);
  }

  /**
   * Deletes a client and its overlay. A running client loses its disk: its
   * NBD connections are cut within seconds.
   */
  async deleteClient(mac: string): Promise<{ client: ClientRecord; discarded: OverlayRecord | null } & DiscardResult> {
    const m = requireMac(mac);
    const { client, overlay } = this.store.transaction(() => {
      const c = this.store.clients.require(m);
      const o = this.store.overlays.forClient(c.id);
      if (o) this.store.overlays.remove(o.id);
      this.store.clients.remove(m);
      return { client: c, overlay: o };
    });
    this.log.info('client deleted', { mac: m, overlay: overlay?.dir ?? null });
    const result = await this.afterDiscard(overlay ? [overlay] : []);
    return { client, discarded: overlay, ...result };
  }

  /**
   * Maintenance on: the client's next boot writes into a draft on top of the
   * version it boots (an earlier non-draft overlay is discarded then), kept
   * across its reboots, until commitMaintenance() makes it a version.
   * Off: the draft is discarded at the next boot. Neither touches a boot in
   * progress.
   */
  setMaintenance(mac: string, on: boolean): ClientView {
    const c = this.store.clients.setMaintenance(mac, on);
    this.log.info(on ? 'maintenance on: the next boot starts a draft' : 'maintenance off: the draft is discarded at the next boot', { mac: c.mac });
    return this.view(c);
  }

  /**
   * Turns a maintenance client's draft into a new immutable version of its
   * image: the draft is read through, over its base, into a new raw disk
   * (flattened), which is imported like any other (inspected, kernel and
   * initramfs extracted) and published unless `publish` is false. The client
   * leaves maintenance, its draft is discarded, and its next boot runs the
   * image's current version like any client.
   *
   * The client must be shut down, so its file systems are clean: while a
   * server has its overlay open the commit is refused (APP_CLIENT_RUNNING).
   */
  async commitMaintenance(mac: string, options: CommitOptions = {}): Promise<ImageVersionRecord> {
    const m = requireMac(mac);
    const client = this.store.clients.require(m);
    if (!client.maintenance) throw new AppError('APP_NOT_IN_MAINTENANCE', `client ${m} is not in maintenance; turn it on and boot the client to make a draft`);
    const draft = this.store.overlays.forClient(client.id);
    if (!draft || !draft.draft) throw new AppError('APP_NO_DRAFT', `client ${m} has no draft yet; boot it once in maintenance, make the changes, shut it down, then commit`);
    const base = this.store.images.versionById(draft.versionId)!;
    const current = this.store.images.current(base.image);
    if (current && current.version !== base.version && !options.force) {
      throw new AppError('APP_DRAFT_OUTDATED', `the draft of ${m} is based on ${base.image} version ${base.version}, but version ${current.version} was published since; its changes would be lost. Reset the client to start a new draft, or commit with force`);
    }
    await this.ensureSpace(base.size, `committing the draft of ${m}`);
    const imageDirRel = this.dir.imageDir(base.image);
    const tmpRel = `${imageDirRel}/.commit-${process.pid}-${randomBytes(4).toString('hex')}.raw`;
    const started = Date.now();
    try {
      await flattenOverlay(this.dir.abs(base.path), versionIdentity(base), this.dir.abs(this.dir.zeroMap(base.image, base.version)), this.dir.abs(draft.dir), this.dir.abs(tmpRel), m);
      const v = await this.importVersion(base.image, this.dir.abs(tmpRel), {
        move: true,
        ...(options.publish !== undefined ? { publish: options.publish } : {}),
        extraInfo: { origin: 'commit', committedFrom: m, baseVersion: base.version },
      });
      const discarded = this.store.transaction(() => {
        const o = this.store.overlays.forClient(client.id);
        if (o && o.id === draft.id) this.store.overlays.remove(o.id);
        this.store.clients.setMaintenance(m, false);
        this.store.clients.endBoot(m);
        return o && o.id === draft.id ? [o] : [];
      });
      await this.afterDiscard(discarded);
      this.log.info('draft committed', { mac: m, image: v.image, version: v.version, baseVersion: base.version, published: v.published, ms: Date.now() - started });
      return v;
    } finally {
      await rm(this.dir.abs(tmpRel), { force: true });
    }
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

  /** Copies (or moves) `file` into the image's folder under a temporary name, hashing it. */
  private async stage(name: string, file: string, options: AddVersionOptions): Promise<Staged> {
    const src = await statSource(file);
    const imageDirRel = this.dir.imageDir(name);
    await mkdir(this.dir.abs(imageDirRel), { recursive: true, mode: DIR_MODE });
    const tmpRel = `${imageDirRel}/.incoming-${process.pid}-${randomBytes(4).toString('hex')}.raw`;
    const tmp = this.dir.abs(tmpRel);
    const started = Date.now();
    if (options.move) {
      try {
        await rename(file, tmp);
      } catch (err) {
        throw new AppError('APP_IMAGE_FILE_INVALID', `cannot move ${file} into the data directory (it must be on the same file system): ${(err as Error).message}`, { cause: err });
      }
      try {
        const sha256 = await hashFile(tmp, src.size);
        await chmod(tmp, IMAGE_FILE_MODE);
        return { imageDirRel, tmpRel, size: src.size, sha256, movedFrom: file, started };
      } catch (err) {
        await rename(tmp, file).catch(() => undefined);
        throw err;
      }
    }
    await this.ensureSpace(src.allocated, `adding ${file}`);
    try {
      const sha256 = await copyAndHash(file, tmp, src.size);
      const after = await stat(file);
      if (after.size !== src.size || after.mtimeMs !== src.mtimeMs) {
        throw new AppError('APP_IMAGE_FILE_INVALID', `${file} changed while it was being copied; copy it again when nothing writes to it`);
      }
      await chmod(tmp, IMAGE_FILE_MODE);
      return { imageDirRel, tmpRel, size: src.size, sha256, movedFrom: null, started };
    } catch (err) {
      try { unlinkSync(tmp); } catch { /* not created */ }
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
        throw new AppError('APP_NO_SPACE', `the data directory filled up while adding ${file}`, { cause: err });
      }
      throw err;
    }
  }

  /** Puts a staged file back (moved) or deletes it (copied). */
  private async unstage(staged: Staged): Promise<void> {
    const tmp = this.dir.abs(staged.tmpRel);
    if (staged.movedFrom) {
      try {
        await rename(tmp, staged.movedFrom);
        return;
      } catch { /* fall through: delete it */ }
    }
    await rm(tmp, { force: true });
    removeIfEmpty(this.dir.abs(staged.imageDirRel));
  }

  /**
   * Gives a staged file its version number and records it, in one store
   * transaction: the rename into `<n>.raw`, `place(n)` (which moves the boot
   * files and returns the boot info), the row, the publication. A failure
   * undoes the renames; the staged file is the caller's to remove.
   */
  private async commitStaged(name: string, staged: Staged, options: AddVersionOptions, place: (version: number) => BootInfo | null): Promise<ImageVersionRecord> {
    // The zero map is built before the version can be seen: the sidecar is
    // keyed by inode and mtime, which the rename keeps.
    const zmapTmp = `${staged.tmpRel}.zmap`;
    try {
      const dev = await FileDevice.open(this.dir.abs(staged.tmpRel), { readOnly: true, identity: `sha256:${staged.sha256}`, allocationMap: this.dir.abs(zmapTmp) });
      await dev.close();
    } catch (err) {
      this.log.warn('zero map not built; it will be built at first use', { image: name, err });
    }
    let placed: { raw: string; boot: string | null; zmap: string | null } | null = null;
    let record: ImageVersionRecord;
    try {
      record = this.store.transaction(() => {
        placed = null;
        this.store.images.ensure(name);
        const version = this.store.images.nextVersion(name);
        const rel = this.dir.versionFile(name, version);
        // No row names version `version` yet, so files there are left from a crash: replace them.
        renameSync(this.dir.abs(staged.tmpRel), this.dir.abs(rel));
        placed = { raw: rel, boot: null, zmap: null };
        try {
          renameSync(this.dir.abs(zmapTmp), this.dir.abs(this.dir.zeroMap(name, version)));
          placed.zmap = this.dir.zeroMap(name, version);
        } catch {
          rmSync(this.dir.abs(this.dir.zeroMap(name, version)), { force: true });
        }
        const bootInfo = place(version);
        if (bootInfo) placed.boot = this.dir.bootDir(name, version);
        const v = this.store.images.addVersion({ image: name, version, path: rel, size: staged.size, sha256: staged.sha256, bootInfo });
        return options.publish === false ? v : this.store.images.publish(name, version);
      });
    } catch (err) {
      const p = placed as { raw: string; boot: string | null; zmap: string | null } | null;
      if (p) {
        try { renameSync(this.dir.abs(p.raw), this.dir.abs(staged.tmpRel)); } catch { /* gone */ }
        if (p.boot) await rm(this.dir.abs(p.boot), { recursive: true, force: true });
        if (p.zmap) await rm(this.dir.abs(p.zmap), { force: true });
      }
      await rm(this.dir.abs(zmapTmp), { force: true });
      throw err;
    }
    await syncDir(this.dir.abs(staged.imageDirRel));
    this.log.info('image version added', {
      image: name, version: record.version, size: record.size, sha256: record.sha256, published: record.published, ms: Date.now() - staged.started,
    });
    return record;
  }

  private async removeVersionFiles(v: ImageVersionRecord): Promise<string[]> {
    const removed: string[] = [];
    for (const rel of [v.path, this.dir.zeroMap(v.image, v.version), this.dir.bootDir(v.image, v.version)]) {
      try {
        await stat(this.dir.abs(rel));
      } catch {
        continue;
      }
      await rm(this.dir.abs(rel), { recursive: true, force: true });
      removed.push(rel);
    }
    return removed;
  }

  /** Refuses (APP_NO_SPACE) when the data directory has less than `bytes` free. */
  private async ensureSpace(bytes: number, what: string): Promise<void> {
    const fs = await statfs(this.dir.root);
    const free = fs.bavail * fs.bsize;
    if (bytes > free) {
      throw new AppError('APP_NO_SPACE', `${what} needs ${bytes} bytes but the data directory ${this.dir.root} has ${free} free`);
    }
  }

  private view(c: ClientRecord): ClientView {
    const o = this.store.overlays.forClient(c.id);
    let overlay: OverlayView | null = null;
    if (o) {
      const path = this.dir.abs(o.dir);
      overlay = { ...o, path, diskBytes: diskUsage(path) };
    }
    const target = this.targetOf(c);
    const stale = c.bootId !== null && target !== null && c.bootVersionId !== target.id;
    return { ...c, exportName: this.exportNameOf(c), overlay, targetVersion: target?.version ?? null, stale };
  }

  /** The version a client would boot now, or null when there is none. */
  private targetOf(c: ClientRecord): ImageVersionRecord | null {
    try {
      return this.bootTarget(c);
    } catch {
      return null;
    }
  }

  /**
   * The version a client should boot now: its pin (which may name a held,
   * unpublished version: that is how a test group tries one), else its
   * image's current version.
   */
  private bootTarget(client: ClientRecord): ImageVersionRecord {
    const v = client.pinnedVersion !== null
      ? this.store.images.version(client.image, client.pinnedVersion)
      : this.store.images.current(client.image);
    if (!v || (client.pinnedVersion === null && !v.published)) {
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

async function statSource(file: string): Promise<{ size: number; mtimeMs: number; allocated: number }> {
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
  return { size: st.size, mtimeMs: st.mtimeMs, allocated: Math.min(st.size, st.blocks * 512) };
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

interface Staged {
  imageDirRel: string;
  tmpRel: string;
  size: number;
  sha256: string;
  /** Where a moved file came from (it goes back there on failure). */
  movedFrom: string | null;
  started: number;
}

async function hashFile(path: string, size: number): Promise<string> {
  const hash = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(COPY_CHUNK);
    let pos = 0;
    while (pos < size) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(COPY_CHUNK, size - pos), pos);
      if (bytesRead === 0) throw new AppError('APP_IMAGE_FILE_INVALID', `${path} became shorter while it was being read`);
      hash.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}

/** The boot_info of an imported version (the keys src/boot/service.ts reads, and what `image show` lists). */
function bootInfoOf(inspection: DiskInspection, kernel: KernelReport, kernelSha256: string, initrdSha256: string, bootRel: string, options: ImportVersionOptions): BootInfo {
  return {
    ...(options.extraInfo ?? {}),
    kernels: inspection.kernels.map((k) => k.kernelPath),
    kernelDetails: inspection.kernels.map((k) => ({
      version: k.version, kernel: k.kernelPath, initrd: k.initrdPath ?? null, nbd: k.initramfs?.nbd.supported ?? false,
      flavour: k.initramfs?.nbd.flavour ?? null,
    })),
    defaultKernelFrom: inspection.defaultKernelFrom,
    kernelVersion: kernel.version,
    kernelFile: `${bootRel}/vmlinuz`,
    initrdFile: `${bootRel}/initrd.img`,
    kernelSha256,
    initrdSha256,
    rootUuid: inspection.root.uuid,
    rootDevice: inspection.root.nbdDevice,
    rootPartition: inspection.root.partition,
    initramfsFlavour: kernel.initramfs?.nbd.flavour ?? inspection.initramfsFlavour ?? 'initramfs-tools',
    os: inspection.osRelease.PRETTY_NAME ?? inspection.osRelease.NAME ?? null,
    ...(options.kernelArgs ? { kernelArgs: options.kernelArgs } : {}),
  };
}

/**
 * Writes what a client sees through its overlay (over its base) into a new
 * sparse raw file `out`. Holes and zero extents are not written.
 * STORAGE_OVERLAY_IN_USE (a server has it open) becomes APP_CLIENT_RUNNING.
 */
async function flattenOverlay(basePath: string, identity: string, zeroMap: string, overlayDir: string, out: string, mac: string): Promise<void> {
  const base = await FileDevice.open(basePath, { readOnly: true, identity, allocationMap: zeroMap });
  let overlay: CowOverlay;
  try {
    overlay = await CowOverlay.open({ base, dir: overlayDir });
  } catch (err) {
    await base.close();
    if (isDisklessError(err, 'STORAGE_OVERLAY_IN_USE')) {
      throw new AppError('APP_CLIENT_RUNNING', `the disk of ${mac} is open in the running server: shut the client down (its file systems must be clean) and commit again once it is off (the server keeps a disk open for nbd.overlayGraceMs after the last connection)`, { cause: err });
    }
    throw err;
  }
  try {
    const output = await open(out, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, IMAGE_FILE_MODE);
    try {
      const buf = Buffer.allocUnsafe(COPY_CHUNK);
      let pos = 0;
      while (pos < overlay.size) {
        const extents = await overlay.extents(pos, Math.min(64 * COPY_CHUNK, overlay.size - pos));
        for (const e of extents) {
          const end = Math.min(e.offset + e.length, overlay.size);
          if (!e.hole && !e.zero) {
            for (let off = e.offset; off < end; off += COPY_CHUNK) {
              const n = Math.min(COPY_CHUNK, end - off);
              const data = await overlay.read(off, n, buf);
              for (let b = 0; b < n; b += SPARSE_BLOCK) {
                const block = data.subarray(b, Math.min(b + SPARSE_BLOCK, n));
                if (isZero(block)) continue;
                let done = 0;
                while (done < block.length) done += (await output.write(block, done, block.length - done, off + b + done)).bytesWritten;
              }
            }
          }
          pos = end;
        }
        if (extents.length === 0) throw new AppError('APP_IMAGE_FILE_INVALID', `the overlay of ${mac} reported no extents at ${pos}`);
      }
      await output.truncate(overlay.size);
      await output.sync();
    } finally {
      await output.close();
    }
  } finally {
    await overlay.close();
    await base.close();
  }
}
