/**
 * Metrics end to end on loopback: real NBD, TFTP, DHCP and HTTP servers
 * carry known traffic, /metrics is scraped over HTTP and parsed strictly,
 * and every figure must equal what the test did.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HttpServer } from '../../src/api/http-server.js';
import { Catalogue } from '../../src/app/catalogue.js';
import { clientExportName } from '../../src/app/export-names.js';
import type { BootService } from '../../src/boot/boot-service.js';
import { MESSAGE_TYPES as MT } from '../../src/protocols/dhcp/constants.js';
import { InMemoryLeaseStore } from '../../src/protocols/dhcp/leases.js';
import { DefaultBootPolicy } from '../../src/protocols/dhcp/policy.js';
import { DhcpServer } from '../../src/protocols/dhcp/server.js';
import { COMMANDS as C, ERRORS as E } from '../../src/protocols/nbd/constants.js';
import { NbdServer } from '../../src/protocols/nbd/server.js';
import { tftpGet } from '../../src/protocols/tftp/client.js';
import { FolderFileProvider } from '../../src/protocols/tftp/file-provider.js';
import { TftpServer } from '../../src/protocols/tftp/server.js';
import { MemoryDevice } from '../../src/storage/memory-device.js';
import { HttpMetrics, httpMetricsHook, metricsRoutes } from '../../src/metrics/http.js';
import { TimedExportResolver } from '../../src/metrics/nbd-latency.js';
import { PROMETHEUS_CONTENT_TYPE } from '../../src/metrics/registry.js';
import { collectServerMetrics, type CatalogueSource } from '../../src/metrics/server-metrics.js';
import { NbdTestClient, destroyAllSockets } from '../helpers/nbd-client.js';
import { MapResolver, patternBytes } from '../helpers/nbd.js';
import { until } from '../helpers/nbd-devices.js';
import { parsePrometheusText, samplesOf, valueOf, type ParsedFamily } from '../helpers/prometheus-text.js';
import { LoopbackPeer, buildRequest, dora, loopbackOnlySockets } from './dhcp-harness.js';

const HOST = '127.0.0.1';
const KiB = 1024;
const MAC_A = '52:54:00:00:00:0a';
const TOKEN_A = '0123456789abcdef0123456789abcdef';
const EXPORT_A = clientExportName(MAC_A, TOKEN_A);
const IMAGE_EXPORT = 'image/debian12/1';

// The ClientView of the catalogue is what the collector reads.
const _catalogueFits: CatalogueSource = null as unknown as Catalogue;
void _catalogueFits;

const noBoot: BootService = {
  script: async (r) => `#!ipxe\necho ${r.mac}\n`,
  bootFile: async () => null,
  firmwareFile: async () => null,
  osUp: async () => false,
};

async function scrape(port: number): Promise<{ text: string; families: Map<string, ParsedFamily> }> {
  const res = await fetch(`http://${HOST}:${port}/metrics`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), PROMETHEUS_CONTENT_TYPE);
  const text = await res.text();
  return { text, families: parsePrometheusText(text) };
}

test('/metrics reports exactly the NBD, TFTP, DHCP and HTTP traffic made', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'diskless-metrics-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  // ---- catalogue: three clients, all new
  const catalogue = Catalogue.open(join(dir, 'data'));
  t.after(() => catalogue.close());
  catalogue.store.images.create('debian12');
  for (const mac of [MAC_A, '52:54:00:00:00:0b', '52:54:00:00:00:0c']) catalogue.addClient({ mac, image: 'debian12' });

  // ---- NBD: a client export and an image export, timed
  const resolver = new TimedExportResolver(new MapResolver({
    [EXPORT_A]: { device: new MemoryDevice(4 * 1024 * KiB) },
    [IMAGE_EXPORT]: { device: new MemoryDevice(1024 * KiB, { readOnly: true }) },
  }));
  const nbd = new NbdServer({ resolver });
  const nbdPort = (await nbd.listen(0, HOST)).port;
  t.after(() => nbd.close());

  // ---- TFTP over a folder
  const root = join(dir, 'tftp');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(root);
  const ipxe = patternBytes(70_000, 5);
  writeFileSync(join(root, 'ipxe.efi'), ipxe);
  const tftp = new TftpServer({ files: new FolderFileProvider({ root }) });
  const tftpPort = (await tftp.listen(0, HOST)).port;
  t.after(() => tftp.close());

  // ---- DHCP in full mode on loopback, ephemeral ports
  const violations: string[] = [];
  const client = await LoopbackPeer.open('0.0.0.0');
  const relay = await LoopbackPeer.open('127.9.0.1');
  const dhcp = new DhcpServer({
    interfaces: [{ name: 'lo', address: HOST, mode: 'full', bindAddress: HOST, broadcastAddress: HOST }],
    subnets: [{ subnet: '127.0.0.0/16', ranges: [{ start: '127.0.1.10', end: '127.0.1.40' }], routers: [HOST], leaseSeconds: 3600 }],
    policy: new DefaultBootPolicy({ scriptUrl: 'http://127.0.0.1:8080/boot/{mac}.ipxe' }),
    leaseStore: new InMemoryLeaseStore(),
    ports: { server: 0, pxe: 0, client: client.port, relay: relay.port },
    createSocket: loopbackOnlySockets(violations),
  });
  await dhcp.listen();
  t.after(async () => {
    await dhcp.close();
    await client.close();
    await relay.close();
    assert.deepEqual(violations, [], 'nothing was sent off loopback');
  });

  // ---- HTTP with the metrics hook and route
  const http = new HttpMetrics();
  const server = new HttpServer({
    boot: noBoot,
    extensions: [
      httpMetricsHook(http),
      metricsRoutes({ collect: () => collectServerMetrics({ nbd, nbdLatency: resolver.histogram, tftp: () => tftp, dhcp: () => dhcp, http, catalogue }) }),
    ],
  });
  const httpPort = (await server.listen(0, HOST)).port;
  t.after(() => server.close());

  // ---------------------------------------------------------------- traffic
  // NBD, client export (simple replies: one device call per request): 3 writes of 64 KiB,
  // 5 reads of 4 KiB, 1 flush, 1 read past the end (an error), over one connection.
  const a = await NbdTestClient.open(nbdPort, EXPORT_A, { structured: false });
  for (let i = 0; i < 3; i++) await a.write(i * 64 * KiB, patternBytes(64 * KiB, i + 1));
  for (let i = 0; i < 5; i++) await a.read(i * 4 * KiB, 4 * KiB);
  assert.equal(await a.errorOf(C.NBD_CMD_FLUSH, 0, 0), 0);
  assert.equal(await a.errorOf(C.NBD_CMD_READ, 4 * 1024 * KiB, 4 * KiB), E.NBD_EINVAL);
  // Image export, read-only: 2 reads of 8 KiB; a write is refused (an error).
  const b = await NbdTestClient.open(nbdPort, IMAGE_EXPORT, { structured: false });
  await b.read(0, 8 * KiB);
  await b.read(8 * KiB, 8 * KiB);
  assert.equal(await b.errorOf(C.NBD_CMD_WRITE, 0, 512, 0, Buffer.alloc(512)), E.NBD_EPERM);

  // TFTP: the file twice (two block sizes), one missing file.
  const got1 = await tftpGet({ host: HOST, port: tftpPort, file: 'ipxe.efi', retransmitMs: 500 });
  const got2 = await tftpGet({ host: HOST, port: tftpPort, file: 'ipxe.efi', blksize: 1468, windowsize: 4, retransmitMs: 500 });
  assert.ok(got1.data.equals(ipxe) && got2.data.equals(ipxe));
  await assert.rejects(tftpGet({ host: HOST, port: tftpPort, file: 'missing.efi', retransmitMs: 500, maxRetries: 2 }));
  await until(() => tftp.stats().served === 2 && tftp.stats().failed === 1 && tftp.stats().active === 0, 5000, 'TFTP transfers to end');

  // DHCP: two clients get leases, the second releases its address.
  const dhcpPort = dhcp.boundPorts('lo').dhcp!;
  const first = await dora(client, dhcpPort, { mac: '52:54:00:00:01:01' });
  const second = await dora(client, dhcpPort, { mac: '52:54:00:00:01:02' });
  assert.ok(first.ack && second.ack);
  await client.send(buildRequest({ type: MT.DHCPRELEASE, mac: '52:54:00:00:01:02', ciaddr: second.ack.packet.yiaddr, serverId: HOST }), dhcpPort);
  await until(() => dhcp.leases().some((l) => l.state === 'released'), 5000, 'the release');

  // HTTP: 3 health checks, 2 scripts, 1 unknown route, 1 bad MAC.
  for (let i = 0; i < 3; i++) assert.equal((await fetch(`http://${HOST}:${httpPort}/healthz`)).status, 200);
  for (let i = 0; i < 2; i++) assert.equal((await fetch(`http://${HOST}:${httpPort}/ipxe/52-54-00-00-00-0a`)).status, 200);
  assert.equal((await fetch(`http://${HOST}:${httpPort}/no/such/thing`)).status, 404);
  assert.equal((await fetch(`http://${HOST}:${httpPort}/ipxe/not-a-mac`)).status, 400);

  // ---------------------------------------------------------------- scrape, connections open
  const { text, families: m } = await scrape(httpPort);
  assert.ok(!text.includes(TOKEN_A), 'the export token never appears');
  const macA = { mac: MAC_A };
  const image = { export: IMAGE_EXPORT };
  assert.equal(valueOf(m, 'diskless_nbd_written_bytes_total', macA), 3 * 64 * KiB);
  assert.equal(valueOf(m, 'diskless_nbd_read_bytes_total', macA), 5 * 4 * KiB);
  assert.equal(valueOf(m, 'diskless_nbd_operations_total', { ...macA, op: 'write' }), 3);
  assert.equal(valueOf(m, 'diskless_nbd_operations_total', { ...macA, op: 'read' }), 5);
  assert.equal(valueOf(m, 'diskless_nbd_operations_total', { ...macA, op: 'flush' }), 1);
  assert.equal(valueOf(m, 'diskless_nbd_operations_total', { ...macA, op: 'trim' }), 0);
  assert.equal(valueOf(m, 'diskless_nbd_errors_total', macA), 1);
  assert.equal(valueOf(m, 'diskless_nbd_read_bytes_total', image), 16 * KiB);
  assert.equal(valueOf(m, 'diskless_nbd_written_bytes_total', image), 0);
  assert.equal(valueOf(m, 'diskless_nbd_operations_total', { ...image, op: 'read' }), 2);
  assert.equal(valueOf(m, 'diskless_nbd_errors_total', image), 1);
  assert.equal(valueOf(m, 'diskless_nbd_export_connections', macA), 1);
  assert.equal(valueOf(m, 'diskless_nbd_export_connections', image), 1);
  assert.equal(valueOf(m, 'diskless_nbd_connections'), 2);
  // The device saw every request that passed validation, once: 5 + 2 reads, 3 writes, 1 flush.
  assert.equal(valueOf(m, 'diskless_nbd_device_request_duration_seconds_count', { op: 'read' }), 7);
  assert.equal(valueOf(m, 'diskless_nbd_device_request_duration_seconds_count', { op: 'write' }), 3);
  assert.equal(valueOf(m, 'diskless_nbd_device_request_duration_seconds_count', { op: 'flush' }), 1);
  assert.ok(valueOf(m, 'diskless_nbd_device_request_duration_seconds_sum', { op: 'read' }) > 0);
  assert.equal(valueOf(m, 'diskless_requests_total', { protocol: 'nbd' }), 3 + 5 + 1 + 2);
  assert.equal(valueOf(m, 'diskless_request_errors_total', { protocol: 'nbd' }), 2);

  assert.equal(valueOf(m, 'diskless_tftp_transfers_started_total'), 3);
  assert.equal(valueOf(m, 'diskless_tftp_transfers_total', { outcome: 'served' }), 2);
  assert.equal(valueOf(m, 'diskless_tftp_transfers_total', { outcome: 'failed' }), 1);
  assert.equal(valueOf(m, 'diskless_tftp_transfers_total', { outcome: 'aborted' }), 0);
  assert.equal(valueOf(m, 'diskless_tftp_transfers_active'), 0);
  assert.equal(valueOf(m, 'diskless_tftp_sent_bytes_total'), 2 * ipxe.length);
  assert.equal(valueOf(m, 'diskless_requests_total', { protocol: 'tftp' }), 3);
  assert.equal(valueOf(m, 'diskless_request_errors_total', { protocol: 'tftp' }), 1);

  assert.equal(valueOf(m, 'diskless_dhcp_messages_total', { direction: 'received', type: 'DHCPDISCOVER' }), 2);
  assert.equal(valueOf(m, 'diskless_dhcp_messages_total', { direction: 'received', type: 'DHCPREQUEST' }), 2);
  assert.equal(valueOf(m, 'diskless_dhcp_messages_total', { direction: 'received', type: 'DHCPRELEASE' }), 1);
  assert.equal(valueOf(m, 'diskless_dhcp_messages_total', { direction: 'sent', type: 'DHCPOFFER' }), 2);
  assert.equal(valueOf(m, 'diskless_dhcp_messages_total', { direction: 'sent', type: 'DHCPACK' }), 2);
  assert.equal(samplesOf(m, 'diskless_dhcp_messages_total').length, 5, 'no other message type');
  assert.equal(valueOf(m, 'diskless_dhcp_received_total'), 5);
  assert.deepEqual(
    Object.fromEntries(samplesOf(m, 'diskless_dhcp_leases').map((s) => [s.labels.state, s.value])),
    { offered: 0, bound: 1, expired: 0, released: 1, declined: 0 },
  );
  assert.equal(valueOf(m, 'diskless_requests_total', { protocol: 'dhcp' }), 5);
  assert.equal(valueOf(m, 'diskless_request_errors_total', { protocol: 'dhcp' }), 0);

  // The scrape itself is counted once it has been answered, so not in its own figures.
  const get = (route: string, status: string): number => valueOf(m, 'diskless_http_requests_total', { method: 'GET', route, status });
  assert.equal(get('/healthz', '2xx'), 3);
  assert.equal(get('/ipxe/:mac', '2xx'), 2);
  assert.equal(get('/ipxe/:mac', '4xx'), 1);
  assert.equal(get('unmatched', '4xx'), 1);
  assert.equal(samplesOf(m, 'diskless_http_requests_total').length, 4);
  assert.equal(valueOf(m, 'diskless_http_request_duration_seconds_count', { method: 'GET', route: '/healthz' }), 3);
  assert.equal(valueOf(m, 'diskless_requests_total', { protocol: 'http' }), 7);
  assert.equal(valueOf(m, 'diskless_request_errors_total', { protocol: 'http' }), 2);

  assert.deepEqual(Object.fromEntries(samplesOf(m, 'diskless_clients').map((s) => [s.labels.state, s.value])), { new: 3, booting: 0, up: 0 });
  assert.ok(valueOf(m, 'process_resident_memory_bytes') > 0);

  // ---------------------------------------------------------------- after the NBD clients leave
  a.disconnect();
  b.close();
  await until(() => nbd.connectionCount === 0, 5000, 'NBD sessions to end');
  const { families: m2 } = await scrape(httpPort);
  assert.equal(valueOf(m2, 'diskless_nbd_export_connections', macA), 0);
  assert.equal(valueOf(m2, 'diskless_nbd_export_connections_total', macA), 1);
  assert.equal(valueOf(m2, 'diskless_nbd_connections'), 0);
  assert.equal(valueOf(m2, 'diskless_nbd_read_bytes_total', macA), 5 * 4 * KiB, 'counters keep their totals');
  assert.equal(valueOf(m2, 'diskless_http_requests_total', { method: 'GET', route: '/metrics', status: '2xx' }), 1, 'the first scrape');
  destroyAllSockets();
});
