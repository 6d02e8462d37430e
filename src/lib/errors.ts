/**
 * The project's error type. Every error that crosses a module boundary is a
 * DisklessError with a stable `code` from the catalogue in docs/errors.md
 * (a test keeps the two in sync). Protocol modules map these to their wire
 * representation in exactly one function each (e.g. nbd/errors.ts).
 */

/** POSIX errno names the storage layer may raise; NBD maps them to its own numbers. */
export type Errno = 'EPERM' | 'EIO' | 'ENOMEM' | 'EINVAL' | 'ENOSPC' | 'EOVERFLOW' | 'ENOTSUP' | 'ESHUTDOWN';

export class DisklessError extends Error {
  override readonly name: string = 'DisklessError';
  constructor(
    /** Stable code from docs/errors.md, e.g. `STORAGE_OUT_OF_RANGE`. */
    readonly code: string,
    message: string,
    /** The errno the condition corresponds to, when it has one. */
    readonly errno?: Errno,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isDisklessError(e: unknown, code?: string): e is DisklessError {
  return e instanceof DisklessError && (code === undefined || e.code === code);
}
