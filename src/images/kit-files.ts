/**
 * Files of the client kit (the repository's kit/ folder) that go onto a
 * diskless system as they are: the same bytes whether the image build writes
 * them into the root it builds (build-debian.ts) or the kit's `prepare`
 * writes them on a machine (the server embeds them into the kit it serves,
 * capture/kit-script.ts). One copy of each, so the two ways cannot drift.
 *
 * The NBD keeper: Debian 12's initramfs connects the root with nbd-client
 * 3.24 over netlink, where `-persist` does nothing, so a restart of the
 * server would fail the root's I/O at once. diskless-nbd-keeper (perl, which
 * every Debian and Ubuntu system has) sets the kernel's dead-connection and
 * request timeouts and hands it a new connection when the old one dies;
 * diskless-nbd-disconnect, run by systemd-shutdown, disconnects cleanly at
 * power-off and reboot so the server releases the disk at once
 * (docs/firmware-quirks.md).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { imagesError } from './errors.js';

/** Where the kit sits in the repository, relative to its root. */
export const KIT_DIR_NAME = 'kit';

export interface KitFile {
  /** File name in kit/. */
  name: string;
  /** Where it goes on the diskless system. */
  dest: string;
  mode: number;
}

export const NBD_KEEPER_FILES: readonly KitFile[] = Object.freeze([
  { name: 'diskless-nbd-keeper', dest: '/usr/local/sbin/diskless-nbd-keeper', mode: 0o755 },
  { name: 'diskless-nbd-keeper.service', dest: '/etc/systemd/system/diskless-nbd-keeper.service', mode: 0o644 },
  { name: 'diskless-nbd-disconnect', dest: '/usr/lib/systemd/system-shutdown/diskless-nbd-disconnect', mode: 0o755 },
]);

/** The unit the image enables (WantedBy=sysinit.target). */
export const NBD_KEEPER_UNIT = 'diskless-nbd-keeper.service';

/** Finds kit/ from this module's place (src/images under tsx, dist/src/images when built). */
export function kitDir(from: string = fileURLToPath(import.meta.url)): string {
  let dir = dirname(from);
  for (let i = 0; i < 8; i++) {
    const candidate = join(dir, KIT_DIR_NAME);
    if (existsSync(join(candidate, 'diskless-kit.sh'))) return candidate;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw imagesError('IMAGES_KIT_MISSING', `${KIT_DIR_NAME}/diskless-kit.sh not found above ${dirname(from)}`);
}

/** The text of kit/<name>. */
export function readKitFile(name: string, dir: string = kitDir()): string {
  if (!/^[a-z0-9][a-z0-9.-]{0,63}$/.test(name)) throw imagesError('IMAGES_KIT_MISSING', `${JSON.stringify(name)} is not a kit file name`);
  try {
    return readFileSync(join(dir, name), 'utf8');
  } catch (err) {
    throw imagesError('IMAGES_KIT_MISSING', `kit file ${join(dir, name)} cannot be read: ${(err as Error).message}`, { cause: err });
  }
}
