/**
 * Structured logging: one JSON object per line on stdout, or a short
 * human-readable line when stdout is a terminal. Child loggers carry context
 * (protocol, peer, mac, export) so every line can be traced to a client.
 */

export type Level = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

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

export function createLogger(options: LoggerOptions = {}, bindings: Fields = {}): Logger {
  const min = LEVELS[options.level ?? ((process.env.DISKLESS_LOG_LEVEL as Level | undefined) ?? 'info')] ?? LEVELS.info;
  const write = options.write ?? ((line: string) => process.stdout.write(line + '\n'));
  const pretty = options.pretty ?? process.stdout.isTTY === true;
  const now = options.now ?? (() => new Date());

  const emit = (level: Level, msg: string, fields?: Fields): void => {
    if (LEVELS[level] < min) return;
    const record: Fields = { time: now().toISOString(), level, msg, ...bindings, ...fields };
    if (record.err instanceof Error) {
      const e = record.err as Error & { code?: string };
      record.err = { message: e.message, code: e.code, stack: e.stack };
    }
    if (!pretty) {
      write(JSON.stringify(record, jsonSafe));
      return;
    }
    const { time, level: _l, msg: _m, ...rest } = record;
    const ctx = Object.entries(rest)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v, jsonSafe)}`)
      .join(' ');
    write(`${String(time).slice(11, 23)} ${level.toUpperCase().padEnd(5)} ${msg}${ctx ? '  ' + ctx : ''}`);
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

function jsonSafe(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}
