// The API's event stream (GET /api/v1/events/stream, text/event-stream),
// read with fetch() because EventSource cannot send the Authorization header.
// The parser follows the HTML Living Standard, "Server-sent events",
// section "Interpreting an event stream"; the reader reconnects with the
// id of the last event seen (?after=), with a growing delay.

import { API } from './api.js';

/** Parses text/event-stream incrementally: push() text, get whole events back. */
export class SseParser {
  constructor() {
    this.buffer = '';
    this.data = [];
    this.type = '';
    this.lastId = '';
    this.retry = null;
    this.sawBom = false;
    /** A CR ended the previous chunk: a LF starting this one belongs to it. */
    this.pendingCr = false;
  }

  /** Returns the events completed by this chunk: [{type, data, id}]. Comments come back as {comment}. */
  push(text) {
    if (!this.sawBom && text.length > 0) {
      this.sawBom = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.pendingCr && text.startsWith('\n')) text = text.slice(1);
    this.pendingCr = false;
    this.buffer += text;
    const out = [];
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      if (!m) break;
      // A CR at the very end may be the first half of a CRLF split across chunks.
      if (m[0] === '\r' && m.index === this.buffer.length - 1) this.pendingCr = true;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      const ev = this.line(line);
      if (ev) out.push(ev);
    }
    return out;
  }

  line(line) {
    if (line === '') {
      if (this.data.length === 0) {
        this.type = '';
        return null;
      }
      const ev = { type: this.type || 'message', data: this.data.join('\n'), id: this.lastId };
      this.data = [];
      this.type = '';
      return ev;
    }
    if (line.startsWith(':')) return { comment: line.slice(1) };
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.type = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id') { if (!value.includes('\0')) this.lastId = value; }
    else if (field === 'retry') { if (/^\d+$/.test(value)) this.retry = Number(value); }
    return null;
  }
}

export const STREAM_TIMINGS = {
  /** The server sends a comment every 15 s: this much silence means the connection is gone. */
  silenceMs: 45_000,
  firstRetryMs: 1000,
  maxRetryMs: 30_000,
};

/**
 * Keeps a stream open while started. Callbacks:
 *   onEvent({type, data, id})  data already parsed from JSON
 *   onState(state, detail)     'connecting' | 'live' | 'retrying' | 'stopped'
 *   onOpen(reconnected)        the stream is open (again)
 *   onUnauthorized(message)    401: the token is refused; the reader stops
 */
export class EventReader {
  constructor(api, callbacks) {
    this.api = api;
    this.cb = callbacks;
    this.lastId = null;
    this.stopped = true;
    this.failures = 0;
    this.controller = null;
    this.timer = null;
    this.opened = 0;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    void this.loop();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.controller?.abort();
    this.cb.onState?.('stopped');
  }

  async loop() {
    while (!this.stopped) {
      let delay;
      try {
        await this.once();
        delay = this.retryMs();
        this.cb.onState?.('retrying', { message: 'the stream ended', retryMs: delay });
      } catch (err) {
        if (this.stopped) return;
        if (err?.status === 401) {
          this.stopped = true;
          this.cb.onUnauthorized?.(err.message);
          return;
        }
        this.failures++;
        delay = Math.min(STREAM_TIMINGS.maxRetryMs, this.retryMs() * 2 ** Math.min(this.failures - 1, 5));
        this.cb.onState?.('retrying', { message: err?.message ?? String(err), retryMs: delay });
      }
      if (this.stopped) return;
      await new Promise((resolve) => { this.timer = setTimeout(resolve, delay); });
    }
  }

  retryMs() {
    return this.serverRetry ?? STREAM_TIMINGS.firstRetryMs;
  }

  async once() {
    this.cb.onState?.('connecting');
    const controller = new AbortController();
    this.controller = controller;
    const query = this.lastId !== null ? `?after=${encodeURIComponent(this.lastId)}` : '';
    const res = await fetch(`${API}/events/stream${query}`, { headers: this.api.headers({ accept: 'text/event-stream' }), cache: 'no-store', signal: controller.signal });
    if (!res.ok) {
      let message = `the event stream answered ${res.status}`;
      try {
        message = (await res.json()).message ?? message;
      } catch { /* not JSON */ }
      throw Object.assign(new Error(message), { status: res.status });
    }
    const parser = new SseParser();
    const decoder = new TextDecoder();
    const reader = res.body.getReader();
    let silence = null;
    const arm = () => {
      clearTimeout(silence);
      silence = setTimeout(() => controller.abort(), STREAM_TIMINGS.silenceMs);
    };
    arm();
    this.failures = 0;
    this.cb.onState?.('live');
    this.cb.onOpen?.(this.opened++ > 0);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        for (const ev of parser.push(decoder.decode(value, { stream: true }))) {
          if (ev.comment !== undefined) continue;
          if (ev.id && /^\d+$/.test(ev.id)) this.lastId = ev.id;
          let data;
          try {
            data = JSON.parse(ev.data);
          } catch {
            continue;
          }
          this.cb.onEvent?.({ type: ev.type, data, id: ev.id });
        }
        if (parser.retry !== null) this.serverRetry = parser.retry;
      }
    } finally {
      clearTimeout(silence);
      controller.abort();
    }
  }
}
