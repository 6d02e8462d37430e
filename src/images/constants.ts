/**
 * Names and numbers of the on-disk formats the image tooling reads, as their
 * specifications name them:
 * - UEFI Specification 2.10, section 5.2 (MBR) and 5.3 (GPT);
 * - the Discoverable Partitions Specification (UAPI group) for the Linux
 *   partition type GUIDs;
 * - the ext4 on-disk layout (kernel Documentation/filesystems/ext4), for the
 *   superblock fields read here;
 * - the kernel's initramfs buffer format (Documentation/driver-api/
 *   early-userspace/buffer-format.rst) for cpio "newc".
 */

/** MBR: the boot signature at offset 510 (UEFI 5.2.1, "Signature" 0xAA55 little-endian). */
export const MBR_SIGNATURE_OFFSET = 510;
export const MBR_PARTITION_TABLE_OFFSET = 446;
export const MBR_PARTITION_RECORD_SIZE = 16;
export const MBR_PARTITION_COUNT = 4;
/** UEFI 5.2.3: OSType 0xEE marks the protective MBR of a GPT disk. */
export const MBR_TYPE_GPT_PROTECTIVE = 0xee;
/** Partition types that contain an extended partition chain (EBRs). */
export const MBR_EXTENDED_TYPES: ReadonlySet<number> = new Set([0x05, 0x0f, 0x85]);

export const MBR_TYPES = {
  0x06: 'fat16',
  0x07: 'microsoft-basic-data',
  0x0b: 'fat32',
  0x0c: 'fat32',
  0x82: 'linux-swap',
  0x83: 'linux-filesystem',
  0x8e: 'linux-lvm',
  0xef: 'efi-system',
  0xfd: 'linux-raid',
} as const satisfies Record<number, string>;

/** GPT header (UEFI 5.3.2, table 5-5). */
export const GPT_SIGNATURE = 'EFI PART';
export const GPT_REVISION_1_0 = 0x00010000;
/** The header fields defined by revision 1.0 take 92 bytes; HeaderSize may be larger, never smaller. */
export const GPT_HEADER_MIN_SIZE = 92;
/** UEFI 5.3.3: SizeOfPartitionEntry is 128 * 2^n. */
export const GPT_ENTRY_MIN_SIZE = 128;
/**
 * Our limit on the partition entry array (sfdisk and gdisk write 128 entries
 * of 128 bytes = 16 KiB). A header asking for more than this is treated as
 * damaged rather than read.
 */
export const GPT_MAX_ENTRY_ARRAY_BYTES = 1024 * 1024;
/** Logical sector sizes probed for the GPT header at LBA 1. */
export const SECTOR_SIZES = [512, 4096] as const;
/** Our limit on logical partitions in an MBR extended chain (a loop guard as much as a limit). */
export const MBR_MAX_LOGICAL_PARTITIONS = 128;

/** Partition type GUIDs (UEFI 5.3.3 table 5-7; Discoverable Partitions Specification). */
export const GPT_TYPES = {
  'C12A7328-F81F-11D2-BA4B-00A0C93EC93B': 'efi-system',
  '21686148-6449-6E6F-744E-656564454649': 'bios-boot',
  '0FC63DAF-8483-4772-8E79-3D69D8477DE4': 'linux-filesystem',
  '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709': 'linux-root-x86-64',
  '44479540-F297-41B2-9AF7-D131D5F0458A': 'linux-root-x86',
  'B921B045-1DF0-41C3-AF44-4C6F280D3FAE': 'linux-root-arm64',
  '8484680C-9521-48C6-9C11-B0720656F69E': 'linux-usr-x86-64',
  '933AC7E1-2EB4-4F13-B844-0E14E2AEF915': 'linux-home',
  'BC13C2FF-59E6-4262-A352-B275FD6F7172': 'linux-extended-boot',
  '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F': 'linux-swap',
  'E6D6D379-F507-44C2-A23C-238F2A3DF928': 'linux-lvm',
  'A19D880F-05FC-4D3B-A006-743F0F84911E': 'linux-raid',
  'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7': 'microsoft-basic-data',
  'E3C9E316-0B5C-4DB8-817D-F92DF00215AE': 'microsoft-reserved',
} as const;

export type PartitionKind =
  | (typeof GPT_TYPES)[keyof typeof GPT_TYPES]
  | (typeof MBR_TYPES)[keyof typeof MBR_TYPES]
  | 'extended'
  | 'unknown';

/** Partition kinds that may hold a Linux root file system. */
export const ROOT_CANDIDATE_KINDS: ReadonlySet<PartitionKind> = new Set<PartitionKind>([
  'linux-root-x86-64',
  'linux-filesystem',
  'linux-root-x86',
  'linux-root-arm64',
  'microsoft-basic-data', // old tools (fdisk before GPT Linux types) marked Linux partitions so
  'unknown',
]);

/** ext2/3/4 superblock: 1024 bytes into the file system (ext4 layout, "The Super Block"). */
export const EXT_SUPERBLOCK_OFFSET = 1024;
export const EXT_SUPER_MAGIC = 0xef53;
export const EXT_SB = {
  s_blocks_count_lo: 0x04,
  s_log_block_size: 0x18,
  s_magic: 0x38,
  s_feature_compat: 0x5c,
  s_feature_incompat: 0x60,
  s_feature_ro_compat: 0x64,
  s_uuid: 0x68,
  s_volume_name: 0x78,
  s_blocks_count_hi: 0x150,
} as const;
export const EXT4_FEATURE_COMPAT_HAS_JOURNAL = 0x4;
export const EXT4_FEATURE_INCOMPAT_EXTENTS = 0x40;
export const EXT4_FEATURE_INCOMPAT_64BIT = 0x80;

/** cpio "newc" (070701) and "crc" (070702): 110-byte ASCII header, 4-byte alignment. */
export const CPIO_NEWC_MAGIC = '070701';
export const CPIO_CRC_MAGIC = '070702';
export const CPIO_HEADER_SIZE = 110;
export const CPIO_TRAILER = 'TRAILER!!!';

/** Magic numbers of the compressions the kernel accepts for an initramfs. */
export const COMPRESSION_MAGIC = [
  { name: 'gzip', magic: Buffer.from([0x1f, 0x8b]) },
  { name: 'zstd', magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]) },
  { name: 'xz', magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) },
  { name: 'lz4', magic: Buffer.from([0x02, 0x21, 0x4c, 0x18]) },
  { name: 'bzip2', magic: Buffer.from('BZh') },
  { name: 'lzma', magic: Buffer.from([0x5d, 0x00, 0x00]) },
] as const;
export type Compression = (typeof COMPRESSION_MAGIC)[number]['name'];
