/**
 * Error codes of the storage layer. Each carries the POSIX errno that block
 * protocols map to their wire form (NBD does it in one function); the codes
 * themselves are for logs, the API and docs/errors.md.
 */
import { DisklessError, type Errno } from '../lib/errors.js';

export const ERROR_CODES = {
  STORAGE_OUT_OF_RANGE: 'a request reaches outside the device, or its offset or length is not a non-negative safe integer (EINVAL)',
  STORAGE_INVALID_ARGUMENT: 'a storage call got an argument it cannot use: a read buffer that is too small, a size or block size that is not allowed (EINVAL)',
  STORAGE_READ_ONLY: 'a write, trim or zero was sent to a read-only device (EPERM)',
  STORAGE_CLOSED: 'the device was closed; requests still arriving are refused (ESHUTDOWN)',
  STORAGE_FAST_ZERO_UNSUPPORTED: 'a fast zero was asked of a device that can only zero by writing zeros (ENOTSUP)',
  STORAGE_IO: 'the operating system reported an I/O error on an image or overlay file (EIO)',
  STORAGE_NO_SPACE: 'the file system holding an overlay is full (ENOSPC)',
  STORAGE_QUOTA_EXCEEDED: 'a write would take a client\'s overlay past its quota of allocated bytes; writes into space it already holds still work (ENOSPC)',
  STORAGE_FILE_NOT_FOUND: 'the image file to open does not exist',
  STORAGE_BAD_CLUSTER_SIZE: 'the overlay cluster size is not a power of two between 4 KiB and 1 MiB, or is smaller than the base\'s block size',
  STORAGE_BASE_MISMATCH: 'the overlay was made for a base of another size or identity; it is refused rather than shown over the wrong image',
  STORAGE_OVERLAY_CORRUPT: 'an overlay\'s header or map cannot be read (bad magic, checksum, or a file shorter than its header says)',
  STORAGE_OVERLAY_VERSION: 'an overlay was written by a newer, unknown on-disk format version',
  STORAGE_OVERLAY_IN_USE: 'the overlay directory is already open (in this process or in another live one); one instance must be shared',
  STORAGE_ALLOCATION_MAP_STALE: 'an allocation map sidecar does not describe the image file it is given with (size, mtime or format differ)',
} as const;

export type StorageErrorCode = keyof typeof ERROR_CODES;

export class StorageError extends DisklessError {
  override readonly name = 'StorageError';
  constructor(code: StorageErrorCode, message: string, errno?: Errno, options?: { cause?: unknown }) {
    super(code, message, errno, options);
  }
}

/** The errno each code carries when the caller gives none. */
const DEFAULT_ERRNO: Partial<Record<StorageErrorCode, Errno>> = {
  STORAGE_OUT_OF_RANGE: 'EINVAL',
  STORAGE_INVALID_ARGUMENT: 'EINVAL',
  STORAGE_READ_ONLY: 'EPERM',
  STORAGE_CLOSED: 'ESHUTDOWN',
  STORAGE_FAST_ZERO_UNSUPPORTED: 'ENOTSUP',
  STORAGE_IO: 'EIO',
  STORAGE_NO_SPACE: 'ENOSPC',
  STORAGE_QUOTA_EXCEEDED: 'ENOSPC',
  STORAGE_BAD_CLUSTER_SIZE: 'EINVAL',
  STORAGE_BASE_MISMATCH: 'EINVAL',
  STORAGE_OVERLAY_CORRUPT: 'EIO',
  STORAGE_OVERLAY_VERSION: 'EIO',
  STORAGE_ALLOCATION_MAP_STALE: 'EINVAL',
};

export function storageError(code: StorageErrorCode, message: string, options?: { cause?: unknown; errno?: Errno }): StorageError {
  return new StorageError(code, message, options?.errno ?? DEFAULT_ERRNO[code], options);
}

/**
 * Wraps an error from the file system (a Node system error) in a
 * StorageError with the errno a block client can act on: ENOSPC stays
 * ENOSPC (the guest sees a full disk, not a broken one), everything else is
 * EIO. DisklessErrors pass through unchanged.
 */
export function fromSystemError(err: unknown, what: string): DisklessError {
  if (err instanceof DisklessError) return err;
  const code = (err as { code?: unknown }).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return storageError('STORAGE_NO_SPACE', `${what}: no space left`, { cause: err });
  if (code === 'ENOENT') return storageError('STORAGE_FILE_NOT_FOUND', `${what}: no such file`, { cause: err, errno: 'EIO' });
  const detail = err instanceof Error ? err.message : String(err);
  return storageError('STORAGE_IO', `${what}: ${detail}`, { cause: err });
}

/**
 * Asserts that [offset, offset+length) is a valid range of a device of
 * `size` bytes. Sessions validate at the boundary; this is the storage
 * layer's own assertion, so a bug upstream becomes EINVAL, not corruption.
 */
export function assertRange(size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw storageError('STORAGE_OUT_OF_RANGE', `range ${offset}+${length} is outside the device (size ${size})`);
  }
}
