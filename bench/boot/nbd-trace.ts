/**
 * An NBD trace from a packet capture: every request a client sent (time,
 * command, flags, offset, length), when its reply came back, and for reads
 * whether they were served from the client's copy-on-write overlay or from
 * the shared base image. Pure: TCP segments in, records out; no I/O.
 *
 *   segments (pcap, both directions) -> TCP reassembly per direction
 *     -> NBD stream decoders (client: handshake options, then requests and
 *        write payloads; server: greeting, option replies, then simple or
 *        structured replies and read payloads)
 *     -> one record per request, in the order the client sent them.
 *
 * The wire format follows proto.md ("Newstyle negotiation", "Transmission",
 * "Simple reply message", "Structured reply chunk message"); the constants
 * are the server's own (src/protocols/nbd/constants.ts).
 *
 * Base or overlay. Nothing on the wire says where a read was served from,
 * but our overlay is deterministic (src/storage/cow/overlay.ts): it starts
 * empty at every boot of an ephemeral client, and a cluster leaves the base
 * when a request writes, zeroes or trims it. OverlayModel replays the trace
 * through those rules at the overlay's cluster size; a read is `base` when
 * every cluster it touches is still the base's, `overlay` when none is, and
 * `mixed` otherwise. The recorder checks the model against the overlay's own
 * map after the boot (record-trace.ts).
 */
import { COMMAND_FLAGS, COMMANDS, MAGICS, NBD_REP_FLAG_ERROR, OPTIONS, REPLY_FLAGS, REPLY_TYPES } from '../../src/protocols/nbd/constants.js';

// ---------------------------------------------------------------- records

export type ReadSource = 'base' | 'overlay' | 'mixed';

export interface TraceRecord {
  /** When the request's 28-byte header had been captured (seconds, on the caller's clock). */
  t: number;
  /** Connection number, 0 for the first the capture shows. */
  conn: number;
  /** The command: read, write, flush, trim, write-zeroes, disc, cache, block-status, or cmd-N. */
  cmd: string;
  /** Command flags (proto.md "Command flags"). */
  flags: number;
  offset: number;
  length: number;
  /** When the whole reply (with a read's data) had been captured; absent when none came (NBD_CMD_DISC, end of capture). */
  replyT?: number;
  /** The reply's NBD error number, when not 0. */
  error?: number;
  /** Reads: where the data came from (OverlayModel). */
  src?: ReadSource;
}

/** `NBD_CMD_WRITE_ZEROES` -> `write-zeroes`. */
export function commandLabel(type: number): string {
  const name = Object.entries(COMMANDS).find(([, v]) => v === type)?.[0];
  return name ? name.replace(/^NBD_CMD_/, '').toLowerCase().replace(/_/g, '-') : `cmd-${type}`;
}

/** `NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE` -> `fua|no-hole`; unknown bits as `bit-N`. */
export function flagsLabel(flags: number): string {
  const out: string[] = [];
  for (let bit = 0; bit < 16; bit += 1) {
    if (!(flags & (1 << bit))) continue;
    const name = Object.entries(COMMAND_FLAGS).find(([, v]) => v === 1 << bit)?.[0];
    out.push(name ? name.replace(/^NBD_CMD_FLAG_/, '').toLowerCase().replace(/_/g, '-') : `bit-${bit}`);
  }
  return out.join('|');
}

// ---------------------------------------------------------------- bytes with times

/** A FIFO of captured bytes, each piece with the time it was captured. */
export class ByteQueue {
  private chunks: Array<{ buf: Buffer; time: number }> = [];
  private head = 0;
  length = 0;

  push(buf: Buffer, time: number): void {
    if (buf.length === 0) return;
    this.chunks.push({ buf, time });
    this.length += buf.length;
  }

  /** The first n bytes (copied only when they span pieces), or null when fewer are queued. */
  peek(n: number): Buffer | null {
    if (this.length < n) return null;
    const first = this.chunks[0]!;
    if (first.buf.length - this.head >= n) return first.buf.subarray(this.head, this.head + n);
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    let off = this.head;
    for (const c of this.chunks) {
      const k = Math.min(n - got, c.buf.length - off);
      c.buf.copy(out, got, off, off + k);
      got += k;
      off = 0;
      if (got === n) break;
    }
    return out;
  }

  /** Drops up to n bytes; returns how many and the capture time of the last one dropped. */
  skip(n: number): { skipped: number; time: number | undefined } {
    let left = Math.min(n, this.length);
    const skipped = left;
    let time: number | undefined;
    while (left > 0) {
      const c = this.chunks[0]!;
      const k = Math.min(left, c.buf.length - this.head);
      time = c.time;
      this.head += k;
      left -= k;
      if (this.head === c.buf.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.length -= skipped;
    return { skipped, time };
  }
}

// ---------------------------------------------------------------- TCP

export interface Segment {
  /** Capture time (seconds). */
  time: number;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  seq: number;
  syn: boolean;
  fin: boolean;
  rst: boolean;
  payload: Buffer;
}

export const TRACE_LIMITS = {
  /** Out-of-order segments held per direction before the stream is declared broken. */
  maxPendingSegments: 4096,
  /** Requests waiting for their reply per connection (the kernel keeps far fewer in flight). */
  maxInFlight: 65_536,
  /** An option's data (proto.md caps strings at 4096; a little room for INFO requests). */
  maxOptionBytes: 64 * 1024,
} as const;

/** In-order bytes of one direction of a TCP connection (RFC 9293 sequence numbers, modulo 2^32). */
export class TcpDirection {
  private next: number | null = null;
  private readonly pending = new Map<number, { payload: Buffer; time: number }>();
  broken: string | null = null;

  constructor(private readonly sink: (buf: Buffer, time: number) => void) {}

  push(seg: Pick<Segment, 'seq' | 'syn' | 'payload' | 'time'>): void {
    if (this.broken) return;
    if (seg.syn) {
      // The SYN takes one sequence number; data on a SYN is not expected here.
      this.next = (seg.seq + 1) >>> 0;
      return;
    }
    if (seg.payload.length === 0) return;
    if (this.next === null) this.next = seg.seq; // a capture that starts mid-stream
    this.deliver(seg.seq, seg.payload, seg.time);
    // Segments that were waiting for this one.
    for (let guard = 0; this.pending.size > 0 && guard < TRACE_LIMITS.maxPendingSegments; guard += 1) {
      let progressed = false;
      for (const [seq, p] of this.pending) {
        const d = (seq - this.next!) | 0;
        if (d <= 0) {
          this.pending.delete(seq);
          this.deliver(seq, p.payload, p.time);
          progressed = true;
        }
      }
      if (!progressed) break;
    }
  }

  private deliver(seq: number, payload: Buffer, time: number): void {
    const d = (seq - this.next!) | 0;
    if (d > 0) {
      if (this.pending.size >= TRACE_LIMITS.maxPendingSegments) {
        this.broken = `more than ${TRACE_LIMITS.maxPendingSegments} segments out of order (a gap in the capture?)`;
        return;
      }
      this.pending.set(seq, { payload, time });
      return;
    }
    // Retransmitted bytes we already have.
    if (-d >= payload.length) return;
    const fresh = payload.subarray(-d);
    this.next = (this.next! + fresh.length) >>> 0;
    this.sink(fresh, time);
  }
}

// ---------------------------------------------------------------- NBD

const u64 = (b: Buffer, off: number): bigint => b.readBigUInt64BE(off);
const SIMPLE_REPLY_BYTES = 16;
const STRUCTURED_HEADER_BYTES = 20;
const REQUEST_BYTES = 28;
const OPTION_HEADER_BYTES = 16;
const OPTION_REPLY_HEADER_BYTES = 20;
const GREETING_BYTES = 18;
/** NBD_OPT_EXPORT_NAME's reply: size (8) and flags (2), then 124 zeroes unless both sides said NO_ZEROES. */
const EXPORT_NAME_REPLY_BYTES = 10;
const EXPORT_NAME_ZEROES = 124;

interface Pending {
  record: TraceRecord;
  isRead: boolean;
}

/** One NBD connection: the client's and the server's bytes, decoded as they arrive. */
export class NbdSession {
  readonly client = new ByteQueue();
  readonly server = new ByteQueue();
  private clientState: 'flags' | 'options' | 'transmission' | 'payload' = 'flags';
  private serverState: 'greeting' | 'options' | 'export-reply' | 'transmission' | 'read-data' | 'chunk-data' = 'greeting';
  private payloadLeft = 0;
  private replyLeft = 0;
  private replyFor: Pending | null = null;
  private replyDone = false;
  private clientNoZeroes = false;
  private serverNoZeroes = false;
  private exportNameSent = false;
  private readonly inFlight = new Map<bigint, Pending>();
  /** Why decoding stopped, if it did. */
  error: string | null = null;
  readonly records: TraceRecord[] = [];

  constructor(readonly conn: number) {}

  fromClient(buf: Buffer, time: number): void {
    this.client.push(buf, time);
    if (!this.error) this.runClient();
  }

  fromServer(buf: Buffer, time: number): void {
    this.server.push(buf, time);
    if (!this.error) this.runServer();
  }

  private fail(why: string): void {
    this.error ??= why;
  }

  private runClient(): void {
    const q = this.client;
    for (;;) {
      if (this.error) return;
      if (this.clientState === 'flags') {
        const b = q.peek(4);
        if (!b) return;
        this.clientNoZeroes = (b.readUInt32BE(0) & 2) !== 0;
        q.skip(4);
        this.clientState = 'options';
      } else if (this.clientState === 'options') {
        const m = q.peek(4);
        if (!m) return;
        // The first request ends the options (after NBD_OPT_GO or NBD_OPT_EXPORT_NAME).
        if (m.readUInt32BE(0) === MAGICS.NBD_REQUEST_MAGIC) {
          this.clientState = 'transmission';
          continue;
        }
        const h = q.peek(OPTION_HEADER_BYTES);
        if (!h) return;
        if (u64(h, 0) !== MAGICS.IHAVEOPT) return this.fail(`client option without IHAVEOPT (0x${h.subarray(0, 8).toString('hex')})`);
        const option = h.readUInt32BE(8);
        const len = h.readUInt32BE(12);
        if (len > TRACE_LIMITS.maxOptionBytes) return this.fail(`client option ${option} of ${len} bytes`);
        if (q.length < OPTION_HEADER_BYTES + len) return;
        q.skip(OPTION_HEADER_BYTES + len);
        if (option === OPTIONS.NBD_OPT_EXPORT_NAME) {
          this.exportNameSent = true;
          this.clientState = 'transmission';
        }
      } else if (this.clientState === 'transmission') {
        const h = q.peek(REQUEST_BYTES);
        if (!h) return;
        if (h.readUInt32BE(0) !== MAGICS.NBD_REQUEST_MAGIC) return this.fail(`request magic 0x${h.readUInt32BE(0).toString(16)}`);
        const flags = h.readUInt16BE(4);
        const type = h.readUInt16BE(6);
        const handle = u64(h, 8);
        const offset = Number(u64(h, 16));
        const length = h.readUInt32BE(24);
        const { time } = q.skip(REQUEST_BYTES);
        const record: TraceRecord = { t: time!, conn: this.conn, cmd: commandLabel(type), flags, offset, length };
        this.records.push(record);
        if (type !== COMMANDS.NBD_CMD_DISC) {
          if (this.inFlight.size >= TRACE_LIMITS.maxInFlight) return this.fail(`more than ${TRACE_LIMITS.maxInFlight} requests without a reply`);
          this.inFlight.set(handle, { record, isRead: type === COMMANDS.NBD_CMD_READ });
        }
        if (type === COMMANDS.NBD_CMD_WRITE && length > 0) {
          this.payloadLeft = length;
          this.clientState = 'payload';
        }
      } else {
        const { skipped } = q.skip(this.payloadLeft);
        this.payloadLeft -= skipped;
        if (this.payloadLeft > 0) return;
        this.clientState = 'transmission';
      }
    }
  }

  private runServer(): void {
    const q = this.server;
    for (;;) {
      if (this.error) return;
      switch (this.serverState) {
        case 'greeting': {
          const b = q.peek(GREETING_BYTES);
          if (!b) return;
          if (u64(b, 0) !== MAGICS.NBDMAGIC || u64(b, 8) !== MAGICS.IHAVEOPT) return this.fail('server greeting is not fixed newstyle');
          this.serverNoZeroes = (b.readUInt16BE(16) & 2) !== 0;
          q.skip(GREETING_BYTES);
          this.serverState = 'options';
          break;
        }
        case 'options': {
          const m = q.peek(8);
          if (!m) return;
          // NBD_OPT_EXPORT_NAME's reply has no magic: it follows the replies to the options before it.
          if (u64(m, 0) !== MAGICS.NBD_REP_MAGIC && this.exportNameSent) {
            this.serverState = 'export-reply';
            break;
          }
          const h = q.peek(OPTION_REPLY_HEADER_BYTES);
          if (!h) return;
          if (u64(h, 0) !== MAGICS.NBD_REP_MAGIC) return this.fail(`option reply magic 0x${h.subarray(0, 8).toString('hex')}`);
          const option = h.readUInt32BE(8);
          const type = h.readUInt32BE(12);
          const len = h.readUInt32BE(16);
          if (len > TRACE_LIMITS.maxOptionBytes) return this.fail(`option reply of ${len} bytes`);
          if (q.length < OPTION_REPLY_HEADER_BYTES + len) return;
          q.skip(OPTION_REPLY_HEADER_BYTES + len);
          if (option === OPTIONS.NBD_OPT_GO && type === REPLY_TYPES.NBD_REP_ACK) this.serverState = 'transmission';
          else if (option === OPTIONS.NBD_OPT_ABORT && (type & NBD_REP_FLAG_ERROR) === 0) return;
          break;
        }
        case 'export-reply': {
          const n = EXPORT_NAME_REPLY_BYTES + (this.clientNoZeroes && this.serverNoZeroes ? 0 : EXPORT_NAME_ZEROES);
          if (q.length < n) return;
          q.skip(n);
          this.serverState = 'transmission';
          break;
        }
        case 'transmission': {
          const m = q.peek(4);
          if (!m) return;
          const magic = m.readUInt32BE(0);
          if (magic === MAGICS.NBD_SIMPLE_REPLY_MAGIC) {
            const h = q.peek(SIMPLE_REPLY_BYTES);
            if (!h) return;
            const error = h.readUInt32BE(4);
            const p = this.take(u64(h, 8));
            if (!p) return;
            const { time } = q.skip(SIMPLE_REPLY_BYTES);
            if (error !== 0) p.record.error = error;
            // A simple reply carries a read's data only when it succeeded (proto.md "Simple reply message").
            if (p.isRead && error === 0 && p.record.length > 0) {
              this.replyFor = p;
              this.replyLeft = p.record.length;
              this.replyDone = true;
              this.serverState = 'read-data';
            } else {
              p.record.replyT = time!;
            }
          } else if (magic === MAGICS.NBD_STRUCTURED_REPLY_MAGIC) {
            const h = q.peek(STRUCTURED_HEADER_BYTES);
            if (!h) return;
            const flags = h.readUInt16BE(4);
            const handle = u64(h, 8);
            const len = h.readUInt32BE(16);
            const p = this.inFlight.get(handle);
            if (!p) return this.fail(`structured reply chunk for unknown handle 0x${handle.toString(16)}`);
            const { time } = q.skip(STRUCTURED_HEADER_BYTES);
            const done = (flags & REPLY_FLAGS.NBD_REPLY_FLAG_DONE) !== 0;
            // An error chunk's payload starts with the error number.
            if (h.readUInt16BE(6) & 0x8000) {
              const e = q.peek(4);
              if (e) p.record.error = e.readUInt32BE(0);
            }
            if (done) this.inFlight.delete(handle);
            this.replyFor = p;
            this.replyLeft = len;
            this.replyDone = done;
            if (len === 0) this.finishReply(time!);
            else this.serverState = 'chunk-data';
          } else {
            return this.fail(`reply magic 0x${magic.toString(16)}`);
          }
          break;
        }
        default: {
          // read-data or chunk-data: the reply's payload.
          const { skipped, time } = q.skip(this.replyLeft);
          this.replyLeft -= skipped;
          if (this.replyLeft > 0 || time === undefined) return;
          this.finishReply(time);
          this.serverState = 'transmission';
        }
      }
    }
  }

  private take(handle: bigint): Pending | null {
    const p = this.inFlight.get(handle);
    if (!p) {
      this.fail(`reply for unknown handle 0x${handle.toString(16)}`);
      return null;
    }
    this.inFlight.delete(handle);
    return p;
  }

  private finishReply(time: number): void {
    if (this.replyFor && this.replyDone) this.replyFor.record.replyT = time;
    this.replyFor = null;
  }
}

export interface DecodedCapture {
  records: TraceRecord[];
  sessions: Array<{ conn: number; client: string; error: string | null; requests: number }>;
}

/**
 * Decodes the NBD connections to `port` in a capture holding both
 * directions, in capture order. Records come out sorted by time, then
 * connection.
 */
export function decodeNbdCapture(segments: Iterable<Segment>, port: number): DecodedCapture {
  const conns = new Map<string, { session: NbdSession; up: TcpDirection; down: TcpDirection }>();
  for (const s of segments) {
    const toServer = s.dport === port;
    if (!toServer && s.sport !== port) continue;
    const client = toServer ? `${s.src}:${s.sport}` : `${s.dst}:${s.dport}`;
    let c = conns.get(client);
    if (!c || (toServer && s.syn && c.session.records.length > 0)) {
      // A new connection (or the client's port reused for one).
      const session = new NbdSession(conns.size);
      c = {
        session,
        up: new TcpDirection((b, t) => session.fromClient(b, t)),
        down: new TcpDirection((b, t) => session.fromServer(b, t)),
      };
      conns.set(client, c);
    }
    (toServer ? c.up : c.down).push(s);
  }
  const sessions: DecodedCapture['sessions'] = [];
  const records: TraceRecord[] = [];
  for (const [client, c] of conns) {
    sessions.push({ conn: c.session.conn, client, error: c.session.error ?? c.up.broken ?? c.down.broken, requests: c.session.records.length });
    records.push(...c.session.records);
  }
  records.sort((a, b) => a.t - b.t || a.conn - b.conn);
  return { records, sessions };
}

// ---------------------------------------------------------------- base or overlay

/** A cluster still reads through to the base, or has left it (written, zeroed or trimmed). */
const BASE = 0;
const OWN = 1;

/**
 * Which clusters of the overlay have left the base, replayed from requests
 * (see the file comment). Writes take every cluster they touch (a partly
 * covered one is read-modify-written whole); WRITE_ZEROES takes the whole
 * clusters it covers and writes zeros into partly covered ones; TRIM takes
 * only whole clusters (its partial ends are left alone).
 */
export class OverlayModel {
  private readonly state: Uint8Array;
  readonly clusters: number;

  constructor(readonly clusterSize: number, readonly virtualSize: number) {
    if (!Number.isInteger(clusterSize) || clusterSize < 512 || (clusterSize & (clusterSize - 1)) !== 0) throw new RangeError(`cluster size ${clusterSize}`);
    this.clusters = Math.ceil(virtualSize / clusterSize);
    this.state = new Uint8Array(this.clusters);
  }

  private range(offset: number, length: number, wholeOnly: boolean): [number, number] {
    const end = Math.min(offset + length, this.virtualSize);
    const first = wholeOnly ? Math.ceil(offset / this.clusterSize) : Math.floor(offset / this.clusterSize);
    const last = wholeOnly ? (end === this.virtualSize ? this.clusters : Math.floor(end / this.clusterSize)) - 1 : Math.ceil(end / this.clusterSize) - 1;
    return [first, last];
  }

  /** Applies a request; returns a read's source before anything else changes. */
  apply(r: Pick<TraceRecord, 'cmd' | 'offset' | 'length' | 'error'>): ReadSource | undefined {
    if (r.length === 0 || r.offset >= this.virtualSize) return r.cmd === 'read' ? 'base' : undefined;
    if (r.cmd === 'read') return this.source(r.offset, r.length);
    if (r.error) return undefined;
    if (r.cmd === 'write' || r.cmd === 'write-zeroes') {
      const [a, b] = this.range(r.offset, r.length, false);
      this.state.fill(OWN, a, b + 1);
    } else if (r.cmd === 'trim') {
      const [a, b] = this.range(r.offset, r.length, true);
      if (b >= a) this.state.fill(OWN, a, b + 1);
    }
    return undefined;
  }

  source(offset: number, length: number): ReadSource {
    const [a, b] = this.range(offset, length, false);
    let own = 0;
    for (let i = a; i <= b; i += 1) if (this.state[i] !== BASE) own += 1;
    return own === 0 ? 'base' : own === b - a + 1 ? 'overlay' : 'mixed';
  }

  /** Whether a cluster has left the base. */
  isOwn(cluster: number): boolean {
    return this.state[cluster] === OWN;
  }

  ownCount(): number {
    let n = 0;
    for (let i = 0; i < this.clusters; i += 1) n += this.state[i]!;
    return n;
  }
}

/** Sets `src` on every read, replaying the records in order. */
export function classifyReads(records: TraceRecord[], model: OverlayModel): void {
  for (const r of records) {
    const src = model.apply(r);
    if (src !== undefined) r.src = src;
  }
}

// ---------------------------------------------------------------- the fixture format

export const TRACE_CSV_HEADER = 't,conn,cmd,flags,offset,length,src,latency_ms,error';

/**
 * One line per request: t (seconds from power-on, microseconds), conn, cmd,
 * flags (names joined with '|'), offset, length (bytes), src (reads: base,
 * overlay or mixed), latency_ms (request to whole reply, as captured at the
 * client's NIC; empty when no reply), error (NBD errno; empty when 0).
 */
export function toCsv(records: readonly TraceRecord[], origin = 0): string {
  const lines = [TRACE_CSV_HEADER];
  for (const r of records) {
    const lat = r.replyT === undefined ? '' : ((r.replyT - r.t) * 1000).toFixed(3);
    lines.push([(r.t - origin).toFixed(6), r.conn, r.cmd, flagsLabel(r.flags), r.offset, r.length, r.src ?? '', lat, r.error ?? ''].join(','));
  }
  return lines.join('\n') + '\n';
}

export interface TraceRow {
  t: number;
  conn: number;
  cmd: string;
  flags: string[];
  offset: number;
  length: number;
  src?: ReadSource;
  latencyMs?: number;
  error?: number;
}

const CMD_LABELS = new Set(Object.values(COMMANDS).map(commandLabel));

/** Parses a trace file; throws on the first line that does not fit the format. */
export function parseTraceCsv(text: string): TraceRow[] {
  const lines = text.split('\n').filter((l) => l.length > 0);
  if (lines[0] !== TRACE_CSV_HEADER) throw new Error(`trace: header is not "${TRACE_CSV_HEADER}"`);
  const num = (v: string, what: string, line: number, integer: boolean): number => {
    const n = Number(v);
    if (v === '' || !Number.isFinite(n) || n < 0 || (integer && !Number.isSafeInteger(n))) throw new Error(`trace line ${line}: ${what} ${JSON.stringify(v)}`);
    return n;
  };
  return lines.slice(1).map((l, i) => {
    const line = i + 2;
    const f = l.split(',');
    if (f.length !== 9) throw new Error(`trace line ${line}: ${f.length} fields, not 9`);
    const [t, conn, cmd, flags, offset, length, src, lat, error] = f as [string, string, string, string, string, string, string, string, string];
    if (!CMD_LABELS.has(cmd) && !/^cmd-\d+$/.test(cmd)) throw new Error(`trace line ${line}: command ${JSON.stringify(cmd)}`);
    if (src !== '' && src !== 'base' && src !== 'overlay' && src !== 'mixed') throw new Error(`trace line ${line}: src ${JSON.stringify(src)}`);
    return {
      t: num(t, 'time', line, false),
      conn: num(conn, 'conn', line, true),
      cmd,
      flags: flags === '' ? [] : flags.split('|'),
      offset: num(offset, 'offset', line, true),
      length: num(length, 'length', line, true),
      ...(src !== '' ? { src: src as ReadSource } : {}),
      ...(lat !== '' ? { latencyMs: num(lat, 'latency', line, false) } : {}),
      ...(error !== '' ? { error: num(error, 'error', line, true) } : {}),
    };
  });
}

export interface TraceSummary {
  requests: number;
  byCommand: Record<string, { count: number; bytes: number }>;
  readsBySource: Record<string, number>;
  /** Bytes of the disk read at least once (in 512-byte sectors). */
  distinctBytesRead: number;
  firstT?: number;
  lastT?: number;
  medianReadLatencyMs?: number;
}

export function summarizeTrace(rows: ReadonlyArray<Pick<TraceRow, 't' | 'cmd' | 'offset' | 'length' | 'src' | 'latencyMs'>>): TraceSummary {
  const byCommand: TraceSummary['byCommand'] = {};
  const readsBySource: Record<string, number> = {};
  const sectors = new Set<number>();
  const lat: number[] = [];
  for (const r of rows) {
    const c = (byCommand[r.cmd] ??= { count: 0, bytes: 0 });
    c.count += 1;
    if (r.cmd === 'read' || r.cmd === 'write') c.bytes += r.length;
    if (r.cmd === 'read') {
      readsBySource[r.src ?? 'unknown'] = (readsBySource[r.src ?? 'unknown'] ?? 0) + 1;
      for (let s = Math.floor(r.offset / 512); s < Math.ceil((r.offset + r.length) / 512); s += 1) sectors.add(s);
      if (r.latencyMs !== undefined) lat.push(r.latencyMs);
    }
  }
  lat.sort((a, b) => a - b);
  return {
    requests: rows.length,
    byCommand,
    readsBySource,
    distinctBytesRead: sectors.size * 512,
    ...(rows.length ? { firstT: rows[0]!.t, lastT: rows.at(-1)!.t } : {}),
    ...(lat.length ? { medianReadLatencyMs: lat[Math.floor(lat.length / 2)]! } : {}),
  };
}
