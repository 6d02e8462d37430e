/**
 * The client kit (kit/diskless-kit.sh) as the server hands it out at
 * `GET /kit`: the script as written, with its one placeholder replaced by the
 * URL the client reached the server by. Nothing else is templated, so the
 * script in the repository is the script that runs (and is tested).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CaptureError } from './errors.js';

/** The one placeholder of the kit: `DISKLESS_SERVER=${DISKLESS_SERVER:-'@DISKLESS_SERVER_URL@'}`. */
export const KIT_PLACEHOLDER = '@DISKLESS_SERVER_URL@';

/** Where the kit sits in the repository, relative to its root. */
export const KIT_RELATIVE_PATH = join('kit', 'diskless-kit.sh');

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
  let dir = dirname(from);
  for (let i = 0; i < 8; i++) {
    const candidate = join(dir, KIT_RELATIVE_PATH);
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new CaptureError('CAPTURE_IO', `${KIT_RELATIVE_PATH} not found above ${dirname(from)}`);
}

/** Reads the kit and checks it carries its placeholder exactly once. */
export async function loadKitTemplate(path: string = defaultKitPath()): Promise<string> {
  const text = await readFile(path, 'utf8');
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
