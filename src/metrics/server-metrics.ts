/**
 * The server's metrics, read from the live services at scrape time:
 *
 *   const http = new HttpMetrics();
 *   const timed = new TimedExportResolver(resolver);        // NBD latency
 *   const collect = () => collectServerMetrics({ nbd, nbdLatency: timed.histogram, tftp, dhcp, http, catalogue });
 *   extensions: [httpMetricsHook(http), metricsRoutes({ collect })]
 *
 * Every counter here is a sum of counters the services keep themselves
 * (NbdServer.stats(), TftpServer.stats(), DhcpServer.stats), so a scrape
 * costs no bookkeeping on the hot paths and nothing drifts. A source may
 * be given as a getter, for services started after the metrics route is
 * registered (TFTP and DHCP start after HTTP); a missing one (TFTP or
 * DHCP turned off) simply leaves its families out.
 *
 * NBD figures are per client, labelled `mac`: a client's export name is
 * `<12 hex mac>-<token>` (src/app/export-names.ts), one per boot, and the
 * token is a secret, so the figures of all of a client's exports are summed
 * under its MAC and the name itself is never shown. Image exports
 * (`image/<name>[/<version>]`) carry no secret and are labelled `export`;
 * any other name (the ad-hoc `diskless export` command) goes under
 * `export="other"`.
 */
import { readdirSync } from 'node:fs';
import { parseExportName } from '../app/export-names.js';
import type { DhcpStats } from '../protocols/dhcp/server.js';
import type { LeaseRecord } from '../protocols/dhcp/leases.js';
import type { NbdExportStats } from '../protocols/nbd/server.js';
import type { TftpServerStats } from '../protocols/tftp/server.js';
import type { HttpMetrics } from './http.js';
import type { Histogram, Labels, MetricFamily, Sample } from './registry.js';

/** A source object, or a getter for one that may not exist yet (or at all). */
export type Source<T> = T | null | undefined | (() => T | null | undefined);

export interface NbdSource {
  stats(): ReadonlyMap<string, Readonly<NbdExportStats>>;
  /** Connections open now, in handshake or transmission. */
  readonly connectionCount: number;
}

export interface TftpSource {
  stats(): TftpServerStats;
}

export interface DhcpSource {
  readonly stats: Readonly<DhcpStats>;
  leases(): readonly LeaseRecord[];
  pendingOffers(): number;
}

/** What is read of each client (ClientView of the catalogue has it all). */
export interface ClientSnapshot {
  mac: string;
  state: string;
  overlay: { diskBytes: number } | null;
}

export interface CatalogueSource {
  listClients(): readonly ClientSnapshot[];
}

export interface ServerMetricsSources {
  nbd?: Source<NbdSource>;
  /** The histogram of a TimedExportResolver in front of the NBD server's resolver. */
  nbdLatency?: Source<Histogram>;
  tftp?: Source<TftpSource>;
  dhcp?: Source<DhcpSource>;
  http?: Source<HttpMetrics>;
  catalogue?: Source<CatalogueSource>;
  /** Process figures (CPU, memory, open files, start time); default true. */
  process?: boolean;
  /** Milliseconds since the epoch, for lease expiry; default Date.now. */
  now?: () => number;
}

/** Client states always reported (0 when none), so dashboards see the series. */
export const CLIENT_STATES_REPORTED = ['new', 'booting', 'up'] as const;
/** DHCP lease states reported; `expired` is a bound lease past its end not yet reused. */
export const LEASE_STATES_REPORTED = ['offered', 'bound', 'expired', 'released', 'declined'] as const;

/** NBD operations and the NbdExportStats field counting each. */
const NBD_OPS = [
  ['read', 'reads'],
  ['write', 'writes'],
  ['flush', 'flushes'],
  ['trim', 'trims'],
  ['write_zeroes', 'zeroes'],
  ['cache', 'caches'],
  ['block_status', 'blockStatus'],
] as const satisfies ReadonlyArray<readonly [string, keyof NbdExportStats]>;

function resolve<T>(s: Source<T>): T | null {
  const v = typeof s === 'function' ? (s as () => T | null | undefined)() : s;
  return v ?? null;
}

const family = (name: string, help: string, type: 'counter' | 'gauge', samples: Sample[]): MetricFamily => ({ name, help, type, samples });

/** Who an export's figures belong to, never with its token. */
export function exportLabels(name: string): Labels {
  const p = parseExportName(name);
  if (p?.kind === 'client') return { mac: p.mac };
  if (p?.kind === 'image') return { export: name };
  return { export: 'other' };
}

/** Sums per-export counters by their labels. */
class Sums {
  private readonly rows = new Map<string, { labels: Labels; values: Map<string, number> }>();
  add(labels: Labels, field: string, value: number): void {
    const key = JSON.stringify(labels);
    let row = this.rows.get(key);
    if (!row) this.rows.set(key, (row = { labels, values: new Map() }));
    row.values.set(field, (row.values.get(field) ?? 0) + value);
  }
  samples(field: string, extra: Labels = {}): Sample[] {
    return [...this.rows.values()].map((r) => ({ labels: { ...r.labels, ...extra }, value: r.values.get(field) ?? 0 }));
  }
}

function nbdFamilies(nbd: NbdSource, latency: Histogram | null): { families: MetricFamily[]; requests: number; errors: number } {
  const sums = new Sums();
  let requests = 0;
  let errors = 0;
  for (const [name, s] of nbd.stats()) {
    const labels = exportLabels(name);
    sums.add(labels, 'bytesRead', s.bytesRead);
    sums.add(labels, 'bytesWritten', s.bytesWritten);
    sums.add(labels, 'errors', s.errors);
    sums.add(labels, 'connections', s.connections);
    sums.add(labels, 'connectionsTotal', s.connectionsTotal);
    for (const [, field] of NBD_OPS) {
      sums.add(labels, field, s[field]);
      requests += s[field];
    }
    errors += s.errors;
  }
  const families: MetricFamily[] = [
    family('diskless_nbd_read_bytes_total', 'Bytes read by NBD clients (NBD_CMD_READ payload), per client MAC or image export.', 'counter', sums.samples('bytesRead')),
    family('diskless_nbd_written_bytes_total', 'Bytes written by NBD clients (NBD_CMD_WRITE payload), per client MAC or image export.', 'counter', sums.samples('bytesWritten')),
    family(
      'diskless_nbd_operations_total',
      'NBD transmission requests served, by operation, per client MAC or image export.',
      'counter',
      NBD_OPS.flatMap(([op, field]) => sums.samples(field, { op })),
    ),
    family('diskless_nbd_errors_total', 'NBD requests answered with an error (invalid or failed), per client MAC or image export.', 'counter', sums.samples('errors')),
    family('diskless_nbd_export_connections', 'NBD connections in the transmission phase now, per client MAC or image export.', 'gauge', sums.samples('connections')),
    family('diskless_nbd_export_connections_total', 'NBD connections that entered the transmission phase, per client MAC or image export.', 'counter', sums.samples('connectionsTotal')),
    family('diskless_nbd_connections', 'NBD connections open now, in handshake or transmission.', 'gauge', [{ labels: {}, value: nbd.connectionCount }]),
  ];
  if (latency) families.push(latency.collect());
  return { families, requests, errors };
}

function tftpFamilies(tftp: TftpSource): MetricFamily[] {
  const s = tftp.stats();
  return [
    family('diskless_tftp_transfers_started_total', 'TFTP read requests taken (each starts a transfer or is refused).', 'counter', [{ labels: {}, value: s.requests }]),
    family('diskless_tftp_transfers_total', 'TFTP transfers ended, by outcome: served whole, aborted by the client (e.g. a tsize probe), failed or refused.', 'counter', [
      { labels: { outcome: 'served' }, value: s.served },
      { labels: { outcome: 'aborted' }, value: s.aborted },
      { labels: { outcome: 'failed' }, value: s.failed },
    ]),
    family('diskless_tftp_transfers_active', 'TFTP transfers running now.', 'gauge', [{ labels: {}, value: s.active }]),
    family('diskless_tftp_sent_bytes_total', 'TFTP payload bytes acknowledged by clients, all transfers.', 'counter', [{ labels: {}, value: s.bytes }]),
  ];
}

function dhcpFamilies(dhcp: DhcpSource, now: number): MetricFamily[] {
  const s = dhcp.stats;
  const leases = new Map<string, number>(LEASE_STATES_REPORTED.map((k) => [k, 0]));
  leases.set('offered', dhcp.pendingOffers());
  for (const l of dhcp.leases()) {
    const state = l.state === 'bound' && l.expiresAt <= now ? 'expired' : l.state;
    leases.set(state, (leases.get(state) ?? 0) + 1);
  }
  const byType = (direction: string, counts: Readonly<Record<string, number>>): Sample[] =>
    Object.entries(counts).map(([type, value]) => ({ labels: { direction, type }, value }));
  return [
    family('diskless_dhcp_received_total', 'DHCP datagrams received, valid or not.', 'counter', [{ labels: {}, value: s.received }]),
    family('diskless_dhcp_messages_total', 'DHCP messages by type (option 53): requests received (decoded, before rate limiting) and replies sent.', 'counter', [
      ...byType('received', s.receivedByType),
      ...byType('sent', s.sentByType),
    ]),
    family('diskless_dhcp_dropped_total', 'DHCP datagrams dropped unanswered, by reason.', 'counter', [
      { labels: { reason: 'malformed' }, value: s.malformed },
      { labels: { reason: 'rate_limited' }, value: s.rateLimited },
      { labels: { reason: 'overloaded' }, value: s.overloaded },
      { labels: { reason: 'ignored' }, value: s.ignored },
    ]),
    family('diskless_dhcp_errors_total', 'DHCP failures on the server side, by kind: sending a reply, writing a lease, asking the boot policy.', 'counter', [
      { labels: { kind: 'send' }, value: s.sendErrors },
      { labels: { kind: 'store' }, value: s.storeErrors },
      { labels: { kind: 'policy' }, value: s.policyErrors },
    ]),
    family(
      'diskless_dhcp_leases',
      'DHCP addresses by lease state (full mode): offered and not yet requested, bound, bound but expired, released, declined.',
      'gauge',
      [...leases].map(([state, value]) => ({ labels: { state }, value })),
    ),
  ];
}

function clientFamilies(catalogue: CatalogueSource): MetricFamily[] {
  const states = new Map<string, number>(CLIENT_STATES_REPORTED.map((k) => [k, 0]));
  const overlays: Sample[] = [];
  for (const c of catalogue.listClients()) {
    states.set(c.state, (states.get(c.state) ?? 0) + 1);
    if (c.overlay) overlays.push({ labels: { mac: c.mac }, value: c.overlay.diskBytes });
  }
  return [
    family('diskless_clients', 'Catalogue clients by state: new (never booted), booting (boot started, OS not up yet), up.', 'gauge', [...states].map(([state, value]) => ({ labels: { state }, value }))),
    family('diskless_client_overlay_bytes', "Bytes a client's copy-on-write overlay takes on disk (allocated blocks).", 'gauge', overlays),
  ];
}

const START_TIME_SECONDS = Math.round(Date.now() / 1000 - process.uptime());

function processFamilies(): MetricFamily[] {
  const cpu = process.cpuUsage();
  let fds: number | null = null;
  try {
    fds = readdirSync('/proc/self/fd').length;
  } catch {
    // Not Linux, or no /proc: left out.
  }
  return [
    family('process_cpu_seconds_total', 'User and system CPU time of the server process.', 'counter', [{ labels: {}, value: (cpu.user + cpu.system) / 1e6 }]),
    family('process_resident_memory_bytes', 'Resident memory of the server process.', 'gauge', [{ labels: {}, value: process.memoryUsage.rss() }]),
    family('process_start_time_seconds', 'When the server process started, seconds since the epoch.', 'gauge', [{ labels: {}, value: START_TIME_SECONDS }]),
    ...(fds !== null ? [family('process_open_fds', 'File descriptors the server process has open.', 'gauge', [{ labels: {}, value: fds }])] : []),
  ];
}

/** Every family of the server, read now from the sources given. */
export function collectServerMetrics(sources: ServerMetricsSources): MetricFamily[] {
  const now = (sources.now ?? Date.now)();
  const out: MetricFamily[] = [];
  const requests: Sample[] = [];
  const errors: Sample[] = [];

  const dhcp = resolve(sources.dhcp);
  if (dhcp) {
    requests.push({ labels: { protocol: 'dhcp' }, value: dhcp.stats.received });
    const s = dhcp.stats;
    errors.push({ labels: { protocol: 'dhcp' }, value: s.malformed + s.sendErrors + s.storeErrors + s.policyErrors });
  }
  const tftp = resolve(sources.tftp);
  if (tftp) {
    const s = tftp.stats();
    requests.push({ labels: { protocol: 'tftp' }, value: s.requests });
    errors.push({ labels: { protocol: 'tftp' }, value: s.failed });
  }
  const http = resolve(sources.http);
  if (http) {
    requests.push({ labels: { protocol: 'http' }, value: http.total() });
    errors.push({ labels: { protocol: 'http' }, value: http.errors() });
  }
  const nbd = resolve(sources.nbd);
  let nbdOut: ReturnType<typeof nbdFamilies> | null = null;
  if (nbd) {
    nbdOut = nbdFamilies(nbd, resolve(sources.nbdLatency));
    requests.push({ labels: { protocol: 'nbd' }, value: nbdOut.requests });
    errors.push({ labels: { protocol: 'nbd' }, value: nbdOut.errors });
  }

  out.push(
    family('diskless_requests_total', 'Requests received, by protocol: DHCP datagrams, TFTP read requests, HTTP responses, NBD transmission requests.', 'counter', requests),
    family('diskless_request_errors_total', 'Requests that failed, by protocol: DHCP malformed or not answered for a server fault, TFTP failed or refused, HTTP status >= 400, NBD error replies.', 'counter', errors),
  );
  if (nbdOut) out.push(...nbdOut.families);
  if (tftp) out.push(...tftpFamilies(tftp));
  if (dhcp) out.push(...dhcpFamilies(dhcp, now));
  if (http) out.push(...http.collect());
  const catalogue = resolve(sources.catalogue);
  if (catalogue) out.push(...clientFamilies(catalogue));
  if (sources.process !== false) out.push(...processFamilies());
  return out;
}
