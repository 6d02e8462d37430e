/** Error codes of the boot module (policy, scripts, command lines). */
import { DisklessError } from '../lib/errors.js';

export const ERROR_CODES = {
  BOOT_UNSAFE_VALUE: 'a value to be placed in an iPXE script or kernel command line contains characters that would change its meaning',
  BOOT_NO_ROOT: 'the image version names no root file system (neither a UUID nor a device), so no command line can mount it',
  BOOT_FILE_OUTSIDE_DATA_DIR: 'an image version\'s boot information names a kernel or initramfs path that leaves the data directory',
  BOOT_INTERFACE_UNUSABLE: 'a DHCP interface of the configuration does not exist in this network namespace, or has no IPv4 address and none is configured',
} as const;

export type BootErrorCode = keyof typeof ERROR_CODES;

export class BootError extends DisklessError {
  override readonly name = 'BootError';
  constructor(code: BootErrorCode, message: string) {
    super(code, message, 'EINVAL');
  }
}
