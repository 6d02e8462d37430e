/**
 * The boot lab itself: a namespace with a bridge, dnsmasq and an HTTP
 * server in it, a BIOS iPXE client in QEMU that fetches its script, and a
 * teardown that leaves no namespace and no process behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { requirePeers, requireRoot } from '../helpers/peers.js';
import { createLab, netnsExists, pidAlive, readLog, LabError } from '../helpers/lab.js';
import { prepareBootRoot, startDnsmasq, startHttpServer } from '../helpers/lab-peers.js';
import { classifyFrames, decodeDhcp, readPcapFile } from '../helpers/pcap.js';

function netnsList(): string {
  return spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
}

test('a lab rejects a subnet that is not a private /24', async () => {
  await assert.rejects(createLab({ subnet: '8.8.8.0/24' }), (e: unknown) => e instanceof LabError && e.code === 'LAB_BAD_SUBNET');
  await assert.rejects(createLab({ subnet: '10.1.2.0/16' }), (e: unknown) => e instanceof LabError && e.code === 'LAB_BAD_SUBNET');
});

test('a lab runs commands in its namespace and kills its processes and their strays on close', { timeout: 60_000 }, async (t) => {
  if (!requireRoot(t) || !requirePeers(t, 'ip', 'sleep', 'sh')) return;
  const lab = await createLab({ t });
  assert.match(lab.netns, /^dl-\d+-\d+$/);
  assert.ok(netnsExists(lab.netns));
  const addr = await lab.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', lab.bridge]);
  assert.match(addr.stdout, new RegExp(`inet ${lab.serverAddress.replace(/\./g, '\\.')}/24`));
  // The namespace sees only its own links: no host interface is reachable from it.
  const links = (await lab.exec('ip', ['-o', 'link', 'show'])).stdout.split('\n').filter(Boolean).map((l) => l.split(':')[1]!.trim().split('@')[0]);
  assert.deepEqual(links.sort(), ['dlbr0', 'lo']);
  const tap = await lab.addTap();
  assert.ok(tap.length <= 15);
  assert.match((await lab.exec('ip', ['-o', 'link', 'show', 'dev', tap])).stdout, /master dlbr0/);

  const sleeper = lab.spawn('sleep', ['600']);
  // sh dies on SIGTERM but its background child does not: close() must find it in the namespace.
  const parent = lab.spawn('sh', ['-c', 'sleep 600 & echo child=$!; wait']);
  await waitFor(() => /child=\d+/.test(readLog(parent.logFile)), 5_000);
  const strayPid = Number(/child=(\d+)/.exec(readLog(parent.logFile))![1]);
  assert.deepEqual(lab.pids().sort(), [sleeper.pid!, parent.pid!].sort());

  const report = await lab.close();
  assert.equal(report.namespaceRemoved, true);
  assert.ok(report.strays.includes(strayPid), `stray ${strayPid} not found: ${JSON.stringify(report)}`);
  for (const pid of [sleeper.pid!, parent.pid!, strayPid]) assert.equal(pidAlive(pid), false, `pid ${pid} still alive`);
  assert.equal(netnsExists(lab.netns), false);
  assert.ok(!netnsList().includes(lab.netns));
  assert.equal(existsSync(lab.dir), false);
  assert.deepEqual(lab.pids(), []);
  // Idempotent, and a closed lab refuses new work.
  assert.deepEqual(await lab.close(), report);
  assert.throws(() => lab.spawn('true'), (e: unknown) => e instanceof LabError && e.code === 'LAB_CLOSED');
});

test('BIOS iPXE in QEMU gets a lease from dnsmasq and fetches its script over HTTP; the lab then leaves nothing', { timeout: 150_000 }, async (t) => {
  if (!requireRoot(t) || !requirePeers(t, 'ip', 'qemu-system-x86_64', 'dnsmasq', 'python3')) return;
  const lab = await createLab({ t });
  const root = prepareBootRoot(lab);
  const http = await startHttpServer(lab, { root: root.httpRoot });
  const dnsmasq = await startDnsmasq(lab, {
    tftpRoot: root.tftpRoot,
    bootScriptUrl: http.url(root.scriptName),
    // Without these iPXE spends ~16 s waiting for proxyDHCP and IPv6 (see test/fixtures/pcap/README.md).
    ipxeNoProxyDhcp: true,
    routerAdvertisements: true,
  });
  const vm = await lab.startQemu({ firmware: 'bios-ipxe' });
  const started = Date.now();
  await vm.waitForSerial(new RegExp(`${root.marker} platform=pcbios mac=${vm.mac}`), 100_000);
  t.diagnostic(`bios-ipxe (${vm.accel}): QEMU start to boot script ran in ${((Date.now() - started) / 1000).toFixed(1)} s`);

  assert.match(readLog(http.child.logFile), new RegExp(`"GET /${root.scriptName} HTTP/1\\.1" 200`));
  assert.match(readLog(dnsmasq.logFile), new RegExp(`DHCPACK\\(${lab.bridge}\\) \\S+ ${vm.mac}`));
  // The NIC's own capture shows iPXE's DHCP (option 77 "iPXE", option 93 = BIOS) and the HTTP request.
  const frames = classifyFrames(readPcapFile(vm.pcap!));
  const requests = frames.filter((f) => f.kind === 'dhcp' && f.udp!.sport === 68).map((f) => decodeDhcp(f.udp!.payload)!);
  assert.ok(requests.length >= 2, 'DISCOVER and REQUEST captured');
  for (const r of requests) {
    assert.equal(r.chaddr, vm.mac);
    assert.equal(r.options.find((o) => o.code === 77)?.data.toString(), 'iPXE');
    assert.deepEqual([...(r.options.find((o) => o.code === 93)?.data ?? [])], [0, 0]);
  }
  assert.ok(frames.some((f) => f.kind === 'http' && f.tcp!.payload.toString('latin1').startsWith(`GET /${root.scriptName} `)));

  const pids = lab.pids();
  assert.deepEqual(pids.sort(), [http.child.pid!, dnsmasq.pid!, vm.pid].sort());
  const report = await lab.close();
  assert.equal(report.namespaceRemoved, true);
  assert.deepEqual(report.strays, []);
  for (const pid of pids) assert.equal(pidAlive(pid), false, `pid ${pid} still alive`);
  assert.ok(!netnsList().includes(lab.netns));
  assert.equal(existsSync(lab.dir), false);
  // No QEMU of this lab survives anywhere (its command line names the namespace).
  const ps = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout;
  assert.ok(!ps.includes(lab.netns), 'a process still names the lab');
  assert.ok(!readFileSync('/proc/net/dev', 'utf8').includes('dltap'), 'a lab tap leaked into the host namespace');
});

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
