/**
 * GET /api/v1/events/stream: server-sent events (HTML Living Standard,
 * "Server-sent events", text/event-stream) of new boot events and of client
 * and image changes, for the dashboard.
 *
 * Where the events come from: the store, polled. Boot events are written by
 * this server's recorder, but clients are also changed by the CLI in another
 * process (the store is shared SQLite in WAL mode), so watching the store is
 * the only way to see everything. One poller serves every open stream; it
 * runs only while a stream is open, every `pollMs`:
 *   - boot events with an id above the last one sent, as `event: boot-event`
 *     with `id: <event id>` (a reconnecting reader passes the last id as
 *     `?after=` or `Last-Event-ID` and misses nothing that is still stored);
 *   - client rows compared with the previous poll, as `event: client` with
 *     `{change: added|changed|removed, mac, client}`;
 *   - images (current version, versions and whether each is published)
 *     compared the same way, as `event: image` with
 *     `{change: added|changed|removed, name, image}`: publishing, rollback,
 *     imports, commits and deletions.
 * If more events arrived in one interval than a poll reads, the oldest of
 * them are not sent and an `event: resync` says so: the reader reloads the
 * lists over REST.
 *
 * A comment line every `keepAliveMs` keeps proxies and the reader's idle
 * timers from closing a quiet stream. A reader that does not keep up (more
 * than `maxBufferedBytes` waiting in the socket) is disconnected rather than
 * buffered without bound; at most `maxStreams` streams are open at once.
 */
import type { ServerResponse } from 'node:http';
import { toJson } from '../../app/json.js';
import type { Logger } from '../../lib/log.js';
import type { BootEventRecord, ClientRecord, ImageRecord, ImageVersionRecord } from '../../state/store.js';
import { RestError } from './errors.js';

export const STREAM_DEFAULTS = {
  pollMs: 500,
  keepAliveMs: 15_000,
  maxStreams: 32,
  /** Bytes queued for one reader before it is dropped. */
  maxBufferedBytes: 1024 * 1024,
  /** Boot events read per poll; more in one interval means a resync. */
  pollLimit: 5000,
  /** Boot events replayed to a reader that names the last one it saw. */
  replayLimit: 1000,
  /** The reconnection delay suggested to readers (the `retry:` field). */
  retryMs: 3000,
  /** Poll failures are logged at most this often. */
  warnIntervalMs: 10_000,
} as const;

export type StreamLimits = { [K in keyof typeof STREAM_DEFAULTS]: number };

/** What the stream reads: the store's boot events, client rows and images. */
export interface StreamSource {
  events: { list(filter: { afterId?: number; limit?: number }): BootEventRecord[] };
  clients: { list(): ClientRecord[] };
  images?: { list(): ImageRecord[]; versions(name: string): ImageVersionRecord[] };
}

export class EventStream {
  readonly limits: StreamLimits;
  private readonly readers = new Set<ServerResponse>();
  private pollTimer: NodeJS.Timeout | null = null;
  private keepAliveTimer: NodeJS.Timeout | null = null;
  /** Id of the newest boot event sent (or present when polling started). */
  private lastId = 0;
  /** Each client's JSON at the last poll, by MAC. */
  private clients = new Map<string, string>();
  /** Each image's summary (current version, versions and whether each is published) at the last poll, by name. */
  private images = new Map<string, string>();
  private lastWarnMs = 0;
  private closed = false;

  constructor(private readonly source: StreamSource, private readonly log: Logger, limits: Partial<StreamLimits> = {}) {
    this.limits = { ...STREAM_DEFAULTS, ...limits };
  }

  get open(): number {
    return this.readers.size;
  }

  /**
   * Makes `res` a stream: writes the headers at once (fetch() resolves on
   * them), replays the boot events after `after` if given, then sends what
   * the poller finds until the reader goes or close() is called.
   */
  attach(res: ServerResponse, after: number | null): void {
    if (this.closed) throw new RestError('API_STREAM_LIMIT', 'the server is shutting down');
    if (this.readers.size >= this.limits.maxStreams) {
      throw new RestError('API_STREAM_LIMIT', `${this.readers.size} event streams are open, the most this server keeps; close one or retry later`);
    }
    if (this.readers.size === 0) this.start();
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      // Tells nginx-style proxies not to hold the stream back in a buffer.
      'x-accel-buffering': 'no',
    });
    res.socket?.setNoDelay(true);
    this.readers.add(res);
    res.on('close', () => this.detach(res));
    let text = `retry: ${this.limits.retryMs}\n: connected; boot events after id ${after ?? this.lastId} follow\n\n`;
    if (after !== null && after < this.lastId) {
      const replay = this.readEvents(after, this.limits.replayLimit);
      if (replay.length >= this.limits.replayLimit) {
        text += frame('resync', { reason: `more than ${this.limits.replayLimit} boot events after id ${after}; only the newest are sent`, lastId: this.lastId });
      }
      for (const e of replay) if (e.id <= this.lastId) text += bootEventFrame(e);
    }
    this.write(res, text);
  }

  /** Ends every stream and stops the timers; new streams are refused. */
  close(): void {
    this.closed = true;
    this.stop();
    for (const res of [...this.readers]) {
      this.readers.delete(res);
      res.end();
    }
  }

  /** One poll: new boot events, then client changes. Public for tests that do not wait for the timer. */
  poll(): void {
    if (this.readers.size === 0) return;
    let text = '';
    try {
      const events = this.readEvents(this.lastId, this.limits.pollLimit);
      if (events.length >= this.limits.pollLimit) {
        text += frame('resync', { reason: `more than ${this.limits.pollLimit} boot events since the last poll; some were not sent`, lastId: events[events.length - 1]!.id });
      }
      for (const e of events) text += bootEventFrame(e);
      if (events.length > 0) this.lastId = events[events.length - 1]!.id;

      const now = this.snapshotClients();
      for (const [mac, json] of now) {
        const before = this.clients.get(mac);
        if (before === undefined) text += `event: client\ndata: {"change":"added","mac":${JSON.stringify(mac)},"client":${json}}\n\n`;
        else if (before !== json) text += `event: client\ndata: {"change":"changed","mac":${JSON.stringify(mac)},"client":${json}}\n\n`;
      }
      for (const mac of this.clients.keys()) {
        if (!now.has(mac)) text += `event: client\ndata: {"change":"removed","mac":${JSON.stringify(mac)},"client":null}\n\n`;
      }
      this.clients = now;

      const images = this.snapshotImages();
      for (const [name, json] of images) {
        const before = this.images.get(name);
        if (before !== json) text += `event: image\ndata: {"change":${before === undefined ? '"added"' : '"changed"'},"name":${JSON.stringify(name)},"image":${json}}\n\n`;
      }
      for (const name of this.images.keys()) {
        if (!images.has(name)) text += `event: image\ndata: {"change":"removed","name":${JSON.stringify(name)},"image":null}\n\n`;
      }
      this.images = images;
    } catch (err) {
      // A busy or failing store is retried at the next poll; the readers wait.
      const t = Date.now();
      if (t - this.lastWarnMs >= this.limits.warnIntervalMs) {
        this.lastWarnMs = t;
        this.log.warn('event stream poll failed', { err });
      }
    }
    if (text) for (const res of [...this.readers]) this.write(res, text);
  }

  private start(): void {
    // Everything already stored counts as seen: a stream sends what happens after it opened.
    const newest = this.readEvents(0, 1);
    this.lastId = newest.length > 0 ? newest[0]!.id : 0;
    this.clients = this.snapshotClients();
    this.images = this.snapshotImages();
    this.pollTimer = setInterval(() => this.poll(), this.limits.pollMs);
    this.keepAliveTimer = setInterval(() => {
      for (const res of [...this.readers]) this.write(res, ': keep-alive\n\n');
    }, this.limits.keepAliveMs);
  }

  private stop(): void {
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.keepAliveTimer) clearInterval(this.keepAliveTimer);
    this.pollTimer = null;
    this.keepAliveTimer = null;
  }

  private detach(res: ServerResponse): void {
    if (!this.readers.delete(res)) return;
    if (this.readers.size === 0) this.stop();
  }

  private write(res: ServerResponse, text: string): void {
    if (res.destroyed || res.writableEnded) {
      this.detach(res);
      return;
    }
    if (res.writableLength > this.limits.maxBufferedBytes) {
      this.log.info('event stream reader too slow; disconnected', { buffered: res.writableLength });
      this.detach(res);
      res.destroy();
      return;
    }
    res.write(text);
  }

  private readEvents(afterId: number, limit: number): BootEventRecord[] {
    return this.source.events.list({ afterId, limit });
  }

  /** Publishing, rollback, imports, commits and deletions, from this process or the CLI. */
  private snapshotImages(): Map<string, string> {
    const out = new Map<string, string>();
    const images = this.source.images;
    if (!images) return out;
    for (const i of images.list()) {
      const versions = images.versions(i.name).map((v) => ({ version: v.version, published: v.published }));
      out.set(i.name, JSON.stringify({ name: i.name, currentVersion: i.currentVersion, versions }));
    }
    return out;
  }

  private snapshotClients(): Map<string, string> {
    const out = new Map<string, string>();
    for (const c of this.source.clients.list()) out.set(c.mac, JSON.stringify(toJson(c)));
    return out;
  }
}

function frame(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** JSON has no raw newlines, so one `data:` line carries the whole record. */
function bootEventFrame(e: BootEventRecord): string {
  return `id: ${e.id}\nevent: boot-event\ndata: ${JSON.stringify(toJson(e))}\n\n`;
}
