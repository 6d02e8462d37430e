/**
 * Errors of the test guest harness (building the initramfs, booting QEMU,
 * running the NBD server it talks to). Test helpers are not part of the
 * product's catalogue in docs/errors.md; the codes follow the same habit so
 * a failing test says which step broke.
 */
import { DisklessError } from '../../../src/lib/errors.js';

export const GUEST_ERROR_CODES = {
  GUEST_BAD_ARGUMENT: 'a guest parameter (address, port, export name, payload size) is out of range',
  GUEST_NO_KERNEL: 'no bootable kernel with a matching module directory was found for the test guest',
  GUEST_BUILD_FAILED: 'building the test guest initramfs failed',
  GUEST_QEMU_FAILED: 'QEMU could not be started or exited on its own before the guest finished',
  GUEST_TIMEOUT: 'the guest did not print the awaited event on its serial console in time',
  GUEST_REPORTED_FAILURE: 'the guest printed a "fail" event: a step inside the guest went wrong',
  GUEST_SERVER_FAILED: 'the NBD server under test did not start, or exited, or did not stop',
  GUEST_HOST_CHECK_FAILED: 'a host-side check of the exported disk (nbdcopy, debugfs) failed',
} as const;
export type GuestErrorCode = keyof typeof GUEST_ERROR_CODES;

export class GuestError extends DisklessError {
  override readonly name = 'GuestError';
  constructor(code: GuestErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, undefined, options);
  }
}
