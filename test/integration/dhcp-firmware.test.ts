/**
 * Real firmware requests, byte for byte, replayed into the server in
 * process: every DHCP packet captured from SeaBIOS's iPXE ROM, OVMF's PXE
 * client and the iPXE builds they chainload (test/fixtures/pcap/, captured
 * by scripts/capture-fixtures, and test/fixtures/dhcp/, by capture.sh). The
 * server must decode each one and hand firmware its iPXE binary, and iPXE
 * its script, in full and in proxy mode.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { classifyFrames, readPcapFile } from '../helpers/pcap.js';
import { decodeEncapsulated, decodePacket, encodePacket, readRequestInfo } from '../../src/protocols/dhcp/codec.js';
import { BOOTREQUEST, MESSAGE_TYPES as MT, OPTIONS } from '../../src/protocols/dhcp/constants.js';
import { DefaultBootPolicy } from '../../src/protocols/dhcp/policy.js';
import { DhcpServer } from '../../src/protocols/dhcp/server.js';
import { type SentPacket, TestClock, memorySockets } from './dhcp-harness.js';

const root = fileURLToPath(new URL('../../../test/fixtures/', import.meta.url));

interface Captured {
  file: string;
  bytes: Buffer;
  /** Seconds since the first frame of its capture. */
  at: number;
}

function capturedRequests(): Captured[] {
  const out: Captured[] = [];
  for (const dir of ['pcap', 'dhcp']) {
    for (const name of readdirSync(root + dir).filter((f) => f.endsWith('.pcap')).sort()) {
      const frames = classifyFrames(readPcapFile(`${root}${dir}/${name}`));
      const t0 = frames[0]?.frame.time ?? 0;
      for (const c of frames) {
        if (c.kind !== 'dhcp' || !c.udp) continue;
        const p = decodePacket(Buffer.from(c.udp.payload));
        if (p.op === BOOTREQUEST) out.push({ file: `${dir}/${name}`, bytes: Buffer.from(c.udp.payload), at: c.frame.time - t0 });
      }
    }
  }
  return out;
}

async function serverFor(mode: 'full' | 'proxy', sent: SentPacket[], clock: TestClock): Promise<DhcpServer> {
  const server = new DhcpServer({
    interfaces: [{ name: 'lan', address: '10.77.77.1', mode, bindAddress: '10.77.77.1' }],
    subnets: mode === 'full' ? [{ subnet: '10.77.77.0/24', ranges: [{ start: '10.77.77.100', end: '10.77.77.200' }], authoritative: true }] : [],
    policy: new DefaultBootPolicy({ scriptUrl: 'http://10.77.77.1:8080/boot/{mac}.ipxe', now: clock.now }),
    createSocket: memorySockets(sent),
    now: clock.now,
  });
  await server.listen();
  return server;
}

for (const mode of ['full', 'proxy'] as const) {
  test(`captured firmware requests are answered as the boot chain says (${mode} mode)`, async (t) => {
    const requests = capturedRequests();
    const files = new Set(requests.map((r) => r.file));
    assert.ok(files.size >= 3, `fixtures found: ${[...files].join(', ')}`);
    const sent: SentPacket[] = [];
    const clock = new TestClock();
    const server = await serverFor(mode, sent, clock);
    t.after(() => server.close());
    const seen = { firmware: 0, ipxe: 0 };
    let file = '';
    let start = clock.t;
    const offeredTo = new Map<string, string>();
    for (const r of requests) {
      // Replay at the capture's pace (the per-client rate limit sees real timing); a new file starts a new boot.
      if (r.file !== file) {
        file = r.file;
        start = clock.t + 600_000;
      }
      clock.t = Math.max(clock.t, start + Math.round(r.at * 1000));
      const info = readRequestInfo(decodePacket(r.bytes));
      // The captures' server was 10.77.77.1 or QEMU's 10.0.2.2; point SELECTING requests at this server.
      const p = decodePacket(r.bytes);
      if (info.serverIdentifier) p.options.set(OPTIONS.SERVER_IDENTIFIER, Buffer.from([10, 77, 77, 1]));
      // ...and at the address this server offered that client (the capture's server offered others).
      const offered = offeredTo.get(info.mac);
      if (info.requestedAddress && offered) p.options.set(OPTIONS.REQUESTED_IP_ADDRESS, Buffer.from(offered.split('.').map(Number)));
      const bytes = info.serverIdentifier || info.requestedAddress ? encodePacket({ ...p, options: p.options }) : r.bytes;
      const before = sent.length;
      await server.inject('lan', bytes, { address: '0.0.0.0', port: 68 });
      if (info.messageType !== MT.DHCPDISCOVER && info.messageType !== MT.DHCPREQUEST) continue;
      if (mode === 'proxy' && info.messageType === MT.DHCPREQUEST) {
        assert.equal(sent.length, before + 1, `${r.file}: a REQUEST naming this server is answered`);
      }
      if (sent.length === before) continue;
      assert.equal(sent.length, before + 1, `${r.file}: one reply`);
      const reply = decodePacket(sent.at(-1)!.buf);
      assert.equal(reply.xid, p.xid);
      assert.notEqual(reply.options.get(OPTIONS.DHCP_MESSAGE_TYPE)![0], MT.DHCPNAK, `${r.file}: no NAK`);
      if (info.isIpxe) {
        seen.ipxe++;
        assert.equal(reply.file, `http://10.77.77.1:8080/boot/${info.mac.replace(/:/g, '-')}.ipxe`, `${r.file}: iPXE gets its script`);
      } else {
        seen.firmware++;
        assert.equal(reply.file, info.arch === 0 ? 'undionly.kpxe' : 'ipxe.efi', `${r.file}: firmware arch ${info.arch} gets iPXE`);
      }
      if (mode === 'full') {
        assert.match(reply.yiaddr, /^10\.77\.77\.\d+$/);
        offeredTo.set(info.mac, reply.yiaddr);
        const ipxeOpt = reply.options.get(OPTIONS.IPXE_ENCAPSULATED);
        assert.equal(ipxeOpt !== undefined, info.isIpxe, `${r.file}: 175 only to iPXE`);
        if (ipxeOpt) assert.deepEqual(decodeEncapsulated(ipxeOpt).get(176), Buffer.from([1]));
      } else {
        assert.equal(reply.yiaddr, '0.0.0.0');
        assert.equal(reply.options.get(OPTIONS.VENDOR_CLASS_IDENTIFIER)?.toString(), 'PXEClient');
      }
    }
    assert.ok(seen.firmware >= 2, `firmware requests answered: ${seen.firmware}`);
    assert.ok(seen.ipxe >= 4, `iPXE requests answered: ${seen.ipxe}`);
    assert.equal(server.stats.malformed, 0);
  });
}
