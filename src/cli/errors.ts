/**
 * Error codes and exit statuses of the `diskless` command. Errors from the
 * modules underneath keep their own codes; the command prints them as
 * `diskless: <message> [<CODE>]` and exits 1.
 */
import { DisklessError } from '../lib/errors.js';

export const ERROR_CODES = {
  CLI_USAGE: 'the command line is wrong: an unknown command or option, a missing or extra argument, a value of the wrong form (exit status 2)',
  CLI_START_FAILED: 'a long-running command (serve, export) could not start; the message says which part failed',
} as const;

export type CliErrorCode = keyof typeof ERROR_CODES;

/** Exit statuses: 0 success, 1 the operation failed, 2 the command line is wrong. */
export const EXIT = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
} as const;

export class UsageError extends DisklessError {
  override readonly name = 'UsageError';
  constructor(message: string, readonly usage?: string) {
    super('CLI_USAGE', message);
  }
}
