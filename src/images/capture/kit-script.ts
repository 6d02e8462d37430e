/**
 * The client kit (kit/diskless-kit.sh) as the server hands it out at
 * `GET /kit`: the script as written, with
 * - each include line `@DISKLESS_INCLUDE:NAME@` (inside a quoted here-document)
 *   replaced by the text of kit/NAME, so one download carries the files the
 *   kit installs (the NBD keeper: kit-files.ts) and the image build writes
 *   the very same bytes;
 * - its one placeholder replaced by the URL the client reached the server by.
 * Nothing else is templated, so the script in the repository is the script
 * that runs (and is tested).
 */
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { kitDir, readKitFile } from '../kit-files.js';
import { CaptureError } from './errors.js';

/** The one placeholder of the kit: `DISKLESS_SERVER=${DISKLESS_SERVER:-'@DISKLESS_SERVER_URL@'}`. */
export const KIT_PLACEHOLDER = '@DISKLESS_SERVER_URL@';

/** Where the kit sits in the repository, relative to its root. */
export const KIT_RELATIVE_PATH = join('kit', 'diskless-kit.sh');

/** A line of the kit that stands for a whole kit file, and the here-document terminator around it. */
const INCLUDE_LINE = /^@DISKLESS_INCLUDE:([a-z0-9][a-z0-9.-]{0,63})@$/gm;
export const INCLUDE_TERMINATOR = 'DISKLESS_INCLUDE_EOF';

/**
 * A server URL safe to put between single quotes in a shell script: scheme,
 * host (name, IPv4 or [IPv6]), optional port and path, and nothing that
 * could close the quotes or start an expansion.
 */
const SAFE_URL = /^https?:\/\/[A-Za-z0-9.:[\]-]{1,255}(\/[A-Za-z0-9._~/-]{0,200})?$/;

export function isSafeServerUrl(url: string): boolean {
  return SAFE_URL.test(url) && !url.endsWith('/');
}

/** Finds kit/diskless-kit.sh from this module's place (src/... under tsx, dist/src/... when built). */
export function defaultKitPath(from: string = fileURLToPath(import.meta.url)): string {
  try {
    return join(kitDir(from), 'diskless-kit.sh');
  } catch (err) {
    throw new CaptureError('CAPTURE_IO', (err as Error).message, { cause: err });
  }
}

/**
 * Reads the kit, puts the kit files it includes in place (from the kit's own
 * folder), and checks it carries its placeholder exactly once.
 */
export async function loadKitTemplate(path: string = defaultKitPath()): Promise<string> {
  const raw = await readFile(path, 'utf8');
  let text: string;
  try {
    text = raw.replace(INCLUDE_LINE, (_line, name: string) => {
      const body = readKitFile(name, dirname(path)).replace(/\n$/, '');
      if (body.split('\n').includes(INCLUDE_TERMINATOR) || body.includes(KIT_PLACEHOLDER) || body.includes('@DISKLESS_INCLUDE:')) {
        throw new Error(`kit file ${name} holds a line the kit's here-document cannot carry`);
      }
      return body;
    });
  } catch (err) {
    throw new CaptureError('CAPTURE_IO', `${path}: ${(err as Error).message}`, { cause: err });
  }
  const count = text.split(KIT_PLACEHOLDER).length - 1;
  if (count !== 1) throw new CaptureError('CAPTURE_IO', `${path} must hold ${KIT_PLACEHOLDER} exactly once (found ${count})`);
  return text;
}

/** The kit with the server's URL filled in. */
export function renderKit(template: string, serverUrl: string): string {
  if (!isSafeServerUrl(serverUrl)) {
    throw new CaptureError('CAPTURE_BAD_REQUEST', `${JSON.stringify(serverUrl)} cannot be placed in the kit as the server URL`);
  }
  return template.replace(KIT_PLACEHOLDER, serverUrl);
}
