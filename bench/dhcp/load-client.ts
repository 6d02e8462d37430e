/**
 * DHCP load client: runs whole DISCOVER/OFFER/REQUEST/ACK exchanges as fast
 * as the server answers, `--concurrency` at a time, each from one of
 * `--macs` made-up MACs (cycled, so clients come back like a room of PCs
 * rebooting), and prints one JSON line of figures. Meant to run inside the
 * client network namespace bench/dhcp/bench.ts creates; it refuses to send
 * anywhere else than the address it is given.
 *
 * Requests are laid out as BIOS PXE firmware sends them (option 93 = 0,
 * vendor class PXEClient), with the broadcast bit set so that the servers
 * broadcast their replies (a made-up MAC has no ARP entry to unicast to).
 * Two sockets on port 68: one bound to 0.0.0.0 hears the broadcasts, one
 * bound to this namespace's address sends (Linux then sends a limited
 * broadcast out of that address's interface without a default route).
 */
import dgram from 'node:dgram';
import { decodePacket, encodePacket } from '../../src/protocols/dhcp/codec.js';
import { BOOTREQUEST, FLAG_BROADCAST, MESSAGE_TYPES as MT, OPTIONS } from '../../src/protocols/dhcp/constants.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
};
const BIND = opt('bind', '');
const DEST = opt('dest', '255.255.255.255');
const SERVER_PORT = Number(opt('server-port', '67'));
const CLIENT_PORT = Number(opt('client-port', '68'));
const SECONDS = Number(opt('seconds', '5'));
const WARMUP = Number(opt('warmup', '1'));
const CONCURRENCY = Number(opt('concurrency', '64'));
const MACS = Number(opt('macs', '20000'));
const TIMEOUT_MS = Number(opt('timeout-ms', '1000'));
const MAC_SEED = Number(opt('mac-seed', '1'));

if (!BIND) {
  console.error('usage: load-client --bind ADDRESS [--dest 255.255.255.255] [--seconds 5] [--concurrency 64] [--macs 20000]');
  process.exit(2);
}

interface Exchange {
  mac: Buffer;
  xid: number;
  stage: 'discover' | 'request';
  started: bigint;
  timer: NodeJS.Timeout;
  request?: Buffer;
}

const PRL = Buffer.from([1, 3, 6, 12, 15, 43, 60, 66, 67]);
const VENDOR = Buffer.from('PXEClient:Arch:00000:UNDI:002001');
const ARCH = Buffer.from([0, 0]);
const NDI = Buffer.from([1, 2, 1]);

function build(type: number, x: Exchange, requested?: Buffer, serverId?: Buffer): Buffer {
  const options: Array<[number, Buffer]> = [[OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([type])]];
  if (requested) options.push([OPTIONS.REQUESTED_IP_ADDRESS, requested]);
  if (serverId) options.push([OPTIONS.SERVER_IDENTIFIER, serverId]);
  options.push(
    [OPTIONS.MAXIMUM_DHCP_MESSAGE_SIZE, Buffer.from([0x05, 0xc0])],
    [OPTIONS.CLIENT_SYSTEM_ARCHITECTURE_TYPE, ARCH],
    [OPTIONS.CLIENT_NETWORK_INTERFACE_IDENTIFIER, NDI],
    [OPTIONS.VENDOR_CLASS_IDENTIFIER, VENDOR],
    [OPTIONS.PARAMETER_REQUEST_LIST, PRL],
    [OPTIONS.CLIENT_IDENTIFIER, Buffer.concat([Buffer.from([1]), x.mac])],
  );
  return encodePacket({ op: BOOTREQUEST, xid: x.xid, flags: FLAG_BROADCAST, chaddr: x.mac, options });
}

function macFor(i: number): Buffer {
  const n = (i % MACS) + MAC_SEED * 1_000_000;
  return Buffer.from([0x02, 0x00, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
}

async function open(address: string): Promise<dgram.Socket> {
  const s = dgram.createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: 4 * 1024 * 1024 });
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(CLIENT_PORT, address, () => {
      s.off('error', reject);
      s.setBroadcast(true);
      resolve();
    });
  });
  return s;
}

const rx = await open('0.0.0.0');
const tx = await open(BIND);

const inflight = new Map<number, Exchange>();
let nextMac = 0;
let xidSeq = (MAC_SEED * 0x01000193) >>> 0;
let measuring = false;
let done = false;
let completed = 0;
let failed = 0;
let naks = 0;
const latencies: number[] = [];

function send(buf: Buffer): void {
  tx.send(buf, SERVER_PORT, DEST, (e) => {
    if (e) console.error(`send: ${e.message}`);
  });
}

function start(): void {
  if (done) return;
  const x: Exchange = {
    mac: macFor(nextMac++),
    xid: (xidSeq = (xidSeq + 0x9e3779b1) >>> 0),
    stage: 'discover',
    started: process.hrtime.bigint(),
    timer: setTimeout(() => timeout(x), TIMEOUT_MS),
  };
  inflight.set(x.xid, x);
  send(build(MT.DHCPDISCOVER, x));
}

function finish(x: Exchange, ok: boolean): void {
  clearTimeout(x.timer);
  inflight.delete(x.xid);
  if (measuring) {
    if (ok) {
      completed++;
      latencies.push(Number(process.hrtime.bigint() - x.started) / 1e6);
    } else failed++;
  }
  start();
}

function timeout(x: Exchange): void {
  if (inflight.get(x.xid) === x) finish(x, false);
}

function onMessage(msg: Buffer): void {
  let p;
  try {
    p = decodePacket(msg);
  } catch {
    return;
  }
  const x = inflight.get(p.xid);
  if (!x || !p.chaddr.subarray(0, 6).equals(x.mac)) return;
  const type = p.options.get(OPTIONS.DHCP_MESSAGE_TYPE)?.[0];
  if (x.stage === 'discover' && type === MT.DHCPOFFER) {
    const serverId = p.options.get(OPTIONS.SERVER_IDENTIFIER);
    if (!serverId) return;
    x.stage = 'request';
    const yiaddr = Buffer.from(p.yiaddr.split('.').map(Number));
    send(build(MT.DHCPREQUEST, x, yiaddr, serverId));
  } else if (x.stage === 'request' && type === MT.DHCPACK) {
    finish(x, true);
  } else if (x.stage === 'request' && type === MT.DHCPNAK) {
    if (measuring) naks++;
    finish(x, false);
  }
}
rx.on('message', onMessage);
tx.on('message', onMessage);

for (let i = 0; i < CONCURRENCY; i++) start();
await new Promise((r) => setTimeout(r, WARMUP * 1000));
measuring = true;
const t0 = process.hrtime.bigint();
await new Promise((r) => setTimeout(r, SECONDS * 1000));
measuring = false;
const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
done = true;
for (const x of inflight.values()) clearTimeout(x.timer);
latencies.sort((a, b) => a - b);
const pct = (q: number): number | null => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]! : null);
console.log(
  JSON.stringify({
    exchanges: completed,
    failed,
    naks,
    seconds: elapsed,
    perSecond: completed / elapsed,
    p50ms: pct(0.5),
    p99ms: pct(0.99),
    concurrency: CONCURRENCY,
    macs: MACS,
  }),
);
rx.close();
tx.close();
