/** Error codes of the boot module (policy, scripts, command lines). */
import { DisklessError } from '../lib/errors.js';

export const ERROR_CODES = {
  BOOT_UNSAFE_VALUE: 'a value to be placed in an iPXE script or kernel command line contains characters that would change its meaning',
  BOOT_NO_ROOT: 'the image version names no root file system (neither a UUID nor a device), so no command line can mount it',
} as const;

export type BootErrorCode = keyof typeof ERROR_CODES;

export class BootError extends DisklessError {
  override readonly name = 'BootError';
  constructor(code: BootErrorCode, message: string) {
    super(code, message, 'EINVAL');
  }
}
