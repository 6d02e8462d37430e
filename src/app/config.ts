/**
 * Loading and validating the configuration (schema in config-schema.ts).
 *
 * The file is JSON. It is validated once, at start: every problem is
 * collected with its path (`dhcp.interfaces[0].pool.start: must be an
 * IPv4 address, got "10.0.0"`), unknown options are errors (a misspelt
 * option that is silently ignored is worse than a refusal to start), the
 * defaults are filled in, and the result is deep-frozen: no code can
 * change the configuration after it was checked.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { BlockList, isIP } from 'node:net';
import { isAbsolute, join } from 'node:path';
import { normalizeMac } from '../lib/net.js';
import { IMAGE_NAME } from '../state/store.js';
import { parseCidr, parseIpv4 } from '../protocols/dhcp/address.js';
import {
  CONFIG_SCHEMA, IPXE_DIR_CANDIDATES,
  type DisklessConfig, type Spec, type StringFormat,
} from './config-schema.js';
import { AppError, ConfigError } from './errors.js';

export { CONFIG_SCHEMA, DEFAULT_CONFIG_PATH, type DisklessConfig } from './config-schema.js';

// ---------------------------------------------------------------------------
// Validation

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
/** Linux interface names: at most IFNAMSIZ-1 = 15 bytes, no slash or space. */
const INTERFACE_NAME = /^[A-Za-z0-9_.:@-]{1,15}$/;
/** One line of printable ASCII: it goes into an iPXE script line. */
const KERNEL_ARGS = /^[\x20-\x7e]*$/;

const FORMAT_TEXT: Record<StringFormat, string> = {
  'absolute-path': 'an absolute path',
  host: 'a host name or IP address',
  ipv4: 'an IPv4 address',
  cidr4: 'an IPv4 network in CIDR form with no host bits, e.g. 10.0.0.0/24',
  cidr: 'an IP address or a network in CIDR form, e.g. 10.0.0.0/24 or ::1/128',
  'http-url': 'an http:// or https:// URL',
  'interface-name': 'a network interface name (1-15 characters)',
  'image-name': 'an image name (1-64 of a-z 0-9 . _ -, starting with a letter or digit)',
  'domain-name': 'a domain name',
  'kernel-args': 'kernel arguments on one line of printable ASCII',
};

function formatOk(format: StringFormat, v: string): boolean {
  switch (format) {
    case 'absolute-path': return isAbsolute(v) && !v.includes('\0');
    case 'host': return isIP(v) !== 0 || HOSTNAME.test(v);
    case 'ipv4': return parseIpv4(v) !== undefined;
    case 'cidr4': return parseCidr(v) !== undefined;
    case 'cidr': return parseNetwork(v) !== null;
    case 'http-url': {
      try {
        const u = new URL(v);
        return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '' && u.search === '' && u.hash === '';
      } catch {
        return false;
      }
    }
    case 'interface-name': return INTERFACE_NAME.test(v);
    case 'image-name': return IMAGE_NAME.test(v);
    case 'domain-name': return HOSTNAME.test(v);
    case 'kernel-args': return KERNEL_ARGS.test(v);
  }
}

/** `ADDR` or `ADDR/PREFIX`, IPv4 or IPv6. */
export function parseNetwork(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | null {
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const family = isIP(address);
  if (family === 0) return null;
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) return null;
    prefix = Number(p);
  }
  return { address, prefix, family: family === 4 ? 'ipv4' : 'ipv6' };
}

/** A BlockList (here: an allow list) of the networks given. */
export function networkList(networks: readonly string[]): BlockList {
  const list = new BlockList();
  for (const n of networks) {
    const p = parseNetwork(n);
    if (p) list.addSubnet(p.address, p.prefix, p.family);
  }
  return list;
}

function got(value: unknown): string {
  let text: string;
  try {
    text = value === undefined ? 'nothing' : JSON.stringify(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? text.slice(0, 57) + '...' : text;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Edit distance (optimal string alignment), for "did you mean" on unknown options. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
      // Two neighbours swapped ("prot" for "port") count as one edit.
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

const at = (path: string, key: string): string => (path === '' ? key : `${path}.${key}`);

/** Marks a value that failed; its problems were reported. */
const INVALID = Symbol('invalid');

class Validator {
  readonly problems: string[] = [];

  report(path: string, problem: string): void {
    this.problems.push(`${path === '' ? '(top level)' : path}: ${problem}`);
  }

  value(spec: Spec, v: unknown, path: string): unknown {
    if (v === undefined) {
      if (spec.type === 'object' && !spec.optional) return this.object(spec, {}, path);
      if ('default' in spec && spec.default !== undefined) return structuredClone(spec.default);
      if (spec.optional) return undefined;
      this.report(path, 'is required');
      return INVALID;
    }
    switch (spec.type) {
      case 'string': {
        const expected = spec.format ? FORMAT_TEXT[spec.format] : 'a string';
        if (typeof v !== 'string') return this.fail(path, expected, v);
        if (spec.maxLength !== undefined && v.length > spec.maxLength) {
          this.report(path, `must be at most ${spec.maxLength} characters, got ${v.length}`);
          return INVALID;
        }
        if (spec.format && !formatOk(spec.format, v)) return this.fail(path, expected, v);
        return v;
      }
      case 'integer': {
        if (typeof v !== 'number' || !Number.isInteger(v) || v < spec.min || v > spec.max) return this.fail(path, `an integer ${spec.min}-${spec.max}`, v);
        const problem = spec.check?.(v);
        if (problem) {
          this.report(path, problem);
          return INVALID;
        }
        return v;
      }
      case 'boolean':
        return typeof v === 'boolean' ? v : this.fail(path, 'true or false', v);
      case 'enum':
        return typeof v === 'string' && spec.values.includes(v) ? v : this.fail(path, `one of ${spec.values.map((x) => `"${x}"`).join(', ')}`, v);
      case 'array': {
        if (!Array.isArray(v)) return this.fail(path, 'a list', v);
        if (v.length > spec.maxItems) {
          this.report(path, `must have at most ${spec.maxItems} entries, got ${v.length}`);
          return INVALID;
        }
        const out = v.map((item, i) => this.value(spec.items, item, `${path}[${i}]`));
        return out.includes(INVALID) ? INVALID : out;
      }
      case 'mac-map': {
        if (!isPlainObject(v)) return this.fail(path, 'an object from MAC address to value', v);
        const entries = Object.entries(v);
        if (entries.length > spec.maxItems) {
          this.report(path, `must have at most ${spec.maxItems} entries, got ${entries.length}`);
          return INVALID;
        }
        const out: Record<string, unknown> = {};
        let ok = true;
        for (const [key, item] of entries) {
          const mac = normalizeMac(key);
          const itemPath = `${path}["${key}"]`;
          if (!mac) {
            this.report(itemPath, `"${key}" is not a MAC address`);
            ok = false;
            continue;
          }
          if (Object.hasOwn(out, mac)) {
            this.report(itemPath, `${mac} is listed twice`);
            ok = false;
            continue;
          }
          const r = this.value(spec.value, item, itemPath);
          if (r === INVALID) ok = false;
          else out[mac] = r;
        }
        return ok ? out : INVALID;
      }
      case 'object':
        return this.object(spec, v, path);
    }
  }

  private object(spec: Extract<Spec, { type: 'object' }>, v: unknown, path: string): unknown {
    if (!isPlainObject(v)) return this.fail(path, 'an object', v);
    const before = this.problems.length;
    const known = Object.keys(spec.fields);
    for (const key of Object.keys(v)) {
      if (Object.hasOwn(spec.fields, key)) continue;
      const near = known.filter((k) => distance(k, key) <= Math.max(1, Math.floor(k.length / 4))).sort((a, b) => distance(a, key) - distance(b, key));
      this.report(at(path, key), near.length > 0 ? `unknown option; did you mean "${near[0]}"?` : `unknown option (known here: ${known.join(', ')})`);
    }
    const out: Record<string, unknown> = {};
    for (const key of known) {
      const r = this.value(spec.fields[key]!, v[key], at(path, key));
      if (r !== undefined && r !== INVALID) out[key] = r;
    }
    if (this.problems.length > before) return INVALID;
    spec.check?.(out, v, (p, problem) => this.report(at(path, p), problem));
    return this.problems.length > before ? INVALID : out;
  }

  private fail(path: string, expected: string, v: unknown): typeof INVALID {
    this.report(path, `must be ${expected}, got ${got(v)}`);
    return INVALID;
  }
}

/** Freezes an object and everything it holds. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * Checks a parsed configuration. Returns the complete, frozen configuration
 * and no problems, or no configuration and every problem found.
 */
export function checkConfig(raw: unknown): { config: DisklessConfig | null; problems: string[] } {
  const v = new Validator();
  const out = v.value(CONFIG_SCHEMA, raw, '');
  if (v.problems.length > 0 || out === INVALID) return { config: null, problems: v.problems };
  return { config: deepFreeze(out as DisklessConfig), problems: [] };
}

/** Like checkConfig(), but throws CONFIG_INVALID listing every problem. */
export function validateConfig(raw: unknown, source = 'the configuration'): DisklessConfig {
  const { config, problems } = checkConfig(raw);
  if (!config) {
    throw new ConfigError('CONFIG_INVALID', `${source} has ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n  ${problems.join('\n  ')}`, problems);
  }
  return config;
}

/** Every default, no file. */
export function defaultConfig(): DisklessConfig {
  return validateConfig({});
}

// ---------------------------------------------------------------------------
// Files

export interface LoadOptions {
  /** When false, a missing file means the defaults (for the default path). Default true. */
  mustExist?: boolean;
  /** Values that replace the file's (command-line options), applied before validation. */
  overrides?: { dataDir?: string };
}

/** Reads and parses a JSON file; CONFIG_NOT_FOUND or CONFIG_UNREADABLE on failure. null when absent and allowed. */
export function readConfigFile(path: string, mustExist = true): unknown {
  let text: string;
  try {
    if (!mustExist && !existsSync(path)) return null;
    if (statSync(path).isDirectory()) throw new ConfigError('CONFIG_UNREADABLE', `${path} is a directory, not a configuration file`);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    if ((err as { code?: string }).code === 'ENOENT') throw new ConfigError('CONFIG_NOT_FOUND', `configuration file ${path} does not exist`, [], { cause: err });
    throw new ConfigError('CONFIG_UNREADABLE', `cannot read ${path}: ${(err as Error).message}`, [], { cause: err });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    const message = (err as Error).message;
    const pos = /position (\d+)/.exec(message);
    let where = '';
    if (pos) {
      const before = text.slice(0, Number(pos[1]));
      const line = before.split('\n').length;
      where = ` at line ${line}, column ${Number(pos[1]) - before.lastIndexOf('\n')}`;
    }
    throw new ConfigError('CONFIG_UNREADABLE', `${path} is not valid JSON${where}: ${message}`, [], { cause: err });
  }
}

/** Reads, validates and freezes a configuration file (see LoadOptions). */
export function loadConfig(path: string, options: LoadOptions = {}): DisklessConfig {
  const raw = readConfigFile(path, options.mustExist ?? true) ?? {};
  if (options.overrides?.dataDir !== undefined && isPlainObject(raw)) raw.dataDir = options.overrides.dataDir;
  return validateConfig(raw, path);
}

/** The iPXE folder: the configured one, or the first candidate holding iPXE binaries. */
export function resolveIpxeDir(config: DisklessConfig): string {
  if (config.tftp.ipxeDir !== undefined) return config.tftp.ipxeDir;
  for (const dir of IPXE_DIR_CANDIDATES) {
    if (['undionly.kpxe', 'ipxe.efi', 'snponly.efi'].some((f) => existsSync(join(dir, f)))) return dir;
  }
  throw new AppError('APP_IPXE_NOT_FOUND', `no iPXE binaries in ${IPXE_DIR_CANDIDATES.join(' or ')}; install the ipxe package or set tftp.ipxeDir`);
}
