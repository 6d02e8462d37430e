/**
 * Error codes of disk capture. Each maps to one HTTP status in
 * captureHttpStatus(), the one place capture errors meet the wire; every
 * refusal of a client's request is a 4xx with a JSON body {error, message}.
 */
import { DisklessError } from '../../lib/errors.js';

export const ERROR_CODES = {
  CAPTURE_UNAUTHORIZED: 'capture needs the server\'s capture token as a bearer token; none or a wrong one was given (401)',
  CAPTURE_DISABLED: 'no capture token is configured on the server, so capture is turned off (403)',
  CAPTURE_BAD_REQUEST: 'the request is malformed: a missing or invalid field, header, chunk number or body type (400)',
  CAPTURE_TOO_LARGE: 'the disk is larger than the largest capture the server accepts (413)',
  CAPTURE_NO_SPACE: 'the disk does not fit in the free space of the server\'s data directory (413)',
  CAPTURE_CHUNK_TOO_LARGE: 'the chunk size or a chunk body is over the server\'s limit, or the chunk size is under its minimum (413)',
  CAPTURE_TOO_MANY_UPLOADS: 'as many uploads as the server allows are already open (429)',
  CAPTURE_BUSY: 'too many chunk requests are in flight; retry shortly (429)',
  CAPTURE_NOT_FOUND: 'no open upload has this id: never started, finished, aborted or expired (404)',
  CAPTURE_CHUNK_LENGTH: 'a chunk body is not exactly the chunk\'s length (the last chunk may be shorter) (400)',
  CAPTURE_CHECKSUM_MISMATCH: 'a chunk\'s bytes do not have the sha256 its x-sha256 header names; the chunk was not stored (422)',
  CAPTURE_INCOMPLETE: 'finish was asked while chunks are still missing (409)',
  CAPTURE_CONFLICT: 'the upload is being finished, or a resumed upload\'s size or chunk size differs from the one asked (409)',
  CAPTURE_WHOLE_MISMATCH: 'the assembled disk does not have the whole sha256 given, or stored chunks no longer match their sha256 (422)',
  CAPTURE_PUBLISH_FAILED: 'the disk was verified but publishing it as an image version failed; finish may be retried (500)',
  CAPTURE_IO: 'reading or writing the upload\'s files in the data directory failed (500)',
} as const;

export type CaptureErrorCode = keyof typeof ERROR_CODES;

const STATUS: Record<CaptureErrorCode, number> = {
  CAPTURE_UNAUTHORIZED: 401,
  CAPTURE_DISABLED: 403,
  CAPTURE_BAD_REQUEST: 400,
  CAPTURE_TOO_LARGE: 413,
  CAPTURE_NO_SPACE: 413,
  CAPTURE_CHUNK_TOO_LARGE: 413,
  CAPTURE_TOO_MANY_UPLOADS: 429,
  CAPTURE_BUSY: 429,
  CAPTURE_NOT_FOUND: 404,
  CAPTURE_CHUNK_LENGTH: 400,
  CAPTURE_CHECKSUM_MISMATCH: 422,
  CAPTURE_INCOMPLETE: 409,
  CAPTURE_CONFLICT: 409,
  CAPTURE_WHOLE_MISMATCH: 422,
  CAPTURE_PUBLISH_FAILED: 500,
  CAPTURE_IO: 500,
};

export class CaptureError extends DisklessError {
  override readonly name = 'CaptureError';
  constructor(code: CaptureErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, undefined, options);
  }
}

export function isCaptureError(e: unknown, code?: CaptureErrorCode): e is CaptureError {
  return e instanceof CaptureError && (code === undefined || e.code === code);
}

/**
 * The one place capture errors become HTTP statuses. Errors of the web
 * framework itself (body too large, bad JSON, wrong content type) keep their
 * own 4xx status; anything else is a 500.
 */
export function captureHttpStatus(err: unknown): number {
  if (err instanceof CaptureError) return STATUS[err.code as CaptureErrorCode] ?? 500;
  const status = (err as { statusCode?: unknown } | null)?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 600) return status;
  return 500;
}
