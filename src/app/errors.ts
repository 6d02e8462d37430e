/**
 * Error codes of the application layer: the configuration (CONFIG_) and the
 * catalogue operations and export policy that sit on the store and the
 * storage stack (APP_). The NBD export policy itself answers with the NBD
 * module's NBD_EXPORT_UNKNOWN and NBD_EXPORT_FORBIDDEN.
 */
import { DisklessError } from '../lib/errors.js';

export const ERROR_CODES = {
  CONFIG_NOT_FOUND: 'the configuration file named does not exist',
  CONFIG_UNREADABLE: 'the configuration file could not be read, or is not valid JSON (the message gives the line and column)',
  CONFIG_INVALID: 'the configuration has problems; every one is listed with its path, e.g. `nbd.port: must be an integer 0-65535, got "x"`',
  APP_DATA_DIR: 'the data directory could not be created or used (no permission, or a path that is not a directory)',
  APP_IMAGE_FILE_INVALID: 'the file given as an image is missing, not a regular file, empty, or not a whole number of 512-byte sectors',
  APP_NO_PUBLISHED_VERSION: 'the image a client boots has no published version yet (or the client is pinned to one that is not published)',
  APP_NO_BOOT: 'the client has no current boot, so it has no export yet; a boot (or `diskless client new-boot`) starts one',
  APP_OVERLAY_BUSY: 'an overlay could not be deleted because a running server still has it open; it is deleted when released',
  APP_LISTEN_INVALID: 'a listen address is not HOST:PORT (IPv6 as [ADDR]:PORT) with a port from 0 to 65535',
  APP_INVALID_ARGUMENT: 'an operation was given options that contradict each other (e.g. an export both read-only and copy-on-write)',
  APP_NO_SPACE: 'the data directory has less free space than the operation needs (a new version, a commit); nothing was written',
  APP_VERSION_IN_USE: 'an image version cannot be deleted while it is the current version, pinned, run by a client\'s current boot or under an overlay; the message names which',
  APP_IMAGE_IN_USE: 'an image cannot be deleted while clients are assigned to it; the message names them',
  APP_NOTHING_TO_ROLL_BACK: 'the image has no published version older than its current one to roll back to',
  APP_VERSION_NOT_PUBLISHED: 'a rollback named a version that was never published (publish it instead)',
  APP_NOT_IN_MAINTENANCE: 'a commit named a client that is not in maintenance',
  APP_NO_DRAFT: 'a commit named a maintenance client that has no draft yet (it has not booted since maintenance was turned on)',
  APP_DRAFT_OUTDATED: 'the draft is based on an older version than the current one, so committing it would drop the newer changes; reset the client, or commit with force',
  APP_CLIENT_RUNNING: 'the client\'s disk is open in a running server; shut the client down so its file systems are clean, then try again',
  DEMO_NEEDS_ROOT: 'the demo needs root (network namespace, tap device, image build)',
  DEMO_RUNNING: 'a demo is already running (stop it with `diskless demo stop`)',
  DEMO_COMMAND_FAILED: 'a command the demo runs (ip, QEMU) failed',
  DEMO_SERVER_FAILED: 'the demo server exited or did not start',
  DEMO_VM_FAILED: 'the demo VM exited before it reached the login prompt',
  DEMO_TIMEOUT: 'the demo VM did not reach the login prompt in time',
  APP_IPXE_NOT_FOUND: 'no folder with the iPXE binaries was found (install Debian\'s ipxe package or set tftp.ipxeDir)',
} as const;

export type AppErrorCode = keyof typeof ERROR_CODES;

export class AppError extends DisklessError {
  override readonly name: string = 'AppError';
  constructor(override readonly code: AppErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, undefined, options);
  }
}

/** The configuration is invalid: `problems` lists every one, each as `path: what is wrong`. */
export class ConfigError extends AppError {
  override readonly name = 'ConfigError';
  constructor(
    code: AppErrorCode,
    message: string,
    readonly problems: readonly string[] = [],
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}
