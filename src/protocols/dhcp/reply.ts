/**
 * Building replies and choosing where they go. Pure functions: the server
 * decides what to answer, these lay it out per RFC 2131 section 4.1 and
 * table 3, RFC 3046, RFC 6842, the PXE 2.1 specification and iPXE's 175.
 */
import { ipv4ToBuffer } from './address.js';
import type { DhcpPacket, DhcpPacketInit, DhcpRequestInfo } from './codec.js';
import { encodeEncapsulated } from './codec.js';
import {
  BOOTREPLY,
  FILE_SIZE,
  FLAG_BROADCAST,
  IPXE_OPTIONS,
  MESSAGE_TYPES,
  OPTIONS,
  PXE_DISCOVERY_CONTROL,
  PXE_VENDOR_OPTIONS,
  VENDOR_CLASS,
} from './constants.js';
import type { BootDecision } from './policy.js';

const ZERO = '0.0.0.0';

export interface Destination {
  address: string;
  port: number;
  /** The reply goes to the link's broadcast address (no unicast possible). */
  broadcast: boolean;
}

export interface AddressingContext {
  /** Where a "broadcast" reply is sent: 255.255.255.255 on a real link. */
  broadcastAddress: string;
  /** The client port (68). */
  clientPort: number;
  /** The port relay agents listen on (67). */
  relayPort: number;
}

/**
 * RFC 2131 section 4.1, "the server ... sends any return messages":
 *  - giaddr set: to the relay agent's server port (for a DHCPNAK the caller
 *    also sets the broadcast bit, section 4.3.2);
 *  - DHCPNAK without giaddr: broadcast;
 *  - ciaddr set: unicast to ciaddr;
 *  - broadcast bit set: broadcast;
 *  - otherwise "unicast to the client's hardware address and yiaddr". That
 *    needs an ARP entry for an address the client does not answer for yet,
 *    which a Node.js socket cannot create, so it is broadcast instead (the
 *    RFC allows broadcast when unicast is not possible).
 */
export function replyDestination(req: DhcpPacket, replyType: number, ctx: AddressingContext): Destination {
  if (req.giaddr !== ZERO) return { address: req.giaddr, port: ctx.relayPort, broadcast: false };
  if (replyType === MESSAGE_TYPES.DHCPNAK) return { address: ctx.broadcastAddress, port: ctx.clientPort, broadcast: true };
  if (req.ciaddr !== ZERO) return { address: req.ciaddr, port: ctx.clientPort, broadcast: false };
  return { address: ctx.broadcastAddress, port: ctx.clientPort, broadcast: true };
}

/** Lease timing: T1 and T2 default to 0.5 and 0.875 of the lease (RFC 2131 section 4.4.5). */
export interface LeaseTimes {
  leaseSeconds: number;
  renewalSeconds: number;
  rebindingSeconds: number;
}

/** Subnet options handed to clients (full mode). */
export interface NetworkOptions {
  subnetMask: string;
  routers: readonly string[];
  dnsServers: readonly string[];
  domainName?: string;
  hostName?: string;
}

export interface ReplySpec {
  type: number;
  serverId: string;
  yiaddr?: string;
  siaddr?: string;
  /** ciaddr is copied from the request for ACKs (RFC 2131 table 3); zero otherwise. */
  copyCiaddr?: boolean;
  lease?: LeaseTimes;
  network?: NetworkOptions;
  boot?: BootDecision;
  /** Proxy replies: option 60 "PXEClient", option 43 and option 97 (PXE 2.1 section 2.2.6). */
  pxe?: boolean;
  /** Option 56, for a DHCPNAK. */
  message?: string;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/**
 * The reply's header and options. Option order: 53 and 54 first (some PXE
 * ROMs look only near the start), the rest, then option 82 last, as RFC 3046
 * section 2.1 has relay agents place it.
 */
export function buildReply(req: DhcpPacket, info: DhcpRequestInfo, spec: ReplySpec): DhcpPacketInit {
  const options: Array<[number, Buffer]> = [];
  const add = (code: number, v: Buffer): void => {
    options.push([code, v]);
  };
  add(OPTIONS.DHCP_MESSAGE_TYPE, Buffer.from([spec.type]));
  add(OPTIONS.SERVER_IDENTIFIER, ipv4ToBuffer(spec.serverId));
  const nak = spec.type === MESSAGE_TYPES.DHCPNAK;

  if (!nak && spec.lease) {
    add(OPTIONS.IP_ADDRESS_LEASE_TIME, u32(spec.lease.leaseSeconds));
    add(OPTIONS.RENEWAL_TIME_VALUE, u32(spec.lease.renewalSeconds));
    add(OPTIONS.REBINDING_TIME_VALUE, u32(spec.lease.rebindingSeconds));
  }
  if (!nak && spec.network) {
    const n = spec.network;
    add(OPTIONS.SUBNET_MASK, ipv4ToBuffer(n.subnetMask));
    if (n.routers.length > 0) add(OPTIONS.ROUTER, Buffer.concat(n.routers.map(ipv4ToBuffer)));
    if (n.dnsServers.length > 0) add(OPTIONS.DOMAIN_NAME_SERVER, Buffer.concat(n.dnsServers.map(ipv4ToBuffer)));
    if (n.domainName) add(OPTIONS.DOMAIN_NAME, Buffer.from(n.domainName, 'latin1'));
    if (n.hostName) add(OPTIONS.HOST_NAME, Buffer.from(n.hostName, 'latin1'));
  }

  let file = '';
  let siaddr = ZERO;
  const boot = nak ? undefined : spec.boot;
  if (boot && (boot.action === 'tftp' || boot.action === 'http')) {
    const name = boot.action === 'tftp' ? boot.bootFile : boot.url;
    siaddr = spec.siaddr ?? ZERO;
    // The file field holds 127 bytes and a NUL; longer names go in option 67 only.
    if (Buffer.byteLength(name, 'latin1') < FILE_SIZE) file = name;
    const wants67 = info.parameterRequestList.includes(OPTIONS.BOOTFILE_NAME);
    if (file === '' || wants67 || spec.pxe || info.isHttpClient) add(OPTIONS.BOOTFILE_NAME, Buffer.from(name, 'latin1'));
    if (boot.action === 'tftp' && info.parameterRequestList.includes(OPTIONS.TFTP_SERVER_NAME) && siaddr !== ZERO) {
      add(OPTIONS.TFTP_SERVER_NAME, Buffer.from(siaddr, 'latin1'));
    }
    // UEFI HTTP boot takes only offers that say "HTTPClient" (UEFI specification 24.7.2).
    if (boot.action === 'http' && info.isHttpClient && !info.isIpxe) {
      add(OPTIONS.VENDOR_CLASS_IDENTIFIER, Buffer.from(VENDOR_CLASS.HTTP_CLIENT, 'latin1'));
    }
  }

  if (spec.pxe && !nak) {
    add(OPTIONS.VENDOR_CLASS_IDENTIFIER, Buffer.from(VENDOR_CLASS.PXE_CLIENT, 'latin1'));
    // PXE_DISCOVERY_CONTROL bit 3: use the boot file in this packet, no
    // boot-server discovery and no menu. A boot-server request (option 43.71)
    // is answered with the same boot item (PXE 2.1 section 2.2.7).
    const vendor: Array<[number, Buffer]> = [[PXE_VENDOR_OPTIONS.PXE_DISCOVERY_CONTROL, Buffer.from([PXE_DISCOVERY_CONTROL.USE_BOOTFILE])]];
    const item = info.vendorOptions?.get(PXE_VENDOR_OPTIONS.PXE_BOOT_ITEM);
    if (item) vendor.push([PXE_VENDOR_OPTIONS.PXE_BOOT_ITEM, item]);
    add(OPTIONS.VENDOR_SPECIFIC_INFORMATION, encodeEncapsulated(vendor, true));
    if (info.machineIdentifier) add(OPTIONS.CLIENT_MACHINE_IDENTIFIER, info.machineIdentifier);
  }

  // iPXE: don't wait for proxyDHCP offers (field notes: about 3 s otherwise).
  if (!nak && !spec.pxe && info.isIpxe) {
    add(OPTIONS.IPXE_ENCAPSULATED, encodeEncapsulated([[IPXE_OPTIONS.NO_PXEDHCP, Buffer.from([1])]]));
  }
  if (nak && spec.message) add(OPTIONS.MESSAGE, Buffer.from(spec.message.slice(0, 255), 'latin1'));

  // RFC 6842: echo the client identifier.
  const clientId = req.options.get(OPTIONS.CLIENT_IDENTIFIER);
  if (clientId) add(OPTIONS.CLIENT_IDENTIFIER, clientId);
  // RFC 3046 section 2.2: echo the relay agent information, unchanged, last.
  if (info.relayAgentInformation && req.giaddr !== ZERO) add(OPTIONS.RELAY_AGENT_INFORMATION, info.relayAgentInformation);

  let flags = req.flags & FLAG_BROADCAST;
  if (nak && req.giaddr !== ZERO) flags |= FLAG_BROADCAST;
  return {
    op: BOOTREPLY,
    htype: req.htype,
    hlen: req.hlen,
    hops: 0,
    xid: req.xid,
    secs: 0,
    flags,
    ciaddr: spec.copyCiaddr && !nak ? req.ciaddr : ZERO,
    yiaddr: nak ? ZERO : (spec.yiaddr ?? ZERO),
    siaddr: nak ? ZERO : siaddr,
    giaddr: req.giaddr,
    chaddr: req.chaddr,
    file,
    options,
  };
}
