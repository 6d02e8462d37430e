/**
 * Running real NBD peers (nbdinfo, qemu-img, nbdcopy, fio, python3 with
 * libnbd) from tests without blocking the event loop the in-process server
 * runs on.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';

export interface PeerResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a program to completion (killed after timeoutMs) and collects its output. */
export function runPeer(command: string, args: string[], options: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<PeerResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
    child.stdin.end(options.input ?? '');
  });
}

/** Fails with the peer's output when it did not exit 0. */
export function assertPeerOk(r: PeerResult, what: string): void {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code ?? r.signal} after ${r.ms} ms\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
}

let python: string | null | undefined;

/**
 * A Python interpreter that can `import nbd` (python3-libnbd). The first
 * `python3` on PATH may be another installation (pyenv, a virtualenv)
 * without the Debian module, so the system one is tried too.
 */
export function pythonWithLibnbd(): string | null {
  if (python !== undefined) return python;
  python = null;
  for (const candidate of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(candidate, ['-c', 'import nbd'], { stdio: 'ignore' });
    if (r.status === 0) {
      python = candidate;
      break;
    }
  }
  return python;
}

/** Like requirePeers(): skips locally, fails in CI, when python3-libnbd is missing. */
export function requireLibnbdPython(t: TestContext): string | null {
  const p = pythonWithLibnbd();
  if (p) return p;
  const why = 'no python3 can import nbd (python3-libnbd; scripts/setup installs it)';
  if (process.env.CI === 'true') throw new Error(why);
  t.skip(why);
  return null;
}
