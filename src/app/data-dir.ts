/**
 * The layout of the data directory (default /var/lib/diskless):
 *
 *   diskless.db                         the catalogue (src/state)
 *   images/<image>/<version>.raw        image versions, read-only (mode 0440), never changed
 *   images/<image>/<version>.zmap       the zero map of a version (FileDevice's sidecar)
 *   overlays/<mac>/<n>/                 a client's copy-on-write overlay; <mac> is the MAC
 *                                       without colons, <n> counts the client's overlays,
 *                                       so a new overlay never reuses a discarded one's folder
 *
 * The catalogue stores these paths relative to the data directory, so the
 * directory can be moved or restored elsewhere. Only the server (and the
 * administrator running the CLI) reads it: folders are 0750, overlays 0700.
 */
import { mkdirSync, chmodSync } from 'node:fs';
import { isAbsolute, join, normalize, resolve, sep } from 'node:path';
import { compactMac } from '../lib/net.js';

export const DIR_MODE = 0o750;
export const OVERLAYS_MODE = 0o700;
export const IMAGE_FILE_MODE = 0o440;

export class DataDir {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  /** Creates the directory tree if missing and returns the layout. */
  static prepare(root: string): DataDir {
    const d = new DataDir(root);
    mkdirSync(d.root, { recursive: true, mode: DIR_MODE });
    mkdirSync(join(d.root, 'images'), { recursive: true, mode: DIR_MODE });
    mkdirSync(join(d.root, 'overlays'), { recursive: true, mode: OVERLAYS_MODE });
    // mkdir's mode is filtered by the umask; the overlays hold clients' data.
    chmodSync(join(d.root, 'overlays'), OVERLAYS_MODE);
    return d;
  }

  /** The absolute path of a path stored in the catalogue; refuses anything that leaves the data directory. */
  abs(rel: string): string {
    const n = normalize(rel);
    if (isAbsolute(n) || n === '..' || n.startsWith('..' + sep)) throw new Error(`catalogue path "${rel}" leaves the data directory`);
    return join(this.root, n);
  }

  imageDir(image: string): string {
    return `images/${image}`;
  }

  versionFile(image: string, version: number): string {
    return `images/${image}/${version}.raw`;
  }

  zeroMap(image: string, version: number): string {
    return `images/${image}/${version}.zmap`;
  }

  /** The kernel and initramfs extracted from a version (vmlinuz, initrd.img, SHA256SUMS). */
  bootDir(image: string, version: number): string {
    return `images/${image}/${version}.boot`;
  }

  clientOverlays(mac: string): string {
    return `overlays/${compactMac(mac)}`;
  }

  overlayDir(mac: string, seq: number): string {
    return `overlays/${compactMac(mac)}/${seq}`;
  }
}
