/**
 * A small NBD client for tests, built on the project's own codec: enough
 * to drive every option and command, send raw or broken bytes, and check
 * each reply field by field. Not a general client: one option at a time,
 * requests pipelined, replies matched by cookie.
 */
import { connect, type Socket } from 'node:net';
import {
  CLIENT_FLAGS,
  COMMANDS,
  INFO_TYPES,
  OPTIONS,
  REPLY_FLAGS,
  REPLY_TYPES,
  SIZES,
  STRUCTURED_REPLY_TYPES,
} from '../../src/protocols/nbd/constants.js';
import {
  decodeChunkPayload,
  decodeExportNameReply,
  decodeInfo,
  decodeOptionReplyHeader,
  decodeRepMetaContext,
  decodeReplyHeader,
  decodeRepServer,
  decodeServerGreeting,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeRequestHeader,
  replyHeaderSize,
  type BlockDescriptor,
  type Chunk,
  type Info,
} from '../../src/protocols/nbd/codec.js';

const DEFAULT_TIMEOUT_MS = 5000;

export class TimeoutError extends Error {
  override readonly name = 'TimeoutError';
}

/** A socket read as a byte queue: readExact(n) in order, and a view of the close. */
export class ByteReader {
  private chunks: Buffer[] = [];
  private available = 0;
  private waiters: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }[] = [];
  private ended = false;
  readonly closed: Promise<void>;
  private onClosed!: () => void;
  isClosed = false;

  constructor(readonly socket: Socket) {
    this.closed = new Promise((r) => (this.onClosed = r));
    socket.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.available += c.length;
      this.serve();
    });
    socket.on('end', () => {
      this.ended = true;
      this.serve();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.ended = true;
      this.isClosed = true;
      this.serve();
      this.onClosed();
    });
  }

  get buffered(): number {
    return this.available;
  }

  readExact(n: number, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.findIndex((w) => w.timer === timer);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new TimeoutError(`timed out waiting for ${n} bytes (have ${this.available})`));
      }, timeoutMs);
      this.waiters.push({ n, resolve, reject, timer });
      this.serve();
    });
  }

  /** Resolves true when the peer closes (EOF) within the time, false otherwise. */
  async waitEnd(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<boolean> {
    if (this.ended) return true;
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      new Promise<boolean>((resolve) => {
        this.socket.once('end', () => resolve(true));
        this.socket.once('close', () => resolve(true));
      }),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    return r;
  }

  /** Everything received so far and not read. */
  drain(): Buffer {
    const b = Buffer.concat(this.chunks);
    this.chunks = [];
    this.available = 0;
    return b;
  }

  /** Removes and returns the first n buffered bytes, copying only what spans chunks. */
  private take(n: number): Buffer {
    this.available -= n;
    const first = this.chunks[0];
    if (first && first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }

  private serve(): void {
    while (this.waiters.length > 0) {
      const w = this.waiters[0]!;
      if (this.available >= w.n) {
        this.waiters.shift();
        clearTimeout(w.timer);
        w.resolve(this.take(w.n));
        continue;
      }
      if (this.ended) {
        this.waiters.shift();
        clearTimeout(w.timer);
        w.reject(new Error(`connection closed while waiting for ${w.n} bytes (have ${this.available})`));
        continue;
      }
      return;
    }
  }
}

const openSockets = new Set<Socket>();

/**
 * Destroys every socket the helpers opened and that is still open, so a
 * failed test (a paused client, a reply never read) cannot keep the test
 * process alive.
 */
export function destroyAllSockets(): void {
  for (const s of openSockets) s.destroy();
  openSockets.clear();
}

export function openSocket(port: number, host = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host, noDelay: true });
    openSockets.add(s);
    s.once('close', () => openSockets.delete(s));
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

export interface OptionReply {
  option: number;
  type: number;
  payload: Buffer;
}

export interface GoResult {
  size: number;
  transmissionFlags: number;
  infos: Info[];
  replies: OptionReply[];
}

export class NbdReplyError extends Error {
  override readonly name = 'NbdReplyError';
  constructor(
    readonly errno: number,
    message: string,
    readonly chunks: Chunk[] = [],
  ) {
    super(message);
  }
}

export interface Reply {
  /** 0 on success; the error of the first error chunk otherwise. */
  error: number;
  structured: boolean;
  /** Reads: the bytes, holes filled with zeroes (only when error is 0). */
  data?: Buffer;
  chunks: Chunk[];
  /** Chunk flags as received, for checks on NBD_REPLY_FLAG_DONE. */
  chunkFlags: number[];
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  chunks: Chunk[];
  chunkFlags: number[];
}

export interface ConnectOptions {
  host?: string;
  clientFlags?: number;
}

/**
 * Handshake and transmission with explicit steps. Options are sent with
 * option() and answered with readOptionReplies(); after go()/exportName()
 * the reply loop runs and request() returns each reply.
 */
export class NbdTestClient {
  handshakeFlags = 0;
  transmissionFlags = 0;
  size = 0;
  structured = false;
  private nextCookie = 1n;
  private pending = new Map<bigint, Pending>();
  private loopError: Error | null = null;

  private constructor(
    readonly socket: Socket,
    readonly reader: ByteReader,
  ) {}

  /** Connects, reads the greeting and (unless clientFlags is null) sends the client flags. */
  static async connect(port: number, options: ConnectOptions & { sendFlags?: boolean } = {}): Promise<NbdTestClient> {
    const socket = await openSocket(port, options.host);
    const c = new NbdTestClient(socket, new ByteReader(socket));
    c.handshakeFlags = decodeServerGreeting(await c.reader.readExact(SIZES.SERVER_GREETING)).handshakeFlags;
    if (options.sendFlags !== false) {
      c.socket.write(encodeClientFlags(options.clientFlags ?? (CLIENT_FLAGS.NBD_FLAG_C_FIXED_NEWSTYLE | CLIENT_FLAGS.NBD_FLAG_C_NO_ZEROES)));
    }
    return c;
  }

  /** Connects and enters transmission on `name` with NBD_OPT_GO (structured replies and base:allocation by default). */
  static async open(port: number, name: string, options: { structured?: boolean; meta?: boolean; host?: string } = {}): Promise<NbdTestClient> {
    const c = await NbdTestClient.connect(port, options);
    const structured = options.structured ?? true;
    if (structured) {
      const r = await c.optionOnce(OPTIONS.NBD_OPT_STRUCTURED_REPLY);
      if (r.type !== REPLY_TYPES.NBD_REP_ACK) throw new Error(`structured reply refused: ${r.type}`);
      if (options.meta ?? true) {
        const replies = await c.setMetaContext(name, ['base:allocation']);
        if (replies[replies.length - 1]!.type !== REPLY_TYPES.NBD_REP_ACK) throw new Error('meta context refused');
      }
    }
    await c.go(name);
    return c;
  }

  send(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  option(option: number, payload?: Buffer): void {
    this.socket.write(encodeOption(option, payload));
  }

  /** Reads option replies until a final one (ACK or an error). */
  async readOptionReplies(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    for (;;) {
      const h = decodeOptionReplyHeader(await this.reader.readExact(SIZES.OPTION_REPLY_HEADER, timeoutMs));
      const payload = h.length > 0 ? await this.reader.readExact(h.length, timeoutMs) : Buffer.alloc(0);
      out.push({ option: h.option, type: h.type, payload });
      if (h.type === REPLY_TYPES.NBD_REP_ACK || (h.type & 0x80000000) !== 0) return out;
      if (out.length > 10000) throw new Error('too many option replies');
    }
  }

  /** Sends an option and returns its single (final) reply. */
  async optionOnce(option: number, payload?: Buffer): Promise<OptionReply> {
    this.option(option, payload);
    const replies = await this.readOptionReplies();
    if (option === OPTIONS.NBD_OPT_STRUCTURED_REPLY && replies[replies.length - 1]!.type === REPLY_TYPES.NBD_REP_ACK) this.structured = true;
    return replies[replies.length - 1]!;
  }

  async list(): Promise<{ name: string; description: string }[]> {
    this.option(OPTIONS.NBD_OPT_LIST);
    const replies = await this.readOptionReplies();
    const last = replies[replies.length - 1]!;
    if (last.type !== REPLY_TYPES.NBD_REP_ACK) throw new Error(`NBD_OPT_LIST failed: 0x${last.type.toString(16)}`);
    return replies.filter((r) => r.type === REPLY_TYPES.NBD_REP_SERVER).map((r) => decodeRepServer(r.payload));
  }

  async setMetaContext(name: string, queries: string[]): Promise<OptionReply[]> {
    this.option(OPTIONS.NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ name, queries }));
    return this.readOptionReplies();
  }

  async listMetaContext(name: string, queries: string[]): Promise<{ replies: OptionReply[]; contexts: { contextId: number; name: string }[] }> {
    this.option(OPTIONS.NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest({ name, queries }));
    const replies = await this.readOptionReplies();
    return { replies, contexts: replies.filter((r) => r.type === REPLY_TYPES.NBD_REP_META_CONTEXT).map((r) => decodeRepMetaContext(r.payload)) };
  }

  /** NBD_OPT_INFO or NBD_OPT_GO; throws (with the reply type) on an error reply. */
  async info(name: string, infoRequests: number[] = [INFO_TYPES.NBD_INFO_BLOCK_SIZE], option: number = OPTIONS.NBD_OPT_INFO): Promise<GoResult> {
    this.option(option, encodeInfoRequest({ name, infoRequests }));
    const replies = await this.readOptionReplies();
    const last = replies[replies.length - 1]!;
    if (last.type !== REPLY_TYPES.NBD_REP_ACK) {
      throw Object.assign(new Error(`option ${option} failed with 0x${last.type.toString(16)}: ${last.payload.toString('utf8')}`), { replyType: last.type });
    }
    const infos = replies.filter((r) => r.type === REPLY_TYPES.NBD_REP_INFO).map((r) => decodeInfo(r.payload));
    const exp = infos.find((i) => i.type === INFO_TYPES.NBD_INFO_EXPORT) as { size: number; transmissionFlags: number } | undefined;
    if (!exp) throw new Error('no NBD_INFO_EXPORT before NBD_REP_ACK');
    return { size: exp.size, transmissionFlags: exp.transmissionFlags, infos, replies };
  }

  async go(name: string, infoRequests: number[] = [INFO_TYPES.NBD_INFO_BLOCK_SIZE]): Promise<GoResult> {
    const r = await this.info(name, infoRequests, OPTIONS.NBD_OPT_GO);
    this.size = r.size;
    this.transmissionFlags = r.transmissionFlags;
    this.startReplyLoop();
    return r;
  }

  async exportName(name: string, noZeroes = true): Promise<void> {
    this.option(OPTIONS.NBD_OPT_EXPORT_NAME, Buffer.from(name, 'utf8'));
    const r = decodeExportNameReply(await this.reader.readExact(SIZES.EXPORT_NAME_REPLY));
    if (!noZeroes) {
      const z = await this.reader.readExact(SIZES.EXPORT_NAME_ZEROES);
      if (!z.every((b) => b === 0)) throw new Error('export name reply padding is not zero');
    }
    this.size = r.size;
    this.transmissionFlags = r.transmissionFlags;
    this.startReplyLoop();
  }

  // -------------------------------------------------------------------------
  // Transmission

  request(type: number, offset: number | bigint, length: number, options: { flags?: number; payload?: Buffer; cookie?: bigint } = {}): Promise<Reply> {
    const cookie = options.cookie ?? this.nextCookie++;
    if (this.loopError) return Promise.reject(this.loopError);
    const header = encodeRequestHeader({ type, flags: options.flags ?? 0, cookie, offset, length });
    const p = new Promise<Reply>((resolve, reject) => {
      if (type !== COMMANDS.NBD_CMD_DISC) this.pending.set(cookie, { type, offset: Number(offset), length, resolve, reject, chunks: [], chunkFlags: [] });
      else resolve({ error: 0, structured: false, chunks: [], chunkFlags: [] });
    });
    if (options.payload) {
      this.socket.cork();
      this.socket.write(header);
      this.socket.write(options.payload);
      this.socket.uncork();
    } else {
      this.socket.write(header);
    }
    return p;
  }

  async read(offset: number, length: number, flags = 0): Promise<Buffer> {
    const r = await this.request(COMMANDS.NBD_CMD_READ, offset, length, { flags });
    if (r.error !== 0) throw new NbdReplyError(r.error, `read failed: ${r.error}`, r.chunks);
    return r.data!;
  }

  async write(offset: number, data: Buffer, flags = 0): Promise<void> {
    const r = await this.request(COMMANDS.NBD_CMD_WRITE, offset, data.length, { flags, payload: data });
    if (r.error !== 0) throw new NbdReplyError(r.error, `write failed: ${r.error}`, r.chunks);
  }

  /** Sends a request and returns its error number (0 on success). */
  async errorOf(type: number, offset: number | bigint, length: number, flags = 0, payload?: Buffer): Promise<number> {
    const r = await this.request(type, offset, length, { flags, ...(payload ? { payload } : {}) });
    return r.error;
  }

  async blockStatus(offset: number, length: number, flags = 0): Promise<BlockDescriptor[]> {
    const r = await this.request(COMMANDS.NBD_CMD_BLOCK_STATUS, offset, length, { flags });
    if (r.error !== 0) throw new NbdReplyError(r.error, `block status failed: ${r.error}`, r.chunks);
    const bs = r.chunks.find((c) => c.type === STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_BLOCK_STATUS) as { descriptors: BlockDescriptor[] } | undefined;
    if (!bs) throw new Error('no block status chunk');
    return bs.descriptors;
  }

  disconnect(): void {
    void this.request(COMMANDS.NBD_CMD_DISC, 0, 0);
  }

  close(): void {
    this.socket.destroy();
  }

  get inFlight(): number {
    return this.pending.size;
  }

  private startReplyLoop(): void {
    void this.replyLoop().catch((err: Error) => {
      this.loopError = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    });
  }

  private async replyLoop(): Promise<void> {
    for (;;) {
      let magicBytes: Buffer;
      try {
        magicBytes = await this.reader.readExact(4, 24 * 3600 * 1000);
      } catch (err) {
        if (this.pending.size === 0) return;
        throw err;
      }
      const size = replyHeaderSize(magicBytes.readUInt32BE(0));
      if (size === 0) throw new Error(`bad reply magic 0x${magicBytes.readUInt32BE(0).toString(16)}`);
      const rest = await this.reader.readExact(size - 4);
      const h = decodeReplyHeader(Buffer.concat([magicBytes, rest]));
      const p = this.pending.get(h.cookie);
      if (!p) throw new Error(`reply for unknown cookie ${h.cookie}`);
      if (h.kind === 'simple') {
        this.pending.delete(h.cookie);
        let data: Buffer | undefined;
        if (p.type === COMMANDS.NBD_CMD_READ && h.error === 0) data = await this.reader.readExact(p.length);
        p.resolve({ error: h.error, structured: false, ...(data ? { data } : {}), chunks: [], chunkFlags: [] });
        continue;
      }
      const payload = h.length > 0 ? await this.reader.readExact(h.length) : Buffer.alloc(0);
      p.chunks.push(decodeChunkPayload(h.type, payload));
      p.chunkFlags.push(h.flags);
      if ((h.flags & REPLY_FLAGS.NBD_REPLY_FLAG_DONE) === 0) continue;
      this.pending.delete(h.cookie);
      p.resolve(assemble(p));
    }
  }
}

/** Turns a structured reply's chunks into a Reply, checking reads cover their range exactly once. */
function assemble(p: Pending): Reply {
  const errorChunk = p.chunks.find((c) => 'error' in c) as { error: number } | undefined;
  const reply: Reply = { error: errorChunk ? errorChunk.error : 0, structured: true, chunks: p.chunks, chunkFlags: p.chunkFlags };
  if (p.type !== COMMANDS.NBD_CMD_READ || reply.error !== 0) return reply;
  const data = Buffer.alloc(p.length);
  const covered = new Uint8Array(p.length);
  for (const c of p.chunks) {
    let off: number;
    let len: number;
    if (c.type === STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_OFFSET_DATA) {
      const d = c as { offset: number; data: Buffer };
      off = d.offset - p.offset;
      len = d.data.length;
      if (off < 0 || off + len > p.length) throw new Error(`data chunk at ${d.offset}+${len} outside the read ${p.offset}+${p.length}`);
      d.data.copy(data, off);
    } else if (c.type === STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_OFFSET_HOLE) {
      const h = c as { offset: number; size: number };
      off = h.offset - p.offset;
      len = h.size;
      if (len === 0 || off < 0 || off + len > p.length) throw new Error(`hole chunk at ${h.offset}+${len} outside the read`);
    } else if (c.type === STRUCTURED_REPLY_TYPES.NBD_REPLY_TYPE_NONE) {
      continue;
    } else {
      throw new Error(`unexpected chunk type ${c.type} in a read reply`);
    }
    for (let i = off; i < off + len; i++) {
      if (covered[i]) throw new Error(`chunks overlap at ${p.offset + i}`);
      covered[i] = 1;
    }
  }
  if (!covered.every((x) => x === 1)) throw new Error('read reply does not cover the whole range');
  reply.data = data;
  return reply;
}
