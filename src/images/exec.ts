/**
 * Running the programs the image tooling drives (debugfs, qemu-img,
 * debootstrap, sfdisk, mkfs.ext4, decompressors). Arguments are always an
 * argv array (never a shell string); each child gets its own process group
 * so a timeout or cancellation ends it together with its children.
 */
import { spawn } from 'node:child_process';
import { imagesError } from './errors.js';

export interface RunOptions {
  /** Kill the program (and its process group) after this long. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Written to the program's standard input, then closed. Without it stdin is /dev/null. */
  stdin?: Buffer | string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Called with each line of output (split at \n and \r, for progress meters). */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Our limit on collected stdout; more is an error (use files for large output). */
  maxStdout?: number;
  /** Throw IMAGES_TOOL_FAILED when the exit status is not 0 (default true). */
  check?: boolean;
}

export interface RunResult {
  code: number;
  stdout: Buffer;
  /** The last STDERR_TAIL bytes of standard error. */
  stderr: string;
}

export const DEFAULT_TOOL_TIMEOUT_MS = 120_000;
export const DEFAULT_MAX_STDOUT = 64 * 1024 * 1024;
const STDERR_TAIL = 16 * 1024;

export function run(cmd: string, args: readonly string[], o: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = o.timeoutMs ?? DEFAULT_TOOL_TIMEOUT_MS;
  const maxStdout = o.maxStdout ?? DEFAULT_MAX_STDOUT;
  return new Promise((resolve, reject) => {
    if (o.signal?.aborted) {
      reject(imagesError('IMAGES_ABORTED', `${cmd} was not started: cancelled`));
      return;
    }
    const child = spawn(cmd, args, {
      stdio: [o.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: o.env ?? process.env,
      cwd: o.cwd,
      detached: true,
    });
    const out: Buffer[] = [];
    let outLength = 0;
    let err = '';
    let failure: Error | undefined;
    const partial = { stdout: '', stderr: '' };
    const kill = (why: Error): void => {
      failure ??= why;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => kill(imagesError('IMAGES_TOOL_FAILED', `${cmd} did not finish within ${timeoutMs} ms`)), timeoutMs);
    const onAbort = (): void => kill(imagesError('IMAGES_ABORTED', `${cmd} was cancelled`));
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const lines = (stream: 'stdout' | 'stderr', chunk: Buffer): void => {
      if (!o.onLine) return;
      const text = partial[stream] + chunk.toString('utf8');
      const pieces = text.split(/[\r\n]/);
      partial[stream] = pieces.pop() ?? '';
      for (const p of pieces) if (p.length > 0) o.onLine(p, stream);
    };
    child.stdout!.on('data', (c: Buffer) => {
      outLength += c.length;
      if (outLength > maxStdout) kill(imagesError('IMAGES_TOOL_FAILED', `${cmd} wrote more than ${maxStdout} bytes`));
      else out.push(c);
      lines('stdout', c);
    });
    child.stderr!.on('data', (c: Buffer) => {
      err = (err + c.toString('utf8')).slice(-STDERR_TAIL);
      lines('stderr', c);
    });
    if (o.stdin !== undefined && child.stdin) {
      child.stdin.on('error', () => {}); // the program may exit without reading it all
      child.stdin.end(o.stdin);
    }
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      reject(
        e.code === 'ENOENT'
          ? imagesError('IMAGES_TOOL_MISSING', `${cmd} is not installed (scripts/setup installs it)`, { cause: e })
          : imagesError('IMAGES_TOOL_FAILED', `${cmd} could not be started: ${e.message}`, { cause: e }),
      );
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      for (const s of ['stdout', 'stderr'] as const) if (partial[s] && o.onLine) o.onLine(partial[s], s);
      if (failure) {
        reject(failure);
        return;
      }
      const result: RunResult = { code: code ?? -1, stdout: Buffer.concat(out), stderr: err };
      if ((o.check ?? true) && result.code !== 0) {
        reject(toolFailed(cmd, args, result, sig));
        return;
      }
      resolve(result);
    });
  });
}

export function toolFailed(cmd: string, args: readonly string[], r: RunResult, sig?: NodeJS.Signals | null): Error {
  const tail = r.stderr.trim().split('\n').slice(-8).join('\n');
  const how = sig ? `was killed by ${sig}` : `exited with status ${r.code}`;
  return imagesError('IMAGES_TOOL_FAILED', `${cmd} ${how}${tail ? ':\n' + tail : ''}`, { details: { command: [cmd, ...args], code: r.code } });
}
