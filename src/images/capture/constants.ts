/**
 * Named defaults and limits of disk capture: a machine running the kit
 * (kit/diskless-kit.sh) streams its disk to the server in chunks, each with
 * its sha256, resumable, then asks the server to verify the whole and publish
 * it as a new image version. See README.md beside this file.
 */

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export interface CaptureLimits {
  /** Largest disk accepted, in bytes (also bounded by the free space of the data directory). */
  maxSize: number;
  /** Largest chunk a client may declare; bounds the memory one chunk request holds. */
  maxChunkSize: number;
  /** Smallest chunk a client may declare: fewer, larger requests; bounds the chunk map's length. */
  minChunkSize: number;
  /** Uploads open at once (started, not yet finished, aborted or expired). */
  maxUploads: number;
  /** Chunk bodies being received or written at once, over all uploads (each holds up to maxChunkSize). */
  maxInflightChunks: number;
  /** An upload with no request for this long is discarded with its files. */
  idleTimeoutMs: number;
  /** Free space kept in the data directory beyond every open upload's remaining bytes. */
  reserveBytes: number;
}

export const CAPTURE_DEFAULTS: Readonly<CaptureLimits> = Object.freeze({
  maxSize: 4 * 1024 * GiB,
  maxChunkSize: 64 * MiB,
  minChunkSize: 64 * 1024,
  maxUploads: 4,
  maxInflightChunks: 8,
  idleTimeoutMs: 24 * 60 * 60 * 1000,
  reserveBytes: 1 * GiB,
});

/** The chunk size the kit uses unless told otherwise (8 MiB: a few per second on a 1 Gb/s link). */
export const KIT_DEFAULT_CHUNK_SIZE = 8 * MiB;

/** How often idle uploads are looked for. */
export const SWEEP_INTERVAL_MS = 60_000;

/** Lowercase hex sha256, as sha256sum prints it. */
export const SHA256_HEX = /^[0-9a-f]{64}$/;
/** Upload ids the server hands out (base64url of 16 random bytes). */
export const UPLOAD_ID = /^[A-Za-z0-9_-]{22}$/;
/** An image name: what the catalogue will call the captured version's image. */
export const CAPTURE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** A client's resume key: the kit derives it from machine id, disk, size and name. */
export const RESUME_KEY = /^[A-Za-z0-9._:-]{8,128}$/;

/** Files of one upload, inside `<dataDir>/capture/<id>/`. */
export const UPLOAD_FILES = {
  /** JSON: name, size, chunk size, key, declared sha256, creation time. */
  meta: 'meta.json',
  /** The disk being assembled: a sparse file of the final size; chunk n lives at n * chunkSize. */
  data: 'disk.raw',
  /** Append-only journal, one line `<n> <sha256>` per chunk stored (the last line for n wins). */
  journal: 'chunks.log',
} as const;

/** Sub-folder of the data directory that holds uploads. */
export const CAPTURE_DIR = 'capture';
