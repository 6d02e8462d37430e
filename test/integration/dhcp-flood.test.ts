/**
 * A DISCOVER flood from thousands of fake MACs, over loopback, against a
 * pool of 20 addresses: real clients, known and unknown, still get an
 * address during the flood and after it; the server's holds stay bounded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FLAG_BROADCAST, MESSAGE_TYPES as MT } from '../../src/protocols/dhcp/constants.js';
import { DefaultBootPolicy } from '../../src/protocols/dhcp/policy.js';
import { DhcpServer } from '../../src/protocols/dhcp/server.js';
import { LoopbackPeer, TestClock, buildRequest, dora, loopbackOnlySockets } from './dhcp-harness.js';

const SERVER = '127.0.0.1';
const POOL = 20;
const FLOOD = 6000;

function fakeMac(i: number): string {
  return `02:fa:${[24, 16, 8, 0].map((s) => ((i >>> s) & 255).toString(16).padStart(2, '0')).join(':')}`;
}

test('a DISCOVER flood cannot starve real clients', async (t) => {
  const violations: string[] = [];
  const clock = new TestClock();
  const client = await LoopbackPeer.open('0.0.0.0');
  const flooder = await LoopbackPeer.open('127.0.7.7');
  const policy = new DefaultBootPolicy({
    scriptUrl: 'http://127.0.0.1/boot/{mac}.ipxe',
    clients: { '52:54:00:00:0f:01': {} },
    maxUnknownRecorded: 256,
    now: clock.now,
  });
  const server = new DhcpServer({
    interfaces: [{ name: 'lo', address: SERVER, mode: 'full', bindAddress: SERVER, broadcastAddress: SERVER }],
    subnets: [{ subnet: '127.0.0.0/16', ranges: [{ start: '127.0.1.1', end: `127.0.1.${POOL}` }] }],
    policy,
    ports: { server: 0, pxe: 0, client: client.port, relay: client.port },
    createSocket: loopbackOnlySockets(violations),
    now: clock.now,
    limits: { maxPendingOffers: 64 },
  });
  await server.listen();
  t.after(async () => {
    await server.close();
    await client.close();
    await flooder.close();
  });
  const port = server.boundPorts('lo').dhcp!;

  // The flood: every packet a new MAC, so per-MAC rate limits do not help; sent in bursts.
  let sentFlood = 0;
  const flood = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      const mac = fakeMac(sentFlood++);
      // Replies go to the client port too; the flooder never requests.
      await flooder.send(buildRequest({ type: MT.DHCPDISCOVER, mac, arch: 0, flags: FLAG_BROADCAST }), port);
      if (i % 16 === 15) await new Promise((r) => setImmediate(r));
    }
  };

  await flood(FLOOD / 2);
  assert.ok(server.pendingOffers() <= POOL, `holds bounded by the pool: ${server.pendingOffers()}`);

  // During the flood: a known client and an unknown client, each a whole exchange.
  const during = flood(FLOOD / 2);
  const known = await dora(client, port, { mac: '52:54:00:00:0f:01', arch: 7 });
  const unknown = await dora(client, port, { mac: '52:54:00:00:0f:02', arch: 0 });
  await during;
  assert.equal(known.ack?.type, MT.DHCPACK, 'known client bound during the flood');
  assert.equal(unknown.ack?.type, MT.DHCPACK, 'unknown client bound during the flood');
  assert.notEqual(known.ack!.packet.yiaddr, unknown.ack!.packet.yiaddr);
  assert.ok(server.stats.received >= FLOOD * 0.5, `the flood reached the server (${server.stats.received} packets)`);
  assert.ok(server.pendingOffers() <= POOL);
  assert.ok(policy.unknownClients().length <= 256, 'the unknown-client record stays bounded');

  // After the flood: the holds run out and a new client is served.
  clock.advance(11_000);
  const after = await dora(client, port, { mac: '52:54:00:00:0f:03', arch: 0 });
  assert.equal(after.ack?.type, MT.DHCPACK, 'a new client bound after the flood');
  const leases = server.leases().filter((l) => l.state === 'bound');
  assert.equal(leases.length, 3, 'only the real clients hold leases');
  assert.deepEqual(violations, []);
  t.diagnostic(`flood of ${sentFlood} DISCOVERs, ${server.stats.received} received, ${server.stats.replies} replies`);
});
