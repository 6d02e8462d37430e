/**
 * Normalization of requested file names, before any file provider sees them.
 * The result is a relative, `/`-separated path with no empty, `.` or `..`
 * segment, so a provider can join it under its root without escaping it.
 *
 * - `\` is read as `/`: Windows-style boot loaders ask for `boot\x86\file`,
 *   and a `..\..\etc` trick then meets the `..` rule below.
 * - A leading `/` is dropped: the root is the client's whole world (as with
 *   tftpd-hpa `-s`), so `/pxelinux.0` is `pxelinux.0` and `/etc/passwd` is
 *   `etc/passwd` inside the root, never the host's.
 * - Any `..` segment is refused outright, even one that would stay inside
 *   the root (`a/../b`): no boot loader needs it, and refusing is simpler to
 *   audit than resolving.
 * - Control characters (NUL cannot occur: it ends the field) are refused.
 */
import { TftpError } from './errors.js';

export const PATH_LIMITS = {
  /** UTF-8 bytes of a requested name; RFC 2347 caps a whole request at 512. */
  maxBytes: 512,
  /** Segments in one path: bounds the work of resolving it. */
  maxSegments: 32,
} as const;

const CONTROL = /[\x00-\x1f\x7f]/;

/** Throws TftpError TFTP_BAD_PATH (TFTP error 2) when the name is refused. */
export function normalizePath(requested: string): string {
  if (Buffer.byteLength(requested, 'utf8') > PATH_LIMITS.maxBytes) throw new TftpError('TFTP_BAD_PATH', `file name longer than ${PATH_LIMITS.maxBytes} bytes`);
  if (CONTROL.test(requested)) throw new TftpError('TFTP_BAD_PATH', 'file name contains a control character');
  const segments: string[] = [];
  for (const segment of requested.replace(/\\/g, '/').split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') throw new TftpError('TFTP_BAD_PATH', 'file name contains a ".." segment');
    segments.push(segment);
  }
  if (segments.length === 0) throw new TftpError('TFTP_BAD_PATH', 'file name is empty');
  if (segments.length > PATH_LIMITS.maxSegments) throw new TftpError('TFTP_BAD_PATH', `file name has more than ${PATH_LIMITS.maxSegments} segments`);
  return segments.join('/');
}
