/**
 * The commands of `diskless`. Each is a declaration (path, usage, options)
 * and a run() that calls one app or state function and prints its result.
 * Nothing here decides policy; it belongs to src/app and src/state.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { ParseArgsConfig } from 'node:util';
import { createLogger, type Logger } from '../lib/log.js';
import { normalizeMac } from '../lib/net.js';
import { Catalogue, type ClientView } from '../app/catalogue.js';
import { checkConfig, DEFAULT_CONFIG_PATH, loadConfig, readConfigFile } from '../app/config.js';
import { renderConfigDocs } from '../app/config-docs.js';
import { AppError } from '../app/errors.js';
import { DEFAULT_EXPORT_LISTEN, parseListen, startFileExport } from '../app/file-export.js';
import { startServer } from '../app/server.js';
import { CLIENT_MODES, CLIENT_NAME, DB_FILE, IMAGE_NAME, type ClientMode, type ImageVersionRecord } from '../state/store.js';
import { notFound } from '../state/errors.js';
import { EXIT, UsageError } from './errors.js';
import { bytes, fields, jsonRecord, table, time } from './format.js';

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

// ---------------------------------------------------------------------------
// Shared pieces

const DATA_OPTIONS = {
  config: { type: 'string' },
  'data-dir': { type: 'string' },
} as const;

const DATA_HELP: [string, string][] = [
  ['--data-dir DIR', 'the data directory (default: dataDir of the configuration)'],
  ['--config FILE', `the configuration file (default ${DEFAULT_CONFIG_PATH}, if it exists)`],
];

function stringOption(ctx: RunContext, name: string): string | undefined {
  const v = ctx.values[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} needs a value`);
  return v;
}

/** --data-dir, else the configuration's dataDir (the file is read only when needed). */
function dataDir(ctx: RunContext): string {
  const explicit = stringOption(ctx, 'data-dir');
  if (explicit !== undefined) return resolve(ctx.io.cwd, explicit);
  const configPath = stringOption(ctx, 'config');
  return loadConfig(configPath ? resolve(ctx.io.cwd, configPath) : DEFAULT_CONFIG_PATH, { mustExist: configPath !== undefined }).dataDir;
}

/**
 * Runs `fn` on the catalogue. Commands that only read do not create a data
 * directory that does not exist (a mistyped --data-dir is not made real).
 */
async function withCatalogue<T>(ctx: RunContext, write: boolean, fn: (c: Catalogue | null) => Promise<T> | T): Promise<T> {
  const dir = dataDir(ctx);
  if (!write && !existsSync(resolve(dir, DB_FILE))) return fn(null);
  const c = Catalogue.open(dir);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

function macArg(text: string): string {
  const mac = normalizeMac(text);
  if (!mac) throw new UsageError(`"${text}" is not a MAC address (e.g. 52:54:00:12:34:56)`);
  return mac;
}

function imageArg(text: string): string {
  if (!IMAGE_NAME.test(text)) throw new UsageError(`"${text}" is not an image name: 1-64 of a-z 0-9 . _ -, starting with a letter or digit`);
  return text;
}

function emit(ctx: RunContext, value: unknown, text: () => string[]): number {
  if (ctx.json) ctx.io.out(JSON.stringify(value, null, 2));
  else ctx.io.out(text().join('\n'));
  return EXIT.OK;
}

/** Resolves with the first SIGINT or SIGTERM; a second one exits at once. */
function waitForSignal(log: Logger): Promise<NodeJS.Signals> {
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

const noteBusy = (ctx: RunContext, busy: string[]): void => {
  if (busy.length > 0 && !ctx.json) ctx.io.err(`note: ${busy.join(', ')} is still open in the running server; it is deleted when released`);
};

function versionRow(v: ImageVersionRecord, current: number | null): string[] {
  return [String(v.version) + (v.version === current ? ' *' : ''), bytes(v.size), v.published ? 'yes' : 'no', v.sha256.slice(0, 16), time(v.createdMs)];
}

function clientLines(c: ClientView): string[] {
  return fields([
    ['mac', c.mac],
    ['name', c.name ?? '-'],
    ['image', c.image + (c.pinnedVersion !== null ? ` (pinned to version ${c.pinnedVersion})` : '')],
    ['mode', c.mode],
    ['state', c.state],
    ['boot', c.bootId ? `${c.bootId}, started ${time(c.bootStartedMs)}, ${c.bootImage} version ${c.bootVersion}` : '-'],
    ['export', c.exportName ?? '- (none until the client boots, or `diskless client new-boot`)'],
    ['bound to', c.bootAddress ?? '-'],
    ['last address', c.lastAddress ? `${c.lastAddress} at ${time(c.lastSeenMs)}` : '-'],
    ['overlay', c.overlay ? `${c.overlay.path} (${c.overlay.image} version ${c.overlay.version}, ${bytes(c.overlay.diskBytes)} on disk)` : '-'],
  ]);
}

// ---------------------------------------------------------------------------
// Commands

const serve: Command = {
  path: ['serve'],
  usage: 'serve [--config FILE] [--data-dir DIR]',
  summary: 'Run the server: every service, as the configuration says',
  help: 'Logs go to standard output, one JSON object per line (short lines on a terminal). SIGINT or SIGTERM stops the server gracefully; a second one stops it at once.',
  options: DATA_OPTIONS,
  optionHelp: [['--config FILE', `the configuration file (default ${DEFAULT_CONFIG_PATH}; missing means all defaults)`], ['--data-dir DIR', 'overrides dataDir of the configuration']],
  positionals: { min: 0, max: 0, names: [] },
  async run(ctx) {
    const configPath = stringOption(ctx, 'config');
    const dir = stringOption(ctx, 'data-dir');
    const config = loadConfig(configPath ? resolve(ctx.io.cwd, configPath) : DEFAULT_CONFIG_PATH, {
      mustExist: configPath !== undefined,
      ...(dir !== undefined ? { overrides: { dataDir: resolve(ctx.io.cwd, dir) } } : {}),
    });
    const log = createLogger();
    const server = await startServer(config, { logger: log });
    const signal = await waitForSignal(log);
    log.info('stopping', { signal });
    await server.close();
    return EXIT.OK;
  },
};

const exportFile: Command = {
  path: ['export'],
  usage: 'export FILE [--listen HOST:PORT] [--name NAME] [--read-only | --cow DIR]',
  summary: 'Export one file over NBD, like qemu-nbd (inspection, debugging, benchmarks)',
  help: [
    'By default the file itself is exported read-write. --read-only never writes it.',
    '--cow DIR keeps every write in a copy-on-write overlay in DIR (created if',
    'missing, reused if present) over the file opened read-only.',
    'The export is also reachable as the default export (the empty name).',
    'Logs where it listens (a line with "uri"); stops on SIGINT or SIGTERM.',
  ].join('\n'),
  options: { listen: { type: 'string' }, name: { type: 'string' }, 'read-only': { type: 'boolean' }, cow: { type: 'string' } },
  optionHelp: [
    ['--listen HOST:PORT', `address to listen on (default ${DEFAULT_EXPORT_LISTEN}; [ADDR]:PORT for IPv6; port 0 picks one)`],
    ['--name NAME', 'the export name (default: the empty name)'],
    ['--read-only', 'export the file read-only'],
    ['--cow DIR', 'export a persistent copy-on-write overlay in DIR over the file'],
  ],
  positionals: { min: 1, max: 1, names: ['FILE'] },
  async run(ctx) {
    const file = resolve(ctx.io.cwd, ctx.positionals[0]!);
    const readOnly = ctx.values['read-only'] === true;
    const cow = stringOption(ctx, 'cow');
    if (readOnly && cow !== undefined) throw new UsageError('--read-only and --cow do not go together (an overlay never writes the file anyway)');
    const name = ctx.values.name === undefined ? '' : String(ctx.values.name);
    if (Buffer.byteLength(name) > 4096) throw new UsageError('--name is longer than NBD allows (4096 bytes)');
    let listen;
    try {
      listen = parseListen(stringOption(ctx, 'listen') ?? DEFAULT_EXPORT_LISTEN);
    } catch (err) {
      throw new UsageError(`--listen: ${(err as AppError).message}`);
    }
    const log = createLogger();
    const handle = await startFileExport({
      file, name, readOnly, ...(cow !== undefined ? { cowDir: resolve(ctx.io.cwd, cow) } : {}), host: listen.host, port: listen.port, logger: log,
    });
    log.info('export ready', { uri: handle.uri, file, mode: cow !== undefined ? 'copy-on-write' : readOnly ? 'read-only' : 'read-write', size: handle.resolver.device.size });
    const signal = await waitForSignal(log);
    log.info('stopping', { signal });
    await handle.close();
    return EXIT.OK;
  },
};

const imageAdd: Command = {
  path: ['image', 'add'],
  usage: 'image add NAME FILE',
  summary: 'Copy a raw disk file into the catalogue as the next version of an image, and publish it',
  help: 'The copy is kept read-only with its sha256 and never changes; clients that are not pinned boot it from their next boot on.',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 2, max: 2, names: ['NAME', 'FILE'] },
  json: true,
  async run(ctx) {
    const name = imageArg(ctx.positionals[0]!);
    const file = resolve(ctx.io.cwd, ctx.positionals[1]!);
    const v = await withCatalogue(ctx, true, (c) => c!.addImageVersion(name, file));
    return emit(ctx, jsonRecord(v), () => [`added ${v.image} version ${v.version}: ${bytes(v.size)}, sha256 ${v.sha256}, published`]);
  },
};

const imageList: Command = {
  path: ['image', 'list'],
  usage: 'image list',
  summary: 'List the images',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 0, max: 0, names: [] },
  json: true,
  async run(ctx) {
    const images = await withCatalogue(ctx, false, (c) => c?.listImages() ?? []);
    return emit(ctx, images.map((i) => jsonRecord(i)), () =>
      images.length === 0 ? ['no images (add one with `diskless image add NAME FILE`)'] :
        table(['NAME', 'CURRENT', 'VERSIONS', 'SIZE', 'CREATED'], images.map((i) => [i.name, i.currentVersion === null ? '-' : String(i.currentVersion), String(i.versions), bytes(i.size), time(i.createdMs)])));
  },
};

const imageShow: Command = {
  path: ['image', 'show'],
  usage: 'image show NAME',
  summary: 'Show an image and its versions',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 1, max: 1, names: ['NAME'] },
  json: true,
  async run(ctx) {
    const name = imageArg(ctx.positionals[0]!);
    const { image, versions } = await withCatalogue(ctx, false, (c) => {
      if (!c) throw notFound(`no image named "${name}" (the catalogue is empty)`);
      return c.showImage(name);
    });
    return emit(ctx, { ...jsonRecord(image), versions: versions.map((v) => jsonRecord(v)) }, () => [
      ...fields([['name', image.name], ['current', image.currentVersion === null ? '-' : String(image.currentVersion)], ['created', time(image.createdMs)]]),
      '',
      ...table(['VERSION', 'SIZE', 'PUBLISHED', 'SHA256', 'CREATED'], versions.map((v) => versionRow(v, image.currentVersion))),
    ]);
  },
};

const clientAdd: Command = {
  path: ['client', 'add'],
  usage: 'client add MAC --image NAME [--mode ephemeral|persistent] [--name NAME] [--pin VERSION]',
  summary: 'Add a client machine',
  help: 'ephemeral (the default): the client\'s disk starts clean at every boot. persistent: its writes are kept across boots.',
  options: { ...DATA_OPTIONS, image: { type: 'string' }, mode: { type: 'string' }, name: { type: 'string' }, pin: { type: 'string' } },
  optionHelp: [
    ['--image NAME', 'the image it boots (required)'],
    ['--mode MODE', 'ephemeral (default) or persistent'],
    ['--name NAME', 'a name for it, e.g. pc-01 (may become its host name)'],
    ['--pin VERSION', 'boot this version of the image instead of the current one'],
    ...DATA_HELP,
  ],
  positionals: { min: 1, max: 1, names: ['MAC'] },
  json: true,
  async run(ctx) {
    const mac = macArg(ctx.positionals[0]!);
    const image = stringOption(ctx, 'image');
    if (image === undefined) throw new UsageError('--image NAME is required', clientAdd.usage);
    imageArg(image);
    const mode = stringOption(ctx, 'mode') ?? 'ephemeral';
    if (!(CLIENT_MODES as readonly string[]).includes(mode)) throw new UsageError(`--mode must be ${CLIENT_MODES.join(' or ')}, got "${mode}"`);
    const name = stringOption(ctx, 'name');
    if (name !== undefined && !CLIENT_NAME.test(name)) throw new UsageError(`--name "${name}": 1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit`);
    const pinText = stringOption(ctx, 'pin');
    if (pinText !== undefined && !/^[1-9]\d{0,8}$/.test(pinText)) throw new UsageError(`--pin must be a version number, got "${pinText}"`);
    const c = await withCatalogue(ctx, true, (cat) =>
      cat!.addClient({ mac, image, mode: mode as ClientMode, name: name ?? null, pinnedVersion: pinText === undefined ? null : Number(pinText) }));
    return emit(ctx, jsonRecord(c), () => [`added client ${c.mac}${c.name ? ` (${c.name})` : ''}: ${c.image}, ${c.mode}`]);
  },
};

const clientList: Command = {
  path: ['client', 'list'],
  usage: 'client list',
  summary: 'List the clients',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 0, max: 0, names: [] },
  json: true,
  async run(ctx) {
    const clients = await withCatalogue(ctx, false, (c) => c?.listClients() ?? []);
    return emit(ctx, clients.map((c) => jsonRecord(c)), () =>
      clients.length === 0 ? ['no clients (add one with `diskless client add MAC --image NAME`)'] :
        table(['MAC', 'NAME', 'IMAGE', 'MODE', 'STATE', 'BOOTED', 'ADDRESS'], clients.map((c) => [
          c.mac, c.name ?? '-', c.image + (c.pinnedVersion !== null ? `@${c.pinnedVersion}` : ''), c.mode, c.state,
          c.bootVersion === null ? '-' : `${c.bootImage}@${c.bootVersion}`, c.lastAddress ?? '-',
        ])));
  },
};

const clientShow: Command = {
  path: ['client', 'show'],
  usage: 'client show MAC',
  summary: 'Show a client: its boot, its NBD export name, its overlay, its recent boot events',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 1, max: 1, names: ['MAC'] },
  json: true,
  async run(ctx) {
    const mac = macArg(ctx.positionals[0]!);
    const { client, events } = await withCatalogue(ctx, false, (c) => {
      if (!c) throw notFound(`no client with MAC ${mac} (the catalogue is empty)`);
      return { client: c.showClient(mac), events: c.store.events.list({ mac, limit: 20 }) };
    });
    return emit(ctx, { ...jsonRecord(client), events: events.map((e) => jsonRecord(e)) }, () => [
      ...clientLines(client),
      ...(events.length > 0 ? ['', 'recent boot events:', ...events.map((e) => `  ${time(e.timeMs)}  ${e.step}${e.detail ? '  ' + JSON.stringify(e.detail) : ''}`)] : []),
    ]);
  },
};

const clientReset: Command = {
  path: ['client', 'reset'],
  usage: 'client reset MAC',
  summary: 'Discard a client\'s overlay and end its current boot; its next boot starts from a clean image',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 1, max: 1, names: ['MAC'] },
  json: true,
  async run(ctx) {
    const mac = macArg(ctx.positionals[0]!);
    const r = await withCatalogue(ctx, true, (c) => c!.resetClient(mac));
    noteBusy(ctx, r.busy);
    return emit(ctx, { client: jsonRecord(r.client), discarded: r.discarded ? jsonRecord(r.discarded) : null, removed: r.removed, busy: r.busy }, () => [
      r.discarded ? `discarded the overlay of ${r.client.mac} (${r.discarded.dir}); its next boot starts clean` : `${r.client.mac} had no overlay; its boot was ended`,
    ]);
  },
};

const clientNewBoot: Command = {
  path: ['client', 'new-boot'],
  usage: 'client new-boot MAC',
  summary: 'Do what a new boot of the client does: a new export name; an ephemeral overlay starts clean',
  help: 'The previous export name stops working. Prints the new export name (the boot script passes it in nbdroot=).',
  options: DATA_OPTIONS,
  optionHelp: DATA_HELP,
  positionals: { min: 1, max: 1, names: ['MAC'] },
  json: true,
  async run(ctx) {
    const mac = macArg(ctx.positionals[0]!);
    const { boot, view } = await withCatalogue(ctx, true, async (c) => {
      const b = await c!.newBoot(mac);
      return { boot: b, view: c!.showClient(mac) };
    });
    return emit(ctx, {
      mac: boot.client.mac, bootId: boot.bootId, exportName: boot.exportName, image: boot.image, version: boot.version,
      overlayReset: boot.overlayReset, pendingVersion: boot.pendingVersion, overlay: view.overlay?.path ?? null,
    }, () => [
      ...fields([
        ['mac', boot.client.mac],
        ['boot', boot.bootId],
        ['export', boot.exportName],
        ['runs', `${boot.image} version ${boot.version}${boot.pendingVersion !== null ? ` (version ${boot.pendingVersion} waits for \`diskless client reset\`)` : ''}`],
        ['overlay', `${view.overlay?.path ?? '-'}${boot.overlayReset ? ' (new, clean)' : ''}`],
      ]),
    ]);
  },
};

const configCheck: Command = {
  path: ['config', 'check'],
  usage: 'config check [--config FILE]',
  summary: 'Check a configuration file and print every problem',
  options: { config: { type: 'string' } },
  optionHelp: [['--config FILE', `the file to check (default ${DEFAULT_CONFIG_PATH})`]],
  positionals: { min: 0, max: 0, names: [] },
  json: true,
  async run(ctx) {
    const given = stringOption(ctx, 'config');
    const path = given ? resolve(ctx.io.cwd, given) : DEFAULT_CONFIG_PATH;
    const raw = readConfigFile(path, given !== undefined);
    const { config, problems } = checkConfig(raw ?? {});
    if (ctx.json) {
      ctx.io.out(JSON.stringify({ file: path, exists: raw !== null, ok: problems.length === 0, problems, ...(config ? { config } : {}) }, null, 2));
    } else if (problems.length === 0) {
      ctx.io.out(raw === null ? `${path} does not exist; every default applies` : `${path}: ok`);
    } else {
      ctx.io.err(`${path}: ${problems.length} problem${problems.length === 1 ? '' : 's'}`);
      for (const p of problems) ctx.io.out(p);
    }
    return problems.length === 0 ? EXIT.OK : EXIT.FAILURE;
  },
};

const configDocs: Command = {
  path: ['config', 'docs'],
  usage: 'config docs',
  summary: 'Print the reference of every configuration option (docs/configuration.md)',
  options: {},
  optionHelp: [],
  positionals: { min: 0, max: 0, names: [] },
  async run(ctx) {
    ctx.io.out(renderConfigDocs());
    return EXIT.OK;
  },
};

export const COMMANDS: readonly Command[] = [
  serve, exportFile, imageAdd, imageList, imageShow,
  clientAdd, clientList, clientShow, clientReset, clientNewBoot,
  configCheck, configDocs,
];
