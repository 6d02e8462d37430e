/**
 * The NBD servers the bench compares, each started fresh on a loopback port
 * with its own fresh copy-on-write state, so every run begins from the same
 * golden image and nothing any earlier run wrote.
 *
 * Settings are chosen to be fair rather than fastest: every server keeps its
 * overlay in an ordinary file through the page cache, honours flush (fio sends
 * none), and uses its packaged defaults for threads. Each `settings` string is
 * printed with the results and in bench/README.md.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, statSync, writeFileSync, fsyncSync } from 'node:fs';
import { join } from 'node:path';
import { isAlive, isListening, isListeningBy, ProcessRegistry, readProcStat, sleep, waitFor } from '../lib/proc.js';

/** Limits for starting a server; a server that is not listening by then has failed. */
export const START_TIMEOUT_MS = 20_000;
/** nbd-server forks into the background; its launcher must have returned by then. */
export const LAUNCHER_TIMEOUT_MS = 10_000;

export type Role = 'ours' | 'peer' | 'reference';

export interface ServerContext {
  /** The golden raw image, read-only to every copy-on-write server. */
  base: string;
  /** Fresh empty directory for this run's overlay, config and log; removed after. */
  runDir: string;
  port: number;
  exportName: string;
  /** Connections the server must accept at once (memory test). */
  maxClients: number;
  repoRoot: string;
  registry: ProcessRegistry;
}

export interface StartedServer {
  /** The server's main process; CPU and memory are read for it and its descendants. */
  pid: number;
  logFile: string;
  /** Where its copy-on-write state lives, when it is a directory the bench can look into. */
  overlayDir?: string;
}

export interface ServerSpec {
  id: string;
  /**
   * ours: the project's server. peer: a server doing the same job (a base
   * image behind a copy-on-write overlay) that ratios are taken against.
   * reference: shown for context, never the "best peer".
   */
  role: Role;
  /** Programs that must be installed. */
  commands: readonly string[];
  settings: string;
  start(ctx: ServerContext): Promise<StartedServer>;
}

export class ServerStartError extends Error {
  override readonly name = 'ServerStartError';
}

/** The last lines of a log file, for an error message. */
export function logTail(file: string, lines = 8): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join(' / ');
  } catch {
    return '';
  }
}

/**
 * Starts a server that stays in the foreground, registers its pid, and waits
 * until its port listens. A process that exits first, or never listens,
 * is a start failure carrying the end of its log.
 */
async function startForeground(ctx: ServerContext, command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<StartedServer> {
  const logFile = join(ctx.runDir, 'server.log');
  const fd = openSync(logFile, 'a');
  const child = spawn(command, args, { stdio: ['ignore', fd, fd], env: { ...process.env, ...env } });
  closeSync(fd);
  let exited: string | undefined;
  child.on('exit', (code, sig) => {
    exited = sig ? `signal ${sig}` : `exit code ${code}`;
  });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const pid = child.pid;
  if (pid === undefined) throw new ServerStartError(`${command} could not be started: ${(await spawnError).message}`);
  ctx.registry.add(pid);
  const up = await waitFor(() => exited !== undefined || isListeningBy(pid, ctx.port), START_TIMEOUT_MS);
  if (exited !== undefined) throw new ServerStartError(`${command} ended before listening (${exited}): ${logTail(logFile)}`);
  if (!up) {
    await ctx.registry.stop(pid);
    throw new ServerStartError(`${command} was not listening on its port ${ctx.port} after ${START_TIMEOUT_MS} ms: ${logTail(logFile)}`);
  }
  return { pid, logFile };
}

function run(command: string, args: string[]): void {
  const r = spawnSync(command, args, { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new ServerStartError(`${command} ${args.join(' ')} failed: ${(r.stderr || r.error?.message || '').trim()}`);
}

/**
 * Our server from the build under `root` (bin/diskless and dist/); `root`
 * undefined: this checkout. Other builds (--compare) are references, so a
 * run can set a change beside the build before it.
 */
export function disklessAt(id: string, role: Role, root?: string): ServerSpec {
  return {
    id,
    role,
    commands: [],
    settings:
      '`bin/diskless export BASE --listen 127.0.0.1:PORT --name bench --cow DIR` (DISKLESS_LOG_LEVEL=warn)' +
      (root === undefined ? '' : ` from the build in ${root}`),
    async start(ctx) {
      const top = root ?? ctx.repoRoot;
      const main = join(top, 'dist', 'src', 'cli', 'main.js');
      if (!existsSync(main)) throw new ServerStartError(`not built: ${main} is missing (npx tsc -p tsconfig.json)`);
      const overlayDir = join(ctx.runDir, 'overlay');
      mkdirSync(overlayDir);
      const bin = join(top, 'bin', 'diskless');
      const args = [bin, 'export', ctx.base, '--listen', `127.0.0.1:${ctx.port}`, '--name', ctx.exportName, '--cow', overlayDir];
      const s = await startForeground(ctx, process.execPath, args, { DISKLESS_LOG_LEVEL: 'warn' });
      return { ...s, overlayDir };
    },
  };
}

const ours = disklessAt('diskless', 'ours');

const nbdkitCow: ServerSpec = {
  id: 'nbdkit-cow',
  role: 'peer',
  commands: ['nbdkit'],
  settings: '`nbdkit --filter=cow file BASE` (default 16 threads; cow filter block 64 KiB, overlay in a temporary file under the run directory)',
  start(ctx) {
    // The cow filter keeps its overlay in an unlinked temporary file in $TMPDIR.
    return startForeground(
      ctx,
      'nbdkit',
      ['-f', '--exit-with-parent', '-p', String(ctx.port), '-i', '127.0.0.1', '--filter=cow', 'file', ctx.base],
      { TMPDIR: ctx.runDir },
    );
  },
};

const nbdkitFile: ServerSpec = {
  id: 'nbdkit-file',
  role: 'reference',
  commands: ['nbdkit', 'cp'],
  settings:
    '`nbdkit file COPY` on a fresh `cp --sparse=always` copy of the base (no overlay: the ceiling a plain file server reaches; default 16 threads)',
  start(ctx) {
    const copy = join(ctx.runDir, 'copy.raw');
    run('cp', ['--sparse=always', ctx.base, copy]);
    // Write the copy out now, so its writeback does not land inside the measured run.
    const fd = openSync(copy, 'r+');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    return startForeground(ctx, 'nbdkit', ['-f', '--exit-with-parent', '-p', String(ctx.port), '-i', '127.0.0.1', 'file', copy]);
  },
};

const qemuNbd: ServerSpec = {
  id: 'qemu-nbd',
  role: 'peer',
  commands: ['qemu-nbd', 'qemu-img'],
  settings:
    '`qemu-nbd -f qcow2 -t -e N --cache=writeback --aio=threads` on a fresh qcow2 overlay (`qemu-img create -f qcow2 -b BASE -F raw`, 64 KiB clusters)',
  start(ctx) {
    const overlay = join(ctx.runDir, 'overlay.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', ctx.base, '-F', 'raw', overlay]);
    return startForeground(ctx, 'qemu-nbd', [
      '-f', 'qcow2',
      '-t',
      '-x', ctx.exportName,
      '-b', '127.0.0.1',
      '-p', String(ctx.port),
      '-e', String(ctx.maxClients),
      '--cache=writeback',
      '--aio=threads',
      overlay,
    ]);
  },
};

/**
 * nbd-server has no foreground mode that serves more than one connection
 * (`-d` serves one and exits, and fio's nbd engine connects twice), so it is
 * started as the daemon it is, with a pid file; the bench then owns that pid.
 * Each connection is a forked child with its own diff file in `cowdir`.
 */
function nbdServer(id: string, role: Role, maxThreads: number | undefined): ServerSpec {
  return {
    id,
    role,
    commands: ['nbd-server'],
    settings:
      maxThreads === undefined
        ? '`nbd-server` copyonwrite=true, sparse_cow=false, default max_threads (4): its copy-on-write page map is not thread-safe in 3.24, so this row is for reference only'
        : `\`nbd-server\` copyonwrite=true, sparse_cow=false, max_threads=${maxThreads} (what 3.24 needs to be correct), one forked process and diff file per connection`,
    async start(ctx) {
      const conf = join(ctx.runDir, 'nbd-server.conf');
      const pidFile = join(ctx.runDir, 'nbd-server.pid');
      const logFile = join(ctx.runDir, 'server.log');
      writeFileSync(
        conf,
        [
          '[generic]',
          '    listenaddr = 127.0.0.1',
          `    port = ${ctx.port}`,
          '    allowlist = false',
          ...(maxThreads === undefined ? [] : [`    max_threads = ${maxThreads}`]),
          `[${ctx.exportName}]`,
          `    exportname = ${ctx.base}`,
          '    copyonwrite = true',
          '    sparse_cow = false',
          `    cowdir = ${ctx.runDir}`,
          '',
        ].join('\n'),
      );
      const fd = openSync(logFile, 'a');
      const r = spawnSync('nbd-server', ['-C', conf, '-p', pidFile], { stdio: ['ignore', fd, fd], timeout: LAUNCHER_TIMEOUT_MS });
      closeSync(fd);
      const havePid = await waitFor(() => existsSync(pidFile) && /^\d+\s*$/.test(readFileSync(pidFile, 'utf8')), 2000);
      if (!havePid) throw new ServerStartError(`nbd-server did not write its pid file (launcher status ${r.status}): ${logTail(logFile)}`);
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      if (readProcStat(pid)?.comm !== 'nbd-server') throw new ServerStartError(`pid ${pid} from nbd-server's pid file is not nbd-server`);
      ctx.registry.add(pid);
      const up = await waitFor(() => !isAlive(pid) || isListeningBy(pid, ctx.port), START_TIMEOUT_MS);
      if (!up || !isAlive(pid)) {
        await ctx.registry.stop(pid);
        throw new ServerStartError(`nbd-server is not listening on port ${ctx.port}: ${logTail(logFile)}`);
      }
      return { pid, logFile };
    },
  };
}

export const SERVERS: readonly ServerSpec[] = [
  ours,
  nbdkitCow,
  qemuNbd,
  nbdServer('nbd-server', 'peer', 1),
  nbdServer('nbd-server-mt', 'reference', undefined),
  nbdkitFile,
];

/** Entries (files) under a directory, recursively; how many overlay files a server made. */
export function countFiles(dir: string, limit = 100_000): number {
  let n = 0;
  const stack = [dir];
  while (stack.length > 0 && n < limit) {
    const d = stack.pop() as string;
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      continue;
    }
    for (const name of names) {
      const p = join(d, name);
      try {
        if (statSync(p).isDirectory()) stack.push(p);
        else n += 1;
      } catch {
        // Removed meanwhile.
      }
    }
  }
  return n;
}

/** Lets a just-stopped server's port and files go before the next run starts. */
export async function settleAfterStop(port: number): Promise<void> {
  await waitFor(() => !isListening(port), 2000);
  await sleep(100);
}
