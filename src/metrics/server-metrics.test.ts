import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newExportStats, type NbdExportStats } from '../protocols/nbd/session.js';
import type { LeaseRecord } from '../protocols/dhcp/leases.js';
import type { DhcpStats } from '../protocols/dhcp/server.js';
import { parsePrometheusText, samplesOf, valueOf } from '../../test/helpers/prometheus-text.js';
import { HttpMetrics } from './http.js';
import { renderPrometheusText } from './registry.js';
import { collectServerMetrics, exportLabels, type ServerMetricsSources } from './server-metrics.js';

const TOKEN_A = 'a'.repeat(32);
const TOKEN_B = 'b'.repeat(32);

function stats(over: Partial<NbdExportStats>): NbdExportStats {
  return { ...newExportStats(), ...over };
}

function dhcpStats(over: Partial<DhcpStats> = {}): DhcpStats {
  return { received: 0, malformed: 0, rateLimited: 0, overloaded: 0, ignored: 0, replies: 0, sendErrors: 0, storeErrors: 0, policyErrors: 0, receivedByType: {}, sentByType: {}, ...over };
}

function lease(address: string, state: LeaseRecord['state'], expiresAt: number): LeaseRecord {
  return { address, subnet: '10.0.0.0/24', clientKey: 'k' + address, mac: '52:54:00:00:00:01', state, expiresAt, updatedAt: 0 };
}

const scrape = (s: ServerMetricsSources) => {
  const text = renderPrometheusText(collectServerMetrics(s));
  return { text, p: parsePrometheusText(text) };
};

test('export names map to MACs; the token never shows', () => {
  assert.deepEqual(exportLabels(`52540000000a-${TOKEN_A}`), { mac: '52:54:00:00:00:0a' });
  assert.deepEqual(exportLabels('image/debian12/3'), { export: 'image/debian12/3' });
  assert.deepEqual(exportLabels('whatever.img'), { export: 'other' });
  assert.deepEqual(exportLabels(`52540000000A-${TOKEN_A}`), { export: 'other' }, 'names are parsed strictly');
});

test('NBD figures are summed per client over its boots, and per image export', () => {
  const map = new Map<string, NbdExportStats>([
    [`52540000000a-${TOKEN_A}`, stats({ reads: 3, bytesRead: 3000, writes: 1, bytesWritten: 512, flushes: 1, errors: 1, connectionsTotal: 1 })],
    [`52540000000a-${TOKEN_B}`, stats({ reads: 2, bytesRead: 100, blockStatus: 4, connections: 1, connectionsTotal: 1 })],
    ['image/debian12/3', stats({ reads: 7, bytesRead: 7 * 4096, connections: 2, connectionsTotal: 2 })],
    ['scratch', stats({ trims: 1 })],
  ]);
  const { text, p } = scrape({ nbd: { stats: () => map, connectionCount: 4 }, process: false });
  assert.ok(!text.includes(TOKEN_A) && !text.includes(TOKEN_B), 'no token in the scrape');
  const mac = { mac: '52:54:00:00:00:0a' };
  assert.equal(valueOf(p, 'diskless_nbd_read_bytes_total', mac), 3100);
  assert.equal(valueOf(p, 'diskless_nbd_written_bytes_total', mac), 512);
  assert.equal(valueOf(p, 'diskless_nbd_operations_total', { ...mac, op: 'read' }), 5);
  assert.equal(valueOf(p, 'diskless_nbd_operations_total', { ...mac, op: 'write' }), 1);
  assert.equal(valueOf(p, 'diskless_nbd_operations_total', { ...mac, op: 'flush' }), 1);
  assert.equal(valueOf(p, 'diskless_nbd_operations_total', { ...mac, op: 'block_status' }), 4);
  assert.equal(valueOf(p, 'diskless_nbd_errors_total', mac), 1);
  assert.equal(valueOf(p, 'diskless_nbd_export_connections', mac), 1);
  assert.equal(valueOf(p, 'diskless_nbd_export_connections_total', mac), 2);
  assert.equal(valueOf(p, 'diskless_nbd_read_bytes_total', { export: 'image/debian12/3' }), 7 * 4096);
  assert.equal(valueOf(p, 'diskless_nbd_operations_total', { export: 'other', op: 'trim' }), 1);
  assert.equal(valueOf(p, 'diskless_nbd_connections'), 4);
  assert.equal(valueOf(p, 'diskless_requests_total', { protocol: 'nbd' }), 3 + 1 + 1 + 2 + 4 + 7 + 1);
  assert.equal(valueOf(p, 'diskless_request_errors_total', { protocol: 'nbd' }), 1);
  assert.equal(p.has('process_cpu_seconds_total'), false);
  assert.equal(p.has('diskless_tftp_transfers_total'), false, 'a missing source leaves its families out');
});

test('DHCP messages by type and leases by state, with expiry from the clock', () => {
  const now = 1_000_000;
  const dhcp = {
    stats: dhcpStats({ received: 10, malformed: 1, ignored: 2, replies: 4, storeErrors: 1, receivedByType: { DHCPDISCOVER: 5, DHCPREQUEST: 4 }, sentByType: { DHCPOFFER: 2, DHCPACK: 2 } }),
    leases: () => [lease('10.0.0.2', 'bound', now + 1), lease('10.0.0.3', 'bound', now - 1), lease('10.0.0.4', 'released', 0), lease('10.0.0.5', 'declined', now + 5)],
    pendingOffers: () => 3,
  };
  let ready = false;
  const { p } = scrape({ dhcp: () => (ready ? dhcp : null), process: false, now: () => now });
  assert.equal(p.has('diskless_dhcp_leases'), false, 'a getter answering null leaves DHCP out');
  ready = true;
  const { p: q } = scrape({ dhcp: () => dhcp, process: false, now: () => now });
  assert.equal(valueOf(q, 'diskless_dhcp_messages_total', { direction: 'received', type: 'DHCPDISCOVER' }), 5);
  assert.equal(valueOf(q, 'diskless_dhcp_messages_total', { direction: 'sent', type: 'DHCPACK' }), 2);
  assert.deepEqual(
    Object.fromEntries(samplesOf(q, 'diskless_dhcp_leases').map((s) => [s.labels.state, s.value])),
    { offered: 3, bound: 1, expired: 1, released: 1, declined: 1 },
  );
  assert.equal(valueOf(q, 'diskless_dhcp_dropped_total', { reason: 'malformed' }), 1);
  assert.equal(valueOf(q, 'diskless_dhcp_errors_total', { kind: 'store' }), 1);
  assert.equal(valueOf(q, 'diskless_requests_total', { protocol: 'dhcp' }), 10);
  assert.equal(valueOf(q, 'diskless_request_errors_total', { protocol: 'dhcp' }), 2);
});

test('clients by state and overlay sizes from the catalogue; HTTP and process figures', () => {
  const catalogue = {
    listClients: () => [
      { mac: '52:54:00:00:00:01', state: 'up', overlay: { diskBytes: 8192 } },
      { mac: '52:54:00:00:00:02', state: 'booting', overlay: { diskBytes: 0 } },
      { mac: '52:54:00:00:00:03', state: 'new', overlay: null },
      { mac: '52:54:00:00:00:04', state: 'up', overlay: null },
    ],
  };
  const http = new HttpMetrics();
  http.observe('GET', '/ipxe/:mac', 200, 0.002);
  http.observe('GET', undefined, 404, 0.001);
  http.observe('BREW', '/x', 500, 0.001);
  const { p } = scrape({ catalogue, http });
  assert.deepEqual(Object.fromEntries(samplesOf(p, 'diskless_clients').map((s) => [s.labels.state, s.value])), { new: 1, booting: 1, up: 2 });
  assert.equal(valueOf(p, 'diskless_client_overlay_bytes', { mac: '52:54:00:00:00:01' }), 8192);
  assert.equal(samplesOf(p, 'diskless_client_overlay_bytes').length, 2);
  assert.equal(valueOf(p, 'diskless_http_requests_total', { route: 'unmatched', status: '4xx' }), 1);
  assert.equal(valueOf(p, 'diskless_http_requests_total', { method: 'other', status: '5xx' }), 1);
  assert.equal(valueOf(p, 'diskless_requests_total', { protocol: 'http' }), 3);
  assert.equal(valueOf(p, 'diskless_request_errors_total', { protocol: 'http' }), 2);
  assert.ok(valueOf(p, 'process_resident_memory_bytes') > 0);
  assert.ok(valueOf(p, 'process_start_time_seconds') > 1.6e9);
});
