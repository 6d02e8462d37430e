/**
 * On-disk format of an overlay directory (version 1). Pure: Buffers in and
 * out, no I/O. The design and the crash-safety argument are in overlay.ts.
 *
 *   overlay.map   header (4096 bytes) then the map: 2 bits per cluster,
 *                 four clusters a byte, padded to whole 4096-byte pages
 *   overlay.data  sparse file of the virtual size; cluster i at i * cluster
 *   overlay.lock  pid of the process that has the overlay open
 *
 * Header (little-endian):
 *   0   8  magic "DLCOWMAP"
 *   8   4  format version (1)
 *   12  4  header size (4096)
 *   16  4  cluster size in bytes
 *   20  4  flags (0; a reader refuses bits it does not know)
 *   24  8  virtual size in bytes
 *   32  8  cluster count
 *   40  8  map offset (4096)
 *   48  8  map length in bytes (whole pages)
 *   56  8  creation time, ms since the epoch
 *   64  2  length of the base identity in bytes (at most 1024)
 *   66  n  base identity, UTF-8
 *   4092 4 CRC-32 of bytes 0..4091
 *
 * The header is written once, when the overlay is created, and never again,
 * so it is never torn by a crash: a bad checksum means damage, not a crash.
 */
import { createHash } from 'node:crypto';
import { storageError } from '../errors.js';
import { crc32 } from '../file-io.js';
import { ClusterMap, MAP_PAGE_SIZE } from './cluster-map.js';

export const MAP_FILE = 'overlay.map';
export const DATA_FILE = 'overlay.data';
export const LOCK_FILE = 'overlay.lock';
/** The map is built under this name and renamed into place: the rename is the moment the overlay exists. */
export const MAP_FILE_TMP = 'overlay.map.new';

export const MAGIC = Buffer.from('DLCOWMAP', 'latin1');
export const FORMAT_VERSION = 1;
export const HEADER_SIZE = 4096;
export const MAX_IDENTITY_BYTES = 1024;
export const MIN_CLUSTER_SIZE = 4096;
export const MAX_CLUSTER_SIZE = 1024 * 1024;

export interface OverlayHeader {
  version: number;
  clusterSize: number;
  virtualSize: number;
  clusters: number;
  mapOffset: number;
  mapLength: number;
  createdMs: number;
  baseIdentity: string;
}

export function isValidClusterSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_CLUSTER_SIZE && n <= MAX_CLUSTER_SIZE && (n & (n - 1)) === 0;
}

/** The identity as stored: itself when short enough, else a digest of it. */
export function storedIdentity(identity: string | undefined): string {
  const id = identity ?? '';
  if (Buffer.byteLength(id) <= MAX_IDENTITY_BYTES) return id;
  return 'sha256:' + createHash('sha256').update(id).digest('hex');
}

export function newHeader(virtualSize: number, clusterSize: number, baseIdentity: string | undefined, now: number): OverlayHeader {
  const clusters = Math.ceil(virtualSize / clusterSize);
  return {
    version: FORMAT_VERSION,
    clusterSize,
    virtualSize,
    clusters,
    mapOffset: HEADER_SIZE,
    mapLength: ClusterMap.pagesFor(clusters) * MAP_PAGE_SIZE,
    createdMs: now,
    baseIdentity: storedIdentity(baseIdentity),
  };
}

export function encodeHeader(h: OverlayHeader): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE);
  MAGIC.copy(buf, 0);
  buf.writeUInt32LE(h.version, 8);
  buf.writeUInt32LE(HEADER_SIZE, 12);
  buf.writeUInt32LE(h.clusterSize, 16);
  buf.writeUInt32LE(0, 20);
  buf.writeBigUInt64LE(BigInt(h.virtualSize), 24);
  buf.writeBigUInt64LE(BigInt(h.clusters), 32);
  buf.writeBigUInt64LE(BigInt(h.mapOffset), 40);
  buf.writeBigUInt64LE(BigInt(h.mapLength), 48);
  buf.writeBigUInt64LE(BigInt(h.createdMs), 56);
  const id = Buffer.from(h.baseIdentity, 'utf8');
  if (id.length > MAX_IDENTITY_BYTES) throw storageError('STORAGE_INVALID_ARGUMENT', 'base identity too long');
  buf.writeUInt16LE(id.length, 64);
  id.copy(buf, 66);
  buf.writeUInt32LE(crc32(buf.subarray(0, HEADER_SIZE - 4)), HEADER_SIZE - 4);
  return buf;
}

/** Decodes and checks a header; `where` names the file in errors. */
export function decodeHeader(buf: Buffer, where: string): OverlayHeader {
  const corrupt = (why: string) => storageError('STORAGE_OVERLAY_CORRUPT', `${where}: ${why}`);
  if (buf.length < HEADER_SIZE) throw corrupt('shorter than its header');
  if (!buf.subarray(0, 8).equals(MAGIC)) throw corrupt('not an overlay map (bad magic)');
  const version = buf.readUInt32LE(8);
  if (version !== FORMAT_VERSION) {
    throw storageError('STORAGE_OVERLAY_VERSION', `${where}: format version ${version}, this build reads ${FORMAT_VERSION}`);
  }
  if (crc32(buf.subarray(0, HEADER_SIZE - 4)) !== buf.readUInt32LE(HEADER_SIZE - 4)) throw corrupt('header checksum mismatch');
  if (buf.readUInt32LE(12) !== HEADER_SIZE) throw corrupt('unexpected header size');
  if (buf.readUInt32LE(20) !== 0) throw corrupt('unknown header flags');
  const big = (at: number): number => {
    const v = buf.readBigUInt64LE(at);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`field at ${at} out of range`);
    return Number(v);
  };
  const h: OverlayHeader = {
    version,
    clusterSize: buf.readUInt32LE(16),
    virtualSize: big(24),
    clusters: big(32),
    mapOffset: big(40),
    mapLength: big(48),
    createdMs: big(56),
    baseIdentity: '',
  };
  const idLength = buf.readUInt16LE(64);
  if (idLength > MAX_IDENTITY_BYTES) throw corrupt('base identity too long');
  h.baseIdentity = buf.toString('utf8', 66, 66 + idLength);
  if (!isValidClusterSize(h.clusterSize)) throw corrupt(`cluster size ${h.clusterSize} not allowed`);
  if (h.clusters !== Math.ceil(h.virtualSize / h.clusterSize)) throw corrupt('cluster count does not match size');
  if (h.mapOffset !== HEADER_SIZE || h.mapLength !== ClusterMap.pagesFor(h.clusters) * MAP_PAGE_SIZE) throw corrupt('map layout does not match size');
  return h;
}
