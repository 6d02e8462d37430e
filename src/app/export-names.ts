/**
 * NBD export names (docs/exports.md):
 *
 *   <mac>-<token>               a client's own disk: <mac> is its MAC in 12 lower-case
 *                               hex digits, <token> 32 hex digits (128 random bits)
 *                               issued at each boot and given only in that client's
 *                               boot script (kernel command line nbdroot=)
 *   image/<image>               the current version of an image, read-only
 *   image/<image>/<version>     one version of an image, read-only
 *
 * Names are checked strictly: anything else is an unknown export.
 */
import { compactMac } from '../lib/net.js';

const CLIENT = /^([0-9a-f]{12})-([0-9a-f]{32})$/;
const IMAGE = /^image\/([a-z0-9][a-z0-9._-]{0,63})(?:\/([1-9][0-9]{0,8}))?$/;

export type ParsedExportName =
  | { kind: 'client'; mac: string; token: string }
  | { kind: 'image'; image: string; version: number | null };

export function clientExportName(mac: string, token: string): string {
  return `${compactMac(mac)}-${token}`;
}

export function imageExportName(image: string, version?: number): string {
  return version === undefined ? `image/${image}` : `image/${image}/${version}`;
}

export function parseExportName(name: string): ParsedExportName | null {
  const c = CLIENT.exec(name);
  if (c) return { kind: 'client', mac: c[1]!.match(/../g)!.join(':'), token: c[2]! };
  const i = IMAGE.exec(name);
  if (i) return { kind: 'image', image: i[1]!, version: i[2] === undefined ? null : Number(i[2]) };
  return null;
}
