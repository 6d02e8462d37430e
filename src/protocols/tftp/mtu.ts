/**
 * What MTU lies between the server and a peer, so blksize can be clamped
 * below IP fragmentation (RFC 2348 notes that larger blocks fragment; many
 * PXE ROMs do not reassemble fragments, so a block must fit one frame).
 *
 * Node exposes no path MTU (no IP_MTU getsockopt), so this resolver takes
 * the MTU of the local interface whose subnet holds the peer: PXE clients
 * are on the boot link, so that is the path. For a peer on no local subnet
 * (routed through a DHCP relay) it answers undefined and the server assumes
 * Ethernet's 1500 (TFTP_DEFAULTS.routedMtu). Linux only reads the MTU from
 * /sys/class/net; elsewhere the answer is undefined.
 */
import { readFileSync } from 'node:fs';
import { BlockList, isIP } from 'node:net';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';

export type PathMtu = (peer: { address: string; family: string }) => number | undefined;

export interface LinkMtuOptions {
  /** Defaults to os.networkInterfaces. */
  interfaces?: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
  /** MTU of an interface by name; defaults to reading /sys/class/net/NAME/mtu. */
  readMtu?: (name: string) => number | undefined;
  /** How long a table of interfaces is reused; interfaces come and go rarely. */
  cacheMs?: number;
  now?: () => number;
}

interface Link {
  name: string;
  family: 'ipv4' | 'ipv6';
  subnet: BlockList;
  mtu: number | undefined;
}

const IFNAME = /^[A-Za-z0-9_.:@-]{1,15}$/;

export function readSysfsMtu(name: string): number | undefined {
  if (!IFNAME.test(name)) return undefined;
  try {
    const n = Number.parseInt(readFileSync(`/sys/class/net/${name}/mtu`, 'utf8').trim(), 10);
    return Number.isInteger(n) && n >= 68 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** A PathMtu from the local interfaces' subnets and MTUs. */
export function linkMtuResolver(options: LinkMtuOptions = {}): PathMtu {
  const interfaces = options.interfaces ?? networkInterfaces;
  const readMtu = options.readMtu ?? readSysfsMtu;
  const cacheMs = options.cacheMs ?? 30_000;
  const now = options.now ?? Date.now;
  let links: Link[] = [];
  let builtAt = -Infinity;

  const build = (): Link[] => {
    const out: Link[] = [];
    const mtus = new Map<string, number | undefined>();
    for (const [name, addrs] of Object.entries(interfaces())) {
      for (const a of addrs ?? []) {
        if (!a.cidr) continue;
        const [base, prefixText] = a.cidr.split('/');
        const prefix = Number(prefixText);
        const family = a.family === 'IPv6' || (a.family as unknown) === 6 ? 'ipv6' : 'ipv4';
        // Link-local IPv6 addresses carry a zone; BlockList takes the bare address.
        const bare = base!.split('%')[0]!;
        if (!isIP(bare) || !Number.isInteger(prefix)) continue;
        const subnet = new BlockList();
        try {
          subnet.addSubnet(bare, prefix, family);
        } catch {
          continue;
        }
        if (!mtus.has(name)) mtus.set(name, readMtu(name));
        out.push({ name, family, subnet, mtu: mtus.get(name) });
      }
    }
    // Longest prefix first would be more exact; subnets on one host rarely overlap.
    return out;
  };

  return (peer) => {
    const t = now();
    if (t - builtAt > cacheMs) {
      links = build();
      builtAt = t;
    }
    let address = peer.address.split('%')[0]!;
    if (address.startsWith('::ffff:') && address.includes('.')) address = address.slice(7);
    const family = isIP(address) === 6 ? 'ipv6' : isIP(address) === 4 ? 'ipv4' : undefined;
    if (!family) return undefined;
    for (const link of links) {
      if (link.family === family && link.subnet.check(address, family)) return link.mtu;
    }
    return undefined;
  };
}
