/**
 * Crash consistency through the whole server: a real NBD client (libnbd)
 * writes and flushes (and writes with FUA) through `diskless export --cow`
 * while the server process is killed with SIGKILL at random moments. After
 * each restart every write the server acknowledged as durable (flushed, or
 * FUA) and not overwritten since reads back exactly, and the overlay opens
 * with no repair step. Writes not yet flushed at the kill may or may not
 * have landed; blocks they touched are not checked until written again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireLibnbdPython, runPeer } from '../helpers/nbd-peers.js';

const repo = new URL('../../../', import.meta.url).pathname;
const scripts = join(repo, 'test/interop/scripts');
const ROUNDS = Number(process.env.DISKLESS_CRASH_ROUNDS ?? 50);
const BLOCKS = 4096; // 16 MiB of 4 KiB blocks: small, so blocks are rewritten often

function startServer(base: string, cow: string): Promise<{ child: ChildProcess; uri: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(join(repo, 'bin/diskless'), ['export', base, '--listen', '127.0.0.1:0', '--name', 'crash', '--cow', cow], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DISKLESS_LOG_LEVEL: 'info' },
    });
    let out = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`server did not start: ${out}`)); }, 30_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /"uri":"(nbd:\/\/[^"]+)"/.exec(out) ?? /(nbd:\/\/127\.0\.0\.1:\d+\/crash)/.exec(out);
      if (m) { clearTimeout(timer); resolve({ child, uri: m[1]! }); }
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited (${code}) before listening: ${out}`)); });
  });
}

function killed(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

test(`server SIGKILLed ${ROUNDS} times mid-write: every acknowledged durable write survives`, { timeout: 20 * 60_000 }, async (t) => {
  const python = requireLibnbdPython(t);
  if (!python) return;
  const dir = mkdtempSync(join(tmpdir(), 'dl-nbd-crash-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const base = join(dir, 'base.raw');
  writeFileSync(base, Buffer.alloc(0));
  truncateSync(base, BLOCKS * 4096);
  const baseHash = createHash('sha256').update(readFileSync(base)).digest('hex');
  const baseMtime = statSync(base).mtimeMs;
  const cow = join(dir, 'overlay');

  // block -> seed of its last durable write (-1: zeros of the base)
  const durable = new Map<number, number>();
  const uncertain = new Set<number>();
  let acknowledged = 0;
  let kills = 0;

  for (let round = 0; round < ROUNDS; round++) {
    const { child, uri } = await startServer(base, cow);
    try {
      // Verify what earlier rounds made durable, through the restarted server.
      const expected = [...durable].filter(([b]) => !uncertain.has(b)).map(([b, s]) => `${b} ${s}`).join('\n');
      const v = await runPeer(python, [join(scripts, 'nbd-crash-verify.py'), uri], { input: expected + '\n', timeoutMs: 120_000 });
      assert.equal(v.code, 0, `round ${round}: after restart: ${v.stdout}${v.stderr}`);

      // Write until killed at a random moment.
      const writer = spawn(python, [join(scripts, 'nbd-crash-writer.py'), uri, String(BLOCKS), String(round + 1), '1000000'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let buf = '';
      writer.stdout!.setEncoding('utf8').on('data', (d: string) => {
        buf += d;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const [kind, ...rest] = buf.slice(0, nl).trim().split(' ');
          buf = buf.slice(nl + 1);
          const nums = rest.map(Number);
          if (kind === 'W') {
            // In flight: until acknowledged, the block may hold the old or the new bytes.
            uncertain.add(nums[0]!);
            continue;
          }
          for (let i = 0; i + 1 < nums.length; i += 2) {
            durable.set(nums[i]!, nums[i + 1]!);
            acknowledged++;
          }
          // The writer is sequential: every write announced before this report
          // is covered by it, so the reported blocks are certain again.
          for (let i = 0; i + 1 < nums.length; i += 2) uncertain.delete(nums[i]!);
        }
      });
      const writerDone = new Promise<void>((r) => writer.on('close', () => r()));
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 900));
      await killed(child);
      kills++;
      await writerDone;
    } finally {
      await killed(child);
    }
  }

  const { child, uri } = await startServer(base, cow);
  try {
    const expected = [...durable].filter(([b]) => !uncertain.has(b)).map(([b, s]) => `${b} ${s}`).join('\n');
    const v = await runPeer(python, [join(scripts, 'nbd-crash-verify.py'), uri], { input: expected + '\n', timeoutMs: 120_000 });
    assert.equal(v.code, 0, `final: ${v.stdout}${v.stderr}`);
  } finally {
    await killed(child);
  }
  assert.equal(kills, ROUNDS);
  assert.ok(acknowledged > ROUNDS * 5, `too few acknowledged writes to mean anything: ${acknowledged}`);
  assert.equal(createHash('sha256').update(readFileSync(base)).digest('hex'), baseHash, 'the base image changed');
  assert.equal(statSync(base).mtimeMs, baseMtime, 'the base image mtime changed');
});
