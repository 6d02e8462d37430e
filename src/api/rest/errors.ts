/**
 * Error codes of the REST API, and the one function that turns any error a
 * handler meets into an HTTP status: the API's own codes, the catalogue's
 * (STATE_*, APP_*), and fastify's (body parsing, limits).
 *
 * Every refusal is sent as `{error: CODE, message}`; the codes of the
 * catalogue pass through unchanged, so the CLI and the API report the same
 * code for the same refusal.
 */
import { DisklessError } from '../../lib/errors.js';

export const ERROR_CODES = {
  API_UNAUTHORIZED: 'the request has no `Authorization: Bearer <token>` header, or the token is not the API token of `<dataDir>/api-token` (401)',
  API_INVALID_REQUEST: 'a path parameter, query parameter or body field is missing, of the wrong type, out of range or not allowed; the message names it (400)',
  API_NOT_FOUND: 'no API route has this method and path (404)',
  API_NO_OVERLAY: 'the client has no overlay: it has not booted since it was added or reset (404)',
  API_BODY_TOO_LARGE: 'the request body is larger than the API accepts (413)',
  API_UNSUPPORTED_MEDIA_TYPE: 'the request body is not application/json (415)',
  API_STREAM_LIMIT: 'too many event streams are open at once; close one or retry later (503)',
  API_TOKEN_FILE: 'the API token file `<dataDir>/api-token` cannot be used: readable by others (it must be mode 0600), not a regular file, or not one token of 64 hex digits or 43 base64url characters',
  API_INTERNAL: 'the server failed while answering; the server log has the cause (500)',
} as const;

export type RestErrorCode = keyof typeof ERROR_CODES;

const STATUS: Record<RestErrorCode, number> = {
  API_UNAUTHORIZED: 401,
  API_INVALID_REQUEST: 400,
  API_NOT_FOUND: 404,
  API_NO_OVERLAY: 404,
  API_BODY_TOO_LARGE: 413,
  API_UNSUPPORTED_MEDIA_TYPE: 415,
  API_STREAM_LIMIT: 503,
  API_TOKEN_FILE: 500,
  API_INTERNAL: 500,
};

export class RestError extends DisklessError {
  override readonly name = 'RestError';
  /** For 401: the WWW-Authenticate challenge to send (RFC 6750 section 3). */
  readonly challenge: string | undefined;
  constructor(override readonly code: RestErrorCode, message: string, options?: { cause?: unknown; challenge?: string }) {
    super(code, message, undefined, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.challenge = options?.challenge;
  }
}

/**
 * The statuses of other modules' codes a catalogue operation may throw.
 * 409: the catalogue's state refuses the request as it stands (and the
 * message says what to change first); 422: the content of a disk (a
 * committed draft) cannot be made a bootable version; 507: not enough space.
 */
export const CATALOGUE_STATUS: Readonly<Record<string, number>> = {
  STATE_NOT_FOUND: 404,
  STATE_INVALID: 400,
  STATE_CONFLICT: 409,
  STATE_IMMUTABLE: 409,
  STATE_BUSY: 503,
  APP_IMAGE_FILE_INVALID: 400,
  APP_INVALID_ARGUMENT: 400,
  APP_NO_PUBLISHED_VERSION: 409,
  APP_NO_BOOT: 409,
  APP_OVERLAY_BUSY: 409,
  APP_VERSION_IN_USE: 409,
  APP_IMAGE_IN_USE: 409,
  APP_NOTHING_TO_ROLL_BACK: 409,
  APP_VERSION_NOT_PUBLISHED: 409,
  APP_NOT_IN_MAINTENANCE: 409,
  APP_NO_DRAFT: 409,
  APP_DRAFT_OUTDATED: 409,
  APP_CLIENT_RUNNING: 409,
  APP_NO_SPACE: 507,
  IMAGES_NO_SPACE: 507,
  STORAGE_NO_SPACE: 507,
  STORAGE_OVERLAY_IN_USE: 409,
  IMAGES_UNKNOWN_PARTITION_TABLE: 422,
  IMAGES_MBR_CORRUPT: 422,
  IMAGES_GPT_HEADER_CORRUPT: 422,
  IMAGES_GPT_ENTRIES_CORRUPT: 422,
  IMAGES_NO_LINUX_ROOT: 422,
  IMAGES_UNSUPPORTED_FILESYSTEM: 422,
  IMAGES_NO_KERNEL: 422,
  IMAGES_NO_INITRAMFS: 422,
  IMAGES_INITRAMFS_NO_NBD: 422,
  IMAGES_INITRAMFS_CORRUPT: 422,
  IMAGES_INITRAMFS_COMPRESSION: 422,
};

/** 5xx answers whose message is for the operator, not about internals. */
const TOLD_5XX = new Set([503, 507]);

/** Statuses fastify gives its own errors that we answer with our codes. */
const FASTIFY_CODES: Record<number, RestErrorCode> = {
  400: 'API_INVALID_REQUEST',
  413: 'API_BODY_TOO_LARGE',
  415: 'API_UNSUPPORTED_MEDIA_TYPE',
};

export interface WireError {
  status: number;
  code: string;
  message: string;
}

/**
 * The one place an error becomes an HTTP answer. Our own and the
 * catalogue's messages are written for the operator and are sent as they
 * are; an unexpected error's message is not (it may name internals), so a
 * 5xx says only "internal error".
 */
export function restErrorOf(err: unknown): WireError {
  if (err instanceof RestError) {
    const status = STATUS[err.code];
    return { status, code: err.code, message: status >= 500 ? 'internal error' : err.message };
  }
  if (err instanceof DisklessError) {
    const status = statusOfCatalogueCode(err.code);
    if (status !== null) return { status, code: err.code, message: status >= 500 && !TOLD_5XX.has(status) ? 'internal error' : err.message };
    // The code is stable and says where it failed (STATE_IO, STORAGE_IO); the message may name paths.
    return { status: 500, code: err.code, message: 'internal error' };
  }
  // fastify's own errors (body parsing, content type, size) carry a 4xx statusCode.
  const status = (err as { statusCode?: unknown } | null)?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    // fastify's body-parsing messages ("Body is not valid JSON ...") do not say where; they are about the body.
    const parsing = /^FST_ERR_CTP_/.test(String((err as { code?: unknown }).code)) && status === 400;
    return { status, code: FASTIFY_CODES[status] ?? 'API_INVALID_REQUEST', message: `${parsing ? 'body: ' : ''}${(err as Error).message}` };
  }
  return { status: 500, code: 'API_INTERNAL', message: 'internal error' };
}

/**
 * The table above, else by kind for STATE_ and APP_ codes added later: a
 * code naming something missing is 404, one naming a conflict or use 409,
 * any other APP_ code an input the operation refuses (400). Null: an
 * unexpected error (500).
 */
function statusOfCatalogueCode(code: string): number | null {
  const known = CATALOGUE_STATUS[code];
  if (known !== undefined) return known;
  if (!/^(STATE|APP)_/.test(code)) return null;
  if (code.endsWith('_NOT_FOUND')) return 404;
  if (/_(CONFLICT|IN_USE|RUNNING|BUSY|EXISTS)$/.test(code)) return 409;
  if (code.startsWith('APP_')) return 400;
  return null;
}
