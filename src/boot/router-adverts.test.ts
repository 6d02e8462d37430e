import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RouterAdvertiser, routerAdvertArgs } from './router-adverts.js';

let dir: string;

/** A stand-in for dnsmasq: records its arguments and pid, prints what the script says, then behaves as told. */
function fakeDnsmasq(body: string): string {
  const path = join(dir, `fake-${Math.random().toString(16).slice(2)}.sh`);
  writeFileSync(path, `#!/bin/sh\necho "$@" > ${dir}/args\necho $$ > ${dir}/pid\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'diskless-ra-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

test('dnsmasq is asked for advertisements only: no DHCPv4, no DNS, no pid file, router lifetime 0', () => {
  const args = routerAdvertArgs('br0', 30);
  assert.ok(args.includes('--port=0'));
  assert.ok(args.includes('--pid-file='));
  assert.ok(args.includes('--dhcp-range=::,constructor:br0,ra-only'));
  assert.ok(args.includes('--ra-param=br0,30,0'));
  assert.ok(!args.some((a) => /dhcp-range=\d+\./.test(a)), 'no IPv4 range');
  assert.throws(() => routerAdvertArgs('br0 --dhcp-range=1.2.3.4'));
  assert.throws(() => routerAdvertArgs('br0', 2));
});

test('start resolves once dnsmasq advertises; close stops it', async () => {
  const bin = fakeDnsmasq('echo "dnsmasq-dhcp: router advertisement on fd00::, constructed for br0" >&2\nexec sleep 30');
  const ra = new RouterAdvertiser({ interface: 'br0', binary: bin });
  await ra.start();
  const pid = Number(readFileSync(join(dir, 'pid'), 'utf8'));
  assert.ok(alive(pid));
  assert.match(readFileSync(join(dir, 'args'), 'utf8'), /--enable-ra/);
  await ra.close();
  assert.equal(alive(pid), false);
  await ra.close();
  await assert.rejects(ra.start(), /closed/);
});

test('a dnsmasq that cannot advertise fails the start with its own words', async () => {
  const bin = fakeDnsmasq('echo "dnsmasq: unknown interface br0" >&2\nexit 2');
  await assert.rejects(new RouterAdvertiser({ interface: 'br0', binary: bin }).start(), /exited \(2\).*unknown interface br0/);
  await assert.rejects(new RouterAdvertiser({ interface: 'br0', binary: join(dir, 'missing') }).start(), /ENOENT/);
});
