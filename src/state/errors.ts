/**
 * Error codes of the embedded store. SQLite's own failures are turned into
 * these in exactly one function, stateErrorOf(), so callers (the app, the
 * CLI, later the REST API) can tell "already exists" from "not found" from
 * "the disk is broken" without reading SQLite messages.
 */
import { DisklessError } from '../lib/errors.js';

export const ERROR_CODES = {
  STATE_OPEN_FAILED: 'the catalogue database could not be opened or created (missing permission, a file that is not a database)',
  STATE_SCHEMA_TOO_NEW: 'the catalogue database was written by a newer diskless with migrations this one does not know; it is left untouched',
  STATE_MIGRATION_FAILED: 'a schema migration failed; it was rolled back and the database is as it was before',
  STATE_NOT_FOUND: 'the image, image version or client named does not exist in the catalogue',
  STATE_CONFLICT: 'the record already exists (an image or client name, a MAC) or is still referred to by another record',
  STATE_INVALID: 'a value is not allowed in the catalogue (a malformed MAC, image name or JSON document, a current version that is not published)',
  STATE_IMMUTABLE: 'a published image version was asked to change; published versions never change',
  STATE_BUSY: 'the catalogue database stayed locked by another process longer than the busy timeout',
  STATE_CLOSED: 'the store was used after close()',
  STATE_IO: 'the catalogue database reported an error it gives no better name for (disk full, I/O error, corruption)',
} as const;

export type StateErrorCode = keyof typeof ERROR_CODES;

export class StateError extends DisklessError {
  override readonly name = 'StateError';
  constructor(override readonly code: StateErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, undefined, options);
  }
}

/** Prefixes our triggers put in RAISE() messages, so they map to a code. */
export const TRIGGER_IMMUTABLE = 'immutable:';
export const TRIGGER_INVALID = 'invalid:';

/**
 * The one place a SQLite error becomes a StateError. `what` names the
 * operation for the message ("adding client aa:bb:..."). StateErrors pass
 * through unchanged.
 */
export function stateErrorOf(err: unknown, what: string): StateError {
  if (err instanceof StateError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  const wrap = (c: StateErrorCode, text: string): StateError => new StateError(c, `${what}: ${text}`, { cause: err });
  if (typeof code !== 'string') return wrap('STATE_IO', message);
  if (message.startsWith(TRIGGER_IMMUTABLE)) return wrap('STATE_IMMUTABLE', message.slice(TRIGGER_IMMUTABLE.length).trim());
  if (message.startsWith(TRIGGER_INVALID)) return wrap('STATE_INVALID', message.slice(TRIGGER_INVALID.length).trim());
  switch (code) {
    case 'SQLITE_CONSTRAINT_UNIQUE':
    case 'SQLITE_CONSTRAINT_PRIMARYKEY':
      return wrap('STATE_CONFLICT', `already exists (${message})`);
    case 'SQLITE_CONSTRAINT_FOREIGNKEY':
      return wrap('STATE_CONFLICT', 'it refers to a record that does not exist, or is still referred to');
    case 'SQLITE_CONSTRAINT_CHECK':
    case 'SQLITE_CONSTRAINT_NOTNULL':
    case 'SQLITE_CONSTRAINT_DATATYPE':
    case 'SQLITE_MISMATCH':
      return wrap('STATE_INVALID', message);
    case 'SQLITE_BUSY':
    case 'SQLITE_BUSY_SNAPSHOT':
    case 'SQLITE_BUSY_RECOVERY':
    case 'SQLITE_LOCKED':
      return wrap('STATE_BUSY', message);
    default:
      return wrap('STATE_IO', `${message} (${code})`);
  }
}

export function notFound(what: string): StateError {
  return new StateError('STATE_NOT_FOUND', what);
}

export function invalid(what: string): StateError {
  return new StateError('STATE_INVALID', what);
}
