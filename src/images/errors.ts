/**
 * Error codes of the image tooling: partition tables, disk inspection,
 * initramfs listing, import and the Debian image build. The CLI shows the
 * message; the code is stable for scripts, the API and docs/errors.md.
 */
import { DisklessError, type Errno } from '../lib/errors.js';

export const ERROR_CODES = {
  IMAGES_UNKNOWN_PARTITION_TABLE: 'the disk has neither an MBR (0x55AA signature) nor a GPT header, and is not a bare file system either',
  IMAGES_MBR_CORRUPT: 'the MBR or an extended partition chain is damaged: bad boot flag, a partition outside the disk, overlapping partitions, or a loop in the chain',
  IMAGES_GPT_HEADER_CORRUPT: 'neither the primary nor the backup GPT header is valid (signature, header CRC32, its own LBA, usable range)',
  IMAGES_GPT_ENTRIES_CORRUPT: 'the GPT partition entry array fails its CRC32 in both copies, or an entry lies outside the usable range or overlaps another',
  IMAGES_DISK_UNREADABLE: 'the disk file cannot be opened or read, or is shorter than its partition table says',
  IMAGES_NO_LINUX_ROOT: 'no partition holds a Linux root file system (ext2/3/4 with /etc/os-release and /sbin/init or /usr/lib/systemd)',
  IMAGES_UNSUPPORTED_FILESYSTEM: 'the file system cannot be read by the image tooling (only ext2/3/4 roots are supported)',
  IMAGES_NO_KERNEL: 'the root file system has no kernel in /boot (vmlinuz-VERSION), or the kernel asked for is not there',
  IMAGES_NO_INITRAMFS: 'the kernel has no matching initramfs (initrd.img-VERSION or initramfs-VERSION.img)',
  IMAGES_INITRAMFS_NO_NBD: 'the initramfs cannot mount the root over NBD: it lacks nbd-client, the nbd module or the nbd boot script',
  IMAGES_INITRAMFS_CORRUPT: 'the initramfs is not a valid (possibly compressed, possibly concatenated) newc cpio archive',
  IMAGES_INITRAMFS_COMPRESSION: 'the initramfs uses a compression whose decompressor is not installed on the server',
  IMAGES_FS_READ_FAILED: 'debugfs could not read a file from the image\'s file system',
  IMAGES_TOOL_MISSING: 'a program the image tooling runs is not installed (scripts/setup installs it)',
  IMAGES_TOOL_FAILED: 'a program the image tooling runs exited with an error; its last output lines are in the message',
  IMAGES_IMPORT_FORMAT: 'the source disk is not in a format that can be imported (raw, qcow2, vmdk, vdi, vhdx), or its content contradicts its file name',
  IMAGES_IMPORT_CORRUPT: 'qemu-img reports the source disk as corrupt or cannot read it',
  IMAGES_IMPORT_EXTERNAL_FILE: 'the source disk refers to other files (backing file, external data file, vmdk extent elsewhere); import the flattened disk instead',
  IMAGES_NO_SPACE: 'the destination file system has less free space than the disk needs',
  IMAGES_OUTPUT_EXISTS: 'the output file already exists; the image tooling never overwrites one',
  IMAGES_BAD_OPTION: 'an option of build or import is invalid (size, suite, package or host name, mirror URL, path)',
  IMAGES_NO_MIRROR: 'no Debian mirror was given and none could be read from the apt sources of this machine',
  IMAGES_BUILD_NEEDS_ROOT: 'building an image needs root (debootstrap, chroot and device nodes)',
  IMAGES_BUILD_BUSY: 'another build with the same inputs is running (its lock file names its process)',
  IMAGES_BUILD_FAILED: 'a step of the image build failed; the message names the step',
  IMAGES_ABORTED: 'the operation was cancelled; nothing half-made was left behind',
  IMAGES_KIT_MISSING: 'a file of the client kit (the kit/ folder of the installation) is missing or unreadable',
} as const;

export type ImagesErrorCode = keyof typeof ERROR_CODES;

/** The errno each code carries when it has a natural one (for logs and the API). */
const ERRNO: Partial<Record<ImagesErrorCode, Errno>> = {
  IMAGES_DISK_UNREADABLE: 'EIO',
  IMAGES_FS_READ_FAILED: 'EIO',
  IMAGES_NO_SPACE: 'ENOSPC',
  IMAGES_BAD_OPTION: 'EINVAL',
  IMAGES_BUILD_NEEDS_ROOT: 'EPERM',
  IMAGES_INITRAMFS_COMPRESSION: 'ENOTSUP',
  IMAGES_UNSUPPORTED_FILESYSTEM: 'ENOTSUP',
};

export class ImagesError extends DisklessError {
  override readonly name = 'ImagesError';
  /** Structured detail for the CLI and API (e.g. what the client kit must add). */
  readonly details: Record<string, unknown> | undefined;
  constructor(
    code: ImagesErrorCode,
    message: string,
    options?: {
      cause?: unknown;
      /** Structured detail for the CLI and API (e.g. what the client kit must add). */
      details?: Record<string, unknown>;
    },
  ) {
    super(code, message, ERRNO[code], options);
    this.details = options?.details;
  }
}

export function imagesError(code: ImagesErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }): ImagesError {
  return new ImagesError(code, message, options);
}
