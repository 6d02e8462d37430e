/**
 * The `diskless` command: a thin layer that parses the command line (Node's
 * util.parseArgs, the only argument parser in the project), calls the app
 * and state functions, and prints their results (text, or JSON with
 * --json). Exit statuses: 0 success, 1 the operation failed, 2 the command
 * line is wrong (EXIT in errors.ts).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { isDisklessError } from '../lib/errors.js';
import { COMMANDS, type Command, type Io } from './commands.js';
import { EXIT, UsageError } from './errors.js';

export type { Io } from './commands.js';

const PROGRAM = 'diskless';

const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

/** Runs the command line `argv` (without node and the script) and resolves with the exit status. */
export async function main(argv: string[], io: Io = defaultIo()): Promise<number> {
  let json = false;
  try {
    const words = leadingWords(argv);
    if (argv.length === 0 || (words.length === 0 && (argv[0] === '--help' || argv[0] === '-h'))) {
      io.out(overview());
      return argv.length === 0 ? EXIT.USAGE : EXIT.OK;
    }
    if (words[0] === 'help') return help(words.slice(1), io);
    if (argv[0] === '--version') {
      io.out(await version());
      return EXIT.OK;
    }
    const command = findCommand(words);
    if (!command) return usageFailure(io, unknownCommand(words));
    const rest = argv.slice(command.path.length);
    let parsed;
    try {
      parsed = parseArgs({
        args: rest,
        options: { ...COMMON_OPTIONS, ...(command.json ? { json: { type: 'boolean' } } : {}), ...command.options },
        allowPositionals: true,
        strict: true,
      });
    } catch (err) {
      throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''), command.usage);
    }
    if (parsed.values.help) {
      io.out(commandHelp(command));
      return EXIT.OK;
    }
    json = command.json === true && parsed.values.json === true;
    const { min, max } = command.positionals;
    if (parsed.positionals.length < min) throw new UsageError(`missing ${command.positionals.names.slice(parsed.positionals.length, min).join(' ')}`, command.usage);
    if (parsed.positionals.length > max) throw new UsageError(`unexpected argument "${parsed.positionals[max]}"`, command.usage);
    return await command.run({ io, json, values: parsed.values as Record<string, unknown>, positionals: parsed.positionals });
  } catch (err) {
    if (err instanceof UsageError) return usageFailure(io, err, json);
    return failure(io, err, json);
  }
}

function defaultIo(): Io {
  return {
    out: (text) => void process.stdout.write(text.endsWith('\n') ? text : text + '\n'),
    err: (text) => void process.stderr.write(text.endsWith('\n') ? text : text + '\n'),
    cwd: process.cwd(),
  };
}

/** The words before the first option: the command path and its positionals. */
function leadingWords(argv: string[]): string[] {
  const out: string[] = [];
  for (const a of argv) {
    if (a.startsWith('-')) break;
    out.push(a);
  }
  return out;
}

function findCommand(words: string[]): Command | undefined {
  let best: Command | undefined;
  for (const c of COMMANDS) {
    if (c.path.every((p, i) => words[i] === p) && (!best || c.path.length > best.path.length)) best = c;
  }
  return best;
}

function unknownCommand(words: string[]): UsageError {
  const group = COMMANDS.filter((c) => c.path.length > 1 && c.path[0] === words[0]);
  if (group.length > 0) {
    const what = words.length > 1 ? `unknown command "${words[0]} ${words[1]}"` : `"${words[0]}" needs a subcommand`;
    return new UsageError(`${what}; one of: ${group.map((c) => c.path.slice(1).join(' ')).join(', ')}`, groupUsage(words[0]!));
  }
  return new UsageError(`unknown command "${words[0] ?? ''}"; run \`${PROGRAM} --help\` for the list`);
}

function groupUsage(group: string): string {
  // The first line gets its program name from the "usage: diskless " prefix.
  return COMMANDS.filter((c) => c.path[0] === group).map((c) => c.usage).join(`\n       ${PROGRAM} `);
}

function help(words: string[], io: Io): number {
  if (words.length === 0) {
    io.out(overview());
    return EXIT.OK;
  }
  const exact = COMMANDS.find((c) => c.path.join(' ') === words.join(' '));
  if (exact) {
    io.out(commandHelp(exact));
    return EXIT.OK;
  }
  const group = COMMANDS.filter((c) => c.path[0] === words[0]);
  if (group.length > 0) {
    io.out(group.map(commandHelp).join('\n'));
    return EXIT.OK;
  }
  return usageFailure(io, new UsageError(`no command "${words.join(' ')}"`));
}

function overview(): string {
  return [
    `${PROGRAM}: network boot and block storage for rooms of disk-less PCs`,
    '',
    'Commands:',
    ...COMMANDS.flatMap((c) => [`  ${PROGRAM} ${c.usage}`, `      ${c.summary}`]),
    '',
    `Every command takes --help. Management commands take --json and --data-dir DIR`,
    `(default: dataDir of the configuration, /var/lib/diskless).`,
    'Exit status: 0 success, 1 the operation failed, 2 the command line is wrong.',
  ].join('\n');
}

function commandHelp(c: Command): string {
  const lines = [`Usage: ${PROGRAM} ${c.usage}`, '', c.summary + '.'];
  if (c.help) lines.push('', c.help);
  const opts = [...c.optionHelp];
  if (c.json) opts.push(['--json', 'print the result as JSON']);
  opts.push(['-h, --help', 'show this help']);
  const w = Math.max(...opts.map(([o]) => o.length));
  lines.push('', 'Options:', ...opts.map(([o, d]) => `  ${o.padEnd(w)}  ${d}`));
  return lines.join('\n');
}

function usageFailure(io: Io, err: UsageError, json = false): number {
  if (json) io.out(JSON.stringify({ error: { code: err.code, message: err.message } }, null, 2));
  io.err(`${PROGRAM}: ${err.message}`);
  if (err.usage) io.err(`usage: ${PROGRAM} ${err.usage}`);
  return EXIT.USAGE;
}

function failure(io: Io, err: unknown, json: boolean): number {
  const code = isDisklessError(err) ? err.code : undefined;
  const message = err instanceof Error ? err.message : String(err);
  const problems = (err as { problems?: unknown }).problems;
  if (json) io.out(JSON.stringify({ error: { code: code ?? 'INTERNAL', message, ...(Array.isArray(problems) && problems.length ? { problems } : {}) } }, null, 2));
  if (isDisklessError(err)) io.err(`${PROGRAM}: ${message} [${code}]`);
  else io.err(`${PROGRAM}: ${err instanceof Error && err.stack ? err.stack : message}`);
  return EXIT.FAILURE;
}

async function version(): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  for (const rel of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(await readFile(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'diskless') return `${PROGRAM} ${pkg.version}`;
    } catch {
      // try the next layout
    }
  }
  return PROGRAM;
}
