/**
 * Malformed packets on loopback: each is dropped with a log line naming its
 * code, nothing is answered, and the server goes on serving. Then a fuzz of
 * random and mutated packets, in-process, through decode, the boot policy
 * and the server's logic.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { classifyFrames, readPcapFile } from '../helpers/pcap.js';
import { decodePacket, encodePacket, readRequestInfo } from '../../src/protocols/dhcp/codec.js';
import { BOOTREQUEST, HEADER, MESSAGE_TYPES as MT, OPTIONS } from '../../src/protocols/dhcp/constants.js';
import { isDhcpCodecError } from '../../src/protocols/dhcp/errors.js';
import { DefaultBootPolicy } from '../../src/protocols/dhcp/policy.js';
import { DhcpServer } from '../../src/protocols/dhcp/server.js';
import {
  type LogLine,
  LoopbackPeer,
  type SentPacket,
  TestClock,
  buildRequest,
  dora,
  loopbackOnlySockets,
  memoryLogger,
  memorySockets,
  xidOf,
} from './dhcp-harness.js';

const SERVER = '127.0.0.1';

function policy(clock: TestClock): DefaultBootPolicy {
  return new DefaultBootPolicy({
    scriptUrl: 'http://127.0.0.1:8080/boot/{mac}.ipxe',
    bootFiles: { efiArm64: 'arm64.efi', efiIa32: 'ia32.efi' },
    httpBootUrls: { x64: 'http://127.0.0.1/x64.efi' },
    clients: { '52:54:00:00:00:01': { hostName: 'known' } },
    now: clock.now,
  });
}

test('malformed packets are dropped with a log line and no reply; the server keeps serving', async (t) => {
  const clock = new TestClock();
  const logs: LogLine[] = [];
  const violations: string[] = [];
  const client = await LoopbackPeer.open('0.0.0.0');
  const server = new DhcpServer({
    interfaces: [{ name: 'lo', address: SERVER, mode: 'full', bindAddress: SERVER, broadcastAddress: SERVER }],
    subnets: [{ subnet: '127.0.0.0/16', ranges: [{ start: '127.0.1.10', end: '127.0.1.20' }] }],
    policy: policy(clock),
    ports: { server: 0, pxe: 0, client: client.port, relay: client.port },
    createSocket: loopbackOnlySockets(violations),
    now: clock.now,
    logger: memoryLogger(logs),
    limits: { logThrottleMs: 1 },
  });
  await server.listen();
  t.after(async () => {
    await server.close();
    await client.close();
  });
  const port = server.boundPorts('lo').dhcp!;

  const good = buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:00:02', arch: 0 });
  const mutate = (f: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(good);
    f(b);
    return b;
  };
  const overloadLoop = (): Buffer => {
    const b = encodePacket({
      op: BOOTREQUEST,
      xid: 7,
      chaddr: Buffer.from([0x52, 0x54, 0, 0, 0, 3]),
      options: [
        [OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([1])],
        [OPTIONS.OPTION_OVERLOAD, Buffer.from([3])],
      ],
    });
    Buffer.from([52, 1, 3, 255]).copy(b, HEADER.file);
    return b;
  };
  const cases: Array<[string, Buffer]> = [
    ['DHCP_TRUNCATED', good.subarray(0, 100)],
    ['DHCP_TRUNCATED', Buffer.alloc(1)],
    ['DHCP_NO_MAGIC_COOKIE', mutate((b) => b.writeUInt32BE(0, HEADER.cookie))],
    ['DHCP_OPTION_OVERRUN', mutate((b) => (b[HEADER.options + 1] = 250))],
    ['DHCP_OVERLOAD_LOOP', overloadLoop()],
    ['DHCP_TOO_MANY_HOPS', mutate((b) => (b[HEADER.hops] = 200))],
    ['DHCP_BAD_HLEN', mutate((b) => (b[HEADER.hlen] = 20))],
    ['DHCP_BAD_OP', mutate((b) => (b[HEADER.op] = 9))],
    ['DHCP_PACKET_TOO_LARGE', Buffer.concat([good, Buffer.alloc(9000)])],
    ['DHCP_BAD_MESSAGE_TYPE', mutate((b) => (b[HEADER.options + 2] = 77))],
  ];
  for (const [code, bytes] of cases) {
    logs.length = 0;
    clock.advance(10);
    await client.send(bytes, port);
    const reply = await client.next(() => true, 150);
    assert.equal(reply, undefined, `${code}: no reply`);
    const line = logs.find((l) => l.level === 'warn' && l.fields.code === code);
    assert.ok(line, `${code}: logged (${JSON.stringify(logs)})`);
    assert.equal(line.fields.peer, '127.0.0.1');
  }
  assert.equal(server.stats.malformed, cases.length);
  assert.equal(server.stats.replies, 0);
  assert.ok((await dora(client, port, { mac: '52:54:00:00:00:02', arch: 0 })).ack, 'still serving');
  assert.deepEqual(violations, []);
});

test('a client sending too fast is rate limited; reserved clients are not', async (t) => {
  const sent: SentPacket[] = [];
  const clock = new TestClock();
  const server = new DhcpServer({
    interfaces: [{ name: 'lan', address: '10.0.0.1', mode: 'full' }],
    subnets: [{ subnet: '10.0.0.0/24', ranges: [{ start: '10.0.0.10', end: '10.0.0.200' }], reservations: [{ mac: '52:54:00:00:00:aa', address: '10.0.0.5' }] }],
    policy: policy(clock),
    createSocket: memorySockets(sent),
    now: clock.now,
    limits: { clientBurst: 5, clientRatePerSecond: 1 },
  });
  await server.listen();
  t.after(() => server.close());
  const from = { address: '0.0.0.0', port: 68 };
  for (let i = 0; i < 20; i++) await server.inject('lan', buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:00:02', arch: 0 }), from);
  assert.equal(sent.length, 5, 'burst of 5');
  assert.equal(server.stats.rateLimited, 15);
  clock.advance(2000);
  await server.inject('lan', buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:00:02', arch: 0 }), from);
  assert.equal(sent.length, 6, 'refilled');
  for (let i = 0; i < 20; i++) await server.inject('lan', buildRequest({ type: MT.DHCPDISCOVER, mac: '52:54:00:00:00:aa', arch: 0 }), from);
  assert.equal(sent.length, 26, 'reserved MAC is not limited');
});

// ---------------------------------------------------------------------------
// Fuzz

/** xorshift32: reproducible, seed printed on failure. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

function corpus(): Buffer[] {
  const out: Buffer[] = [];
  for (const dir of ['dhcp', 'pcap']) {
    const base = fileURLToPath(new URL(`../../../test/fixtures/${dir}/`, import.meta.url));
    for (const name of readdirSync(base).filter((f) => f.endsWith('.pcap'))) {
      for (const c of classifyFrames(readPcapFile(base + name))) if (c.kind === 'dhcp' && c.udp) out.push(Buffer.from(c.udp.payload));
    }
  }
  const macs = ['52:54:00:00:00:01', '52:54:00:00:00:02', '52:54:00:00:00:aa'];
  for (const mac of macs) {
    for (const type of [MT.DHCPDISCOVER, MT.DHCPREQUEST, MT.DHCPDECLINE, MT.DHCPRELEASE, MT.DHCPINFORM]) {
      for (const arch of [0, 7, 11, 16]) {
        out.push(buildRequest({ type, mac, arch, ipxe: arch === 7, requested: '10.0.0.20', serverId: '10.0.0.1', ciaddr: type === MT.DHCPINFORM ? '10.0.0.20' : '0.0.0.0' }));
      }
    }
  }
  return out;
}

function randomOptions(next: () => number): Array<[number, Buffer]> {
  const codes = [1, 3, 12, 43, 50, 51, 52, 53, 54, 55, 57, 60, 61, 77, 82, 93, 94, 97, 118, 175, next() % 254 + 1];
  const o: Array<[number, Buffer]> = [];
  const n = next() % 12;
  for (let i = 0; i < n; i++) {
    const code = codes[next() % codes.length]!;
    let v: Buffer;
    switch (next() % 4) {
      case 0:
        v = Buffer.from([next() % 12]);
        break;
      case 1:
        v = Buffer.from([10, 0, 0, next() % 256]);
        break;
      case 2:
        v = Buffer.from('PXEClient:Arch:0000' + (next() % 10));
        break;
      default:
        v = Buffer.alloc(next() % 40, next() % 256);
        for (let k = 0; k < v.length; k++) v[k] = next() % 256;
    }
    o.push([code, v]);
  }
  return o;
}

test('fuzz: 100,000 random and mutated packets through decode, policy and server, no crash', async (t) => {
  const seed = Number(process.env.DHCP_FUZZ_SEED ?? Date.now() % 0xffffffff);
  const next = rng(seed);
  const sent: SentPacket[] = [];
  const logs: LogLine[] = [];
  const clock = new TestClock();
  const pol = policy(clock);
  const server = new DhcpServer({
    interfaces: [
      { name: 'full', address: '10.0.0.1', mode: 'full', bindAddress: '10.0.0.1' },
      { name: 'proxy', address: '10.1.0.1', mode: 'proxy', bindAddress: '10.1.0.1' },
    ],
    subnets: [
      { subnet: '10.0.0.0/24', ranges: [{ start: '10.0.0.10', end: '10.0.0.40' }], reservations: [{ mac: '52:54:00:00:00:aa', address: '10.0.0.5' }], authoritative: true },
      { subnet: '10.2.0.0/24', ranges: [{ start: '10.2.0.10', end: '10.2.0.20' }] },
    ],
    policy: pol,
    createSocket: memorySockets(sent, 100),
    now: clock.now,
    logger: memoryLogger(logs, {}, 'warn'),
    limits: { clientBurst: 1e9, clientRatePerSecond: 1e9 },
  });
  await server.listen();
  t.after(() => server.close());

  const seeds = corpus();
  const N = 100_000;
  const started = Date.now();
  let decoded = 0;
  let typedErrors = 0;
  for (let i = 0; i < N; i++) {
    let b: Buffer;
    const kind = next() % 10;
    if (kind === 0) {
      b = Buffer.alloc(next() % 700);
      for (let k = 0; k < b.length; k++) b[k] = next() % 256;
      if (b.length >= 240 && next() % 2) b.writeUInt32BE(0x63825363, 236);
    } else if (kind <= 2) {
      // Structurally valid header, random options (deep into the server logic).
      const mac = Buffer.from([0x52, 0x54, 0, 0, 0, next() % 4]);
      b = encodePacket({
        op: 1,
        xid: next(),
        chaddr: mac,
        ciaddr: next() % 3 === 0 ? `10.0.0.${next() % 50}` : '0.0.0.0',
        giaddr: next() % 5 === 0 ? `10.2.0.${next() % 3}` : '0.0.0.0',
        flags: next() % 2 ? 0x8000 : 0,
        options: [[OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([1 + (next() % 8)])], ...randomOptions(next)],
      });
    } else {
      // A real or built packet with a few random byte flips, truncations or insertions.
      b = Buffer.from(seeds[next() % seeds.length]!);
      const edits = 1 + (next() % 4);
      for (let e = 0; e < edits; e++) {
        const what = next() % 6;
        if (what === 0 && b.length > 0) b = b.subarray(0, next() % b.length);
        else if (what === 1) b = Buffer.concat([b, Buffer.from([next() % 256, next() % 256, next() % 256])]);
        else if (b.length > 0) {
          // Bias towards the header and the first options, where the structure is.
          const pos = next() % 3 === 0 ? 236 + (next() % Math.max(1, b.length - 236)) : next() % b.length;
          if (pos < b.length) b[pos] = next() % 256;
        }
      }
    }
    try {
      const p = decodePacket(b);
      const info = readRequestInfo(p);
      decoded++;
      if (info.messageType !== undefined && p.htype === 1) {
        pol.decide({
          mac: info.mac,
          architectures: info.architectures,
          ...(info.arch !== undefined ? { arch: info.arch } : {}),
          userClasses: info.userClasses,
          hasIpxeOptions: info.ipxeOptions !== undefined,
          isIpxe: info.isIpxe,
          isPxeClient: info.isPxeClient,
          isHttpClient: info.isHttpClient,
          interfaceName: 'full',
          serverAddress: '10.0.0.1',
          mode: 'full',
          pxePort: false,
          messageType: info.messageType,
        });
      }
    } catch (e) {
      if (!isDhcpCodecError(e)) assert.fail(`seed ${seed}, packet ${i}: ${(e as Error).stack}\n${b.toString('hex')}`);
      typedErrors++;
    }
    const target = next() % 3;
    const iface = target === 2 ? 'proxy' : 'full';
    const kindOfPort = target === 2 && next() % 2 ? 'pxe' : 'dhcp';
    await server.inject(iface, b, { address: next() % 2 ? '0.0.0.0' : '10.0.0.77', port: 68 }, kindOfPort);
    if (i % 1000 === 0) clock.advance(next() % 20_000);
  }
  const elapsed = Date.now() - started;
  const crashes = logs.filter((l) => l.level === 'error');
  assert.deepEqual(crashes.map((l) => `${l.msg} ${JSON.stringify(l.fields)}`), [], `seed ${seed}: no handler failure`);
  assert.ok(decoded > 20_000, `seed ${seed}: enough packets reached the server logic (${decoded})`);
  assert.ok(typedErrors > 10_000, `seed ${seed}: and enough were malformed (${typedErrors})`);
  assert.ok(server.stats.replies > 1000, `seed ${seed}: the server answered some (${server.stats.replies})`);
  t.diagnostic(`seed ${seed}: ${N} packets in ${elapsed} ms, ${decoded} decoded, ${typedErrors} typed errors, ${server.stats.replies} replies`);

  // And it still serves a whole exchange.
  sent.length = 0;
  clock.advance(600_000);
  const mac = '52:54:00:00:00:09';
  const d = buildRequest({ type: MT.DHCPDISCOVER, mac, arch: 0 });
  await server.inject('full', d, { address: '0.0.0.0', port: 68 });
  const offer = decodePacket(sent.at(-1)!.buf);
  assert.equal(offer.xid, xidOf(d));
  await server.inject('full', buildRequest({ type: MT.DHCPREQUEST, mac, arch: 0, xid: xidOf(d), requested: offer.yiaddr, serverId: '10.0.0.1' }), { address: '0.0.0.0', port: 68 });
  const ack = decodePacket(sent.at(-1)!.buf);
  assert.equal(ack.options.get(OPTIONS.DHCP_MESSAGE_TYPE)![0], MT.DHCPACK);
});
