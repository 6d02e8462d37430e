/**
 * What every `diskless` command is made of: its declaration (path, usage,
 * options) and the pieces commands share (the data directory, the
 * catalogue, argument checks, output as text or JSON). A command's run()
 * calls one app operation and prints its result; policy lives in src/app.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { ParseArgsConfig } from 'node:util';
import type { Logger } from '../lib/log.js';
import { normalizeMac } from '../lib/net.js';
import { Catalogue } from '../app/catalogue.js';
import { DEFAULT_CONFIG_PATH, loadConfig, type DisklessConfig } from '../app/config.js';
import { jsonValue } from '../app/json.js';
import { DB_FILE, IMAGE_NAME } from '../state/store.js';
import { EXIT, UsageError } from './errors.js';

export interface Io {
  out(text: string): void;
  err(text: string): void;
  /** Relative paths on the command line are resolved against this. */
  cwd: string;
}

export interface RunContext {
  io: Io;
  json: boolean;
  values: Record<string, unknown>;
  positionals: string[];
}

export interface Command {
  path: string[];
  usage: string;
  summary: string;
  help?: string;
  options: NonNullable<ParseArgsConfig['options']>;
  optionHelp: [string, string][];
  positionals: { min: number; max: number; names: string[] };
  /** Takes --json. */
  json?: boolean;
  run(ctx: RunContext): Promise<number>;
}

export const DATA_OPTIONS = {
  config: { type: 'string' },
  'data-dir': { type: 'string' },
} as const;

export const DATA_HELP: [string, string][] = [
  ['--data-dir DIR', 'the data directory (default: dataDir of the configuration)'],
  ['--config FILE', `the configuration file (default ${DEFAULT_CONFIG_PATH}, if it exists)`],
];

export function stringOption(ctx: RunContext, name: string): string | undefined {
  const v = ctx.values[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} needs a value`);
  return v;
}

/** The configuration named by --config (else the default file, if any), with --data-dir applied. */
export function commandConfig(ctx: RunContext): DisklessConfig {
  const configPath = stringOption(ctx, 'config');
  const dir = stringOption(ctx, 'data-dir');
  return loadConfig(configPath ? resolve(ctx.io.cwd, configPath) : DEFAULT_CONFIG_PATH, {
    mustExist: configPath !== undefined,
    ...(dir !== undefined ? { overrides: { dataDir: resolve(ctx.io.cwd, dir) } } : {}),
  });
}

/** --data-dir, else the configuration's dataDir (the file is read only when needed). */
export function dataDir(ctx: RunContext): string {
  const explicit = stringOption(ctx, 'data-dir');
  if (explicit !== undefined) return resolve(ctx.io.cwd, explicit);
  return commandConfig(ctx).dataDir;
}

/**
 * Runs `fn` on the catalogue. Commands that only read do not create a data
 * directory that does not exist (a mistyped --data-dir is not made real):
 * they get null.
 */
export async function withCatalogue<T>(ctx: RunContext, write: boolean, fn: (c: Catalogue | null) => Promise<T> | T, logger?: Logger): Promise<T> {
  const dir = dataDir(ctx);
  if (!write && !existsSync(resolve(dir, DB_FILE))) return fn(null);
  const c = Catalogue.open(dir, logger ? { logger } : {});
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** withCatalogue for commands that change it (the catalogue is always there). */
export function changeCatalogue<T>(ctx: RunContext, fn: (c: Catalogue) => Promise<T> | T, logger?: Logger): Promise<T> {
  return withCatalogue(ctx, true, (c) => fn(c!), logger);
}

export function macArg(text: string): string {
  const mac = normalizeMac(text);
  if (!mac) throw new UsageError(`"${text}" is not a MAC address (e.g. 52:54:00:12:34:56)`);
  return mac;
}

export function imageArg(text: string): string {
  if (!IMAGE_NAME.test(text)) throw new UsageError(`"${text}" is not an image name: 1-64 of a-z 0-9 . _ -, starting with a letter or digit`);
  return text;
}

export function versionArg(text: string, what = 'VERSION'): number {
  if (!/^[1-9]\d{0,8}$/.test(text)) throw new UsageError(`${what} must be a version number (1, 2, 3...), got "${text}"`);
  return Number(text);
}

const SIZE = /^(\d+)\s*([KMGT])?(?:i?B)?$/i;
const UNITS: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** Bytes from `123`, `512M`, `4G`, `1T` (binary units). */
export function sizeArg(text: string, what: string): number {
  const m = SIZE.exec(text.trim());
  const n = m ? Number(m[1]) * (m[2] ? UNITS[m[2].toUpperCase()]! : 1) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError(`${what} must be a size such as 512M or 4G, got "${text}"`);
  return n;
}

/** Prints `value` as JSON (--json) or the text lines. */
export function emit(ctx: RunContext, value: unknown, text: () => string[]): number {
  if (ctx.json) ctx.io.out(JSON.stringify(jsonValue(value), null, 2));
  else ctx.io.out(text().join('\n'));
  return EXIT.OK;
}

/**
 * Progress of a long operation on standard error: a line when the phase
 * changes, else at most every `everyMs`. Silent with --json (stdout then
 * carries only the result; stderr is still free, but scripts asked for quiet).
 */
export function progressPrinter(ctx: RunContext, everyMs = 2000): (phase: string, detail?: string) => void {
  let lastPhase = '';
  let lastAt = 0;
  const t0 = Date.now();
  return (phase, detail) => {
    if (ctx.json) return;
    const now = Date.now();
    if (phase === lastPhase && now - lastAt < everyMs) return;
    lastPhase = phase;
    lastAt = now;
    ctx.io.err(`${((now - t0) / 1000).toFixed(0).padStart(5)}s  ${phase}${detail ? `: ${detail}` : ''}`);
  };
}

/** Resolves with the first SIGINT or SIGTERM; a second one exits at once. */
export function waitForSignal(log: Logger): Promise<NodeJS.Signals> {
  return new Promise((done) => {
    const first = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', first);
      process.off('SIGTERM', first);
      const force = (): void => {
        log.warn('second signal: exiting without finishing');
        process.exit(EXIT.FAILURE);
      };
      process.once('SIGINT', force);
      process.once('SIGTERM', force);
      done(signal);
    };
    process.on('SIGINT', first);
    process.on('SIGTERM', first);
  });
}

/** An AbortSignal that fires on SIGINT/SIGTERM (long operations clean up and stop). */
export function interruptSignal(): { signal: AbortSignal; dispose(): void } {
  const ac = new AbortController();
  const on = (): void => ac.abort();
  process.once('SIGINT', on);
  process.once('SIGTERM', on);
  return { signal: ac.signal, dispose: () => { process.off('SIGINT', on); process.off('SIGTERM', on); } };
}
