/**
 * CatalogueExportResolver: the export policy of the NBD server over the
 * catalogue (docs/exports.md has the user-facing account).
 *
 * Names (export-names.ts):
 * - `<mac>-<token>`: a client's own disk, its overlay on the image version
 *   its current boot runs. The token is 128 random bits issued at each boot
 *   and given only in that client's boot script; a wrong or old token, an
 *   unknown MAC and a client with no current boot all get the same answer,
 *   NBD_EXPORT_UNKNOWN, so the answers tell a prober nothing.
 * - `image/<image>[/<version>]`: a published version, read-only, only to
 *   addresses in nbd.readOnlyExportsFrom (default loopback); other addresses
 *   get NBD_EXPORT_FORBIDDEN whatever the name.
 *
 * Address binding (nbd.bindClientAddress, on by default): a boot is bound
 * to the source address that fetched its script, or else to the first
 * address that opens its export; after that, other addresses are refused
 * with NBD_EXPORT_FORBIDDEN. A new boot clears the binding.
 *
 * Instances. One CowOverlay per client, shared by all of that client's
 * connections (the overlay refuses a second instance, and NBD multi-conn
 * needs one view): opens are counted, and when the last connection is
 * released the overlay stays open for nbd.overlayGraceMs so a reconnecting
 * nbd-client finds it, then it is closed. Bases (FileDevice, read-only) are
 * shared by every overlay and read-only export of their version, counted
 * the same way and closed with the last user.
 *
 * The catalogue is the truth: every open reads the client's row and its
 * overlay row. When the overlay row is not the one held open (the overlay
 * was discarded, by this process or by the CLI in another), the old
 * instance is retired: closed at once, so connections of the previous boot
 * get ESHUTDOWN instead of writing into a discarded disk, and its folder
 * deleted. Opens, retirements and grace closes of one client are
 * serialized by a per-client lock.
 */
import { timingSafeEqual } from 'node:crypto';
import { isIPv4, isIPv6, type BlockList } from 'node:net';
import { DisklessError, isDisklessError } from '../lib/errors.js';
import { silentLogger, type Logger } from '../lib/log.js';
import { plainAddress } from '../lib/net.js';
import type { ExportInfo, ExportResolver, OpenedExport, Peer } from '../protocols/nbd/exports.js';
import { CowOverlay } from '../storage/cow/overlay.js';
import { FileDevice } from '../storage/file-device.js';
import type { ClientRecord, ImageVersionRecord, OverlayRecord } from '../state/store.js';
import { versionIdentity, type Catalogue } from './catalogue.js';
import { networkList } from './config.js';
import { DEFAULT_OVERLAY_GRACE_MS, DEFAULT_READ_ONLY_FROM } from './config-schema.js';
import { imageExportName, parseExportName } from './export-names.js';

export interface CatalogueExportResolverOptions {
  catalogue: Catalogue;
  logger?: Logger;
  /** How long an overlay stays open after its last connection ends. */
  graceMs?: number;
  /** Refuse a client's export to addresses other than the one its boot is bound to. Default true. */
  bindClientAddress?: boolean;
  /** Networks allowed to open read-only image exports. Default loopback. */
  readOnlyFrom?: readonly string[];
  /** Cluster size of new overlays (default: the overlay's own). */
  clusterSize?: number;
  /**
   * How often open overlays are checked against the catalogue, so a discard
   * made by another process (the CLI) cuts off the connections still using
   * the discarded overlay. 0 turns the check off. Default DISCARD_CHECK_MS.
   */
  discardCheckMs?: number;
}

/** A CLI reset reaches a running server's connections within this time. */
export const DISCARD_CHECK_MS = 2000;

interface BaseEntry {
  device: Promise<FileDevice>;
  refs: number;
}

interface OverlayEntry {
  clientId: number;
  mac: string;
  overlayId: number;
  dir: string;
  versionId: number;
  overlay: CowOverlay;
  refs: number;
  timer: NodeJS.Timeout | null;
  /** Closed (or closing) and out of the map; releases only count down. */
  retired: boolean;
}

const unknown = (name: string): DisklessError => new DisklessError('NBD_EXPORT_UNKNOWN', `no export named "${name}"`);

export class CatalogueExportResolver implements ExportResolver {
  private readonly catalogue: Catalogue;
  private readonly log: Logger;
  private readonly graceMs: number;
  private readonly bindClientAddress: boolean;
  private readonly readOnlyFrom: BlockList;
  private readonly clusterSize: number | undefined;
  private readonly entries = new Map<number, OverlayEntry>();
  private readonly bases = new Map<number, BaseEntry>();
  private readonly locks = new Map<number, Promise<unknown>>();
  private readonly unsubscribe: () => void;
  private readonly discardTimer: NodeJS.Timeout | null;
  private closed = false;

  constructor(options: CatalogueExportResolverOptions) {
    this.catalogue = options.catalogue;
    this.log = (options.logger ?? silentLogger).child({ component: 'exports' });
    this.graceMs = options.graceMs ?? DEFAULT_OVERLAY_GRACE_MS;
    this.bindClientAddress = options.bindClientAddress ?? true;
    this.readOnlyFrom = networkList(options.readOnlyFrom ?? DEFAULT_READ_ONLY_FROM);
    this.clusterSize = options.clusterSize;
    this.unsubscribe = this.catalogue.onDiscard((o) => this.discarded(o));
    const every = options.discardCheckMs ?? DISCARD_CHECK_MS;
    this.discardTimer = every > 0 ? setInterval(() => this.checkDiscards(), every) : null;
    this.discardTimer?.unref();
  }

  async list(peer: Peer): Promise<ExportInfo[]> {
    // Client exports are never listed: the token is the secret.
    if (this.closed || !this.readOnlyAllowed(peer)) return [];
    const out: ExportInfo[] = [];
    const store = this.catalogue.store;
    for (const image of store.images.list()) {
      const versions = store.images.versions(image.name).filter((v) => v.published);
      if (image.currentVersion !== null) out.push({ name: imageExportName(image.name), description: `${image.name} (current: version ${image.currentVersion}), read-only` });
      for (const v of versions) out.push({ name: imageExportName(image.name, v.version), description: `${image.name} version ${v.version}, read-only` });
    }
    return out;
  }

  async open(name: string, peer: Peer): Promise<OpenedExport> {
    if (this.closed) throw new DisklessError('NBD_SERVER_CLOSED', 'the server is shutting down', 'ESHUTDOWN');
    const parsed = parseExportName(name);
    if (!parsed) throw unknown(name);
    if (parsed.kind === 'image') return this.openImage(name, parsed.image, parsed.version, peer);
    return this.openClient(name, parsed.mac, parsed.token, peer);
  }

  /** The overlay instance open for a client now, if any (for tests and statistics). */
  openOverlay(mac: string): CowOverlay | undefined {
    for (const e of this.entries.values()) if (e.mac === mac) return e.overlay;
    return undefined;
  }

  /** Connections holding each open overlay, by MAC. */
  overlayRefs(): Map<string, number> {
    return new Map([...this.entries.values()].map((e) => [e.mac, e.refs]));
  }

  get openBaseCount(): number {
    return this.bases.size;
  }

  /**
   * Closes every overlay and base. Call after the NBD server has closed
   * (which releases every export); opens from here on are refused.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    if (this.discardTimer) clearInterval(this.discardTimer);
    for (const e of this.entries.values()) if (e.timer) clearTimeout(e.timer);
    await Promise.allSettled([...this.locks.values()]);
    const entries = [...this.entries.values()];
    this.entries.clear();
    for (const e of entries) {
      e.retired = true;
      await this.closeEntry(e);
    }
    for (const [id, b] of [...this.bases]) {
      this.bases.delete(id);
      await b.device.then((d) => d.close()).catch(() => undefined);
    }
  }

  // ---- client exports ----

  private async openClient(name: string, mac: string, token: string, peer: Peer): Promise<OpenedExport> {
    const store = this.catalogue.store;
    const address = plainAddress(peer.address);
    const known = store.clients.get(mac);
    if (!known) throw unknown(name);
    return this.withLock(known.id, async () => {
      if (this.closed) throw new DisklessError('NBD_SERVER_CLOSED', 'the server is shutting down', 'ESHUTDOWN');
      // Read under the lock: a boot started while this open waited for it
      // must be seen, or a stale name could reopen a discarded overlay.
      const client = store.clients.byId(known.id);
      if (!client || !client.bootToken || !client.bootId || !sameToken(client.bootToken, token)) throw unknown(name);
      this.checkAddress(client, address, name);
      const row = store.overlays.forClient(client.id);
      if (!row) throw unknown(name);
      let e = this.entries.get(client.id);
      if (e && (e.overlayId !== row.id || e.dir !== row.dir)) {
        await this.retire(e, 'a newer overlay replaced it');
        e = undefined;
      }
      if (!e) {
        e = await this.openEntry(client, row);
        this.entries.set(client.id, e);
        // Once per instance: a client's NBD_OPT_INFO then NBD_OPT_GO, or a
        // reconnect within the grace time, is one connection of its boot.
        this.recordConnect(client, address, row);
      }
      const entry = e;
      if (entry.timer) {
        clearTimeout(entry.timer);
        entry.timer = null;
      }
      entry.refs++;
      let released = false;
      return {
        name,
        description: `disk of ${client.name ?? client.mac} (${row.image} version ${row.version}, copy-on-write)`,
        device: entry.overlay,
        release: async () => {
          if (released) return;
          released = true;
          await this.release(entry);
        },
      };
    });
  }

  private checkAddress(client: ClientRecord, address: string, name: string): void {
    const store = this.catalogue.store;
    if (!this.bindClientAddress) {
      store.clients.seen(client.mac, address);
      return;
    }
    if (client.bootAddress === null) {
      if (store.clients.bindAddress(client.mac, client.bootId!, address)) {
        this.log.info('client boot bound to its address', { mac: client.mac, address });
        return;
      }
      // Another connection bound it first, or a new boot started meanwhile.
      const now = store.clients.get(client.mac);
      if (!now || now.bootId !== client.bootId) throw unknown(name);
      client = now;
    }
    if (client.bootAddress !== address) {
      this.log.warn('client export refused: wrong source address', { mac: client.mac, address, boundTo: client.bootAddress });
      throw new DisklessError('NBD_EXPORT_FORBIDDEN', `the export of ${client.mac} is bound to another address`);
    }
  }

  private async openEntry(client: ClientRecord, row: OverlayRecord): Promise<OverlayEntry> {
    const version = this.catalogue.store.images.versionById(row.versionId);
    if (!version) throw new DisklessError('NBD_EXPORT_UNKNOWN', `overlay ${row.dir} refers to a missing image version`);
    const base = await this.acquireBase(version);
    try {
      const overlay = await CowOverlay.open({
        base,
        dir: this.catalogue.dir.abs(row.dir),
        logger: this.log.child({ mac: client.mac }),
        ...(this.clusterSize !== undefined ? { clusterSize: this.clusterSize } : {}),
        ...(client.quotaBytes !== null ? { quotaBytes: client.quotaBytes } : {}),
      });
      this.log.info('client overlay opened', { mac: client.mac, overlay: row.dir, image: row.image, version: row.version });
      return { clientId: client.id, mac: client.mac, overlayId: row.id, dir: row.dir, versionId: version.id, overlay, refs: 0, timer: null, retired: false };
    } catch (err) {
      await this.releaseBase(version.id);
      throw err;
    }
  }

  private async release(e: OverlayEntry): Promise<void> {
    e.refs--;
    if (e.refs > 0 || e.retired) return;
    const closeIdle = (): Promise<void> =>
      this.withLock(e.clientId, async () => {
        e.timer = null;
        if (e.refs > 0 || e.retired || this.entries.get(e.clientId) !== e) return;
        this.entries.delete(e.clientId);
        e.retired = true;
        await this.closeEntry(e);
      });
    if (this.graceMs === 0) {
      await closeIdle();
      return;
    }
    e.timer = setTimeout(() => void closeIdle().catch((err) => this.log.error('closing an idle overlay failed', { mac: e.mac, err })), this.graceMs);
    e.timer.unref();
  }

  /** Closes an entry now (stale connections get ESHUTDOWN) and takes it out of the map. */
  private async retire(e: OverlayEntry, why: string): Promise<void> {
    if (e.retired) return;
    e.retired = true;
    if (e.timer) clearTimeout(e.timer);
    if (this.entries.get(e.clientId) === e) this.entries.delete(e.clientId);
    this.log.info('client overlay retired', { mac: e.mac, overlay: e.dir, connections: e.refs, why });
    await this.closeEntry(e);
  }

  /** Closes the overlay, releases its base, and deletes the folder if the overlay was discarded. */
  private async closeEntry(e: OverlayEntry): Promise<void> {
    try {
      await e.overlay.close();
    } catch (err) {
      this.log.error('closing a client overlay failed', { mac: e.mac, overlay: e.dir, err });
    }
    await this.releaseBase(e.versionId);
    this.log.debug('client overlay closed', { mac: e.mac, overlay: e.dir });
    if (this.catalogue.store.isOpen && !this.catalogue.store.overlays.get(e.overlayId)) {
      try {
        await CowOverlay.destroy(this.catalogue.dir.abs(e.dir));
        this.log.info('discarded overlay deleted', { mac: e.mac, overlay: e.dir });
      } catch (err) {
        if (!isDisklessError(err, 'STORAGE_OVERLAY_IN_USE')) this.log.warn('discarded overlay could not be deleted', { overlay: e.dir, err });
      }
    }
  }

  /** The catalogue discarded an overlay (new boot, reset): retire the instance held for it. */
  private async discarded(o: OverlayRecord): Promise<void> {
    await this.withLock(o.clientId, async () => {
      const e = this.entries.get(o.clientId);
      if (e && e.overlayId === o.id) await this.retire(e, 'discarded');
    });
  }

  /** Retires open overlays whose catalogue row is gone or replaced (a discard by another process). */
  /** A quota changed in the catalogue (by the API, or the CLI in another process) reaches the open overlay. */
  private applyQuota(e: OverlayEntry): void {
    if (e.retired) return;
    const quota = this.catalogue.store.clients.byId(e.clientId)?.quotaBytes ?? undefined;
    if (e.overlay.quotaBytes === quota) return;
    e.overlay.setQuotaBytes(quota);
    this.log.info('overlay quota changed', { mac: e.mac, quotaBytes: quota ?? null, allocatedBytes: e.overlay.allocatedBytes() });
  }

  private checkDiscards(): void {
    if (this.closed || !this.catalogue.store.isOpen) return;
    for (const e of [...this.entries.values()]) {
      let current: OverlayRecord | null;
      try {
        current = this.catalogue.store.overlays.forClient(e.clientId);
      } catch (err) {
        this.log.warn('overlay check failed', { err });
        return;
      }
      if (current && current.id === e.overlayId && current.dir === e.dir) {
        this.applyQuota(e);
        continue;
      }
      void this.withLock(e.clientId, async () => {
        if (this.entries.get(e.clientId) === e) await this.retire(e, 'discarded in the catalogue');
      }).catch((err) => this.log.error('retiring a discarded overlay failed', { mac: e.mac, err }));
    }
  }

  private recordConnect(client: ClientRecord, address: string, row: OverlayRecord): void {
    try {
      this.catalogue.store.events.record({
        mac: client.mac, step: 'nbd-connect', bootId: client.bootId,
        detail: { address, image: row.image, version: row.version },
      });
    } catch (err) {
      this.log.warn('boot event not recorded', { mac: client.mac, err });
    }
  }

  // ---- read-only image exports ----

  private readOnlyAllowed(peer: Peer): boolean {
    const address = plainAddress(peer.address);
    if (isIPv4(address)) return this.readOnlyFrom.check(address, 'ipv4');
    if (isIPv6(address)) return this.readOnlyFrom.check(address, 'ipv6');
    return false;
  }

  private async openImage(name: string, image: string, version: number | null, peer: Peer): Promise<OpenedExport> {
    // The address is checked first, so a refused peer learns nothing about which images exist.
    if (!this.readOnlyAllowed(peer)) throw new DisklessError('NBD_EXPORT_FORBIDDEN', `read-only image exports are not open to ${peer.address}`);
    const store = this.catalogue.store;
    const img = store.images.get(image);
    const v = img === null ? null : version === null ? (img.currentVersion === null ? null : store.images.version(image, img.currentVersion)) : store.images.version(image, version);
    if (!v || !v.published) throw unknown(name);
    const device = await this.acquireBase(v);
    let released = false;
    return {
      name,
      description: `${image} version ${v.version}, read-only`,
      device,
      release: async () => {
        if (released) return;
        released = true;
        await this.releaseBase(v.id);
      },
    };
  }

  // ---- shared bases ----

  private async acquireBase(v: ImageVersionRecord): Promise<FileDevice> {
    let b = this.bases.get(v.id);
    if (!b) {
      const device = FileDevice.open(this.catalogue.dir.abs(v.path), {
        readOnly: true,
        identity: versionIdentity(v),
        allocationMap: this.catalogue.dir.abs(this.catalogue.dir.zeroMap(v.image, v.version)),
        logger: this.log,
      });
      b = { device, refs: 0 };
      this.bases.set(v.id, b);
      const entry = b;
      device.catch(() => {
        if (this.bases.get(v.id) === entry) this.bases.delete(v.id);
      });
    }
    b.refs++;
    try {
      return await b.device;
    } catch (err) {
      b.refs--;
      throw err;
    }
  }

  private async releaseBase(versionId: number): Promise<void> {
    const b = this.bases.get(versionId);
    if (!b) return;
    b.refs--;
    if (b.refs > 0) return;
    this.bases.delete(versionId);
    await b.device.then((d) => d.close()).catch((err) => this.log.warn('closing an image version failed', { versionId, err }));
  }

  private withLock<T>(clientId: number, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(clientId) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(clientId, tail);
    void tail.then(() => {
      if (this.locks.get(clientId) === tail) this.locks.delete(clientId);
    });
    return run;
  }
}

function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
