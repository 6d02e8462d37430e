/**
 * CowOverlay: a client's writable disk, a copy-on-write layer over a shared
 * read-only base (an image version).
 *
 * DESIGN NOTE
 *
 * Layout. An overlay is a directory (format.ts has the byte layout):
 * - `overlay.data`, a sparse file as large as the virtual disk. Cluster i
 *   lives at offset i * clusterSize and nowhere else, so there is no
 *   allocation table to keep consistent, no free-space management and no
 *   slot is ever reused for another cluster. Clusters never written cost
 *   no disk space.
 * - `overlay.map`, a header written once at creation (magic, version,
 *   cluster size, virtual size, the base's identity, CRC) followed by the
 *   allocation map: 2 bits per cluster, four clusters a byte, in 4 KiB
 *   pages. States: BASE (read through to the base), DATA (the data file
 *   holds the whole cluster), ZERO (reads zeros; zeroed with NBD NO_HOLE,
 *   reported zero but allocated), HOLE (reads zeros; trimmed or zeroed with
 *   permission to deallocate, reported hole+zero). All four bit patterns
 *   are states, so no map content is invalid.
 * - `overlay.lock`, the pid of the process that has it open.
 * The in-memory map is the on-disk map, byte for byte: 2 bits per cluster,
 * so 16 KiB per GiB of disk at the default 16 KiB cluster (1 MiB for a
 * 64 GiB client disk; 4 KiB per GiB at 64 KiB clusters, 64 KiB per GiB at
 * 4 KiB), plus a dirty-page set and 4 KiB copies of dirty pages during a
 * flush.
 *
 * Requests.
 * - read: the request is split into runs of clusters by state, and each run
 *   is read straight into its slice of the one output buffer: BASE runs from
 *   the base, DATA runs from the data file, ZERO/HOLE runs filled with zeros
 *   without touching either file. Runs are read in parallel; there is no
 *   per-cluster allocation. Reads take no lock: a read racing a write to the
 *   same blocks may see either, as NBD allows, but never a cluster marked
 *   DATA before its data is in the file (the state changes last).
 * - write: clusters covered whole, and clusters already DATA, are written in
 *   place. A partly covered cluster that is not DATA is read (from the base,
 *   or zeros), merged and written whole (read-modify-write). The pieces go
 *   out in one vectored write. Then the clusters become DATA.
 * - zero (WRITE_ZEROES): whole clusters become ZERO, or HOLE when the client
 *   allows deallocation; nothing is written, so FAST_ZERO is honoured. The
 *   partial clusters at the ends get zeros written (DATA), nothing (already
 *   zero, or a base range the base reports as zero), or read-modify-write
 *   from the base; only that last case is refused under FAST_ZERO.
 * - trim: whole clusters become HOLE. The partial clusters at its ends are
 *   left alone (NBD makes trim advisory; turning them into DATA would spend
 *   space to free space).
 * - extents: the map's runs; BASE runs are asked of the base, so holes and
 *   zeros of the image show through.
 * Write-like requests hold a FIFO range lock on their clusters (range-lock.ts):
 * requests on different clusters run in parallel, overlapping ones in
 * arrival order, so two read-modify-writes of one cluster never interleave.
 *
 * Durability. flush() covers every write that completed before it was
 * called; a FUA write is a write followed by a flush. The rules:
 *   R1 A cluster's slot in the data file belongs to it for ever.
 *   R2 An in-memory entry becomes DATA only after the write of the whole
 *      cluster (or an in-place write to an already-DATA cluster) completed.
 *   R3 Map pages reach the map file only in a flush, in this order:
 *      (a) copy the dirty pages, (b) fdatasync the data file, (c) write
 *      the copies, (d) fdatasync the map file. Every DATA entry in a copy
 *      refers to a slot write that completed before (a), so it is durable
 *      by (b) before the entry can be on disk. Flushes run one at a time;
 *      callers arriving during one share the next.
 *   R4 A whole-cluster rewrite (read-modify-write) happens only when the
 *      in-memory entry is not DATA.
 *   R5 The header is never rewritten and the map file never changes size;
 *      a new overlay is built under a temporary name, synced, and renamed
 *      into place (then the directory is synced): before the rename there
 *      is no overlay, after it a complete one.
 * A torn map page (power cut during (c)) is a mixture of old and new
 *   entries (an entry is 2 bits inside one byte, so it never straddles a
 *   sector). Each entry on its own is either its value after the previous
 *   completed flush or its value in this flush. A new entry is backed by
 *   (b). An old entry was valid after the previous flush, and its slot has
 *   since been written only (1) in place, over sectors some later,
 *   unacknowledged request wrote, or (2) whole, by R4, which needs the
 *   cluster to have been trimmed or zeroed whole since, again by an
 *   unacknowledged request. So every mixture reads back every sector that no
 *   request touched since the last acknowledged flush exactly, and each
 *   touched sector as one of the values it held since: the semantics of a
 *   disk with a volatile write cache. Nothing at open needs repair; open
 *   never writes to the overlay. (Simulated power cuts in
 *   test/integration/storage-powercut.test.ts and real SIGKILLs in
 *   test/integration/storage-crash.test.ts check this.)
 * An I/O error during a flush makes the overlay refuse further writes and
 *   flushes (EIO): after a failed fsync the kernel may have dropped the
 *   dirty pages, so retrying could report durability that is not there.
 *
 * Cluster size, measured with bench/storage/cluster-size.ts (512 MiB raw
 * base, 4000 random 4 KiB writes at queue depth 8 with a flush every 64,
 * 6000 boot-like requests; median of 5 runs on a shared 2-core VM, ext4 on
 * virtio; the base is in the page cache, so reads weigh the overlay's own
 * costs, while fdatasync reaches the disk). Timings move by a third from
 * run to run on this machine; the amplification and map columns are exact.
 *
 *   cluster | 4K write | space per  | bytes written | seq 1M read MB/s | boot mix     | boot mix written | map
 *           | IOPS     | 4K written | per 4K        | fresh / written  | req/s (MB/s) | per guest byte   | per GiB
 *   4K      | 10898    | 1.0x       | 1.1x          | 2285 / 2215      | 7737 (300)   | 1.7x             | 64 KiB
 *   8K      | 8327     | 1.9x       | 2.0x          | 7179 / 2286      | 15338 (595)  | 2.1x             | 32 KiB
 *   16K     | 13175    | 3.8x       | 3.8x          | 8146 / 2746      | 18161 (705)  | 2.8x             | 16 KiB
 *   32K     | 11875    | 7.1x       | 7.2x          | 6988 / 2942      | 19291 (749)  | 4.0x             | 8 KiB
 *   64K     | 7993     | 12.6x      | 12.8x         | 7942 / 3008      | 15970 (620)  | 6.3x             | 4 KiB
 *   128K    | 6722     | 20.4x      | 20.8x         | 9535 / 4515      | 17294 (671)  | 10.0x            | 2 KiB
 *   256K    | 6050     | 27.9x      | 28.5x         | 8928 / 4957      | 15345 (596)  | 14.1x            | 1 KiB
 *
 * Choice: 16 KiB. Past 32 KiB every first write to a cluster copies so much
 * of the base that write rate falls and space per client grows (a scattered
 * 4 KiB write costs 64 KiB at 64 KiB clusters); below 16 KiB the map grows
 * (64 KiB per GiB at 4 KiB) and sequential reads of a written disk are cut
 * into more runs, for no gain in the boot mix. 16 KiB keeps the map at 1 MiB
 * for a 64 GiB disk and had the best or near-best rates. Larger clusters
 * only win sequential reads of heavily rewritten disks, which the guest's
 * page cache and read-ahead soften. An existing overlay keeps the cluster
 * size it was made with.
 *
 * Sharing. One CowOverlay instance per client disk, shared by all of that
 * client's connections (capabilities.multiConn is true on that basis): a
 * second open of the same directory, in this process or another live one,
 * is refused with STORAGE_OVERLAY_IN_USE. The application must keep one
 * instance per directory and hand it to every connection.
 *
 * Space. allocatedBytes() counts DATA clusters. Node cannot punch holes, so
 * a trimmed cluster's old data stays in the data file (its space is not
 * returned) until the overlay is destroyed; the data file never grows past
 * the virtual size.
 */
import { resolve, join } from 'node:path';
import { open as openFile, readFile, unlink as unlinkFile } from 'node:fs/promises';
import type { BlockDevice, Capabilities, Extent, WriteOptions, ZeroOptions } from '../block-device.js';
import { assertRange, fromSystemError, storageError } from '../errors.js';
import { ZERO_BUFFER } from '../file-io.js';
import { MAX_EXTENTS_PER_CALL } from '../extents.js';
import { silentLogger, type Logger } from '../../lib/log.js';
import { DisklessError } from '../../lib/errors.js';
import { ClusterMap, ClusterState, MAP_PAGE_SIZE, type PageCopy } from './cluster-map.js';
import {
  DATA_FILE, HEADER_SIZE, LOCK_FILE, MAP_FILE, MAP_FILE_TMP,
  decodeHeader, encodeHeader, isValidClusterSize, newHeader, storedIdentity, type OverlayHeader,
} from './format.js';
import { nodeFs, type OverlayFile, type OverlayFs } from './io.js';
import { RangeLock } from './range-lock.js';
import { DEFAULT_SYNC_IO, SyncIoGate, type SyncIoPolicy } from '../sync-io.js';

/** Chosen by measurement; see the design note. */
export const DEFAULT_CLUSTER_SIZE = 16 * 1024;

export interface CowOverlayOptions {
  base: BlockDevice;
  /** Directory of this overlay; created with the overlay if absent. */
  dir: string;
  /** For a new overlay (default DEFAULT_CLUSTER_SIZE); an existing one keeps its own. */
  clusterSize?: number;
  logger?: Logger;
  /** The file system under the overlay; tests substitute a simulated disk. */
  fs?: OverlayFs;
  /**
   * Most bytes the overlay may hold in DATA clusters (allocatedBytes());
   * absent: no limit. A request that would allocate beyond it fails with
   * STORAGE_QUOTA_EXCEEDED (ENOSPC); setQuotaBytes() changes it later.
   */
  quotaBytes?: number;
  /** When requests are served synchronously (tryReadSync, tryWriteSync); see sync-io.ts. */
  syncIo?: Readonly<SyncIoPolicy>;
}

/** Directories open in this process (resolved paths). */
const openDirs = new Set<string>();

export class CowOverlay implements BlockDevice {
  readonly size: number;
  readonly preferredBlockSize: number;
  readonly capabilities: Readonly<Capabilities> = Object.freeze({
    readOnly: false,
    flush: true,
    fua: true,
    trim: true,
    writeZeroes: true,
    fastZero: true,
    extents: true,
    cache: true,
    multiConn: true,
  });
  readonly clusterSize: number;

  private readonly lock = new RangeLock();
  private readonly inflight = new Set<Promise<unknown>>();
  /** Set when a data write completed since the data file was last synced. */
  private dataDirty = false;
  private flushRunning: Promise<void> | null = null;
  private flushQueued: Promise<void> | null = null;
  /** Sticky: after a failed flush, writes and flushes are refused. */
  private failed: DisklessError | null = null;
  /** Set when close() starts: new requests are refused from then on. */
  private closed = false;
  private closing: Promise<void> | null = null;
  /** See setQuotaBytes(); undefined: no limit. */
  private quota: number | undefined;
  /** Clusters that writes in flight will turn into DATA (counted against the quota until they do). */
  private reservedClusters = 0;
  /** Times synchronous I/O on the data file; see sync-io.ts. */
  private readonly gate: SyncIoGate;
  /** Head and tail clusters of synchronous read-modify-writes (used within one call only). */
  private scratch: Buffer | null = null;

  private constructor(
    readonly dir: string,
    private readonly base: BlockDevice,
    private readonly header: OverlayHeader,
    private readonly map: ClusterMap,
    private readonly dataFile: OverlayFile,
    private readonly mapFile: OverlayFile,
    private readonly fs: OverlayFs,
    private readonly logger: Logger,
    quotaBytes: number | undefined,
    syncIo: Readonly<SyncIoPolicy>,
  ) {
    this.quota = quotaBytes;
    this.gate = new SyncIoGate(syncIo);
    this.size = header.virtualSize;
    this.clusterSize = header.clusterSize;
    this.preferredBlockSize = header.clusterSize;
  }

  /** Opens the overlay in `dir`, creating it if there is none. */
  static async open(options: CowOverlayOptions): Promise<CowOverlay> {
    const fs = options.fs ?? nodeFs;
    const logger = options.logger ?? silentLogger;
    const base = options.base;
    const clusterSize = options.clusterSize ?? DEFAULT_CLUSTER_SIZE;
    checkQuotaBytes(options.quotaBytes);
    if (!isValidClusterSize(clusterSize)) {
      throw storageError('STORAGE_BAD_CLUSTER_SIZE', `cluster size ${clusterSize} is not a power of two from 4 KiB to 1 MiB`);
    }
    const dir = resolve(options.dir);
    if (openDirs.has(dir)) throw storageError('STORAGE_OVERLAY_IN_USE', `overlay ${dir} is already open in this process`);
    openDirs.add(dir);
    let lockHeld = false;
    const files: OverlayFile[] = [];
    try {
      await fs.mkdir(dir);
      if (fs === nodeFs) {
        await takeLockFile(dir);
        lockHeld = true;
      }
      const mapPath = join(dir, MAP_FILE);
      let header: OverlayHeader;
      let map: ClusterMap;
      if (await fs.exists(mapPath)) {
        const mapFile = await fs.open(mapPath, 'r+');
        files.push(mapFile);
        header = await readHeader(mapFile, mapPath);
        checkBase(header, base, dir);
        const bytes = Buffer.alloc(header.mapLength);
        await mapFile.read(bytes, 0, bytes.length, header.mapOffset);
        map = new ClusterMap(header.clusters, bytes);
        if (!(await fs.exists(join(dir, DATA_FILE)))) {
          throw storageError('STORAGE_OVERLAY_CORRUPT', `${dir}: ${DATA_FILE} is missing`);
        }
        const dataFile = await fs.open(join(dir, DATA_FILE), 'r+');
        files.push(dataFile);
        const dataSize = await dataFile.size();
        if (dataSize !== header.virtualSize) {
          throw storageError('STORAGE_OVERLAY_CORRUPT', `${dir}: ${DATA_FILE} is ${dataSize} bytes, expected ${header.virtualSize}`);
        }
        if (clusterSize !== header.clusterSize && options.clusterSize !== undefined) {
          logger.debug('overlay keeps its own cluster size', { dir, clusterSize: header.clusterSize, asked: clusterSize });
        }
        logger.debug('overlay opened', { dir, clusterSize: header.clusterSize, allocated: map.dataClusters * header.clusterSize });
        return new CowOverlay(dir, base, header, map, dataFile, mapFile, fs, logger, options.quotaBytes, options.syncIo ?? DEFAULT_SYNC_IO);
      }
      header = newHeader(base.size, clusterSize, base.identity, Date.now());
      const { dataFile, mapFile } = await create(fs, dir, header);
      files.push(dataFile, mapFile);
      map = new ClusterMap(header.clusters);
      logger.info('overlay created', { dir, size: header.virtualSize, clusterSize });
      return new CowOverlay(dir, base, header, map, dataFile, mapFile, fs, logger, options.quotaBytes, options.syncIo ?? DEFAULT_SYNC_IO);
    } catch (err) {
      for (const f of files) await f.close().catch(() => undefined);
      if (lockHeld) await releaseLockFile(dir);
      openDirs.delete(dir);
      throw fromSystemError(err, `opening overlay ${dir}`);
    }
  }

  /**
   * Deletes the overlay in `dir` (the ephemeral reset): afterwards open()
   * creates a fresh one. The map goes first, so a crash part-way leaves no
   * overlay rather than a damaged one. Refused while it is open.
   */
  static async destroy(dir: string, options: { fs?: OverlayFs } = {}): Promise<void> {
    const fs = options.fs ?? nodeFs;
    const abs = resolve(dir);
    if (openDirs.has(abs)) throw storageError('STORAGE_OVERLAY_IN_USE', `overlay ${abs} is open; close it before destroying it`);
    try {
      if (!(await fs.exists(abs))) return;
      if (fs === nodeFs) await checkLockFileFree(abs);
      await fs.unlink(join(abs, MAP_FILE));
      await fs.fsyncDir(abs);
      for (const name of [DATA_FILE, MAP_FILE_TMP, LOCK_FILE]) await fs.unlink(join(abs, name));
      await fs.rmdir(abs);
    } catch (err) {
      throw fromSystemError(err, `destroying overlay ${abs}`);
    }
  }

  /** Bytes held by DATA clusters (what this client's writes cost), for size and quota reports. */
  allocatedBytes(): number {
    return this.map.dataClusters * this.clusterSize;
  }

  /** The quota in bytes (see CowOverlayOptions.quotaBytes); undefined when there is none. */
  get quotaBytes(): number | undefined {
    return this.quota;
  }

  /**
   * Changes the quota of an open overlay; undefined removes it. It applies
   * to requests that allocate from now on: a quota below allocatedBytes()
   * frees nothing, but refuses every new allocation until trims and zeroes
   * bring the overlay under it. Writes into DATA clusters, reads, trims
   * and zeroes that allocate nothing always work.
   */
  setQuotaBytes(bytes: number | undefined): void {
    checkQuotaBytes(bytes);
    this.quota = bytes;
  }

  /** Bytes of memory the allocation map takes. */
  mapBytes(): number {
    return this.map.bytes.length;
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.check(offset, length);
    if (into && into.length < length) {
      throw storageError('STORAGE_INVALID_ARGUMENT', `read buffer of ${into.length} bytes is smaller than the ${length} asked for`);
    }
    const out = into ?? Buffer.allocUnsafe(length);
    if (length === 0) return out;
    return this.track(this.readRuns(offset, length, out).then(() => out), 'read');
  }

  /**
   * read() done at once when it can be: zero runs are filled, DATA runs
   * read from the data file on the event loop, BASE runs through the
   * base's own tryReadSync. False (the caller uses read()) when the base
   * has no fast path or either file's gate is closed (sync-io.ts).
   */
  tryReadSync(offset: number, length: number, into: Buffer): boolean {
    this.check(offset, length);
    if (into.length < length) {
      throw storageError('STORAGE_INVALID_ARGUMENT', `read buffer of ${into.length} bytes is smaller than the ${length} asked for`);
    }
    const file = this.dataFile;
    const gate = this.gate;
    if (!file.readSync || !gate.allows(length)) return false;
    const base = this.base;
    const end = offset + length;
    try {
      for (let pos = offset; pos < end; ) {
        const { state, runEnd } = this.runAt(pos, end);
        const at = pos - offset;
        const n = runEnd - pos;
        if (state === ClusterState.BASE) {
          if (!base.tryReadSync?.(pos, n, n === into.length ? into : into.subarray(at, at + n))) return false;
        } else if (state === ClusterState.DATA) {
          const started = gate.start();
          file.readSync(into, at, n, pos);
          gate.done(started, n);
        } else {
          into.fill(0, at, at + n);
        }
        pos = runEnd;
      }
    } catch (err) {
      throw fromSystemError(err, `read on overlay ${this.dir}`);
    }
    return true;
  }

  async write(offset: number, data: Buffer, options: WriteOptions = {}): Promise<void> {
    this.checkWritable(offset, data.length);
    await this.track((async () => {
      if (data.length > 0) await this.locked(offset, data.length, () => this.writeLocked(offset, data));
      if (options.fua) await this.flushShared();
    })(), 'write');
  }

  /**
   * write() without FUA done at once when it can be: no request holds or
   * waits for its clusters (so it is ordered as if it had taken the range
   * lock), the base answers a read-modify-write at once, and the data
   * file's gate is open. The clusters become DATA after the write, as in
   * write() (R2). False, with nothing changed, otherwise.
   */
  tryWriteSync(offset: number, data: Buffer): boolean {
    this.checkWritable(offset, data.length);
    const length = data.length;
    if (length === 0) return true;
    const file = this.dataFile;
    const gate = this.gate;
    if (!file.writevSync || !gate.allows(length)) return false;
    const C = this.clusterSize;
    const plan = this.planWrite(offset, length);
    if (!this.lock.isFree(plan.first, plan.last)) return false;
    this.checkQuota(plan.newClusters, offset, length);
    let head: Buffer | undefined;
    let tail: Buffer | undefined;
    try {
      if (plan.headRmw || plan.tailRmw) {
        const scratch = (this.scratch ??= Buffer.allocUnsafeSlow(2 * C));
        if (plan.headRmw) {
          head = scratch.subarray(0, this.clusterEnd(plan.first) - plan.first * C);
          if (!this.fillClusterSync(plan.first, plan.headState, head)) return false;
        }
        if (plan.tailRmw) {
          tail = scratch.subarray(C, C + this.clusterEnd(plan.last) - plan.last * C);
          if (!this.fillClusterSync(plan.last, plan.tailState, tail)) return false;
        }
      }
      const { bufs, at, bytes } = this.assembleWrite(offset, data, plan, head, tail);
      const started = gate.start();
      file.writevSync(bufs, at);
      gate.done(started, bytes);
    } catch (err) {
      throw fromSystemError(err, `write on overlay ${this.dir}`);
    }
    // R2: the clusters become DATA only now that their bytes are in the file.
    this.dataDirty = true;
    this.map.setRange(plan.first, plan.last, ClusterState.DATA);
    return true;
  }

  async zero(offset: number, length: number, options: ZeroOptions = {}): Promise<void> {
    this.checkWritable(offset, length);
    await this.track((async () => {
      if (length > 0) await this.locked(offset, length, () => this.zeroLocked(offset, length, options));
      if (options.fua) await this.flushShared();
    })(), 'zero');
  }

  async trim(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    this.checkWritable(offset, length);
    await this.track((async () => {
      const { first, last } = length > 0 ? this.wholeClusters(offset, offset + length) : { first: 1, last: 0 };
      if (first <= last) {
        const C = this.clusterSize;
        await this.locked(first * C, this.clusterEnd(last) - first * C, async () => {
          this.map.setRange(first, last, ClusterState.HOLE);
        });
      }
      if (options.fua) await this.flushShared();
    })(), 'trim');
  }

  async flush(): Promise<void> {
    this.checkOpen();
    await this.track(this.flushShared(), 'flush');
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    this.check(offset, length);
    const steps = this.extentSteps(offset, length);
    let step = steps.next();
    while (!step.done) step = steps.next(await this.base.extents(step.value[0], step.value[1]));
    return step.value;
  }

  /** extents() at once, when the base answers its part at once (its tryExtentsSync). */
  tryExtentsSync(offset: number, length: number): Extent[] | undefined {
    this.check(offset, length);
    const base = this.base;
    if (!base.tryExtentsSync) return undefined;
    const steps = this.extentSteps(offset, length);
    let step = steps.next();
    while (!step.done) {
      const answer = base.tryExtentsSync(step.value[0], step.value[1]);
      if (answer === undefined) return undefined;
      step = steps.next(answer);
    }
    return step.value;
  }

  /**
   * The extents of [offset, offset+length) from the map's runs. BASE runs
   * are asked of the base: the generator yields [offset, length] and is
   * resumed with the base's extents there, so extents() and
   * tryExtentsSync() share it.
   */
  private *extentSteps(offset: number, length: number): Generator<[number, number], Extent[], Extent[]> {
    if (length === 0) return [];
    const out: Extent[] = [];
    const push = (e: Extent): void => {
      const prev = out[out.length - 1];
      if (prev && prev.hole === e.hole && prev.zero === e.zero && prev.offset + prev.length === e.offset) prev.length += e.length;
      else out.push({ ...e });
    };
    const end = offset + length;
    let pos = offset;
    while (pos < end && out.length < MAX_EXTENTS_PER_CALL) {
      const { state, runEnd } = this.runAt(pos, end);
      if (state === ClusterState.BASE) {
        let covered = pos;
        const answer: Extent[] = yield [pos, runEnd - pos];
        for (const e of answer) {
          const from = Math.max(e.offset, covered);
          const to = Math.min(e.offset + e.length, runEnd);
          if (from !== covered || to <= from) break;
          push({ offset: from, length: to - from, hole: e.hole, zero: e.zero });
          covered = to;
        }
        // The base may answer for less than it was asked: carry on from where
        // it stopped. If it answered nothing usable, claim data (always true).
        if (covered === pos) {
          push({ offset: pos, length: runEnd - pos, hole: false, zero: false });
          covered = runEnd;
        }
        pos = covered;
      } else {
        push({ offset: pos, length: runEnd - pos, hole: state === ClusterState.HOLE, zero: state !== ClusterState.DATA });
        pos = runEnd;
      }
    }
    return out;
  }

  /** Passes the advice on to the base for clusters still read from it. */
  async cache(offset: number, length: number): Promise<void> {
    this.check(offset, length);
    const end = offset + length;
    const pending: Promise<void>[] = [];
    for (let pos = offset; pos < end; ) {
      const { state, runEnd } = this.runAt(pos, end);
      if (state === ClusterState.BASE) pending.push(this.base.cache(pos, runEnd - pos));
      pos = runEnd;
    }
    await this.track(Promise.all(pending), 'cache');
  }

  /**
   * Refuses new requests, waits for those in flight, flushes, and closes the
   * files. The base stays open (it is shared).
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      await Promise.allSettled([...this.inflight]);
      let flushError: unknown;
      if (!this.failed) {
        try {
          await this.flushShared();
        } catch (err) {
          flushError = err;
        }
      }
      await Promise.allSettled([this.flushRunning, this.flushQueued]);
      await this.dataFile.close().catch(() => undefined);
      await this.mapFile.close().catch(() => undefined);
      if (this.fs === nodeFs) await releaseLockFile(this.dir);
      openDirs.delete(this.dir);
      if (flushError) throw flushError;
    })();
    return this.closing;
  }

  // ---- read path ----

  /** The state at `pos` and where the run of clusters in that state ends (at most `end`). */
  private runAt(pos: number, end: number): { state: ClusterState; runEnd: number } {
    const C = this.clusterSize;
    let c = Math.floor(pos / C);
    const state = this.map.get(c);
    const lastCluster = Math.floor((end - 1) / C);
    while (c < lastCluster && this.map.get(c + 1) === state) c++;
    return { state, runEnd: Math.min(end, (c + 1) * C) };
  }

  private async readRuns(offset: number, length: number, out: Buffer): Promise<void> {
    const end = offset + length;
    const pending: Promise<unknown>[] = [];
    for (let pos = offset; pos < end; ) {
      const { state, runEnd } = this.runAt(pos, end);
      const at = pos - offset;
      const n = runEnd - pos;
      if (state === ClusterState.BASE) pending.push(this.base.read(pos, n, out.subarray(at, at + n)));
      else if (state === ClusterState.DATA) pending.push(this.dataFile.read(out, at, n, pos));
      else out.fill(0, at, at + n);
      pos = runEnd;
    }
    if (pending.length === 1) await pending[0];
    else if (pending.length > 1) await Promise.all(pending);
  }

  // ---- write path ----

  private clusterEnd(c: number): number {
    return Math.min((c + 1) * this.clusterSize, this.size);
  }

  /** Clusters wholly inside [offset, end); first > last when there are none. */
  private wholeClusters(offset: number, end: number): { first: number; last: number } {
    const C = this.clusterSize;
    const first = Math.ceil(offset / C);
    // The last cluster may be short: a range reaching the end of the disk covers it.
    const last = end === this.size ? Math.ceil(end / C) - 1 : Math.floor(end / C) - 1;
    return { first, last };
  }

  private async locked<T>(offset: number, length: number, fn: () => Promise<T>): Promise<T> {
    const C = this.clusterSize;
    const release = await this.lock.acquire(Math.floor(offset / C), Math.floor((offset + length - 1) / C));
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** The current contents of cluster `c`, which is not DATA, into `buf` (read-modify-write). */
  private async fillCluster(c: number, state: ClusterState, buf: Buffer): Promise<void> {
    if (state === ClusterState.BASE) await this.base.read(c * this.clusterSize, buf.length, buf);
    else buf.fill(0);
  }

  /** fillCluster() done at once, or false when the base cannot answer at once. */
  private fillClusterSync(c: number, state: ClusterState, buf: Buffer): boolean {
    if (state !== ClusterState.BASE) {
      buf.fill(0);
      return true;
    }
    return this.base.tryReadSync?.(c * this.clusterSize, buf.length, buf) ?? false;
  }

  /**
   * What a write of [offset, offset+length) does to the map: its clusters,
   * whether the partly covered ones at its ends need a read-modify-write
   * (R4: only when they are not DATA), and how many clusters it allocates.
   */
  private planWrite(offset: number, length: number): WritePlan {
    const C = this.clusterSize;
    const end = offset + length;
    const first = Math.floor(offset / C);
    const last = Math.floor((end - 1) / C);
    const lastEnd = this.clusterEnd(last);
    const headState = this.map.get(first);
    const headRmw = headState !== ClusterState.DATA && (offset > first * C || (first === last && end < lastEnd));
    const tailState = this.map.get(last);
    const tailRmw = last !== first && tailState !== ClusterState.DATA && end < lastEnd;
    const newClusters = last - first + 1 - this.map.dataIn(first, last);
    return { first, last, headState, headRmw, tailState, tailRmw, newClusters };
  }

  /**
   * The buffers of one vectored write: the merged head cluster, the data
   * between, the merged tail cluster (`head` and `tail` hold the clusters'
   * current contents when the plan needs them).
   */
  private assembleWrite(offset: number, data: Buffer, plan: WritePlan, head: Buffer | undefined, tail: Buffer | undefined): { bufs: Buffer[]; at: number; bytes: number } {
    const C = this.clusterSize;
    const bufs: Buffer[] = [];
    let at = offset;
    let bytes = 0;
    let dataFrom = 0;
    let dataTo = data.length;
    if (head) {
      const firstStart = plan.first * C;
      const n = Math.min(head.length - (offset - firstStart), data.length);
      data.copy(head, offset - firstStart, 0, n);
      bufs.push(head);
      bytes += head.length;
      at = firstStart;
      dataFrom = n;
    }
    if (tail) {
      const lastStart = plan.last * C;
      data.copy(tail, 0, lastStart - offset);
      dataTo = lastStart - offset;
    }
    if (dataTo > dataFrom) {
      bufs.push(dataFrom === 0 && dataTo === data.length ? data : data.subarray(dataFrom, dataTo));
      bytes += dataTo - dataFrom;
    }
    if (tail) {
      bufs.push(tail);
      bytes += tail.length;
    }
    return { bufs, at, bytes };
  }

  /** Refuses a request that would take the overlay's DATA clusters past its quota. */
  private checkQuota(newClusters: number, offset: number, length: number): void {
    const quota = this.quota;
    if (quota === undefined || newClusters <= 0) return;
    const after = (this.map.dataClusters + this.reservedClusters + newClusters) * this.clusterSize;
    if (after > quota) {
      throw storageError(
        'STORAGE_QUOTA_EXCEEDED',
        `overlay ${this.dir}: ${offset}+${length} would allocate ${newClusters * this.clusterSize} bytes; ` +
          `${this.allocatedBytes()} of the quota of ${quota} bytes are in use`,
      );
    }
  }

  private async writeLocked(offset: number, data: Buffer): Promise<void> {
    const C = this.clusterSize;
    const plan = this.planWrite(offset, data.length);
    this.checkQuota(plan.newClusters, offset, data.length);
    // Counted against the quota while the I/O runs, so that writes to
    // other clusters running meanwhile cannot all pass the same check.
    this.reservedClusters += plan.newClusters;
    try {
      let head: Buffer | undefined;
      let tail: Buffer | undefined;
      if (plan.headRmw) {
        head = Buffer.allocUnsafe(this.clusterEnd(plan.first) - plan.first * C);
        await this.fillCluster(plan.first, plan.headState, head);
      }
      if (plan.tailRmw) {
        tail = Buffer.allocUnsafe(this.clusterEnd(plan.last) - plan.last * C);
        await this.fillCluster(plan.last, plan.tailState, tail);
      }
      const { bufs, at } = this.assembleWrite(offset, data, plan, head, tail);
      await this.dataFile.writev(bufs, at);
      // R2: the clusters become DATA only now that their bytes are in the file.
      this.dataDirty = true;
      this.map.setRange(plan.first, plan.last, ClusterState.DATA);
    } finally {
      this.reservedClusters -= plan.newClusters;
    }
  }

  private async zeroLocked(offset: number, length: number, options: ZeroOptions): Promise<void> {
    const C = this.clusterSize;
    const end = offset + length;
    const { first, last } = this.wholeClusters(offset, end);
    // The partly covered clusters at the two ends (none, one or two).
    const edges: { c: number; from: number; to: number }[] = [];
    const headC = Math.floor(offset / C);
    const tailC = Math.floor((end - 1) / C);
    if (headC < first || headC > last) edges.push({ c: headC, from: offset, to: Math.min(end, this.clusterEnd(headC)) });
    if (tailC !== headC && (tailC < first || tailC > last)) edges.push({ c: tailC, from: tailC * C, to: end });

    // Decide every edge before changing anything, so a refused FAST_ZERO has no effect.
    const plan: { c: number; from: number; to: number; how: 'write' | 'rmw' }[] = [];
    for (const e of edges) {
      const state = this.map.get(e.c);
      if (state === ClusterState.ZERO || state === ClusterState.HOLE) continue;
      if (state === ClusterState.DATA) {
        plan.push({ ...e, how: 'write' });
        continue;
      }
      const ext = await this.base.extents(e.from, e.to - e.from);
      let zeroTo = e.from;
      for (const x of ext) {
        if (!x.zero || x.offset !== zeroTo) break;
        zeroTo = x.offset + x.length;
      }
      if (zeroTo >= e.to) continue; // the base already reads zeros there
      plan.push({ ...e, how: 'rmw' });
    }
    if (options.fast && plan.some((p) => p.how === 'rmw')) {
      throw storageError('STORAGE_FAST_ZERO_UNSUPPORTED', 'zeroing part of a cluster still on the base needs a read-modify-write');
    }
    // Only a read-modify-write of a base cluster allocates (the edges that
    // are DATA already are written in place); the whole clusters this
    // request frees count in its favour, so zeroing never fails for space
    // it gives back.
    const allocates = plan.filter((p) => p.how === 'rmw').length;
    const frees = first <= last ? this.map.dataIn(first, last) : 0;
    this.checkQuota(allocates - frees, offset, length);
    this.reservedClusters += allocates;
    try {
      await this.zeroEdges(plan);
    } finally {
      this.reservedClusters -= allocates;
    }
    if (first <= last) this.map.setRange(first, last, options.mayTrim ? ClusterState.HOLE : ClusterState.ZERO);
  }

  private async zeroEdges(plan: readonly { c: number; from: number; to: number; how: 'write' | 'rmw' }[]): Promise<void> {
    const C = this.clusterSize;
    for (const p of plan) {
      if (p.how === 'write') {
        await this.writeZeros(p.from, p.to - p.from);
        this.dataDirty = true;
      } else {
        const start = p.c * C;
        const buf = Buffer.allocUnsafe(this.clusterEnd(p.c) - start);
        await this.fillCluster(p.c, ClusterState.BASE, buf);
        buf.fill(0, p.from - start, p.to - start);
        await this.dataFile.writev([buf], start);
        this.dataDirty = true;
        this.map.set(p.c, ClusterState.DATA);
      }
    }
  }

  private async writeZeros(at: number, length: number): Promise<void> {
    for (let done = 0; done < length; ) {
      const n = Math.min(ZERO_BUFFER.length, length - done);
      await this.dataFile.writev([ZERO_BUFFER.subarray(0, n)], at + done);
      done += n;
    }
  }

  // ---- flush ----

  /**
   * Returns a flush that covers every write completed so far: a new one if
   * none is running, else the one queued behind the running one (whose
   * snapshot may predate those writes).
   */
  private flushShared(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.flushQueued) return this.flushQueued;
    if (!this.flushRunning) return this.startFlush();
    // A flush is under way, but its snapshot may predate writes that
    // completed since: queue one more, shared by everyone who arrives now.
    const queued = this.flushRunning.catch(() => undefined).then(() => {
      this.flushQueued = null;
      if (this.failed) throw this.failed;
      return this.startFlush();
    });
    this.flushQueued = queued;
    return queued;
  }

  private startFlush(): Promise<void> {
    const run = this.runFlush().finally(() => {
      this.flushRunning = null;
    });
    this.flushRunning = run;
    return run;
  }

  /** R3: copy the dirty pages, sync the data, write the copies, sync the map. */
  private async runFlush(): Promise<void> {
    const copies = this.map.takeDirty();
    const syncData = this.dataDirty;
    this.dataDirty = false;
    try {
      if (syncData) await this.dataFile.datasync();
      if (copies.length > 0) {
        for (const group of consecutive(copies)) {
          await this.mapFile.writev(group.map((p) => p.bytes), this.header.mapOffset + group[0]!.page * MAP_PAGE_SIZE);
        }
        await this.mapFile.datasync();
      }
    } catch (err) {
      this.map.redirty(copies.map((p) => p.page));
      this.dataDirty = true;
      this.failed = fromSystemError(err, `flushing overlay ${this.dir}`);
      this.logger.error('overlay flush failed; refusing further writes', { dir: this.dir, err });
      throw this.failed;
    }
  }

  // ---- bookkeeping ----

  private track<T>(p: Promise<T>, what: string): Promise<T> {
    const wrapped = p.catch((err: unknown) => {
      throw fromSystemError(err, `${what} on overlay ${this.dir}`);
    });
    this.inflight.add(wrapped);
    const done = (): void => void this.inflight.delete(wrapped);
    wrapped.then(done, done);
    return wrapped;
  }

  private checkOpen(): void {
    if (this.closed) throw storageError('STORAGE_CLOSED', `overlay ${this.dir} is closed`);
  }

  private check(offset: number, length: number): void {
    this.checkOpen();
    assertRange(this.size, offset, length);
  }

  private checkWritable(offset: number, length: number): void {
    this.check(offset, length);
    if (this.failed) throw this.failed;
  }
}

interface WritePlan {
  first: number;
  last: number;
  headState: ClusterState;
  headRmw: boolean;
  tailState: ClusterState;
  tailRmw: boolean;
  /** Clusters in first..last that are not DATA yet. */
  newClusters: number;
}

function checkQuotaBytes(bytes: number | undefined): void {
  if (bytes !== undefined && (!Number.isSafeInteger(bytes) || bytes < 0)) {
    throw storageError('STORAGE_INVALID_ARGUMENT', `quota ${String(bytes)} is not a non-negative whole number of bytes`);
  }
}

function consecutive(copies: PageCopy[]): PageCopy[][] {
  const groups: PageCopy[][] = [];
  for (const p of copies) {
    const g = groups[groups.length - 1];
    if (g && g[g.length - 1]!.page + 1 === p.page) g.push(p);
    else groups.push([p]);
  }
  return groups;
}

async function readHeader(file: OverlayFile, where: string): Promise<OverlayHeader> {
  const size = await file.size();
  if (size < HEADER_SIZE) throw storageError('STORAGE_OVERLAY_CORRUPT', `${where}: shorter than its header`);
  const buf = Buffer.alloc(HEADER_SIZE);
  await file.read(buf, 0, HEADER_SIZE, 0);
  const header = decodeHeader(buf, where);
  if (size < header.mapOffset + header.mapLength) {
    throw storageError('STORAGE_OVERLAY_CORRUPT', `${where}: ${size} bytes, its map needs ${header.mapOffset + header.mapLength}`);
  }
  return header;
}

function checkBase(header: OverlayHeader, base: BlockDevice, dir: string): void {
  const identity = storedIdentity(base.identity);
  if (header.virtualSize !== base.size || header.baseIdentity !== identity) {
    throw storageError(
      'STORAGE_BASE_MISMATCH',
      `overlay ${dir} was made for a base of ${header.virtualSize} bytes with identity "${header.baseIdentity}"; ` +
        `this base is ${base.size} bytes with identity "${identity}"`,
    );
  }
}

/** R5: build the map under a temporary name, sync, rename into place, sync the directory. */
async function create(fs: OverlayFs, dir: string, header: OverlayHeader): Promise<{ dataFile: OverlayFile; mapFile: OverlayFile }> {
  const tmpPath = join(dir, MAP_FILE_TMP);
  await fs.unlink(tmpPath);
  const dataFile = await fs.open(join(dir, DATA_FILE), 'w');
  try {
    await dataFile.truncate(header.virtualSize);
    await dataFile.datasync();
    const tmp = await fs.open(tmpPath, 'w');
    try {
      await tmp.writev([encodeHeader(header)], 0);
      await tmp.truncate(header.mapOffset + header.mapLength);
      await tmp.datasync();
    } finally {
      await tmp.close();
    }
    await fs.rename(tmpPath, join(dir, MAP_FILE));
    await fs.fsyncDir(dir);
    return { dataFile, mapFile: await fs.open(join(dir, MAP_FILE), 'r+') };
  } catch (err) {
    await dataFile.close().catch(() => undefined);
    throw err;
  }
}

// ---- the lock file: one live process per overlay ----

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}

async function lockOwner(path: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function takeLockFile(dir: string): Promise<void> {
  const path = join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await openFile(path, 'wx', 0o600);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err;
    }
    const owner = await lockOwner(path);
    if (owner !== undefined && owner !== process.pid && pidAlive(owner)) {
      throw storageError('STORAGE_OVERLAY_IN_USE', `overlay ${dir} is open in process ${owner}`);
    }
    // Left by a process that died (or by this one, unclosed): take it over.
    await unlinkFile(path).catch(() => undefined);
  }
  throw storageError('STORAGE_OVERLAY_IN_USE', `overlay ${dir}: another process is taking its lock`);
}

async function checkLockFileFree(dir: string): Promise<void> {
  const owner = await lockOwner(join(dir, LOCK_FILE));
  if (owner !== undefined && owner !== process.pid && pidAlive(owner)) {
    throw storageError('STORAGE_OVERLAY_IN_USE', `overlay ${dir} is open in process ${owner}`);
  }
}

async function releaseLockFile(dir: string): Promise<void> {
  const path = join(dir, LOCK_FILE);
  if ((await lockOwner(path)) === process.pid) await unlinkFile(path).catch(() => undefined);
}
