/**
 * An incremental decoder of the cpio "newc" (070701) and "crc" (070702)
 * archives an initramfs is made of, as the kernel reads them
 * (Documentation/driver-api/early-userspace/buffer-format.rst):
 *
 *   header (110 ASCII bytes) | name, NUL-terminated | pad to 4 | data | pad to 4
 *
 * repeated until the entry named TRAILER!!!; after it, zero bytes may pad the
 * stream and another archive may follow. When something that is neither
 * zeros nor a cpio header follows a trailer (a compressed archive after an
 * uncompressed early one), the decoder stops and reports where it begins, so
 * the caller can hand the rest to a decompressor.
 *
 * It is fed chunks of any size (push), keeps partial headers and names
 * between chunks, and skips file data without buffering it, except small
 * symlink targets and files the caller asked to capture.
 */
import { CPIO_CRC_MAGIC, CPIO_HEADER_SIZE, CPIO_NEWC_MAGIC, CPIO_TRAILER } from './constants.js';
import { imagesError } from './errors.js';

export type CpioEntryType = 'file' | 'directory' | 'symlink' | 'char-device' | 'block-device' | 'fifo' | 'socket' | 'unknown';

export interface CpioEntry {
  /** The path as stored, without a leading "./" or "/". */
  name: string;
  type: CpioEntryType;
  mode: number;
  size: number;
  nlink: number;
  mtime: number;
  /** Symlinks: where they point. */
  linkTarget?: string;
  /** Files the caller asked to capture (options.capture), when not larger than options.captureLimit. */
  content?: Buffer;
}

export interface CpioDecoderOptions {
  onEntry: (entry: CpioEntry) => void;
  /** Regular files whose content should be kept (e.g. modules.builtin). */
  capture?: (name: string) => boolean;
  /** Our limit on a captured file or symlink target. */
  captureLimit?: number;
  /** Our limit on entries in one stream (the kernel has none; a listing needs one). */
  maxEntries?: number;
}

/** A path is at most PATH_MAX (4096) bytes including its NUL. */
export const CPIO_MAX_NAME = 4096;
export const DEFAULT_CAPTURE_LIMIT = 1024 * 1024;
export const DEFAULT_MAX_ENTRIES = 1_000_000;

const S_IFMT = 0o170000;
const TYPES: Record<number, CpioEntryType> = {
  0o100000: 'file',
  0o040000: 'directory',
  0o120000: 'symlink',
  0o020000: 'char-device',
  0o060000: 'block-device',
  0o010000: 'fifo',
  0o140000: 'socket',
};

/** The decoder's states; each names what the next bytes are. */
type State =
  | 'header' // collecting the 110-byte header
  | 'name' // collecting namesize bytes
  | 'name-pad' // skipping to the 4-byte boundary after the name
  | 'data' // skipping (or capturing) filesize bytes
  | 'data-pad' // skipping to the 4-byte boundary after the data
  | 'gap' // at the start or after a trailer: zero padding, an archive, or foreign data
  | 'foreign'; // something else follows at `foreignOffset`; the decoder takes no more

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

export class CpioDecoder {
  /** A stream may begin with zeros or with foreign (compressed) data, as after a trailer. */
  private state: State = 'gap';
  /** The header being read is the first of an archive, where foreign data may stand instead. */
  private atArchiveStart = true;
  /** Absolute offset in the stream of the next byte pushed. */
  private offset = 0;
  private partial: Buffer[] = [];
  private partialLength = 0;
  private need = CPIO_HEADER_SIZE;
  private entryStart = 0;
  private current: { name?: string; mode: number; size: number; nlink: number; mtime: number; namesize: number } | undefined;
  private keep: Buffer[] | undefined;
  private count = 0;
  private trailers = 0;
  private readonly captureLimit: number;
  private readonly maxEntries: number;
  /** Where foreign (non-cpio, non-zero) data begins, once found. */
  foreignOffset: number | undefined;

  constructor(private readonly options: CpioDecoderOptions) {
    this.captureLimit = options.captureLimit ?? DEFAULT_CAPTURE_LIMIT;
    this.maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
  }

  /** Entries decoded so far (trailers excluded). */
  get entries(): number {
    return this.count;
  }

  /** Archives completed (trailers seen). */
  get archives(): number {
    return this.trailers;
  }

  /** True once the decoder stopped at foreign data; further pushes are ignored. */
  get stopped(): boolean {
    return this.state === 'foreign';
  }

  /** True when the stream so far ends cleanly (after a trailer and optional zero padding). */
  get complete(): boolean {
    return (this.state === 'gap' || this.state === 'foreign') && this.trailers > 0;
  }

  push(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && this.state !== 'foreign') {
      switch (this.state) {
        case 'gap': {
          // The kernel skips zero bytes between archives, 4 at a time; we accept any count.
          while (i < chunk.length && chunk[i] === 0) i++;
          if (i < chunk.length) {
            const at = this.offset + i;
            if (chunk[i] === 0x30 /* '0' */) {
              // Probably another cpio archive: read it as a header; if the magic is wrong, it was foreign data.
              this.state = 'header';
              this.need = CPIO_HEADER_SIZE;
              this.entryStart = at;
              this.atArchiveStart = true;
            } else {
              this.foreignOffset = at;
              this.state = 'foreign';
            }
          }
          break;
        }
        case 'header':
        case 'name': {
          const take = Math.min(this.need - this.partialLength, chunk.length - i);
          if (this.partialLength === 0 && this.state === 'header') this.entryStart = this.offset + i;
          this.partial.push(chunk.subarray(i, i + take));
          this.partialLength += take;
          i += take;
          if (this.partialLength === this.need) {
            const bytes = this.partial.length === 1 ? this.partial[0]! : Buffer.concat(this.partial, this.partialLength);
            this.partial = [];
            this.partialLength = 0;
            if (this.state === 'header') {
              if (!this.onHeader(bytes)) {
                // Not a header after all: foreign data starts where this "header" did.
                this.foreignOffset = this.entryStart;
                this.state = 'foreign';
              }
            } else {
              this.onName(bytes);
            }
          }
          break;
        }
        case 'name-pad':
        case 'data-pad': {
          const take = Math.min(this.need, chunk.length - i);
          for (let k = 0; k < take; k++) {
            if (chunk[i + k] !== 0) this.fail(`non-zero padding at byte ${this.offset + i + k}`);
          }
          this.need -= take;
          i += take;
          if (this.need === 0) this.afterPad();
          break;
        }
        case 'data': {
          const take = Math.min(this.need, chunk.length - i);
          if (this.keep) this.keep.push(chunk.subarray(i, i + take));
          this.need -= take;
          i += take;
          if (this.need === 0) this.afterData();
          break;
        }
      }
    }
    this.offset += chunk.length;
  }

  /** Call at the end of the stream: throws IMAGES_INITRAMFS_CORRUPT when it ends inside an archive or holds none. */
  end(): void {
    if (this.state === 'foreign') return;
    if (this.state === 'gap') {
      if (this.trailers === 0) this.fail('no cpio archive in the stream');
      return;
    }
    this.fail(`the archive ends inside an entry (${this.state}) at byte ${this.offset}`);
  }

  private fail(why: string): never {
    throw imagesError('IMAGES_INITRAMFS_CORRUPT', `not a valid cpio archive: ${why}`);
  }

  /** Returns false when the bytes are not a cpio header and a trailer came before (foreign data). */
  private onHeader(h: Buffer): boolean {
    const magic = h.toString('latin1', 0, 6);
    if (magic !== CPIO_NEWC_MAGIC && magic !== CPIO_CRC_MAGIC) {
      if (this.atArchiveStart) return false;
      this.fail(`bad magic ${JSON.stringify(magic)} at byte ${this.entryStart} (only newc 070701 and crc 070702 are initramfs formats)`);
    }
    const field = (n: number): number => {
      const s = h.toString('latin1', 6 + n * 8, 14 + n * 8);
      if (!/^[0-9a-fA-F]{8}$/.test(s)) this.fail(`header field ${n} ${JSON.stringify(s)} at byte ${this.entryStart} is not hexadecimal`);
      return parseInt(s, 16);
    };
    const mode = field(1);
    const nlink = field(4);
    const mtime = field(5);
    const size = field(6);
    const namesize = field(11);
    if (namesize < 1 || namesize > CPIO_MAX_NAME) this.fail(`name size ${namesize} at byte ${this.entryStart}`);
    this.atArchiveStart = false;
    this.current = { mode, size, nlink, mtime, namesize };
    this.state = 'name';
    this.need = namesize;
    return true;
  }

  private onName(bytes: Buffer): void {
    const cur = this.current!;
    if (bytes[bytes.length - 1] !== 0) this.fail(`the name at byte ${this.entryStart} is not NUL-terminated`);
    cur.name = bytes.toString('utf8', 0, bytes.length - 1);
    this.state = 'name-pad';
    this.need = pad4(CPIO_HEADER_SIZE + cur.namesize);
    if (this.need === 0) this.afterPad();
  }

  private afterPad(): void {
    if (this.state === 'name-pad') {
      const cur = this.current!;
      if (cur.name === CPIO_TRAILER) {
        // The trailer closes this archive; what follows is zero padding or another archive.
        this.trailers++;
        this.current = undefined;
        this.state = 'gap';
        return;
      }
      const type = TYPES[cur.mode & S_IFMT] ?? 'unknown';
      const wanted = type === 'symlink' || (type === 'file' && this.options.capture?.(normalizeName(cur.name!)) === true);
      this.keep = wanted && cur.size <= this.captureLimit ? [] : undefined;
      this.state = 'data';
      this.need = cur.size;
      if (this.need === 0) this.afterData();
    } else {
      this.state = 'header';
      this.need = CPIO_HEADER_SIZE;
    }
  }

  private afterData(): void {
    const cur = this.current!;
    if (++this.count > this.maxEntries) this.fail(`more than ${this.maxEntries} entries`);
    const type = TYPES[cur.mode & S_IFMT] ?? 'unknown';
    const entry: CpioEntry = { name: normalizeName(cur.name!), type, mode: cur.mode, size: cur.size, nlink: cur.nlink, mtime: cur.mtime };
    if (this.keep) {
      const data = Buffer.concat(this.keep);
      if (type === 'symlink') entry.linkTarget = data.toString('utf8');
      else entry.content = data;
    }
    this.keep = undefined;
    this.current = undefined;
    this.options.onEntry(entry);
    this.state = 'data-pad';
    this.need = pad4(cur.size);
    if (this.need === 0) this.afterPad();
  }
}

export function normalizeName(name: string): string {
  let n = name;
  while (n.startsWith('./')) n = n.slice(2);
  while (n.startsWith('/')) n = n.slice(1);
  return n === '.' ? '' : n.replace(/\/+$/, '');
}

// --- writing, for tests and tools -------------------------------------------

export interface CpioWriteEntry {
  name: string;
  /** Defaults: directories 0o040755, files 0o100644, symlinks 0o120777. */
  mode?: number;
  type?: 'file' | 'directory' | 'symlink';
  data?: Buffer | string;
}

/** Writes a newc archive with a trailer (what `cpio -o -H newc` makes). */
export function writeCpio(entries: CpioWriteEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const put = (name: string, mode: number, data: Buffer): void => {
    const nameBytes = Buffer.from(name + '\0', 'utf8');
    const fields = [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, nameBytes.length, 0];
    const header = Buffer.from(CPIO_NEWC_MAGIC + fields.map((f) => f.toString(16).padStart(8, '0')).join(''), 'latin1');
    parts.push(header, nameBytes, Buffer.alloc(pad4(CPIO_HEADER_SIZE + nameBytes.length)), data, Buffer.alloc(pad4(data.length)));
  };
  for (const e of entries) {
    const type = e.type ?? (e.data === undefined ? 'directory' : 'file');
    const mode = e.mode ?? (type === 'directory' ? 0o040755 : type === 'symlink' ? 0o120777 : 0o100644);
    put(e.name, mode, Buffer.from(e.data ?? ''));
  }
  put(CPIO_TRAILER, 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}
