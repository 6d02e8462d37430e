/**
 * The boot policy: what a client is handed. The DHCP server knows packets,
 * the policy knows clients; the app implements BootPolicy (or configures
 * DefaultBootPolicy with plain values and a per-client lookup).
 *
 * The chain the default policy builds (issue 3):
 *   firmware PXE (BIOS, arch 0)           -> undionly.kpxe over TFTP
 *   firmware PXE (UEFI x64, arch 7 or 9)  -> ipxe.efi or snponly.efi over TFTP (per client)
 *   firmware PXE (UEFI IA32 6, ARM 10/11) -> its binary, where one is configured
 *   UEFI HTTP boot (arch 15, 16, 18, 19)  -> an HTTP URL of the iPXE binary
 *   iPXE itself (option 77 "iPXE" or option 175 present), any arch
 *                                         -> the HTTP URL of its boot script
 * The last rule is what stops the loop: iPXE asks DHCP again after it is
 * loaded, and must not be handed iPXE a second time.
 */
import { normalizeMac } from './address.js';
import { CLIENT_ARCHITECTURES as ARCH } from './constants.js';

/** Everything the server knows about a client when it asks the policy. */
export interface BootClient {
  /** `aa:bb:cc:dd:ee:ff`. */
  mac: string;
  /** Option 93's first entry, else the Arch field of option 60; undefined when neither is sent. */
  arch?: number;
  /** Option 93 in full. */
  architectures: readonly number[];
  /** Option 60. */
  vendorClass?: string;
  /** Option 77 (RFC 3004 instances or iPXE's bare string). */
  userClasses: readonly string[];
  /** Option 175 is present. */
  hasIpxeOptions: boolean;
  /** The client already runs iPXE (user class "iPXE" or option 175). */
  isIpxe: boolean;
  /** Option 60 starts with "PXEClient". */
  isPxeClient: boolean;
  /** Option 60 starts with "HTTPClient" (UEFI HTTP boot). */
  isHttpClient: boolean;
  /** Option 12 as the client sent it. */
  hostName?: string;
  /** Option 97 as a UUID string when it is type 0 with 16 bytes. */
  uuid?: string;
  /** giaddr, when the request came through a relay agent. */
  relay?: string;
  /** The name of the interface (listener) the request arrived on. */
  interfaceName: string;
  /** This server's address on that interface. */
  serverAddress: string;
  /** What the listener does: full DHCP or proxyDHCP. */
  mode: 'full' | 'proxy';
  /** Arrived on the PXE boot server port (4011) rather than 67. */
  pxePort: boolean;
  /** The DHCP message type (1 DISCOVER, 3 REQUEST, 8 INFORM...). */
  messageType: number;
}

interface DecisionBase {
  /** The client is in the catalogue (or reserved). Known clients get priority under load. */
  known: boolean;
  /** Option 12 to hand out in full mode. */
  hostName?: string;
}

/** No reply at all, in any mode. */
export interface IgnoreDecision {
  action: 'ignore';
  reason: string;
}
/** Full mode: an address and network options, no boot file. Proxy mode: no reply. */
export interface NoBootDecision extends DecisionBase {
  action: 'none';
  reason: string;
}
/** A boot file over TFTP. */
export interface TftpDecision extends DecisionBase {
  action: 'tftp';
  /** siaddr; defaults to the receiving interface's address. */
  nextServer?: string;
  bootFile: string;
}
/**
 * An HTTP URL in the boot file field (and option 67). For a UEFI HTTP boot
 * client the server adds option 60 "HTTPClient" (UEFI specification 24.7).
 */
export interface HttpDecision extends DecisionBase {
  action: 'http';
  url: string;
}
export type BootDecision = IgnoreDecision | NoBootDecision | TftpDecision | HttpDecision;

/** Implemented by the app. May be synchronous or return a promise (the server bounds its time). */
export interface BootPolicy {
  decide(client: BootClient): BootDecision | Promise<BootDecision>;
}

// ---------------------------------------------------------------------------
// The default policy

/** Per-client settings the app supplies (from its catalogue). */
export interface ClientBootSettings {
  /** Never answer this MAC (e.g. a machine that must boot from its own disk). */
  ignore?: boolean;
  /** The x64 UEFI binary: `ipxe.efi` (default) or `snponly.efi` for NICs whose iPXE driver misbehaves. */
  efiX64File?: string;
  /** Overrides any per-arch boot file handed by TFTP. */
  bootFile?: string;
  /** Overrides the script URL template for this client. */
  scriptUrl?: string;
  hostName?: string;
}

export interface BootFiles {
  /** Arch 0. */
  bios?: string;
  /** Arch 6. */
  efiIa32?: string;
  /** Arch 7 and 9 (default; a client may pick another with efiX64File). */
  efiX64?: string;
  /** Arch 10. */
  efiArm32?: string;
  /** Arch 11. */
  efiArm64?: string;
}

export interface HttpBootUrls {
  /** Arch 15. */
  ia32?: string;
  /** Arch 16. */
  x64?: string;
  /** Arch 18. */
  arm32?: string;
  /** Arch 19. */
  arm64?: string;
}

export interface UnknownClient {
  mac: string;
  arch?: number;
  vendorClass?: string;
  firstSeen: number;
  lastSeen: number;
  requests: number;
}

export interface DefaultBootPolicyOptions {
  /**
   * URL iPXE is handed for its script. `{mac}` is replaced by the MAC in
   * hyphen form (`52-54-00-12-34-56`), `{arch}` by the arch number.
   */
  scriptUrl: string;
  /** TFTP files per firmware. Defaults: bios `undionly.kpxe`, efiX64 `ipxe.efi`; others not served. */
  bootFiles?: BootFiles;
  /** URLs for UEFI HTTP boot clients; arches without one get no boot file. */
  httpBootUrls?: HttpBootUrls;
  /** siaddr for TFTP; default: the address of the interface the request came in on. */
  tftpServer?: string;
  /** Static per-client settings by MAC (any case, `:` or `-`). */
  clients?: Record<string, ClientBootSettings>;
  /** Per-client lookup by canonical MAC, consulted before `clients`; a result makes the client known. */
  lookup?: (mac: string) => ClientBootSettings | undefined;
  /** What unknown clients get: the same boot chain ('boot', default) or nothing ('ignore'). */
  unknownClients?: 'boot' | 'ignore';
  /** How many unknown MACs are remembered (oldest forgotten first). Default 1024. */
  maxUnknownRecorded?: number;
  /** Called once when an unknown MAC is first seen (or seen again after being forgotten). */
  onUnknown?: (client: UnknownClient) => void;
  /** Clock for the unknown-client record; default Date.now. */
  now?: () => number;
}

export const DEFAULT_BOOT_FILES: Readonly<Required<Pick<BootFiles, 'bios' | 'efiX64'>>> = Object.freeze({
  bios: 'undionly.kpxe',
  efiX64: 'ipxe.efi',
});
export const DEFAULT_MAX_UNKNOWN_RECORDED = 1024;

/** Characters allowed in a boot file name or URL handed to firmware: no spaces, quotes or controls. */
const SAFE_BOOT_VALUE = /^[\x21-\x7e]+$/;

function checkBootValue(what: string, v: string | undefined): void {
  if (v === undefined) return;
  if (!SAFE_BOOT_VALUE.test(v) || v.includes('"') || v.length > 1024) {
    throw new TypeError(`${what} must be printable ASCII without spaces or quotes, up to 1024 characters: ${JSON.stringify(v)}`);
  }
}

/** The default policy: plain values in, the chain above out; records unknown MACs. */
export class DefaultBootPolicy implements BootPolicy {
  private readonly files: BootFiles;
  private readonly http: HttpBootUrls;
  private readonly clients = new Map<string, ClientBootSettings>();
  private readonly unknown = new Map<string, UnknownClient>();
  private readonly maxUnknown: number;
  private readonly now: () => number;

  constructor(private readonly options: DefaultBootPolicyOptions) {
    checkBootValue('scriptUrl', options.scriptUrl);
    this.files = { ...DEFAULT_BOOT_FILES, ...options.bootFiles };
    this.http = { ...options.httpBootUrls };
    for (const [k, v] of Object.entries(this.files)) checkBootValue(`bootFiles.${k}`, v);
    for (const [k, v] of Object.entries(this.http)) checkBootValue(`httpBootUrls.${k}`, v);
    for (const [mac, settings] of Object.entries(options.clients ?? {})) this.setClient(mac, settings);
    this.maxUnknown = options.maxUnknownRecorded ?? DEFAULT_MAX_UNKNOWN_RECORDED;
    this.now = options.now ?? Date.now;
  }

  /** Adds or replaces a client's settings. */
  setClient(mac: string, settings: ClientBootSettings): void {
    const key = normalizeMac(mac);
    if (!key) throw new TypeError(`not a MAC address: ${mac}`);
    checkBootValue('efiX64File', settings.efiX64File);
    checkBootValue('bootFile', settings.bootFile);
    checkBootValue('scriptUrl', settings.scriptUrl);
    this.clients.set(key, { ...settings });
    this.unknown.delete(key);
  }

  removeClient(mac: string): void {
    const key = normalizeMac(mac);
    if (key) this.clients.delete(key);
  }

  /** Unknown MACs seen, most recent last. */
  unknownClients(): UnknownClient[] {
    return [...this.unknown.values()].map((u) => ({ ...u }));
  }

  decide(client: BootClient): BootDecision {
    const settings = this.options.lookup?.(client.mac) ?? this.clients.get(client.mac);
    const known = settings !== undefined;
    if (settings?.ignore) return { action: 'ignore', reason: 'client is set to be ignored' };
    if (!known) {
      this.recordUnknown(client);
      if (this.options.unknownClients === 'ignore') return { action: 'ignore', reason: 'unknown client' };
    }
    const base = { known, ...(settings?.hostName ? { hostName: settings.hostName } : {}) };

    // iPXE is already running: hand it its script, whatever the arch, so it never loads itself again.
    if (client.isIpxe) {
      const url = this.expand(settings?.scriptUrl ?? this.options.scriptUrl, client);
      return { action: 'http', url, ...base };
    }

    const arch = client.arch;
    if (client.isHttpClient || isHttpArch(arch)) {
      const url = httpUrlFor(this.http, arch);
      if (!url) return { action: 'none', reason: `no HTTP boot URL for arch ${arch}`, ...base };
      return { action: 'http', url: this.expand(url, client), ...base };
    }
    // A client that is neither PXE firmware nor iPXE (an OS's DHCP client) gets no boot file.
    if (!client.isPxeClient && arch === undefined) return { action: 'none', reason: 'not a network boot client', ...base };

    const file = settings?.bootFile ?? this.tftpFileFor(arch ?? ARCH.X86_BIOS, settings);
    if (!file) return { action: 'none', reason: `no boot file configured for arch ${arch}`, ...base };
    return {
      action: 'tftp',
      bootFile: file,
      ...(this.options.tftpServer ? { nextServer: this.options.tftpServer } : {}),
      ...base,
    };
  }

  private tftpFileFor(arch: number, settings: ClientBootSettings | undefined): string | undefined {
    switch (arch) {
      case ARCH.X86_BIOS:
        return this.files.bios;
      case ARCH.X86_UEFI:
        return this.files.efiIa32;
      case ARCH.X64_UEFI:
      case ARCH.EBC: // 9: x64 UEFI on firmware that predates RFC 4578's errata
        return settings?.efiX64File ?? this.files.efiX64;
      case ARCH.ARM_32_UEFI:
        return this.files.efiArm32;
      case ARCH.ARM_64_UEFI:
        return this.files.efiArm64;
      default:
        return undefined;
    }
  }

  private expand(template: string, client: BootClient): string {
    return template.replace(/\{mac\}/g, client.mac.replace(/:/g, '-')).replace(/\{arch\}/g, String(client.arch ?? 0));
  }

  private recordUnknown(client: BootClient): void {
    const t = this.now();
    const seen = this.unknown.get(client.mac);
    if (seen) {
      // Re-insert so the map stays ordered by last sight (oldest first for eviction).
      this.unknown.delete(client.mac);
      seen.lastSeen = t;
      seen.requests++;
      if (client.arch !== undefined) seen.arch = client.arch;
      this.unknown.set(client.mac, seen);
      return;
    }
    const rec: UnknownClient = {
      mac: client.mac,
      ...(client.arch !== undefined ? { arch: client.arch } : {}),
      ...(client.vendorClass !== undefined ? { vendorClass: client.vendorClass } : {}),
      firstSeen: t,
      lastSeen: t,
      requests: 1,
    };
    this.unknown.set(client.mac, rec);
    while (this.unknown.size > this.maxUnknown) {
      const oldest = this.unknown.keys().next().value as string;
      this.unknown.delete(oldest);
    }
    this.options.onUnknown?.({ ...rec });
  }
}

function isHttpArch(arch: number | undefined): boolean {
  return (
    arch === ARCH.X86_UEFI_HTTP || arch === ARCH.X64_UEFI_HTTP || arch === ARCH.ARM_32_UEFI_HTTP || arch === ARCH.ARM_64_UEFI_HTTP
  );
}

function httpUrlFor(urls: HttpBootUrls, arch: number | undefined): string | undefined {
  switch (arch) {
    case ARCH.X86_UEFI_HTTP:
      return urls.ia32;
    case ARCH.X64_UEFI_HTTP:
      return urls.x64;
    case ARCH.ARM_32_UEFI_HTTP:
      return urls.arm32;
    case ARCH.ARM_64_UEFI_HTTP:
      return urls.arm64;
    default:
      return undefined;
  }
}
