/**
 * Error codes of the DHCP module. Codec errors describe why a packet from
 * the network was dropped (DHCP has no error reply to a malformed packet:
 * RFC 2131 servers stay silent); server errors describe configuration,
 * socket and lease-store problems. Every code is stable and documented in
 * docs/errors.md, which is generated from this catalogue.
 */
import { DisklessError } from '../../lib/errors.js';

export const ERROR_CODES = {
  DHCP_TRUNCATED: 'a DHCP packet is shorter than the fixed BOOTP header and magic cookie (240 bytes)',
  DHCP_PACKET_TOO_LARGE: 'a DHCP packet is larger than the server accepts (DHCP_LIMITS.maxPacketSize)',
  DHCP_NO_MAGIC_COOKIE: 'a DHCP packet does not carry the magic cookie 99.130.83.99 after the BOOTP header (RFC 2131 section 3)',
  DHCP_BAD_OP: 'the op field is neither BOOTREQUEST (1) nor BOOTREPLY (2)',
  DHCP_BAD_HLEN: 'the hardware address length is larger than the 16-byte chaddr field, or is not 6 for Ethernet',
  DHCP_TOO_MANY_HOPS: 'the hops field is above 16, the largest value relay agents may forward (RFC 1542 section 4.1.1)',
  DHCP_OPTION_OVERRUN: 'an option\'s length runs past the end of the field that holds it',
  DHCP_BAD_OVERLOAD: 'option 52 (Option Overload) does not hold exactly one byte of value 1, 2 or 3',
  DHCP_OVERLOAD_LOOP: 'option 52 (Option Overload) appears inside the sname or file field it overloads',
  DHCP_BAD_OPTION_VALUE: 'an option\'s value has the wrong length or an impossible value for its type',
  DHCP_BAD_MESSAGE_TYPE: 'option 53 (DHCP Message Type) holds a value the server does not know',
  DHCP_ENCAPSULATED_MALFORMED: 'an encapsulated option block (43, 82 or 175) is not a well-formed list of sub-options',
  DHCP_FIELD_TOO_LONG: 'a value to encode does not fit its fixed BOOTP field (sname 64 bytes, file 128 bytes)',
  DHCP_REPLY_TOO_LARGE: 'a reply does not fit in the largest message the client accepts (option 57, at least 576 bytes)',
  DHCP_CONFIG_INVALID: 'the DHCP server configuration is invalid; the message lists every problem',
  DHCP_BIND_FAILED: 'a DHCP socket could not be bound (port in use, missing privilege, or address not on this host)',
  DHCP_NOT_LISTENING: 'the DHCP server was asked to do something that needs it to be listening',
  DHCP_STORE_FAILED: 'the lease store failed to load or commit a lease; the reply that depended on it was not sent',
  DHCP_POLICY_FAILED: 'the boot policy threw, rejected or took longer than its time limit; the packet was dropped',
} as const;

export type DhcpErrorCode = keyof typeof ERROR_CODES;

/** Any error raised by the DHCP module. */
export class DhcpError extends DisklessError {
  override readonly name: string = 'DhcpError';
  constructor(
    override readonly code: DhcpErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, 'EINVAL', options);
  }
}

/**
 * A packet (or a value inside it) that cannot be decoded or encoded. The
 * server drops the packet and logs the code; it never answers it.
 */
export class DhcpCodecError extends DhcpError {
  override readonly name = 'DhcpCodecError';
  constructor(
    code: DhcpErrorCode,
    message: string,
    /** Byte offset in the packet where the problem was found, when known. */
    readonly offset?: number,
  ) {
    super(code, message);
  }
}

export function isDhcpCodecError(e: unknown): e is DhcpCodecError {
  return e instanceof DhcpCodecError;
}
