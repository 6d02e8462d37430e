/**
 * What the NBD server needs from the application: a way to turn an export
 * name asked for by a peer into a block device. The app implements it over
 * the catalogue (client overlays, read-only image versions); the ad-hoc
 * `diskless export FILE` command implements it over one file.
 */
import type { BlockDevice } from '../../storage/block-device.js';

/** Who is asking. NBD carries no identity of its own beyond the export name. */
export interface Peer {
  address: string;
  port: number;
  /** 'IPv4' | 'IPv6' */
  family: string;
}

export interface ExportInfo {
  name: string;
  description?: string;
}

/** An export opened for one connection; release() is called once when the connection ends. */
export interface OpenedExport {
  name: string;
  description?: string;
  device: BlockDevice;
  release(): Promise<void>;
}

export interface ExportResolver {
  /** Names this peer may see (NBD_OPT_LIST); may be empty. */
  list(peer: Peer): Promise<ExportInfo[]>;
  /**
   * Opens an export for this peer. The empty name means the default export,
   * if any. Throws DisklessError with code NBD_EXPORT_UNKNOWN (reply
   * NBD_REP_ERR_UNKNOWN) or NBD_EXPORT_FORBIDDEN (NBD_REP_ERR_POLICY).
   */
  open(name: string, peer: Peer): Promise<OpenedExport>;
}
