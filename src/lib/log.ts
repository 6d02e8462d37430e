/**
 * Structured logging: one JSON object per line on stdout, or a short
 * human-readable line when stdout is a terminal. Child loggers carry context
 * (protocol, peer, mac, export) so every line can be traced to a client.
 *
 * A JSON line is `{"time":"<ISO 8601 UTC>","level":"info","msg":"...", ...}`:
 * time, level and msg first, then the child's bindings, then the call's
 * fields. The line format is what operators parse (docs/operations.md), so:
 *   - a binding or field named time, level or msg cannot overwrite those;
 *     it is written as `time_`, `level_`, `msg_`;
 *   - Error values (under any key, nested too) become {name, message,
 *     code, errno, stack, cause}; JSON.stringify would write `{}`;
 *   - Buffers become `<Buffer N bytes>`, bigints strings, and a circular
 *     reference `[Circular]`: logging never throws and never writes a
 *     megabyte for a packet;
 *   - in the terminal form, control characters in the message and in string
 *     values are escaped, so text from the network (a TFTP file name, a
 *     DHCP host name) cannot forge a line.
 * The level comes from the option, else DISKLESS_LOG_LEVEL, else info.
 */

export type Level = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
export const LOG_LEVELS: readonly Level[] = Object.freeze(['debug', 'info', 'warn', 'error']);

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(bindings: Fields): Logger;
}

export interface LoggerOptions {
  level?: Level;
  /** Where lines go; defaults to process.stdout. */
  write?: (line: string) => void;
  /** Human-readable lines instead of JSON; defaults to stdout being a TTY. */
  pretty?: boolean;
  now?: () => Date;
}

const RESERVED = new Set(['time', 'level', 'msg']);
/** Nesting kept in a record; deeper values are summarized (a bound on what one line can cost). */
const MAX_DEPTH = 8;
/** Longest cause chain followed. */
const MAX_CAUSES = 4;

export function isLevel(s: unknown): s is Level {
  return typeof s === 'string' && Object.hasOwn(LEVELS, s);
}

export function createLogger(options: LoggerOptions = {}, bindings: Fields = {}): Logger {
  const env = process.env.DISKLESS_LOG_LEVEL;
  const min = LEVELS[options.level ?? (isLevel(env) ? env : 'info')] ?? LEVELS.info;
  const write = options.write ?? ((line: string) => process.stdout.write(line + '\n'));
  const pretty = options.pretty ?? process.stdout.isTTY === true;
  const now = options.now ?? (() => new Date());

  const emit = (level: Level, msg: string, fields?: Fields): void => {
    if (LEVELS[level] < min) return;
    const record: Fields = { time: now().toISOString(), level, msg: String(msg) };
    for (const source of [bindings, fields]) {
      if (!source) continue;
      for (const [k, v] of Object.entries(source)) setField(record, RESERVED.has(k) ? `${k}_` : k, v);
    }
    const safe = toLoggable(record, new WeakSet(), 0) as Fields;
    if (!pretty) {
      write(JSON.stringify(safe));
      return;
    }
    const { time, level: _l, msg: _m, ...rest } = safe;
    const ctx = Object.entries(rest)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${prettyValue(v)}`)
      .join(' ');
    write(`${String(time).slice(11, 23)} ${level.toUpperCase().padEnd(5)} ${escapeControl(String(msg))}${ctx ? '  ' + ctx : ''}`);
  };

  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (more) => createLogger(options, { ...bindings, ...more }),
  };
}

/** A logger that drops everything; the default in unit tests. */
export const silentLogger: Logger = {
  debug() {}, info() {}, warn() {}, error() {},
  child() { return silentLogger; },
};

/** Sets an own property, even one named `__proto__` (keys can come from the network). */
function setField(o: Fields, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

/** A copy of `v` that JSON.stringify writes faithfully and cannot throw on. */
function toLoggable(v: unknown, seen: WeakSet<object>, depth: number): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'function' || typeof v === 'symbol') return undefined;
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  if (v === null || typeof v !== 'object') return v;
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return `<Buffer ${v.byteLength} bytes>`;
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString();
  if (seen.has(v)) return '[Circular]';
  if (depth >= MAX_DEPTH) return Array.isArray(v) ? `[Array(${v.length})]` : '[Object]';
  seen.add(v);
  try {
    if (v instanceof Error) return errorRecord(v, seen, depth, 0);
    if (Array.isArray(v)) return v.map((x) => toLoggable(x, seen, depth + 1) ?? null);
    if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [String(k), toLoggable(x, seen, depth + 1)]));
    if (v instanceof Set) return [...v].map((x) => toLoggable(x, seen, depth + 1) ?? null);
    const out: Fields = {};
    for (const [k, x] of Object.entries(v)) setField(out, k, toLoggable(x, seen, depth + 1));
    return out;
  } catch {
    // A getter that throws, a revoked proxy...
    return '[Unloggable]';
  } finally {
    seen.delete(v);
  }
}

function errorRecord(e: Error, seen: WeakSet<object>, depth: number, causes: number): Fields {
  const x = e as Error & { code?: unknown; errno?: unknown; cause?: unknown };
  const out: Fields = { name: e.name, message: e.message };
  if (x.code !== undefined) out.code = toLoggable(x.code, seen, depth + 1);
  if (x.errno !== undefined) out.errno = toLoggable(x.errno, seen, depth + 1);
  out.stack = e.stack;
  if (x.cause !== undefined && causes < MAX_CAUSES) {
    out.cause = x.cause instanceof Error && !seen.has(x.cause) ? errorRecord(x.cause, seen, depth + 1, causes + 1) : toLoggable(x.cause, seen, depth + 1);
  }
  return out;
}

const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

function escapeControl(s: string): string {
  return s.replace(CONTROL, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}

/** The terminal form of a value: strings bare, errors as `message (CODE)`, the rest as JSON. */
function prettyValue(v: unknown): string {
  if (typeof v === 'string') return escapeControl(v);
  if (v && typeof v === 'object' && 'message' in v && 'stack' in v) {
    const e = v as { message: unknown; code?: unknown };
    return escapeControl(`${String(e.message)}${e.code !== undefined ? ` (${String(e.code)})` : ''}`);
  }
  return escapeControl(JSON.stringify(v) ?? String(v));
}
