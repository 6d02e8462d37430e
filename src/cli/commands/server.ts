/**
 * `diskless serve`, `diskless export` and `diskless demo`: the commands that
 * run until they are stopped.
 */
import { resolve } from 'node:path';
import { createLogger } from '../../lib/log.js';
import { DEFAULT_CONFIG_PATH, loadConfig } from '../../app/config.js';
import { runDemo, stopDemo, type DemoOptions } from '../../app/demo.js';
import type { AppError } from '../../app/errors.js';
import { DEFAULT_EXPORT_LISTEN, parseListen, startFileExport } from '../../app/file-export.js';
import { startServer } from '../../app/server.js';
import { DATA_OPTIONS, stringOption, waitForSignal, type Command } from '../command.js';
import { EXIT, UsageError } from '../errors.js';

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

const demo: Command = {
  path: ['demo'],
  usage: 'demo [stop] [--mirror URL] [--accel tcg|kvm] [--cache-dir DIR] [--work-dir DIR]',
  summary: 'Boot a disk-less VM from this server in a private network namespace and attach to its console',
  help: [
    'Needs root. Builds (or reuses) the demo image, makes a network namespace with a bridge,',
    'starts the server there, boots a VM with no disk and shows its console until the login',
    'prompt. Ctrl-C, or `diskless demo stop` in another terminal, stops everything and cleans up.',
  ].join('\n'),
  options: { mirror: { type: 'string' }, accel: { type: 'string' }, 'cache-dir': { type: 'string' }, 'work-dir': { type: 'string' } },
  optionHelp: [
    ['--mirror URL', 'Debian mirror for the image build (default: this machine\'s apt sources)'],
    ['--accel tcg|kvm', 'QEMU acceleration (default: tcg, which works everywhere; kvm when it works here)'],
    ['--cache-dir DIR', 'where the image build keeps its downloads and disks'],
    ['--work-dir DIR', 'scratch space of the demo'],
  ],
  positionals: { min: 0, max: 1, names: ['stop'] },
  async run(ctx) {
    const what = ctx.positionals[0];
    if (what !== undefined && what !== 'stop') throw new UsageError(`unknown demo action "${what}" (only "stop")`, demo.usage);
    const accel = stringOption(ctx, 'accel');
    if (accel !== undefined && accel !== 'tcg' && accel !== 'kvm') throw new UsageError('--accel must be tcg or kvm');
    const cacheDir = stringOption(ctx, 'cache-dir');
    const workDir = stringOption(ctx, 'work-dir');
    const mirror = stringOption(ctx, 'mirror');
    const options: DemoOptions = {
      ...(cacheDir !== undefined ? { cacheDir: resolve(ctx.io.cwd, cacheDir) } : {}),
      ...(workDir !== undefined ? { workDir: resolve(ctx.io.cwd, workDir) } : {}),
      ...(mirror !== undefined ? { mirror } : {}),
      ...(accel !== undefined ? { accel: accel as 'tcg' | 'kvm' } : {}),
      say: (line) => ctx.io.err(line),
    };
    if (what === 'stop') {
      const r = await stopDemo(options);
      ctx.io.err(r.cleaned ? (r.running ? 'the demo was stopped and cleaned up' : 'cleaned up what a demo left behind') : 'no demo was running');
      return EXIT.OK;
    }
    return runDemo(options);
  },
};

export const SERVER_COMMANDS: readonly Command[] = [serve, exportFile, demo];
