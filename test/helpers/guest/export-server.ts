/**
 * The NBD server the guest talks to, run as its own process on loopback so
 * the test can kill and restart it like a real server, and the host-side
 * checks of what it stored.
 *
 * Kinds:
 * - `diskless` (the default): `bin/diskless export IMAGE --listen
 *   127.0.0.1:PORT --name NAME --cow DIR`, the server under test. Needs the
 *   build (dist/).
 * - `qemu-nbd`: a reference server for telling a harness fault from a server
 *   fault (DISKLESS_KERNEL_NBD_SERVER=qemu-nbd). Its copy-on-write stand-in
 *   is a qcow2 overlay backed by the raw image, kept in the same directory.
 *
 * Readiness is the NBD greeting itself: the server is up when a connection
 * to its port receives the 8 bytes "NBDMAGIC" (proto.md, "Newstyle
 * negotiation"), not merely when the port accepts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';
import { GuestError } from './errors.js';
import { REPO_ROOT } from './initramfs.js';
import type { ExitInfo } from './qemu-guest.js';

export type ExportServerKind = 'diskless' | 'qemu-nbd';
export const EXPORT_SERVER_KINDS: readonly ExportServerKind[] = ['diskless', 'qemu-nbd'];

export const EXPORT_SERVER_LIMITS = {
  /** From spawn to a greeting on the port. */
  startTimeoutMs: 20_000,
  /** From SIGTERM to exit, before SIGKILL. */
  stopGraceMs: 10_000,
  /** Poll interval of the readiness probe. */
  probeIntervalMs: 100,
  /** One probe connection's own limit. */
  probeTimeoutMs: 2_000,
  /** nbdcopy, debugfs, e2fsck on a disk of a few hundred MiB. */
  hostToolTimeoutMs: 60_000,
} as const;

const NBD_GREETING = Buffer.from('NBDMAGIC', 'latin1');

/** The server kind of this run: DISKLESS_KERNEL_NBD_SERVER, default `diskless`. */
export function exportServerKind(): ExportServerKind {
  const v = process.env.DISKLESS_KERNEL_NBD_SERVER ?? 'diskless';
  if (!(EXPORT_SERVER_KINDS as readonly string[]).includes(v)) {
    throw new GuestError('GUEST_SERVER_FAILED', `DISKLESS_KERNEL_NBD_SERVER=${v} is not one of ${EXPORT_SERVER_KINDS.join(', ')}`);
  }
  return v as ExportServerKind;
}

/** A loopback port free at the time of the call. */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const address = s.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      s.close(() => resolvePromise(port));
    });
  });
}

export interface ExportServerOptions {
  kind: ExportServerKind;
  /** The raw disk image exported (never written when cowDir is given). */
  image: string;
  exportName: string;
  port: number;
  /** Writes go to a copy-on-write overlay in this directory, kept across restarts. */
  cowDir: string;
  /** stdout and stderr of the server, appended across restarts. */
  logFile: string;
}

export interface ExportServer {
  readonly kind: ExportServerKind;
  readonly pid: number;
  readonly port: number;
  readonly exportName: string;
  /** nbd://127.0.0.1:PORT/NAME */
  readonly uri: string;
  readonly logFile: string;
  readonly exited: Promise<ExitInfo>;
  /** Sends `signal` (SIGTERM: a clean stop; SIGKILL: a crash); after SIGTERM, SIGKILL follows past the grace time. */
  stop(signal?: NodeJS.Signals): Promise<ExitInfo>;
}

export function serverCommand(o: ExportServerOptions): { command: string; args: string[] } {
  if (o.kind === 'diskless') {
    return {
      command: process.execPath,
      args: [join(REPO_ROOT, 'bin', 'diskless'), 'export', o.image, '--listen', `127.0.0.1:${o.port}`, '--name', o.exportName, '--cow', o.cowDir],
    };
  }
  return {
    command: 'qemu-nbd',
    args: ['--format=qcow2', '--export-name', o.exportName, '--bind', '127.0.0.1', '--port', String(o.port),
      '--persistent', '--shared=8', '--cache=writeback', join(o.cowDir, 'overlay.qcow2')],
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves true when the port answers with the NBD greeting. */
function probeGreeting(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const socket = connect({ host: '127.0.0.1', port });
    let got = Buffer.alloc(0);
    const finish = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolvePromise(ok);
    };
    const timer = setTimeout(() => finish(false), EXPORT_SERVER_LIMITS.probeTimeoutMs);
    socket.on('data', (b: Buffer) => {
      got = Buffer.concat([got, b]);
      if (got.length >= NBD_GREETING.length) finish(got.subarray(0, NBD_GREETING.length).equals(NBD_GREETING));
    });
    socket.on('error', () => finish(false));
    socket.on('close', () => finish(false));
  });
}

function readTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').slice(-2_000);
  } catch {
    return '';
  }
}

async function prepareCow(o: ExportServerOptions): Promise<void> {
  if (o.kind !== 'qemu-nbd') return; // diskless creates (or reopens) its overlay itself
  mkdirSync(o.cowDir, { recursive: true });
  const overlay = join(o.cowDir, 'overlay.qcow2');
  if (!existsSync(overlay)) await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', o.image, overlay]);
}

export async function startExportServer(o: ExportServerOptions): Promise<ExportServer> {
  await prepareCow(o);
  const { command, args } = serverCommand(o);
  const log = openSync(o.logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(command, args, { stdio: ['ignore', log, log], cwd: REPO_ROOT });
  } finally {
    closeSync(log);
  }
  if (child.pid === undefined) {
    const err = await new Promise<Error>((r) => child.once('error', r));
    throw new GuestError('GUEST_SERVER_FAILED', `cannot start ${command}: ${err.message}`);
  }
  const pid = child.pid;
  let exitInfo: ExitInfo | null = null;
  const exited = new Promise<ExitInfo>((r) => child.once('exit', (code, signal) => {
    exitInfo = { code, signal };
    r(exitInfo);
  }));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<ExitInfo> => {
    if (exitInfo) return exitInfo;
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<null>((r) => {
      timer = setTimeout(() => r(null), EXPORT_SERVER_LIMITS.stopGraceMs);
    });
    const first = await Promise.race([exited, grace]);
    clearTimeout(timer);
    if (first) return first;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
    return exited;
  };

  const deadline = Date.now() + EXPORT_SERVER_LIMITS.startTimeoutMs;
  for (;;) {
    if (exitInfo) {
      const e = exitInfo as ExitInfo;
      throw new GuestError('GUEST_SERVER_FAILED', `${command} ${args.join(' ')} exited (${e.code ?? e.signal}) before serving; its log ends:\n${readTail(o.logFile)}`);
    }
    if (await probeGreeting(o.port)) break;
    if (Date.now() >= deadline) {
      await stop('SIGKILL');
      throw new GuestError('GUEST_SERVER_FAILED', `${command} sent no NBD greeting on 127.0.0.1:${o.port} within ${EXPORT_SERVER_LIMITS.startTimeoutMs} ms; its log ends:\n${readTail(o.logFile)}`);
    }
    await sleep(EXPORT_SERVER_LIMITS.probeIntervalMs);
  }
  return {
    kind: o.kind, pid, port: o.port, exportName: o.exportName,
    uri: `nbd://127.0.0.1:${o.port}/${o.exportName}`,
    logFile: o.logFile, exited, stop,
  };
}

// ---------------------------------------------------------------- host tools

export interface ToolResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a host tool to completion, bounded in time; rejects on a non-zero exit unless allowed. */
export function runTool(command: string, args: readonly string[], allowFailure = false): Promise<ToolResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    }, EXPORT_SERVER_LIMITS.hostToolTimeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new GuestError('GUEST_HOST_CHECK_FAILED', `${command}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const r = { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
      const line = `${command} ${args.join(' ')}`;
      if (timedOut) reject(new GuestError('GUEST_HOST_CHECK_FAILED', `${line}: no exit within ${EXPORT_SERVER_LIMITS.hostToolTimeoutMs} ms`));
      else if (code !== 0 && !allowFailure) reject(new GuestError('GUEST_HOST_CHECK_FAILED', `${line}: exit ${code ?? signal}: ${r.stderr.trim().slice(-1000)}`));
      else resolvePromise(r);
    });
  });
}

export function sha256OfFile(path: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const h = createHash('sha256');
    createReadStream(path).on('data', (b) => h.update(b)).on('error', reject).on('end', () => resolvePromise(h.digest('hex')));
  });
}

/** A sparse raw file holding a fresh ext4 file system (4 KiB blocks, inode tables and journal written now, so the guest's kernel starts no lazy init over NBD). */
export async function makeExt4Image(path: string, sizeMiB: number, label = 'dlguest'): Promise<void> {
  await runTool('truncate', ['-s', `${sizeMiB}M`, path]);
  await runTool('mkfs.ext4', ['-F', '-q', '-b', '4096', '-L', label, '-E', 'lazy_itable_init=0,lazy_journal_init=0', path]);
}

export interface DiskSnapshot {
  /** The raw copy read from the server. */
  path: string;
  /** e2fsck -fn found nothing to fix. */
  fsClean: boolean;
  fsckOutput: string;
  /** sha256 of each file asked for, or null when it is not in the file system. */
  files: Record<string, string | null>;
}

/**
 * Reads the whole export through the server with nbdcopy (an independent
 * NBD client), checks the file system with e2fsck -fn (read-only) and
 * extracts files with debugfs, all on the copy.
 */
export async function snapshotExport(uri: string, copyPath: string, files: readonly string[]): Promise<DiskSnapshot> {
  await runTool('nbdcopy', [uri, copyPath]);
  const fsck = await runTool('e2fsck', ['-fn', copyPath], true);
  const out: Record<string, string | null> = {};
  for (const f of files) {
    if (!/^\/[A-Za-z0-9._/-]+$/.test(f)) throw new GuestError('GUEST_HOST_CHECK_FAILED', `unsafe file name ${f}`);
    const dumped = `${copyPath}.${f.replace(/\//g, '_')}`;
    const r = await runTool('debugfs', ['-R', `dump ${f} ${dumped}`, copyPath], true);
    out[f] = existsSync(dumped) && !/not found|File not found/i.test(r.stderr) ? await sha256OfFile(dumped) : null;
  }
  return { path: copyPath, fsClean: fsck.code === 0, fsckOutput: `${fsck.stdout}${fsck.stderr}`.trim(), files: out };
}
