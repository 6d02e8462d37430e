/**
 * The records the store hands out. Plain objects, times in milliseconds
 * since the Unix epoch, MACs in `aa:bb:cc:dd:ee:ff` form, paths relative to
 * the data directory.
 */
import type { BOOT_STEPS, CLIENT_MODES, CLIENT_STATES, LEASE_STATES } from './migrations.js';

export type BootStep = (typeof BOOT_STEPS)[number];
export type ClientMode = (typeof CLIENT_MODES)[number];
export type ClientState = (typeof CLIENT_STATES)[number];
export type LeaseState = (typeof LEASE_STATES)[number];

export interface ImageRecord {
  id: number;
  name: string;
  description: string | null;
  /** The version clients boot unless pinned; null until one is published. */
  currentVersion: number | null;
  createdMs: number;
}

/** What was found in an image version for booting it; filled in after import. */
export interface BootInfo {
  /** Kernel files inside the image, e.g. "/boot/vmlinuz-6.1.0-18-amd64". */
  kernels?: string[];
  initramfs?: string[];
  [key: string]: unknown;
}

export interface ImageVersionRecord {
  id: number;
  imageId: number;
  image: string;
  version: number;
  /** The raw disk file, relative to the data directory. */
  path: string;
  size: number;
  sha256: string;
  createdMs: number;
  published: boolean;
  bootInfo: BootInfo | null;
}

export interface ClientRecord {
  id: number;
  mac: string;
  name: string | null;
  imageId: number;
  image: string;
  pinnedVersion: number | null;
  mode: ClientMode;
  /** The image version of the current boot (null before the first boot). */
  bootVersionId: number | null;
  bootVersion: number | null;
  /** Image name of bootVersionId (the client's image may have changed since). */
  bootImage: string | null;
  bootId: string | null;
  /** The secret part of the client's export name for this boot. */
  bootToken: string | null;
  bootStartedMs: number | null;
  /** Source address the current boot is bound to; null until known. */
  bootAddress: string | null;
  lastAddress: string | null;
  lastSeenMs: number | null;
  state: ClientState;
  /** Its overlay is a draft of the image's next version (`diskless image commit`). */
  maintenance: boolean;
  /** Most bytes its overlay may allocate; null for no limit. */
  quotaBytes: number | null;
  createdMs: number;
  updatedMs: number;
}

export interface OverlayRecord {
  id: number;
  clientId: number;
  mac: string;
  versionId: number;
  image: string;
  version: number;
  /** Relative to the data directory. */
  dir: string;
  /** Made while the client was in maintenance: a draft of a new version. */
  draft: boolean;
  createdMs: number;
}

export interface UnknownMachineRecord {
  mac: string;
  firstSeenMs: number;
  lastSeenMs: number;
  arch: string | null;
  attempts: number;
}

export interface BootEventRecord {
  id: number;
  mac: string;
  bootId: string | null;
  step: BootStep;
  timeMs: number;
  detail: Record<string, unknown> | null;
}

export interface LeaseRow {
  address: string;
  /** The subnet (CIDR, as configured) the address belongs to. */
  subnet: string;
  /** Empty for a declined address. */
  mac: string;
  clientKey: string;
  state: LeaseState;
  expiresMs: number;
  updatedMs: number;
  hostName: string | null;
}
