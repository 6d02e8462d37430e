/**
 * The DHCP boot policy of the product: the DHCP module's DefaultBootPolicy
 * (the firmware -> iPXE -> script chain) fed from the catalogue and the
 * configuration.
 *
 * - A MAC in the catalogue is known: its x64 UEFI binary is its own choice
 *   when the catalogue has one, else the configured `boot.uefiBinary`; its
 *   name becomes its DHCP host name when it is a valid one (RFC 1123).
 * - Unknown MACs follow `boot.unknownClients`: `ignore` gets no answer at
 *   all; `default-image` and `register-script` get the same chain (the
 *   script then boots the default image or shows how to register). Every
 *   unknown MAC is noted for adoption (`diskless client add`), at most once
 *   per `unknownRecordIntervalMs` per MAC and through the batched event
 *   recorder, so a flood of fake MACs costs no disk writes per packet.
 * - iPXE gets `<http base>/ipxe/<mac-hex-hyphen>`. The HTTP base is the
 *   configured public URL or, without one, `http://<address of the
 *   interface the request came in on>:<port>`, so one policy serves several
 *   links correctly.
 * - When this server runs no TFTP, firmware (not yet iPXE) is handed no boot
 *   file: the site's own DHCP/TFTP setup loads iPXE.
 */
import { normalizeMac } from '../lib/net.js';
import { architectureName } from '../protocols/dhcp/constants.js';
import {
  DefaultBootPolicy, type BootClient, type BootDecision, type BootFiles, type BootPolicy, type ClientBootSettings,
} from '../protocols/dhcp/policy.js';
import type { ClientRecord, Store } from '../state/store.js';
import type { BootEventSink } from './events.js';

/** The iPXE binaries the server hands out, by the names Debian's `ipxe` package gives them. */
export const IPXE_BINARIES = {
  bios: 'undionly.kpxe',
  efiX64: 'ipxe.efi',
  efiX64Snp: 'snponly.efi',
} as const;

/** x64 UEFI binaries a client may be given. */
export const UEFI_X64_BINARIES = [IPXE_BINARIES.efiX64, IPXE_BINARIES.efiX64Snp] as const;
export type UefiX64Binary = (typeof UEFI_X64_BINARIES)[number];

export type UnknownClientPolicy = 'ignore' | 'default-image' | 'register-script';

/** Placeholder in an HTTP base URL for the address of the interface a request came in on. */
export const SERVER_PLACEHOLDER = '{server}';

export const POLICY_DEFAULTS = {
  /** An unknown MAC's boot attempts are noted at most this often (iPXE and firmware send several DISCOVERs per boot). */
  unknownRecordIntervalMs: 30_000,
  /** Unknown MACs whose last note time is remembered for that throttle. */
  maxThrottledMacs: 4096,
} as const;

export interface CatalogueBootPolicyOptions {
  store: Store;
  /** Timeline and unknown-machine recording. */
  events: BootEventSink;
  /**
   * Base URL of the HTTP service without a trailing slash, e.g.
   * `http://10.0.0.1:8080`, or `http://{server}:8080` to use the address of
   * the interface each request arrived on.
   */
  httpBase: string;
  unknownClients: UnknownClientPolicy;
  /** x64 UEFI binary of clients that name none. */
  uefiBinary: UefiX64Binary;
  /** TFTP file for ARM64 UEFI firmware (arch 11), when one is installed. */
  efiArm64File?: string;
  /** Whether this server serves TFTP; without it firmware gets no boot file. Default true. */
  tftp?: boolean;
  /** siaddr for TFTP; default: the receiving interface's address. */
  tftpServer?: string;
  now?: () => number;
  unknownRecordIntervalMs?: number;
}

/** RFC 1123 host name label(s): what the DHCP server accepts for option 12. */
const HOST_NAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * A client's own x64 UEFI binary, when the catalogue records one. The
 * catalogue has no such column yet; this reads it once it does
 * (`ClientRecord.uefiBinary`), so nothing here changes then.
 */
export function clientUefiBinary(client: ClientRecord): UefiX64Binary | undefined {
  const v = (client as ClientRecord & { uefiBinary?: unknown }).uefiBinary;
  return typeof v === 'string' && (UEFI_X64_BINARIES as readonly string[]).includes(v) ? (v as UefiX64Binary) : undefined;
}

export class CatalogueBootPolicy implements BootPolicy {
  private readonly inner: DefaultBootPolicy;
  private readonly store: Store;
  private readonly events: BootEventSink;
  private readonly uefiBinary: UefiX64Binary;
  private readonly tftp: boolean;
  private readonly now: () => number;
  private readonly recordInterval: number;
  private readonly lastNoted = new Map<string, number>();
  /** The settings of the client being decided (decide() is synchronous, so nothing interleaves). */
  private current: ClientBootSettings | undefined;

  constructor(options: CatalogueBootPolicyOptions) {
    this.store = options.store;
    this.events = options.events;
    if (!(UEFI_X64_BINARIES as readonly string[]).includes(options.uefiBinary)) {
      throw new TypeError(`uefiBinary must be one of ${UEFI_X64_BINARIES.join(', ')}`);
    }
    this.uefiBinary = options.uefiBinary;
    this.tftp = options.tftp ?? true;
    this.now = options.now ?? Date.now;
    this.recordInterval = options.unknownRecordIntervalMs ?? POLICY_DEFAULTS.unknownRecordIntervalMs;
    const base = options.httpBase.replace(/\/+$/, '');
    const files: BootFiles = { bios: IPXE_BINARIES.bios, efiX64: options.uefiBinary };
    if (options.efiArm64File) files.efiArm64 = options.efiArm64File;
    this.inner = new DefaultBootPolicy({
      scriptUrl: `${base}/ipxe/{mac}`,
      bootFiles: files,
      // UEFI HTTP boot firmware fetches the iPXE binary itself, from the HTTP service.
      httpBootUrls: { x64: `${base}/firmware/${options.uefiBinary}` },
      ...(options.tftpServer ? { tftpServer: options.tftpServer } : {}),
      lookup: () => this.current,
      unknownClients: options.unknownClients === 'ignore' ? 'ignore' : 'boot',
      now: this.now,
    });
  }

  decide(client: BootClient): BootDecision {
    const record = this.store.clients.get(client.mac);
    this.current = record ? this.settingsOf(record) : undefined;
    let d: BootDecision;
    try {
      d = this.inner.decide(client);
    } finally {
      this.current = undefined;
    }
    if (!record) this.noteUnknown(client);
    if (d.action === 'http') return { ...d, url: d.url.split(SERVER_PLACEHOLDER).join(client.serverAddress) };
    if (d.action === 'tftp' && !this.tftp) {
      return { action: 'none', known: d.known, reason: 'this server runs no TFTP; the site hands firmware iPXE', ...(d.hostName ? { hostName: d.hostName } : {}) };
    }
    return d;
  }

  /** Unknown MACs seen by the DHCP module's own bounded record, most recent last. */
  unknownClients(): ReturnType<DefaultBootPolicy['unknownClients']> {
    return this.inner.unknownClients();
  }

  private settingsOf(c: ClientRecord): ClientBootSettings {
    return {
      efiX64File: clientUefiBinary(c) ?? this.uefiBinary,
      ...(c.name && HOST_NAME.test(c.name) ? { hostName: c.name } : {}),
    };
  }

  private noteUnknown(client: BootClient): void {
    // One note per boot attempt, not per packet: firmware and iPXE each send several.
    const t = this.now();
    const last = this.lastNoted.get(client.mac);
    if (last !== undefined && t - last < this.recordInterval) return;
    this.lastNoted.delete(client.mac);
    this.lastNoted.set(client.mac, t);
    while (this.lastNoted.size > POLICY_DEFAULTS.maxThrottledMacs) this.lastNoted.delete(this.lastNoted.keys().next().value as string);
    const mac = normalizeMac(client.mac);
    if (mac) this.events.unknownSeen(mac, client.arch === undefined ? null : architectureName(client.arch));
  }
}
