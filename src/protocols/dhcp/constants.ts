/**
 * DHCPv4 constants named as their specifications name them:
 * RFC 2131 (packet, message types), RFC 2132 (options), RFC 3004 (user
 * class), RFC 3046 (relay agent information), RFC 3011 (subnet selection),
 * RFC 4578 and the IANA "Processor Architecture Types" registry (PXE client
 * options), the PXE 2.1 specification (vendor options inside option 43) and
 * iPXE's encapsulated option 175.
 */

/** RFC 2131 section 2: op field. */
export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;

/** RFC 1700 hardware type for Ethernet (htype), and its address length. */
export const HTYPE_ETHERNET = 1;
export const ETHERNET_HLEN = 6;

/** RFC 2131 section 2, figure 2: the one flag bit defined. */
export const FLAG_BROADCAST = 0x8000;

/** RFC 2131 section 3: the first four octets of the options field. */
export const MAGIC_COOKIE = 0x63825363;

/**
 * Offsets and sizes of the fixed BOOTP header (RFC 2131 section 2, figure 1).
 * The options field (after the cookie) starts at OPTIONS_OFFSET.
 */
export const HEADER = {
  op: 0,
  htype: 1,
  hlen: 2,
  hops: 3,
  xid: 4,
  secs: 8,
  flags: 10,
  ciaddr: 12,
  yiaddr: 16,
  siaddr: 20,
  giaddr: 24,
  chaddr: 28,
  sname: 44,
  file: 108,
  cookie: 236,
  options: 240,
} as const;
export const CHADDR_SIZE = 16;
export const SNAME_SIZE = 64;
export const FILE_SIZE = 128;
/** Fixed header plus magic cookie: the shortest DHCP message. */
export const MIN_DHCP_SIZE = 240;
/**
 * RFC 1542 section 2.1: BOOTP messages are at least 300 octets; some old
 * relay agents and PXE ROMs drop shorter ones, so replies are padded to it.
 */
export const BOOTP_MIN_SIZE = 300;
/**
 * RFC 2131 section 2: every client accepts a 576-octet IP datagram, i.e. a
 * 548-octet DHCP message after the IP (20) and UDP (8) headers.
 */
export const MIN_MAX_MESSAGE_SIZE = 576;
export const IP_UDP_HEADERS = 28;

/** Well-known ports: RFC 2131 section 4.1 and PXE 2.1 (boot server port). */
export const PORTS = {
  DHCP_SERVER: 67,
  DHCP_CLIENT: 68,
  PXE: 4011,
} as const;

/**
 * RFC 1542 section 4.1.1: relay agents discard requests whose hops exceed a
 * configurable maximum that "SHOULD" default to 4 and may not exceed 16.
 */
export const MAX_HOPS = 16;

/** RFC 2132 section 9.6 (53) and RFC 2131 section 3. Values 9-18 are later RFCs' and are not served. */
export const MESSAGE_TYPES = {
  DHCPDISCOVER: 1,
  DHCPOFFER: 2,
  DHCPREQUEST: 3,
  DHCPDECLINE: 4,
  DHCPACK: 5,
  DHCPNAK: 6,
  DHCPRELEASE: 7,
  DHCPINFORM: 8,
  DHCPFORCERENEW: 9,
  DHCPLEASEQUERY: 10,
  DHCPLEASEUNASSIGNED: 11,
  DHCPLEASEUNKNOWN: 12,
  DHCPLEASEACTIVE: 13,
  DHCPBULKLEASEQUERY: 14,
  DHCPLEASEQUERYDONE: 15,
  DHCPACTIVELEASEQUERY: 16,
  DHCPLEASEQUERYSTATUS: 17,
  DHCPTLS: 18,
} as const;
export type MessageType = (typeof MESSAGE_TYPES)[keyof typeof MESSAGE_TYPES];

/**
 * Option codes, named after their RFC section headings (RFC 2132 unless
 * noted). Only the options the server reads or writes, and the ones worth a
 * name in logs, are listed; every other code is still carried opaquely.
 */
export const OPTIONS = {
  PAD: 0,
  SUBNET_MASK: 1,
  TIME_OFFSET: 2,
  ROUTER: 3,
  TIME_SERVER: 4,
  NAME_SERVER: 5,
  DOMAIN_NAME_SERVER: 6,
  LOG_SERVER: 7,
  COOKIE_SERVER: 8,
  LPR_SERVER: 9,
  IMPRESS_SERVER: 10,
  RESOURCE_LOCATION_SERVER: 11,
  HOST_NAME: 12,
  BOOT_FILE_SIZE: 13,
  MERIT_DUMP_FILE: 14,
  DOMAIN_NAME: 15,
  SWAP_SERVER: 16,
  ROOT_PATH: 17,
  EXTENSIONS_PATH: 18,
  IP_FORWARDING: 19,
  NON_LOCAL_SOURCE_ROUTING: 20,
  POLICY_FILTER: 21,
  MAXIMUM_DATAGRAM_REASSEMBLY_SIZE: 22,
  DEFAULT_IP_TIME_TO_LIVE: 23,
  PATH_MTU_AGING_TIMEOUT: 24,
  PATH_MTU_PLATEAU_TABLE: 25,
  INTERFACE_MTU: 26,
  ALL_SUBNETS_ARE_LOCAL: 27,
  BROADCAST_ADDRESS: 28,
  PERFORM_MASK_DISCOVERY: 29,
  MASK_SUPPLIER: 30,
  PERFORM_ROUTER_DISCOVERY: 31,
  ROUTER_SOLICITATION_ADDRESS: 32,
  STATIC_ROUTE: 33,
  TRAILER_ENCAPSULATION: 34,
  ARP_CACHE_TIMEOUT: 35,
  ETHERNET_ENCAPSULATION: 36,
  TCP_DEFAULT_TTL: 37,
  TCP_KEEPALIVE_INTERVAL: 38,
  TCP_KEEPALIVE_GARBAGE: 39,
  NETWORK_INFORMATION_SERVICE_DOMAIN: 40,
  NETWORK_INFORMATION_SERVERS: 41,
  NETWORK_TIME_PROTOCOL_SERVERS: 42,
  VENDOR_SPECIFIC_INFORMATION: 43,
  NETBIOS_NAME_SERVER: 44,
  NETBIOS_DATAGRAM_DISTRIBUTION_SERVER: 45,
  NETBIOS_NODE_TYPE: 46,
  NETBIOS_SCOPE: 47,
  X_WINDOW_FONT_SERVER: 48,
  X_WINDOW_DISPLAY_MANAGER: 49,
  REQUESTED_IP_ADDRESS: 50,
  IP_ADDRESS_LEASE_TIME: 51,
  OPTION_OVERLOAD: 52,
  DHCP_MESSAGE_TYPE: 53,
  SERVER_IDENTIFIER: 54,
  PARAMETER_REQUEST_LIST: 55,
  MESSAGE: 56,
  MAXIMUM_DHCP_MESSAGE_SIZE: 57,
  RENEWAL_TIME_VALUE: 58,
  REBINDING_TIME_VALUE: 59,
  VENDOR_CLASS_IDENTIFIER: 60,
  CLIENT_IDENTIFIER: 61,
  NETWORK_INFORMATION_SERVICE_PLUS_DOMAIN: 64,
  NETWORK_INFORMATION_SERVICE_PLUS_SERVERS: 65,
  TFTP_SERVER_NAME: 66,
  BOOTFILE_NAME: 67,
  MOBILE_IP_HOME_AGENT: 68,
  SMTP_SERVER: 69,
  POP3_SERVER: 70,
  NNTP_SERVER: 71,
  DEFAULT_WWW_SERVER: 72,
  DEFAULT_FINGER_SERVER: 73,
  DEFAULT_IRC_SERVER: 74,
  STREETTALK_SERVER: 75,
  STDA_SERVER: 76,
  /** RFC 3004. iPXE sends the bare string "iPXE" rather than RFC 3004's length-prefixed list. */
  USER_CLASS: 77,
  /** RFC 4702. */
  CLIENT_FQDN: 81,
  /** RFC 3046. */
  RELAY_AGENT_INFORMATION: 82,
  /** RFC 4578 section 2.1. */
  CLIENT_SYSTEM_ARCHITECTURE_TYPE: 93,
  /** RFC 4578 section 2.2. */
  CLIENT_NETWORK_INTERFACE_IDENTIFIER: 94,
  /** RFC 4578 section 2.3. */
  CLIENT_MACHINE_IDENTIFIER: 97,
  /** RFC 3011. */
  SUBNET_SELECTION: 118,
  /** RFC 3397. */
  DOMAIN_SEARCH: 119,
  /** RFC 3442. */
  CLASSLESS_STATIC_ROUTE: 121,
  /** RFC 5859. */
  TFTP_SERVER_ADDRESS: 150,
  /** iPXE ("Etherboot") encapsulated options; its sub-options are IPXE_OPTIONS. */
  IPXE_ENCAPSULATED: 175,
  END: 255,
} as const;

/**
 * PXE 2.1 specification, section 2.4 (table 2-1): sub-options carried in
 * option 43 when option 60 is "PXEClient".
 */
export const PXE_VENDOR_OPTIONS = {
  PXE_MTFTP_IP: 1,
  PXE_MTFTP_CPORT: 2,
  PXE_MTFTP_SPORT: 3,
  PXE_MTFTP_TMOUT: 4,
  PXE_MTFTP_DELAY: 5,
  PXE_DISCOVERY_CONTROL: 6,
  PXE_DISCOVERY_MCAST_ADDR: 7,
  PXE_BOOT_SERVERS: 8,
  PXE_BOOT_MENU: 9,
  PXE_MENU_PROMPT: 10,
  PXE_MCAST_ADDRS_ALLOC: 11,
  PXE_CREDENTIAL_TYPES: 12,
  PXE_BOOT_ITEM: 71,
  PXE_END: 255,
} as const;

/** PXE 2.1, PXE_DISCOVERY_CONTROL bits. */
export const PXE_DISCOVERY_CONTROL = {
  DISABLE_BROADCAST: 0x01,
  DISABLE_MULTICAST: 0x02,
  ONLY_PXE_BOOT_SERVERS: 0x04,
  /** "If set, and a boot file name is present in the offer, download it; skip discovery." */
  USE_BOOTFILE: 0x08,
} as const;

/** Sub-options of iPXE's option 175 (iPXE include/ipxe/dhcp.h). */
export const IPXE_OPTIONS = {
  PRIORITY: 1,
  KEEP_SAN: 8,
  SKIP_SAN_BOOT: 9,
  SCRIPTLET: 81,
  /**
   * 175.176: "skip PXE DHCP protocol extensions such as ProxyDHCP". iPXE
   * reads it from the DHCPOFFER; without it, iPXE waits for a proxyDHCP
   * offer (about 3 s measured, field notes) before it requests.
   */
  NO_PXEDHCP: 176,
  BUS_ID: 177,
  BIOS_DRIVE: 189,
  VERSION: 235,
} as const;

/** RFC 3046 section 2.0 sub-options of option 82, and RFC 3527's link selection. */
export const RELAY_AGENT_SUBOPTIONS = {
  AGENT_CIRCUIT_ID: 1,
  AGENT_REMOTE_ID: 2,
  LINK_SELECTION: 5,
} as const;

/**
 * Client system architecture types (option 93): the IANA "Processor
 * Architecture Types" registry. RFC 4578 section 2.1 originally named 7
 * "EFI BC" and 9 "EFI x86-64"; its errata (2016) adopted the registry's
 * values, which EDK2/OVMF and iPXE use: 7 is x64 UEFI and 9 is EBC. Older
 * firmware still sends 9 for x64, so both are treated as x64 UEFI.
 */
export const CLIENT_ARCHITECTURES = {
  X86_BIOS: 0,
  NEC_PC98: 1,
  ITANIUM: 2,
  DEC_ALPHA: 3,
  ARC_X86: 4,
  INTEL_LEAN_CLIENT: 5,
  X86_UEFI: 6,
  X64_UEFI: 7,
  EFI_XSCALE: 8,
  EBC: 9,
  ARM_32_UEFI: 10,
  ARM_64_UEFI: 11,
  POWERPC_OPEN_FIRMWARE: 12,
  POWERPC_EPAPR: 13,
  POWER_OPAL_V3: 14,
  X86_UEFI_HTTP: 15,
  X64_UEFI_HTTP: 16,
  EBC_HTTP: 17,
  ARM_32_UEFI_HTTP: 18,
  ARM_64_UEFI_HTTP: 19,
  X86_BIOS_HTTP: 20,
  ARM_32_UBOOT: 21,
  ARM_64_UBOOT: 22,
  ARM_32_UBOOT_HTTP: 23,
  ARM_64_UBOOT_HTTP: 24,
  RISCV_32_UEFI: 25,
  RISCV_32_UEFI_HTTP: 26,
  RISCV_64_UEFI: 27,
  RISCV_64_UEFI_HTTP: 28,
  RISCV_128_UEFI: 29,
  RISCV_128_UEFI_HTTP: 30,
  S390_BASIC: 31,
  S390_EXTENDED: 32,
  MIPS_32_UEFI: 33,
  MIPS_64_UEFI: 34,
  SUNWAY_32_UEFI: 35,
  SUNWAY_64_UEFI: 36,
  LOONGARCH_32_UEFI: 37,
  LOONGARCH_32_UEFI_HTTP: 38,
  LOONGARCH_64_UEFI: 39,
  LOONGARCH_64_UEFI_HTTP: 40,
  ARM_RPIBOOT: 41,
} as const;

/** Option 60 prefixes: PXE 2.1 section 2.2 and the UEFI specification's HTTP boot (section 24.7). */
export const VENDOR_CLASS = {
  PXE_CLIENT: 'PXEClient',
  HTTP_CLIENT: 'HTTPClient',
} as const;

/** The user class iPXE sends in option 77. */
export const IPXE_USER_CLASS = 'iPXE';

/** How an option's value is laid out, for typed decoding and encoding. */
export type OptionFormat =
  | 'ipv4' // one address
  | 'ipv4-list' // one or more addresses
  | 'ipv4-pairs' // address pairs (routes, filters)
  | 'u8'
  | 'flag' // one octet, 0 or 1
  | 'u16'
  | 'u32'
  | 'i32'
  | 'u8-list' // one or more octets
  | 'u16-list' // one or more 16-bit values
  | 'string' // NVT ASCII, no terminating NUL (RFC 2132 section 2)
  | 'bytes' // opaque
  | 'encapsulated'; // sub-options: code, length, value

/** Formats of the options with a known layout; every other code is 'bytes'. */
export const OPTION_FORMATS: Readonly<Record<number, OptionFormat>> = Object.freeze({
  [OPTIONS.SUBNET_MASK]: 'ipv4',
  [OPTIONS.TIME_OFFSET]: 'i32',
  [OPTIONS.ROUTER]: 'ipv4-list',
  [OPTIONS.TIME_SERVER]: 'ipv4-list',
  [OPTIONS.NAME_SERVER]: 'ipv4-list',
  [OPTIONS.DOMAIN_NAME_SERVER]: 'ipv4-list',
  [OPTIONS.LOG_SERVER]: 'ipv4-list',
  [OPTIONS.COOKIE_SERVER]: 'ipv4-list',
  [OPTIONS.LPR_SERVER]: 'ipv4-list',
  [OPTIONS.IMPRESS_SERVER]: 'ipv4-list',
  [OPTIONS.RESOURCE_LOCATION_SERVER]: 'ipv4-list',
  [OPTIONS.HOST_NAME]: 'string',
  [OPTIONS.BOOT_FILE_SIZE]: 'u16',
  [OPTIONS.MERIT_DUMP_FILE]: 'string',
  [OPTIONS.DOMAIN_NAME]: 'string',
  [OPTIONS.SWAP_SERVER]: 'ipv4',
  [OPTIONS.ROOT_PATH]: 'string',
  [OPTIONS.EXTENSIONS_PATH]: 'string',
  [OPTIONS.IP_FORWARDING]: 'flag',
  [OPTIONS.NON_LOCAL_SOURCE_ROUTING]: 'flag',
  [OPTIONS.POLICY_FILTER]: 'ipv4-pairs',
  [OPTIONS.MAXIMUM_DATAGRAM_REASSEMBLY_SIZE]: 'u16',
  [OPTIONS.DEFAULT_IP_TIME_TO_LIVE]: 'u8',
  [OPTIONS.PATH_MTU_AGING_TIMEOUT]: 'u32',
  [OPTIONS.PATH_MTU_PLATEAU_TABLE]: 'u16-list',
  [OPTIONS.INTERFACE_MTU]: 'u16',
  [OPTIONS.ALL_SUBNETS_ARE_LOCAL]: 'flag',
  [OPTIONS.BROADCAST_ADDRESS]: 'ipv4',
  [OPTIONS.PERFORM_MASK_DISCOVERY]: 'flag',
  [OPTIONS.MASK_SUPPLIER]: 'flag',
  [OPTIONS.PERFORM_ROUTER_DISCOVERY]: 'flag',
  [OPTIONS.ROUTER_SOLICITATION_ADDRESS]: 'ipv4',
  [OPTIONS.STATIC_ROUTE]: 'ipv4-pairs',
  [OPTIONS.TRAILER_ENCAPSULATION]: 'flag',
  [OPTIONS.ARP_CACHE_TIMEOUT]: 'u32',
  [OPTIONS.ETHERNET_ENCAPSULATION]: 'flag',
  [OPTIONS.TCP_DEFAULT_TTL]: 'u8',
  [OPTIONS.TCP_KEEPALIVE_INTERVAL]: 'u32',
  [OPTIONS.TCP_KEEPALIVE_GARBAGE]: 'flag',
  [OPTIONS.NETWORK_INFORMATION_SERVICE_DOMAIN]: 'string',
  [OPTIONS.NETWORK_INFORMATION_SERVERS]: 'ipv4-list',
  [OPTIONS.NETWORK_TIME_PROTOCOL_SERVERS]: 'ipv4-list',
  [OPTIONS.VENDOR_SPECIFIC_INFORMATION]: 'encapsulated',
  [OPTIONS.NETBIOS_NAME_SERVER]: 'ipv4-list',
  [OPTIONS.NETBIOS_DATAGRAM_DISTRIBUTION_SERVER]: 'ipv4-list',
  [OPTIONS.NETBIOS_NODE_TYPE]: 'u8',
  [OPTIONS.NETBIOS_SCOPE]: 'string',
  [OPTIONS.X_WINDOW_FONT_SERVER]: 'ipv4-list',
  [OPTIONS.X_WINDOW_DISPLAY_MANAGER]: 'ipv4-list',
  [OPTIONS.REQUESTED_IP_ADDRESS]: 'ipv4',
  [OPTIONS.IP_ADDRESS_LEASE_TIME]: 'u32',
  [OPTIONS.OPTION_OVERLOAD]: 'u8',
  [OPTIONS.DHCP_MESSAGE_TYPE]: 'u8',
  [OPTIONS.SERVER_IDENTIFIER]: 'ipv4',
  [OPTIONS.PARAMETER_REQUEST_LIST]: 'u8-list',
  [OPTIONS.MESSAGE]: 'string',
  [OPTIONS.MAXIMUM_DHCP_MESSAGE_SIZE]: 'u16',
  [OPTIONS.RENEWAL_TIME_VALUE]: 'u32',
  [OPTIONS.REBINDING_TIME_VALUE]: 'u32',
  [OPTIONS.VENDOR_CLASS_IDENTIFIER]: 'string',
  [OPTIONS.CLIENT_IDENTIFIER]: 'bytes',
  [OPTIONS.NETWORK_INFORMATION_SERVICE_PLUS_DOMAIN]: 'string',
  [OPTIONS.NETWORK_INFORMATION_SERVICE_PLUS_SERVERS]: 'ipv4-list',
  [OPTIONS.TFTP_SERVER_NAME]: 'string',
  [OPTIONS.BOOTFILE_NAME]: 'string',
  [OPTIONS.MOBILE_IP_HOME_AGENT]: 'ipv4-list',
  [OPTIONS.SMTP_SERVER]: 'ipv4-list',
  [OPTIONS.POP3_SERVER]: 'ipv4-list',
  [OPTIONS.NNTP_SERVER]: 'ipv4-list',
  [OPTIONS.DEFAULT_WWW_SERVER]: 'ipv4-list',
  [OPTIONS.DEFAULT_FINGER_SERVER]: 'ipv4-list',
  [OPTIONS.DEFAULT_IRC_SERVER]: 'ipv4-list',
  [OPTIONS.STREETTALK_SERVER]: 'ipv4-list',
  [OPTIONS.STDA_SERVER]: 'ipv4-list',
  [OPTIONS.USER_CLASS]: 'bytes',
  [OPTIONS.CLIENT_FQDN]: 'bytes',
  [OPTIONS.RELAY_AGENT_INFORMATION]: 'encapsulated',
  [OPTIONS.CLIENT_SYSTEM_ARCHITECTURE_TYPE]: 'u16-list',
  [OPTIONS.CLIENT_NETWORK_INTERFACE_IDENTIFIER]: 'bytes',
  [OPTIONS.CLIENT_MACHINE_IDENTIFIER]: 'bytes',
  [OPTIONS.SUBNET_SELECTION]: 'ipv4',
  [OPTIONS.DOMAIN_SEARCH]: 'bytes',
  [OPTIONS.CLASSLESS_STATIC_ROUTE]: 'bytes',
  [OPTIONS.TFTP_SERVER_ADDRESS]: 'ipv4-list',
  [OPTIONS.IPXE_ENCAPSULATED]: 'encapsulated',
});

export function optionFormat(code: number): OptionFormat {
  return OPTION_FORMATS[code] ?? 'bytes';
}

function reverse(table: Record<string, number>): Map<number, string> {
  const m = new Map<number, string>();
  for (const [k, v] of Object.entries(table)) if (!m.has(v)) m.set(v, k);
  return m;
}
const MESSAGE_TYPE_NAMES = reverse(MESSAGE_TYPES);
const OPTION_NAMES = reverse(OPTIONS);
const ARCH_NAMES = reverse(CLIENT_ARCHITECTURES);

/** For logs: `DHCPDISCOVER`, or `DHCP_MESSAGE_TYPE_99` for an unknown value. */
export function messageTypeName(t: number | undefined): string {
  if (t === undefined) return 'BOOTP';
  return MESSAGE_TYPE_NAMES.get(t) ?? `DHCP_MESSAGE_TYPE_${t}`;
}

/** For logs: `VENDOR_CLASS_IDENTIFIER`, or `OPTION_224`. */
export function optionName(code: number): string {
  return OPTION_NAMES.get(code) ?? `OPTION_${code}`;
}

/** For logs and events: `X64_UEFI`, or `ARCH_99`. */
export function architectureName(arch: number | undefined): string {
  if (arch === undefined) return 'UNKNOWN';
  return ARCH_NAMES.get(arch) ?? `ARCH_${arch}`;
}
