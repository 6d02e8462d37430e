/**
 * The BootService over the catalogue: what iPXE is told to boot, and the
 * files it then fetches.
 *
 * A script fetch for a catalogue client whose image version can boot is a
 * NEW BOOT: the catalogue's newBoot() issues a boot id (in the kernel and
 * initrd URLs) and an NBD export token (in `nbdroot=`), records the version
 * booted, resets an ephemeral client's overlay and binds the boot to the
 * fetching address. The previous boot's URLs and export name stop working
 * at once. Anything else gets a script that says why on the client's screen:
 * - unknown MAC, `boot.unknownClients`:
 *     `ignore`          says how to register it, then exits to the firmware;
 *     `register-script` the same, retrying until the machine is added;
 *     `default-image`   adds it as an ephemeral client of the default image
 *                       and boots it;
 * - known but not ready (no published version, a version without extracted
 *   boot files or root file system): says which, and retries.
 * A failure inside the server is a retrying script too, never an HTTP error
 * (iPXE would only show "Operation not permitted" and stop).
 *
 * What a version needs to boot is read from its `boot_info` (see
 * VersionBoot): the kernel and initramfs extracted into the data directory,
 * the root file system and the initramfs flavour. The image tooling writes
 * it when it imports or builds a version.
 *
 * Trust: the boot routes are open (firmware holds no credentials), so anyone
 * on the boot LAN may start a new boot of any MAC, as with any PXE setup.
 * What an attacker cannot do is read another client's disk: the export
 * token is 128 random bits given only in that boot's script, and the boot is
 * bound to the address that fetched it (nbd.bindClientAddress).
 */
import { stat } from 'node:fs/promises';
import { isAbsolute, join, resolve, sep } from 'node:path';
import { isDisklessError } from '../lib/errors.js';
import { silentLogger, type Logger } from '../lib/log.js';
import { keepsOverlay } from '../state/policy.js';
import type { BootInfo, ClientRecord, ImageVersionRecord, Store } from '../state/store.js';
import type { BootFile, BootFileName, BootRequest, BootService } from './boot-service.js';
import { BootError } from './errors.js';
import type { BootEventSink } from './events.js';
import { renderBootScript, renderMessageScript } from './ipxe-script.js';
import { assertSafeToken, kernelCommandLine, NBD_DEFAULT_PORT, type InitramfsFlavour } from './kernel-cmdline.js';
import type { UnknownClientPolicy } from './dhcp-policy.js';

// ---------------------------------------------------------------------------
// What a version needs to boot

/**
 * The keys of an image version's `boot_info` this service reads. Paths are
 * relative to the data directory (like every path in the catalogue).
 *
 *   kernelFile        "images/debian12/3.boot/vmlinuz"      required
 *   initrdFile        "images/debian12/3.boot/initrd.img"   required
 *   rootUuid          "0b8d...-..."  file system UUID of the root   one of these two
 *   rootPartition     1 (0 = the whole disk is the file system)    is required
 *   initramfsFlavour  "initramfs-tools" (default) | "dracut"
 *   kernelArgs        ["quiet"]  arguments this version always gets
 */
export interface VersionBoot {
  kernelFile: string;
  initrdFile: string;
  /** At least one of the two; the command line picks what its NBD form can use. */
  root: { uuid?: string; partition?: number };
  flavour: InitramfsFlavour;
  kernelArgs: string[];
}

export type VersionBootResult = { ok: true; boot: VersionBoot } | { ok: false; reason: string };

/** Reads (and checks the shape of) what a version's boot_info says about booting it. */
export function readVersionBoot(info: BootInfo | null): VersionBootResult {
  if (!info) return { ok: false, reason: 'it has no boot information yet (kernel and initramfs not extracted)' };
  const { kernelFile, initrdFile, rootUuid, rootPartition, initramfsFlavour, kernelArgs } = info as Record<string, unknown>;
  const relPath = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 4096 && !isAbsolute(v) && !v.includes('\0');
  if (!relPath(kernelFile) || !relPath(initrdFile)) {
    return { ok: false, reason: 'its kernel and initramfs have not been extracted (boot_info lacks kernelFile/initrdFile)' };
  }
  const root: VersionBoot['root'] = {};
  if (typeof rootUuid === 'string' && rootUuid.length > 0) root.uuid = rootUuid;
  if (Number.isInteger(rootPartition) && (rootPartition as number) >= 0) root.partition = rootPartition as number;
  if (root.uuid === undefined && root.partition === undefined) return { ok: false, reason: 'its root file system is not known (boot_info lacks rootUuid/rootPartition)' };
  const flavour = initramfsFlavour ?? 'initramfs-tools';
  if (flavour !== 'initramfs-tools' && flavour !== 'dracut') return { ok: false, reason: `its initramfs flavour ${JSON.stringify(flavour)} is not supported` };
  if (kernelArgs !== undefined && (!Array.isArray(kernelArgs) || !kernelArgs.every((a) => typeof a === 'string'))) {
    return { ok: false, reason: 'its kernelArgs are not a list of strings' };
  }
  return { ok: true, boot: { kernelFile, initrdFile, root, flavour, kernelArgs: (kernelArgs as string[] | undefined) ?? [] } };
}

/**
 * The root argument for a command line: by UUID where the initramfs can use
 * it, else by partition. initramfs-tools' nbd hook names the device (which
 * root=UUID needs) only in its port-less form, so off port 10809 it needs the
 * partition number.
 */
export function chooseRoot(boot: Pick<VersionBoot, 'root' | 'flavour'>, nbdPort: number): { uuid: string } | { partition: number } {
  const { uuid, partition } = boot.root;
  const uuidWorks = boot.flavour === 'dracut' || nbdPort === NBD_DEFAULT_PORT;
  if (uuid !== undefined && (uuidWorks || partition === undefined)) return { uuid };
  return { partition: partition! };
}

// ---------------------------------------------------------------------------
// The service

/** What newBoot() returns that this service uses (the catalogue's BootStarted has it). */
export interface StartedBoot {
  client: ClientRecord;
  bootId: string;
  exportName: string;
  overlayReset: boolean;
}

/**
 * Starts a new boot of a catalogue client (the app's Catalogue.newBoot):
 * new boot id and export token, an ephemeral client's overlay reset, the
 * boot bound to `address`.
 */
export type NewBootFn = (mac: string, options: { address?: string | null }) => Promise<StartedBoot>;

export interface CatalogueBootServiceOptions {
  store: Store;
  /** The data directory (absolute) the catalogue's paths are relative to. */
  dataDir: string;
  newBoot: NewBootFn;
  events: BootEventSink;
  /**
   * Where clients reach the NBD server. A wildcard host (0.0.0.0, ::) means
   * "the address the client reached the HTTP server by".
   */
  nbd: { host: string; port: number };
  unknownClients: UnknownClientPolicy;
  /** The image unknown machines boot under `default-image`. */
  defaultImage?: string;
  /** Appended to every command line after the version's own arguments (config boot.extraKernelArgs). */
  extraKernelArgs?: readonly string[];
  /** Folder of the iPXE binaries served at /firmware/<name> (UEFI HTTP boot); null serves none. */
  ipxeDir?: string | null;
  /** Names served from ipxeDir. Default: the x86 iPXE binaries. */
  firmwareNames?: readonly string[];
  /** How the initramfs gets its address: from iPXE's settings (no second DHCP) or by DHCP. */
  network?: 'ipxe' | 'dhcp';
  consoles?: readonly string[];
  logger?: Logger;
}

export const BOOT_SERVICE_DEFAULTS = {
  /** A client that cannot boot yet asks again this often. */
  notReadyRetrySeconds: 30,
  /** ...and after a server-side failure. */
  errorRetrySeconds: 20,
  /** An unknown machine under `register-script` asks again this often, so it boots once added. */
  registerRetrySeconds: 30,
  /** The name the EFI stub loads the initrd by (`initrd=`); BIOS ignores it (field notes). */
  initrdName: 'initrd.img',
  /** Kernel messages on screen and on the first serial port; the last one is /dev/console. */
  consoles: ['tty0', 'ttyS0,115200n8'] as readonly string[],
  network: 'ipxe' as const,
  firmwareNames: ['undionly.kpxe', 'ipxe.efi', 'snponly.efi'] as readonly string[],
} as const;

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '', '[::]']);

export class CatalogueBootService implements BootService {
  private readonly store: Store;
  private readonly dataDir: string;
  private readonly newBoot: NewBootFn;
  private readonly events: BootEventSink;
  private readonly log: Logger;
  private readonly extraArgs: readonly string[];
  private readonly firmwareNames: ReadonlySet<string>;
  /** Script requests of one MAC run one after the other (each may start a boot). */
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly options: CatalogueBootServiceOptions) {
    this.store = options.store;
    this.dataDir = resolve(options.dataDir);
    this.newBoot = options.newBoot;
    this.events = options.events;
    this.log = (options.logger ?? silentLogger).child({ component: 'boot' });
    this.extraArgs = (options.extraKernelArgs ?? []).map((a) => assertSafeToken('extra kernel argument', a));
    this.firmwareNames = new Set(options.firmwareNames ?? BOOT_SERVICE_DEFAULTS.firmwareNames);
    if (options.unknownClients === 'default-image' && !options.defaultImage) {
      throw new TypeError('unknownClients "default-image" needs a defaultImage');
    }
    if (!Number.isInteger(options.nbd.port) || options.nbd.port < 1 || options.nbd.port > 65535) {
      throw new TypeError(`NBD port ${options.nbd.port} is not a TCP port clients can reach`);
    }
  }

  script(request: BootRequest): Promise<string> {
    const mac = request.mac;
    if (!mac) return Promise.resolve(this.message(['diskless: the request names no MAC address'], 0, ''));
    const previous = this.locks.get(mac) ?? Promise.resolve();
    const run = previous.then(() => this.scriptFor(mac, request));
    const settled = run.catch(() => undefined);
    this.locks.set(mac, settled);
    void settled.then(() => {
      if (this.locks.get(mac) === settled) this.locks.delete(mac);
    });
    return run;
  }

  async bootFile(request: BootRequest & { bootId: string; name: BootFileName }): Promise<BootFile | null> {
    if (!request.mac) return null;
    const client = this.store.clients.get(request.mac);
    if (!client || client.bootId === null || client.bootId !== request.bootId || client.bootVersionId === null) return null;
    const version = this.store.images.versionById(client.bootVersionId);
    const vb = version ? readVersionBoot(version.bootInfo) : null;
    if (!vb?.ok) return null;
    const rel = request.name === 'vmlinuz' ? vb.boot.kernelFile : vb.boot.initrdFile;
    const file = await this.fileAt(this.abs(rel));
    if (!file) {
      this.log.warn('boot file missing from the data directory', { mac: request.mac, file: rel });
      return null;
    }
    this.events.record({
      mac: request.mac, step: request.name === 'vmlinuz' ? 'kernel' : 'initrd', bootId: request.bootId,
      detail: { size: file.size, address: request.address },
    });
    return file;
  }

  async firmwareFile(name: string): Promise<BootFile | null> {
    const dir = this.options.ipxeDir;
    if (!dir || !this.firmwareNames.has(name)) return null;
    return this.fileAt(join(dir, name));
  }

  async osUp(request: BootRequest & { bootId: string }): Promise<boolean> {
    if (!request.mac) return false;
    const ok = this.store.clients.setState(request.mac, request.bootId, 'up');
    if (ok) {
      this.events.record({ mac: request.mac, step: 'os-up', bootId: request.bootId, detail: { address: request.address } });
      this.log.info('client OS is up', { mac: request.mac, bootId: request.bootId, address: request.address });
    }
    return ok;
  }

  // -------------------------------------------------------------------------

  private async scriptFor(mac: string, request: BootRequest): Promise<string> {
    const hyphen = mac.replace(/:/g, '-');
    const retryUrl = `${request.baseUrl}/ipxe/${hyphen}`;
    const log = this.log.child({ mac, peer: request.address });
    try {
      let client = this.store.clients.get(mac);
      let adopted = false;
      if (!client) {
        if (this.options.unknownClients !== 'default-image') return this.unknownScript(mac, request, retryUrl);
        client = this.adopt(mac);
        adopted = true;
        log.info('unknown machine boots the default image as an ephemeral client', { image: client.image });
      }

      const target = this.bootTarget(client);
      if (typeof target === 'string') return this.notReady(mac, request, retryUrl, target);
      const ready = await this.bootable(target);
      if (!ready.ok) return this.notReady(mac, request, retryUrl, `${target.image} version ${target.version}: ${ready.reason}`);

      const started = await this.newBoot(mac, { address: request.address || null });
      // A persistent client's overlay stays on the version it was made on, which may not be the target.
      const versionId = started.client.bootVersionId;
      const version = versionId === target.id ? target : versionId === null ? null : this.store.images.versionById(versionId);
      if (!version) throw new Error(`boot ${started.bootId} of ${mac} records no image version`);
      const vb = version === target ? ready : await this.bootable(version);
      if (!vb.ok) return this.notReady(mac, request, retryUrl, `${version.image} version ${version.version}: ${vb.reason}`);

      const base = `${request.baseUrl}/boot/${hyphen}/${started.bootId}`;
      const commandLine = kernelCommandLine({
        flavour: vb.boot.flavour,
        nbd: { server: this.nbdHost(request), port: this.options.nbd.port, exportName: started.exportName },
        root: chooseRoot(vb.boot, this.options.nbd.port),
        network: this.options.network ?? BOOT_SERVICE_DEFAULTS.network,
        initrdName: BOOT_SERVICE_DEFAULTS.initrdName,
        consoles: [...(this.options.consoles ?? BOOT_SERVICE_DEFAULTS.consoles)],
        ...(client.name ? { hostname: client.name } : {}),
        extra: [...vb.boot.kernelArgs, ...this.extraArgs, `diskless.up=${base}/up`],
      });
      const script = renderBootScript({
        clientLabel: client.name ? `${client.name} (${mac})` : mac,
        imageLabel: `${version.image} version ${version.version}`,
        kernelUrl: `${base}/vmlinuz`,
        initrdUrl: `${base}/initrd.img`,
        initrdName: BOOT_SERVICE_DEFAULTS.initrdName,
        commandLine,
      });
      // The export name carries the client's secret token: it is in the script, never in the timeline.
      this.events.record({
        mac, step: 'script', bootId: started.bootId,
        detail: { image: version.image, version: version.version, address: request.address, overlayReset: started.overlayReset, ...(adopted ? { adopted: true } : {}) },
      });
      log.info('new boot', { bootId: started.bootId, image: version.image, version: version.version, overlayReset: started.overlayReset });
      return script;
    } catch (err) {
      const code = isDisklessError(err) ? err.code : 'INTERNAL';
      if (err instanceof BootError || code === 'APP_NO_PUBLISHED_VERSION') {
        return this.notReady(mac, request, retryUrl, (err as Error).message);
      }
      log.error('could not prepare a boot script', { code, err });
      this.events.record({ mac, step: 'script', detail: { failed: code, address: request.address } });
      return this.message([`diskless: the server could not prepare a boot for ${mac} (${code}).`], BOOT_SERVICE_DEFAULTS.errorRetrySeconds, retryUrl);
    }
  }

  private unknownScript(mac: string, request: BootRequest, retryUrl: string): string {
    const policy = this.options.unknownClients;
    this.events.unknownSeen(mac, null);
    this.events.record({ mac, step: 'script', detail: { unknown: true, policy, address: request.address } });
    const lines = [
      `diskless: this machine (${mac}) is not registered with this server.`,
      'diskless: to boot it, add it on the server:',
      `diskless:   diskless client add ${mac} --image NAME`,
    ];
    if (policy === 'register-script') return this.message(lines, BOOT_SERVICE_DEFAULTS.registerRetrySeconds, retryUrl);
    return this.message([...lines, 'diskless: returning to the firmware.'], 0, retryUrl);
  }

  private notReady(mac: string, request: BootRequest, retryUrl: string, reason: string): string {
    this.log.info('client cannot boot yet', { mac, reason });
    this.events.record({ mac, step: 'script', detail: { notReady: reason.slice(0, 500), address: request.address } });
    return this.message([`diskless: ${mac} cannot boot yet:`, `diskless: ${reason}`], BOOT_SERVICE_DEFAULTS.notReadyRetrySeconds, retryUrl);
  }

  private message(lines: string[], retrySeconds: number, retryUrl: string): string {
    return renderMessageScript({ message: lines, retrySeconds, retryUrl });
  }

  /** Adds an unknown machine as an ephemeral client of the default image (a concurrent add wins). */
  private adopt(mac: string): ClientRecord {
    try {
      return this.store.clients.add({ mac, image: this.options.defaultImage!, mode: 'ephemeral' });
    } catch (err) {
      const existing = this.store.clients.get(mac);
      if (existing) return existing;
      throw err;
    }
  }

  /**
   * The version a client's next boot runs, or why there is none: a kept
   * overlay (persistent, or a maintenance draft) stays on the version it was
   * made on (a reset moves it); otherwise its pin, else the image's current version.
   * The same rule as the catalogue's newBoot().
   */
  private bootTarget(client: ClientRecord): ImageVersionRecord | string {
    const overlay = this.store.overlays.forClient(client.id);
    if (overlay && keepsOverlay(client, overlay)) {
      const v = this.store.images.versionById(overlay.versionId);
      if (v) return v;
    }
    // A pin may name a held (unpublished) version: that is how a test group tries it.
    if (client.pinnedVersion !== null) {
      const v = this.store.images.version(client.image, client.pinnedVersion);
      if (!v) return `it is pinned to version ${client.pinnedVersion} of image ${client.image}, which does not exist`;
      return v;
    }
    const v = this.store.images.current(client.image);
    if (!v) return `image ${client.image} has no published version yet`;
    return v;
  }

  /** A version can boot when its boot_info is complete and both files are in the data directory. */
  private async bootable(version: ImageVersionRecord): Promise<VersionBootResult> {
    const vb = readVersionBoot(version.bootInfo);
    if (!vb.ok) return vb;
    for (const rel of [vb.boot.kernelFile, vb.boot.initrdFile]) {
      let path: string;
      try {
        path = this.abs(rel);
      } catch (err) {
        return { ok: false, reason: (err as Error).message };
      }
      if (!(await this.fileAt(path))) return { ok: false, reason: `its boot file ${rel} is missing from the data directory` };
    }
    return vb;
  }

  private abs(rel: string): string {
    const p = resolve(this.dataDir, rel);
    if (isAbsolute(rel) || !p.startsWith(this.dataDir + sep)) throw new BootError('BOOT_FILE_OUTSIDE_DATA_DIR', `boot file path ${JSON.stringify(rel)} leaves the data directory`);
    return p;
  }

  private async fileAt(path: string): Promise<BootFile | null> {
    try {
      const st = await stat(path);
      if (!st.isFile()) return null;
      // Strong validator: a replaced or rewritten file changes inode, size or mtime.
      return { path, size: st.size, etag: `"${st.ino.toString(16)}-${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`, lastModified: st.mtime };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EACCES') return null;
      throw err;
    }
  }

  private nbdHost(request: BootRequest): string {
    const host = this.options.nbd.host;
    if (!WILDCARD_HOSTS.has(host)) return host;
    // The address the client reached us by is one it can route to.
    return new URL(request.baseUrl).hostname.replace(/^\[|\]$/g, '');
  }
}
