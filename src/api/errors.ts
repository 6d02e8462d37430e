/** Error codes of the HTTP service. Each maps to one HTTP status in httpStatusOf(). */
import { DisklessError } from '../lib/errors.js';

export const ERROR_CODES = {
  HTTP_BAD_MAC: 'the URL names something that is not a MAC address (400)',
  HTTP_NOT_FOUND: 'no such boot file, firmware file or route, or the boot id is not the client\'s current one (404)',
  HTTP_RANGE_NOT_SATISFIABLE: 'the Range header asks for bytes past the end of the file (416)',
} as const;

export type HttpErrorCode = keyof typeof ERROR_CODES;

const STATUS: Record<HttpErrorCode, number> = {
  HTTP_BAD_MAC: 400,
  HTTP_NOT_FOUND: 404,
  HTTP_RANGE_NOT_SATISFIABLE: 416,
};

export class HttpError extends DisklessError {
  override readonly name = 'HttpError';
  constructor(code: HttpErrorCode, message: string) {
    super(code, message);
  }
}

/** The one place internal errors become HTTP statuses. */
export function httpStatusOf(err: unknown): number {
  if (err instanceof HttpError) return STATUS[err.code as HttpErrorCode] ?? 500;
  if (err instanceof DisklessError && err.errno === 'EINVAL') return 400;
  const status = (err as { statusCode?: unknown }).statusCode;
  if (typeof status === 'number' && status >= 400 && status < 600) return status;
  return 500;
}
