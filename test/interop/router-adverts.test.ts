/**
 * `boot.routerAdvertisements` end to end. The boot services run from a
 * configuration file inside a lab namespace (a bridge with a unique-local
 * IPv6 prefix, proxyDHCP on it). A second namespace, joined to the bridge by
 * a veth pair, plays a host on the boot link: its kernel takes router
 * advertisements (accept_ra) and configures an address from the advertised
 * prefix (SLAAC), which is how the test sees an advertisement arrive. Its
 * link comes up only once the server is ready, so its router solicitation
 * goes to a server that is listening.
 *
 * - `on`: the host gets an address in the lab's prefix; dnsmasq (RA-only)
 *   runs as a child of the server and is gone after the server stops.
 * - `off` (the default): no dnsmasq is started, and no address appears
 *   while the host solicits twice (at link up and 4 s later,
 *   RFC 4861 RTR_SOLICITATION_INTERVAL).
 *
 * Nothing leaves the two namespaces; the lab removes both (the second dies
 * with its shell, which the lab tracks and stops).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkConfig } from '../../src/app/config.js';
import { BOOT_SERVER_READY, BOOT_SERVER_SCRIPT } from '../helpers/boot-server.js';
import { createLab, pidAlive, readLog, run, waitForLog, type Lab, type LabChild } from '../helpers/lab.js';
import { requirePeers, requireRoot } from '../helpers/peers.js';

const LIMITS = {
  serverReadyMs: 30_000,
  hostReadyMs: 10_000,
  /** From the host's link up to its address from the advertisement (measured: about 1 s). */
  addressMs: 15_000,
  /** With `off`: how long the host solicits and listens; covers its first two solicitations (4 s apart). */
  quietMs: 6_000,
  /** The server's orderly stop (dnsmasq stopped and awaited first) before it is killed. */
  serverStopMs: 15_000,
  /** dnsmasq gone after the server stopped. */
  senderGoneMs: 5_000,
} as const;

const NBD_PORT = 10809;
/** The host end of the veth pair, inside the host's namespace; the other end is a port of the lab bridge. */
const HOST_LINK = 'vra0';
const BRIDGE_PORT = 'vrab';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A host on the boot link, in a namespace of its own (unshare): it says it
 * runs (so its namespace exists: the veth end is moved into it only then),
 * waits for its end of the veth pair and for `go`, brings the link up (which
 * sends a router solicitation), then prints its global IPv6 addresses every
 * 100 ms, for at most a minute.
 */
async function startHost(lab: Lab): Promise<{ child: LabChild; go: () => Promise<void> }> {
  const goFile = join(lab.dir, 'host-go');
  const script = [
    'echo NS-READY',
    `n=0; while ! ip link show ${HOST_LINK} >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 100 ] && exit 3; sleep 0.1; done`,
    'ip link set lo up',
    // A host (no forwarding) takes advertisements by default; said here so the test does not hang on it.
    `sysctl -qw net.ipv6.conf.${HOST_LINK}.accept_ra=1`,
    'echo HOST-READY',
    `n=0; while [ ! -e ${goFile} ]; do n=$((n+1)); [ $n -gt 600 ] && exit 4; sleep 0.1; done`,
    `ip link set ${HOST_LINK} up`,
    'echo HOST-UP',
    `n=0; while [ $n -lt 600 ]; do ip -6 -o addr show dev ${HOST_LINK} scope global; sleep 0.1; n=$((n+1)); done`,
  ].join('\n');
  const child = lab.spawn('unshare', ['--net', 'sh', '-c', script], { logFile: join(lab.dir, 'host.log') });
  if (child.pid === undefined) throw new Error('could not start the host namespace');
  await waitForLog(child.logFile, /NS-READY/, { timeoutMs: LIMITS.hostReadyMs, process: child });
  await lab.exec('ip', ['link', 'add', BRIDGE_PORT, 'type', 'veth', 'peer', 'name', HOST_LINK, 'netns', String(child.pid)]);
  await lab.exec('ip', ['link', 'set', BRIDGE_PORT, 'master', lab.bridge]);
  await lab.exec('ip', ['link', 'set', BRIDGE_PORT, 'up']);
  await waitForLog(child.logFile, /HOST-READY/, { timeoutMs: LIMITS.hostReadyMs, process: child });
  const go = async (): Promise<void> => {
    writeFileSync(goFile, '');
    await waitForLog(child.logFile, /HOST-UP/, { timeoutMs: LIMITS.hostReadyMs, process: child });
  };
  return { child, go };
}

/** The boot services from a configuration file, as the product reads it: proxyDHCP on the lab bridge, no TFTP. */
async function startServer(lab: Lab, routerAdvertisements: 'on' | 'off' | undefined): Promise<LabChild> {
  const file = join(lab.dir, 'diskless.json');
  writeFileSync(file, JSON.stringify({
    dataDir: join(lab.dir, 'data'),
    http: { host: lab.serverAddress, port: 0 },
    tftp: { enabled: false },
    dhcp: { interfaces: [{ name: lab.bridge, mode: 'proxy', address: lab.serverAddress }] },
    boot: routerAdvertisements === undefined ? {} : { routerAdvertisements },
  }, null, 2));
  const child = lab.spawn(process.execPath, ['--enable-source-maps', BOOT_SERVER_SCRIPT, '--config', file, '--nbd', `${lab.serverAddress}:${NBD_PORT}`], {
    logFile: join(lab.dir, 'boot-server.log'),
  });
  await waitForLog(child.logFile, new RegExp(BOOT_SERVER_READY), { timeoutMs: LIMITS.serverReadyMs, process: child });
  return child;
}

/** Pids of the dnsmasq processes the server started (its children). */
async function dnsmasqChildren(server: LabChild): Promise<number[]> {
  const r = await run('pgrep', ['-P', String(server.pid), '-x', 'dnsmasq'], { allowFailure: true });
  return r.stdout.split('\n').filter(Boolean).map(Number);
}

/** An address of the lab's /64 (fd77:N::1 is the server's): what SLAAC makes from our advertisement. */
function prefixAddress(lab: Lab): RegExp {
  return new RegExp(`inet6 ${lab.serverAddress6.replace(/::1$/, '')}:[0-9a-f:]+/64`);
}

function ready(t: TestContext): boolean {
  return requireRoot(t) && requirePeers(t, 'ip', 'unshare', 'pgrep', 'dnsmasq');
}

test('boot.routerAdvertisements: "off" by default, "on" needs a DHCP interface, nothing else accepted', () => {
  const dhcp = { interfaces: [{ name: 'eth1', mode: 'proxy', address: '10.0.0.1' }] };
  assert.equal(checkConfig({}).config?.boot.routerAdvertisements, 'off');
  assert.equal(checkConfig({ dhcp, boot: { routerAdvertisements: 'on' } }).config?.boot.routerAdvertisements, 'on');
  const none = checkConfig({ boot: { routerAdvertisements: 'on' } });
  assert.equal(none.config, null);
  assert.ok(none.problems.some((p) => p.includes('boot.routerAdvertisements') && p.includes('dhcp.interfaces')), none.problems.join('; '));
  const bad = checkConfig({ dhcp, boot: { routerAdvertisements: true } });
  assert.equal(bad.config, null);
  assert.ok(bad.problems.some((p) => p.includes('boot.routerAdvertisements')), bad.problems.join('; '));
});

test('"on": a host on the boot link gets the prefix from our advertisement; the sender stops with the server', { timeout: 90_000 }, async (t) => {
  if (!ready(t)) return;
  const lab = await createLab({ t });
  const host = await startHost(lab);
  const server = await startServer(lab, 'on');
  const senders = await dnsmasqChildren(server);
  assert.equal(senders.length, 1, 'one dnsmasq, for the one DHCP interface');
  await host.go();
  const [line] = await waitForLog(host.child.logFile, prefixAddress(lab), { timeoutMs: LIMITS.addressMs, process: host.child });
  t.diagnostic(`host address from the advertisement: ${line}`);
  assert.match(readLog(server.logFile), /sending router advertisements/);
  const exit = await lab.stop(server, LIMITS.serverStopMs);
  assert.equal(exit.code, 0, `the server stopped cleanly (${JSON.stringify(exit)})`);
  const deadline = Date.now() + LIMITS.senderGoneMs;
  while (senders.some(pidAlive) && Date.now() < deadline) await sleep(100);
  for (const pid of senders) assert.equal(pidAlive(pid), false, `dnsmasq ${pid} stopped with the server`);
});

test('"off" (the default): no sender runs and a soliciting host gets no advertisement', { timeout: 90_000 }, async (t) => {
  if (!ready(t)) return;
  const lab = await createLab({ t });
  const host = await startHost(lab);
  const server = await startServer(lab, undefined);
  assert.deepEqual(await dnsmasqChildren(server), []);
  await host.go();
  await sleep(LIMITS.quietMs);
  const log = readLog(host.child.logFile);
  assert.doesNotMatch(log, prefixAddress(lab));
  assert.doesNotMatch(log, /inet6 /, 'no global address of any prefix');
  assert.doesNotMatch(readLog(server.logFile), /sending router advertisements/);
  assert.deepEqual(await dnsmasqChildren(server), []);
  await lab.stop(server, LIMITS.serverStopMs);
});
