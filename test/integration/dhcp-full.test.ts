/**
 * The DHCP server in full mode, on loopback with ephemeral ports: whole
 * exchanges, the REQUEST states of RFC 2131 section 4.3.2, release, decline,
 * inform, NAKs, reservations, relays, persistence, and what each firmware
 * and iPXE is handed.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { decodeEncapsulated } from '../../src/protocols/dhcp/codec.js';
import { FLAG_BROADCAST, MESSAGE_TYPES as MT, OPTIONS } from '../../src/protocols/dhcp/constants.js';
import { InMemoryLeaseStore, type LeaseRecord, type LeaseStore } from '../../src/protocols/dhcp/leases.js';
import { type BootPolicy, DefaultBootPolicy } from '../../src/protocols/dhcp/policy.js';
import { type DhcpEvent, DhcpServer, type DhcpServerOptions } from '../../src/protocols/dhcp/server.js';
import { type LogLine, LoopbackPeer, TestClock, buildRequest, dora, loopbackOnlySockets, memoryLogger, xidOf } from './dhcp-harness.js';

const SERVER = '127.0.0.1';
const RELAY = '127.9.0.1';
const SCRIPT = 'http://127.0.0.1:8080/boot/{mac}.ipxe';

interface Setup {
  server: DhcpServer;
  client: LoopbackPeer;
  relay: LoopbackPeer;
  port: number;
  store: LeaseStore & { get?: (a: string) => LeaseRecord | undefined };
  clock: TestClock;
  events: DhcpEvent[];
  logs: LogLine[];
  policy: DefaultBootPolicy;
}

async function setup(t: TestContext, over: Partial<DhcpServerOptions> & { authoritative?: boolean; store?: LeaseStore; clock?: TestClock } = {}): Promise<Setup> {
  const violations: string[] = [];
  const client = await LoopbackPeer.open('0.0.0.0');
  const relay = await LoopbackPeer.open(RELAY);
  const clock = over.clock ?? new TestClock();
  const store = over.store ?? new InMemoryLeaseStore();
  const logs: LogLine[] = [];
  const policy = new DefaultBootPolicy({
    scriptUrl: SCRIPT,
    bootFiles: { efiArm64: 'ipxe-arm64.efi' },
    httpBootUrls: { x64: 'http://127.0.0.1:8080/firmware/ipxe.efi' },
    clients: { '52:54:00:00:00:07': { efiX64File: 'snponly.efi' } },
    now: clock.now,
  });
  const server = new DhcpServer({
    interfaces: [{ name: 'lo', address: SERVER, mode: 'full', bindAddress: SERVER, broadcastAddress: SERVER }],
    subnets: [
      {
        subnet: '127.0.0.0/16',
        ranges: [{ start: '127.0.1.10', end: '127.0.1.40' }],
        routers: [SERVER],
        dnsServers: ['127.0.0.53'],
        domainName: 'lab.test',
        leaseSeconds: 3600,
        reservations: [{ mac: '52:54:00:00:00:aa', address: '127.0.2.5', hostName: 'pc-reserved' }],
        authoritative: over.authoritative ?? false,
      },
      { subnet: '127.9.0.0/24', ranges: [{ start: '127.9.0.10', end: '127.9.0.20' }], routers: [RELAY], leaseSeconds: 600 },
    ],
    policy,
    leaseStore: store,
    ports: { server: 0, pxe: 0, client: client.port, relay: relay.port },
    createSocket: loopbackOnlySockets(violations),
    now: clock.now,
    logger: memoryLogger(logs),
    ...over,
  });
  const events: DhcpEvent[] = [];
  server.on('event', (e) => events.push(e));
  await server.listen();
  t.after(async () => {
    await server.close();
    await client.close();
    await relay.close();
    assert.deepEqual(violations, [], 'nothing was sent off loopback');
    assert.deepEqual(logs.filter((l) => l.level === 'error').map((l) => l.msg), [], 'no error was logged');
  });
  return { server, client, relay, port: server.boundPorts('lo').dhcp!, store, clock, events, logs, policy };
}

const opt = (r: { packet: { options: Map<number, Buffer> } }, code: number): Buffer | undefined => r.packet.options.get(code);
const ipOpt = (r: { packet: { options: Map<number, Buffer> } }, code: number): string | undefined => {
  const v = opt(r, code);
  return v ? [...v].join('.') : undefined;
};

test('a BIOS PXE client completes DORA: address, network options, boot file, lease stored, events', async (t) => {
  const s = await setup(t);
  const mac = '52:54:00:00:00:01';
  const { offer, ack } = await dora(s.client, s.port, { mac, arch: 0 });
  assert.ok(offer && ack, 'OFFER and ACK');
  assert.equal(offer.type, MT.DHCPOFFER);
  assert.match(offer.packet.yiaddr, /^127\.0\.1\.\d+$/);
  assert.equal(offer.packet.siaddr, SERVER);
  assert.equal(offer.packet.file, 'undionly.kpxe');
  assert.equal(offer.packet.flags & FLAG_BROADCAST, FLAG_BROADCAST);
  assert.equal(ipOpt(offer, OPTIONS.SERVER_IDENTIFIER), SERVER);
  assert.equal(ipOpt(offer, OPTIONS.SUBNET_MASK), '255.255.0.0');
  assert.equal(ipOpt(offer, OPTIONS.ROUTER), SERVER);
  assert.equal(ipOpt(offer, OPTIONS.DOMAIN_NAME_SERVER), '127.0.0.53');
  assert.equal(opt(offer, OPTIONS.DOMAIN_NAME)!.toString(), 'lab.test');
  assert.equal(opt(offer, OPTIONS.IP_ADDRESS_LEASE_TIME)!.readUInt32BE(0), 3600);
  assert.equal(opt(offer, OPTIONS.RENEWAL_TIME_VALUE)!.readUInt32BE(0), 1800);
  assert.equal(opt(offer, OPTIONS.REBINDING_TIME_VALUE)!.readUInt32BE(0), 3150);
  assert.equal(opt(offer, OPTIONS.BOOTFILE_NAME)!.toString(), 'undionly.kpxe', 'requested in option 55');
  assert.equal(opt(offer, OPTIONS.IPXE_ENCAPSULATED), undefined, 'firmware is not iPXE');
  assert.equal(ack.type, MT.DHCPACK);
  assert.equal(ack.packet.yiaddr, offer.packet.yiaddr);
  assert.equal(ack.packet.file, 'undionly.kpxe');
  const lease = (s.store as InMemoryLeaseStore).get(ack.packet.yiaddr)!;
  assert.equal(lease.mac, mac);
  assert.equal(lease.state, 'bound');
  assert.equal(lease.expiresAt, s.clock.t + 3600_000);
  assert.deepEqual(
    s.events.map((e) => e.type),
    ['discover', 'offer', 'request', 'ack'],
  );
  for (const e of s.events) {
    assert.equal(e.mac, mac);
    assert.equal(e.time, s.clock.t);
    assert.equal(e.interface, 'lo');
  }
  assert.deepEqual(s.events[1]!.boot, { kind: 'tftp', nextServer: SERVER, file: 'undionly.kpxe' });
  assert.equal(s.events[3]!.address, ack.packet.yiaddr);
  assert.deepEqual(s.policy.unknownClients().map((u) => u.mac), [mac], 'the policy recorded the unknown MAC');
});

test('each firmware is handed its binary and iPXE its script, per arch', async (t) => {
  const s = await setup(t);
  const cases: Array<{ arch: number; mac: string; firmware: string; http?: boolean }> = [
    { arch: 0, mac: '52:54:00:00:01:00', firmware: 'undionly.kpxe' },
    { arch: 7, mac: '52:54:00:00:01:07', firmware: 'ipxe.efi' },
    { arch: 7, mac: '52:54:00:00:00:07', firmware: 'snponly.efi' },
    { arch: 9, mac: '52:54:00:00:01:09', firmware: 'ipxe.efi' },
    { arch: 11, mac: '52:54:00:00:01:11', firmware: 'ipxe-arm64.efi' },
    { arch: 16, mac: '52:54:00:00:01:16', firmware: 'http://127.0.0.1:8080/firmware/ipxe.efi', http: true },
  ];
  for (const c of cases) {
    const fw = await dora(s.client, s.port, {
      mac: c.mac,
      arch: c.arch,
      ...(c.http ? { vendorClass: 'HTTPClient:Arch:00016:UNDI:003000' } : {}),
    });
    assert.ok(fw.ack, `firmware arch ${c.arch} bound`);
    assert.equal(fw.offer!.packet.file, c.firmware, `firmware arch ${c.arch}`);
    assert.equal(fw.ack!.packet.file, c.firmware);
    assert.equal(opt(fw.offer!, OPTIONS.VENDOR_CLASS_IDENTIFIER)?.toString(), c.http ? 'HTTPClient' : undefined);

    const ipxe = await dora(s.client, s.port, { mac: c.mac, arch: c.arch === 16 ? 7 : c.arch, ipxe: true });
    const url = `http://127.0.0.1:8080/boot/${c.mac.replace(/:/g, '-')}.ipxe`;
    assert.equal(ipxe.offer!.packet.file, url, `iPXE arch ${c.arch} gets its script`);
    assert.equal(ipxe.ack!.packet.file, url);
    assert.equal(ipxe.ack!.packet.yiaddr, fw.ack!.packet.yiaddr, 'same client, same address');
    for (const r of [ipxe.offer!, ipxe.ack!]) {
      const enc = decodeEncapsulated(opt(r, OPTIONS.IPXE_ENCAPSULATED)!);
      assert.deepEqual(enc.get(176), Buffer.from([1]), 'iPXE: no proxyDHCP wait (175.176 = 1)');
    }
  }
  // IA32 UEFI has no binary configured: an address, no boot file.
  const ia32 = await dora(s.client, s.port, { mac: '52:54:00:00:01:06', arch: 6 });
  assert.ok(ia32.ack);
  assert.equal(ia32.ack.packet.file, '');
  assert.equal(opt(ia32.ack, OPTIONS.BOOTFILE_NAME), undefined);
});

test('RENEWING and REBINDING extend the lease; the ACK is unicast to ciaddr', async (t) => {
  const s = await setup(t);
  const mac = '52:54:00:00:00:02';
  const { ack } = await dora(s.client, s.port, { mac, arch: 0 });
  const addr = ack!.packet.yiaddr;
  s.clock.advance(1800_000); // T1
  const renew = buildRequest({ type: MT.DHCPREQUEST, mac, ciaddr: addr });
  await s.client.send(renew, s.port);
  const r1 = await s.client.reply(xidOf(renew));
  assert.equal(r1?.type, MT.DHCPACK);
  assert.equal(r1!.packet.yiaddr, addr);
  assert.equal(r1!.packet.ciaddr, addr, 'ciaddr copied (RFC 2131 table 3)');
  assert.equal(r1!.socket, '0.0.0.0');
  assert.equal((s.store as InMemoryLeaseStore).get(addr)!.expiresAt, s.clock.t + 3600_000);

  s.clock.advance(3150_000); // T2, broadcast
  const rebind = buildRequest({ type: MT.DHCPREQUEST, mac, ciaddr: addr, flags: FLAG_BROADCAST });
  await s.client.send(rebind, s.port);
  const r2 = await s.client.reply(xidOf(rebind));
  assert.equal(r2?.type, MT.DHCPACK);
  assert.equal((s.store as InMemoryLeaseStore).get(addr)!.expiresAt, s.clock.t + 3600_000);

  // Another client claiming that bound address gets a NAK.
  const thief = buildRequest({ type: MT.DHCPREQUEST, mac: '52:54:00:00:00:66', ciaddr: addr });
  await s.client.send(thief, s.port);
  assert.equal((await s.client.reply(xidOf(thief)))?.type, MT.DHCPNAK);
});

test('DHCPRELEASE frees the address; the client gets it back; DHCPDECLINE sets it aside', async (t) => {
  const s = await setup(t);
  const a = '52:54:00:00:00:03';
  const { ack } = await dora(s.client, s.port, { mac: a, arch: 0 });
  const addr = ack!.packet.yiaddr;
  await s.client.send(buildRequest({ type: MT.DHCPRELEASE, mac: a, ciaddr: addr, serverId: SERVER }), s.port);
  await waitFor(() => (s.store as InMemoryLeaseStore).get(addr)?.state === 'released');
  assert.ok(s.events.some((e) => e.type === 'release' && e.address === addr));
  const again = await dora(s.client, s.port, { mac: a, arch: 0 });
  assert.equal(again.ack!.packet.yiaddr, addr, 'same address after release');

  // Decline: the client found the address in use.
  const b = '52:54:00:00:00:04';
  const d = buildRequest({ type: MT.DHCPDISCOVER, mac: b, arch: 0, flags: FLAG_BROADCAST });
  await s.client.send(d, s.port);
  const offer = await s.client.reply(xidOf(d), MT.DHCPOFFER);
  const bad = offer!.packet.yiaddr;
  await s.client.send(buildRequest({ type: MT.DHCPDECLINE, mac: b, requested: bad, serverId: SERVER }), s.port);
  await waitFor(() => (s.store as InMemoryLeaseStore).get(bad)?.state === 'declined');
  const next = await dora(s.client, s.port, { mac: b, arch: 0 });
  assert.ok(next.ack);
  assert.notEqual(next.ack.packet.yiaddr, bad, 'a declined address is not offered again');
  // Declining someone else's address is ignored.
  await s.client.send(buildRequest({ type: MT.DHCPDECLINE, mac: '52:54:00:00:00:99', requested: addr, serverId: SERVER }), s.port);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal((s.store as InMemoryLeaseStore).get(addr)?.state, 'bound');
});

test('DHCPINFORM: configuration without an address or lease, unicast to ciaddr', async (t) => {
  const s = await setup(t);
  const inform = buildRequest({ type: MT.DHCPINFORM, mac: '52:54:00:00:00:05', ciaddr: '127.0.3.3', arch: 0 });
  await s.client.send(inform, s.port);
  const r = await s.client.reply(xidOf(inform));
  assert.equal(r?.type, MT.DHCPACK);
  assert.equal(r!.packet.yiaddr, '0.0.0.0');
  assert.equal(r!.packet.ciaddr, '127.0.3.3');
  assert.equal(opt(r!, OPTIONS.IP_ADDRESS_LEASE_TIME), undefined);
  assert.equal(ipOpt(r!, OPTIONS.SUBNET_MASK), '255.255.0.0');
  assert.equal(r!.packet.file, 'undionly.kpxe');
});

test('NAKs and silences of RFC 2131 section 4.3.2', async (t) => {
  const s = await setup(t);
  const a = '52:54:00:00:00:10';
  const { ack } = await dora(s.client, s.port, { mac: a, arch: 0 });
  const addr = ack!.packet.yiaddr;

  // SELECTING for an address bound to someone else.
  const sel = buildRequest({ type: MT.DHCPREQUEST, mac: '52:54:00:00:00:11', requested: addr, serverId: SERVER });
  await s.client.send(sel, s.port);
  const nak = await s.client.reply(xidOf(sel));
  assert.equal(nak?.type, MT.DHCPNAK);
  assert.equal(nak!.packet.yiaddr, '0.0.0.0');
  assert.ok(opt(nak!, OPTIONS.MESSAGE)!.toString().length > 0);

  // INIT-REBOOT on the wrong network.
  const wrongNet = buildRequest({ type: MT.DHCPREQUEST, mac: a, requested: '10.1.2.3' });
  await s.client.send(wrongNet, s.port);
  assert.equal((await s.client.reply(xidOf(wrongNet)))?.type, MT.DHCPNAK);

  // INIT-REBOOT for another address than the client's record.
  const other = buildRequest({ type: MT.DHCPREQUEST, mac: a, requested: '127.0.1.39' });
  await s.client.send(other, s.port);
  assert.equal((await s.client.reply(xidOf(other)))?.type, MT.DHCPNAK);

  // INIT-REBOOT for its own address: confirmed.
  const own = buildRequest({ type: MT.DHCPREQUEST, mac: a, requested: addr });
  await s.client.send(own, s.port);
  assert.equal((await s.client.reply(xidOf(own)))?.type, MT.DHCPACK);

  // INIT-REBOOT with no record, not authoritative: silence.
  const stranger = buildRequest({ type: MT.DHCPREQUEST, mac: '52:54:00:00:00:12', requested: '127.0.1.30' });
  await s.client.send(stranger, s.port);
  assert.equal(await s.client.reply(xidOf(stranger), undefined, 300), undefined);

  // SELECTING another server: silence, and our offer is withdrawn.
  const d = buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:00:13', arch: 0 });
  await s.client.send(d, s.port);
  await s.client.reply(xidOf(d), MT.DHCPOFFER);
  const offersBefore = s.server.pendingOffers();
  const elsewhere = buildRequest({ type: MT.DHCPREQUEST, mac: '52:54:00:00:00:13', requested: '127.0.1.20', serverId: '127.0.0.2', xid: xidOf(d) });
  await s.client.send(elsewhere, s.port);
  assert.equal(await s.client.reply(xidOf(d), undefined, 300), undefined);
  assert.equal(s.server.pendingOffers(), offersBefore - 1);

  // A REQUEST in no state (no 54, no 50, no ciaddr): dropped.
  const none = buildRequest({ type: MT.DHCPREQUEST, mac: a });
  await s.client.send(none, s.port);
  assert.equal(await s.client.reply(xidOf(none), undefined, 300), undefined);
});

test('an authoritative subnet confirms unknown INIT-REBOOT clients on free addresses and NAKs taken ones', async (t) => {
  const s = await setup(t, { authoritative: true });
  const taken = (await dora(s.client, s.port, { mac: '52:54:00:00:00:20', arch: 0 })).ack!.packet.yiaddr;
  const free = buildRequest({ type: MT.DHCPREQUEST, mac: '52:54:00:00:00:21', requested: '127.0.1.33' });
  await s.client.send(free, s.port);
  const ok = await s.client.reply(xidOf(free));
  assert.equal(ok?.type, MT.DHCPACK);
  assert.equal(ok!.packet.yiaddr, '127.0.1.33');
  const clash = buildRequest({ type: MT.DHCPREQUEST, mac: '52:54:00:00:00:22', requested: taken });
  await s.client.send(clash, s.port);
  assert.equal((await s.client.reply(xidOf(clash)))?.type, MT.DHCPNAK);
});

test('reservations: the reserved MAC gets its address and host name; nobody else does', async (t) => {
  const s = await setup(t);
  const { offer, ack } = await dora(s.client, s.port, { mac: '52:54:00:00:00:aa', arch: 7 });
  assert.equal(offer!.packet.yiaddr, '127.0.2.5');
  assert.equal(ack!.packet.yiaddr, '127.0.2.5');
  assert.equal(opt(ack!, OPTIONS.HOST_NAME)!.toString(), 'pc-reserved');
  const steal = buildRequest({ type: MT.DHCPREQUEST, mac: '52:54:00:00:00:ab', requested: '127.0.2.5', serverId: SERVER });
  await s.client.send(steal, s.port);
  assert.equal((await s.client.reply(xidOf(steal)))?.type, MT.DHCPNAK);
  // A reserved client asking for some other address is sent back to its own.
  const wrong = buildRequest({ type: MT.DHCPREQUEST, mac: '52:54:00:00:00:aa', requested: '127.0.1.15', serverId: SERVER });
  await s.client.send(wrong, s.port);
  assert.equal((await s.client.reply(xidOf(wrong)))?.type, MT.DHCPNAK);
});

test('relayed requests: the relay\'s subnet, replies to giaddr on the relay port, option 82 echoed', async (t) => {
  const s = await setup(t);
  const mac = '52:54:00:00:00:30';
  const relayInfo = Buffer.from([1, 6, 0x70, 0x6f, 0x72, 0x74, 0x2d, 0x37]);
  const d = buildRequest({ type: MT.DHCPDISCOVER, mac, arch: 0, giaddr: RELAY, relayInfo });
  await s.relay.send(d, s.port);
  const offer = await s.relay.reply(xidOf(d), MT.DHCPOFFER);
  assert.ok(offer, 'OFFER came back to the relay agent');
  assert.match(offer.packet.yiaddr, /^127\.9\.0\.(1[0-9]|20)$/);
  assert.equal(offer.packet.giaddr, RELAY);
  assert.equal(ipOpt(offer, OPTIONS.ROUTER), RELAY);
  assert.deepEqual(opt(offer, OPTIONS.RELAY_AGENT_INFORMATION), relayInfo);
  assert.equal([...offer.packet.options.keys()].at(-1), OPTIONS.RELAY_AGENT_INFORMATION);
  assert.equal(opt(offer, OPTIONS.IP_ADDRESS_LEASE_TIME)!.readUInt32BE(0), 600);
  const r = buildRequest({ type: MT.DHCPREQUEST, mac, arch: 0, giaddr: RELAY, xid: xidOf(d), requested: offer.packet.yiaddr, serverId: SERVER, relayInfo });
  await s.relay.send(r, s.port);
  assert.equal((await s.relay.reply(xidOf(d), MT.DHCPACK))?.packet.yiaddr, offer.packet.yiaddr);
  assert.equal(s.events.find((e) => e.type === 'ack')!.relay, RELAY);
  // A NAK through the relay has the broadcast bit set (RFC 2131 section 4.3.2).
  const bad = buildRequest({ type: MT.DHCPREQUEST, mac, giaddr: RELAY, requested: '127.0.1.10' });
  await s.relay.send(bad, s.port);
  const nak = await s.relay.reply(xidOf(bad));
  assert.equal(nak?.type, MT.DHCPNAK);
  assert.equal(nak!.packet.flags & FLAG_BROADCAST, FLAG_BROADCAST);
  assert.equal(nak!.packet.giaddr, RELAY);
});

test('leases survive a restart through the store', async (t) => {
  const store = new InMemoryLeaseStore();
  const clock = new TestClock();
  const first = await setup(t, { store, clock });
  const mac = '52:54:00:00:00:40';
  const addr = (await dora(first.client, first.port, { mac, arch: 0 })).ack!.packet.yiaddr;
  await first.server.close();
  const second = await setup(t, { store, clock });
  const renew = buildRequest({ type: MT.DHCPREQUEST, mac, ciaddr: addr });
  await second.client.send(renew, second.port);
  assert.equal((await second.client.reply(xidOf(renew)))?.type, MT.DHCPACK, 'the new server knows the binding');
  const d = await dora(second.client, second.port, { mac: '52:54:00:00:00:41', arch: 0, requested: addr });
  assert.notEqual(d.ack!.packet.yiaddr, addr, 'and does not hand it to anyone else');
});

test('a failing lease store means no DHCPACK, and the server keeps serving', async (t) => {
  let fail = true;
  const inner = new InMemoryLeaseStore();
  const store: LeaseStore = {
    load: () => inner.load(),
    save: async (l) => {
      if (fail) throw new Error('disk full');
      inner.save(l);
    },
    remove: (a) => inner.remove(a),
  };
  const s = await setup(t, { store });
  const first = await dora(s.client, s.port, { mac: '52:54:00:00:00:50', arch: 0 });
  assert.ok(first.offer);
  assert.equal(first.ack, undefined);
  assert.equal(s.server.stats.storeErrors, 1);
  assert.ok(s.logs.some((l) => l.level === 'error' && l.fields.code === 'DHCP_STORE_FAILED'));
  s.logs.length = 0;
  fail = false;
  const second = await dora(s.client, s.port, { mac: '52:54:00:00:00:50', arch: 0 });
  assert.equal(second.ack?.type, MT.DHCPACK);
});

test('a slow or broken policy drops the packet, not the server', async (t) => {
  let mode: 'hang' | 'throw' | 'garbage' | 'unsafe' | 'ok' = 'hang';
  const policy: BootPolicy = {
    decide: () => {
      if (mode === 'hang') return new Promise(() => {});
      if (mode === 'throw') throw new Error('catalogue down');
      if (mode === 'garbage') return { action: 'tftp' } as never;
      if (mode === 'unsafe') return { action: 'http', url: 'http://x/a b\n', known: true };
      return { action: 'tftp', bootFile: 'undionly.kpxe', known: true };
    },
  };
  const s = await setup(t, { policy, limits: { policyTimeoutMs: 100 } });
  for (const m of ['hang', 'throw', 'garbage', 'unsafe'] as const) {
    mode = m;
    const d = buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:00:60', arch: 0 });
    await s.client.send(d, s.port);
    assert.equal(await s.client.reply(xidOf(d), undefined, 400), undefined, `policy ${m}: no reply`);
  }
  assert.equal(s.server.stats.policyErrors, 4);
  mode = 'ok';
  assert.ok((await dora(s.client, s.port, { mac: '52:54:00:00:00:60', arch: 0 })).ack);
});

test('configuration problems are all listed at once', () => {
  const policy = new DefaultBootPolicy({ scriptUrl: SCRIPT });
  assert.throws(
    () =>
      new DhcpServer({
        policy,
        interfaces: [
          { name: 'a', address: '10.0.0.1', mode: 'full' },
          { name: 'a', address: '10.0.1.1', mode: 'full' },
        ],
        subnets: [
          { subnet: '10.0.0.0/24', ranges: [{ start: '10.0.0.50', end: '10.0.0.10' }], reservations: [{ mac: 'zz', address: '10.0.0.5' }] },
          { subnet: '10.0.0.0/25' },
          { subnet: '10.0.0.1/24' },
        ],
      }),
    (e: Error & { code?: string }) => {
      assert.equal(e.code, 'DHCP_CONFIG_INVALID');
      for (const part of ['used twice', 'start is after end', 'not a MAC', 'overlaps', 'CIDR', 'second interface receiving broadcasts', 'full mode needs a subnet']) {
        assert.ok(e.message.includes(part), `lists "${part}": ${e.message}`);
      }
      return true;
    },
  );
});

async function waitFor(cond: () => boolean, ms = 1500): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
