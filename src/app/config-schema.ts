/**
 * The configuration schema: every option, its type, its default and its
 * help text, declared once. config.ts validates a file against it (every
 * problem listed with its path), fills the defaults and freezes the result;
 * docs/configuration.md is generated from it (`diskless config docs`), and
 * a test fails when the two differ. The TypeScript type of a validated
 * configuration, DisklessConfig, is inferred from the same declaration, so
 * code, checks and docs cannot drift apart.
 */
import { DEFAULT_LIMITS, resolveLimits, type NbdLimits } from '../protocols/nbd/limits.js';
import { cidrContains, parseCidr, parseIpv4 } from '../protocols/dhcp/address.js';

// ---------------------------------------------------------------------------
// The schema language

/** Formats a string option may be held to; config.ts checks each. */
export type StringFormat =
  | 'absolute-path'
  | 'host'
  | 'ipv4'
  | 'cidr4'
  | 'cidr'
  | 'http-url'
  | 'interface-name'
  | 'image-name'
  | 'domain-name'
  | 'kernel-args';

interface Common {
  help: string;
  /** Absent is allowed (and, without a default, stays absent). */
  optional?: boolean;
  /** What the docs show as the default when it is computed at start rather than fixed. */
  defaultText?: string;
}

export interface StringSpec extends Common {
  type: 'string';
  format?: StringFormat;
  default?: string;
  maxLength?: number;
}

export interface IntegerSpec extends Common {
  type: 'integer';
  min: number;
  max: number;
  default?: number;
  /** Further check after the range; returns the problem, if any. */
  check?: (value: number) => string | undefined;
}

export interface BooleanSpec extends Common {
  type: 'boolean';
  default?: boolean;
}

export interface EnumSpec<V extends string = string> extends Common {
  type: 'enum';
  values: readonly V[];
  default?: V;
}

export interface ArraySpec<I extends Spec = Spec> extends Common {
  type: 'array';
  items: I;
  maxItems: number;
  default?: readonly unknown[];
}

/** An object whose keys are MAC addresses (normalized to aa:bb:cc:dd:ee:ff). */
export interface MacMapSpec<V extends Spec = Spec> extends Common {
  type: 'mac-map';
  value: V;
  maxItems: number;
  default?: Readonly<Record<string, unknown>>;
}

export type Report = (path: string, problem: string) => void;

export interface ObjectSpec<F extends Record<string, Spec> = Record<string, Spec>> extends Common {
  type: 'object';
  fields: F;
  /**
   * Checks across fields, run when every field is valid on its own.
   * `value` has the defaults filled in; `raw` is the object as written,
   * to tell an option left out from one set to its default.
   */
  check?: (value: any, raw: Record<string, unknown>, report: Report) => void;
}

export type Spec = StringSpec | IntegerSpec | BooleanSpec | EnumSpec | ArraySpec | MacMapSpec | ObjectSpec;

export const str = <const O extends Omit<StringSpec, 'type'>>(o: O): NoInfer<O> & { type: 'string' } => ({ type: 'string', ...o });
export const int = <const O extends Omit<IntegerSpec, 'type'>>(o: O): NoInfer<O> & { type: 'integer' } => ({ type: 'integer', ...o });
export const bool = <const O extends Omit<BooleanSpec, 'type'>>(o: O): NoInfer<O> & { type: 'boolean' } => ({ type: 'boolean', ...o });
export const oneOf = <const V extends string, const O extends Omit<EnumSpec<V>, 'type' | 'values'>>(values: readonly V[], o: O): NoInfer<O> & { type: 'enum'; values: readonly V[] } =>
  ({ type: 'enum', values, ...o });
export const list = <I extends Spec, const O extends Omit<ArraySpec<I>, 'type' | 'items'>>(items: I, o: O): NoInfer<O> & { type: 'array'; items: I } =>
  ({ type: 'array', items, ...o });
export const macMap = <V extends Spec, const O extends Omit<MacMapSpec<V>, 'type' | 'value'>>(value: V, o: O): NoInfer<O> & { type: 'mac-map'; value: V } =>
  ({ type: 'mac-map', value, ...o });
export const obj = <F extends Record<string, Spec>, const O extends Omit<ObjectSpec<F>, 'type' | 'fields'>>(fields: F, o: O): NoInfer<O> & { type: 'object'; fields: F } =>
  ({ type: 'object', fields, ...o });

/** The value a spec validates to. */
export type ValueOf<S> =
  S extends { type: 'string' } ? string :
  S extends { type: 'integer' } ? number :
  S extends { type: 'boolean' } ? boolean :
  S extends { type: 'enum'; values: readonly (infer V)[] } ? V :
  S extends { type: 'array'; items: infer I } ? readonly ValueOf<I>[] :
  S extends { type: 'mac-map'; value: infer V } ? Readonly<Record<string, ValueOf<V>>> :
  S extends { type: 'object'; fields: infer F } ? ObjectValue<F> :
  never;

/** Optional with no default: may be absent from the validated value. */
type MayBeAbsent<S> = S extends { optional: true } ? (S extends { default: unknown } ? false : true) : false;

type Flatten<T> = { [K in keyof T]: T[K] } & {};

type ObjectValue<F> = Flatten<
  { readonly [K in keyof F as MayBeAbsent<F[K]> extends true ? never : K]: ValueOf<F[K]> } &
  { readonly [K in keyof F as MayBeAbsent<F[K]> extends true ? K : never]?: ValueOf<F[K]> }
>;

// ---------------------------------------------------------------------------
// The options

export const DEFAULT_CONFIG_PATH = '/etc/diskless/config.json';
export const DEFAULT_DATA_DIR = '/var/lib/diskless';
export const DEFAULT_NBD_PORT = 10809;
export const DEFAULT_HTTP_PORT = 8080;
export const DEFAULT_TFTP_PORT = 69;
/**
 * The DHCP server's own default lease (DEFAULT_LEASE_SECONDS in
 * protocols/dhcp/server.ts; a test keeps the two equal). Not imported, so
 * reading the configuration does not load the DHCP server.
 */
export const DEFAULT_DHCP_LEASE_SECONDS = 3600;
/** Where Debian's `ipxe` package puts the binaries; the first that exists is used. */
export const IPXE_DIR_CANDIDATES = ['/usr/lib/ipxe', '/usr/share/ipxe'] as const;
/**
 * How long a client's overlay stays open after its last connection ends.
 * nbd-client reconnects (-persist) within seconds; keeping the overlay open
 * across that saves reopening it and re-reading its map.
 */
export const DEFAULT_OVERLAY_GRACE_MS = 30_000;
/** Read-only image exports are for inspection and copying on the server itself. */
export const DEFAULT_READ_ONLY_FROM = ['127.0.0.0/8', '::1/128'] as const;

const port = (help: string, dflt: number) => int({ help: `${help} 0 picks any free port (for tests).`, min: 0, max: 65535, default: dflt });

/**
 * The NBD server owns the ranges of its limits (resolveLimits). Each range
 * is read from the server's own answer to an impossible value, so the docs
 * and messages show it; every value is also checked by the server itself.
 */
function limitRange(key: keyof NbdLimits): [number, number] {
  const m = /from (\d+) to (\d+)/.exec(limitProblem(key, -1) ?? '');
  return m ? [Number(m[1]), Number(m[2])] : [0, Number.MAX_SAFE_INTEGER];
}

function limitProblem(key: keyof NbdLimits, value: number): string | undefined {
  try {
    resolveLimits({ [key]: value });
    return undefined;
  } catch (err) {
    const message = (err as Error).message;
    const at = message.indexOf(`${key} `);
    return at >= 0 ? message.slice(at + key.length + 1) : message;
  }
}

const limit = (key: keyof NbdLimits, help: string) => {
  const [min, max] = limitRange(key);
  return int({ help, min, max, default: DEFAULT_LIMITS[key], check: (v: number) => limitProblem(key, v) });
};

const nbdLimits = obj({
  maxPayload: limit('maxPayload', 'Largest read or write one request may carry, in bytes; advertised to clients as the maximum block size.'),
  maxInFlight: limit('maxInFlight', 'Requests of one connection served at once; the connection is not read while this many are.'),
  maxInFlightBytes: limit('maxInFlightBytes', 'Payload bytes one connection may hold in memory at once (write data received, read data not yet sent).'),
  writeHighWaterMark: limit('writeHighWaterMark', 'Unsent reply bytes above which a connection stops reading new requests.'),
  maxConnections: limit('maxConnections', 'NBD connections open at once, all clients together; more are closed on arrival.'),
  handshakeTimeoutMs: limit('handshakeTimeoutMs', 'Time a client has from connecting to choosing its export, in milliseconds.'),
  maxOptions: limit('maxOptions', 'Handshake options one connection may send before it is closed.'),
  maxOptionPayload: limit('maxOptionPayload', 'Longest handshake option read into memory, in bytes; longer ones are refused as too big.'),
  minHoleSize: limit('minHoleSize', 'Reads at least this long are checked for holes and zeros, which are sent as hole chunks instead of data.'),
  maxBlockStatusDescriptors: limit('maxBlockStatusDescriptors', 'Extents in one block-status reply.'),
  closeTimeoutMs: limit('closeTimeoutMs', 'On shutdown, how long requests in flight may take to finish before connections are cut, in milliseconds.'),
  keepAliveMs: limit('keepAliveMs', 'TCP keepalive delay, so a client that vanished releases its disk, in milliseconds; 0 turns keepalive off.'),
  lingerMs: limit('lingerMs', 'After the server ends a connection, how long it drains input so the client can read the last replies, in milliseconds.'),
  bufferPoolBytes: limit('bufferPoolBytes', 'Bytes of idle read buffers kept for reuse, all connections together; 0 turns the pool off and every read allocates.'),
}, { help: 'Resource limits of the NBD server. Each is checked against the range the NBD server allows.' });

const dhcpInterface = obj({
  name: str({ help: 'The network interface to serve, e.g. `enp3s0`.', format: 'interface-name' }),
  mode: oneOf(['full', 'proxy'], {
    help: '`full`: this server hands out addresses on the link. `proxy`: another DHCP server does; this one only adds the boot information (proxyDHCP, PXE specification 2.1).',
    default: 'proxy',
  }),
  address: str({
    help: 'This server\'s IPv4 address on the link: the DHCP server identifier and the boot server clients are sent to.',
    format: 'ipv4', optional: true, defaultText: 'the first IPv4 address of the interface',
  }),
  subnet: str({ help: 'Full mode: the subnet served, as a CIDR network, e.g. `10.0.0.0/24`.', format: 'cidr4', optional: true }),
  pool: obj({
    start: str({ help: 'First address handed out to clients.', format: 'ipv4' }),
    end: str({ help: 'Last address handed out to clients (inclusive).', format: 'ipv4' }),
  }, { help: 'Full mode: the range of addresses handed out dynamically; inside `subnet`.', optional: true }),
  router: str({ help: 'Full mode: the default gateway given to clients (DHCP option 3).', format: 'ipv4', optional: true }),
  dns: list(str({ help: 'A DNS server address.', format: 'ipv4' }), { help: 'Full mode: DNS servers given to clients (DHCP option 6).', maxItems: 8, default: [] }),
  domain: str({ help: 'Full mode: the domain name given to clients (DHCP option 15).', format: 'domain-name', optional: true }),
  leaseSeconds: int({ help: 'Full mode: lease time in seconds (DHCP option 51).', min: 60, max: 365 * 24 * 3600, default: DEFAULT_DHCP_LEASE_SECONDS }),
  renewalSeconds: int({ help: 'Full mode: renewal time T1 in seconds (DHCP option 58).', min: 30, max: 365 * 24 * 3600, optional: true, defaultText: 'half the lease time' }),
  rebindingSeconds: int({ help: 'Full mode: rebinding time T2 in seconds (DHCP option 59).', min: 30, max: 365 * 24 * 3600, optional: true, defaultText: '7/8 of the lease time' }),
  reservations: macMap(str({ help: 'The address reserved for this MAC.', format: 'ipv4' }), {
    help: 'Full mode: fixed addresses, as an object from MAC address to IPv4 address, e.g. `{"52:54:00:12:34:56": "10.0.0.21"}`. They may lie outside the pool but must be inside `subnet`.',
    maxItems: 65536, default: {},
  }),
  authoritative: bool({
    help: 'Full mode: answer clients asking for addresses this server has no record of (RFC 2131 section 4.3.2: NAK a wrong address, confirm a free one). Leave off beside another DHCP server.',
    default: false,
  }),
}, {
  help: 'One interface DHCP is served on.',
  check(v: any, raw: Record<string, unknown>, report: Report) {
    const fullOnly = ['subnet', 'pool', 'router', 'dns', 'domain', 'leaseSeconds', 'renewalSeconds', 'rebindingSeconds', 'reservations', 'authoritative'];
    if (v.mode === 'proxy') {
      for (const k of fullOnly) if (raw[k] !== undefined) report(k, 'is only for mode "full" (a proxy hands out no addresses)');
      return;
    }
    if (v.subnet === undefined) report('subnet', 'is required in mode "full"');
    if (v.pool === undefined) report('pool', 'is required in mode "full"');
    const net = v.subnet === undefined ? undefined : parseCidr(v.subnet);
    if (!net) return;
    const usable = (text: string): boolean => {
      const a = parseIpv4(text)!;
      return cidrContains(net, a) && (net.prefix >= 31 || (a !== net.network && a !== net.broadcast));
    };
    const outside = `is not a usable address of subnet ${v.subnet}`;
    if (v.pool) {
      if (!usable(v.pool.start)) report('pool.start', outside);
      if (!usable(v.pool.end)) report('pool.end', outside);
      if (parseIpv4(v.pool.start)! > parseIpv4(v.pool.end)!) report('pool', `start ${v.pool.start} is after end ${v.pool.end}`);
    }
    if (v.router !== undefined && !usable(v.router)) report('router', outside);
    if (v.address !== undefined && !usable(v.address)) report('address', outside);
    const taken = new Map<string, string>();
    for (const [mac, address] of Object.entries(v.reservations as Record<string, string>)) {
      if (!usable(address)) report(`reservations["${mac}"]`, `${address} ${outside}`);
      const other = taken.get(address);
      if (other) report(`reservations["${mac}"]`, `${address} is also reserved for ${other}`);
      taken.set(address, mac);
    }
    const t1 = v.renewalSeconds ?? Math.floor(v.leaseSeconds / 2);
    const t2 = v.rebindingSeconds ?? Math.floor((v.leaseSeconds * 7) / 8);
    if (!(t1 < t2 && t2 < v.leaseSeconds)) {
      report('renewalSeconds', `renewal (${t1} s) < rebinding (${t2} s) < lease (${v.leaseSeconds} s) must hold (RFC 2131 section 4.4.5)`);
    }
  },
});

export const CONFIG_SCHEMA = obj({
  dataDir: str({
    help: 'Where images, overlays and the catalogue database live (`images/<image>/<version>.raw`, `overlays/<client>/`, `diskless.db`). Created with mode 0750 if missing. `--data-dir` overrides it.',
    format: 'absolute-path', default: DEFAULT_DATA_DIR,
  }),
  nbd: obj({
    host: str({ help: 'Address the NBD server listens on (`0.0.0.0` for every IPv4 address, `::` for every address).', format: 'host', default: '0.0.0.0' }),
    port: port('TCP port of the NBD server (10809 is the port assigned to NBD).', DEFAULT_NBD_PORT),
    bindClientAddress: bool({
      help: 'Bind each boot to the first source address that uses its export (or the address that fetched its boot script), and refuse that export to any other address. See docs/exports.md.',
      default: true,
    }),
    overlayGraceMs: int({
      help: 'How long a client\'s overlay stays open after its last connection ends, in milliseconds, so a reconnect finds it open.',
      min: 0, max: 24 * 3600 * 1000, default: DEFAULT_OVERLAY_GRACE_MS,
    }),
    readOnlyExportsFrom: list(str({ help: 'An address or network, e.g. `10.0.0.0/24` or `::1/128`.', format: 'cidr' }), {
      help: 'Networks allowed to open the read-only image exports (`image/<name>` and `image/<name>/<version>`), for inspection and copying. Empty turns them off.',
      maxItems: 256, default: DEFAULT_READ_ONLY_FROM,
    }),
    limits: nbdLimits,
  }, { help: 'The NBD server that serves each client its disk.' }),
  http: obj({
    host: str({ help: 'Address the HTTP server listens on.', format: 'host', default: '0.0.0.0' }),
    port: port('TCP port of the HTTP server (iPXE scripts, kernels, initramfs, the API).', DEFAULT_HTTP_PORT),
    publicUrl: str({
      help: 'Base URL clients reach the HTTP server by, e.g. `http://10.0.0.1:8080`; used in DHCP replies and boot scripts.',
      format: 'http-url', optional: true, defaultText: 'built from the address a request arrived on and `http.port`',
    }),
  }, { help: 'The HTTP server that hands iPXE its script, kernel and initramfs.' }),
  tftp: obj({
    enabled: bool({ help: 'Serve TFTP (firmware fetches iPXE over it). Off when the site\'s own TFTP server hands out iPXE.', default: true }),
    host: str({ help: 'Address the TFTP server listens on.', format: 'host', default: '0.0.0.0' }),
    port: port('UDP port of the TFTP server.', DEFAULT_TFTP_PORT),
    root: str({ help: 'A folder of extra files served over TFTP beside the iPXE binaries.', format: 'absolute-path', optional: true }),
    ipxeDir: str({
      help: 'The folder with the iPXE binaries (`undionly.kpxe`, `ipxe.efi`, `snponly.efi`), from Debian\'s `ipxe` package.',
      format: 'absolute-path', optional: true, defaultText: `the first of ${IPXE_DIR_CANDIDATES.map((d) => '`' + d + '`').join(', ')} that exists`,
    }),
  }, { help: 'The TFTP server that hands firmware the iPXE binary.' }),
  dhcp: obj({
    interfaces: list(dhcpInterface, { help: 'Interfaces DHCP is served on; empty serves no DHCP.', maxItems: 64, default: [] }),
  }, {
    help: 'The DHCP server, full or proxyDHCP per interface. Never serve full DHCP on a network that has its own DHCP server.',
    check(v: any, _raw: Record<string, unknown>, report: Report) {
      const seen = new Set<string>();
      v.interfaces.forEach((i: { name: string }, n: number) => {
        if (seen.has(i.name)) report(`interfaces[${n}].name`, `interface "${i.name}" is listed twice`);
        seen.add(i.name);
      });
    },
  }),
  boot: obj({
    unknownClients: oneOf(['ignore', 'default-image', 'register-script'], {
      help: 'What a machine that is not in the catalogue gets: `ignore` (no answer; it is only recorded), `default-image` (boots `boot.defaultImage` with an ephemeral overlay), `register-script` (an iPXE script that shows its MAC so it can be added).',
      default: 'ignore',
    }),
    defaultImage: str({ help: 'The image unknown machines boot when `boot.unknownClients` is `default-image`.', format: 'image-name', optional: true }),
    uefiBinary: oneOf(['ipxe.efi', 'snponly.efi'], {
      help: 'The iPXE binary UEFI firmware is given: `snponly.efi` drives the NIC through the firmware\'s own network driver (works on most hardware); `ipxe.efi` brings iPXE\'s drivers.',
      default: 'snponly.efi',
    }),
    extraKernelArgs: str({ help: 'Appended to every client\'s kernel command line, e.g. `quiet`.', format: 'kernel-args', default: '', maxLength: 1024 }),
    routerAdvertisements: oneOf(['off', 'on'], {
      help: 'Send IPv6 router advertisements on every `dhcp.interfaces` interface, so iPXE does not wait about 16 s for an IPv6 router at every boot (docs/firmware-quirks.md). `on` runs dnsmasq (Debian: `dnsmasq-base`) in RA-only mode: no DHCP, no DNS, router lifetime 0, so no host takes this server as its router; it advertises the interface\'s own IPv6 prefix, which the interface must have (a unique-local address such as `fd00:10::1/64` will do). Off by default because on a shared LAN every host, not only the boot clients, would take addresses from that prefix, and where the LAN has an IPv6 router it already advertises (so iPXE does not wait) and a second advertiser would contradict it. Turn it on for a boot network of its own with no IPv6 router.',
      default: 'off',
    }),
  }, {
    help: 'What clients boot.',
    check(v: any, _raw: Record<string, unknown>, report: Report) {
      if (v.unknownClients === 'default-image' && v.defaultImage === undefined) report('defaultImage', 'is required when boot.unknownClients is "default-image"');
    },
  }),
}, {
  help: 'The diskless configuration file.',
  check(v: any, _raw: Record<string, unknown>, report: Report) {
    if (v.boot.routerAdvertisements === 'on' && v.dhcp.interfaces.length === 0) {
      report('boot.routerAdvertisements', 'is "on" but dhcp.interfaces is empty: advertisements are sent on the DHCP interfaces');
    }
    // NBD and HTTP are both TCP: the same port on the same host cannot work.
    if (v.nbd.port !== 0 && v.nbd.port === v.http.port && (v.nbd.host === v.http.host || v.nbd.host === '0.0.0.0' || v.http.host === '0.0.0.0')) {
      report('http.port', `is also nbd.port (${v.nbd.port}); they must differ`);
    }
  },
});

export type DisklessConfig = ValueOf<typeof CONFIG_SCHEMA>;
export type NbdConfig = DisklessConfig['nbd'];
export type DhcpInterfaceConfig = DisklessConfig['dhcp']['interfaces'][number];
