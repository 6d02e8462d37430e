/**
 * Real protocol peers (nbdinfo, qemu-img, fio, QEMU...) are installed by
 * scripts/setup. On a developer's machine a missing peer skips its test; in
 * CI (CI=true) a missing peer is a failure, so a skip cannot hide a gap.
 */
import { spawnSync } from 'node:child_process';
import type { TestContext } from 'node:test';

export function havePeer(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

/** Returns true when the test may go on; otherwise skips it (or fails in CI). */
export function requirePeers(t: TestContext, ...commands: string[]): boolean {
  const missing = commands.filter((c) => !havePeer(c));
  if (missing.length === 0) return true;
  const why = `missing peer programs: ${missing.join(', ')} (scripts/setup installs them)`;
  if (process.env.CI === 'true') throw new Error(why);
  t.skip(why);
  return false;
}

/** Root and network namespaces are needed by the lab tests. */
export function requireRoot(t: TestContext): boolean {
  if (process.getuid?.() === 0) return true;
  const why = 'needs root (network namespaces, tap devices)';
  if (process.env.CI === 'true') throw new Error(why);
  t.skip(why);
  return false;
}
